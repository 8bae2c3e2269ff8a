"""Event ingest (single and batch) and identify, like Segment's track/identify.

A batch is validated row by row; valid rows are stored with multi-row INSERTs
(``ON CONFLICT DO NOTHING`` on the idempotency key, so a repeat is a no-op even
between concurrent requests), then the per-day rollups and the contacts'
engagement summaries are updated with one statement each.
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

from contacts.lifecycle import lifecycle_refresh
from contacts.models import (
    ConsentRecord,
    ConsentState,
    Contact,
    Event,
    EventDailyRollup,
    LifecycleTransition,
)
from contacts.normalize import normalise_email
from contacts.services import RowResult, contact_upsert
from tenants.audit import Actor, audit
from tenants.models import Tenant

MAX_BATCH_EVENTS = 10_000
MAX_PROPERTIES_BYTES = 16_384
INSERT_CHUNK = 1000
EVENT_NAME = re.compile(r"^[A-Za-z0-9_.:\- ]{1,100}$")
PURCHASE = "purchase"
# Events that count as the contact engaging with a message (for last_engaged_at).
ENGAGEMENT_EVENTS = frozenset({"email_open", "email_click", "sms_click", "push_open", "link_click"})
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


def _clean_event(index: int, data: Any, default_source: str, now: dt.datetime) -> CleanEvent | RowResult:
    errors: dict[str, list[str]] = {}
    if not isinstance(data, dict):
        return RowResult(index, "error", errors={"non_field_errors": ["Each event must be a JSON object."]})
    unknown = sorted(set(data) - EVENT_KEYS)
    if unknown:
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
        elif key == "email":
            try:
                reference = (key, normalise_email(str(value)))
            except ValidationError as error:
                errors[key] = error.messages
        elif key == "contact_id" and not str(value).isdigit():
            errors[key] = ["Expected a contact id (a number)."]
        else:
            reference = (key, str(value).strip())
    occurred_at = now
    if data.get("occurred_at") not in (None, ""):
        parsed = parse_datetime(str(data["occurred_at"])) if isinstance(data["occurred_at"], str) else None
        if parsed is None:
            errors["occurred_at"] = ["Expected an ISO 8601 time, e.g. 2026-11-28T09:30:00Z."]
        else:
            occurred_at = parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, dt.UTC)
            if occurred_at > now + dt.timedelta(days=1):
                errors["occurred_at"] = ["The event is in the future."]
    properties = data.get("properties") or {}
    if not isinstance(properties, dict):
        errors["properties"] = ["Expected a JSON object."]
    elif len(json.dumps(properties, default=str)) > MAX_PROPERTIES_BYTES:
        errors["properties"] = [f"At most {MAX_PROPERTIES_BYTES} bytes of properties."]
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
    if currency and not re.fullmatch(r"[A-Z]{3}", currency):
        errors["currency"] = ["Expected an ISO 4217 code, e.g. EUR."]
    source = str(data.get("source") or default_source)[:50]
    key = data.get("idempotency_key") or ""
    if not isinstance(key, str) or len(key) > 200:
        errors["idempotency_key"] = ["Expected text of at most 200 characters."]
    if errors:
        return RowResult(index, "error", errors=errors)
    return CleanEvent(index, reference, str(name), occurred_at, dict(properties), revenue, currency, source, str(key))


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
            touched = _update_summaries(tenant, stored, contacts)
            lifecycle_refresh(
                tenant=tenant, contacts=Contact.objects.filter(tenant=tenant, pk__in=touched), reason="events"
            )
    return [results[index] for index in sorted(results)]


def _resolve_contacts(
    tenant: Tenant, events: list[CleanEvent], now: dt.datetime, results: dict[int, RowResult]
) -> dict[tuple[str, str], int]:
    """Map each event's reference to a contact id, creating contacts for new identities."""
    wanted: dict[str, set[str]] = defaultdict(set)
    for event in events:
        wanted[event.reference[0]].add(event.reference[1])
    found: dict[tuple[str, str], int] = {}
    for key, values in wanted.items():
        field = "pk" if key == "contact_id" else key
        lookup = {f"{field}__in": [int(v) for v in values] if key == "contact_id" else values}
        for row in Contact.objects.filter(tenant=tenant, **lookup).values_list(field, "pk"):
            found[(key, str(row[0]))] = row[1]
    missing = {event.reference for event in events if event.reference not in found}
    for event in events:
        if event.reference in missing and event.reference[0] == "contact_id":
            results[event.index] = RowResult(event.index, "error", errors={"contact_id": ["No such contact."]})
    to_create = sorted(ref for ref in missing if ref[0] != "contact_id")
    if to_create:
        new = [Contact(tenant=tenant, first_seen_at=now, last_seen_at=now, **{key: value}) for key, value in to_create]
        Contact.objects.bulk_create(new, batch_size=1000)
        if connection.vendor != "postgresql":  # SQLite does not return ids from bulk_create
            new = list(Contact.objects.filter(tenant=tenant, created_at__gte=now).order_by("pk"))
        for contact in new:
            for key, value in to_create:
                if getattr(contact, key) == value:
                    found[(key, value)] = contact.pk
        lifecycle_refresh(tenant=tenant, contacts=new, reason="first seen")
    return found


def _insert_events(tenant: Tenant, events: list[CleanEvent], contacts: dict[tuple[str, str], int]) -> dict[int, int]:
    """Insert with ON CONFLICT DO NOTHING; return {row index: event id} for rows stored now."""
    table = Event._meta.db_table
    columns = (
        "tenant_id, contact_id, name, occurred_at, properties, revenue, currency, source, idempotency_key, received_at"
    )
    now = timezone.now()
    inserted: dict[int, int] = {}
    for start in range(0, len(events), INSERT_CHUNK):
        chunk = events[start : start + INSERT_CHUNK]
        placeholders = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(chunk))
        params: list[Any] = []
        for event in chunk:
            params += [
                tenant.pk,
                contacts[event.reference],
                event.name,
                event.occurred_at,
                json.dumps(event.properties, default=str),
                event.revenue,
                event.currency,
                event.source,
                event.idempotency_key,
                now,
            ]
        sql = (
            f"INSERT INTO {table} ({columns}) VALUES {placeholders} "
            "ON CONFLICT (tenant_id, idempotency_key) WHERE NOT (idempotency_key = '') DO NOTHING "
            "RETURNING id, idempotency_key, contact_id, name, occurred_at"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        # Rows come back in insertion order for stored rows; match them by content.
        remaining = {id(e): e for e in chunk}
        by_key = {e.idempotency_key: e for e in chunk if e.idempotency_key}
        for event_id, key, _contact_id, _name, _occurred in rows:
            match = by_key.get(key) if key else None
            if match is None:
                match = next(e for e in remaining.values() if not e.idempotency_key)
            remaining.pop(id(match), None)
            inserted[match.index] = event_id
    return inserted


def _update_rollups(tenant: Tenant, events: list[CleanEvent], contacts: dict[tuple[str, str], int]) -> None:
    totals: dict[tuple[int, str, dt.date], list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for event in events:
        bucket = totals[(contacts[event.reference], event.name, event.occurred_at.astimezone(dt.UTC).date())]
        bucket[0] += 1
        bucket[1] += event.revenue or 0
    table = EventDailyRollup._meta.db_table
    items = list(totals.items())
    for start in range(0, len(items), INSERT_CHUNK):
        chunk = items[start : start + INSERT_CHUNK]
        placeholders = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(chunk))
        params: list[Any] = []
        for (contact_id, name, day), (count, revenue) in chunk:
            params += [tenant.pk, contact_id, name, day, count, revenue]
        sql = (
            f"INSERT INTO {table} AS r (tenant_id, contact_id, name, day, count, revenue) "
            f"VALUES {placeholders} ON CONFLICT (tenant_id, contact_id, name, day) "
            "DO UPDATE SET count = r.count + excluded.count, revenue = r.revenue + excluded.revenue"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)


def _update_summaries(tenant: Tenant, events: list[CleanEvent], contacts: dict[tuple[str, str], int]) -> set[int]:
    """Advance each touched contact's engagement summary; return the touched contact ids."""
    summary: dict[int, dict[str, Any]] = {}
    for event in events:
        contact_id = contacts[event.reference]
        s = summary.setdefault(
            contact_id, {"first": event.occurred_at, "last": event.occurred_at, "engaged": None, "orders": 0,
                         "revenue": Decimal(0), "last_order": None},
        )  # fmt: skip
        s["first"] = min(s["first"], event.occurred_at)
        s["last"] = max(s["last"], event.occurred_at)
        if event.name in ENGAGEMENT_EVENTS:
            s["engaged"] = max(filter(None, (s["engaged"], event.occurred_at)))
        if event.name == PURCHASE:
            s["orders"] += 1
            s["revenue"] += event.revenue or 0
            s["last_order"] = max(filter(None, (s["last_order"], event.occurred_at)))
    if connection.vendor == "postgresql":
        _update_summaries_postgresql(summary)
    else:
        for contact_id, s in summary.items():
            _update_summary_portable(tenant, contact_id, s)
    return set(summary)


def _update_summaries_postgresql(summary: dict[int, dict[str, Any]]) -> None:
    table = Contact._meta.db_table
    items = list(summary.items())
    for start in range(0, len(items), INSERT_CHUNK):
        chunk = items[start : start + INSERT_CHUNK]
        placeholders = ", ".join(
            ["(%s::bigint, %s::timestamptz, %s::timestamptz, %s::timestamptz, %s::int, %s::numeric, %s::timestamptz)"]
            * len(chunk)
        )
        params: list[Any] = []
        for contact_id, s in chunk:
            params += [contact_id, s["first"], s["last"], s["engaged"], s["orders"], s["revenue"], s["last_order"]]
        # Increments and GREATEST/LEAST run under the row lock: concurrent batches add up.
        sql = (
            f"UPDATE {table} AS c SET "
            "first_seen_at = LEAST(c.first_seen_at, v.first), last_seen_at = GREATEST(c.last_seen_at, v.last), "
            "last_engaged_at = GREATEST(c.last_engaged_at, v.engaged), order_count = c.order_count + v.orders, "
            "total_revenue = c.total_revenue + v.revenue, last_order_at = GREATEST(c.last_order_at, v.last_order) "
            f"FROM (VALUES {placeholders}) AS v(id, first, last, engaged, orders, revenue, last_order) "
            "WHERE c.id = v.id"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)


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
