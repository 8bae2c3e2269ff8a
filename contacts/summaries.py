"""Event window summaries: per contact and event name, the rollups of the last N days added up.

A segment condition such as "revenue of purchases in the last 180 days ≥ 500" adds up a
contact's daily rollups over the window — at a million contacts, hundreds of thousands of rows
per count. ``EventWindowSummary`` keeps those sums per contact for the windows people pick
(``WINDOWS``), so a count reads one row per contact, and the newest day, which answers
"performed / not performed within N days" for any N up to ``HORIZON``.

The invariant, for a tenant whose ``EventSummaryState.day`` is D and every summarised name:
``count_N`` / ``revenue_N`` (cents) add up the contact's rollups of days ≥ D - N + 1 (days after
D included, as "within the last N days" counts them), ``last_day`` is the newest rollup day, and
every contact with a rollup of day ≥ D - 364 has a row. It is kept by

- event ingest (``contacts.ingest._apply_summaries_windows_postgresql``), in the transaction that
  adds the events to the rollups, under the tenant's apply lock;
- ``event_summaries_refresh`` (a beat tick every 5 minutes, segments/tasks.py): it
  moves D to today by subtracting the days that left each window, or rebuilds from the rollups
  (first time, names changed, a long gap, days leaving a counted window that retention may have
  deleted already, or once a week — which also repairs what the rollups lost or gained behind
  ingest's back: retention, merges of contacts);
- ``event_summaries_rebuild_contacts`` for contacts whose rollups were moved (a merge).

Segment compilation reads the summaries only when D is today (``summaries_for_counting``), and
holds a shared advisory lock until its transaction ends, so D cannot move under a running count.
Neither side waits for the other: the refresh only tries the lock (and tries again at the next
tick), and a count that finds a refresh running adds up the rollups instead. PostgreSQL only: on
SQLite (the embedded default, demo-sized data) segments add up the rollups themselves.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from contacts.models import EventDailyRollup, EventSummaryState, EventWindowSummary
from tenants.context import platform_access
from tenants.models import Tenant

logger = logging.getLogger(__name__)

WINDOWS = (7, 14, 30, 60, 90, 180, 365)  # days; the columns count_N and revenue_N
HORIZON = max(WINDOWS)  # rows are kept for contacts with rollups in the last HORIZON days
# The events whose windows are summarised (SEGMENT_SUMMARY_EVENTS): every summarised event costs
# ingest one more upsert per contact and batch, so the default is the shop's decisive ones.
DEFAULT_NAMES = ("add_to_cart", "purchase")
SUMMARY_LOCK = 0x5E7  # advisory lock class: counts share it, a refresh takes it alone
# Rebuild from the rollups instead of moving on, when the summaries are older than this…
MAX_GAP_DAYS = 31
# … or were last rebuilt this long ago (bounds any drift the rollups took behind ingest's back).
REBUILD_EVERY = dt.timedelta(days=7)
SUMMARY_TABLE = EventWindowSummary._meta.db_table
ROLLUP_TABLE = EventDailyRollup._meta.db_table
COUNT_COLUMNS = tuple(f"count_{days}" for days in WINDOWS)
REVENUE_COLUMNS = tuple(f"revenue_{days}" for days in WINDOWS)


@dataclass(frozen=True)
class EventSummaries:
    """What a segment count may read from the summaries today."""

    names: frozenset[str]
    windows: frozenset[int]  # "within the last N days" that count_N / revenue_N answer
    horizon: int  # "performed within N days" is answered by last_day for N up to this


@dataclass(frozen=True)
class SummaryRefresh:
    day: dt.date
    rebuilt: bool
    rows: int  # rows written (rebuilt) or moved on


def summarised_names() -> tuple[str, ...]:
    return tuple(sorted(set(getattr(settings, "SEGMENT_SUMMARY_EVENTS", DEFAULT_NAMES))))


def _utc_day(now: dt.datetime) -> dt.date:
    return now.astimezone(dt.UTC).date()


def _lock_key(tenant_id: int) -> list[int]:
    return [SUMMARY_LOCK, tenant_id % 2**31]


def summaries_for_counting(*, tenant: Tenant, today: dt.date) -> EventSummaries | None:
    """The summaries a whole-tenant count may read, if they are counted for ``today``.

    Takes the tenant's summary lock in shared mode first (until the transaction ends), so a
    refresh cannot move them on before the count has run; while a refresh holds it, nothing (the
    count never waits). Outside a transaction, or on SQLite, nothing: the count adds up the rollups.
    """
    if connection.vendor != "postgresql" or not connection.in_atomic_block:
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock_shared(%s, %s)", _lock_key(tenant.pk))
        (locked,) = cursor.fetchone()
    if not locked:
        return None
    # A statement after the lock: its snapshot includes the last refresh that committed.
    state = EventSummaryState.objects.filter(tenant=tenant).values_list("day", "names").first()
    if state is None or state[0] != today:
        return None
    keep = tenant.event_retention_days  # older rollups are deleted: longer windows would still count them
    return EventSummaries(
        names=frozenset(state[1]),
        windows=frozenset(days for days in WINDOWS if days <= keep),
        horizon=min(HORIZON, keep),
    )


def event_summaries_refresh(
    *, tenant: Tenant, now: dt.datetime | None = None, rebuild: bool = False
) -> SummaryRefresh | None:
    """Bring the tenant's summaries to today: move them on by the days that passed, or rebuild.

    Returns None when they are already counted for today, or when a count holds the summary
    lock (the next tick tries again; a count never waits for a refresh). PostgreSQL only.
    """
    if connection.vendor != "postgresql":
        return None
    now = now or timezone.now()
    today = _utc_day(now)
    names = summarised_names()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", _lock_key(tenant.pk))
            (locked,) = cursor.fetchone()
        if not locked:
            return None
        from contacts.ingest import _take_apply_lock  # ingest imports this module

        _take_apply_lock(tenant)  # no event is applied while the summaries move
        state = EventSummaryState.objects.filter(tenant=tenant).first()
        gap = (today - state.day).days if state else -1
        # Retention keeps the days from today - keep on: a window that counts can only be moved on
        # if every day leaving it (from state.day - N + 1) is still there to be subtracted.
        keep = tenant.event_retention_days
        rebuild = (
            rebuild
            or state is None
            or list(state.names) != list(names)
            or not 0 <= gap <= MAX_GAP_DAYS
            or state.rebuilt_at <= now - REBUILD_EVERY
            or any(keep - gap + 1 < days <= keep for days in WINDOWS)
        )
        if not rebuild and gap == 0:
            return None
        if rebuild:
            rows = _rebuild(tenant.pk, names, today)
        else:
            assert state is not None
            rows = _move_on(tenant.pk, names, state.day, today)
        EventSummaryState.objects.update_or_create(
            tenant=tenant,
            defaults={
                "day": today,
                "names": list(names),
                "refreshed_at": now,
                "rebuilt_at": now if rebuild or state is None else state.rebuilt_at,
            },
        )
    logger.info(
        "event summaries refreshed",
        extra={"tenant_id": tenant.pk, "day": today.isoformat(), "rebuilt": rebuild, "rows": rows},
    )
    return SummaryRefresh(day=today, rebuilt=rebuild, rows=rows)


def _window_sums(days_in: Sequence[str]) -> str:
    """count_N and revenue_N (cents) over rollups ``r``, each window's days given by a condition on ``r.day``."""
    counts = [
        f"coalesce(sum(r.count) FILTER (WHERE r.day {cond}), 0) AS {column}"
        for cond, column in zip(days_in, COUNT_COLUMNS, strict=True)
    ]
    revenues = [
        f"(coalesce(sum(r.revenue) FILTER (WHERE r.day {cond}), 0) * 100)::bigint AS {column}"
        for cond, column in zip(days_in, REVENUE_COLUMNS, strict=True)
    ]
    return ", ".join(counts + revenues)


def _rebuild(tenant_id: int, names: Sequence[str], today: dt.date, contact_ids: Sequence[int] | None = None) -> int:
    """Make the summaries (of ``contact_ids`` only, if given) what the rollups say; return the rows
    written or deleted.

    One statement: the sums from the rollups, then only the rows that differ are written (an
    unchanged row gets no new version, so a weekly rebuild does not leave the table twice its size
    for every count to read) and rows the rollups no longer back are deleted. New rows go in name
    and contact order: a count of one event reads its part of the table in a row.
    """
    narrow: list[Any] = [] if contact_ids is None else [list(contact_ids)]
    only = "" if contact_ids is None else " AND contact_id = ANY(%s)"
    starts = [f">= %s::date - {days - 1}" for days in WINDOWS]
    columns = ("last_day", *COUNT_COLUMNS, *REVENUE_COLUMNS)
    sql = (
        "WITH fresh AS MATERIALIZED ("
        f"SELECT r.contact_id, r.name, max(r.day) AS last_day, {_window_sums(starts)} "
        f"FROM {ROLLUP_TABLE} AS r WHERE r.tenant_id = %s AND r.name = ANY(%s) "
        f"AND r.day >= %s::date - {HORIZON - 1}{only} GROUP BY r.name, r.contact_id), "
        f"gone AS (DELETE FROM {SUMMARY_TABLE} AS s WHERE s.tenant_id = %s{only} AND NOT EXISTS "
        "(SELECT 1 FROM fresh WHERE fresh.contact_id = s.contact_id AND fresh.name = s.name) RETURNING 1), "
        f"written AS (INSERT INTO {SUMMARY_TABLE} AS s (tenant_id, contact_id, name, {', '.join(columns)}) "
        f"SELECT %s, contact_id, name, {', '.join(columns)} FROM fresh ORDER BY name, contact_id "
        "ON CONFLICT (tenant_id, name, contact_id) DO UPDATE SET "
        + ", ".join(f"{column} = excluded.{column}" for column in columns)
        + f" WHERE ({', '.join(f's.{c}' for c in columns)}) IS DISTINCT FROM "
        f"({', '.join(f'excluded.{c}' for c in columns)}) RETURNING 1) "
        "SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM written)"
    )
    params: list[Any] = [*([today] * (2 * len(WINDOWS))), tenant_id, list(names), today, *narrow]
    params += [tenant_id, *narrow, tenant_id]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        (rows,) = cursor.fetchone()
    return int(rows)


def _move_on(tenant_id: int, names: Sequence[str], day: dt.date, today: dt.date) -> int:
    """Subtract, from each window, the rollup days that left it between ``day`` and ``today``.

    Window N held days ≥ day - N + 1 and holds days ≥ today - N + 1: the days from day - N + 1 to
    today - N left it. Every contact with such a day has a row (the invariant), so an UPDATE does.
    """
    bands = [(day - dt.timedelta(days=n - 1), today - dt.timedelta(days=n)) for n in WINDOWS]
    leaving = sorted({low + dt.timedelta(days=i) for low, high in bands for i in range((high - low).days + 1)})
    within = ["BETWEEN %s AND %s" for _ in WINDOWS]
    band_params = [bound for band in bands for bound in band]
    assignments = ", ".join(f"{column} = s.{column} - d.{column}" for column in (*COUNT_COLUMNS, *REVENUE_COLUMNS))
    sql = (
        f"UPDATE {SUMMARY_TABLE} AS s SET {assignments} FROM ("
        f"SELECT r.contact_id, r.name, {_window_sums(within)} FROM {ROLLUP_TABLE} AS r "
        "WHERE r.tenant_id = %s AND r.name = ANY(%s) AND r.day = ANY(%s) GROUP BY r.contact_id, r.name"
        ") AS d WHERE s.tenant_id = %s AND s.name = d.name AND s.contact_id = d.contact_id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*band_params, *band_params, tenant_id, list(names), leaving, tenant_id])
        return int(cursor.rowcount)


def event_summaries_rebuild_contacts(*, tenant: Tenant, contact_ids: Iterable[int]) -> int:
    """Rewrite the summaries of a few contacts from their rollups (after their rollups were moved,
    e.g. a merge), as of the tenant's summary day. Run it in the transaction that moved them."""
    ids = sorted({int(pk) for pk in contact_ids})
    if connection.vendor != "postgresql" or not ids:
        return 0
    from contacts.ingest import _take_apply_lock  # ingest imports this module

    with transaction.atomic():
        _take_apply_lock(tenant)
        state = EventSummaryState.objects.filter(tenant=tenant).values_list("day", "names").first()
        if state is None:
            return 0
        return _rebuild(tenant.pk, list(state[1]), state[0], contact_ids=ids)


def tenants_with_stale_summaries(*, now: dt.datetime | None = None) -> list[int]:
    """The tenants whose summaries are not counted for today (platform code: the beat tick)."""
    today = _utc_day(now or timezone.now())
    with platform_access(), transaction.atomic():
        fresh = EventSummaryState.all_tenants.filter(day=today).values("tenant_id")
        return list(Tenant.objects.exclude(pk__in=fresh).order_by("pk").values_list("pk", flat=True))
