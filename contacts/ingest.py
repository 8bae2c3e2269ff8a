"""Event ingest (single and batch) and identify, like Segment's track/identify.

A batch is validated row by row; valid rows are stored with one INSERT (``ON CONFLICT
DO NOTHING`` on the idempotency key, so a repeat is a no-op even between concurrent
requests). Applying them -- the per-day rollups, the contacts' engagement summaries and
the buyers' lifecycle stages -- is one set-based statement per table that reads the
stored events by id, locking rows in id order so concurrent batches never deadlock. It
runs in the same transaction, or (``defer_apply``) in a worker: the batch's ids are
recorded in ``EventBacklog`` with the events, and the worker applies and deletes that
row in one transaction. New identities become contacts when the events are stored (a
concurrent batch creating the same one first is no error).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from contacts.bulk_sql import (
    MATCH_RECORD,
    bulk_insert_rows,
    each_id_lookup,
    each_value_lookup,
    json_bytes,
    rows_json,
)
from contacts.lifecycle import STAGE_INPUTS, derive_stage, lifecycle_refresh
from contacts.models import (
    ConsentRecord,
    ConsentState,
    Contact,
    Event,
    EventBacklog,
    EventDailyRollup,
    LifecycleTransition,
)
from contacts.normalize import normalise_email
from contacts.services import NUL_MESSAGE, RowResult, contact_upsert, contains_nul
from contacts.signals import contact_merging, contacts_touched, events_applied
from contacts.summaries import event_summaries_rebuild_contacts
from tenants.audit import Actor, audit
from tenants.context import platform_access
from tenants.models import Tenant

logger = logging.getLogger(__name__)

MAX_BATCH_EVENTS = 10_000
MAX_PROPERTIES_BYTES = 16_384
INSERT_CHUNK = 1000
EVENT_NAME = re.compile(r"^[A-Za-z0-9_.:\- ]{1,100}$")
PURCHASE = "purchase"
# Events that count as the contact engaging with a message (for last_engaged_at).
ENGAGEMENT_EVENTS = frozenset({"email_open", "email_click", "sms_click", "push_open", "link_click"})
# Deferred apply: a worker applies up to this many stored batches in one transaction.
BACKLOG_BATCHES_PER_APPLY = 10
# The sweep re-queues batches older than this (their worker died or their message was lost).
BACKLOG_SWEEP_AGE = dt.timedelta(minutes=2)
APPLY_LOCK = 0x5E6  # advisory lock class: one applier of events per tenant at a time
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
        encoded = json_bytes(properties)  # a NUL shows as \u0000
        if len(encoded) > MAX_PROPERTIES_BYTES:
            errors["properties"] = [f"At most {MAX_PROPERTIES_BYTES} bytes of properties."]
        elif b"\\u0000" in encoded and contains_nul(properties):
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
            table = Contact._meta.db_table
            by_id = key == "contact_id"
            sql = each_id_lookup(table, ("id", "id")) if by_id else each_value_lookup(table, column, (column, "id"))
            with connection.cursor() as cursor:
                cursor.execute(sql, [rows_json(sorted(values)), tenant.pk])
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
            "contact_id": contacts[e.reference], "name": e.name, "occurred_at": e.occurred_at,
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


def events_ingest(
    *, tenant: Tenant, events: list[Any], source: str = "api", defer_apply: bool = False
) -> list[RowResult]:
    """Store a batch of events; return one result per row (accepted, duplicate or error).

    The events are stored (and duplicates recognised) before this returns. Their rollups,
    summaries and lifecycle stages are applied in the same transaction, or with
    ``defer_apply`` by a worker soon after (``events_apply_backlog``).
    """
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
        for event in clean:
            if event.index in inserted:
                results[event.index] = RowResult(event.index, "accepted", id=inserted[event.index])
            else:
                results[event.index] = RowResult(event.index, "duplicate")
        event_ids = sorted(inserted.values())
        if event_ids and defer_apply:
            EventBacklog.objects.create(tenant=tenant, event_ids=event_ids, created_at=now)
            transaction.on_commit(functools.partial(_schedule_backlog, tenant.pk))
        elif event_ids:
            events_apply(tenant=tenant, event_ids=event_ids)
        _check_constraints_per_statement(False)
    return [results[index] for index in sorted(results)]


def _schedule_backlog(tenant_id: int) -> None:
    from contacts.tasks import apply_event_backlog  # tasks import this module

    try:
        apply_event_backlog.delay(tenant_id)
    except Exception:  # the events are committed: a broker outage must not turn that into an error
        logger.exception("could not queue the event backlog; the sweep will apply it", extra={"tenant_id": tenant_id})


def events_apply_backlog(*, tenant: Tenant, max_batches: int = BACKLOG_BATCHES_PER_APPLY) -> int:
    """Apply the tenant's stored-but-unapplied event batches; return how many events were applied.

    Each round claims up to ``max_batches`` batches, applies them together (a contact with
    events in several batches is updated once) and deletes them, in one transaction: an
    event counts exactly once, and a worker that dies mid-way leaves its batches for the next
    round or the sweep. Appliers of one tenant take turns (an advisory lock), so they never
    wait on each other's rows.
    """
    applied = 0
    while True:
        with transaction.atomic():
            if connection.vendor == "postgresql":
                _take_apply_lock(tenant)
            claimed = list(
                EventBacklog.objects.filter(tenant=tenant)
                .select_for_update(skip_locked=True)
                .order_by("id")
                .values_list("id", "event_ids")[:max_batches]
            )
            if not claimed:
                return applied
            event_ids = sorted({event_id for _, ids in claimed for event_id in ids})
            events_apply(tenant=tenant, event_ids=event_ids)
            EventBacklog.objects.filter(tenant=tenant, pk__in=[pk for pk, _ in claimed]).delete()
            applied += len(event_ids)
        logger.info("event backlog applied", extra={"tenant_id": tenant.pk, "events": len(event_ids)})


def tenants_with_stale_backlog(*, older_than: dt.timedelta | None = None) -> list[int]:
    """The tenants with event batches unapplied for longer than ``older_than`` (platform code: the sweep)."""
    cutoff = timezone.now() - (BACKLOG_SWEEP_AGE if older_than is None else older_than)
    with platform_access(), transaction.atomic():
        stale = EventBacklog.all_tenants.filter(created_at__lt=cutoff).values_list("tenant_id", flat=True)
        return sorted(set(stale))


def _take_apply_lock(tenant: Tenant) -> None:
    """Wait for the tenant's other event appliers (until this transaction ends).

    Concurrent batches touch many of the same contacts and rollup rows: one after the other they
    cost measurably less than entangled (row-lock waits, shared row locks for the foreign keys),
    and the order rows are locked in no longer matters, so they cannot deadlock.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [APPLY_LOCK, tenant.pk % 2**31])


@transaction.atomic
def events_apply(*, tenant: Tenant, event_ids: list[int]) -> None:
    """Add stored events to the rollups and their contacts' summaries; re-derive buyers' stages.

    Reads the events by id, so it applies them to the contact they belong to now (identify
    may have merged an anonymous visitor in between). Call it once per event.
    """
    if not event_ids:
        return
    if connection.vendor == "postgresql":
        _take_apply_lock(tenant)
        touched = _apply_rollups_postgresql(tenant, event_ids)
        buyers = _apply_summaries_postgresql(tenant, event_ids)
    else:
        stored = _stored_events(tenant, event_ids)
        touched = {event.contact_id for event in stored}
        _apply_rollups_portable(tenant, stored)
        buyer_ids = _apply_summaries_portable(tenant, stored)
        buyers = list(Contact.objects.filter(tenant=tenant, pk__in=sorted(buyer_ids)).only(*STAGE_INPUTS))
    # Only purchases move the figures a stage is derived from (orders and revenue).
    if buyers:
        lifecycle_refresh(tenant=tenant, contacts=buyers, reason="events")
    contacts_touched(tenant.pk, touched)
    events_applied(tenant.pk, event_ids)


# The events of a batch, found by id (parameters: the JSON list of ids, then the tenant; see bulk_sql).
BATCH_EVENTS = "FROM ({}) AS e".format(
    each_id_lookup(Event._meta.db_table, ("tenant_id", "contact_id", "name", "occurred_at", "revenue"))
)


def _apply_rollups_postgresql(tenant: Tenant, event_ids: list[int]) -> set[int]:
    """Add the events to their contacts' daily rollups; return the ids of those contacts."""
    # Sorted: concurrent batches lock the rollup rows in one order, so they wait rather than deadlock.
    sql = (
        f"WITH rolled AS (INSERT INTO {EventDailyRollup._meta.db_table} AS r "
        "(tenant_id, contact_id, name, day, count, revenue) "
        "SELECT e.tenant_id, e.contact_id, e.name, (e.occurred_at AT TIME ZONE 'UTC')::date, count(*), "
        f"coalesce(sum(e.revenue), 0) {BATCH_EVENTS} GROUP BY 1, 2, 3, 4 ORDER BY 2, 3, 4 "
        "ON CONFLICT (tenant_id, contact_id, name, day) "
        "DO UPDATE SET count = r.count + excluded.count, revenue = r.revenue + excluded.revenue "
        "RETURNING r.contact_id) SELECT DISTINCT contact_id FROM rolled"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [rows_json(event_ids), tenant.pk])
        return {contact_id for (contact_id,) in cursor.fetchall()}


def _apply_summaries_windows_postgresql(tenant: Tenant, event_ids: list[int]) -> None:
    """Add the events to their contacts' event window summaries (contacts/summaries.py).

    Each event counts in every window of the tenant's summary day that its day falls in (days
    after it too, as "within the last N days" counts them). Only the summarised names, and only
    once the tenant has summaries: the join with its state row finds nothing before the first
    refresh (and PostgreSQL then skips reading the events). Runs under the tenant's apply lock,
    so the summary day cannot move meanwhile.
    """
    from contacts.models import EventSummaryState, EventWindowSummary
    from contacts.summaries import COUNT_COLUMNS, REVENUE_COLUMNS, WINDOWS

    windows = ", ".join(
        [f"count(*) FILTER (WHERE v.day >= st.day - {n - 1})" for n in WINDOWS]
        + [f"(coalesce(sum(v.revenue) FILTER (WHERE v.day >= st.day - {n - 1}), 0) * 100)::bigint" for n in WINDOWS]
    )
    columns = [*COUNT_COLUMNS, *REVENUE_COLUMNS]
    sql = (
        f"INSERT INTO {EventWindowSummary._meta.db_table} AS s (tenant_id, contact_id, name, last_day, "
        f"{', '.join(columns)}) "
        f"SELECT v.tenant_id, v.contact_id, v.name, max(v.day), {windows} "
        "FROM (SELECT e.tenant_id, e.contact_id, e.name, (e.occurred_at AT TIME ZONE 'UTC')::date AS day, e.revenue "
        f"{BATCH_EVENTS}) AS v "
        f"JOIN {EventSummaryState._meta.db_table} AS st ON st.tenant_id = v.tenant_id "
        "AND st.names ? v.name "
        # Sorted: concurrent writers lock the summary rows in one order (they take turns anyway).
        "GROUP BY v.tenant_id, v.contact_id, v.name ORDER BY v.contact_id, v.name "
        "ON CONFLICT (tenant_id, name, contact_id) DO UPDATE SET last_day = GREATEST(s.last_day, excluded.last_day), "
        + ", ".join(f"{column} = s.{column} + excluded.{column}" for column in columns)
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [rows_json(event_ids), tenant.pk])


def _apply_summaries_postgresql(tenant: Tenant, event_ids: list[int]) -> list[Contact]:
    """Advance the touched contacts' engagement summaries; return the buyers (with STAGE_INPUTS)."""
    _apply_summaries_windows_postgresql(tenant, event_ids)
    # Increments and GREATEST/LEAST run under the row lock: concurrent batches add up. A contact
    # whose summary would not change is left alone (no new row version). None of these columns
    # is indexed, so with the table's free space (fillfactor) the updates are HOT.
    sql = (
        f"WITH updated AS (UPDATE {Contact._meta.db_table} AS c SET "
        "first_seen_at = LEAST(c.first_seen_at, v.first), last_seen_at = GREATEST(c.last_seen_at, v.last), "
        "last_engaged_at = GREATEST(c.last_engaged_at, v.engaged), order_count = c.order_count + v.orders, "
        "total_revenue = c.total_revenue + v.revenue, last_order_at = GREATEST(c.last_order_at, v.last_order) "
        "FROM (SELECT e.tenant_id, e.contact_id AS id, min(e.occurred_at) AS first, max(e.occurred_at) AS last, "
        "max(e.occurred_at) FILTER (WHERE e.name = ANY(%s)) AS engaged, "
        "count(*) FILTER (WHERE e.name = %s) AS orders, "
        "coalesce(sum(e.revenue) FILTER (WHERE e.name = %s), 0) AS revenue, "
        f"max(e.occurred_at) FILTER (WHERE e.name = %s) AS last_order {BATCH_EVENTS} "
        # Sorted by id: concurrent batches lock contacts in one order, so they wait rather than deadlock.
        "GROUP BY e.tenant_id, e.contact_id ORDER BY e.contact_id) AS v "
        f"WHERE {MATCH_RECORD.format(table='c', record='v')} AND (v.orders > 0 OR v.first < c.first_seen_at "
        "OR v.last > c.last_seen_at OR v.engaged > c.last_engaged_at OR c.first_seen_at IS NULL "
        "OR c.last_seen_at IS NULL OR (v.engaged IS NOT NULL AND c.last_engaged_at IS NULL)) "
        # Only the buyers travel back (a batch touches thousands of contacts; a few hundred buy).
        f"RETURNING v.orders > 0 AS bought, {', '.join(f'c.{name}' for name in STAGE_INPUTS)}) "
        f"SELECT {', '.join(STAGE_INPUTS)} FROM updated WHERE bought"
    )
    params: list[Any] = [sorted(ENGAGEMENT_EVENTS), PURCHASE, PURCHASE, PURCHASE, rows_json(event_ids), tenant.pk]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return [Contact(**dict(zip(STAGE_INPUTS, row, strict=True))) for row in rows]


@dataclass(frozen=True)
class StoredEvent:
    """What applying an event reads of it."""

    contact_id: int
    name: str
    occurred_at: dt.datetime
    revenue: Decimal | None


def _stored_events(tenant: Tenant, event_ids: list[int]) -> list[StoredEvent]:
    stored: list[StoredEvent] = []
    for start in range(0, len(event_ids), INSERT_CHUNK):  # SQLite limits the parameters of a statement
        rows = Event.objects.filter(tenant=tenant, pk__in=event_ids[start : start + INSERT_CHUNK])
        stored += [StoredEvent(*row) for row in rows.values_list("contact_id", "name", "occurred_at", "revenue")]
    return stored


def _apply_rollups_portable(tenant: Tenant, events: list[StoredEvent]) -> None:
    totals: dict[tuple[int, str, dt.date], list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for event in events:
        bucket = totals[(event.contact_id, event.name, event.occurred_at.astimezone(dt.UTC).date())]
        bucket[0] += 1
        bucket[1] += event.revenue or 0
    items = sorted(totals.items())
    table = EventDailyRollup._meta.db_table
    upsert = (
        "ON CONFLICT (tenant_id, contact_id, name, day) "
        "DO UPDATE SET count = r.count + excluded.count, revenue = r.revenue + excluded.revenue"
    )
    for start in range(0, len(items), INSERT_CHUNK // 6):
        chunk = items[start : start + INSERT_CHUNK // 6]
        placeholders = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(chunk))
        values: list[Any] = []
        for (contact_id, name, day), (count, revenue) in chunk:
            values += [tenant.pk, contact_id, name, day, count, revenue]
        sql = f"INSERT INTO {table} AS r (tenant_id, contact_id, name, day, count, revenue) VALUES {placeholders} "
        with connection.cursor() as cursor:
            cursor.execute(sql + upsert, values)


def _apply_summaries_portable(tenant: Tenant, events: list[StoredEvent]) -> set[int]:
    """Advance each touched contact's engagement summary; return the ids of contacts that bought."""
    summary: dict[int, dict[str, Any]] = {}
    for event in sorted(events, key=lambda e: e.occurred_at):
        s = summary.setdefault(
            event.contact_id,
            {"first": event.occurred_at, "engaged": None, "orders": 0, "revenue": Decimal(0), "last_order": None},
        )
        s["last"] = event.occurred_at
        if event.name in ENGAGEMENT_EVENTS:
            s["engaged"] = event.occurred_at
        if event.name == PURCHASE:
            s["orders"] += 1
            s["revenue"] += event.revenue or 0
            s["last_order"] = event.occurred_at
    for contact_id, s in sorted(summary.items()):
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
    return {contact_id for contact_id, s in summary.items() if s["orders"]}


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
    if anonymous is None and not known.anonymous_id:
        anonymous = _claim_anonymous_id(known, anonymous_id)
    if anonymous is None or anonymous.pk == known.pk:
        return known
    contact_merge(tenant=tenant, source=anonymous, target=known, actor=actor)
    known.refresh_from_db()
    if not known.anonymous_id:
        known.anonymous_id = anonymous_id
        known.save(update_fields=["anonymous_id", "updated_at"])
    return known


def _claim_anonymous_id(contact: Contact, anonymous_id: str) -> Contact | None:
    """Give ``contact`` the visitor's anonymous id; None when done. When a contact with that id appeared
    meanwhile (the visitor's first event, ingested while this identify ran), return it, to be merged."""
    try:
        with transaction.atomic():
            contact.anonymous_id = anonymous_id
            contact.save(update_fields=["anonymous_id", "updated_at"])
    except IntegrityError:
        contact.anonymous_id = ""
        return Contact.objects.get(tenant_id=contact.tenant_id, anonymous_id=anonymous_id)
    return None


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
    # The target's window summaries follow its rollups (the source's rows go with the contact).
    event_summaries_rebuild_contacts(tenant=tenant, contact_ids=[target.pk])
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
    contact_merging.send(sender=Contact, tenant_id=tenant.pk, source_id=source_id, target_id=target.pk)
    source.delete()
    target.save()
    lifecycle_refresh(tenant=tenant, contacts=[target], reason="merged")
    audit(tenant=tenant, actor=actor, action="contact.merged", obj=target, data={"merged_contact_id": source_id})
