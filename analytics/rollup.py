"""Keep the message figures current: each delivery's outcome, and daily figures per campaign and variant.

Reading a campaign's figures straight from the raw tables means aggregating its deliveries (a million
for a big send) and its opens and clicks on every page view, and the dashboard would aggregate every
campaign of the tenant. So the figures are kept in three small tables (analytics/models.py):

- ``DeliveryOutcome``: per delivery that anything happened to, its firsts (first human open, first
  open by anyone, first human click, first bounce, complaint, unsubscribe) and its human clicks,
  always recomputed from *all* the delivery's raw rows, so recomputing it again changes nothing;
- ``RunTally``: per run, the messages sent by variant and day, as last counted;
- ``CampaignDayStats``: per campaign, variant and day, the sums. Every change to an outcome or a
  tally changes these by the difference (new − old) in the same transaction, so they always equal
  what the outcomes and tallies add up to, and counting a delivery twice is harmless.

A *pass* (``stats_refresh``) finds what to recount from the ids of the raw tables: opens, clicks and
unsubscribes (``MessageEvent``) and provider feedback (``DeliveryFeedback``) name deliveries whose
outcome to recompute; new runs, and runs not yet settled, are recounted. A run is settled (never
counted again) once it is done or cancelled for ``SETTLE_AFTER``. Each pass reads from the ids
checkpointed ``OVERLAP`` before, not from where the last pass stopped: a row whose transaction
committed after a later id had been read is still seen (rereading costs a little, never a double
count). Passes work in chunks, each its own transaction under the tenant's cursor row lock, and a
pass stopped half way (a time budget, a crash) goes on from its last chunk.

Days are the tenant's (its time zone when counted). ``stats_rebuild`` forgets a tenant's figures and
counts everything again (after a time zone change, or to check the figures).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.db import connection, transaction
from django.db.models import Count, F, Max, Min, OuterRef, Q, Subquery, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from analytics.models import (
    CampaignDayStats,
    CampaignStageStats,
    Conversion,
    DeliveryOutcome,
    MessageEvent,
    RunTally,
    StatsCursor,
    StatsSweep,
)
from campaigns.models import CampaignRun, Delivery, DeliveryFeedback
from contacts.models import Contact
from tenants.context import platform_access
from tenants.models import Tenant

logger = logging.getLogger(__name__)

SOURCES = ("event", "feedback", "run")
# How far back each pass reads again (see the module docstring): a pixel or a provider's webhook
# commits in milliseconds; a run's snapshot of a million deliveries in seconds to a minute.
OVERLAP = {"event": dt.timedelta(minutes=3), "feedback": dt.timedelta(minutes=3), "run": dt.timedelta(hours=1)}
SETTLE_AFTER = dt.timedelta(minutes=15)
# Figures by lifecycle stage (the contacts' stages now) are counted again from the raw rows: after a
# campaign's figures change, at most this often…
STAGE_FRESH_FOR = dt.timedelta(minutes=15)
# …and, as contacts move between stages, at least this often.
STAGE_MAX_AGE = dt.timedelta(hours=6)
EVENT_CHUNK = 5_000
RUN_CHUNK = 20
BOUNCES = (DeliveryFeedback.Kind.BOUNCE_HARD, DeliveryFeedback.Kind.BOUNCE_SOFT)
FEEDBACK_UNSUBSCRIBES = (DeliveryFeedback.Kind.UNSUBSCRIBE, DeliveryFeedback.Kind.INBOUND_STOP)
DAY_METRICS = ("sent", "bounced", "opened", "opened_any", "clicked", "clicks", "engaged", "unsubscribed", "complained")
# Which outcome column dates which daily figure (total clicks are dated by the first click).
OUTCOME_DATES = {
    "opened": "opened_at", "opened_any": "opened_any_at", "clicked": "clicked_at", "engaged": "engaged_at",
    "bounced": "bounced_at", "complained": "complained_at", "unsubscribed": "unsubscribed_at",
}  # fmt: skip

Key = tuple[int, int, dt.date]  # campaign, variant (0: none), day


@dataclass(frozen=True)
class Outcome:
    """What became of one delivery (a ``DeliveryOutcome`` row's values)."""

    campaign_id: int
    variant_id: int
    contact_id: int
    opened_at: dt.datetime | None = None
    opened_any_at: dt.datetime | None = None
    clicked_at: dt.datetime | None = None
    clicks: int = 0
    engaged_at: dt.datetime | None = None
    bounced_at: dt.datetime | None = None
    complained_at: dt.datetime | None = None
    unsubscribed_at: dt.datetime | None = None

    def contributions(self, zone: ZoneInfo) -> Iterable[tuple[Key, str, int]]:
        """The daily figures this outcome adds to: (campaign, variant, day), figure, amount."""
        for metric, column in OUTCOME_DATES.items():
            at = getattr(self, column)
            if at is not None:
                yield (self.campaign_id, self.variant_id, at.astimezone(zone).date()), metric, 1
        if self.clicks and self.clicked_at is not None:
            yield (self.campaign_id, self.variant_id, self.clicked_at.astimezone(zone).date()), "clicks", self.clicks


OUTCOME_FIELDS = [f.name for f in fields(Outcome)]


@dataclass(frozen=True)
class PassResult:
    deliveries: int = 0
    runs: int = 0
    finished: bool = True


class Deltas:
    """Changes to the daily figures, added up before they are written in one statement."""

    def __init__(self) -> None:
        self.rows: dict[Key, dict[str, int]] = defaultdict(lambda: dict.fromkeys(DAY_METRICS, 0))

    def add(self, key: Key, metric: str, amount: int) -> None:
        self.rows[key][metric] += amount

    def apply(self, tenant_id: int) -> set[int]:
        """Write the changes; return the campaigns whose figures changed."""
        changed = [(key, values) for key, values in self.rows.items() if any(values.values())]
        if not changed:
            return set()
        table = CampaignDayStats._meta.db_table
        columns = ["tenant_id", "campaign_id", "variant_id", "day", *DAY_METRICS]
        updates = ", ".join(f"{m} = {table}.{m} + excluded.{m}" for m in DAY_METRICS)
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
        tail = f" ON CONFLICT (tenant_id, campaign_id, variant_id, day) DO UPDATE SET {updates}"
        row_sql = f"({', '.join(['%s'] * len(columns))})"
        # Sorted: concurrent writers (a refresh and a rebuild) take row locks in one order.
        changed.sort(key=lambda item: item[0])
        for start in range(0, len(changed), 500):
            chunk = changed[start : start + 500]
            params: list[Any] = []
            for (campaign_id, variant_id, day), values in chunk:
                params += [tenant_id, campaign_id, variant_id, day, *(values[m] for m in DAY_METRICS)]
            with connection.cursor() as cursor:
                cursor.execute(head + ", ".join([row_sql] * len(chunk)) + tail, params)
        return {campaign_id for (campaign_id, _, _), _ in changed}


# --- outcomes ---------------------------------------------------------------------------------------
def outcomes_compute(tenant_id: int, delivery_ids: Sequence[int]) -> dict[int, Outcome]:
    """Each delivery's outcome from all of its raw rows (deliveries with nothing recorded are left out)."""
    ids = sorted(set(delivery_ids))
    if not ids:
        return {}
    human = Q(machine="")
    events = {
        row["delivery_id"]: row
        for row in MessageEvent.objects.filter(tenant_id=tenant_id, delivery_id__in=ids)
        .values("delivery_id")
        .annotate(
            campaign=Max("campaign_id"), variant=Max("variant_id"), contact=Max("contact_id"),
            opened_at=Min("occurred_at", filter=Q(kind=MessageEvent.Kind.OPEN) & human),
            opened_any_at=Min("occurred_at", filter=Q(kind=MessageEvent.Kind.OPEN)),
            clicked_at=Min("occurred_at", filter=Q(kind=MessageEvent.Kind.CLICK) & human),
            clicks=Count("id", filter=Q(kind=MessageEvent.Kind.CLICK) & human),
            unsubscribed_at=Min("occurred_at", filter=Q(kind=MessageEvent.Kind.UNSUBSCRIBE)),
        )
        .order_by()
    }  # fmt: skip
    feedback = {
        row["delivery_id"]: row
        for row in DeliveryFeedback.objects.filter(tenant_id=tenant_id, delivery_id__in=ids)
        .values("delivery_id")
        .annotate(
            bounced_at=Min("occurred_at", filter=Q(kind__in=BOUNCES)),
            complained_at=Min("occurred_at", filter=Q(kind=DeliveryFeedback.Kind.COMPLAINT)),
            unsubscribed_at=Min("occurred_at", filter=Q(kind__in=FEEDBACK_UNSUBSCRIBES)),
        )
        .order_by()
    }
    found = {
        pk: (campaign_id, variant_id or 0, contact_id)
        for pk, campaign_id, variant_id, contact_id in Delivery.objects.filter(
            tenant_id=tenant_id, pk__in=[pk for pk in ids if pk in events or pk in feedback]
        ).values_list("pk", "run__campaign_id", "variant_id", "contact_id")
    }
    outcomes: dict[int, Outcome] = {}
    for pk in ids:
        event, answer = events.get(pk), feedback.get(pk)
        if pk in found:
            campaign_id, variant_id, contact_id = found[pk]
        elif event is not None:  # the delivery is gone (its contact erased): its events still count
            campaign_id, variant_id, contact_id = event["campaign"], event["variant"] or 0, event["contact"]
        else:
            continue
        opened_at = event["opened_at"] if event else None
        clicked_at = event["clicked_at"] if event else None
        unsubscribed = [at for at in (event and event["unsubscribed_at"], answer and answer["unsubscribed_at"]) if at]
        outcomes[pk] = Outcome(
            campaign_id=campaign_id, variant_id=variant_id, contact_id=contact_id,
            opened_at=opened_at, opened_any_at=event["opened_any_at"] if event else None,
            clicked_at=clicked_at, clicks=event["clicks"] if event else 0,
            engaged_at=min((at for at in (opened_at, clicked_at) if at), default=None),
            bounced_at=answer["bounced_at"] if answer else None,
            complained_at=answer["complained_at"] if answer else None,
            unsubscribed_at=min(unsubscribed, default=None),
        )  # fmt: skip
    return outcomes


def _stored_outcomes(tenant_id: int, delivery_ids: Sequence[int]) -> dict[int, Outcome]:
    ids = sorted(set(delivery_ids))
    rows = DeliveryOutcome.objects.filter(tenant_id=tenant_id, delivery_id__in=ids).values(
        "delivery_id", *OUTCOME_FIELDS
    )
    return {row.pop("delivery_id"): Outcome(**row) for row in rows}


def _outcomes_refresh(tenant: Tenant, delivery_ids: Sequence[int]) -> tuple[int, set[int]]:
    """Recompute these deliveries' outcomes and move the daily figures by the difference; return how many
    changed and the campaigns whose figures did."""
    zone = ZoneInfo(tenant.time_zone)
    new = outcomes_compute(tenant.pk, delivery_ids)
    old = _stored_outcomes(tenant.pk, delivery_ids)
    deltas = Deltas()
    changed: list[DeliveryOutcome] = []
    for pk in sorted(set(new) | set(old)):
        before, after = old.get(pk), new.get(pk)
        if before == after:
            continue
        for key, metric, amount in before.contributions(zone) if before else ():
            deltas.add(key, metric, -amount)
        for key, metric, amount in after.contributions(zone) if after else ():
            deltas.add(key, metric, amount)
        if after is not None:
            changed.append(DeliveryOutcome(tenant_id=tenant.pk, delivery_id=pk, **after.__dict__))
    if changed:
        DeliveryOutcome.objects.bulk_create(
            changed, batch_size=2_000, update_conflicts=True, unique_fields=["tenant", "delivery_id"],
            update_fields=list(OUTCOME_FIELDS),
        )  # fmt: skip
    return len(changed), deltas.apply(tenant.pk)


# --- runs -------------------------------------------------------------------------------------------
def _runs_recount(tenant: Tenant, run_ids: Sequence[int], now: dt.datetime) -> set[int]:
    """Count these runs' sent messages by variant and day again; settle the runs that are over. Return the
    campaigns whose figures changed."""
    ids = sorted(set(run_ids))
    if not ids:
        return set()
    zone = ZoneInfo(tenant.time_zone)
    runs = {
        pk: (campaign_id, status, finished_at)
        for pk, campaign_id, status, finished_at in CampaignRun.objects.filter(tenant_id=tenant.pk, pk__in=ids)
        .values_list("pk", "campaign_id", "status", "finished_at")
    }  # fmt: skip
    counted: dict[int, dict[tuple[int, dt.date], int]] = defaultdict(dict)
    rows = (
        Delivery.objects.filter(tenant_id=tenant.pk, run_id__in=list(runs), status=Delivery.Status.SENT)
        .annotate(day=TruncDate("sent_at", tzinfo=zone))
        .values_list("run_id", "variant_id", "day")
        .annotate(n=Count("id"))
        .order_by()
    )
    for run_id, variant_id, day, n in rows:
        counted[run_id][(variant_id or 0, day)] = counted[run_id].get((variant_id or 0, day), 0) + n
    tallies = {t.run_id: t for t in RunTally.objects.filter(tenant_id=tenant.pk, run_id__in=ids)}
    deltas = Deltas()
    over = (CampaignRun.Status.DONE, CampaignRun.Status.CANCELLED)
    for run_id in ids:
        tally = tallies.get(run_id)
        if run_id not in runs:  # deleted with its campaign: nothing to count any more
            if tally is not None and not tally.settled:
                RunTally.objects.filter(pk=tally.pk).update(settled=True, counted_at=now)
            continue
        campaign_id, status, finished_at = runs[run_id]
        before = {(v, dt.date.fromisoformat(d)): n for v, d, n in (tally.counts if tally else [])}
        after = counted.get(run_id, {})
        for key in set(before) | set(after):
            if after.get(key, 0) != before.get(key, 0):
                deltas.add((campaign_id, key[0], key[1]), "sent", after.get(key, 0) - before.get(key, 0))
        settled = status in over and finished_at is not None and finished_at <= now - SETTLE_AFTER
        counts = [[v, d.isoformat(), n] for (v, d), n in sorted(after.items())]
        RunTally.objects.update_or_create(
            tenant_id=tenant.pk, run_id=run_id,
            defaults={"campaign_id": campaign_id, "counts": counts, "settled": settled, "counted_at": now},
        )  # fmt: skip
    return deltas.apply(tenant.pk)


# --- passes -----------------------------------------------------------------------------------------
def _last_ids() -> dict[str, int]:
    """The newest id handed out in each raw table (its sequence: no scan, and no tenant's rows read)."""
    tables = {"event": MessageEvent, "feedback": DeliveryFeedback, "run": CampaignRun}
    ids = {}
    for source, model in tables.items():
        table = model._meta.db_table
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(
                    "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM "
                    f"{connection.ops.quote_name(_sequence(table))}"
                )
            else:
                cursor.execute(f"SELECT coalesce(max(id), 0) FROM {table}")
            ids[source] = int(cursor.fetchone()[0])
    return ids


_SEQUENCES: dict[str, str] = {}


def _sequence(table: str) -> str:
    if table not in _SEQUENCES:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [table])
            _SEQUENCES[table] = cursor.fetchone()[0].split(".")[-1].strip('"')
    return _SEQUENCES[table]


def checkpoint_lower_bounds(checkpoints: list[dict[str, Any]], now: dt.datetime) -> dict[str, int]:
    """Per source, the ids of the newest checkpoint at least that source's ``OVERLAP`` old (0: none)."""
    bounds = dict.fromkeys(SOURCES, 0)
    for point in checkpoints:
        at = dt.datetime.fromisoformat(point["at"])
        for source in SOURCES:
            if at <= now - OVERLAP[source]:
                bounds[source] = max(bounds[source], int(point[source]))
    return bounds


def checkpoints_add(checkpoints: list[dict[str, Any]], point: dict[str, Any], now: dt.datetime) -> list[dict[str, Any]]:
    """Add ``point``; keep only what a later pass may still start from (the newest one past each overlap)."""
    points = sorted([*checkpoints, point], key=lambda p: p["at"])
    keep_from = 0
    longest = max(OVERLAP.values())
    for index, p in enumerate(points):
        if dt.datetime.fromisoformat(p["at"]) <= now - longest:
            keep_from = index
    return points[keep_from:]


def _locked_cursor(tenant: Tenant) -> StatsCursor | None:
    """The tenant's cursor, locked for this transaction; None while another pass holds it."""
    StatsCursor.objects.get_or_create(tenant=tenant)
    return StatsCursor.objects.select_for_update(skip_locked=True).filter(tenant=tenant).first()


def stats_refresh(*, tenant: Tenant, now: dt.datetime | None = None, budget_seconds: float | None = None) -> PassResult:
    """Bring the tenant's message figures up to date (a pass; see the module docstring).

    With ``budget_seconds`` the pass stops after the chunk that exceeds it (``finished`` False) and
    the next call goes on from there.
    """
    started = time.monotonic()
    now = now or timezone.now()
    deliveries = runs = 0

    def over_budget() -> bool:
        return budget_seconds is not None and time.monotonic() - started > budget_seconds

    with transaction.atomic():
        cursor = _locked_cursor(tenant)
        if cursor is None:
            return PassResult(finished=False)
        if cursor.pending is None:
            cursor.pending = {
                "at": now.isoformat(), "from": checkpoint_lower_bounds(cursor.checkpoints, now), "to": _last_ids(),
            }  # fmt: skip
            cursor.save(update_fields=["pending"])
    for source, model in (("event", MessageEvent), ("feedback", DeliveryFeedback)):
        while True:
            with transaction.atomic():
                cursor = _locked_cursor(tenant)
                if cursor is None or cursor.pending is None:
                    return PassResult(deliveries, runs, finished=False)
                low, high = cursor.pending["from"][source], cursor.pending["to"][source]
                rows = list(
                    model.objects.filter(tenant_id=tenant.pk, id__gt=low, id__lte=high)
                    .order_by("id")
                    .values_list("id", "delivery_id")[:EVENT_CHUNK]
                )
                if not rows:
                    break
                changed, moved = _outcomes_refresh(tenant, [d for _, d in rows if d is not None])
                deliveries += changed
                cursor.pending["from"][source] = rows[-1][0]
                cursor.stages_due = sorted(set(cursor.stages_due) | moved)
                cursor.save(update_fields=["pending", "stages_due"])
            if over_budget():
                return PassResult(deliveries, runs, finished=False)
    with transaction.atomic():
        cursor = _locked_cursor(tenant)
        if cursor is None or cursor.pending is None:
            return PassResult(deliveries, runs, finished=False)
        pending = cursor.pending
        low, high = pending["from"]["run"], pending["to"]["run"]
        # New runs (read again for an hour: a snapshot's transaction is long), less those already settled,
        # and every run not settled yet.
        run_ids = set(
            CampaignRun.objects.filter(tenant_id=tenant.pk, id__gt=low, id__lte=high).values_list("id", flat=True)
        )
        run_ids -= set(
            RunTally.objects.filter(tenant_id=tenant.pk, run_id__in=sorted(run_ids), settled=True).values_list(
                "run_id", flat=True
            )
        )
        run_ids |= set(RunTally.objects.filter(tenant_id=tenant.pk, settled=False).values_list("run_id", flat=True))
        at = dt.datetime.fromisoformat(pending["at"])
        ordered = sorted(run_ids)
        touched: set[int] = set()
        for start in range(0, len(ordered), RUN_CHUNK):
            touched |= _runs_recount(tenant, ordered[start : start + RUN_CHUNK], at)
        runs = len(ordered)
        cursor.checkpoints = checkpoints_add(cursor.checkpoints, {"at": pending["at"], **pending["to"]}, at)
        cursor.pending = None
        cursor.refreshed_at = at
        cursor.stages_due = sorted(set(cursor.stages_due) | touched)
        cursor.save(update_fields=["checkpoints", "pending", "refreshed_at", "stages_due"])
    stages = 0
    while not over_budget() and (campaign_id := _next_stage_due(tenant, now)) is not None:
        stage_stats_count(tenant=tenant, campaign_id=campaign_id, now=now)
        stages += 1
    logger.info(
        "analytics.refreshed",
        extra={"tenant_id": tenant.pk, "deliveries": deliveries, "runs": runs, "stage_campaigns": stages},
    )
    return PassResult(deliveries, runs, finished=True)


# --- figures by lifecycle stage -------------------------------------------------------------------------
STAGE_FIGURES = ("bounced", "opened", "opened_any", "clicked", "engaged", "unsubscribed", "complained")


def stage_figures(tenant_id: int, campaign_ids: Sequence[int]) -> dict[tuple[int, str], dict[str, Any]]:
    """Per (campaign, the recipients' stage now): sent, every first, clicks, conversions and revenue, counted
    from the raw rows in three queries (sent deliveries, outcomes, conversions — each joined to contacts).

    Whole-campaign sets: hash joins (nested loops off), not a contact probe per message."""
    from segments.services import SET_BASED, query_settings

    ids = list(campaign_ids)
    out: dict[tuple[int, str], dict[str, Any]] = defaultdict(lambda: dict.fromkeys(DAY_METRICS, 0))
    if not ids:
        return {}
    runs = CampaignRun.objects.filter(tenant_id=tenant_id, campaign_id__in=ids).values("id")
    with query_settings(**SET_BASED):
        sent = (
            Delivery.objects.filter(tenant_id=tenant_id, run_id__in=Subquery(runs), status=Delivery.Status.SENT)
            .values_list("run__campaign_id", "contact__lifecycle_stage")
            .annotate(n=Count("id"))
            .order_by()
        )
        for campaign_id, stage, n in sent:
            out[(campaign_id, stage or "")]["sent"] += n
        firsts = {f"n_{m}": Count("id", filter=Q(**{f"{OUTCOME_DATES[m]}__isnull": False})) for m in STAGE_FIGURES}
        outcomes = (
            DeliveryOutcome.objects.filter(tenant_id=tenant_id, campaign_id__in=ids)
            .values("campaign_id", stage=F("contact__lifecycle_stage"))
            .annotate(**firsts, n_clicks=Sum("clicks"))
            .order_by()
        )
        for row in outcomes:
            figures = out[(row["campaign_id"], row["stage"] or "")]
            for metric in (*STAGE_FIGURES, "clicks"):
                figures[metric] += row[f"n_{metric}"] or 0
    contact_stage = Contact.objects.filter(tenant_id=tenant_id, pk=OuterRef("contact_id")).values("lifecycle_stage")
    conversions = (
        Conversion.objects.filter(tenant_id=tenant_id, campaign_id__in=ids)
        .annotate(stage=Subquery(contact_stage[:1]))
        .values("campaign_id", "stage")
        .annotate(n=Count("id"), revenue_sum=Sum("revenue"))
        .order_by()
    )
    for row in conversions:
        figures = out[(row["campaign_id"], row["stage"] or "")]
        figures["conversions"] = figures.get("conversions", 0) + row["n"]
        figures["revenue"] = figures.get("revenue", Decimal(0)) + (row["revenue_sum"] or Decimal(0))
    return dict(out)


def stage_stats_count(*, tenant: Tenant, campaign_id: int, now: dt.datetime | None = None) -> int:
    """Count a campaign's figures by the recipients' lifecycle stage again; return how many stages have some."""
    now = now or timezone.now()
    with transaction.atomic():
        figures = stage_figures(tenant.pk, [campaign_id])
        CampaignStageStats.objects.filter(tenant_id=tenant.pk, campaign_id=campaign_id).delete()
        CampaignStageStats.objects.bulk_create(
            CampaignStageStats(
                tenant_id=tenant.pk, campaign_id=campaign_id, stage=stage, computed_at=now,
                **{k: v for k, v in values.items() if k in STAGE_COLUMNS},
            )
            for (_, stage), values in figures.items()
        )  # fmt: skip
        StatsCursor.objects.filter(tenant_id=tenant.pk).update(
            stages_due=[pk for pk in _due_list(tenant) if pk != campaign_id]
        )
    return len(figures)


STAGE_COLUMNS = {*DAY_METRICS, "conversions", "revenue"}


def _due_list(tenant: Tenant) -> list[int]:
    due = StatsCursor.objects.filter(tenant_id=tenant.pk).values_list("stages_due", flat=True).first()
    return list(due or [])


def _next_stage_due(tenant: Tenant, now: dt.datetime) -> int | None:
    """The next campaign to count by stage: one whose figures changed (counted at most every
    ``STAGE_FRESH_FOR``), else the one counted longest ago if that is ``STAGE_MAX_AGE`` ago."""
    due = _due_list(tenant)
    if due:
        counted = dict(
            CampaignStageStats.objects.filter(tenant_id=tenant.pk, campaign_id__in=due)
            .values("campaign_id")
            .annotate(at=Max("computed_at"))
            .values_list("campaign_id", "at")
            .order_by()
        )
        ready = [pk for pk in due if pk not in counted or counted[pk] <= now - STAGE_FRESH_FOR]
        if ready:
            return min(ready, key=lambda pk: (pk in counted, counted.get(pk) or now, pk))
    return (
        CampaignStageStats.objects.filter(tenant_id=tenant.pk, computed_at__lte=now - STAGE_MAX_AGE)
        .order_by("computed_at", "campaign_id")
        .values_list("campaign_id", flat=True)
        .first()
    )


def stats_rebuild(*, tenant: Tenant, now: dt.datetime | None = None) -> PassResult:
    """Forget the tenant's message figures and count everything again, in one pass from the first id."""
    with transaction.atomic():
        StatsCursor.objects.get_or_create(tenant=tenant)
        StatsCursor.objects.select_for_update().filter(tenant=tenant).update(checkpoints=[], pending=None)
        StatsCursor.objects.filter(tenant=tenant).update(stages_due=[])
        for model in (DeliveryOutcome, RunTally, CampaignDayStats, CampaignStageStats):
            model.objects.filter(tenant=tenant).delete()
    result = stats_refresh(tenant=tenant, now=now)
    while not result.finished:  # another pass held the cursor: wait for it, then go on
        time.sleep(0.5)
        result = stats_refresh(tenant=tenant, now=now)
    return result


def tenants_to_refresh(*, now: dt.datetime | None = None) -> list[int]:
    """Platform: the tenants with new raw rows since the sweep's checkpoint, a run to settle, a pass to finish
    or figures by stage to count again."""
    now = now or timezone.now()
    with platform_access(), transaction.atomic():
        sweep = StatsSweep.objects.select_for_update().order_by("pk").first() or StatsSweep.objects.create()
        bounds = checkpoint_lower_bounds(sweep.checkpoints, now)
        last = _last_ids()
        tenants: set[int] = set()
        for source, model in (("event", MessageEvent), ("feedback", DeliveryFeedback), ("run", CampaignRun)):
            manager: Any = model.all_tenants
            tenants |= set(manager.filter(id__gt=bounds[source]).values_list("tenant_id", flat=True).distinct())
        tenants |= set(RunTally.all_tenants.filter(settled=False).values_list("tenant_id", flat=True).distinct())
        tenants |= set(StatsCursor.all_tenants.filter(pending__isnull=False).values_list("tenant_id", flat=True))
        # Figures by stage waiting to be counted again (after a change, or as they age).
        tenants |= set(StatsCursor.all_tenants.exclude(stages_due=[]).values_list("tenant_id", flat=True))
        tenants |= set(
            CampaignStageStats.all_tenants.filter(computed_at__lte=now - STAGE_MAX_AGE)
            .values_list("tenant_id", flat=True)
            .distinct()
        )
        sweep.checkpoints = checkpoints_add(sweep.checkpoints, {"at": now.isoformat(), **last}, now)
        sweep.swept_at = now
        sweep.save(update_fields=["checkpoints", "swept_at"])
    return sorted(tenants)
