"""Reads for segments: live preview, members, overlap, usage, size history, the builder's catalogue."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.db import connection
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from contacts.models import Contact, Event, EventDailyRollup
from segments.compiler import matching_contacts
from segments.models import Segment, SegmentMember, SegmentSize
from segments.rules import Registry, RuleError, catalogue, conditions, validate
from segments.services import SET_BASED, SegmentTimeout, context_for, query_settings, statement_timeout
from tenants.models import Tenant

PREVIEW_TIMEOUT_MS = getattr(settings, "SEGMENT_PREVIEW_TIMEOUT_MS", 10_000)
SAMPLE_SIZE = 10
SAMPLE_COLUMNS = ("id", "email", "phone", "first_name", "last_name", "country", "lifecycle_stage")
MEMBER_COLUMNS = (*SAMPLE_COLUMNS, "external_id", "city")
OVERLAP_MAX_SEGMENTS = 20
TOO_SMALL = getattr(settings, "SEGMENT_TOO_SMALL", 50)
NEAR_DUPLICATE = 0.9
EVENT_NAMES_LIMIT = 200


@dataclass
class Preview:
    count: int | None = None
    sample: list[dict[str, Any]] = field(default_factory=list)
    errors: list[RuleError] = field(default_factory=list)
    timed_out: bool = False
    elapsed_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "sample": self.sample,
            "errors": [error.as_dict() for error in self.errors],
            "timed_out": self.timed_out,
            "elapsed_ms": round(self.elapsed_ms, 1),
        }


def segment_preview(
    *, tenant: Tenant, rules: Any, segment: Segment | None = None, sample_size: int = SAMPLE_SIZE
) -> Preview:
    """Validate ``rules`` and, when valid, count the matching contacts and show a few (newest first)."""
    started = time.perf_counter()
    registry = Registry.for_tenant(tenant)
    errors = validate(rules, registry, segment_id=segment.pk if segment else None)
    if errors:
        return Preview(errors=errors)
    contacts = matching_contacts(rules, context_for(tenant, registry))
    preview = Preview()
    try:
        with statement_timeout(PREVIEW_TIMEOUT_MS):
            if connection.vendor == "postgresql" and _aggregates(rules):
                with query_settings(**SET_BASED):
                    preview.count, newest = _count_and_newest(contacts, sample_size)
                rows = Contact.objects.filter(tenant=tenant, pk__in=newest).values(*SAMPLE_COLUMNS)
                found = {row["id"]: row for row in rows}
                preview.sample = [found[pk] for pk in newest if pk in found]
            else:
                with query_settings(**SET_BASED):  # the whole set: hash joins
                    preview.count = contacts.count()
                with query_settings():  # the newest few: a nested loop walking back from the newest id
                    preview.sample = list(contacts.order_by("-pk").values(*SAMPLE_COLUMNS)[:sample_size])
    except SegmentTimeout:
        preview.timed_out = True
    preview.elapsed_ms = (time.perf_counter() - started) * 1000
    return preview


def _aggregates(rules: dict[str, Any]) -> bool:
    """Does the tree count or sum events per contact (an ``IN (... GROUP BY ... HAVING)`` query)?"""
    return any(
        node["type"] == "event_aggregate"
        or (node["type"] == "event" and node["op"] in ("at_least", "at_most", "exactly") and node["count"] > 0)
        for node in conditions(rules)
    )


def _count_and_newest(contacts: QuerySet[Contact], size: int) -> tuple[int, list[int]]:
    """The count and the ``size`` newest ids of the matching contacts, evaluating the rules once.

    For trees with per-contact aggregates: there a separate ``ORDER BY id DESC LIMIT`` query
    evaluated the aggregate over the whole tenant a second time (100-400 ms at a million contacts).
    Otherwise the newest matches are found in a few ms, and a plain count is cheaper than this
    (its workers count in parallel instead of sending every id to the leader: 40-90 ms).
    """
    try:
        sql, params = contacts.values("id").query.sql_with_params()
    except EmptyResultSet:  # rules that can match nobody (e.g. age = 25.5)
        return 0, []
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH matching AS MATERIALIZED ({sql}) SELECT (SELECT count(*) FROM matching), "
            "ARRAY(SELECT id FROM matching ORDER BY id DESC LIMIT %s)",
            [*params, size],
        )
        count, newest = cursor.fetchone()
    return int(count), list(newest)


def segments_for_list(tenant: Tenant, *, trend_days: int = 7) -> list[dict[str, Any]]:
    """Every segment with its size and the change since ``trend_days`` ago (None when unknown)."""
    segments = list(Segment.objects.filter(tenant=tenant).order_by("name"))
    since = timezone.now() - dt.timedelta(days=trend_days)
    earlier: dict[int, int] = {}
    # The last measurement before the trend window, per segment (a handful of rows each).
    for segment_id, size in (
        SegmentSize.objects.filter(tenant=tenant, measured_at__lte=since)
        .order_by("segment_id", "-measured_at")
        .values_list("segment_id", "size")
    ):
        earlier.setdefault(segment_id, size)
    rows = []
    for segment in segments:
        trend = segment.size - earlier[segment.pk] if segment.pk in earlier else None
        rows.append({"segment": segment, "size": segment.size, "trend": trend})
    return rows


def size_history(segment: Segment, *, days: int = 90) -> list[tuple[dt.datetime, int]]:
    since = timezone.now() - dt.timedelta(days=days)
    rows = SegmentSize.objects.filter(tenant_id=segment.tenant_id, segment=segment, measured_at__gte=since)
    return list(rows.order_by("measured_at").values_list("measured_at", "size"))


def members_page(
    segment: Segment, *, before: int | None = None, size: int = 50
) -> tuple[list[dict[str, Any]], int | None]:
    """Members newest contact first, by keyset on the contact id; returns (rows, next cursor)."""
    members = SegmentMember.objects.filter(tenant_id=segment.tenant_id, segment=segment)
    if before is not None:
        members = members.filter(contact_id__lt=before)
    ids = list(members.order_by("-contact_id").values_list("contact_id", flat=True)[: size + 1])
    more = len(ids) > size
    ids = ids[:size]
    found = Contact.objects.filter(tenant_id=segment.tenant_id, pk__in=ids).values(*MEMBER_COLUMNS)
    contacts = {row["id"]: row for row in found}
    rows = [contacts[pk] for pk in ids if pk in contacts]
    return rows, (ids[-1] if more and ids else None)


def members_for_export(segment: Segment) -> Iterator[dict[str, Any]]:
    """Every member (contact columns), streamed in keyset pages."""
    cursor: int | None = None
    while True:
        rows, cursor = members_page(segment, before=cursor, size=2_000)
        yield from rows
        if cursor is None:
            return


def overlap(tenant: Tenant, segments: Sequence[Segment]) -> dict[tuple[int, int], int]:
    """Shared members of every pair of ``segments`` (at most OVERLAP_MAX_SEGMENTS): {(a, b): count}."""
    ids = [segment.pk for segment in segments][:OVERLAP_MAX_SEGMENTS]
    if len(ids) < 2:
        return {}
    table = SegmentMember._meta.db_table
    sql = f"""
        SELECT a.segment_id, b.segment_id, count(*)
        FROM {table} a JOIN {table} b
          ON b.tenant_id = a.tenant_id AND b.contact_id = a.contact_id AND b.segment_id > a.segment_id
        WHERE a.tenant_id = %s AND b.tenant_id = %s AND a.segment_id IN ({", ".join(["%s"] * len(ids))})
          AND b.segment_id IN ({", ".join(["%s"] * len(ids))})
        GROUP BY a.segment_id, b.segment_id
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [tenant.pk, tenant.pk, *ids, *ids])
        return {(a, b): n for a, b, n in cursor.fetchall()}


@dataclass(frozen=True)
class OverlapWarning:
    kind: str  # too_small or near_duplicate
    message: str
    segments: tuple[int, ...]


def overlap_warnings(segments: Sequence[Segment], shared: dict[tuple[int, int], int]) -> list[OverlapWarning]:
    """Against over-segmenting: segments too small to matter, and pairs that are nearly the same."""
    warnings = [
        OverlapWarning("too_small", f"{s.name} has {s.size} contacts: too few to act on (under {TOO_SMALL}).", (s.pk,))
        for s in segments
        if s.refreshed_at is not None and s.size < TOO_SMALL
    ]
    by_id = {segment.pk: segment for segment in segments}
    for (a, b), count in sorted(shared.items()):
        union = by_id[a].size + by_id[b].size - count
        if union and count / union >= NEAR_DUPLICATE:
            same = f"{100 * count / union:.0f}%"
            message = f"{by_id[a].name} and {by_id[b].name} are {same} the same: consider merging them."
            warnings.append(OverlapWarning("near_duplicate", message, (a, b)))
    return warnings


def segment_usages(segment: Segment) -> list[dict[str, Any]]:
    """Where a segment is used: other segments' rules (campaigns and journeys add theirs)."""
    others = Segment.objects.filter(tenant_id=segment.tenant_id).exclude(pk=segment.pk).only("name", "depends_on")
    usages = [
        {"kind": "segment", "id": other.pk, "name": other.name} for other in others if segment.pk in other.depends_on
    ]
    for finder in USAGE_FINDERS:
        usages.extend(finder(segment))
    return usages


# Apps that refer to segments register a finder here in their AppConfig.ready(): segment → usages
# ({"kind", "id", "name", "url"}); a used segment cannot be deleted.
USAGE_FINDERS: list[Any] = []


def builder_catalogue(tenant: Tenant) -> dict[str, Any]:
    """The builder's catalogue: fields and operators, plus the tenant's own event names and properties."""
    registry = Registry.for_tenant(tenant)
    names = (
        list(
            EventDailyRollup.objects.filter(tenant=tenant)
            .values("name")
            .annotate(n=Count("id"))
            .order_by("-n")
            .values_list("name", flat=True)[:EVENT_NAMES_LIMIT]
        )
        if connection.vendor != "postgresql"
        else _event_names_postgresql(tenant)
    )
    properties: dict[str, list[str]] = {}
    for name in names[:50]:
        recent = Event.objects.filter(tenant=tenant, name=name).order_by("-id")
        sample = recent.values_list("properties", flat=True)[:50]
        keys: set[str] = set()
        for item in sample:
            if isinstance(item, dict):
                keys.update(key for key in item if isinstance(key, str))
        properties[name] = sorted(keys)
    return catalogue(registry, event_names=sorted(names), event_properties=properties)


def _event_names_postgresql(tenant: Tenant) -> list[str]:
    """Distinct event names by a loose index scan on (tenant, name, day): fast at millions of rows."""
    table = EventDailyRollup._meta.db_table
    sql = f"""
        WITH RECURSIVE names AS (
            (SELECT name FROM {table} WHERE tenant_id = %s ORDER BY name LIMIT 1)
            UNION ALL
            SELECT (SELECT r.name FROM {table} r WHERE r.tenant_id = %s AND r.name > names.name ORDER BY r.name LIMIT 1)
            FROM names WHERE names.name IS NOT NULL
        )
        SELECT name FROM names WHERE name IS NOT NULL LIMIT %s
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [tenant.pk, tenant.pk, EVENT_NAMES_LIMIT])
        return [row[0] for row in cursor.fetchall()]


def dynamic_segments(tenant: Tenant) -> QuerySet[Segment]:
    return Segment.objects.filter(tenant=tenant, kind=Segment.Kind.DYNAMIC)


def contacts_by_identifiers(tenant: Tenant, identifiers: Sequence[str]) -> tuple[list[int], list[str]]:
    """Find contacts (not erased) by email, case-insensitively, or by external id.

    Returns the ids found and the identifiers that matched nobody, in the order given.
    """
    found: dict[str, int] = {}
    batch = 5_000
    for start in range(0, len(identifiers), batch):
        chunk = list(identifiers[start : start + batch])
        emails = sorted({value.strip().lower() for value in chunk if "@" in value})
        rows = Contact.objects.filter(tenant=tenant, erased_at__isnull=True).filter(
            Q(external_id__in=chunk) | Q(email__in=emails)
        )
        for pk, email, external_id in rows.values_list("pk", "email", "external_id"):
            if external_id:
                found.setdefault(f"x:{external_id}", pk)
            if email:
                found.setdefault(f"e:{email}", pk)
    ids: dict[int, None] = {}
    missing: list[str] = []
    for value in identifiers:
        pk = found.get(f"x:{value}") or found.get(f"e:{value.strip().lower()}")
        if pk is None:
            missing.append(value)
        else:
            ids.setdefault(pk, None)
    return list(ids), missing
