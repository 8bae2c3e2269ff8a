"""A/B/n experiments: test on a share of the audience, decide by a stated test, send the winner to the rest.

An ``Experiment`` belongs to one campaign. Its arms are the campaign's variants that share the
control's target (the variants the snapshot already splits by weight, see docs/campaigns.md).

1. **Hold** (``experiment_hold``, called by ``campaigns.sending._run_create`` right after the
   snapshot, in the same transaction): of the deliveries that got an arm, a stable sample of
   ``test_share`` percent (by a hash of the contact id, independent of the A/B split's hash) keeps
   its variant and is sent as usual; the others lose their variant and wait with ``not_before`` at
   ``HOLD_UNTIL``. The sender claims only due deliveries, so it never sees them (and so never skips
   them for "no variant"), and ``run_finish_if_done`` keeps the run open while they are pending.
   A decision task is queued for ``decide_at`` (after commit); a beat tick is the safety net.
2. **Decide** (``experiment_decide`` for a person's "decide now", ``experiment_decide_due`` for the
   task and the tick): under a row lock, and only while the experiment is ``testing``, count each
   arm's messages sent and those with the metric (a human open or click, or an attributed
   conversion), apply the stated test at the stated level (``experiment_verdict``), store every
   arm's rate with its Wilson interval, the p-value or probability and the reason, and release the
   held deliveries with the winner (or the fallback's pick; with "do not send" they are skipped as
   "no variant") due now, then queue ``send_run`` after commit. A second tick, a redelivered task
   or a person pressing the button at the same time finds the experiment decided and does nothing.
3. Later runs of a recurring campaign send the decided winner to every contact of the arms.

A **channel test** gives each arm a channel (``arm_channels``). The sender sends a run on its
campaign's one channel, unchanged: an arm on another channel is sent by a hidden sibling campaign
(kind "journey", so no campaign page or API lists it) on that channel, with a copy of the arm's
variant. At the start, the arm's test-share deliveries move to a run of the sibling (the same
contacts, their ``not_before`` kept) and ``send_run`` is queued for it; ``arm_siblings`` records the
sibling, its variant and that run, so ``arm_counts`` credits its messages (and their opens, clicks
and conversions, which carry the sibling's ids) to the arm. When the winner sends on another channel,
the released deliveries move to a new run of its sibling, sent the same way.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef, Q, Value
from django.db.models.functions import Mod
from django.db.models.lookups import GreaterThanOrEqual
from django.utils import timezone

from analytics import stats
from analytics.models import Conversion, Experiment, MessageEvent
from campaigns.models import Campaign, CampaignChannel, CampaignRun, ChannelConfig, Delivery, Variant
from campaigns.siblings import deliveries_move, sibling_create, variant_copy
from campaigns.validation import REQUIRED_CONTENT
from contacts.models import Contact
from segmentor.celery import app, tenant_task
from tenants.audit import Actor, audit
from tenants.context import platform_access
from tenants.models import AuditLog, Tenant

logger = logging.getLogger(__name__)

# Held deliveries wait until a decision releases them: far enough that nothing claims them before.
HOLD_UNTIL = dt.datetime(2999, 1, 1, tzinfo=dt.UTC)
# The test sample: ((contact id × multiplier + salt) mod prime) mod 10,000 below share × 100. A
# different multiplier and modulus from the A/B split's (campaigns.sending.HASH_MULTIPLIER mod
# 10,000), so each arm is sampled at the same share.
SAMPLE_MULTIPLIER = 2_246_822_519
SAMPLE_PRIME = 4_294_967_291
SAMPLE_BUCKETS = 10_000
SAMPLE_SALT = 7_919
MAX_DURATION_HOURS = 720
MIN_LEVEL, MAX_LEVEL = Decimal("0.800"), Decimal("0.999")
# A queued decision comes back at least this often (below the Redis visibility timeout, so a
# long countdown is not redelivered by the broker).
MAX_COUNTDOWN_SECONDS = 3_000
DUE_BATCH = 200
SYSTEM = Actor.system("experiment decision")

# What differs between the arms, by channel: the fields that must not be the same in two arms.
TESTED_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    Experiment.Tested.SUBJECT: {CampaignChannel.EMAIL: ("subject",), CampaignChannel.PUSH: ("push_title",)},
    Experiment.Tested.CONTENT: {
        CampaignChannel.EMAIL: ("preheader", "html_body", "text_body"),
        CampaignChannel.SMS: ("sms_body",),
        CampaignChannel.PUSH: ("push_title", "push_body", "push_deep_link"),
        CampaignChannel.WEBHOOK: ("webhook_payload",),
    },
    Experiment.Tested.CTA: dict.fromkeys(CampaignChannel.values, ("cta_label", "cta_url")),
}
TESTED_WORDS: dict[str, str] = {
    Experiment.Tested.SUBJECT: "subject",
    Experiment.Tested.CONTENT: "content",
    Experiment.Tested.CTA: "call to action",
    Experiment.Tested.CHANNEL: "channel",
}
CHANNELS = frozenset(CampaignChannel.values)
METRIC_WORDS: dict[str, str] = {
    Experiment.Metric.OPEN: "open rate",
    Experiment.Metric.CLICK: "click rate",
    Experiment.Metric.CONVERSION: "conversion rate",
}


# --- values ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArmCount:
    """One arm's messages sent in the test and how many of them did what the metric counts."""

    variant_id: int
    name: str
    sent: int
    successes: int


@dataclass(frozen=True)
class ArmFigures:
    variant_id: int
    name: str
    sent: int
    successes: int
    rate: float
    ci_low: float
    ci_high: float
    # z-test: this arm against the leader, Bonferroni-corrected (None for the leader itself).
    p_value: float | None = None
    # Bayesian: the probability that this arm's rate is the highest.
    probability_best: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    arms: list[ArmFigures]
    leader_id: int | None
    significant: bool
    winner_id: int | None
    p_value: float | None
    probability: float | None
    reason: str


@dataclass(frozen=True)
class ExperimentSettings:
    """What a person chooses; ``control_id`` names the first arm (and through its target, the others)."""

    control_id: int | None
    tested: str = Experiment.Tested.SUBJECT
    test_share: int = 20
    metric: str = Experiment.Metric.CLICK
    duration_hours: int = 24
    significance_level: Decimal = Decimal("0.950")
    method: str = Experiment.Method.Z_TEST
    fallback: str = Experiment.Fallback.CONTROL
    arm_send_hours: Mapping[int, int] | None = None
    arm_channels: Mapping[int, str] | None = None


# --- arms ------------------------------------------------------------------------------------------
def _target_key(variant: Variant) -> tuple[str, Any]:
    return (variant.target, variant.target_segment_id or variant.target_stage or None)


def campaign_variants(campaign: Campaign) -> list[Variant]:
    return list(Variant.objects.filter(tenant_id=campaign.tenant_id, campaign=campaign).order_by("position", "id"))


def arms_of(control: Variant | None, variants: Sequence[Variant]) -> list[Variant]:
    """The control first, then the other variants with its target in the order they are tried."""
    if control is None:
        return []
    key = _target_key(control)
    return [control, *(v for v in variants if v.pk != control.pk and _target_key(v) == key)]


def arm_variants(experiment: Experiment) -> list[Variant]:
    """The experiment's arms: as fixed when the test started, else as the campaign's variants stand."""
    variants = list(
        Variant.objects.filter(tenant_id=experiment.tenant_id, campaign_id=experiment.campaign_id).order_by(
            "position", "id"
        )
    )
    if experiment.arms:
        by_id = {v.pk: v for v in variants}
        return [by_id[pk] for pk in experiment.arms if pk in by_id]
    control = next((v for v in variants if v.pk == experiment.control_id), None)
    return arms_of(control, variants)


def ab_groups(variants: Sequence[Variant]) -> list[list[Variant]]:
    """Groups of two or more variants sharing a target: the possible experiments of a campaign."""
    groups: dict[tuple[str, Any], list[Variant]] = {}
    for variant in variants:
        groups.setdefault(_target_key(variant), []).append(variant)
    return [group for group in groups.values() if len(group) > 1]


def arm_channel(channels: Mapping[Any, str] | None, campaign: Campaign, variant_id: int) -> str:
    """An arm's channel in a channel test: the one chosen for it (keys are ids or their text), else the campaign's."""
    chosen = dict(channels or {})
    return chosen.get(variant_id) or chosen.get(str(variant_id)) or campaign.channel


def variant_channels(campaign: Campaign) -> dict[int, str]:
    """Variant id → the channel it is sent on, for the arms of a channel test (empty otherwise)."""
    experiment = Experiment.objects.filter(
        tenant_id=campaign.tenant_id, campaign=campaign, tested=Experiment.Tested.CHANNEL
    ).first()
    if experiment is None:
        return {}
    return {int(pk): arm_channel(experiment.arm_channels, campaign, int(pk)) for pk in experiment.arm_channels or {}}


def experiment_for(campaign: Campaign) -> Experiment | None:
    return (
        Experiment.objects.filter(tenant_id=campaign.tenant_id, campaign=campaign)
        .select_related("winner", "decided_by", "run")
        .first()
    )


# --- configure -------------------------------------------------------------------------------------
def _problems(campaign: Campaign, chosen: ExperimentSettings, variants: list[Variant]) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}

    def add(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    control = next((v for v in variants if v.pk == chosen.control_id), None)
    arms = arms_of(control, variants)
    if control is None:
        add("control", "Choose the control: one of this campaign's variants.")
    elif len(arms) < 2:
        add(
            "control",
            f"“{control.name}” has no other variant with the same target to test against: add a variant "
            "for the same target (variants sharing a target split it by weight).",
        )
    if chosen.tested not in Experiment.Tested.values:
        add("tested", "Choose what the variants differ in.")
    if chosen.metric not in Experiment.Metric.values:
        add("metric", "Choose open, click or conversion.")
    if chosen.method not in Experiment.Method.values:
        add("method", "Choose the z-test or the Bayesian probability to be best.")
    if chosen.fallback not in Experiment.Fallback.values:
        add("fallback", "Choose what happens when no variant wins.")
    if not 1 <= chosen.test_share <= 100:
        add("test_share", "A percentage from 1 to 100.")
    if not 1 <= chosen.duration_hours <= MAX_DURATION_HOURS:
        add("duration_hours", f"From 1 hour to {MAX_DURATION_HOURS} hours (30 days).")
    if not MIN_LEVEL <= chosen.significance_level <= MAX_LEVEL:
        add("significance_level", "A level from 0.80 to 0.999 (0.95 is usual).")
    channels = {campaign.channel}
    if chosen.tested == Experiment.Tested.CHANNEL and arms:
        # The arms' channels (an unknown one is the hours' kind of mistake, reported under arm_channels).
        channels = {arm_channel(chosen.arm_channels, campaign, v.pk) for v in arms} & CHANNELS or channels
    everywhere_email = channels == {CampaignChannel.EMAIL}
    if chosen.metric in (Experiment.Metric.OPEN, Experiment.Metric.CLICK) and not everywhere_email:
        add("metric", "Opens and clicks are tracked for email only: measure conversions instead.")
    elif chosen.metric == Experiment.Metric.OPEN and not campaign.track_opens:
        add("metric", "Open tracking is off for this campaign: turn it on or measure clicks.")
    elif chosen.metric == Experiment.Metric.CLICK and not campaign.track_clicks:
        add("metric", "Click tracking is off for this campaign: turn it on or measure opens.")
    elif chosen.metric == Experiment.Metric.CONVERSION:
        if not campaign.goal_event:
            add("metric", "The campaign has no goal event: set one in its basics to count conversions.")
        elif not everywhere_email and campaign.attribution_touch == Campaign.AttributionTouch.CLICK:
            add("metric", "Only email clicks are tracked: attribute conversions to the delivery in the basics.")
    if len(arms) >= 2 and chosen.tested in Experiment.Tested.values:
        _tested_problems(campaign, chosen, arms, add)
    return errors


def _tested_problems(campaign: Campaign, chosen: ExperimentSettings, arms: list[Variant], add: Any) -> None:
    if chosen.tested == Experiment.Tested.SEND_TIME:
        hours = dict(chosen.arm_send_hours or {})
        missing = [v.name for v in arms if not isinstance(hours.get(v.pk), int) or not 0 <= hours[v.pk] <= 23]
        if missing:
            add("arm_send_hours", "Give each variant an hour from 0 to 23: " + ", ".join(f"“{n}”" for n in missing))
        elif len({hours[v.pk] for v in arms}) < len(arms):
            add("arm_send_hours", "Give each variant its own hour.")
        if campaign.schedule == Campaign.Schedule.LOCAL_TIME or getattr(campaign, "best_time", False):
            add("tested", "This campaign already chooses each recipient's time: test something else.")
        if chosen.duration_hours < 24:
            add("duration_hours", "A send-time test runs for at least 24 hours, so every hour comes round once.")
        return
    if chosen.tested == Experiment.Tested.CHANNEL:
        _channel_problems(campaign, chosen, arms, add)
        return
    fields = TESTED_FIELDS[chosen.tested].get(campaign.channel)
    if not fields:
        add("tested", f"{campaign.get_channel_display()} messages have no {TESTED_WORDS[chosen.tested]}.")
        return
    seen: dict[tuple[str, ...], str] = {}
    for variant in arms:
        values = tuple((getattr(variant, name) or "").strip() for name in fields)
        if values in seen:
            add(
                "tested",
                f"“{seen[values]}” and “{variant.name}” have the same {TESTED_WORDS[chosen.tested]}: "
                "the test would compare identical messages.",
            )
            return
        seen[values] = variant.name


def _channel_problems(campaign: Campaign, chosen: ExperimentSettings, arms: list[Variant], add: Any) -> None:
    """A channel test: two channels at least, each set up, and each arm worded for its channel."""
    by_arm = {v.pk: arm_channel(chosen.arm_channels, campaign, v.pk) for v in arms}
    unknown = [v.name for v in arms if by_arm[v.pk] not in CHANNELS]
    if unknown:
        add("arm_channels", "Choose email, SMS, push or webhook for " + ", ".join(f"“{n}”" for n in unknown))
        return
    if len(set(by_arm.values())) < 2:
        add("arm_channels", "Give the variants at least two different channels: a channel test compares channels.")
        return
    configs = {
        c.channel: c.settings or {} for c in ChannelConfig.objects.filter(tenant_id=campaign.tenant_id).order_by("id")
    }
    for variant in arms:
        channel = by_arm[variant.pk]
        label = CampaignChannel(channel).label
        if channel != CampaignChannel.EMAIL and channel not in configs:
            add("arm_channels", f"“{variant.name}” goes by {label}: set up a {label} provider in the settings first.")
        elif channel == CampaignChannel.WEBHOOK and not campaign.webhook_url and not configs[channel].get("url"):
            add("arm_channels", f"“{variant.name}” goes by webhook: give the campaign the URL it is posted to.")
        for names, message in REQUIRED_CONTENT.get(channel, ()):
            if not any((getattr(variant, name) or "").strip() for name in names):
                add("arm_channels", f"“{variant.name}” goes by {label}: {message}")


@transaction.atomic
def experiment_configure(*, campaign: Campaign, settings: ExperimentSettings, actor: Actor) -> Experiment:
    """Create or change the campaign's A/B test before its run starts; ValidationError names each field."""
    locked = Campaign.objects.select_for_update().get(pk=campaign.pk)
    if locked.kind != Campaign.Kind.CAMPAIGN:
        raise ValidationError({"campaign": "A journey step is tested in its journey, not here."})
    if locked.preferred_channel:
        raise ValidationError(
            {"campaign": "This campaign sends on each contact's preferred channel: choose one channel to A/B test it."}
        )
    if locked.status not in (Campaign.Status.DRAFT, Campaign.Status.SCHEDULED, Campaign.Status.PAUSED):
        raise ValidationError({"status": "This campaign has started sending: its A/B test can no longer change."})
    experiment = (
        Experiment.objects.select_for_update(of=("self",)).filter(tenant_id=locked.tenant_id, campaign=locked).first()
    )
    if experiment is not None and experiment.status != Experiment.Status.DRAFT:
        raise ValidationError({"status": "This A/B test has started: its settings can no longer change."})
    variants = campaign_variants(locked)
    errors = _problems(locked, settings, variants)
    if errors:
        raise ValidationError(errors)
    arms = arms_of(next(v for v in variants if v.pk == settings.control_id), variants)
    created = experiment is None
    if experiment is None:
        user = actor.user if actor.user is not None and actor.user.pk else None
        experiment = Experiment(tenant_id=locked.tenant_id, campaign=locked, created_by=user)
    experiment.control_id = settings.control_id
    experiment.tested = settings.tested
    experiment.test_share = settings.test_share
    experiment.metric = settings.metric
    experiment.duration_hours = settings.duration_hours
    experiment.significance_level = settings.significance_level
    experiment.method = settings.method
    experiment.fallback = settings.fallback
    send_time = settings.tested == Experiment.Tested.SEND_TIME
    experiment.arm_send_hours = (
        {str(pk): hour for pk, hour in (settings.arm_send_hours or {}).items()} if send_time else {}
    )
    by_channel = settings.tested == Experiment.Tested.CHANNEL
    experiment.arm_channels = (
        {str(v.pk): arm_channel(settings.arm_channels, locked, v.pk) for v in arms} if by_channel else {}
    )
    experiment.save()
    audit(
        tenant=locked.tenant, actor=actor, action="experiment.created" if created else "experiment.changed",
        obj=experiment, data={
            "campaign": locked.pk, "control": settings.control_id, "tested": settings.tested,
            "test_share": settings.test_share, "metric": settings.metric, "method": settings.method,
            "level": str(settings.significance_level), "duration_hours": settings.duration_hours,
            "fallback": settings.fallback, "arm_channels": experiment.arm_channels,
        },
    )  # fmt: skip
    return experiment


@transaction.atomic
def experiment_delete(*, experiment: Experiment, actor: Actor) -> None:
    """Remove a test that has not started (the campaign then splits its variants by weight, as without one)."""
    locked = Experiment.objects.select_for_update(of=("self",)).get(pk=experiment.pk)
    if locked.status != Experiment.Status.DRAFT:
        raise ValidationError({"status": "This A/B test has started: it stays with its results."})
    audit(
        tenant=Tenant.objects.get(pk=locked.tenant_id), actor=actor, action="experiment.deleted", obj=locked,
        data={"campaign": locked.campaign_id},
    )  # fmt: skip
    locked.delete()


# --- hold --------------------------------------------------------------------------------------------
def sample_bucket(experiment_id: int) -> Any:
    """A delivery's test bucket, 0-9,999: stable per contact and experiment, independent of the A/B split."""
    salt = (SAMPLE_SALT * experiment_id) % SAMPLE_PRIME
    return Mod(Mod(F("contact_id") * Value(SAMPLE_MULTIPLIER) + Value(salt), Value(SAMPLE_PRIME)), SAMPLE_BUCKETS)


def _tenant_zone(tenant: Tenant) -> Any:
    from campaigns.sending import recipient_zone

    return recipient_zone("", tenant)


def _at_hour(hour: int, tenant: Tenant, after: dt.datetime) -> dt.datetime:
    """The next ``hour``:00 on the workspace's clock after ``after``."""
    from campaigns.sending import next_local_time

    return next_local_time(dt.time(hour), _tenant_zone(tenant), after - dt.timedelta(microseconds=1))


def experiment_hold(run: CampaignRun) -> int:
    """Start the campaign's A/B test on this new run: hold all but the test share; return how many wait.

    Called inside the snapshot's transaction. A campaign without a test is left alone; a decided
    test gives later runs its winner.
    """
    experiment = (
        Experiment.objects.select_for_update(of=("self",))
        .filter(tenant_id=run.tenant_id, campaign_id=run.campaign_id)
        .select_related("campaign__tenant")
        .first()
    )
    if experiment is None:
        return 0
    if experiment.status == Experiment.Status.TESTING and experiment.tested == Experiment.Tested.CHANNEL:
        # A later run while the test is under way splits by weight; each arm still goes by its channel.
        _route_arms(experiment, run, arm_variants(experiment), test=False)
        return 0
    if experiment.status != Experiment.Status.DRAFT:
        _winner_to_later_run(experiment, run)
        return 0
    arms = arm_variants(experiment)
    log = {"tenant_id": run.tenant_id, "run_id": run.pk, "experiment_id": experiment.pk}
    if len(arms) < 2:
        logger.warning("experiment.not_started_without_arms", extra=log)
        return 0
    now = timezone.now()
    campaign = experiment.campaign
    arm_ids = [v.pk for v in arms]
    deliveries = Delivery.objects.filter(tenant_id=run.tenant_id, run=run, variant_id__in=arm_ids)
    held = deliveries.filter(GreaterThanOrEqual(sample_bucket(experiment.pk), experiment.test_share * 100)).update(
        variant_id=None, not_before=HOLD_UNTIL
    )
    if experiment.tested == Experiment.Tested.SEND_TIME and campaign.schedule != Campaign.Schedule.LOCAL_TIME:
        start = max(now, run.scheduled_for)
        for variant in arms:
            hour = experiment.arm_send_hours.get(str(variant.pk))
            if hour is not None:
                deliveries.filter(variant_id=variant.pk).update(not_before=_at_hour(int(hour), campaign.tenant, start))
    if experiment.tested == Experiment.Tested.CHANNEL:
        experiment.arm_siblings = _route_arms(experiment, run, arms, test=True)
    experiment.status = Experiment.Status.TESTING
    experiment.run = run
    experiment.arms = arm_ids
    experiment.held_count = held
    experiment.started_at = now
    experiment.decide_at = now + dt.timedelta(hours=experiment.duration_hours)
    experiment.save(
        update_fields=["status", "run", "arms", "held_count", "started_at", "decide_at", "arm_siblings", "updated_at"]
    )
    tenant_id, experiment_id, countdown = run.tenant_id, experiment.pk, experiment.duration_hours * 3600
    transaction.on_commit(lambda: _queue_decision(tenant_id, experiment_id, countdown))
    logger.info("experiment.started", extra={**log, "held": held})
    return held


def _winner_to_later_run(experiment: Experiment, run: CampaignRun) -> None:
    """A recurring campaign's later runs: the decided winner goes to every contact of the arms."""
    if experiment.status not in (Experiment.Status.DECIDED, Experiment.Status.SENT) or not experiment.winner_id:
        return  # still testing (this run splits by weight), or no winner to send
    deliveries = Delivery.objects.filter(tenant_id=run.tenant_id, run=run, variant_id__in=experiment.arms)
    values: dict[str, Any] = {"variant_id": experiment.winner_id}
    hour = experiment.arm_send_hours.get(str(experiment.winner_id))
    if experiment.tested == Experiment.Tested.SEND_TIME and hour is not None:
        values["not_before"] = _at_hour(int(hour), experiment.campaign.tenant, max(timezone.now(), run.scheduled_for))
    deliveries.update(**values)
    _winner_to_sibling(experiment, run, run.scheduled_for)


# --- channel tests: hidden sibling campaigns ---------------------------------------------------------
def _route_arms(
    experiment: Experiment, run: CampaignRun, arms: Sequence[Variant], *, test: bool
) -> dict[str, dict[str, Any]]:
    """Move the run's deliveries of each arm on another channel to a run of that arm's sibling; return the map.

    ``test``: the run under test, whose sibling runs ``arm_counts`` counts (recorded as ``run``).
    """
    campaign = experiment.campaign
    siblings = dict(experiment.arm_siblings or {})
    for arm in arms:
        channel = arm_channel(experiment.arm_channels, campaign, arm.pk)
        if channel == campaign.channel:
            continue
        sibling, copy = _sibling(experiment, arm, channel)
        deliveries = Delivery.objects.filter(tenant_id=run.tenant_id, run=run, variant_id=arm.pk)
        moved_to = _move(deliveries, sibling, copy, run.scheduled_for)
        entry = {**siblings.get(str(arm.pk), {}), "campaign": sibling.pk, "variant": copy.pk, "channel": channel}
        if test:
            entry["run"] = moved_to.pk
        siblings[str(arm.pk)] = entry
    if not test:
        Experiment.objects.filter(pk=experiment.pk).update(arm_siblings=siblings)
    return siblings


def _sibling(experiment: Experiment, arm: Variant, channel: str) -> tuple[Campaign, Variant]:
    """The hidden campaign sending ``arm`` by ``channel`` and its copy of the arm (made on first use, kept in step)."""
    tenant_id = experiment.tenant_id
    recorded = (experiment.arm_siblings or {}).get(str(arm.pk)) or {}
    copy = (
        Variant.objects.filter(
            tenant_id=tenant_id, pk=recorded.get("variant"), campaign_id=recorded.get("campaign"),
            campaign__channel=channel,
        )
        .select_related("campaign")
        .first()
        if recorded
        else None
    )  # fmt: skip
    if copy is not None:
        return copy.campaign, variant_copy(variant=arm, sibling=copy.campaign, copy=copy)
    parent = Campaign.objects.get(tenant_id=tenant_id, pk=experiment.campaign_id)
    label = CampaignChannel(channel).label
    sibling = sibling_create(
        parent=parent, channel=channel, name=f"{parent.name} · A/B test by {label}",
        description=f"Sends “{arm.name}”, an arm of the channel test of campaign {parent.pk}, by {label}.",
    )  # fmt: skip
    copy = variant_copy(variant=arm, sibling=sibling)
    logger.info(
        "experiment.sibling_created",
        extra={"tenant_id": tenant_id, "experiment_id": experiment.pk, "campaign_id": sibling.pk, "arm": arm.pk},
    )
    return sibling, copy


def _move(deliveries: Any, sibling: Campaign, copy: Variant, scheduled_for: dt.datetime) -> CampaignRun:
    """Move ``deliveries`` (their times kept) to a new run of ``sibling`` with its variant; send it after commit."""
    run = deliveries_move(
        deliveries=deliveries, sibling=sibling, variants={copy.copy_of_id or 0: copy.pk}, scheduled_for=scheduled_for
    )
    tenant_id, run_id = run.tenant_id, run.pk
    transaction.on_commit(lambda: _send_run(tenant_id, run_id))
    return run


def _winner_to_sibling(experiment: Experiment, run: CampaignRun, scheduled_for: dt.datetime) -> CampaignRun | None:
    """A channel test won by an arm on another channel: the run's messages of the winner move to its sibling."""
    winner_id = experiment.winner_id
    if experiment.tested != Experiment.Tested.CHANNEL or winner_id is None:
        return None
    channel = arm_channel(experiment.arm_channels, experiment.campaign, winner_id)
    arm = Variant.objects.filter(tenant_id=experiment.tenant_id, pk=winner_id).first()
    if channel == experiment.campaign.channel or arm is None:
        return None
    pending = Delivery.objects.filter(
        tenant_id=run.tenant_id, run=run, status=Delivery.Status.PENDING, variant_id=winner_id
    )
    if not pending.exists():
        return None
    sibling, copy = _sibling(experiment, arm, channel)
    return _move(pending, sibling, copy, scheduled_for)


def _queue_decision(tenant_id: int, experiment_id: int, countdown: float) -> None:
    decide_experiment.apply_async((tenant_id, experiment_id), countdown=max(1, min(countdown, MAX_COUNTDOWN_SECONDS)))


# --- figures and the verdict -------------------------------------------------------------------------
def arm_counts(experiment: Experiment, arms: Sequence[Variant]) -> list[ArmCount]:
    """Each arm's messages sent in the run under test, and those with a human open or click, or a conversion."""
    if experiment.run_id is None or not arms:
        return [ArmCount(v.pk, v.name, 0, 0) for v in arms]
    tenant_id = experiment.tenant_id
    if experiment.metric == Experiment.Metric.CONVERSION:
        hit: Any = Exists(Conversion.objects.filter(tenant_id=tenant_id, delivery_id=OuterRef("pk")))
    else:
        hit = Exists(
            MessageEvent.objects.filter(
                tenant_id=tenant_id, delivery_id=OuterRef("pk"), kind=experiment.metric, machine=""
            )
        )
    # A channel test's arm on another channel was sent by its sibling: that run's messages are the arm's.
    arm_of = {v.pk: v.pk for v in arms}
    scope = Q(run_id=experiment.run_id, variant_id__in=[v.pk for v in arms])
    for arm_id, entry in (experiment.arm_siblings or {}).items():
        if int(arm_id) in arm_of and entry.get("run") and entry.get("variant"):
            scope |= Q(run_id=entry["run"], variant_id=entry["variant"])
            arm_of[int(entry["variant"])] = int(arm_id)
    rows = (
        Delivery.objects.filter(scope, tenant_id=tenant_id, status=Delivery.Status.SENT)
        .order_by()
        .values("variant_id")
        .annotate(sent=Count("id"), successes=Count("id", filter=Q(hit)))
    )
    counted: dict[int, tuple[int, int]] = {}
    for row in rows:
        arm_id = arm_of[row["variant_id"]]
        sent, successes = counted.get(arm_id, (0, 0))
        counted[arm_id] = (sent + row["sent"], successes + row["successes"])
    return [ArmCount(v.pk, v.name, *counted.get(v.pk, (0, 0))) for v in arms]


def _pct(value: float) -> str:
    return f"{value * 100:.1f} %"


def _level_words(level: float) -> str:
    return f"{level * 100:g} %"


def _p_words(p_value: float) -> str:
    return "p < 0.0001" if p_value < 0.0001 else f"p = {p_value:.4f}"


def _names(arms: Sequence[ArmFigures]) -> str:
    parts = [f"{_pct(a.rate)} for “{a.name}”" for a in arms]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def experiment_verdict(
    *, arms: Sequence[ArmCount], method: str, level: float, fallback: str, metric: str = Experiment.Metric.CLICK,
    seed: int = 0,
) -> Verdict:  # fmt: skip
    """Compare the arms (control first) and choose the winner, or the fallback's pick, with the reason.

    - z-test: the leader (highest rate; the earlier arm on a tie) against each other arm, pooled and
      two-sided, p-values multiplied by the number of comparisons (Bonferroni); significant when the
      largest corrected p-value is below 1 − level.
    - Bayesian: the arm with the highest probability to be best wins when that probability is at
      least the level.
    An arm with no message sent makes the test undecidable (the fallback applies).
    """
    words = METRIC_WORDS.get(metric, "rate")
    intervals = [stats.wilson_interval(a.successes, a.sent, level) for a in arms]
    rates = [stats.rate(a.successes, a.sent) for a in arms]
    if not arms:
        return Verdict([], None, False, None, None, None, "There are no variants to compare.")
    best_observed = max(range(len(arms)), key=lambda i: (rates[i], -i))
    p_values: list[float | None] = [None] * len(arms)
    probabilities: list[float | None] = [None] * len(arms)
    p_value: float | None = None
    probability: float | None = None
    empty = [a.name for a in arms if a.sent == 0]
    if method == Experiment.Method.BAYESIAN:
        found = stats.probabilities_to_be_best([(a.successes, a.sent) for a in arms], seed=seed)
        probabilities = list(found)
        leader = max(range(len(arms)), key=lambda i: (found[i], -i))
        probability = found[leader]
        significant = len(arms) > 1 and not empty and probability >= level
    else:
        leader = best_observed
        comparisons = len(arms) - 1
        for i, arm in enumerate(arms):
            if i != leader:
                test = stats.two_proportion_z_test(arm.successes, arm.sent, arms[leader].successes, arms[leader].sent)
                p_values[i] = stats.bonferroni(test.p_value, comparisons)
        others = [p for p in p_values if p is not None]
        p_value = max(others) if others else None
        significant = (
            p_value is not None
            and not empty
            and all(rates[leader] > rates[i] for i in range(len(arms)) if i != leader)
            and p_value < 1 - level
        )
    figures: list[ArmFigures] = []
    for i, a in enumerate(arms):
        figures.append(
            ArmFigures(
                a.variant_id, a.name, a.sent, a.successes, rates[i], intervals[i].low, intervals[i].high,
                p_values[i], probabilities[i],
            )
        )  # fmt: skip
    top = figures[leader]
    rest = [f for i, f in enumerate(figures) if i != leader]
    at = _level_words(level)
    if significant and method == Experiment.Method.BAYESIAN:
        assert probability is not None
        reason = (
            f"“{top.name}” has a {_pct(probability)} probability of the best {words} ({_pct(top.rate)}, against "
            f"{_names(rest)}; Beta posteriors with a uniform prior), at least the {at} asked for."
        )
        return Verdict(figures, top.variant_id, True, top.variant_id, p_value, probability, reason)
    if significant:
        assert p_value is not None
        test_words = (
            f"two-proportion z-test, {_p_words(p_value)}"
            if len(arms) == 2
            else f"two-proportion z-tests, largest {_p_words(p_value)} after Bonferroni correction for "
            f"{len(arms) - 1} comparisons"
        )
        reason = (
            f"“{top.name}” had the best {words}, {_pct(top.rate)} against {_names(rest)}; the difference is "
            f"significant at the {at} level ({test_words})."
        )
        return Verdict(figures, top.variant_id, True, top.variant_id, p_value, probability, reason)
    if len(arms) < 2:
        why = "Only one variant is left to compare"
    elif empty:
        why = (
            ", ".join(f"“{name}”" for name in empty)
            + " had no message sent, so the test cannot tell the variants apart"
        )
    elif method == Experiment.Method.BAYESIAN:
        assert probability is not None
        why = (
            f"No variant is best with {at} probability (the most likely, “{top.name}”, has {_pct(probability)}; "
            "Beta posteriors with a uniform prior)"
        )
    else:
        why = f"No variant's {words} is better than the others' at the {at} level (two-proportion z-test"
        why += f", {_p_words(p_value)})" if p_value is not None else ")"
    if fallback == Experiment.Fallback.NONE:
        return Verdict(
            figures, top.variant_id, False, None, p_value, probability,
            f"{why}: as configured, the rest of the audience is not sent.",
        )  # fmt: skip
    if fallback == Experiment.Fallback.BEST_OBSERVED:
        pick = figures[best_observed]
        reason = f"{why}: as configured, the rest gets “{pick.name}”, the best observed {words} ({_pct(pick.rate)})."
        return Verdict(figures, top.variant_id, False, pick.variant_id, p_value, probability, reason)
    control = figures[0]
    reason = f"{why}: as configured, the rest gets the control, “{control.name}”."
    return Verdict(figures, top.variant_id, False, control.variant_id, p_value, probability, reason)


def experiment_interim(experiment: Experiment) -> Verdict | None:
    """The figures so far of a test under way (what a decision now would say), None before it starts."""
    if experiment.status != Experiment.Status.TESTING:
        return None
    return _verdict(experiment, arm_variants(experiment))


def _verdict(experiment: Experiment, arms: list[Variant]) -> Verdict:
    return experiment_verdict(
        arms=arm_counts(experiment, arms), method=experiment.method, level=float(experiment.significance_level),
        fallback=experiment.fallback, metric=experiment.metric, seed=experiment.pk,
    )  # fmt: skip


def result_rows(experiment: Experiment) -> list[dict[str, Any]]:
    """Each arm's figures: the decision's when decided, else those so far (empty before the test)."""
    if experiment.status in (Experiment.Status.DECIDED, Experiment.Status.SENT):
        return [dict(row) for row in experiment.results]
    interim = experiment_interim(experiment)
    return [arm.as_dict() for arm in interim.arms] if interim else []


def decision_actor(experiment: Experiment) -> str:
    """Who decided (the audit row's actor: a person's email, an API key, or the automatic decision)."""
    if experiment.decided_at is None:
        return ""
    label = (
        AuditLog.objects.filter(
            tenant_id=experiment.tenant_id,
            created_at__gte=experiment.decided_at - dt.timedelta(minutes=1),
            action="experiment.decided",
            object_type="experiment",
            object_id=str(experiment.pk),
        )
        .values_list("actor_label", flat=True)
        .first()
    )
    return label or (experiment.decided_by.email if experiment.decided_by else SYSTEM.label)


# --- decide ------------------------------------------------------------------------------------------
def experiment_decide(*, experiment: Experiment, actor: Actor, now: dt.datetime | None = None) -> Experiment:
    """Decide a test under way now, before its time is up (a person's "decide now")."""
    with transaction.atomic():
        locked = (
            Experiment.objects.select_for_update(of=("self",)).select_related("campaign__tenant").get(pk=experiment.pk)
        )
        if locked.status != Experiment.Status.TESTING:
            raise ValidationError({"status": f"Only a test under way can be decided (this one is {locked.status})."})
        _decide(locked, actor, now or timezone.now())
    return locked


def experiment_decide_due(*, experiment_id: int, now: dt.datetime | None = None) -> Experiment | None:
    """Decide the test when its time is up; None when it is not due or was decided already."""
    now = now or timezone.now()
    with transaction.atomic():
        locked = (
            Experiment.objects.select_for_update(of=("self",))
            .select_related("campaign__tenant")
            .filter(pk=experiment_id)
            .first()
        )
        if locked is None or locked.status != Experiment.Status.TESTING:
            return None
        if locked.decide_at is not None and locked.decide_at > now:
            return None
        _decide(locked, SYSTEM, now)
    return locked


def _decide(experiment: Experiment, actor: Actor, now: dt.datetime) -> None:
    """Store the verdict and release the held deliveries with the winner (the row is locked)."""
    arms = arm_variants(experiment)
    verdict = _verdict(experiment, arms)
    released = _release(experiment, verdict.winner_id, now)
    winner = next((v for v in arms if v.pk == verdict.winner_id), None)
    experiment.winner = winner
    experiment.winner_name = winner.name if winner else ""
    experiment.significant = verdict.significant
    experiment.p_value = verdict.p_value
    experiment.probability = verdict.probability
    experiment.results = [arm.as_dict() for arm in verdict.arms]
    experiment.reason = verdict.reason
    experiment.released_count = released if winner else 0
    experiment.decided_at = now
    experiment.decided_by = actor.user if actor.user is not None and actor.user.pk else None
    experiment.status = Experiment.Status.SENT if winner and released else Experiment.Status.DECIDED
    experiment.save()
    audit(
        tenant=experiment.campaign.tenant, actor=actor, action="experiment.decided", obj=experiment,
        data={
            "campaign": experiment.campaign_id, "run": experiment.run_id, "winner": verdict.winner_id,
            "significant": verdict.significant, "released": released,
        },
    )  # fmt: skip
    if released and experiment.run_id is not None:
        tenant_id, run_id = experiment.tenant_id, experiment.run_id
        # The winner on another channel: the released messages go to its sibling (sent after commit),
        # and the campaign's run, with nothing left, finishes when its send_run finds it empty.
        _winner_to_sibling(experiment, CampaignRun.objects.get(pk=run_id), now)
        transaction.on_commit(lambda: _send_run(tenant_id, run_id))
    logger.info(
        "experiment.decided",
        extra={"tenant_id": experiment.tenant_id, "experiment_id": experiment.pk, "winner": verdict.winner_id,
               "significant": verdict.significant, "released": released},
    )  # fmt: skip


def _release(experiment: Experiment, winner_id: int | None, now: dt.datetime) -> int:
    """Give the held deliveries the winner, due now (or at its hour, or the campaign's local time)."""
    if experiment.run_id is None:
        return 0
    held = Delivery.objects.filter(
        tenant_id=experiment.tenant_id, run_id=experiment.run_id, status=Delivery.Status.PENDING,
        variant_id__isnull=True, not_before=HOLD_UNTIL,
    )  # fmt: skip
    if winner_id is None:
        return held.update(status=Delivery.Status.SKIPPED, skip_reason=Delivery.SkipReason.NO_VARIANT)
    campaign = experiment.campaign
    hour = experiment.arm_send_hours.get(str(winner_id))
    if experiment.tested == Experiment.Tested.SEND_TIME and hour is not None:
        return held.update(variant_id=winner_id, not_before=_at_hour(int(hour), campaign.tenant, now))
    if campaign.schedule == Campaign.Schedule.LOCAL_TIME and campaign.local_time is not None:
        return _release_at_local_time(held, campaign, winner_id, now)
    if campaign.best_time:
        # Each of the rest at their own best hour within the 24 hours after the decision.
        from analytics.send_time import apply_best_times

        released = held.update(variant_id=winner_id, not_before=None)
        run = CampaignRun.objects.select_related("campaign__tenant").get(pk=experiment.run_id)
        apply_best_times(run, after=now)
        return released
    return held.update(variant_id=winner_id, not_before=now)


def _release_at_local_time(held: Any, campaign: Campaign, winner_id: int, now: dt.datetime) -> int:
    """A local-time campaign: the rest gets the winner at the next local time in each recipient's zone."""
    from campaigns.sending import next_local_time, recipient_zone

    assert campaign.local_time is not None
    tenant = campaign.tenant
    zones = set(
        Contact.objects.filter(tenant_id=tenant.pk, pk__in=held.values("contact_id"))
        .values_list("time_zone", flat=True)
        .distinct()
    )
    released = 0
    for name in sorted(zones):
        moment = next_local_time(campaign.local_time, recipient_zone(name, tenant), now)
        in_zone = Contact.objects.filter(tenant_id=tenant.pk, time_zone=name).values("pk")
        released += held.filter(contact_id__in=in_zone).update(variant_id=winner_id, not_before=moment)
    return released


def _send_run(tenant_id: int, run_id: int) -> None:
    from campaigns.tasks import send_run

    send_run.delay(tenant_id, run_id)


# --- tasks ---------------------------------------------------------------------------------------------
@tenant_task(acks_late=True, reject_on_worker_lost=True)
def decide_experiment(tenant_id: int, experiment_id: int) -> bool:
    """Decide when due; come back later when not yet (at most every ``MAX_COUNTDOWN_SECONDS``)."""
    now = timezone.now()
    if experiment_decide_due(experiment_id=experiment_id, now=now) is not None:
        return True
    waiting = Experiment.objects.filter(pk=experiment_id, status=Experiment.Status.TESTING).values_list(
        "decide_at", flat=True
    )
    decide_at = waiting.first()
    if decide_at is not None:
        _queue_decision(tenant_id, experiment_id, (decide_at - now).total_seconds())
    return False


@app.task
def decide_due_experiments() -> int:
    """Every 5 minutes: a decision task per test whose time is up (a lost countdown task is not lost work)."""
    now = timezone.now()
    with platform_access(), transaction.atomic():
        due = list(
            Experiment.all_tenants.filter(status=Experiment.Status.TESTING, decide_at__lte=now)
            .order_by("decide_at")
            .values_list("tenant_id", "id")[:DUE_BATCH]
        )
    for tenant_id, experiment_id in due:
        decide_experiment.delay(tenant_id, experiment_id)
    return len(due)
