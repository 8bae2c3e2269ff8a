"""Message KPIs: per campaign, variant, target segment, lifecycle stage, channel, journey and step; over time.

Counts come from the daily figures kept by analytics/rollup.py (``CampaignDayStats``: sent, and each
delivery's firsts dated by the day they happened) and conversions straight from ``Conversion``
(indexed by campaign and by time). Figures by lifecycle stage use each contact's *current* stage, so
they are read live: the campaign's sent deliveries, outcomes and conversions joined to contacts.

Definitions (docs/analytics.md has the reasons):

- sent: deliveries sent; bounced: sent deliveries with a hard or soft bounce; delivered = sent − bounced;
- opened: deliveries a person opened (machine opens — privacy proxies, scanners — left out); opened_any:
  deliveries opened by anyone, machines too; clicked: deliveries a person clicked; clicks: every human click;
- engaged: deliveries a person opened or clicked; unsubscribed: deliveries that led to an unsubscribe (the
  link, the provider's list-unsubscribe, an SMS STOP); complained: deliveries marked as spam;
- conversions and revenue: goal events credited to the campaign (last touch, analytics/services.py);
- open rate, CTR, conversion, unsubscribe, complaint and engagement rates are per delivered message;
  click-to-open = clicked / opened; bounce rate = bounced / sent;
- cost: the campaign's cost, shared among its rows (variants, stages, days) by their share of its sent
  messages; cost per conversion = cost / conversions.

A rate with nothing to divide by is None (shown as "—").
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from django.db.models import Count, IntegerField, Sum, Value
from django.db.models.functions import Coalesce, TruncDate

from analytics.models import CampaignDayStats, CampaignStageStats, Conversion, StatsCursor
from analytics.rollup import DAY_METRICS, STAGE_COLUMNS, stage_figures
from analytics.stats import two_proportion_z_test, wilson_interval
from campaigns.models import Campaign, CampaignChannel, Variant
from contacts.models import LifecycleStage
from journeys.models import Journey, JourneyVersion, Step
from segments.models import Segment
from tenants.models import Tenant

K = TypeVar("K", bound=Hashable)
PERIODS = (7, 30, 90, 365)
DEFAULT_PERIOD_DAYS = 30
TOP_SEGMENTS = 10
# A segment needs this many delivered messages in the period to be ranked (1 of 1 is not 100 %).
TOP_SEGMENT_MIN_DELIVERED = 50
UNKNOWN_STAGE = "unknown"
STAGE_LABELS = {**dict(LifecycleStage.choices), UNKNOWN_STAGE: "Unknown (contact deleted)"}


def _rate(part: int | Decimal, whole: int | Decimal) -> float | None:
    return float(part) / float(whole) if whole else None


@dataclass(frozen=True)
class Kpis:
    """The figures of a set of messages (see the module docstring for each one's definition)."""

    sent: int = 0
    bounced: int = 0
    opened: int = 0
    opened_any: int = 0
    clicked: int = 0
    clicks: int = 0
    engaged: int = 0
    unsubscribed: int = 0
    complained: int = 0
    conversions: int = 0
    revenue: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)

    def __add__(self, other: Kpis) -> Kpis:
        return Kpis(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    @property
    def delivered(self) -> int:
        return self.sent - self.bounced

    @property
    def bounce_rate(self) -> float | None:
        return _rate(self.bounced, self.sent)

    @property
    def open_rate(self) -> float | None:
        return _rate(self.opened, self.delivered)

    @property
    def open_rate_any(self) -> float | None:
        return _rate(self.opened_any, self.delivered)

    @property
    def ctr(self) -> float | None:
        return _rate(self.clicked, self.delivered)

    @property
    def click_to_open(self) -> float | None:
        return _rate(self.clicked, self.opened)

    @property
    def conversion_rate(self) -> float | None:
        return _rate(self.conversions, self.delivered)

    @property
    def cost_per_conversion(self) -> Decimal | None:
        return (self.cost / self.conversions).quantize(Decimal("0.01")) if self.conversions else None

    @property
    def revenue_per_delivered(self) -> Decimal | None:
        return (self.revenue / self.delivered).quantize(Decimal("0.0001")) if self.delivered else None

    @property
    def unsubscribe_rate(self) -> float | None:
        return _rate(self.unsubscribed, self.delivered)

    @property
    def complaint_rate(self) -> float | None:
        return _rate(self.complained, self.delivered)

    @property
    def engagement_rate(self) -> float | None:
        return _rate(self.engaged, self.delivered)

    def as_dict(self) -> dict[str, Any]:
        """Every count, sum and rate by name (the API's and the CSV's columns)."""
        return {name: getattr(self, name) for name in KPI_NAMES}


@dataclass(frozen=True)
class KpiColumn:
    name: str
    label: str
    kind: str  # count, rate, money
    help: str


KPI_COLUMNS: tuple[KpiColumn, ...] = (
    KpiColumn("sent", "Sent", "count", "Messages sent."),
    KpiColumn("delivered", "Delivered", "count", "Sent minus bounced."),
    KpiColumn("bounced", "Bounced", "count", "Sent messages that bounced (hard or soft)."),
    KpiColumn("bounce_rate", "Bounce rate", "rate", "Bounced / sent."),
    KpiColumn("opened", "Unique opens", "count", "Messages a person opened (machine opens left out)."),
    KpiColumn("open_rate", "Open rate", "rate", "Unique human opens / delivered."),
    KpiColumn("opened_any", "Opens incl. machines", "count", "Messages opened by anyone, privacy proxies too."),
    KpiColumn("open_rate_any", "Open rate incl. machines", "rate", "Opens incl. machines / delivered."),
    KpiColumn("clicked", "Unique clicks", "count", "Messages a person clicked."),
    KpiColumn("clicks", "Total clicks", "count", "Every human click."),
    KpiColumn("ctr", "CTR", "rate", "Unique clicks / delivered."),
    KpiColumn("click_to_open", "Click-to-open", "rate", "Unique clicks / unique opens."),
    KpiColumn("engaged", "Engaged", "count", "Messages a person opened or clicked."),
    KpiColumn("engagement_rate", "Engagement rate", "rate", "Engaged / delivered."),
    KpiColumn("conversions", "Conversions", "count", "Goal events credited to the messages (last touch)."),
    KpiColumn("conversion_rate", "Conversion rate", "rate", "Conversions / delivered."),
    KpiColumn("revenue", "Revenue", "money", "Revenue of the conversions."),
    KpiColumn("cost", "Cost", "money", "The campaign's cost, shared by sent messages."),
    KpiColumn("cost_per_conversion", "Cost per conversion", "money", "Cost / conversions."),
    KpiColumn("unsubscribed", "Unsubscribes", "count", "Messages that led to an unsubscribe."),
    KpiColumn("unsubscribe_rate", "Unsubscribe rate", "rate", "Unsubscribes / delivered."),
    KpiColumn("complained", "Complaints", "count", "Messages marked as spam."),
    KpiColumn("complaint_rate", "Complaint rate", "rate", "Complaints / delivered."),
)
KPI_NAMES = tuple(c.name for c in KPI_COLUMNS)
# The columns of the tables on the pages (the CSV exports have every one).
TABLE_COLUMNS = tuple(
    c for c in KPI_COLUMNS if c.name in {
        "sent", "delivered", "opened", "open_rate", "clicked", "ctr", "click_to_open", "conversions",
        "conversion_rate", "revenue", "cost_per_conversion", "unsubscribe_rate", "complaint_rate", "engagement_rate",
    }
)  # fmt: skip


# --- periods ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Period:
    """Days ``start`` to ``end`` (both included) in the tenant's time zone."""

    start: dt.date
    end: dt.date

    @classmethod
    def last_days(cls, days: int, *, tenant: Tenant, now: dt.datetime | None = None) -> Period:
        today = (now or dt.datetime.now(dt.UTC)).astimezone(ZoneInfo(tenant.time_zone)).date()
        return cls(today - dt.timedelta(days=days - 1), today)

    @property
    def days(self) -> list[dt.date]:
        return [self.start + dt.timedelta(days=i) for i in range((self.end - self.start).days + 1)]

    def bounds(self, zone: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
        """The first moment of ``start`` and of the day after ``end``."""
        start = dt.datetime.combine(self.start, dt.time(), tzinfo=zone)
        return start, dt.datetime.combine(self.end + dt.timedelta(days=1), dt.time(), tzinfo=zone)


# --- the facts: figures per campaign and variant (and day) -----------------------------------------
FactKey = tuple[int, int, dt.date | None]  # campaign, variant (0: none), day (None: not by day)


def _facts(
    tenant: Tenant,
    *,
    campaign_ids: Sequence[int] | None = None,
    period: Period | None = None,
    by_day: bool = False,
    costs: CampaignCosts | None = None,
) -> dict[FactKey, Kpis]:
    """Kpis per (campaign, variant[, day]), cost shared by sent messages; two grouped queries and the costs."""
    zone = ZoneInfo(tenant.time_zone)
    stats = CampaignDayStats.objects.filter(tenant_id=tenant.pk)
    conversions = Conversion.objects.filter(tenant_id=tenant.pk)
    if campaign_ids is not None:
        stats = stats.filter(campaign_id__in=list(campaign_ids))
        conversions = conversions.filter(campaign_id__in=list(campaign_ids))
    if period is not None:
        start, end = period.bounds(zone)
        stats = stats.filter(day__gte=period.start, day__lte=period.end)
        conversions = conversions.filter(occurred_at__gte=start, occurred_at__lt=end)
    group = ["campaign_id", "variant_id", *(["day"] if by_day else [])]
    facts: dict[FactKey, Kpis] = defaultdict(Kpis)
    for row in stats.values(*group).annotate(**{f"n_{m}": Sum(m) for m in DAY_METRICS}).order_by():
        key = (row["campaign_id"], row["variant_id"], row.get("day"))
        counts: dict[str, Any] = {m: row[f"n_{m}"] or 0 for m in DAY_METRICS}
        facts[key] = Kpis(**counts)
    conversions = conversions.annotate(variant=Coalesce("variant_id", Value(0), output_field=IntegerField()))
    if by_day:
        conversions = conversions.annotate(day=TruncDate("occurred_at", tzinfo=zone))
    for row in (
        conversions.values("campaign_id", "variant", *(["day"] if by_day else []))
        .annotate(n=Count("id"), revenue_sum=Sum("revenue"))
        .order_by()
    ):
        key = (row["campaign_id"], row["variant"], row.get("day"))
        facts[key] = replace(facts[key], conversions=row["n"], revenue=row["revenue_sum"] or Decimal(0))
    return _with_costs(tenant, facts, costs)


CampaignCosts = dict[int, tuple[Decimal, int]]  # campaign id → (cost, messages sent in all)


def _campaign_costs(tenant: Tenant, campaign_ids: Iterable[int]) -> CampaignCosts:
    """Each campaign with a cost: the cost and every message it sent (what the cost is shared by)."""
    costs = dict(
        Campaign.objects.filter(tenant_id=tenant.pk, pk__in=sorted(set(campaign_ids)), cost__gt=0).values_list(
            "pk", "cost"
        )
    )
    if not costs:
        return {}
    sent = dict(
        CampaignDayStats.objects.filter(tenant_id=tenant.pk, campaign_id__in=list(costs))
        .values("campaign_id")
        .annotate(n=Sum("sent"))
        .values_list("campaign_id", "n")
        .order_by()
    )
    return {pk: (cost, sent.get(pk) or 0) for pk, cost in costs.items()}


def _with_costs(
    tenant: Tenant, facts: Mapping[tuple[Any, ...], Kpis], costs: CampaignCosts | None = None
) -> dict[Any, Kpis]:
    """Give each row its share of its campaign's cost (campaign id first in the key), by sent messages."""
    if costs is None:
        costs = _campaign_costs(tenant, (key[0] for key in facts))
    out = {}
    for key, kpis in facts.items():
        cost, total = costs.get(key[0], (Decimal(0), 0))
        out[key] = replace(kpis, cost=cost * kpis.sent / total) if cost and total else kpis
    return out


def _group(facts: Mapping[Any, Kpis], key: Callable[[Any], K]) -> dict[K, Kpis]:
    grouped: dict[K, Kpis] = defaultdict(Kpis)
    for fact_key, kpis in facts.items():
        grouped[key(fact_key)] += kpis
    return dict(grouped)


def _total(facts: Mapping[Any, Kpis]) -> Kpis:
    return sum(facts.values(), Kpis())


def figures_as_of(*, tenant: Tenant) -> dt.datetime | None:
    """When the message figures were last brought up to date (None: never yet)."""
    return StatsCursor.objects.filter(tenant_id=tenant.pk).values_list("refreshed_at", flat=True).first()


# --- rows ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One line of a table: what it is about (``key``, ``label``) and its figures."""

    key: str
    label: str
    kpis: Kpis
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    """Who a variant was written for: a segment, a lifecycle stage, or everyone else (the default)."""

    kind: str  # segment, stage, default, none
    segment_id: int | None = None
    stage: str = ""

    @property
    def key(self) -> str:
        if self.kind == "segment":
            return f"segment:{self.segment_id}"
        if self.kind == "stage":
            return f"stage:{self.stage}"
        return self.kind

    @property
    def targeted(self) -> bool:
        return self.kind in ("segment", "stage")


NO_VARIANT = Target("none")


def _variants(tenant: Tenant, variant_ids: Iterable[int]) -> dict[int, Variant]:
    ids = sorted({pk for pk in variant_ids if pk})
    return {v.pk: v for v in Variant.objects.filter(tenant_id=tenant.pk, pk__in=ids).select_related("target_segment")}


def _target(variant: Variant | None) -> Target:
    if variant is None:
        return NO_VARIANT
    if variant.target == Variant.Target.SEGMENT:
        return Target("segment", segment_id=variant.target_segment_id)
    if variant.target == Variant.Target.STAGE:
        return Target("stage", stage=variant.target_stage)
    return Target("default")


def _target_label(target: Target, segment_names: Mapping[int, str]) -> str:
    if target.kind == "segment":
        return f"Segment: {segment_names.get(target.segment_id or 0, f'#{target.segment_id} (deleted)')}"
    if target.kind == "stage":
        return f"Stage: {STAGE_LABELS.get(target.stage, target.stage)}"
    if target.kind == "default":
        return "Default (everyone else)"
    return "No variant (deleted)"


def _target_rows(
    tenant: Tenant, facts: Mapping[FactKey, Kpis], variants: Mapping[int, Variant] | None = None
) -> list[Row]:
    if variants is None:
        variants = _variants(tenant, (key[1] for key in facts))
    by_target = _group(facts, lambda key: _target(variants.get(key[1])))
    names = dict(
        Segment.objects.filter(tenant_id=tenant.pk, pk__in=[t.segment_id for t in by_target if t.segment_id])
        .values_list("pk", "name")
        .order_by()
    )
    order = {"segment": 0, "stage": 1, "default": 2, "none": 3}
    rows = [
        Row(t.key, _target_label(t, names), kpis, {"kind": t.kind, "segment_id": t.segment_id, "stage": t.stage})
        for t, kpis in by_target.items()
    ]
    return sorted(rows, key=lambda r: (order[r.detail["kind"]], r.label))


@dataclass(frozen=True)
class RateEstimate:
    rate: float | None
    low: float | None
    high: float | None


def _conversion_estimate(kpis: Kpis) -> RateEstimate:
    """The conversion rate with its 95 % Wilson interval (a delivered message converting more than once
    counts once for the interval)."""
    if kpis.delivered <= 0:
        return RateEstimate(None, None, None)
    interval = wilson_interval(min(kpis.conversions, kpis.delivered), kpis.delivered)
    return RateEstimate(kpis.conversion_rate, interval.low, interval.high)


@dataclass(frozen=True)
class TargetingComparison:
    """Segment- and stage-targeted variants next to the default variant: the seed's claim, measured."""

    targeted: Kpis
    default: Kpis
    rows: list[Row]  # segment-targeted, stage-targeted, all targeted, default
    targeted_estimate: RateEstimate
    default_estimate: RateEstimate
    conversion_lift: float | None  # targeted rate / default rate − 1
    ctr_lift: float | None
    engagement_lift: float | None
    p_value: float | None  # two-proportion z-test of the conversion rates

    @property
    def has_both(self) -> bool:
        return self.targeted.delivered > 0 and self.default.delivered > 0


def _lift(a: float | None, b: float | None) -> float | None:
    return a / b - 1 if a is not None and b else None


def targeting_comparison(target_rows: Sequence[Row]) -> TargetingComparison:
    """Compare the targeted rows (segments, stages) with the default from per-target rows."""
    by_kind: dict[str, Kpis] = defaultdict(Kpis)
    for row in target_rows:
        by_kind[row.detail["kind"]] += row.kpis
    targeted = by_kind["segment"] + by_kind["stage"]
    default = by_kind["default"]
    rows = [
        Row("segment", "Segment-targeted variants", by_kind["segment"]),
        Row("stage", "Stage-targeted variants", by_kind["stage"]),
        Row("targeted", "All targeted variants", targeted),
        Row("default", "Default variant (generic message)", default),
    ]
    p_value = None
    if targeted.delivered > 0 and default.delivered > 0:
        p_value = two_proportion_z_test(
            min(targeted.conversions, targeted.delivered), targeted.delivered,
            min(default.conversions, default.delivered), default.delivered,
        ).p_value  # fmt: skip
    return TargetingComparison(
        targeted=targeted, default=default, rows=rows,
        targeted_estimate=_conversion_estimate(targeted), default_estimate=_conversion_estimate(default),
        conversion_lift=_lift(targeted.conversion_rate, default.conversion_rate),
        ctr_lift=_lift(targeted.ctr, default.ctr),
        engagement_lift=_lift(targeted.engagement_rate, default.engagement_rate),
        p_value=p_value,
    )  # fmt: skip


# --- lifecycle stage (the contact's current stage: read live) ---------------------------------------
def stage_rows(*, tenant: Tenant, campaign_ids: Sequence[int], costs: CampaignCosts | None = None) -> list[Row]:
    """Figures by the recipients' current lifecycle stage, for these campaigns (all time).

    Read from ``CampaignStageStats`` (counted again by the refresh as stages change: analytics/rollup.py);
    a campaign not counted by stage yet is counted here, live."""
    ids = list(campaign_ids)
    stage: dict[tuple[int, str], Kpis] = {}
    stored = CampaignStageStats.objects.filter(tenant_id=tenant.pk, campaign_id__in=ids).values(
        "campaign_id", "stage", *STAGE_COLUMNS
    )
    for row in stored:
        key = (row.pop("campaign_id"), row.pop("stage") or UNKNOWN_STAGE)
        stage[key] = Kpis(**row)
    missing = sorted(set(ids) - {key[0] for key in stage})
    for (campaign_id, name), values in stage_figures(tenant.pk, missing).items():
        stage[(campaign_id, name or UNKNOWN_STAGE)] = Kpis(**{k: v for k, v in values.items() if k in STAGE_COLUMNS})
    by_stage = _group(_with_costs(tenant, stage, costs), lambda key: key[1])
    order = [*LifecycleStage.values, UNKNOWN_STAGE]
    return [Row(s, STAGE_LABELS[s], by_stage[s]) for s in order if s in by_stage]


def stages_as_of(*, tenant: Tenant, campaign_ids: Sequence[int]) -> dt.datetime | None:
    """When the figures by stage were counted (the oldest of these campaigns'; None: counted just now)."""
    return (
        CampaignStageStats.objects.filter(tenant_id=tenant.pk, campaign_id__in=list(campaign_ids))
        .order_by("computed_at")
        .values_list("computed_at", flat=True)
        .first()
    )


# --- a campaign ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DayPoint:
    day: dt.date
    kpis: Kpis


@dataclass(frozen=True)
class CampaignResults:
    campaign: Campaign
    totals: Kpis
    variants: list[Row]
    targets: list[Row]
    stages: list[Row]
    comparison: TargetingComparison
    series: list[DayPoint]
    as_of: dt.datetime | None
    stages_as_of: dt.datetime | None = None
    # By the channel each message went by (a preferred-channel campaign's siblings' included).
    channels: list[Row] = field(default_factory=list)


def _series(facts: Mapping[FactKey, Kpis], days: Sequence[dt.date] | None = None) -> list[DayPoint]:
    by_day = _group(facts, lambda key: key[2])
    if days is None:
        seen = sorted(d for d in by_day if d is not None)
        days = [seen[0] + dt.timedelta(days=i) for i in range((seen[-1] - seen[0]).days + 1)] if seen else []
    return [DayPoint(d, by_day.get(d, Kpis())) for d in days]


def _campaign_variants(tenant: Tenant, campaign_ids: Sequence[int]) -> dict[int, Variant]:
    variants = Variant.objects.filter(tenant_id=tenant.pk, campaign_id__in=list(campaign_ids))
    return {v.pk: v for v in variants.select_related("target_segment")}


def _variant_rows(facts: Mapping[FactKey, Kpis], variants: Mapping[int, Variant]) -> list[Row]:
    by_variant = _group(facts, lambda key: key[1])
    names = {v.target_segment.pk: v.target_segment.name for v in variants.values() if v.target_segment}
    rows = []
    for pk, variant in sorted(variants.items(), key=lambda item: (item[1].position, item[0])):
        target = _target(variant)
        rows.append(
            Row(
                str(pk), variant.name, by_variant.get(pk, Kpis()),
                {"variant_id": pk, "target": _target_label(target, names), "kind": target.kind,
                 "weight": variant.weight},
            )
        )  # fmt: skip
    for pk in sorted(set(by_variant) - set(variants)):
        rows.append(Row(str(pk), "No variant (deleted)", by_variant[pk], {"variant_id": pk, "kind": "none"}))
    return rows


def _sibling_variants(tenant: Tenant, campaign: Campaign) -> tuple[dict[int, Campaign], dict[int, int]]:
    """A campaign's hidden siblings (its messages on other channels: campaigns/siblings.py) by id, and each of
    their variant copies' ids → the campaign's variant it copies."""
    siblings = {c.pk: c for c in Campaign.objects.filter(tenant_id=tenant.pk, sibling_of_id=campaign.pk)}
    copies = dict(
        Variant.objects.filter(tenant_id=tenant.pk, campaign_id__in=list(siblings), copy_of__isnull=False).values_list(
            "pk", "copy_of_id"
        )
    )
    return siblings, copies


def campaign_results(*, campaign: Campaign, with_stages: bool = True) -> CampaignResults:
    """Everything the results page and the API show for one campaign, all runs together (its messages on
    each contact's preferred channel included: they are its siblings', counted as its own)."""
    tenant = campaign.tenant
    siblings, copies = _sibling_variants(tenant, campaign)
    family = [campaign.pk, *siblings]
    costs = _campaign_costs(tenant, family)
    by_campaign = _facts(tenant, campaign_ids=family, by_day=True, costs=costs)
    channels = channel_rows(by_campaign, {campaign.pk: campaign, **siblings}) if siblings else []
    # The siblings' messages as the campaign's, each copy as the variant it copies.
    facts: dict[FactKey, Kpis] = defaultdict(Kpis)
    for (_campaign_id, variant_id, day), kpis in by_campaign.items():
        facts[(campaign.pk, copies.get(variant_id, variant_id), day)] += kpis
    totals = replace(_total(facts), cost=campaign.cost)
    variants = _campaign_variants(tenant, [campaign.pk])
    # Deliveries of deleted variants (variant 0) have no Variant: they show as "no variant".
    targets = _target_rows(tenant, _group(facts, lambda key: (key[0], key[1], None)), variants)
    return CampaignResults(
        campaign=campaign,
        totals=totals,
        variants=_variant_rows(facts, variants),
        targets=targets,
        stages=stage_rows(tenant=tenant, campaign_ids=family, costs=costs) if with_stages else [],
        comparison=targeting_comparison(targets),
        series=_series(facts),
        as_of=figures_as_of(tenant=tenant),
        stages_as_of=stages_as_of(tenant=tenant, campaign_ids=family) if with_stages else None,
        channels=channels,
    )


# --- a journey ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JourneyResults:
    journey: Journey
    totals: Kpis
    steps: list[Row]
    stages: list[Row]
    as_of: dt.datetime | None
    stages_as_of: dt.datetime | None = None


def journey_step_campaigns(*, journey: Journey) -> dict[int, Step]:
    """Campaign id → the send step that owns it, over every version of the journey."""
    steps = Step.objects.filter(tenant_id=journey.tenant_id, version__journey=journey, campaign__isnull=False)
    owners = {
        s.campaign_id: s for s in steps.select_related("version", "campaign").order_by("version__number", "position")
    }
    # A step on each contact's preferred channel sends on its other channels through sibling campaigns.
    siblings = Campaign.objects.filter(tenant_id=journey.tenant_id, sibling_of_id__in=list(owners))
    for pk, parent in siblings.values_list("pk", "sibling_of_id"):
        owners[pk] = owners[parent]
    return owners


def journey_results(
    *, journey: Journey, shown: JourneyVersion | None = None, with_stages: bool = True
) -> JourneyResults:
    """Figures per send step (by key, every version's campaign for that key together) and in all."""
    tenant = journey.tenant
    owners = journey_step_campaigns(journey=journey)
    costs = _campaign_costs(tenant, owners)
    facts = _facts(tenant, campaign_ids=list(owners), costs=costs)
    by_key = _group(facts, lambda key: owners[key[0]].key)
    shown_steps = {s.key: s for s in Step.objects.filter(tenant_id=tenant.pk, version=shown)} if shown else {}
    latest: dict[str, Step] = {}
    for step in owners.values():  # ordered by version: the newest version's step wins
        latest[step.key] = step
    keys = sorted(
        set(latest) | {k for k, s in shown_steps.items() if s.campaign_id},
        key=lambda k: (shown_steps[k].position if k in shown_steps else 10**6, k),
    )
    rows = []
    for key in keys:
        step = shown_steps.get(key) or latest[key]
        versions = sorted({s.version.number for s in owners.values() if s.key == key})
        owner = latest[key].campaign if key in latest else None
        channel = owner.channel if owner is not None else ""
        rows.append(
            Row(key, step.name or key, by_key.get(key, Kpis()), {"key": key, "versions": versions, "channel": channel})
        )
    return JourneyResults(
        journey=journey,
        totals=_total(facts),
        steps=rows,
        stages=stage_rows(tenant=tenant, campaign_ids=list(owners), costs=costs) if with_stages and owners else [],
        as_of=figures_as_of(tenant=tenant),
        stages_as_of=stages_as_of(tenant=tenant, campaign_ids=list(owners)) if with_stages and owners else None,
    )


# --- the tenant ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dashboard:
    period: Period
    totals: Kpis
    series: list[DayPoint]
    channels: list[Row]
    campaigns: list[Row]
    journeys: list[Row]
    top_segments: list[Row]
    comparison: TargetingComparison
    as_of: dt.datetime | None


def tenant_series(*, tenant: Tenant, period: Period) -> list[DayPoint]:
    """Per day of the period: sent, unique human opens and clicks, conversions, revenue (and the rest)."""
    return _series(_facts(tenant, period=period, by_day=True), period.days)


def channel_rows(facts: Mapping[FactKey, Kpis], campaigns: Mapping[int, Campaign]) -> list[Row]:
    by_channel = _group(facts, lambda key: campaigns[key[0]].channel if key[0] in campaigns else "")
    labels = dict(CampaignChannel.choices)
    return [Row(c, labels[c], by_channel[c]) for c in CampaignChannel.values if c in by_channel]


def _campaign_map(tenant: Tenant, ids: Iterable[int]) -> dict[int, Campaign]:
    return {c.pk: c for c in Campaign.objects.filter(tenant_id=tenant.pk, pk__in=sorted(set(ids))).only(
        "pk", "tenant_id", "name", "channel", "kind", "cost", "sibling_of_id"
    )}  # fmt: skip


def segment_rows(
    *,
    tenant: Tenant,
    period: Period | None = None,
    segment_ids: Sequence[int] | None = None,
    targets: Sequence[Row] | None = None,
) -> list[Row]:
    """Per segment: the messages of every variant written for it (in the period), by segment name.

    With ``segment_ids``, those segments (in that order, with empty figures when they had none).
    ``targets``: rows by target already read (``_target_rows``) for the same period."""
    if targets is None:
        targets = _target_rows(tenant, _facts(tenant, period=period))
    rows = {r.detail["segment_id"]: r for r in targets if r.detail["kind"] == "segment"}
    if segment_ids is None:
        return sorted(rows.values(), key=lambda r: r.label)
    names = dict(Segment.objects.filter(tenant_id=tenant.pk, pk__in=list(segment_ids)).values_list("pk", "name"))
    return [
        rows.get(pk)
        or Row(f"segment:{pk}", f"Segment: {names[pk]}", Kpis(), {"kind": "segment", "segment_id": pk, "stage": ""})
        for pk in segment_ids
        if pk in names
    ]


@dataclass(frozen=True)
class SegmentComparison:
    """Chosen segments side by side, every segment with messages in the period, and the default variants."""

    period: Period
    rows: list[Row]
    every: list[Row]
    default: Kpis
    as_of: dt.datetime | None


def segment_comparison(*, tenant: Tenant, period: Period, segment_ids: Sequence[int]) -> SegmentComparison:
    targets = _target_rows(tenant, _facts(tenant, period=period))
    return SegmentComparison(
        period=period,
        rows=segment_rows(tenant=tenant, segment_ids=segment_ids, targets=targets) if segment_ids else [],
        every=segment_rows(tenant=tenant, targets=targets),
        default=sum((r.kpis for r in targets if r.detail["kind"] == "default"), Kpis()),
        as_of=figures_as_of(tenant=tenant),
    )


def top_segments(
    rows: Sequence[Row], *, limit: int = TOP_SEGMENTS, min_delivered: int = TOP_SEGMENT_MIN_DELIVERED
) -> list[Row]:
    """Segments by conversion rate (then by delivered), those with at least ``min_delivered`` messages."""
    ranked = [r for r in rows if r.kpis.delivered >= max(min_delivered, 1)]
    return sorted(ranked, key=lambda r: (-(r.kpis.conversion_rate or 0), -r.kpis.delivered, r.label))[:limit]


def dashboard(*, tenant: Tenant, period: Period, min_delivered: int = TOP_SEGMENT_MIN_DELIVERED) -> Dashboard:
    """The tenant dashboard: totals, the days, channels, campaigns, journeys, top segments, targeting."""
    facts = _facts(tenant, period=period, by_day=True)
    flat: dict[FactKey, Kpis] = _group(facts, lambda key: (key[0], key[1], None))
    campaigns = _campaign_map(tenant, (key[0] for key in flat))
    # A sibling's messages (a campaign's on another channel: campaigns/siblings.py) count as its campaign's.
    parents = {pk: c.sibling_of_id for pk, c in campaigns.items() if c.sibling_of_id is not None}
    campaigns.update(_campaign_map(tenant, set(parents.values()) - set(campaigns)))
    owners = {
        s["campaign_id"]: s
        for s in Step.objects.filter(tenant_id=tenant.pk, campaign_id__in=list(campaigns)).values(
            "campaign_id", "version__journey_id", "version__journey__name"
        )
    }
    by_campaign = _group(flat, lambda key: parents.get(key[0], key[0]))
    campaign_rows = [
        Row(str(pk), campaigns[pk].name, kpis, {"campaign_id": pk, "channel": campaigns[pk].channel})
        for pk, kpis in by_campaign.items()
        if pk in campaigns and campaigns[pk].kind == Campaign.Kind.CAMPAIGN
    ]
    by_journey = _group(
        {k: v for k, v in by_campaign.items() if k in owners}, lambda pk: owners[pk]["version__journey_id"]
    )
    journey_names = {s["version__journey_id"]: s["version__journey__name"] for s in owners.values()}
    targets = _target_rows(tenant, flat)
    return Dashboard(
        period=period,
        totals=_total(flat),
        series=_series(facts, period.days),
        channels=channel_rows(flat, campaigns),
        campaigns=sorted(campaign_rows, key=lambda r: (-r.kpis.sent, r.label)),
        journeys=sorted(
            (Row(str(pk), journey_names[pk], kpis, {"journey_id": pk}) for pk, kpis in by_journey.items()),
            key=lambda r: (-r.kpis.sent, r.label),
        ),
        top_segments=top_segments([r for r in targets if r.detail["kind"] == "segment"], min_delivered=min_delivered),
        comparison=targeting_comparison(targets),
        as_of=figures_as_of(tenant=tenant),
    )
