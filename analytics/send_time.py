"""Send-time optimisation: each contact's best hour of the week, and campaigns sent at it.

**The profile.** Hours of the week run from 0 (Monday 00:00-01:00) to 167 (Sunday 23:00-24:00)
on the contact's clock (their time zone, else the tenant's). Every human open or click
(``MessageEvent`` with ``machine == ""``) of the last ``LOOKBACK`` counts once per message and
hour of the week: opening a message three times in one hour, or opening and clicking it, is
one engagement. The tenant's engagements by hour of the week are the prior (a Dirichlet prior in
proportion to the tenant's distribution, scaled so that its busiest hour weighs
``PRIOR_EVENTS`` engagements). A contact's score for hour ``h`` is therefore

    own(h) × peak + PRIOR_EVENTS × tenant(h)      (peak: the tenant's count at its busiest hour)

— the posterior count times ``peak``, kept in integers so the SQL and Python paths agree to the
last digit — and the best hour is the highest score; ties go to the hour the tenant engages
most, then to the earlier hour. So a contact with no history gets the tenant's busiest hour; one
engagement moves a contact only to an hour with more than two thirds of the peak's count, two at
one hour only to an hour with more than a third of it, and three at one hour always beat the
prior. ``confidence`` is the share of the chosen hour's score that is the contact's own, in whole
percent (0 when the tenant's habit decided, at least 0.25 otherwise). A tenant with no engagement
at all sends at ``DEFAULT_HOUR_OF_WEEK`` (Tuesday 10:00).

**The recompute** (``send_time_profiles_compute``, daily per tenant from the beat) is a handful
of set-based statements on PostgreSQL: the engagements grouped by contact and hour into a
temporary table, the tenant's 168 counts from it, one ``INSERT … ON CONFLICT`` that picks each
contact's best hour (rows whose figures did not change are left alone) and one ``DELETE`` of the
profiles of contacts with no engagement left in the window. Other databases run the same rules
in Python.

**Sending at the best time** (``apply_best_times``, called by the snapshot): a campaign with
``best_time`` holds each delivery until the start of its contact's best hour of the week when
that hour begins within the 24 hours after the send starts, else until the same hour of the day
(the next time the contact's clock shows it, also within 24 hours); a contact who is in their
best hour when the send starts gets it at once. Quiet hours, the frequency cap and consent are
still checked when each message goes out.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import zoneinfo
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import F, FloatField, Value
from django.utils import timezone

from analytics.models import MessageEvent, SendTimeBaseline, SendTimeProfile
from campaigns.models import Campaign, CampaignRun, Delivery
from contacts.models import Contact
from tenants.models import Tenant

logger = logging.getLogger(__name__)

HOURS_IN_WEEK = 168
DEFAULT_HOUR_OF_WEEK = 34  # Tuesday 10:00, when a tenant has no engagement to learn from
PRIOR_EVENTS = 3  # the tenant's busiest hour weighs as much as this many of a contact's own engagements
LOOKBACK = dt.timedelta(days=180)
WINDOW = dt.timedelta(hours=24)
# Advisory lock keys of recomputes: this prefix plus the tenant's id (one bigint key space).
RECOMPUTE_LOCK_NAMESPACE = 0x5E6D_0007 << 32
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
HUMAN_KINDS = (MessageEvent.Kind.OPEN, MessageEvent.Kind.CLICK)


def hour_of_week(local: dt.datetime) -> int:
    """The hour of the week (0 = Monday 00:00) of a wall-clock time."""
    return local.weekday() * 24 + local.hour


def describe_hour_of_week(hour: int) -> str:
    """The hour in words: "Tuesday 10:00-11:00"."""
    start = hour % 24
    return f"{DAYS[hour // 24]} {start:02d}:00-{(start + 1) % 24:02d}:00"


def tenant_peak(tenant_counts: Sequence[int]) -> tuple[int, int]:
    """The tenant's busiest hour (the earliest of equals) and its count; the default with none."""
    peak = max(tenant_counts, default=0)
    if peak <= 0:
        return DEFAULT_HOUR_OF_WEEK, 0
    return list(tenant_counts).index(peak), peak


def choose_hour(own: Mapping[int, int], tenant_counts: Sequence[int]) -> tuple[int, float]:
    """A contact's best hour of the week and the confidence, from their own engagements by hour.

    The reference implementation of the rule in the module's docstring (the SQL mirrors it).
    """
    mode, peak = tenant_peak(tenant_counts)
    if peak == 0:
        return mode, 0.0
    best_key, best_hour, best_own, best_score = (PRIOR_EVENTS * peak, peak, -mode), mode, 0, PRIOR_EVENTS * peak
    for hour, count in own.items():
        if count <= 0:
            continue
        share = tenant_counts[hour]
        score = count * peak + PRIOR_EVENTS * share
        key = (score, share, -hour)
        if key > best_key:
            best_key, best_hour, best_own, best_score = key, hour, count, score
    return best_hour, (percent(best_own * peak, best_score) / 100 if best_own else 0.0)


def percent(part: int, whole: int) -> int:
    """``part / whole`` in whole percent, halves rounded up, in integers (as the SQL computes it)."""
    return (200 * part + whole) // (2 * whole)


# --- recompute -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SendTimeRecompute:
    """What a recompute found and wrote."""

    contacts: int  # contacts with at least one engagement in the window (each has a profile)
    engagements: int
    best_hour_of_week: int  # the tenant's
    written: int  # profiles created or changed
    removed: int  # profiles of contacts with no engagement left in the window
    elapsed_ms: float


def send_time_profiles_compute(*, tenant: Tenant, now: dt.datetime | None = None) -> SendTimeRecompute:
    """Recompute every profile of the tenant and its baseline from the engagements of the last LOOKBACK."""
    started = time.perf_counter()
    now = now or timezone.now()
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                # One recompute per tenant at a time: a second waits, then recomputes the same figures.
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [RECOMPUTE_LOCK_NAMESPACE + tenant.pk])
            counts, contacts, written, removed = _compute_sql(tenant, now)
        else:
            counts, contacts, written, removed = _compute_python(tenant, now)
        mode, _peak = tenant_peak(counts)
        SendTimeBaseline.objects.update_or_create(
            tenant=tenant,
            defaults={
                "hour_counts": counts, "best_hour_of_week": mode, "events_counted": sum(counts),
                "contacts_profiled": contacts, "computed_at": now,
            },
        )  # fmt: skip
    result = SendTimeRecompute(
        contacts=contacts, engagements=sum(counts), best_hour_of_week=mode, written=written, removed=removed,
        elapsed_ms=(time.perf_counter() - started) * 1000,
    )  # fmt: skip
    logger.info(
        "analytics.send_time_recomputed",
        extra={"tenant_id": tenant.pk, "contacts": contacts, "written": written, "removed": removed,
               "elapsed_ms": round(result.elapsed_ms)},
    )  # fmt: skip
    return result


def _zone_sql(contact_alias: str) -> tuple[str, str]:
    """A join resolving the contact's zone (names PostgreSQL does not know fall back to a parameter)."""
    join = f" LEFT JOIN (SELECT name FROM pg_timezone_names) AS z ON z.name = NULLIF({contact_alias}.time_zone, '')"
    return join, "COALESCE(z.name, %s)"


def _compute_sql(tenant: Tenant, now: dt.datetime) -> tuple[list[int], int, int, int]:
    from campaigns.sending import recipient_zone
    from segments.services import SET_BASED, query_settings

    events, contacts = MessageEvent._meta.db_table, Contact._meta.db_table
    profiles = SendTimeProfile._meta.db_table
    tenant_zone = str(recipient_zone("", tenant))
    join, zone = _zone_sql("c")
    local = f"(e.occurred_at AT TIME ZONE {zone})"
    how = f"((EXTRACT(ISODOW FROM {local})::int - 1) * 24 + EXTRACT(HOUR FROM {local})::int)"
    cells = (
        "CREATE TEMPORARY TABLE send_time_cells ON COMMIT DROP AS "
        f"SELECT e.contact_id, {how} AS how, COUNT(DISTINCT e.delivery_id)::int AS n "
        f"FROM {events} AS e JOIN {contacts} AS c ON c.tenant_id = e.tenant_id AND c.id = e.contact_id{join} "
        "WHERE e.tenant_id = %s AND c.tenant_id = %s AND c.erased_at IS NULL AND e.kind IN (%s, %s) "
        "AND e.machine = '' AND e.occurred_at >= %s AND e.occurred_at <= %s GROUP BY 1, 2"
    )
    # Whole-tenant sets: hash or merge joins, no JIT (segments.services.query_settings).
    with query_settings(**SET_BASED), connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS send_time_cells")
        cursor.execute(cells, [tenant_zone, tenant_zone, tenant.pk, tenant.pk, *HUMAN_KINDS, now - LOOKBACK, now])
        cursor.execute("ANALYZE send_time_cells")
        cursor.execute("SELECT how, SUM(n), COUNT(*) FROM send_time_cells GROUP BY how")
        counts = [0] * HOURS_IN_WEEK
        for how, total, _cells in cursor.fetchall():
            counts[how] = int(total)
        mode, peak = tenant_peak(counts)
        written = 0
        if peak:
            cursor.execute(
                UPSERT_SQL.format(profiles=profiles),
                [tenant.pk, mode, peak, now, PRIOR_EVENTS * peak, peak, mode, peak, PRIOR_EVENTS, counts],
            )
            written = cursor.rowcount
        cursor.execute(
            f"DELETE FROM {profiles} AS p WHERE p.tenant_id = %s "
            "AND NOT EXISTS (SELECT 1 FROM send_time_cells AS cell WHERE cell.contact_id = p.contact_id)",
            [tenant.pk],
        )
        removed = cursor.rowcount
        cursor.execute("SELECT COUNT(DISTINCT contact_id) FROM send_time_cells")
        contacts_profiled = int(cursor.fetchone()[0])
        cursor.execute("DROP TABLE send_time_cells")
    return counts, contacts_profiled, written, removed


# Parameters: tenant, the tenant's busiest hour, its count, now, the prior's score at that hour
# (PRIOR_EVENTS × peak), peak, busiest hour, peak, PRIOR_EVENTS, the 168 counts.
UPSERT_SQL = """
INSERT INTO {profiles} AS p (tenant_id, contact_id, best_hour_of_week, confidence, events_counted, computed_at)
SELECT %s, b.contact_id, CASE WHEN b.own THEN b.how ELSE %s END,
       CASE WHEN b.own THEN ((200 * b.n::bigint * %s + b.score) / (2 * b.score))::float8 / 100 ELSE 0 END,
       b.total::int, %s
FROM (
    SELECT DISTINCT ON (s.contact_id) s.contact_id, s.how, s.n, s.score, s.total,
           (s.score, s.t, -s.how) > (%s, %s, -%s) AS own
    FROM (
        SELECT cell.contact_id, cell.how, cell.n, h.t, cell.n::bigint * %s + %s * h.t AS score,
               SUM(cell.n) OVER (PARTITION BY cell.contact_id) AS total
        FROM send_time_cells AS cell
        JOIN unnest(%s::bigint[]) WITH ORDINALITY AS h (t, position) ON h.position = cell.how + 1
    ) AS s
    ORDER BY s.contact_id, s.score DESC, s.t DESC, s.how
) AS b
ON CONFLICT (tenant_id, contact_id) DO UPDATE SET
    best_hour_of_week = EXCLUDED.best_hour_of_week, confidence = EXCLUDED.confidence,
    events_counted = EXCLUDED.events_counted, computed_at = EXCLUDED.computed_at
WHERE (p.best_hour_of_week, p.confidence, p.events_counted)
    IS DISTINCT FROM (EXCLUDED.best_hour_of_week, EXCLUDED.confidence, EXCLUDED.events_counted)
"""


def engagement_cells(tenant: Tenant, now: dt.datetime) -> dict[int, dict[int, int]]:
    """Contact id → hour of the week → engagements (Python: the same rules as the SQL path)."""
    from campaigns.sending import recipient_zone

    rows = MessageEvent.objects.filter(
        tenant_id=tenant.pk, kind__in=HUMAN_KINDS, machine="", occurred_at__gte=now - LOOKBACK, occurred_at__lte=now
    ).values_list("contact_id", "delivery_id", "occurred_at")
    seen: set[tuple[int, int, int]] = set()
    by_contact: dict[int, list[tuple[int, dt.datetime]]] = defaultdict(list)
    for contact_id, delivery_id, occurred_at in rows.iterator(chunk_size=5_000):
        by_contact[contact_id].append((delivery_id, occurred_at))
    zones = dict(
        Contact.objects.filter(tenant_id=tenant.pk, erased_at__isnull=True, pk__in=list(by_contact)).values_list(
            "id", "time_zone"
        )
    )
    cells: dict[int, dict[int, int]] = {}
    for contact_id, engagements in by_contact.items():
        if contact_id not in zones:
            continue  # erased or gone
        zone = recipient_zone(zones[contact_id], tenant)
        own = cells.setdefault(contact_id, defaultdict(int))
        for delivery_id, occurred_at in engagements:
            hour = hour_of_week(occurred_at.astimezone(zone))
            if (contact_id, hour, delivery_id) not in seen:
                seen.add((contact_id, hour, delivery_id))
                own[hour] += 1
    return cells


def _compute_python(tenant: Tenant, now: dt.datetime) -> tuple[list[int], int, int, int]:
    cells = engagement_cells(tenant, now)
    counts = [0] * HOURS_IN_WEEK
    for own in cells.values():
        for hour, count in own.items():
            counts[hour] += count
    wanted = {}
    for contact_id, own in cells.items():
        hour, confidence = choose_hour(own, counts)
        wanted[contact_id] = (hour, confidence, sum(own.values()))
    existing = {p.contact_id: p for p in SendTimeProfile.objects.filter(tenant_id=tenant.pk)}
    removed = [p.pk for contact_id, p in existing.items() if contact_id not in wanted]
    created, changed = [], []
    for contact_id, (hour, confidence, total) in wanted.items():
        profile = existing.get(contact_id)
        if profile is None:
            figures = {"best_hour_of_week": hour, "confidence": confidence, "events_counted": total}
            created.append(SendTimeProfile(tenant_id=tenant.pk, contact_id=contact_id, computed_at=now, **figures))
        elif (profile.best_hour_of_week, profile.confidence, profile.events_counted) != (hour, confidence, total):
            profile.best_hour_of_week, profile.confidence, profile.events_counted = hour, confidence, total
            profile.computed_at = now
            changed.append(profile)
    SendTimeProfile.objects.filter(tenant_id=tenant.pk, pk__in=removed).delete()
    SendTimeProfile.objects.bulk_create(created, batch_size=1_000)
    fields = ["best_hour_of_week", "confidence", "events_counted", "computed_at"]
    SendTimeProfile.objects.bulk_update(changed, fields, batch_size=1_000)
    return counts, len(cells), len(created) + len(changed), len(removed)


# --- sending at the best time --------------------------------------------------------------------
def baseline_hour(tenant_id: int) -> int:
    """The best hour of contacts without a profile: the tenant's busiest, else the default."""
    hour = SendTimeBaseline.objects.filter(tenant_id=tenant_id).values_list("best_hour_of_week", flat=True).first()
    return DEFAULT_HOUR_OF_WEEK if hour is None else hour


def hours_ahead(best: int, start: dt.datetime) -> int:
    """Whole hours from the wall-clock hour ``start`` to the start of hour of the week ``best``:
    within the next 24 hours when that hour of the week begins then, else the same hour of the day."""
    ahead = (best - hour_of_week(start)) % HOURS_IN_WEEK
    return ahead if ahead < 24 else (best % 24 - start.hour) % 24


def best_moment(best: int, zone: zoneinfo.ZoneInfo, after: dt.datetime) -> dt.datetime:
    """When a delivery to a contact whose best hour is ``best`` goes out, for a send starting ``after``."""
    start = after.astimezone(zone).replace(minute=0, second=0, microsecond=0, tzinfo=None)
    target = (start + dt.timedelta(hours=hours_ahead(best, start))).replace(tzinfo=zone)
    return max(target.astimezone(dt.UTC), after)


# No self-join of the deliveries: the table was just written and has no statistics for the run yet.
# ``h0`` is the wall-clock hour on the contact's clock when the send starts; ``k`` the hours ahead.
# Parameters: after, tenant zone, default hour, after, tenant, tenant, run.
APPLY_SQL = """
UPDATE {deliveries} AS d
SET not_before = GREATEST(%s::timestamptz, (s.h0 + make_interval(hours => CASE
    WHEN (r.best - t.how0 + 168) %% 168 < 24 THEN (r.best - t.how0 + 168) %% 168
    ELSE (r.best %% 24 - EXTRACT(HOUR FROM s.h0)::int + 24) %% 24 END)) AT TIME ZONE r.zone)
FROM {contacts} AS c{join}
LEFT JOIN {profiles} AS p ON p.tenant_id = c.tenant_id AND p.contact_id = c.id
CROSS JOIN LATERAL (SELECT {zone} AS zone, COALESCE(p.best_hour_of_week, %s) AS best) AS r
CROSS JOIN LATERAL (SELECT date_trunc('hour', %s::timestamptz AT TIME ZONE r.zone) AS h0) AS s
CROSS JOIN LATERAL (SELECT (EXTRACT(ISODOW FROM s.h0)::int - 1) * 24 + EXTRACT(HOUR FROM s.h0)::int AS how0) AS t
WHERE c.tenant_id = %s AND c.id = d.contact_id AND d.tenant_id = %s AND d.run_id = %s AND d.status = 'pending'
    AND d.not_before IS NULL
"""


def apply_best_times(run: CampaignRun, *, after: dt.datetime | None = None) -> int:
    """Hold each pending delivery of a best-time campaign's run until its contact's best hour; return how many.

    Called by the snapshot right after it inserted the run's deliveries, in the same transaction.
    A local-time schedule already times every delivery, so it is left as it is, and so is a
    delivery that something else already holds back (``not_before`` set: an experiment's held share).
    ``after`` starts the 24 hours somewhere else than the run's start (deliveries released later).
    """
    campaign = run.campaign
    if not campaign.best_time or campaign.schedule == Campaign.Schedule.LOCAL_TIME:
        return 0
    from campaigns.sending import recipient_zone
    from segments.services import SET_BASED, query_settings

    after = after or max(run.started_at or timezone.now(), run.scheduled_for)
    tenant = campaign.tenant
    default = baseline_hour(tenant.pk)
    tenant_zone = str(recipient_zone("", tenant))
    if connection.vendor == "postgresql":
        join, zone = _zone_sql("c")
        sql = APPLY_SQL.format(
            deliveries=Delivery._meta.db_table, contacts=Contact._meta.db_table,
            profiles=SendTimeProfile._meta.db_table, zone=zone, join=join,
        )  # fmt: skip
        params: list[Any] = [after, tenant_zone, default, after, tenant.pk, tenant.pk, run.pk]
        # Hash joins whatever the estimates say (the run's rows are not in the statistics yet), no JIT.
        with query_settings(**SET_BASED), connection.cursor() as cursor:
            cursor.execute(sql, params)
            held = cursor.rowcount
    else:
        held = _apply_python(run, tenant, default, after)
    logger.info("analytics.best_times_applied", extra={"tenant_id": tenant.pk, "run_id": run.pk, "deliveries": held})
    return held


def _apply_python(run: CampaignRun, tenant: Tenant, default: int, after: dt.datetime) -> int:
    """SQLite: the same moments, one UPDATE per distinct moment."""
    from campaigns.sending import recipient_zone

    pending = Delivery.objects.filter(
        tenant_id=tenant.pk, run_id=run.pk, status=Delivery.Status.PENDING, not_before__isnull=True
    )
    rows = list(pending.values_list("id", "contact_id", "contact__time_zone"))
    best = dict(
        SendTimeProfile.objects.filter(tenant_id=tenant.pk, contact_id__in=pending.values("contact_id")).values_list(
            "contact_id", "best_hour_of_week"
        )
    )
    by_moment: dict[dt.datetime, list[int]] = defaultdict(list)
    for delivery_id, contact_id, zone_name in rows:
        moment = best_moment(best.get(contact_id, default), recipient_zone(zone_name, tenant), after)
        by_moment[moment].append(delivery_id)
    for moment, ids in by_moment.items():
        for start in range(0, len(ids), 500):
            Delivery.objects.filter(tenant_id=tenant.pk, pk__in=ids[start : start + 500]).update(not_before=moment)
    return len(rows)


# --- reads ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BestSendTime:
    """A contact's best hour of the week, on their clock, and where it comes from."""

    hour_of_week: int
    zone: str
    source: str  # "contact" (their own engagement decided), "workspace" (the tenant's habit), "default"
    confidence: float
    events_counted: int
    computed_at: dt.datetime | None

    @property
    def label(self) -> str:
        return describe_hour_of_week(self.hour_of_week)


def contact_best_send_time(*, tenant: Tenant, contact: Contact) -> BestSendTime:
    """The contact's best send time as the last recompute saw it (the tenant's when they have no profile)."""
    from campaigns.sending import recipient_zone

    zone = str(recipient_zone(contact.time_zone, tenant))
    columns = ("source", "best_hour_of_week", "share", "events_counted", "computed_at")
    # One query for both rows: the contact page is counted query by query.
    profile = (
        SendTimeProfile.objects.filter(tenant_id=tenant.pk, contact_id=contact.pk)
        .annotate(source=Value("contact"), share=F("confidence"))
        .values_list(*columns)
    )
    baseline = (
        SendTimeBaseline.objects.filter(tenant_id=tenant.pk)
        .annotate(source=Value("workspace"), share=Value(0.0, output_field=FloatField()))
        .values_list(*columns)
    )
    rows = {row[0]: row for row in profile.union(baseline, all=True)}
    if "contact" in rows:
        _source, hour, confidence, counted, computed_at = rows["contact"]
        source = "contact" if confidence > 0 else "workspace"
        return BestSendTime(hour, zone, source, confidence, counted, computed_at)
    if "workspace" in rows and rows["workspace"][3]:
        return BestSendTime(rows["workspace"][1], zone, "workspace", 0.0, 0, rows["workspace"][4])
    computed = rows["workspace"][4] if "workspace" in rows else None
    return BestSendTime(DEFAULT_HOUR_OF_WEEK, zone, "default", 0.0, 0, computed)


def scheduled_send_hours(*, run: CampaignRun, zone: zoneinfo.ZoneInfo) -> list[tuple[dt.datetime, int]]:
    """The run's deliveries by the hour they are (or were) due, on ``zone``'s clock, in time order."""
    from django.db.models import Count
    from django.db.models.functions import Coalesce, TruncHour

    rows = (
        Delivery.objects.filter(tenant_id=run.tenant_id, run_id=run.pk)
        .annotate(hour=TruncHour(Coalesce("not_before", "run__scheduled_for"), tzinfo=zone))
        .values("hour")
        .annotate(n=Count("id"))
        .order_by("hour")
    )
    return [(row["hour"], row["n"]) for row in rows]
