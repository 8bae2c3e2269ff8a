"""Customer value and the lifecycle funnel: CLV by segment and lifecycle stage, stage counts and flows.

Everything here is read from three aggregates, taken together as a ``ValueSnapshot``:

- contacts grouped by lifecycle stage: contacts, buyers (at least one order), orders, revenue
  (``Contact.order_count`` and ``total_revenue``, which event ingest keeps current) and buyer
  tenure (days since first seen, at least ``MIN_TENURE_DAYS``), plus the churn cohort below;
- the same per segment, over its materialised members;
- lifecycle transitions per tenant-local day, from stage and to stage, for the last 52 weeks.

Figures (docs/analytics.md, "Customer value and lifecycle"):

- historic value: revenue per contact, revenue per buyer, buyer share, average order value;
- predicted CLV per buyer = average order value × purchases per buyer per year × expected
  lifespan in years, where purchases per year = orders / buyer-years (each buyer counts the
  years since first seen, at least 30 days) — so AOV × frequency is the revenue per buyer-year;
- expected lifespan = 1 / yearly churn, churn = the share of buyers first seen at least a year
  ago who have not ordered in the last year, capped at ``MAX_LIFESPAN_YEARS``; with fewer than
  ``MIN_CHURN_COHORT`` such buyers the tenant has no estimate yet and ``DEFAULT_LIFESPAN_YEARS``
  applies;
- the funnel: contacts at each stage now, contacts at that stage or a later one ("reached"), and
  conversion to the next stage (reached the next / reached this one); in a time range, for each
  stage: contacts there at the start (now − entered + left), entered, moved up, and the share
  of those there during the range who moved up.

At a million contacts each aggregate reads most of a table (≈ 0.3–1 s each under row-level
security), so the snapshot is cached (Django's cache, per database and tenant) and recomputed when
it is older than ``SNAPSHOT_FRESH_FOR``: one request recomputes while concurrent ones keep the
previous snapshot; ``value_snapshot_refresh`` is there for a periodic task that keeps big tenants
warm. Pages show the snapshot's time.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Count, DateTimeField, Expression, F, FloatField, Q, Sum, Value
from django.db.models.functions import TruncDate
from django.db.models.sql.compiler import SQLCompiler
from django.utils import timezone

from contacts.models import Contact, LifecycleStage, LifecycleTransition
from segments.models import Segment, SegmentMember
from tenants.models import Tenant

# --- the stated constants -----------------------------------------------------------------------
STAGES: tuple[str, ...] = tuple(LifecycleStage.values)  # funnel order, first to last
STAGE_LABELS: dict[str, str] = dict(LifecycleStage.choices)
STAGE_INDEX: dict[str, int] = {stage: index for index, stage in enumerate(STAGES)}
NEW_CONTACT_LABEL = "New contact"  # a transition with no from-stage: the contact's first stage

DAYS_PER_YEAR = Decimal("365.25")
MIN_TENURE_DAYS = 30  # a buyer first seen yesterday does not buy 365 times a year
CHURN_AFTER_DAYS = 365  # a buyer with no order for this long counts as churned
MIN_CHURN_COHORT = 50  # buyers first seen at least CHURN_AFTER_DAYS ago needed for an estimate
DEFAULT_LIFESPAN_YEARS = Decimal("3")
MAX_LIFESPAN_YEARS = Decimal("10")

FLOW_WEEKS_KEPT = 52
SNAPSHOT_FRESH_FOR = dt.timedelta(minutes=10)
SNAPSHOT_KEPT_FOR = dt.timedelta(hours=24)
SNAPSHOT_LOCK_FOR = dt.timedelta(minutes=2)
CACHE_VERSION = 1
# A tenant whose figures were looked at within this long is kept warm by the periodic refresh.
VIEWED_KEPT_FOR = dt.timedelta(hours=2)
CENT = Decimal("0.01")


@dataclass(frozen=True)
class FlowRange:
    code: str
    label: str
    bucket: str  # "day" or "week" (weeks start on Monday, tenant time)
    periods: int


RANGES: dict[str, FlowRange] = {
    r.code: r
    for r in (
        FlowRange("30d", "Last 30 days, by day", "day", 30),
        FlowRange("12w", "Last 12 weeks, by week", "week", 12),
        FlowRange("52w", "Last 52 weeks, by week", "week", FLOW_WEEKS_KEPT),
    )
}
DEFAULT_RANGE = "12w"


# --- the snapshot: raw aggregates, cached ---------------------------------------------------------
@dataclass(frozen=True)
class Totals:
    """What a group of contacts adds up to (a stage, a segment, everyone)."""

    contacts: int = 0
    buyers: int = 0
    orders: int = 0
    revenue: Decimal = Decimal("0")
    # Σ over buyers of max(days since first seen, MIN_TENURE_DAYS).
    buyer_days: float = 0.0
    # Buyers first seen at least CHURN_AFTER_DAYS ago, and those of them with no order since.
    churn_cohort: int = 0
    churned: int = 0

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            self.contacts + other.contacts,
            self.buyers + other.buyers,
            self.orders + other.orders,
            self.revenue + other.revenue,
            self.buyer_days + other.buyer_days,
            self.churn_cohort + other.churn_cohort,
            self.churned + other.churned,
        )


@dataclass(frozen=True)
class ValueSnapshot:
    tenant_id: int
    computed_at: dt.datetime
    today: dt.date  # the tenant's local date at computed_at
    stages: dict[str, Totals]
    segments: dict[int, Totals]  # every segment that existed, members or not
    # (tenant-local day, from stage or "", to stage) -> transitions, from FLOW_WEEKS_KEPT weeks back
    flows: dict[tuple[dt.date, str, str], int]

    @property
    def everyone(self) -> Totals:
        return sum(self.stages.values(), Totals())


class DaysSince(Expression):
    """Fractional days from a datetime column to a fixed moment (PostgreSQL and SQLite)."""

    output_field = FloatField()

    def __init__(self, column: Any, moment: dt.datetime) -> None:
        super().__init__(output_field=FloatField())
        self.column = column
        self.moment = Value(moment, output_field=DateTimeField())

    def get_source_expressions(self) -> list[Any]:
        return [self.column, self.moment]

    def set_source_expressions(self, exprs: Any) -> None:
        self.column, self.moment = exprs

    def as_sql(self, compiler: SQLCompiler, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        column, column_params = compiler.compile(self.column)
        moment, moment_params = compiler.compile(self.moment)
        params = [*moment_params, *column_params]
        if connection.vendor == "postgresql":
            return f"(EXTRACT(EPOCH FROM ({moment} - {column})) / 86400.0)::double precision", params
        if connection.vendor == "sqlite":
            return f"(julianday({moment}) - julianday({column}))", params
        raise NotImplementedError(f"DaysSince is not available on {connection.vendor}.")


def _value_aggregates(prefix: str, at: dt.datetime) -> dict[str, Any]:
    """Aggregates over contacts (``prefix`` "" on Contact, "contact__" through a member)."""
    buyer = Q(**{f"{prefix}order_count__gt": 0})
    seasoned = buyer & Q(**{f"{prefix}first_seen_at__lte": at - dt.timedelta(days=MIN_TENURE_DAYS)})
    year_ago = at - dt.timedelta(days=CHURN_AFTER_DAYS)
    cohort = buyer & Q(**{f"{prefix}first_seen_at__lte": year_ago})
    lapsed = Q(**{f"{prefix}last_order_at__lt": year_ago}) | Q(**{f"{prefix}last_order_at__isnull": True})
    return {
        "contacts": Count("pk"),
        "buyers": Count("pk", filter=buyer),
        "orders": Sum(f"{prefix}order_count"),
        "revenue": Sum(f"{prefix}total_revenue"),
        "seasoned": Count("pk", filter=seasoned),
        "seasoned_days": Sum(DaysSince(F(f"{prefix}first_seen_at"), at), filter=seasoned),
        "churn_cohort": Count("pk", filter=cohort),
        "churned": Count("pk", filter=cohort & lapsed),
    }


def _totals(row: Mapping[str, Any]) -> Totals:
    buyers = row["buyers"] or 0
    seasoned = row["seasoned"] or 0
    return Totals(
        contacts=row["contacts"] or 0,
        buyers=buyers,
        orders=row["orders"] or 0,
        revenue=Decimal(row["revenue"] or 0).quantize(CENT),
        buyer_days=float(row["seasoned_days"] or 0.0) + MIN_TENURE_DAYS * (buyers - seasoned),
        churn_cohort=row["churn_cohort"] or 0,
        churned=row["churned"] or 0,
    )


def _tenant_zone(tenant: Tenant) -> ZoneInfo:
    return ZoneInfo(tenant.time_zone or "UTC")


def flows_since(today: dt.date) -> dt.date:
    """The first tenant-local day a snapshot keeps flows for: the Monday FLOW_WEEKS_KEPT - 1 weeks back."""
    return today - dt.timedelta(days=today.weekday() + 7 * (FLOW_WEEKS_KEPT - 1))


def value_snapshot_compute(*, tenant: Tenant, at: dt.datetime | None = None) -> ValueSnapshot:
    """Add up the tenant's contacts, segment members and recent lifecycle transitions as of ``at``."""
    at = at or timezone.now()
    with _jit_off():
        return _compute(tenant, at)


@contextmanager
def _jit_off() -> Iterator[None]:
    """Turn PostgreSQL's JIT off for the block: it compiled for ~90 ms before these scans, for nothing.

    Transaction-local, restored after; no savepoints (segments' ``query_settings`` costs five more
    statements per page). After an error the transaction rolls back and takes the setting with it.
    """
    if connection.vendor != "postgresql":
        yield
        return
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('jit'), set_config('jit', 'off', true)")
        (previous, _) = cursor.fetchone()
        yield
        cursor.execute("SELECT set_config('jit', %s, true)", [previous])


def _compute(tenant: Tenant, at: dt.datetime) -> ValueSnapshot:
    zone = _tenant_zone(tenant)
    today = at.astimezone(zone).date()
    contacts = Contact.objects.filter(tenant_id=tenant.pk)
    stages = {
        row["lifecycle_stage"]: _totals(row)
        for row in contacts.order_by().values("lifecycle_stage").annotate(**_value_aggregates("", at))
    }
    members = SegmentMember.objects.filter(tenant_id=tenant.pk, contact__tenant_id=tenant.pk)
    by_segment = {
        row["segment_id"]: _totals(row)
        for row in members.order_by().values("segment_id").annotate(**_value_aggregates("contact__", at))
    }
    segment_ids = Segment.objects.filter(tenant_id=tenant.pk).values_list("pk", flat=True)
    segments = {pk: by_segment.get(pk, Totals()) for pk in segment_ids}
    start = dt.datetime.combine(flows_since(today), dt.time.min, tzinfo=zone)
    transitions = (
        LifecycleTransition.objects.filter(tenant_id=tenant.pk, occurred_at__gte=start, occurred_at__lte=at)
        .order_by()
        .annotate(day=TruncDate("occurred_at", tzinfo=zone))
        .values("day", "from_stage", "to_stage")
        .annotate(n=Count("pk"))
    )
    flows = {(row["day"], row["from_stage"], row["to_stage"]): row["n"] for row in transitions}
    return ValueSnapshot(tenant.pk, at, today, stages, segments, flows)


def _cache_key(tenant_id: int) -> str:
    # The database's name too: deployments (and test processes) that share a cache number tenants alike.
    database = connection.settings_dict["NAME"]
    return f"analytics:value:v{CACHE_VERSION}:{database}:{tenant_id}"


def value_snapshot(*, tenant: Tenant, now: dt.datetime | None = None) -> ValueSnapshot:
    """The tenant's cached snapshot; recomputed here when missing, or when stale and no one else is at it."""
    now = now or timezone.now()
    key = _cache_key(tenant.pk)
    # Looked at lately: the periodic refresh keeps this tenant's figures warm (tenants_viewed_lately).
    cache.set(f"{key}:viewed", 1, timeout=VIEWED_KEPT_FOR.total_seconds())
    cached: ValueSnapshot | None = cache.get(key)
    if cached is not None and now - cached.computed_at < SNAPSHOT_FRESH_FOR:
        return cached
    # Stale: one request recomputes, the others keep showing the previous figures meanwhile.
    if cached is not None and not cache.add(f"{key}:lock", 1, timeout=SNAPSHOT_LOCK_FOR.total_seconds()):
        return cached
    snapshot = value_snapshot_refresh(tenant=tenant, at=now)
    cache.delete(f"{key}:lock")
    return snapshot


def value_snapshot_refresh(*, tenant: Tenant, at: dt.datetime | None = None) -> ValueSnapshot:
    """Compute the snapshot and cache it: what a periodic task would call to keep big tenants' pages warm."""
    snapshot = value_snapshot_compute(tenant=tenant, at=at)
    cache.set(_cache_key(tenant.pk), snapshot, timeout=SNAPSHOT_KEPT_FOR.total_seconds())
    return snapshot


def tenants_viewed_lately(tenant_ids: list[int]) -> list[int]:
    """Of ``tenant_ids``, those whose value figures someone looked at within ``VIEWED_KEPT_FOR`` (one cache read)."""
    keys = {f"{_cache_key(pk)}:viewed": pk for pk in tenant_ids}
    return sorted(keys[key] for key in cache.get_many(list(keys)))


def value_snapshot_forget(*, tenant_id: int) -> None:
    """Drop the cached snapshot, so the next read recomputes (after a bulk import, in tests)."""
    cache.delete(_cache_key(tenant_id))


# --- customer lifetime value -----------------------------------------------------------------------
@dataclass(frozen=True)
class Lifespan:
    years: Decimal
    cohort: int  # buyers first seen at least a year ago
    churned: int  # of them, no order within the last year
    estimated: bool  # False: too few buyers that old, DEFAULT_LIFESPAN_YEARS applies

    @property
    def churn_rate(self) -> float | None:
        return self.churned / self.cohort if self.estimated and self.cohort else None

    @property
    def churn_rate_pct(self) -> float | None:
        return _pct(self.churn_rate)

    @property
    def explanation(self) -> str:
        if not self.estimated:
            return (
                f"{DEFAULT_LIFESPAN_YEARS} years (default: fewer than {MIN_CHURN_COHORT} buyers were first seen "
                f"at least a year ago, {self.cohort} so far)"
            )
        rate = self.churn_rate or 0.0
        return (
            f"{self.years:.1f} years = 1 / yearly churn {rate:.1%} ({self.churned} of {self.cohort} buyers first seen "
            f"a year ago or earlier have not ordered in the last year; at most {MAX_LIFESPAN_YEARS} years)"
        )


def lifespan_estimate(totals: Totals) -> Lifespan:
    """Expected customer lifespan from the tenant's churn (or the default when too few buyers are old enough)."""
    if totals.churn_cohort < MIN_CHURN_COHORT:
        return Lifespan(DEFAULT_LIFESPAN_YEARS, totals.churn_cohort, totals.churned, estimated=False)
    if totals.churned == 0:
        return Lifespan(MAX_LIFESPAN_YEARS, totals.churn_cohort, 0, estimated=True)
    years = min(Decimal(totals.churn_cohort) / Decimal(totals.churned), MAX_LIFESPAN_YEARS)
    return Lifespan(years, totals.churn_cohort, totals.churned, estimated=True)


@dataclass(frozen=True)
class ValueRow:
    """The value of one group of contacts: historic and predicted."""

    key: str  # the stage code, the segment id, or "" for every contact
    label: str
    contacts: int
    buyers: int
    orders: int
    revenue: Decimal
    buyer_share: float | None  # buyers / contacts
    revenue_per_contact: Decimal | None
    revenue_per_buyer: Decimal | None
    average_order_value: Decimal | None
    purchases_per_year: Decimal | None  # per buyer
    predicted_clv: Decimal | None  # per buyer

    @property
    def buyer_share_pct(self) -> float | None:
        return _pct(self.buyer_share)


def _pct(share: float | None) -> float | None:
    return None if share is None else share * 100


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def value_row(key: str, label: str, totals: Totals, lifespan: Lifespan) -> ValueRow:
    """Historic and predicted value of a group (``None`` where there is nothing to divide by)."""
    has_buyers = totals.buyers > 0 and totals.orders > 0
    buyer_years = Decimal(repr(totals.buyer_days)) / DAYS_PER_YEAR if has_buyers else Decimal(0)
    frequency = Decimal(totals.orders) / buyer_years if buyer_years else None
    aov = totals.revenue / totals.orders if has_buyers else None
    return ValueRow(
        key=key,
        label=label,
        contacts=totals.contacts,
        buyers=totals.buyers,
        orders=totals.orders,
        revenue=_money(totals.revenue),
        buyer_share=round(totals.buyers / totals.contacts, 4) if totals.contacts else None,
        revenue_per_contact=_money(totals.revenue / totals.contacts) if totals.contacts else None,
        revenue_per_buyer=_money(totals.revenue / totals.buyers) if totals.buyers else None,
        average_order_value=_money(aov) if aov is not None else None,
        purchases_per_year=frequency.quantize(CENT, rounding=ROUND_HALF_UP) if frequency is not None else None,
        predicted_clv=_money(aov * frequency * lifespan.years) if aov is not None and frequency is not None else None,
    )


@dataclass(frozen=True)
class ClvTable:
    by: str  # "stage" or "segment"
    rows: list[ValueRow]
    total: ValueRow
    lifespan: Lifespan
    as_of: dt.datetime


CLV_BY = ("stage", "segment")


def clv_table(snapshot: ValueSnapshot, *, by: str, segment_names: Mapping[int, str] | None = None) -> ClvTable:
    """CLV per lifecycle stage (funnel order) or per segment (most revenue first), with everyone's total."""
    everyone = snapshot.everyone
    lifespan = lifespan_estimate(everyone)
    if by == "stage":
        rows = [value_row(s, STAGE_LABELS[s], snapshot.stages.get(s, Totals()), lifespan) for s in STAGES]
    elif by == "segment":
        names = segment_names or {}
        rows = [
            value_row(str(pk), names[pk], totals, lifespan)
            for pk, totals in snapshot.segments.items()
            if pk in names  # deleted since the snapshot
        ]
        rows.sort(key=lambda row: (-row.revenue, row.label.lower(), row.key))
    else:
        raise ValueError(f"by must be one of {', '.join(CLV_BY)}")
    return ClvTable(by, rows, value_row("", "All contacts", everyone, lifespan), lifespan, snapshot.computed_at)


def segment_names(*, tenant: Tenant) -> dict[int, str]:
    return dict(Segment.objects.filter(tenant_id=tenant.pk).values_list("pk", "name"))


# --- the lifecycle funnel and flows ----------------------------------------------------------------
def period_starts(today: dt.date, flow_range: FlowRange) -> list[dt.date]:
    """The first day of each period of the range, oldest first; the last one holds ``today``."""
    if flow_range.bucket == "day":
        return [today - dt.timedelta(days=n) for n in range(flow_range.periods - 1, -1, -1)]
    monday = today - dt.timedelta(days=today.weekday())
    return [monday - dt.timedelta(weeks=n) for n in range(flow_range.periods - 1, -1, -1)]


def _period_of(day: dt.date, bucket: str) -> dt.date:
    return day if bucket == "day" else day - dt.timedelta(days=day.weekday())


def stage_label(stage: str) -> str:
    return STAGE_LABELS.get(stage, stage) if stage else NEW_CONTACT_LABEL


@dataclass(frozen=True)
class FlowPair:
    from_stage: str  # "" for a contact's first stage
    to_stage: str

    @property
    def label(self) -> str:
        return f"{stage_label(self.from_stage)} → {stage_label(self.to_stage)}"

    @property
    def is_move(self) -> bool:
        """A move between stages (not a new contact's first stage)."""
        return bool(self.from_stage)


@dataclass(frozen=True)
class FlowRow:
    period_start: dt.date
    counts: list[int]  # one per pair, in FlowTable.pairs order
    total: int


@dataclass(frozen=True)
class FlowTable:
    range: FlowRange
    pairs: list[FlowPair]
    rows: list[FlowRow]
    pair_totals: list[int]
    as_of: dt.datetime

    @property
    def total(self) -> int:
        return sum(self.pair_totals)


def flow_table(snapshot: ValueSnapshot, *, range_code: str = DEFAULT_RANGE) -> FlowTable:
    """How many contacts moved from one stage to another in each day or week of the range."""
    flow_range = RANGES[range_code]
    starts = period_starts(snapshot.today, flow_range)
    counts: dict[tuple[dt.date, FlowPair], int] = defaultdict(int)
    for (day, from_stage, to_stage), n in snapshot.flows.items():
        if day >= starts[0]:
            counts[(_period_of(day, flow_range.bucket), FlowPair(from_stage, to_stage))] += n
    pairs = sorted(
        {pair for _, pair in counts},
        key=lambda p: (STAGE_INDEX.get(p.from_stage, -1), STAGE_INDEX.get(p.to_stage, len(STAGES)), p.to_stage),
    )
    rows = []
    for start in starts:
        row = [counts.get((start, pair), 0) for pair in pairs]
        rows.append(FlowRow(start, row, sum(row)))
    pair_totals = [sum(row.counts[i] for row in rows) for i in range(len(pairs))]
    return FlowTable(flow_range, pairs, rows, pair_totals, snapshot.computed_at)


@dataclass(frozen=True)
class FunnelStage:
    stage: str
    label: str
    contacts: int  # at this stage now
    reached: int  # at this stage or a later one now
    conversion_to_next: float | None  # reached the next stage / reached this one
    # Within the range:
    at_start: int  # at this stage when the range began (now − entered + left)
    entered: int
    left: int
    moved_up: int  # left for a later stage
    range_conversion: float | None  # moved up / (at the start + entered)

    @property
    def conversion_to_next_pct(self) -> float | None:
        return _pct(self.conversion_to_next)

    @property
    def range_conversion_pct(self) -> float | None:
        return _pct(self.range_conversion)


@dataclass(frozen=True)
class Funnel:
    range: FlowRange
    stages: list[FunnelStage]
    total_contacts: int
    as_of: dt.datetime


def funnel(snapshot: ValueSnapshot, *, range_code: str = DEFAULT_RANGE) -> Funnel:
    """Contacts per stage now, the share reaching each next stage, and the movement within the range."""
    flow_range = RANGES[range_code]
    first_day = period_starts(snapshot.today, flow_range)[0]
    entered: dict[str, int] = defaultdict(int)
    left: dict[str, int] = defaultdict(int)
    moved_up: dict[str, int] = defaultdict(int)
    for (day, from_stage, to_stage), n in snapshot.flows.items():
        if day < first_day:
            continue
        entered[to_stage] += n
        if from_stage:
            left[from_stage] += n
            if STAGE_INDEX.get(to_stage, -1) > STAGE_INDEX.get(from_stage, len(STAGES)):
                moved_up[from_stage] += n
    now = {stage: snapshot.stages.get(stage, Totals()).contacts for stage in STAGES}
    reached = {stage: sum(now[s] for s in STAGES[i:]) for i, stage in enumerate(STAGES)}
    stages = []
    for i, stage in enumerate(STAGES):
        following = reached[STAGES[i + 1]] if i + 1 < len(STAGES) else None
        at_start = max(0, now[stage] - entered[stage] + left[stage])
        pool = at_start + entered[stage]
        stages.append(
            FunnelStage(
                stage=stage,
                label=STAGE_LABELS[stage],
                contacts=now[stage],
                reached=reached[stage],
                conversion_to_next=_ratio(following, reached[stage]) if following is not None else None,
                at_start=at_start,
                entered=entered[stage],
                left=left[stage],
                moved_up=moved_up[stage],
                range_conversion=_ratio(moved_up[stage], pool) if i + 1 < len(STAGES) else None,
            )
        )
    return Funnel(flow_range, stages, sum(now.values()), snapshot.computed_at)


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


# --- charts (Chart.js configurations for static/js/charts.js) ------------------------------------
def _bar_options(*, money: bool = False, stacked: bool = False, horizontal: bool = False) -> dict[str, Any]:
    value_axis, category_axis = ("x", "y") if horizontal else ("y", "x")
    values: dict[str, Any] = {
        "beginAtZero": True,
        "stacked": stacked,
        "title": {"display": True, "text": "Value per buyer" if money else "Contacts"},
    }
    if not money:
        values["ticks"] = {"precision": 0}  # whole contacts
    options: dict[str, Any] = {
        "plugins": {"legend": {"position": "bottom"}},
        "scales": {value_axis: values, category_axis: {"stacked": stacked}},
    }
    if horizontal:
        options["indexAxis"] = "y"
    return options


def funnel_chart(funnel_: Funnel) -> dict[str, Any]:
    return {
        "type": "bar",
        "data": {
            "labels": [s.label for s in funnel_.stages],
            "datasets": [
                {"label": "Reached this stage or later", "data": [s.reached for s in funnel_.stages]},
                {"label": "At this stage now", "data": [s.contacts for s in funnel_.stages]},
            ],
        },
        "options": _bar_options(horizontal=True),
    }


def flow_chart(table: FlowTable) -> dict[str, Any]:
    """Moves between stages per period, stacked (a new contact's first stage is left to the table)."""
    moves = [(i, pair) for i, pair in enumerate(table.pairs) if pair.is_move]
    return {
        "type": "bar",
        "data": {
            "labels": [row.period_start.isoformat() for row in table.rows],
            "datasets": [{"label": pair.label, "data": [row.counts[i] for row in table.rows]} for i, pair in moves],
        },
        "options": _bar_options(stacked=True),
    }


def _money_float(value: Decimal | None) -> float:
    return float(value) if value is not None else 0.0


def clv_chart(table: ClvTable, *, limit: int | None = None) -> dict[str, Any]:
    rows = table.rows[:limit] if limit else table.rows
    return {
        "type": "bar",
        "data": {
            "labels": [row.label for row in rows],
            "datasets": [
                {"label": "Revenue per buyer (historic)", "data": [_money_float(r.revenue_per_buyer) for r in rows]},
                {"label": "Predicted CLV per buyer", "data": [_money_float(r.predicted_clv) for r in rows]},
                {"label": "Revenue per contact", "data": [_money_float(r.revenue_per_contact) for r in rows]},
            ],
        },
        "options": _bar_options(money=True),
    }


# --- for the dashboard -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ValueSummary:
    funnel: Funnel
    clv: ClvTable
    funnel_chart: dict[str, Any]
    clv_chart: dict[str, Any]


def value_summary(tenant: Tenant, *, compute: bool = True) -> dict[str, Any]:
    """Context for templates/analytics/_value_summary.html: a compact funnel and CLV by stage.

    With ``compute`` False (the dashboard) and a cache shared with the workers
    (``VALUE_SUMMARY_FROM_WORKER``), a tenant whose figures are not cached gets ``None`` and a worker
    computes them, so the page never pays the second it costs at a million contacts.
    """
    if not compute and settings.VALUE_SUMMARY_FROM_WORKER and cache.get(_cache_key(tenant.pk)) is None:
        cache.set(f"{_cache_key(tenant.pk)}:viewed", 1, timeout=VIEWED_KEPT_FOR.total_seconds())
        from analytics.tasks import value_refresh

        tenant_id = tenant.pk
        transaction.on_commit(lambda: value_refresh.delay(tenant_id))
        return {"value_summary": None}
    snapshot = value_snapshot(tenant=tenant)
    funnel_ = funnel(snapshot)
    clv = clv_table(snapshot, by="stage")
    return {"value_summary": ValueSummary(funnel_, clv, funnel_chart(funnel_), clv_chart(clv))}
