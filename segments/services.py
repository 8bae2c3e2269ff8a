"""Every write to segments: definitions, membership (full refresh and real time), static lists, RFM.

Membership is written set-based: a full refresh is one statement on PostgreSQL (a
data-modifying CTE over the compiled query), and a real-time update evaluates a batch of
contacts against every dynamic segment of a dependency level in one query.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from django.conf import settings
from django.core.exceptions import EmptyResultSet, ValidationError
from django.db import DatabaseError, connection, transaction
from django.db.models import BooleanField, ExpressionWrapper, F, Q, QuerySet
from django.db.models.expressions import Window
from django.db.models.functions import Ntile
from django.utils import timezone

from contacts.models import Contact
from contacts.summaries import summaries_for_counting
from segments.compiler import Context, compile_rules, matching_contacts
from segments.models import RfmGroup, RfmScore, Segment, SegmentMember, SegmentSize, SegmentTransition
from segments.rules import Registry, RuleError, is_time_relative, referenced_segments, validate
from segments.signals import membership_moved
from tenants.audit import Actor, audit
from tenants.models import Tenant

logger = logging.getLogger(__name__)
ENTERED, EXITED = SegmentTransition.Kind.ENTERED, SegmentTransition.Kind.EXITED

MAX_STATIC_IDS = 100_000
# A refresh or a count that runs longer than this is cancelled by the database.
REFRESH_TIMEOUT_MS = getattr(settings, "SEGMENT_REFRESH_TIMEOUT_MS", 120_000)


class SegmentInvalid(ValidationError):
    """A segment definition was refused. ``message_dict`` has readable messages per field (for
    "rules": "path: message"); ``rule_errors`` keeps each rule error's path and message apart."""

    def __init__(self, errors: dict[str, Any], rule_errors: list[RuleError]) -> None:
        if rule_errors:
            errors["rules"] = [f"{e.path or 'rules'}: {e.message}" for e in rule_errors]
        super().__init__(errors)
        self.rule_errors = rule_errors


class SegmentTimeout(Exception):
    """The database cancelled a segment query that ran past its statement timeout."""


@contextmanager
def statement_timeout(milliseconds: int) -> Iterator[None]:
    """Cap every statement of the block (PostgreSQL; a no-op elsewhere) and restore the cap after."""
    if connection.vendor != "postgresql":
        yield
        return
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('statement_timeout')")
        (previous,) = cursor.fetchone()
        cursor.execute("SELECT set_config('statement_timeout', %s, true)", [str(int(milliseconds))])
        try:
            with transaction.atomic():
                yield
        except DatabaseError as error:
            if getattr(error, "__cause__", None) and type(error.__cause__).__name__ == "QueryCanceled":
                raise SegmentTimeout("The segment query ran too long and was cancelled.") from error
            raise
        finally:
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", [previous])


# Planner settings for segment queries, transaction-local (bench/RESULTS.md, 2026-11-30):
# - JIT compiled for 80-120 ms before every count over a million contacts, for nothing;
# - whole-tenant sets (counts, previews, refreshes) join by hashing or merging: under row-level
#   security the planner cannot read the statistics of non-leakproof conditions (JSON, LIKE), so
#   it underestimates rows and picks nested loops that probe an index once per contact (257,000
#   probes for one preview), and a refresh reads the members' statistics, which lag behind;
# - one parallel worker per spare core of the database server (SEGMENT_PARALLEL_WORKERS; 1 on the
#   2-core machine measured): a per-contact aggregate (an IN subquery with GROUP BY) is computed in
#   full by every process of a parallel plan, so extra processes past the cores only repeat it.
QUERY_SETTINGS: dict[str, str] = {"jit": "off"}
SET_BASED: dict[str, str] = {
    "enable_nestloop": "off",
    "max_parallel_workers_per_gather": str(getattr(settings, "SEGMENT_PARALLEL_WORKERS", 1)),
}


@contextmanager
def query_settings(**overrides: str) -> Iterator[None]:
    """Apply QUERY_SETTINGS (and ``overrides``) to the block (PostgreSQL; a no-op elsewhere),
    restoring the previous values after."""
    settings_ = {**QUERY_SETTINGS, **overrides}
    if connection.vendor != "postgresql" or not settings_:
        yield
        return
    names = list(settings_)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(["current_setting(%s)"] * len(names)), names)
        previous = cursor.fetchone()
        _set_local(cursor, settings_)
        try:
            with transaction.atomic():
                yield
        finally:
            _set_local(cursor, dict(zip(names, previous, strict=True)))


def _set_local(cursor: Any, values: dict[str, str]) -> None:
    marks = ", ".join(["set_config(%s, %s, true)"] * len(values))
    cursor.execute("SELECT " + marks, [item for pair in values.items() for item in pair])


def context_for(tenant: Tenant, registry: Registry | None = None, **kwargs: Any) -> Context:
    """What compiling the tenant's rules depends on. A whole-tenant count (no ``contact_ids``)
    inside a transaction may read the event window summaries, if they are counted for today:
    from here to the end of the transaction a refresh cannot move them on."""
    registry = registry or Registry.for_tenant(tenant)
    ctx = Context(tenant_id=tenant.pk, attributes=registry.attributes, **kwargs)
    if ctx.contact_ids is None and ctx.summaries is None:
        ctx = replace(
            ctx,
            summaries=summaries_for_counting(tenant=tenant, today=ctx.today),
            retention_days=tenant.event_retention_days,
        )
    return ctx


# --- definitions ---------------------------------------------------------------------------------
def _clean(
    *, tenant: Tenant, name: str, kind: str, rules: Any, segment: Segment | None
) -> tuple[str, dict[str, Any], list[int]]:
    errors: dict[str, Any] = {}
    name = (name or "").strip()
    if not name:
        errors["name"] = "Give the segment a name."
    elif len(name) > 200:
        errors["name"] = "At most 200 characters."
    elif Segment.objects.filter(tenant=tenant, name=name).exclude(pk=segment.pk if segment else None).exists():
        errors["name"] = "Another segment has this name."
    if kind not in Segment.Kind.values:
        errors["kind"] = f"Expected one of {', '.join(Segment.Kind.values)}."
    rule_errors: list[RuleError] = []
    if kind == Segment.Kind.STATIC:
        rules = {}
    else:
        rule_errors = validate(rules, Registry.for_tenant(tenant), segment_id=segment.pk if segment else None)
    if errors or rule_errors:
        raise SegmentInvalid(errors, rule_errors)
    return name, rules, referenced_segments(rules) if rules else []


def segment_create(
    *, tenant: Tenant, actor: Actor, name: str, rules: Any = None, kind: str = Segment.Kind.DYNAMIC,
    description: str = "",
) -> Segment:  # fmt: skip
    """Create a segment and queue its first materialisation (dynamic) or leave it empty (static)."""
    name, rules, depends_on = _clean(tenant=tenant, name=name, kind=kind, rules=rules, segment=None)
    segment = Segment.objects.create(
        tenant=tenant, name=name, kind=kind, rules=rules, description=(description or "").strip(),
        depends_on=depends_on, time_relative=bool(rules) and is_time_relative(rules), created_by=actor.user,
    )  # fmt: skip
    audit(tenant=tenant, actor=actor, action="segment.created", obj=segment)
    _queue_refresh(segment)
    return segment


def segment_update(
    *, segment: Segment, actor: Actor, name: str | None = None, rules: Any = None, description: str | None = None
) -> Segment:
    """Rename or change the rules; a rule change bumps the version and queues a refresh."""
    new_rules = segment.rules if rules is None else rules
    name, new_rules, depends_on = _clean(
        tenant=segment.tenant, name=segment.name if name is None else name, kind=segment.kind, rules=new_rules,
        segment=segment,
    )  # fmt: skip
    rules_changed = new_rules != segment.rules
    segment.name = name
    if description is not None:
        segment.description = description.strip()
    if rules_changed:
        segment.rules = new_rules
        segment.depends_on = depends_on
        segment.time_relative = is_time_relative(new_rules)
        segment.version += 1
    segment.save()
    audit(tenant=segment.tenant, actor=actor, action="segment.updated", obj=segment, data={"version": segment.version})
    if rules_changed:
        _queue_refresh(segment)
    return segment


def segment_delete(*, segment: Segment, actor: Actor) -> None:
    from segments.selectors import segment_usages

    by_kind: dict[str, list[str]] = {}
    for usage in segment_usages(segment):
        by_kind.setdefault(usage["kind"], []).append(usage["name"])
    if by_kind:
        labels = {"segment": "other segments", "campaign": "campaigns", "journey": "journeys"}
        parts = [f"{labels.get(kind, kind)}: {', '.join(sorted(set(names)))}" for kind, names in by_kind.items()]
        raise ValidationError(f"Used by {'; '.join(parts)}. Change them first.")
    audit(tenant=segment.tenant, actor=actor, action="segment.deleted", obj=segment, data={"name": segment.name})
    segment.delete()


def _queue_refresh(segment: Segment) -> None:
    if not segment.is_dynamic:
        return
    from segments.tasks import refresh_segment

    tenant_id, segment_id = segment.tenant_id, segment.pk
    transaction.on_commit(lambda: refresh_segment.delay(tenant_id, segment_id))


# --- full refresh --------------------------------------------------------------------------------
@dataclass(frozen=True)
class RefreshResult:
    entered: int
    exited: int
    size: int
    version: int


def segment_refresh(*, segment: Segment, now: dt.datetime | None = None) -> RefreshResult | None:
    """Materialise a dynamic segment's membership; record entries, exits and the size.

    Returns None when another refresh of the same segment holds its lock (the two never
    fight: the second simply skips) or when the segment is static.
    """
    now = now or timezone.now()
    with transaction.atomic():
        locked = Segment.objects.select_for_update(skip_locked=True).filter(pk=segment.pk).first()
        if locked is None or not locked.is_dynamic:
            return None
        ctx = context_for(locked.tenant, now=now)
        target = matching_contacts(locked.rules, ctx).values("id")
        with statement_timeout(REFRESH_TIMEOUT_MS), query_settings(**SET_BASED):
            if connection.vendor == "postgresql":
                entered, exited = _refresh_postgresql(locked, target, now)
            else:
                entered, exited = _refresh_generic(locked, target, now)
            size = SegmentMember.objects.filter(tenant_id=locked.tenant_id, segment=locked).count()
        Segment.objects.filter(pk=locked.pk).update(
            size=size, refreshed_at=now, materialized_version=locked.version, refresh_error=""
        )
        SegmentSize.objects.create(tenant_id=locked.tenant_id, segment=locked, measured_at=now, size=size)
    logger.info(
        "segment refreshed",
        extra={"tenant_id": locked.tenant_id, "segment_id": locked.pk, "entered": entered, "exited": exited},
    )
    return RefreshResult(entered=entered, exited=exited, size=size, version=locked.version)


def _refresh_postgresql(segment: Segment, target: Any, now: dt.datetime) -> tuple[int, int]:
    """One statement: insert the new members, delete the leavers, record both as transitions.

    The difference between the rules' contacts and the current members is one FULL JOIN (a hash
    or merge join, never a nested loop), and nested loops are off for the whole statement
    (SET_BASED): the members' statistics lag behind every refresh (a new segment's look empty),
    and a nested loop chosen on them rescanned the target once per member — quadratic, hours at
    300,000 members. The insert needs no ON CONFLICT (a speculative insertion costs 7 % of a first
    materialisation): every writer of members holds the segment's row lock, as this one does, so
    the entering contacts cannot have become members since the statement's snapshot; a writer that
    broke that rule would make the refresh fail loudly, not leave a wrong membership.
    """
    try:
        target_sql, target_params = target.query.sql_with_params()
    except EmptyResultSet:  # rules that can match nobody (e.g. age = 25.5): every member leaves
        target_sql, target_params = "SELECT NULL::bigint AS id WHERE false", ()
    member = SegmentMember._meta.db_table
    transition = SegmentTransition._meta.db_table
    sql = f"""
        WITH target AS ({target_sql}),
        diff AS MATERIALIZED (
            SELECT coalesce(target.id, members.contact_id) AS contact_id, members.contact_id IS NULL AS entering
            FROM target
            FULL JOIN (SELECT contact_id FROM {member} WHERE tenant_id = %s AND segment_id = %s) AS members
              ON members.contact_id = target.id
            WHERE target.id IS NULL OR members.contact_id IS NULL
        ),
        entered AS (
            INSERT INTO {member} (tenant_id, segment_id, contact_id, entered_at)
            SELECT %s, %s, contact_id, %s FROM diff WHERE entering
            RETURNING contact_id
        ),
        exited AS (
            DELETE FROM {member} m USING diff
            WHERE m.tenant_id = %s AND m.segment_id = %s AND m.contact_id = diff.contact_id AND NOT diff.entering
            RETURNING m.contact_id
        ),
        recorded AS (
            INSERT INTO {transition} (tenant_id, segment_id, contact_id, kind, occurred_at, segment_version)
            SELECT %s, %s, contact_id, 'entered', %s, %s FROM entered
            UNION ALL
            SELECT %s, %s, contact_id, 'exited', %s, %s FROM exited
            RETURNING kind
        )
        SELECT count(*) FILTER (WHERE kind = 'entered'), count(*) FILTER (WHERE kind = 'exited') FROM recorded
    """
    t, s, v = segment.tenant_id, segment.pk, segment.version
    params = [*target_params, t, s, t, s, now, t, s, t, s, now, v, t, s, now, v]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        entered, exited = cursor.fetchone()
    if entered or exited:
        membership_moved(segment.tenant_id, [segment.pk], now)
    return int(entered), int(exited)


def _refresh_generic(segment: Segment, target: Any, now: dt.datetime) -> tuple[int, int]:
    """The same diff for the embedded database (small tenants): sets in Python."""
    wanted = set(target.values_list("id", flat=True))
    members = SegmentMember.objects.filter(tenant_id=segment.tenant_id, segment=segment)
    current = set(members.values_list("contact_id", flat=True))
    entered, exited = wanted - current, current - wanted
    _write_changes(segment.tenant_id, {segment.pk: segment.version}, [(segment.pk, entered, exited)], now)
    return len(entered), len(exited)


def _write_changes(
    tenant_id: int,
    versions: dict[int, int],
    changes: Iterable[tuple[int, set[int], set[int]]],
    now: dt.datetime,
) -> None:
    new_members: list[SegmentMember] = []
    transitions: list[SegmentTransition] = []
    leaving = Q(pk__in=[])
    for segment_id, entered, exited in changes:
        version = versions[segment_id]
        for contact_id in sorted(entered):
            new_members.append(
                SegmentMember(tenant_id=tenant_id, segment_id=segment_id, contact_id=contact_id, entered_at=now)
            )
            transitions.append(
                _transition(tenant_id, segment_id, contact_id, SegmentTransition.Kind.ENTERED, now, version)
            )
        for contact_id in sorted(exited):
            transitions.append(
                _transition(tenant_id, segment_id, contact_id, SegmentTransition.Kind.EXITED, now, version)
            )
        if exited:
            leaving |= Q(segment_id=segment_id, contact_id__in=sorted(exited))
    if transitions:
        SegmentMember.objects.filter(Q(tenant_id=tenant_id) & leaving).delete()
        SegmentMember.objects.bulk_create(new_members, ignore_conflicts=True, batch_size=2_000)
        SegmentTransition.objects.bulk_create(transitions, batch_size=2_000)
        membership_moved(tenant_id, {t.segment_id for t in transitions}, now)


def _transition(
    tenant_id: int, segment_id: int, contact_id: int, kind: str, now: dt.datetime, version: int
) -> SegmentTransition:
    return SegmentTransition(
        tenant_id=tenant_id, segment_id=segment_id, contact_id=contact_id, kind=kind, occurred_at=now,
        segment_version=version,
    )  # fmt: skip


def segments_refresh_due(*, tenant: Tenant, now: dt.datetime | None = None, limit: int = 20) -> list[int]:
    """Refresh the dynamic segments that need it, oldest first, at most ``limit`` per call.

    Due: never refreshed, rules changed since the last refresh, or rules that move with the
    clock and a refresh older than ``SEGMENT_REFRESH_INTERVAL`` minutes.
    """
    now = now or timezone.now()
    interval = dt.timedelta(minutes=getattr(settings, "SEGMENT_REFRESH_INTERVAL", 60))
    due = (
        Segment.objects.filter(tenant=tenant, kind=Segment.Kind.DYNAMIC)
        .filter(
            Q(refreshed_at__isnull=True)
            | ~Q(materialized_version=F("version"))
            | Q(time_relative=True, refreshed_at__lt=now - interval)
        )
        .order_by(F("refreshed_at").asc(nulls_first=True))
    )
    done: list[int] = []
    for segment in _dependency_order(list(due[:limit])):
        try:
            if segment_refresh(segment=segment, now=now):
                done.append(segment.pk)
        except (SegmentTimeout, DatabaseError) as error:
            Segment.objects.filter(pk=segment.pk).update(refresh_error=str(error)[:500])
            logger.warning("segment refresh failed", extra={"segment_id": segment.pk, "error": str(error)})
    return done


def _dependency_order(segments: Sequence[Segment]) -> list[Segment]:
    """Segments another depends on come first (the validator keeps the graph acyclic)."""
    by_id = {segment.pk: segment for segment in segments}
    ordered: list[Segment] = []
    seen: set[int] = set()

    def visit(segment: Segment) -> None:
        if segment.pk in seen:
            return
        seen.add(segment.pk)
        for dependency in segment.depends_on:
            if dependency in by_id:
                visit(by_id[dependency])
        ordered.append(segment)

    for segment in segments:
        visit(segment)
    return ordered


def _levels(segments: Sequence[Segment]) -> list[list[Segment]]:
    """Group segments so each level only depends on earlier ones."""
    by_id = {segment.pk: segment for segment in segments}
    depth: dict[int, int] = {}

    def level_of(segment: Segment) -> int:
        if segment.pk not in depth:
            depth[segment.pk] = 0
            depth[segment.pk] = 1 + max((level_of(by_id[d]) for d in segment.depends_on if d in by_id), default=-1)
        return depth[segment.pk]

    levels: dict[int, list[Segment]] = {}
    for segment in segments:
        levels.setdefault(level_of(segment), []).append(segment)
    return [levels[key] for key in sorted(levels)]


# --- real time -----------------------------------------------------------------------------------
def segments_evaluate_contacts(
    *, tenant: Tenant, contact_ids: Iterable[int], now: dt.datetime | None = None
) -> dict[str, int]:
    """Re-evaluate a few contacts against every dynamic segment; record entries and exits.

    One query per dependency level answers, for each contact, which segments it matches.
    Segment rows are locked in id order, so a concurrent full refresh of a segment is
    waited for rather than raced.
    """
    now = now or timezone.now()
    ids = tuple(sorted({int(pk) for pk in contact_ids}))
    if not ids:
        return {"entered": 0, "exited": 0}
    entered_total = exited_total = 0
    with transaction.atomic():
        segments = list(
            Segment.objects.select_for_update()
            .filter(tenant=tenant, kind=Segment.Kind.DYNAMIC, materialized_version__gt=0)
            .order_by("pk")
        )
        if not segments:
            return {"entered": 0, "exited": 0}
        ctx = context_for(tenant, now=now, contact_ids=ids)
        versions = {segment.pk: segment.version for segment in segments}
        for level in _levels(segments):
            with query_settings():
                matches = _match_level(tenant, level, ctx)
            current: dict[int, set[int]] = {segment.pk: set() for segment in level}
            rows = SegmentMember.objects.filter(
                tenant=tenant, segment_id__in=list(current), contact_id__in=ids
            ).values_list("segment_id", "contact_id")
            for segment_id, contact_id in rows:
                current[segment_id].add(contact_id)
            changes = [
                (segment.pk, matches[segment.pk] - current[segment.pk], current[segment.pk] - matches[segment.pk])
                for segment in level
            ]
            _write_changes(tenant.pk, versions, changes, now)
            for segment_id, entered, exited in changes:
                if entered or exited:
                    entered_total += len(entered)
                    exited_total += len(exited)
                    Segment.objects.filter(pk=segment_id).update(size=F("size") + len(entered) - len(exited))
    return {"entered": entered_total, "exited": exited_total}


# The SQL of a level changes only with its segments' rules, the tenant's attribute types, the
# day and how many contacts are evaluated: it is compiled once for placeholder ids and reused,
# since building and compiling 50 rule trees through the ORM was most of a real-time update.
_LEVEL_SQL: dict[tuple[Any, ...], tuple[str, list[Any]]] = {}
LEVEL_SQL_CACHE_SIZE = 256
# Placeholder contact ids: never an id, nor a value in a rule (the validator caps numbers at 1e12).
_PLACEHOLDER = -(2**62)


def _match_level(tenant: Tenant, segments: Sequence[Segment], ctx: Context) -> dict[int, set[int]]:
    ids = ctx.contact_ids or ()
    key = (
        tenant.pk, tuple((segment.pk, json.dumps(segment.rules, sort_keys=True)) for segment in segments),
        ctx.today, tuple(sorted(ctx.attributes.items())), len(ids),
    )  # fmt: skip
    compiled = _LEVEL_SQL.get(key)
    if compiled is None:
        placeholders = tuple(_PLACEHOLDER - index for index in range(len(ids)))
        query = _level_query(tenant, segments, replace(ctx, contact_ids=placeholders))
        sql, params = query.query.sql_with_params()
        compiled = (sql, list(params))
        if len(_LEVEL_SQL) >= LEVEL_SQL_CACHE_SIZE:
            _LEVEL_SQL.clear()
        _LEVEL_SQL[key] = compiled
    level_sql, template = compiled
    low = _PLACEHOLDER - len(ids)
    values = [ids[_PLACEHOLDER - p] if type(p) is int and low < p <= _PLACEHOLDER else p for p in template]
    matches: dict[int, set[int]] = {segment.pk: set() for segment in segments}
    with connection.cursor() as cursor:
        cursor.execute(level_sql, values)
        columns = [column[0] for column in cursor.description]
        for row in cursor.fetchall():
            flags = dict(zip(columns, row, strict=True))
            for segment in segments:
                if flags[f"s{segment.pk}"]:
                    matches[segment.pk].add(flags["pk"])
    return matches


def _level_query(tenant: Tenant, segments: Sequence[Segment], ctx: Context) -> QuerySet[Contact]:
    """Each of ``ctx.contact_ids`` with one boolean per segment: does it match the rules?"""
    contacts = Contact.objects.filter(tenant=tenant, erased_at__isnull=True, pk__in=ctx.contact_ids)
    flags = {
        f"s{segment.pk}": ExpressionWrapper(compile_rules(segment.rules, ctx), output_field=BooleanField())
        for segment in segments
    }
    return contacts.annotate(**flags).values("pk", *flags)


# --- static segments -----------------------------------------------------------------------------
def static_members_add(*, segment: Segment, actor: Actor, contact_ids: Sequence[int]) -> int:
    """Add contacts (of this tenant, not erased) to a static segment; return how many were new."""
    return _static_change(segment=segment, actor=actor, contact_ids=contact_ids, add=True)


def static_members_remove(*, segment: Segment, actor: Actor, contact_ids: Sequence[int]) -> int:
    return _static_change(segment=segment, actor=actor, contact_ids=contact_ids, add=False)


def _static_change(*, segment: Segment, actor: Actor, contact_ids: Sequence[int], add: bool) -> int:
    if segment.is_dynamic:
        raise ValidationError("Members of a dynamic segment follow its rules; edit the rules instead.")
    if len(contact_ids) > MAX_STATIC_IDS:
        raise ValidationError(f"At most {MAX_STATIC_IDS:,} contacts at a time.")
    now = timezone.now()
    with transaction.atomic():
        locked = Segment.objects.select_for_update().get(pk=segment.pk)
        wanted = set(
            Contact.objects.filter(tenant=segment.tenant, erased_at__isnull=True, pk__in=list(contact_ids)).values_list(
                "pk", flat=True
            )
        )
        current = set(
            SegmentMember.objects.filter(
                tenant=segment.tenant, segment=locked, contact_id__in=list(wanted)
            ).values_list("contact_id", flat=True)
        )
        entered, exited = (wanted - current, set()) if add else (set(), current)
        _write_changes(segment.tenant_id, {locked.pk: locked.version}, [(locked.pk, entered, exited)], now)
        size = SegmentMember.objects.filter(tenant=segment.tenant, segment=locked).count()
        Segment.objects.filter(pk=locked.pk).update(size=size, refreshed_at=now)
        SegmentSize.objects.create(tenant=segment.tenant, segment=locked, measured_at=now, size=size)
    changed = len(entered) + len(exited)
    audit(
        tenant=segment.tenant, actor=actor, action="segment.members_added" if add else "segment.members_removed",
        obj=segment, data={"count": changed},
    )  # fmt: skip
    segment.size = size
    return changed


# --- RFM -----------------------------------------------------------------------------------------
def rfm_group(recency: int, frequency: int, monetary: int) -> str:
    """The classic named RFM groups, first matching rule wins (docs/segments.md)."""
    r, f, m = recency, frequency, monetary
    if r >= 4 and f >= 4 and m >= 4:
        return RfmGroup.CHAMPIONS
    if r <= 2 and f >= 4 and m >= 4:
        return RfmGroup.CANNOT_LOSE
    if r >= 3 and f >= 4:
        return RfmGroup.LOYAL
    if r >= 4 and f >= 2:
        return RfmGroup.POTENTIAL_LOYALISTS
    if r >= 4:
        return RfmGroup.NEW_CUSTOMERS
    if r == 3 and f >= 3:
        return RfmGroup.NEED_ATTENTION
    if r == 3:
        return RfmGroup.PROMISING
    if f >= 3:
        return RfmGroup.AT_RISK
    if r == 2:
        return RfmGroup.HIBERNATING
    return RfmGroup.LOST


def rfm_recompute(*, tenant: Tenant, now: dt.datetime | None = None) -> int:
    """Score every buyer of the tenant in quintiles of recency, frequency and monetary value.

    Recency ranks the last order time, frequency the order count, monetary the total
    revenue; 5 is the best fifth. Contacts with no order have no score.
    """
    now = now or timezone.now()
    buyers = Contact.objects.filter(
        tenant=tenant, erased_at__isnull=True, order_count__gt=0, last_order_at__isnull=False
    )
    scored = buyers.annotate(
        r=Window(Ntile(5), order_by=[F("last_order_at").asc(), F("pk").asc()]),
        f=Window(Ntile(5), order_by=[F("order_count").asc(), F("pk").asc()]),
        m=Window(Ntile(5), order_by=[F("total_revenue").asc(), F("pk").asc()]),
    ).values_list("pk", "r", "f", "m")
    with transaction.atomic():
        RfmScore.objects.filter(tenant=tenant).delete()
        rows = (
            RfmScore(
                tenant=tenant, contact_id=pk, recency=r, frequency=f, monetary=m, group=rfm_group(r, f, m),
                computed_at=now,
            )
            for pk, r, f, m in scored.iterator(chunk_size=5_000)
        )  # fmt: skip
        count = 0
        batch: list[RfmScore] = []
        for row in rows:
            batch.append(row)
            if len(batch) == 5_000:
                RfmScore.objects.bulk_create(batch)
                count += len(batch)
                batch = []
        RfmScore.objects.bulk_create(batch)
        count += len(batch)
    return count
