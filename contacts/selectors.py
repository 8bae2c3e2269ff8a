"""Reads for the contacts pages: the list (keyset pages, indexed search), the contact page, settings lists.

Nothing here counts or offsets over a tenant's contacts: pages are found by keyset
(``id`` below or above a cursor) and every search is a prefix match on an index that
starts with ``tenant_id`` (contacts/migrations/0002).
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, Literal, TypeVar

from django.core.exceptions import ValidationError
from django.db.models import Exists, F, Lookup, OuterRef, Q, QuerySet, Sum, Value
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.translation import get_language
from django_countries import countries

from contacts.fields import CONTACT_FIELDS
from contacts.models import (
    AttributeDefinition,
    Channel,
    ConsentRecord,
    ConsentState,
    ConsentStatus,
    Contact,
    Event,
    EventDailyRollup,
    LifecycleTransition,
    Suppression,
)
from contacts.normalize import address_hash, normalise_email, normalise_phone
from tenants.models import AuditLog, Tenant

PAGE_SIZE = 50
TIMELINE_SIZE = 50
LEDGER_SIZE = 100
LIFECYCLE_SIZE = 50
ENGAGEMENT_DAYS = 30
# What the list shows; the wide columns (JSON, tags) stay on disk.
LIST_COLUMNS = (
    "id", "tenant", "email", "phone", "external_id", "first_name", "last_name", "country",
    "lifecycle_stage", "last_seen_at", "created_at", "erased_at",
)  # fmt: skip
PHONE_LIKE = re.compile(r"^\+?[\d\s().\-/]{3,}$")
EMAIL_CONSENT_ANY = "any"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MICROSECOND = dt.timedelta(microseconds=1)

T = TypeVar("T")


# --- cursors ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cursor:
    """A keyset position in a list ordered by id, newest first.

    ``next`` asks for the rows below ``id`` (older), ``prev`` for the rows above it (newer).
    Written in links as ``n1234`` or ``p1234``.
    """

    direction: Literal["next", "prev"]
    id: int

    def __str__(self) -> str:
        return f"{self.direction[0]}{self.id}"

    @classmethod
    def parse(cls, raw: str) -> Cursor:
        """Read a cursor from a link; raise ValidationError when it is not one."""
        match = re.fullmatch(r"([np])(0|[1-9]\d{0,17})", raw or "")
        if match is None:
            raise ValidationError("This page link is not valid; start again from the first page.", code="cursor")
        return cls("next" if match[1] == "n" else "prev", int(match[2]))


@dataclass(frozen=True)
class TimeCursor:
    """A keyset position in a list ordered by (time, id), newest first: rows strictly older than it."""

    at: dt.datetime
    id: int

    def __str__(self) -> str:
        return f"{(self.at - EPOCH) // MICROSECOND}.{self.id}"

    @classmethod
    def parse(cls, raw: str) -> TimeCursor:
        """Read a cursor from a link; raise ValidationError when it is not one."""
        match = re.fullmatch(r"(-?\d{1,17})\.([1-9]\d{0,17})", raw or "")
        if match is None:
            raise ValidationError("This page link is not valid; start again from the newest.", code="cursor")
        try:
            at = EPOCH + int(match[1]) * MICROSECOND
        except OverflowError:
            raise ValidationError("This page link is not valid; start again from the newest.", code="cursor") from None
        return cls(at, int(match[2]))

    def older(self, time_field: str) -> Q:
        """Rows after this position in (time desc, id desc) order; the time bound keeps the index usable."""
        return Q(**{f"{time_field}__lte": self.at}) & (Q(**{f"{time_field}__lt": self.at}) | Q(id__lt=self.id))


@dataclass(frozen=True)
class Page(Generic[T]):
    """One keyset page: its rows and the cursors to the pages on either side (None at an end)."""

    rows: list[T]
    next_cursor: str | None = None
    prev_cursor: str | None = None


# --- contact list -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ContactFilters:
    q: str = ""
    lifecycle_stage: str = ""
    country: str = ""
    email_consent: str = ""  # "" (no filter), "any" purpose, or one of the tenant's purposes

    @property
    def active(self) -> bool:
        return any((self.q, self.lifecycle_stage, self.country, self.email_consent))


@dataclass(frozen=True)
class ContactRow:
    contact: Contact
    email_consent: bool


# Why the search is written as ranges, not LIKE: under row-level security PostgreSQL may use a
# condition in an index scan only when its functions are LEAKPROOF (it must not see rows the policy
# hides). Equality and the comparison operators of text are; LIKE (textlike) and lower() are not. So
# a LIKE 'ada%' is only ever checked row by row after the policy: a full scan of the tenant. Ranges
# in byte order (``~>=~``/``~<~``, the operators of the *_pattern_ops indexes) and plain ranges on
# a C-collated database are leakproof and become index conditions.
class BytewiseAtLeast(Lookup):
    """``lhs ~>=~ rhs``: compare in byte order, as the contact_search_* pattern indexes do."""

    lookup_name = "bytewise_gte"
    operator = "~>=~"
    portable = ">="  # SQLite compares text bytewise already

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        operator = self.operator if connection.vendor == "postgresql" else self.portable
        return f"{lhs} {operator} {rhs}", [*lhs_params, *rhs_params]


class BytewiseBelow(BytewiseAtLeast):
    """``lhs ~<~ rhs``."""

    lookup_name = "bytewise_lt"
    operator = "~<~"
    portable = "<"


CASE_VARIANT_LETTERS = 3


def prefix_successor(prefix: str) -> str | None:
    """The smallest string after every string that starts with ``prefix`` (code point order = UTF-8 byte order)."""
    for position in range(len(prefix) - 1, -1, -1):
        code = ord(prefix[position]) + 1
        if code == 0xD800:  # skip the surrogates, which UTF-8 never encodes
            code = 0xE000
        if code <= 0x10FFFF:
            return prefix[:position] + chr(code)
    return None


def _bytewise_prefix(field: str, prefix: str) -> Q:
    """``field`` starts with ``prefix``, answered by a (tenant_id, field varchar_pattern_ops) index."""
    condition = Q(BytewiseAtLeast(F(field), Value(prefix)))
    upper = prefix_successor(prefix)
    return condition & Q(BytewiseBelow(F(field), Value(upper))) if upper else condition


def _range_prefix(field: str, prefix: str) -> Q:
    """``field`` starts with ``prefix``, answered by a plain (tenant_id, field, …) index (C collation)."""
    upper = prefix_successor(prefix)
    condition = Q(**{f"{field}__gte": prefix})
    return condition & Q(**{f"{field}__lt": upper}) if upper else condition


def case_variants(text: str, letters: int = CASE_VARIANT_LETTERS) -> list[str]:
    """Every upper/lower-case spelling of the first ``letters`` characters: "mcd" → mcd, mcD, … McD, MCD."""
    options = [sorted({c.lower(), c.upper()}) if len(c.upper()) == len(c.lower()) == 1 else [c] for c in text[:letters]]
    return sorted({"".join(spelling) for spelling in itertools.product(*options)})


def _last_name_prefix(lowered: str, *, first_name: str = "") -> Q:
    """Last name starts with ``lowered`` in any case (and first name with ``first_name``).

    Ranges on the (tenant_id, last_name, first_name) index, one per case spelling of the first
    letters, then the exact case-insensitive check on the few rows they find.
    """
    check = Q(last_name_lower__startswith=lowered)
    if first_name:
        check &= Q(first_name_lower__startswith=first_name)
    condition = Q()
    for head in case_variants(lowered):
        condition |= _range_prefix("last_name", head) & check
    return condition


def search_condition(q: str) -> Q:
    """Turn the search box into prefix conditions that the contact indexes answer under row-level security.

    ``@`` → email prefix; digits (and + - ( ) / . spaces) → phone prefix in E.164, or external id;
    two or more words → first name and last name prefixes (or a last name with spaces);
    one word → email, last name or external id prefix. (A first name alone is not searched: its
    lower(first_name) index cannot be used under row-level security; see above.)
    """
    q = " ".join(q.split())
    lowered = q.lower()
    if "@" in q:
        return _bytewise_prefix("email", lowered)
    digits = re.sub(r"\D", "", q)
    if digits and PHONE_LIKE.match(q):
        return (_range_prefix("phone", f"+{digits}") & Q(phone__startswith=f"+{digits}")) | _bytewise_prefix(
            "external_id", q
        )
    words = lowered.split(" ")
    if len(words) > 1:
        return _last_name_prefix(" ".join(words[1:]), first_name=words[0]) | _last_name_prefix(lowered)
    return _bytewise_prefix("email", lowered) | _last_name_prefix(lowered) | _bytewise_prefix("external_id", q)


def contacts_matching(*, tenant: Tenant, filters: ContactFilters) -> QuerySet[Contact]:
    """The tenant's contacts that pass the list's search and filters (unordered)."""
    contacts = Contact.objects.filter(tenant=tenant)
    if filters.q:
        contacts = contacts.alias(first_name_lower=Lower("first_name"), last_name_lower=Lower("last_name")).filter(
            search_condition(filters.q)
        )
    if filters.lifecycle_stage:
        contacts = contacts.filter(lifecycle_stage=filters.lifecycle_stage)
    if filters.country:
        contacts = contacts.filter(country=filters.country)
    if filters.email_consent:
        granted = ConsentState.objects.filter(
            tenant=tenant, contact_id=OuterRef("pk"), channel=Channel.EMAIL, status=ConsentStatus.GRANTED
        )
        if filters.email_consent != EMAIL_CONSENT_ANY:
            granted = granted.filter(purpose=filters.email_consent)
        contacts = contacts.filter(Exists(granted))
    return contacts


def contact_list_page(
    *, tenant: Tenant, filters: ContactFilters, cursor: Cursor | None, size: int = PAGE_SIZE
) -> Page[ContactRow]:
    """One page of the contact list, newest first, by keyset on id (no OFFSET, no COUNT)."""
    matching = contacts_matching(tenant=tenant, filters=filters).only(*LIST_COLUMNS)
    if cursor is not None and cursor.direction == "prev":
        newer = list(matching.filter(id__gt=cursor.id).order_by("id")[: size + 1])
        if len(newer) > size:
            contacts = newer[:size][::-1]
            return _contact_page(tenant, contacts, has_older=True, has_newer=True)
        # Back at the newest rows: show the first page itself, so its bounds never shift.
        cursor = None
    if cursor is None:
        contacts = list(matching.order_by("-id")[: size + 1])
        return _contact_page(tenant, contacts[:size], has_older=len(contacts) > size, has_newer=False)
    contacts = list(matching.filter(id__lt=cursor.id).order_by("-id")[: size + 1])
    if not contacts:  # past the end (an old link, or everything below was deleted): offer the way back
        return Page(rows=[], prev_cursor=str(Cursor("prev", cursor.id - 1)))
    return _contact_page(tenant, contacts[:size], has_older=len(contacts) > size, has_newer=True)


def _contact_page(tenant: Tenant, contacts: list[Contact], *, has_older: bool, has_newer: bool) -> Page[ContactRow]:
    ids = [c.pk for c in contacts]
    consenting = (
        set(
            ConsentState.objects.filter(
                tenant=tenant, contact_id__in=ids, channel=Channel.EMAIL, status=ConsentStatus.GRANTED
            ).values_list("contact_id", flat=True)
        )
        if ids
        else set()
    )
    return Page(
        rows=[ContactRow(c, c.pk in consenting) for c in contacts],
        next_cursor=str(Cursor("next", ids[-1])) if has_older and ids else None,
        prev_cursor=str(Cursor("prev", ids[0])) if has_newer and ids else None,
    )


# --- the contact page ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ProfileItem:
    label: str
    value: str


@dataclass(frozen=True)
class ProfileGroup:
    name: str
    items: list[ProfileItem]


def _display(value: Any, kind: str) -> str:
    if value in (None, "", [], {}):
        return ""
    if kind == "country":
        return f"{value.name} ({value.code})" if hasattr(value, "code") else str(value)
    if kind == "tags":
        return ", ".join(value)
    if kind == "tokens":
        return f"{len(value)} device{'s' if len(value) != 1 else ''}"
    if kind == "boolean" or isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def contact_profile(contact: Contact) -> list[ProfileGroup]:
    """The contact's first-class fields, grouped as the field registry groups them (no queries)."""
    groups: dict[str, list[ProfileItem]] = {}
    for field in CONTACT_FIELDS:
        groups.setdefault(field.group, []).append(
            ProfileItem(field.label, _display(getattr(contact, field.name), field.type))
        )
    return [ProfileGroup(name, items) for name, items in groups.items()]


@dataclass(frozen=True)
class AttributeItem:
    key: str
    label: str
    type_label: str
    value: str
    defined: bool


def contact_attributes(contact: Contact, definitions: Sequence[AttributeDefinition]) -> list[AttributeItem]:
    """Every defined attribute (set or not), then values whose definition was deleted."""
    items = [
        AttributeItem(d.key, d.label, d.get_type_display(), _display(contact.attributes.get(d.key), d.type), True)
        for d in definitions
    ]
    defined = {d.key for d in definitions}
    items += [
        AttributeItem(key, key, "undefined", _display(value, ""), False)
        for key, value in sorted(contact.attributes.items())
        if key not in defined
    ]
    return items


def attribute_definitions_of(tenant: Tenant) -> list[AttributeDefinition]:
    return list(AttributeDefinition.objects.filter(tenant=tenant).order_by("key"))


@dataclass(frozen=True)
class ConsentCell:
    purpose: str
    status: str  # "" when never asked
    status_label: str
    since: dt.datetime | None


@dataclass(frozen=True)
class ConsentRow:
    channel: str
    channel_label: str
    cells: list[ConsentCell]


@dataclass(frozen=True)
class ConsentOverview:
    purposes: list[str]
    purpose_labels: list[str]
    rows: list[ConsentRow]
    ledger: list[ConsentRecord]
    ledger_truncated: bool


def contact_consent(contact: Contact) -> ConsentOverview:
    """The current consent per channel and purpose (a grid), and the latest ledger entries."""
    states = {
        (s.channel, s.purpose): s
        for s in ConsentState.objects.filter(tenant_id=contact.tenant_id, contact=contact).only(
            "channel", "purpose", "status", "updated_at"
        )
    }
    purposes = list(contact.tenant.consent_purposes)
    purposes += sorted({purpose for _, purpose in states} - set(purposes))  # purposes the tenant retired
    labels = dict(ConsentStatus.choices)
    rows = []
    for channel, channel_label in Channel.choices:
        cells = []
        for purpose in purposes:
            state = states.get((channel, purpose))
            cells.append(
                ConsentCell(purpose, state.status, labels[state.status], state.updated_at)
                if state is not None
                else ConsentCell(purpose, "", "never asked", None)
            )
        rows.append(ConsentRow(channel, str(channel_label), cells))
    ledger = list(ConsentRecord.objects.filter(tenant_id=contact.tenant_id, contact=contact)[: LEDGER_SIZE + 1])
    return ConsentOverview(
        purposes, [purpose_label(p) for p in purposes], rows, ledger[:LEDGER_SIZE], len(ledger) > LEDGER_SIZE
    )


def purpose_label(purpose: str) -> str:
    return purpose.replace("_", " ").capitalize()


def lifecycle_history(contact: Contact) -> list[LifecycleTransition]:
    return list(LifecycleTransition.objects.filter(tenant_id=contact.tenant_id, contact=contact)[:LIFECYCLE_SIZE])


@dataclass(frozen=True)
class EventTotal:
    name: str
    count: int
    revenue: Decimal


def engagement_totals(contact: Contact, days: int = ENGAGEMENT_DAYS) -> list[EventTotal]:
    """Events per name over the last ``days`` days, from the daily rollups (a few rows per contact)."""
    since = timezone.now().date() - dt.timedelta(days=days)
    totals = (
        EventDailyRollup.objects.filter(tenant_id=contact.tenant_id, contact=contact, day__gte=since)
        .values("name")
        .annotate(total=Sum("count"), revenue_total=Sum("revenue"))
        .order_by("-total", "name")
    )
    return [EventTotal(t["name"], t["total"], t["revenue_total"] or Decimal(0)) for t in totals]


def json_pairs(data: dict[str, Any]) -> list[tuple[str, str]]:
    """A JSON object's keys and values as text, for display.

    (A template cannot loop over ``data.items`` safely: a key named "items" would win.)
    """
    return [(str(k), v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)) for k, v in data.items()]


@dataclass(frozen=True)
class TimelineEntry:
    event: Event
    properties: list[tuple[str, str]]


def contact_timeline(contact: Contact, *, before: TimeCursor | None, size: int = TIMELINE_SIZE) -> Page[TimelineEntry]:
    """The contact's events, newest first, ``size`` at a time (keyset on occurred time and id)."""
    events = Event.objects.filter(tenant_id=contact.tenant_id, contact=contact)
    if before is not None:
        events = events.filter(before.older("occurred_at"))
    rows = list(events.order_by("-occurred_at", "-id")[: size + 1])
    more, rows = len(rows) > size, rows[:size]
    return Page(
        rows=[TimelineEntry(e, json_pairs(e.properties) if isinstance(e.properties, dict) else []) for e in rows],
        next_cursor=str(TimeCursor(rows[-1].occurred_at, rows[-1].pk)) if more else None,
    )


# --- settings lists ---------------------------------------------------------------------------
def suppression_hashes_for(address: str) -> list[str]:
    """The hashes an address typed into the look-up would be stored under, on every channel it fits."""
    address = address.strip()
    hashes = []
    try:
        email = normalise_email(address) if "@" in address else ""
    except ValidationError:
        email = ""
    if email:
        hashes.append(address_hash(Channel.EMAIL, email))
    else:
        try:
            phone = normalise_phone(address)
        except ValidationError:
            phone = ""
        if phone:
            hashes += [address_hash(Channel.SMS, phone), address_hash(Channel.WHATSAPP, phone)]
    hashes.append(address_hash(Channel.PUSH, address))
    return hashes


def suppressions_page(
    *, tenant: Tenant, address: str, cursor: Cursor | None, size: int = PAGE_SIZE
) -> Page[Suppression]:
    """The tenant's suppressions, newest first by keyset on id, or those matching one address."""
    suppressions = Suppression.objects.filter(tenant=tenant)
    if address:
        suppressions = suppressions.filter(address_hash__in=suppression_hashes_for(address))
    if cursor is not None and cursor.direction == "prev":
        newer = list(suppressions.filter(id__gt=cursor.id).order_by("id")[: size + 1])
        if len(newer) > size:
            rows = newer[:size][::-1]
            return Page(rows, next_cursor=str(Cursor("next", rows[-1].pk)), prev_cursor=str(Cursor("prev", rows[0].pk)))
        cursor = None
    if cursor is not None:
        suppressions = suppressions.filter(id__lt=cursor.id)
    rows = list(suppressions.order_by("-id")[: size + 1])
    more, rows = len(rows) > size, rows[:size]
    return Page(
        rows,
        next_cursor=str(Cursor("next", rows[-1].pk)) if more else None,
        prev_cursor=str(Cursor("prev", rows[0].pk)) if cursor is not None and rows else None,
    )


@dataclass(frozen=True)
class AuditEntry:
    entry: AuditLog
    details: list[tuple[str, str]]


def audit_log_page(*, tenant: Tenant, before: TimeCursor | None, size: int = PAGE_SIZE) -> Page[AuditEntry]:
    """The tenant's audit log, newest first (keyset on time and id, on the (tenant, -created_at) index)."""
    entries = AuditLog.objects.filter(tenant=tenant)
    if before is not None:
        entries = entries.filter(before.older("created_at"))
    rows = list(entries.order_by("-created_at", "-id")[: size + 1])
    more, rows = len(rows) > size, rows[:size]
    return Page(
        [AuditEntry(e, json_pairs(e.data) if isinstance(e.data, dict) else []) for e in rows],
        next_cursor=str(TimeCursor(rows[-1].created_at, rows[-1].pk)) if more else None,
    )


def country_choices() -> list[tuple[str, str]]:
    """ISO 3166 codes and names in the active language, sorted by name (built once per language)."""
    return _country_choices(get_language() or "")


@functools.cache
def _country_choices(language: str) -> list[tuple[str, str]]:
    return [(code, str(name)) for code, name in countries]
