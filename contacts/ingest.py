"""Event ingest (single and batch) and identify, like Segment's track/identify.

A batch is validated row by row; valid rows are stored with one INSERT of arrays
(``ON CONFLICT DO NOTHING`` on the idempotency key, so a repeat is a no-op even
between concurrent requests), then the per-day rollups and the contacts'
engagement summaries are updated with one statement each, locking rows in id
order so concurrent batches never deadlock. New identities become contacts the
same way (a concurrent batch creating the same one first is no error).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from contacts.bulk_sql import JSON_TEXT_ARRAY, MATCH_RECORD, bulk_insert_rows, rows_json
from contacts.lifecycle import STAGE_INPUTS, derive_stage, lifecycle_refresh
from contacts.models import (
    ConsentRecord,
    ConsentState,
    Contact,
    Event,
    EventDailyRollup,
    LifecycleTransition,
)
from contacts.normalize import normalise_email
from contacts.services import NUL_MESSAGE, RowResult, contact_upsert, contains_nul
from tenants.audit import Actor, audit
from tenants.models import Tenant

MAX_BATCH_EVENTS = 10_000
MAX_PROPERTIES_BYTES = 16_384
INSERT_CHUNK = 1000
EVENT_NAME = re.compile(r"^[A-Za-z0-9_.:\- ]{1,100}$")
PURCHASE = "purchase"
# Events that count as the contact engaging with a message (for last_engaged_at).
ENGAGEMENT_EVENTS = frozenset({"email_open", "email_click", "sms_click", "push_open", "link_click"})
MAX_ID = 2**63 - 1  # the largest bigint: a contact_id beyond it names no contact
REFERENCE_KEYS = ("contact_id", "external_id", "email", "anonymous_id")
EVENT_KEYS = frozenset(
    {"event", "occurred_at", "properties", "revenue", "currency", "source", "idempotency_key", *REFERENCE_KEYS}
)


@dataclass(frozen=True)
class CleanEvent:
    index: int
    reference: tuple[str, str]  # ("external_id", "u-1")
    name: str
    occurred_at: dt.datetime
    properties: dict[str, Any]
    revenue: Decimal | None
    currency: str
    source: str
    idempotency_key: str


_PROPERTIES_JSON = json.JSONEncoder(default=str)
_CURRENCY = re.compile(r"[A-Z]{3}")


def _clean_event(index: int, data: Any, default_source: str, now: dt.datetime) -> CleanEvent | RowResult:
    errors: dict[str, list[str]] = {}
    if not isinstance(data, dict):
        return RowResult(index, "error", errors={"non_field_errors": ["Each event must be a JSON object."]})
    if not data.keys() <= EVENT_KEYS:
        unknown = sorted(set(data) - EVENT_KEYS)
        errors["non_field_errors"] = [f"Unknown field(s): {', '.join(map(str, unknown))}."]
    name = data.get("event")
    if not isinstance(name, str) or not EVENT_NAME.match(name):
        errors["event"] = ["Name the event: 1-100 letters, digits, spaces or _ . : -"]
    references = [(key, data[key]) for key in REFERENCE_KEYS if data.get(key) not in (None, "")]
    reference: tuple[str, str] = ("", "")
    if not references:
        errors["contact"] = ["Give one of contact_id, external_id, email or anonymous_id."]
    else:
        key, value = references[0]
        if not isinstance(value, str | int) or isinstance(value, bool) or len(str(value)) > 200:
            errors[key] = ["Expected text of at most 200 characters."]
        elif contains_nul(value):
            errors[key] = [NUL_MESSAGE]
        elif key == "email":
            try:
                reference = (key, normalise_email(str(value)))
            except ValidationError as error:
                errors[key] = error.messages
        elif key == "contact_id":
            if str(value).isdigit() and int(value) <= MAX_ID:
                reference = (key, str(int(value)))
            else:
                errors[key] = ["Expected a contact id (a number)."]
        else:
            reference = (key, str(value).strip())
    occurred_at = now
    if data.get("occurred_at") not in (None, ""):
        try:  # parse_datetime answers None for a malformed time, ValueError for an impossible one
            parsed = parse_datetime(data["occurred_at"]) if isinstance(data["occurred_at"], str) else None
        except ValueError:
            parsed = None
        if parsed is None:
            errors["occurred_at"] = ["Expected an ISO 8601 time, e.g. 2026-11-28T09:30:00Z."]
        else:
            occurred_at = parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, dt.UTC)
            if occurred_at > now + dt.timedelta(days=1):
                errors["occurred_at"] = ["The event is in the future."]
    properties = data.get("properties") or {}
    if not isinstance(properties, dict):
        errors["properties"] = ["Expected a JSON object."]
    elif properties:
        encoded = _PROPERTIES_JSON.encode(properties)  # ASCII: a NUL shows as \u0000
        if len(encoded) > MAX_PROPERTIES_BYTES:
            errors["properties"] = [f"At most {MAX_PROPERTIES_BYTES} bytes of properties."]
        elif "\\u0000" in encoded and contains_nul(properties):
            errors["properties"] = [NUL_MESSAGE]
    revenue: Decimal | None = None
    if data.get("revenue") not in (None, ""):
        try:
            revenue = Decimal(str(data["revenue"]))
            if not revenue.is_finite() or abs(revenue) >= Decimal("1e12"):
                raise InvalidOperation
            revenue = revenue.quantize(Decimal("0.01"))
        except (InvalidOperation, ValueError):
            errors["revenue"] = ["Expected an amount, e.g. 49.90."]
    currency = str(data.get("currency") or "").strip().upper()
    if currency and not _CURRENCY.fullmatch(currency):
        errors["currency"] = ["Expected an ISO 4217 code, e.g. EUR."]
    source = str(data.get("source") or default_source)[:50]
    if contains_nul(source):
        errors["source"] = [NUL_MESSAGE]
    key = data.get("idempotency_key") or ""
    if not isinstance(key, str) or len(key) > 200:
        errors["idempotency_key"] = ["Expected text of at most 200 characters."]
    elif contains_nul(key):
        errors["idempotency_key"] = [NUL_MESSAGE]
    if errors:
        return RowResult(index, "error", errors=errors)
    return CleanEvent(index, reference, str(name), occurred_at, properties, revenue, currency, source, str(key))


def events_ingest(*, tenant: Tenant, events: list[Any], source: str = "api") -> list[RowResult]:
    """Store a batch of events; return one result per row (accepted, duplicate or error)."""
    if len(events) > MAX_BATCH_EVENTS:
        raise ValidationError(f"At most {MAX_BATCH_EVENTS} events per request.")
    now = timezone.now()
    results: dict[int, RowResult] = {}
    clean: list[CleanEvent] = []
    seen_keys: set[str] = set()
    for index, data in enumerate(events):
        item = _clean_event(index, data, source, now)
        if isinstance(item, RowResult):
            results[index] = item
        elif item.idempotency_key and item.idempotency_key in seen_keys:
            results[index] = RowResult(index, "duplicate")
        else:
            seen_keys.add(item.idempotency_key)
            clean.append(item)
    with transaction.atomic():
        _check_constraints_per_statement(True)
        contacts = _resolve_contacts(tenant, clean, now, results)
        clean = [e for e in clean if e.index not in results]
        inserted = _insert_events(tenant, clean, contacts)
        stored = [e for e in clean if e.index in inserted]
        for event in clean:
            if event.index in inserted:
                results[event.index] = RowResult(event.index, "accepted", id=inserted[event.index])
            else:
                results[event.index] = RowResult(event.index, "duplicate")
        if stored:
            _update_rollups(tenant, stored, contacts)
            _update_summaries(tenant, stored, contacts)
            # Only purchases move the figures a stage is derived from (orders and revenue).
            buyers = {contacts[e.reference] for e in stored if e.name == PURCHASE}
            if buyers:
                buying = Contact.objects.filter(tenant=tenant, pk__in=sorted(buyers)).only(*STAGE_INPUTS)
                lifecycle_refresh(tenant=tenant, contacts=buying, reason="events")
        _check_constraints_per_statement(False)
    return [results[index] for index in sorted(results)]


def _check_constraints_per_statement(immediate: bool) -> None:
    """Check foreign keys as each statement ends instead of at commit (or go back to Django's way).

    The same work, done before the batch locks contacts and rollups (the last statements)
    rather than while it holds them: a concurrent batch that needs the same rows waits less.
    A rolled-back savepoint restores the mode by itself.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"SET CONSTRAINTS ALL {'IMMEDIATE' if immediate else 'DEFERRED'}")


def _find_contacts(tenant: Tenant, wanted: dict[str, set[str]]) -> dict[tuple[str, str], int]:
    """Map (reference key, value) to the id of the contact it names, for those that exist."""
    found: dict[tuple[str, str], int] = {}
    for key, values in wanted.items():
        column = "id" if key == "contact_id" else key
        if connection.vendor != "postgresql":
            lookup = {f"{column}__in": [int(v) for v in values] if key == "contact_id" else values}
            rows = list(Contact.objects.filter(tenant=tenant, **lookup).values_list(column, "pk"))
        else:
            # `<> ''` proves the lookup is inside the partial unique index (PostgreSQL cannot for >100 values).
            blank = "" if key == "contact_id" else f"AND {column} <> '' "
            array = f"{JSON_TEXT_ARRAY}::bigint[]" if key == "contact_id" else JSON_TEXT_ARRAY
            table = Contact._meta.db_table
            sql = f"SELECT {column}, id FROM {table} WHERE tenant_id = %s {blank}AND {column} = ANY({array})"
            with connection.cursor() as cursor:
                cursor.execute(sql, [tenant.pk, rows_json(sorted(values))])
                rows = cursor.fetchall()
        for value, contact_id in rows:
            found[(key, str(value))] = contact_id
    return found


def _resolve_contacts(
    tenant: Tenant, events: list[CleanEvent], now: dt.datetime, results: dict[int, RowResult]
) -> dict[tuple[str, str], int]:
    """Map each event's reference to a contact id, creating contacts for new identities."""
    wanted: dict[str, set[str]] = defaultdict(set)
    for event in events:
        wanted[event.reference[0]].add(event.reference[1])
    found = _find_contacts(tenant, wanted)
    missing = {event.reference for event in events if event.reference not in found}
    for event in events:
        if event.reference in missing and event.reference[0] == "contact_id":
            results[event.index] = RowResult(event.index, "error", errors={"contact_id": ["No such contact."]})
    to_create: dict[str, list[str]] = defaultdict(list)
    for key, value in sorted(ref for ref in missing if ref[0] != "contact_id"):
        to_create[key].append(value)
    for key, values in to_create.items():
        # A new contact has no orders or consent: its stage follows from the kind of identity alone.
        stage = derive_stage(Contact(**{key: "-"}), tenant, has_consent=False)
        fixed = {"tenant_id": tenant.pk, "first_seen_at": now, "last_seen_at": now, "created_at": now,
                 "updated_at": now, "lifecycle_stage": stage, "lifecycle_changed_at": now}  # fmt: skip
        # A concurrent batch may create the same identity first: skip it here and look it up after.
        inserted = bulk_insert_rows(
            Contact, [{key: value} for value in values], fixed=fixed, ignore_conflicts=True, returning=("id", key)
        )
        for contact_id, value in inserted:
            found[(key, value)] = contact_id
        raced = {value for value in values if (key, value) not in found}
        if raced:
            found.update(_find_contacts(tenant, {key: raced}))
        transitions = [{"contact_id": contact_id} for contact_id, _ in inserted]
        bulk_insert_rows(
            LifecycleTransition, transitions, returning=(),
            fixed={"tenant_id": tenant.pk, "from_stage": "", "to_stage": stage, "reason": "first seen",
                   "occurred_at": now},
        )  # fmt: skip
    return found


def _insert_events(tenant: Tenant, events: list[CleanEvent], contacts: dict[tuple[str, str], int]) -> dict[int, int]:
    """Insert with ON CONFLICT DO NOTHING; return {row index: event id} for rows stored now."""
    rows = [
        {
            "contact_id": contacts[e.reference], "name": e.name, "occurred_at": e.occurred_at.isoformat(),
            "properties": e.properties, "revenue": None if e.revenue is None else str(e.revenue),
            "currency": e.currency, "source": e.source, "idempotency_key": e.idempotency_key,
        }
        for e in events
    ]  # fmt: skip
    # A repeated idempotency key conflicts with the unique (tenant, idempotency_key) and is skipped.
    stored = bulk_insert_rows(
        Event, rows, fixed={"tenant_id": tenant.pk, "received_at": timezone.now()}, ignore_conflicts=True,
        returning=("id", "idempotency_key"),
    )  # fmt: skip
    by_key = {e.idempotency_key: e.index for e in events if e.idempotency_key}
    # Events without a key cannot conflict: all of them come back, in the order they were inserted.
    keyless = iter([e.index for e in events if not e.idempotency_key])
    return {(by_key[key] if key else next(keyless)): event_id for event_id, key in stored}


def _update_rollups(tenant: Tenant, events: list[CleanEvent], contacts: dict[tuple[str, str], int]) -> None:
    totals: dict[tuple[int, str, dt.date], list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for event in events:
        bucket = totals[(contacts[event.reference], event.name, event.occurred_at.astimezone(dt.UTC).date())]
        bucket[0] += 1
        bucket[1] += event.revenue or 0
    # Sorted: concurrent batches lock the rollup rows in one order, so they wait rather than deadlock.
    items = sorted(totals.items())
    table = EventDailyRollup._meta.db_table
    upsert = (
        "ON CONFLICT (tenant_id, contact_id, name, day) "
        "DO UPDATE SET count = r.count + excluded.count, revenue = r.revenue + excluded.revenue"
    )
    if connection.vendor == "postgresql":
        sql = (
            f"INSERT INTO {table} AS r (tenant_id, contact_id, name, day, count, revenue) "
            "SELECT %s, (v->>0)::bigint, v->>1, (v->>2)::date, (v->>3)::int, (v->>4)::numeric "
            f"FROM json_array_elements(%s::json) AS v {upsert}"
        )
        with connection.cursor() as cursor:
            cursor.execute(
                sql, [tenant.pk, rows_json([[c, n, d.isoformat(), k, str(r)] for (c, n, d), (k, r) in items])]
            )
        return
    for start in range(0, len(items), INSERT_CHUNK):
        chunk = items[start : start + INSERT_CHUNK]
        placeholders = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(chunk))
        values: list[Any] = []
        for (contact_id, name, day), (count, revenue) in chunk:
            values += [tenant.pk, contact_id, name, day, count, revenue]
        sql = f"INSERT INTO {table} AS r (tenant_id, contact_id, name, day, count, revenue) VALUES {placeholders} "
        with connection.cursor() as cursor:
            cursor.execute(sql + upsert, values)


SUMMARY = ("first", "last", "engaged", "orders", "revenue", "last_order")


def _update_summaries(tenant: Tenant, events: list[CleanEvent], contacts: dict[tuple[str, str], int]) -> set[int]:
    """Advance each touched contact's engagement summary; return the touched contact ids."""
    summary: dict[int, list[Any]] = {}  # contact id → [first, last, engaged, orders, revenue, last order]
    for event in events:
        at = event.occurred_at
        s = summary.get(contacts[event.reference])
        if s is None:
            s = summary[contacts[event.reference]] = [at, at, None, 0, Decimal(0), None]
        elif at < s[0]:
            s[0] = at
        elif at > s[1]:
            s[1] = at
        if event.name in ENGAGEMENT_EVENTS and (s[2] is None or at > s[2]):
            s[2] = at
        if event.name == PURCHASE:
            s[3] += 1
            s[4] += event.revenue or 0
            if s[5] is None or at > s[5]:
                s[5] = at
    if connection.vendor == "postgresql":
        _update_summaries_postgresql(tenant, summary)
    else:
        for contact_id, values in summary.items():
            _update_summary_portable(tenant, contact_id, dict(zip(SUMMARY, values, strict=True)))
    return set(summary)


def _update_summaries_postgresql(tenant: Tenant, summary: dict[int, list[Any]]) -> None:
    # Sorted by id: concurrent batches lock contacts in one order, so they wait rather than deadlock.
    rows = [
        {"id": contact_id, "tenant_id": tenant.pk,
         **{name: value.isoformat() if isinstance(value, dt.datetime) else str(value) if isinstance(value, Decimal)
            else value for name, value in zip(SUMMARY, values, strict=True)}}
        for contact_id, values in sorted(summary.items())
    ]  # fmt: skip
    # Increments and GREATEST/LEAST run under the row lock: concurrent batches add up. A contact
    # whose summary would not change is left alone (no new row version, no index entries).
    sql = (
        f"UPDATE {Contact._meta.db_table} AS c SET "
        "first_seen_at = LEAST(c.first_seen_at, v.first), last_seen_at = GREATEST(c.last_seen_at, v.last), "
        "last_engaged_at = GREATEST(c.last_engaged_at, v.engaged), order_count = c.order_count + v.orders, "
        "total_revenue = c.total_revenue + v.revenue, last_order_at = GREATEST(c.last_order_at, v.last_order) "
        "FROM json_to_recordset(%s::json) AS v(id bigint, tenant_id bigint, first timestamptz, last timestamptz, "
        "engaged timestamptz, orders int, revenue numeric, last_order timestamptz) "
        f"WHERE {MATCH_RECORD.format(table='c', record='v')} AND (v.orders > 0 OR v.first < c.first_seen_at "
        "OR v.last > c.last_seen_at OR v.engaged > c.last_engaged_at OR c.first_seen_at IS NULL "
        "OR c.last_seen_at IS NULL OR (v.engaged IS NOT NULL AND c.last_engaged_at IS NULL))"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [rows_json(rows)])


def _update_summary_portable(tenant: Tenant, contact_id: int, s: dict[str, Any]) -> None:
    contact = Contact.objects.select_for_update().get(tenant=tenant, pk=contact_id)
    contact.first_seen_at = min(filter(None, (contact.first_seen_at, s["first"])))
    contact.last_seen_at = max(filter(None, (contact.last_seen_at, s["last"])))
    if s["engaged"]:
        contact.last_engaged_at = max(filter(None, (contact.last_engaged_at, s["engaged"])))
    if s["last_order"]:
        contact.last_order_at = max(filter(None, (contact.last_order_at, s["last_order"])))
    contact.save(update_fields=["first_seen_at", "last_seen_at", "last_engaged_at", "last_order_at"])
    Contact.objects.filter(pk=contact_id).update(
        order_count=F("order_count") + s["orders"], total_revenue=F("total_revenue") + s["revenue"]
    )


# --- identify ---------------------------------------------------------------------------
@transaction.atomic
def contact_identify(*, tenant: Tenant, anonymous_id: str, traits: dict[str, Any], actor: Actor) -> Contact:
    """Tie an anonymous visitor to a known contact; merge the anonymous one into it.

    ``traits`` must name the known contact (external_id or email) and may carry
    more fields. The anonymous contact's events, rollups, consent and history
    move to the known one; nothing is lost.
    """
    anonymous_id = (anonymous_id or "").strip()
    if not anonymous_id or len(anonymous_id) > 200:
        raise ValidationError({"anonymous_id": "Give the anonymous id the visitor had (at most 200 characters)."})
    anonymous = Contact.objects.filter(tenant=tenant, anonymous_id=anonymous_id).first()
    known, _ = contact_upsert(tenant=tenant, data=traits)
    if anonymous is None or anonymous.pk == known.pk:
        if not known.anonymous_id:
            known.anonymous_id = anonymous_id
            known.save(update_fields=["anonymous_id", "updated_at"])
        return known
    contact_merge(tenant=tenant, source=anonymous, target=known, actor=actor)
    known.refresh_from_db()
    if not known.anonymous_id:
        known.anonymous_id = anonymous_id
        known.save(update_fields=["anonymous_id", "updated_at"])
    return known


def contact_merge(*, tenant: Tenant, source: Contact, target: Contact, actor: Actor) -> None:
    """Move everything of ``source`` onto ``target`` and delete ``source``."""
    Event.objects.filter(tenant=tenant, contact=source).update(contact=target)
    rollups = EventDailyRollup.objects.filter(tenant=tenant, contact=source)
    for rollup in rollups:
        existing, created = EventDailyRollup.objects.get_or_create(
            tenant=tenant, contact=target, name=rollup.name, day=rollup.day,
            defaults={"count": rollup.count, "revenue": rollup.revenue},
        )  # fmt: skip
        if not created:
            EventDailyRollup.objects.filter(pk=existing.pk).update(
                count=F("count") + rollup.count, revenue=F("revenue") + rollup.revenue
            )
    rollups.delete()
    ConsentRecord.objects.filter(tenant=tenant, contact=source).update(contact=target)
    target_states = {(s.channel, s.purpose): s for s in ConsentState.objects.filter(tenant=tenant, contact=target)}
    for state in ConsentState.objects.filter(tenant=tenant, contact=source):
        mine = target_states.get((state.channel, state.purpose))
        if mine is None or mine.updated_at < state.updated_at:
            if mine is not None:
                mine.delete()
            state.contact = target
            state.save(update_fields=["contact"])
    LifecycleTransition.objects.filter(tenant=tenant, contact=source).update(contact=target)
    for name in ("first_name", "last_name", "phone", "locale", "time_zone", "country", "city", "region"):
        if not getattr(target, name) and getattr(source, name):
            setattr(target, name, getattr(source, name))
    target.push_tokens = list(dict.fromkeys([*target.push_tokens, *source.push_tokens]))
    target.attributes = {**source.attributes, **target.attributes}
    target.first_seen_at = min(filter(None, (target.first_seen_at, source.first_seen_at)), default=None)
    target.last_seen_at = max(filter(None, (target.last_seen_at, source.last_seen_at)), default=None)
    target.last_engaged_at = max(filter(None, (target.last_engaged_at, source.last_engaged_at)), default=None)
    target.last_order_at = max(filter(None, (target.last_order_at, source.last_order_at)), default=None)
    target.order_count += source.order_count
    target.total_revenue += source.total_revenue
    source_id = source.pk
    source.delete()
    target.save()
    lifecycle_refresh(tenant=tenant, contacts=[target], reason="merged")
    audit(tenant=tenant, actor=actor, action="contact.merged", obj=target, data={"merged_contact_id": source_id})
