"""Reads for ad audiences: a segment's members with what decides their export, the audience file,
the lookalike summary, and the lists the pages show.

Who is exported (docs/audiences.md, "Who is in the file"): a member of the segment's materialised
membership, not erased, with an identifier (a valid email or phone) that has consent for the
advertising purpose on its channel (email for the email; SMS or WhatsApp for the phone) and is not
suppressed on that channel. A contact whose email qualifies and whose phone does not is exported
with the email only. Each member left out counts once, under the first reason that applies:
erased, no identifier, no consent, suppressed.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
from collections import Counter
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.core.cache import cache
from django.db import connection
from django.db.models import QuerySet
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django_countries import countries as country_names

from audiences.formats import FORMATS, FileFormat, Identity, contact_email, contact_phone
from audiences.models import AudienceDestination, AudienceExport
from contacts.models import Channel, ConsentState, ConsentStatus, Contact, LifecycleStage, Suppression
from contacts.normalize import address_hash
from segments.models import Segment, SegmentMember
from tenants.models import Tenant

# The consent purpose that allows advertising (docs/audiences.md): a workspace adds it to its purposes.
ADVERTISING_PURPOSE = "advertising"
PHONE_CHANNELS = (Channel.SMS, Channel.WHATSAPP)
FETCH_SIZE = 5_000

ERASED, NO_IDENTIFIER, NO_CONSENT, SUPPRESSED = "erased", "no_identifier", "no_consent", "suppressed"
EXCLUSION_REASONS: dict[str, str] = {
    ERASED: "Erased",
    NO_IDENTIFIER: "No valid email or phone",
    NO_CONSENT: "No advertising consent",
    SUPPRESSED: "Suppressed",
}

# One member as the query returns it:
# (contact id, erased, email, phone, first name, last name, country, region, city, postal code,
#  email consented, phone consented, email suppressed, phone suppressed)
MemberRow = tuple[int, bool, str, str, str, str, str, str, str, str, bool, bool, bool, bool]

MEMBERS_SQL = """
SELECT c.id, c.erased_at IS NOT NULL, c.email, c.phone, c.first_name, c.last_name, c.country, c.region, c.city,
       c.postal_code, COALESCE(k.email_ok, false), COALESCE(k.phone_ok, false),
       se.id IS NOT NULL, (ss.id IS NOT NULL OR sw.id IS NOT NULL)
FROM {member} m
JOIN {contact} c ON c.tenant_id = %(tenant)s AND c.id = m.contact_id
LEFT JOIN (
    SELECT contact_id, bool_or(channel = %(email)s) AS email_ok, bool_or(channel <> %(email)s) AS phone_ok
    FROM {consent}
    WHERE tenant_id = %(tenant)s AND purpose = %(purpose)s AND status = %(granted)s
      AND channel IN (%(email)s, %(sms)s, %(whatsapp)s)
    GROUP BY contact_id
) k ON k.contact_id = c.id
LEFT JOIN {suppression} se ON se.tenant_id = %(tenant)s AND se.channel = %(email)s AND c.email <> ''
    AND se.address_hash = encode(sha256(convert_to(%(email)s || ':' || c.email, 'UTF8')), 'hex')
LEFT JOIN {suppression} ss ON ss.tenant_id = %(tenant)s AND ss.channel = %(sms)s AND c.phone <> ''
    AND ss.address_hash = encode(sha256(convert_to(%(sms)s || ':' || c.phone, 'UTF8')), 'hex')
LEFT JOIN {suppression} sw ON sw.tenant_id = %(tenant)s AND sw.channel = %(whatsapp)s AND c.phone <> ''
    AND sw.address_hash = encode(sha256(convert_to(%(whatsapp)s || ':' || c.phone, 'UTF8')), 'hex')
WHERE m.tenant_id = %(tenant)s AND m.segment_id = %(segment)s
ORDER BY m.contact_id
"""


def member_rows(
    *, tenant_id: int, segment_id: int, purpose: str = ADVERTISING_PURPOSE, fetch_size: int = FETCH_SIZE
) -> Generator[list[MemberRow], None, None]:
    """The segment's members in contact order, in batches, with their consent and suppression.

    Call inside a transaction with the tenant in scope. On PostgreSQL one set-based statement read
    through a server-side cursor (consent per contact aggregated once, suppressions joined by the
    address hash computed in SQL); elsewhere keyset pages of the same rows.
    """
    if connection.vendor == "postgresql":
        yield from _member_rows_postgresql(tenant_id, segment_id, purpose, fetch_size)
    else:
        yield from member_rows_generic(tenant_id=tenant_id, segment_id=segment_id, purpose=purpose, page=fetch_size)


def _member_rows_postgresql(tenant_id: int, segment_id: int, purpose: str, fetch_size: int) -> Iterator[list[Any]]:
    sql = MEMBERS_SQL.format(
        member=SegmentMember._meta.db_table,
        contact=Contact._meta.db_table,
        consent=ConsentState._meta.db_table,
        suppression=Suppression._meta.db_table,
    )
    params: dict[str, Any] = {
        "tenant": tenant_id, "segment": segment_id, "purpose": purpose, "granted": ConsentStatus.GRANTED,
        "email": Channel.EMAIL.value, "sms": Channel.SMS.value, "whatsapp": Channel.WHATSAPP.value,
    }  # fmt: skip
    with connection.chunked_cursor() as cursor:  # a named (server-side) cursor: rows arrive as they are read
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(fetch_size):
            yield rows


def member_rows_generic(*, tenant_id: int, segment_id: int, purpose: str, page: int = 2_000) -> Iterator[list[Any]]:
    """The same rows as the PostgreSQL statement, page by page through the ORM (SQLite, the embedded default)."""
    columns = ("id", "erased_at", "email", "phone", "first_name", "last_name", "country", "region", "city")
    last = 0
    while True:
        ids = list(
            SegmentMember.objects.filter(tenant_id=tenant_id, segment_id=segment_id, contact_id__gt=last)
            .order_by("contact_id")
            .values_list("contact_id", flat=True)[:page]
        )
        if not ids:
            return
        last = ids[-1]
        contacts = {
            row[0]: row
            for row in Contact.objects.filter(tenant_id=tenant_id, pk__in=ids).values_list(*columns, "postal_code")
        }
        granted = set(
            ConsentState.objects.filter(
                tenant_id=tenant_id, contact_id__in=ids, purpose=purpose, status=ConsentStatus.GRANTED,
                channel__in=[Channel.EMAIL, *PHONE_CHANNELS],
            ).values_list("contact_id", "channel")
        )  # fmt: skip
        wanted = {
            (channel, address_hash(channel, row[2] if channel == Channel.EMAIL else row[3]))
            for row in contacts.values()
            for channel in (Channel.EMAIL, *PHONE_CHANNELS)
            if (row[2] if channel == Channel.EMAIL else row[3])
        }
        suppressed = set(
            Suppression.objects.filter(
                tenant_id=tenant_id, address_hash__in=[hashed for _channel, hashed in wanted]
            ).values_list("channel", "address_hash")
        )
        batch: list[Any] = []
        for pk in ids:
            if pk not in contacts:
                continue
            _id, erased_at, email, phone, *rest = contacts[pk]
            batch.append(
                (
                    pk, erased_at is not None, email, phone, *rest,
                    (pk, Channel.EMAIL) in granted,
                    any((pk, channel) in granted for channel in PHONE_CHANNELS),
                    bool(email) and (Channel.EMAIL, address_hash(Channel.EMAIL, email)) in suppressed,
                    bool(phone) and any((c, address_hash(c, phone)) in suppressed for c in PHONE_CHANNELS),
                )
            )  # fmt: skip
        yield batch


def member_identity(row: Sequence[Any]) -> Identity | str:
    """The identity to export for one member, or the reason it is left out."""
    (_id, erased, email, phone, first_name, last_name, country, region, city, postal_code,
     email_consent, phone_consent, email_suppressed, phone_suppressed) = row  # fmt: skip
    if erased:
        return ERASED
    email, phone = contact_email(email), contact_phone(phone)
    if not email and not phone:
        return NO_IDENTIFIER
    email = email if email_consent else ""
    phone = phone if phone_consent else ""
    if not email and not phone:
        return NO_CONSENT
    email = "" if email_suppressed else email
    phone = "" if phone_suppressed else phone
    if not email and not phone:
        return SUPPRESSED
    return Identity(
        email=email, phone=phone, first_name=first_name or "", last_name=last_name or "",
        country=(country or "").upper(), region=region or "", city=city or "", postal_code=postal_code or "",
    )  # fmt: skip


class _Echo:
    """A file-like object whose write returns the line, for csv.writer in a stream."""

    def write(self, value: str) -> str:
        return value


@dataclass
class AudienceFile:
    """Turns member rows into the format's CSV text, counting and hashing everything it hands out."""

    format: FileFormat
    members: int = 0
    rows: int = 0
    excluded: Counter[str] = field(default_factory=Counter)
    size: int = 0
    _digest: Any = field(default_factory=hashlib.sha256)
    _writer: Any = field(default_factory=lambda: csv.writer(_Echo()))

    def _out(self, text: str) -> str:
        data = text.encode()
        self._digest.update(data)
        self.size += len(data)
        return text

    def header(self) -> str:
        return self._out(self._writer.writerow(self.format.headers))

    def lines(self, rows: Iterable[Sequence[Any]]) -> str:
        out = []
        for row in rows:
            self.members += 1
            who = member_identity(row)
            if isinstance(who, str):
                self.excluded[who] += 1
                continue
            out.append(self._writer.writerow(self.format.row(who)))
            self.rows += 1
        return self._out("".join(out))

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def excluded_counts(self) -> dict[str, int]:
        return {reason: int(self.excluded.get(reason, 0)) for reason in EXCLUSION_REASONS}


def audience_file(format_key: str) -> AudienceFile:
    return AudienceFile(FORMATS[format_key])


# --- pages and the API ------------------------------------------------------------------------------
def destinations_for(tenant: Tenant) -> QuerySet[AudienceDestination]:
    return (
        AudienceDestination.objects.filter(tenant_id=tenant.pk)
        .select_related("segment", "periodic_task", "tenant")
        .order_by("name")
    )


def exports_for(
    tenant: Tenant, *, destination_id: int | None = None, segment_id: int | None = None
) -> QuerySet[AudienceExport]:
    exports = AudienceExport.objects.filter(tenant_id=tenant.pk)
    if destination_id is not None:
        exports = exports.filter(destination_id=destination_id)
    if segment_id is not None:
        exports = exports.filter(segment_id=segment_id)
    return exports.select_related("destination").order_by("-created_at", "-id")


def has_advertising_purpose(tenant: Tenant) -> bool:
    return ADVERTISING_PURPOSE in (tenant.consent_purposes or [])


def destination_usages(segment: Segment) -> list[dict[str, Any]]:
    """Where destinations export a segment (a used segment cannot be deleted)."""
    destinations = AudienceDestination.objects.filter(tenant_id=segment.tenant_id, segment=segment)
    usages = []
    for destination in destinations.select_related("tenant").order_by("name"):
        try:
            url = reverse(
                "audiences:destination_edit",
                kwargs={"tenant_slug": destination.tenant.slug, "destination_id": destination.pk},
            )
        except NoReverseMatch:
            url = ""
        usages.append({"kind": "ad audience destinations", "id": destination.pk, "name": destination.name, "url": url})
    return usages


# --- the lookalike seed's summary ---------------------------------------------------------------------
TOP = 10
SUMMARY_FRESH_FOR = dt.timedelta(minutes=10)
TAG_FIELDS: dict[str, str] = {"interests": "Interests", "values": "Values", "lifestyle": "Lifestyle",
                              "attitudes": "Attitudes"}  # fmt: skip


@dataclass(frozen=True)
class Share:
    """How common one value is in the seed and in the whole audience (every contact not erased)."""

    value: str
    label: str
    seed: int
    overall: int
    seed_share: float  # of the seed, 0-1
    overall_share: float  # of everyone, 0-1

    @property
    def lift(self) -> float | None:
        """How many times more common in the seed than overall."""
        return self.seed_share / self.overall_share if self.overall_share else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "value": self.value, "label": self.label, "seed": self.seed, "overall": self.overall,
            "seed_share": round(self.seed_share, 4), "overall_share": round(self.overall_share, 4),
            "lift": round(self.lift, 2) if self.lift is not None else None,
        }  # fmt: skip


@dataclass(frozen=True)
class ValueFigure:
    label: str
    seed: Decimal | float | None
    overall: Decimal | float | None
    money: bool

    def as_dict(self) -> dict[str, Any]:
        def plain(value: Decimal | float | None) -> str | None:  # decimal text, as money is in the API
            return None if value is None else str(value)

        return {"label": self.label, "seed": plain(self.seed), "overall": plain(self.overall), "money": self.money}


@dataclass(frozen=True)
class LookalikeSummary:
    segment_id: int
    seed_size: int
    audience_size: int
    countries: list[Share]
    stages: list[Share]
    tags: dict[str, list[Share]]  # field label -> top tags
    value: list[ValueFigure]  # empty when analytics has no figures for the segment yet
    value_as_of: dt.datetime | None
    computed_at: dt.datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "segment": self.segment_id,
            "seed_size": self.seed_size,
            "audience_size": self.audience_size,
            "countries": [share.as_dict() for share in self.countries],
            "stages": [share.as_dict() for share in self.stages],
            "tags": {name: [share.as_dict() for share in shares] for name, shares in self.tags.items()},
            "value": [figure.as_dict() for figure in self.value],
            "value_as_of": self.value_as_of,
            "computed_at": self.computed_at,
        }


def _seed_join() -> str:
    return (
        f"FROM {Contact._meta.db_table} c LEFT JOIN {SegmentMember._meta.db_table} m "
        "ON m.tenant_id = %(tenant)s AND m.segment_id = %(segment)s AND m.contact_id = c.id "
        "WHERE c.tenant_id = %(tenant)s AND c.erased_at IS NULL"
    )


def _shares(
    rows: Iterable[tuple[Any, int, int]], seed_size: int, audience_size: int, labels: dict[str, str] | None = None
) -> list[Share]:
    shares = [
        Share(
            value=str(value or ""),
            label=(labels or {}).get(str(value), str(value)) if value else "(none)",
            seed=seed,
            overall=overall,
            seed_share=seed / seed_size if seed_size else 0.0,
            overall_share=overall / audience_size if audience_size else 0.0,
        )
        for value, seed, overall in rows
    ]
    shares.sort(key=lambda share: (-share.seed, -share.overall, share.value))
    return shares


def _country_stage_counts(params: dict[str, Any]) -> list[tuple[str, str, int, int]]:
    """(country, stage, in the seed, overall) for every pair that occurs: one pass over the contacts."""
    sql = (
        f"SELECT c.country, c.lifecycle_stage, count(m.contact_id), count(*) {_seed_join()} "
        "GROUP BY c.country, c.lifecycle_stage"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [(country or "", stage or "", int(seed), int(overall)) for country, stage, seed, overall in cursor]


def _tag_counts(params: dict[str, Any]) -> dict[str, list[tuple[str, int, int]]]:
    """The TOP tags of each psychographic field: field -> [(tag, in the seed, overall)], the seed's first.

    PostgreSQL: one pass over the contacts, the four lists unnested side by side and ranked per field;
    elsewhere (SQLite's JSON1) one query per field.
    """
    quote = connection.ops.quote_name
    found: dict[str, list[tuple[str, int, int]]] = {name: [] for name in TAG_FIELDS}
    if connection.vendor == "postgresql":
        unnest = " UNION ALL ".join(
            f"SELECT '{name}' AS field, x AS value FROM jsonb_array_elements_text(c.{quote(name)}) AS x"
            for name in TAG_FIELDS
        )
        join = _seed_join().replace("WHERE", f"CROSS JOIN LATERAL ({unnest}) AS t WHERE", 1)
        sql = (
            "SELECT field, value, seed, overall FROM ("
            "SELECT t.field, t.value, count(m.contact_id) AS seed, count(*) AS overall, row_number() OVER ("
            "PARTITION BY t.field ORDER BY count(m.contact_id) DESC, count(*) DESC, t.value) AS rank "
            f"{join} GROUP BY t.field, t.value) AS ranked WHERE rank <= %(top)s"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, {**params, "top": TOP})
            for name, value, seed, overall in cursor:
                found[name].append((value, int(seed), int(overall)))
        return found
    for name in TAG_FIELDS:
        join = _seed_join().replace("WHERE", f", json_each(c.{quote(name)}) AS t WHERE", 1)
        sql = (
            f"SELECT t.value, count(m.contact_id), count(*) {join} "
            "GROUP BY t.value ORDER BY count(m.contact_id) DESC, count(*) DESC, t.value LIMIT %(top)s"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, {**params, "top": TOP})
            found[name] = [(value, int(seed), int(overall)) for value, seed, overall in cursor]
    return found


def lookalike_summary_compute(*, segment: Segment) -> LookalikeSummary:
    """Describe the seed against everyone: countries, stages, psychographic tags (two passes over the
    contacts), and value (analytics' cached figures)."""
    from segments.services import SET_BASED, query_settings

    params = {"tenant": segment.tenant_id, "segment": segment.pk}
    with query_settings(**SET_BASED):
        pairs = _country_stage_counts(params)
        tag_rows = _tag_counts(params)
    seed_size, audience_size = sum(p[2] for p in pairs), sum(p[3] for p in pairs)
    by_country: dict[str, list[int]] = {}
    by_stage: dict[str, list[int]] = {}
    for country, stage, seed, overall in pairs:
        for totals, key in ((by_country, country), (by_stage, stage)):
            counts = totals.setdefault(key, [0, 0])
            counts[0] += seed
            counts[1] += overall
    stage_order = {stage: index for index, stage in enumerate(LifecycleStage.values)}
    stages = _shares(((k, v[0], v[1]) for k, v in by_stage.items()), seed_size, audience_size,
                     dict(LifecycleStage.choices))  # fmt: skip
    stages.sort(key=lambda share: stage_order.get(share.value, len(stage_order)))
    country_labels = {code: str(country_names.name(code) or code) for code in by_country if code}
    countries = _shares(((k, v[0], v[1]) for k, v in by_country.items()), seed_size, audience_size, country_labels)
    tags = {
        TAG_FIELDS[name]: [share for share in _shares(rows, seed_size, audience_size) if share.seed]
        for name, rows in tag_rows.items()
    }
    value, value_as_of = _value_figures(segment)
    return LookalikeSummary(
        segment_id=segment.pk, seed_size=seed_size, audience_size=audience_size,
        countries=[share for share in countries if share.seed][:TOP], stages=stages, tags=tags, value=value,
        value_as_of=value_as_of, computed_at=timezone.now(),
    )  # fmt: skip


def _value_figures(segment: Segment) -> tuple[list[ValueFigure], dt.datetime | None]:
    """Average order value, revenue per contact, buyer share and predicted CLV: the seed against everyone
    (analytics/value.py's cached snapshot)."""
    from analytics.value import lifespan_estimate, value_row, value_snapshot

    snapshot = value_snapshot(tenant=segment.tenant)
    totals = snapshot.segments.get(segment.pk)
    if totals is None:
        return [], snapshot.computed_at
    lifespan = lifespan_estimate(snapshot.everyone)
    seed = value_row(str(segment.pk), segment.name, totals, lifespan)
    everyone = value_row("", "All contacts", snapshot.everyone, lifespan)
    return [
        ValueFigure("Average order value", seed.average_order_value, everyone.average_order_value, money=True),
        ValueFigure("Revenue per contact", seed.revenue_per_contact, everyone.revenue_per_contact, money=True),
        ValueFigure("Buyers", seed.buyer_share, everyone.buyer_share, money=False),
        ValueFigure("Predicted CLV per buyer", seed.predicted_clv, everyone.predicted_clv, money=True),
    ], snapshot.computed_at


def _summary_key(segment: Segment) -> str:
    # The database's name too: deployments (and test databases) that share a cache number tenants alike.
    stamp = segment.refreshed_at.timestamp() if segment.refreshed_at else 0
    database = connection.settings_dict["NAME"]
    return f"audiences:lookalike:v1:{database}:{segment.tenant_id}:{segment.pk}:{segment.materialized_version}:{stamp}"


def lookalike_summary(*, segment: Segment) -> LookalikeSummary:
    """The cached summary of the seed (recomputed after a membership refresh, or after 10 minutes)."""
    key = _summary_key(segment)
    cached: LookalikeSummary | None = cache.get(key)
    if cached is not None:
        return cached
    summary = lookalike_summary_compute(segment=segment)
    cache.set(key, summary, timeout=SUMMARY_FRESH_FOR.total_seconds())
    return summary
