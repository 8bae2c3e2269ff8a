"""Writing journeys: settings, steps of the draft version, publishing, pausing, archiving, templates.

Steps are edited on the journey's draft version, addressed by their key (keys survive from one
version to the next, which is how a publish can move contacts in flight). A journey that never
started has version 1 as its draft; a live journey gets a draft copied from the live version at
its first edit, and new entrants get it once it is published (``journey_start``).

The engine (journeys/engine.py) runs what is published.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone

from campaigns.models import Campaign
from campaigns.services import journey_campaign_copy, journey_campaign_save
from campaigns.validation import PREFERRED, ContentCheck, content_missing
from journeys.models import Enrollment, Journey, JourneyVersion, Step, StepKind
from journeys.validation import Problem, StepSpec, exit_labels, graph_problems, settings_problems, step_problems
from segments.models import Segment
from segments.rules import Registry
from tenants.audit import Actor, audit
from tenants.models import Tenant

# The journey's own settings a caller may write (the trigger, entry, goal and exit rules).
SETTINGS_FIELDS = (
    "name", "description", "trigger", "trigger_segment_id", "trigger_event", "trigger_filters", "trigger_stage",
    "trigger_date_field", "entry", "cooldown_days", "entry_segment_id", "daily_cap", "goal_event", "exit_segment_id",
    "exit_on_consent_withdrawn", "purpose",
)  # fmt: skip
STEP_FIELDS = ("name", "config", "exits")
# A send step's content: the hidden campaign's channel settings and variants.
CONTENT_FIELDS = ("variants", "sender_name", "sender_email", "reply_to", "sms_sender", "webhook_url")
EDITABLE = (Journey.Status.DRAFT, Journey.Status.LIVE, Journey.Status.PAUSED)


class JourneyInvalid(ValidationError):
    """A journey that cannot start: ``problems`` says what to fix and where (step and field)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__({"problems": [p.message for p in problems]})
        self.problems = list(problems)


# --- settings ----------------------------------------------------------------------------------
def _locked(journey: Journey) -> Journey:
    return Journey.objects.select_for_update().select_related("tenant").get(tenant=journey.tenant_id, pk=journey.pk)


def _apply_settings(journey: Journey, data: Mapping[str, Any]) -> None:
    unknown = set(data) - set(SETTINGS_FIELDS)
    if unknown:
        raise ValidationError({key: ["Unknown field."] for key in sorted(unknown)})
    for name, value in data.items():
        setattr(journey, name, value)
    for name in ("trigger_segment_id", "entry_segment_id", "exit_segment_id"):
        value = getattr(journey, name)
        if value is not None and not Segment.objects.filter(tenant=journey.tenant_id, pk=value).exists():
            raise ValidationError({name.removesuffix("_id"): ["No such segment in this workspace."]})
    if journey.trigger != Journey.Trigger.EVENT:
        journey.trigger_filters = []
    journey.full_clean(exclude=["tenant", "created_by", "live_version", *_FK_NAMES], validate_unique=False)
    problems = [p for p in settings_problems(journey, Registry.for_tenant(journey.tenant)) if p.field != "trigger"]
    if problems:
        raise ValidationError({p.field or "__all__": [p.message] for p in problems})
    clash = Journey.objects.filter(tenant=journey.tenant_id, name=journey.name).exclude(pk=journey.pk)
    if clash.exists():
        raise ValidationError({"name": ["Another journey has this name."]})


_FK_NAMES = ("trigger_segment", "entry_segment", "exit_segment")


@transaction.atomic
def journey_create(*, tenant: Tenant, actor: Actor, data: Mapping[str, Any]) -> Journey:
    """Create a draft journey from its settings; ``data["steps"]`` (optional) are its first steps."""
    settings = {k: v for k, v in data.items() if k not in ("steps", "start_key")}
    journey = Journey(tenant=tenant, created_by=actor.user)
    _apply_settings(journey, settings)
    journey.save()
    version = JourneyVersion.objects.create(tenant=tenant, journey=journey, number=1)
    if "steps" in data:
        steps_replace(journey=journey, actor=actor, steps=data["steps"], start_key=data.get("start_key"))
    audit(tenant=tenant, actor=actor, action="journey.created", obj=journey, data={"version": version.number})
    return journey


@transaction.atomic
def journey_update(*, journey: Journey, actor: Actor, data: Mapping[str, Any]) -> Journey:
    """Change a journey's settings (and, with ``steps``, replace its draft's steps)."""
    journey = _locked(journey)
    if journey.status not in EDITABLE:
        raise ValidationError("An archived journey cannot be edited.")
    settings = {k: v for k, v in data.items() if k not in ("steps", "start_key")}
    if settings:
        _apply_settings(journey, settings)
        journey.save()
    if "steps" in data:
        steps_replace(journey=journey, actor=actor, steps=data["steps"], start_key=data.get("start_key"))
    audit(tenant=journey.tenant, actor=actor, action="journey.updated", obj=journey, data={"fields": sorted(data)})
    return journey


@transaction.atomic
def journey_delete(*, journey: Journey, actor: Actor) -> None:
    """Delete a journey that never started (one that did is archived, and keeps its results)."""
    journey = _locked(journey)
    if journey.live_version_id is not None:
        raise ValidationError("A journey that has started cannot be deleted: archive it instead.")
    campaign_ids = list(
        Step.objects.filter(tenant=journey.tenant_id, version__journey=journey, campaign__isnull=False).values_list(
            "campaign_id", flat=True
        )
    )
    audit(tenant=journey.tenant, actor=actor, action="journey.deleted", obj=journey)
    journey.delete()
    Campaign.objects.filter(tenant=journey.tenant_id, pk__in=campaign_ids).delete()


# --- the draft and its steps ---------------------------------------------------------------------
def journey_draft(*, journey: Journey) -> JourneyVersion:
    """The version being edited: the unpublished one, or a copy of the live version made now."""
    draft = JourneyVersion.objects.filter(tenant=journey.tenant_id, journey=journey, published_at__isnull=True).first()
    if draft is not None:
        return draft
    live = JourneyVersion.objects.get(tenant=journey.tenant_id, pk=journey.live_version_id)
    number = JourneyVersion.objects.filter(tenant=journey.tenant_id, journey=journey).aggregate(n=Max("number"))["n"]
    draft = JourneyVersion.objects.create(
        tenant_id=journey.tenant_id, journey=journey, number=number + 1, start_key=live.start_key
    )
    for step in Step.objects.filter(tenant=journey.tenant_id, version=live).select_related("campaign"):
        campaign = journey_campaign_copy(campaign=step.campaign) if step.campaign is not None else None
        Step.objects.create(
            tenant_id=journey.tenant_id, version=draft, key=step.key, kind=step.kind, name=step.name,
            config=step.config, exits=step.exits, campaign=campaign, position=step.position,
        )  # fmt: skip
    return draft


def _draft_steps(draft: JourneyVersion) -> dict[str, Step]:
    return {step.key: step for step in Step.objects.filter(tenant=draft.tenant_id, version=draft).order_by("position")}


def _editable(journey: Journey) -> tuple[Journey, JourneyVersion]:
    journey = _locked(journey)
    if journey.status not in EDITABLE:
        raise ValidationError("An archived journey cannot be edited.")
    return journey, journey_draft(journey=journey)


def _new_key(steps: Mapping[str, Step]) -> str:
    numbers = [int(key[1:]) for key in steps if key.startswith("s") and key[1:].isdigit()]
    return f"s{max(numbers, default=0) + 1}"


def _first_exit(kind: str, config: Mapping[str, Any]) -> str | None:
    labels = exit_labels(kind, config)
    return labels[0] if labels else None


def _check_step(journey: Journey, kind: str, config: Any, key: str, has_content: bool = True) -> None:
    spec = StepSpec(key=key, kind=kind, config=config if isinstance(config, dict) else {}, exits={})
    problems = step_problems(spec, Registry.for_tenant(journey.tenant))
    problems = [p for p in problems if p.field != "variants" or has_content]
    if not isinstance(config, dict):
        problems.insert(0, Problem("Expected an object.", "config", key))
    if problems:
        raise ValidationError({p.field or "__all__": [p.message] for p in problems})


def _channel_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The step campaign's channel from its config: one channel, or each contact's preferred one of
    ``channels`` (the campaign sends on the first, its siblings on the others)."""
    if config["channel"] == PREFERRED:
        channels = list(config["channels"])
        return {"channel": channels[0], "preferred_channel": True, "preferred_channels": channels}
    return {"channel": config["channel"], "preferred_channel": False}


def _save_content(journey: Journey, step: Step, content: Mapping[str, Any] | None) -> ContentCheck:
    """Write a send step's campaign: channel from the config, the journey's purpose and goal."""
    data: dict[str, Any] = dict((content or {}).items())
    unknown = set(data) - set(CONTENT_FIELDS)
    if unknown:
        raise ValidationError({f"content.{key}": ["Unknown field."] for key in sorted(unknown)})
    data.update(purpose=journey.purpose, goal_event=journey.goal_event, **_channel_settings(step.config))
    try:
        campaign, check = journey_campaign_save(
            tenant=journey.tenant, campaign=step.campaign, name=f"{journey.name} · {step.name or step.key}", data=data
        )
    except ValidationError as error:
        raise ValidationError({f"content.{k}": v for k, v in error.message_dict.items()}) from error
    if step.campaign_id != campaign.pk:
        step.campaign = campaign
        step.save(update_fields=["campaign"])
    return check


@transaction.atomic
def step_add(
    *, journey: Journey, actor: Actor, kind: str, after: str | None = None, exit: str = "next",
    name: str = "", config: Mapping[str, Any] | None = None, content: Mapping[str, Any] | None = None,
) -> Step:  # fmt: skip
    """Insert a step after step ``after`` on its exit ``exit`` (at the start when ``after`` is None).

    What followed there now follows the new step (on its first exit).
    """
    journey, draft = _editable(journey)
    steps = _draft_steps(draft)
    config = dict(config or {})
    key = _new_key(steps)
    _check_step(journey, kind, config, key, has_content=False)
    if after is not None:
        parent = steps.get(after)
        if parent is None:
            raise ValidationError({"after": ["No such step in this journey."]})
        if exit not in exit_labels(parent.kind, parent.config):
            raise ValidationError({"exit": [f"Step {after} has no exit {exit!r}."]})
        following = parent.exits.get(exit)
    else:
        following = draft.start_key or None
    exits: dict[str, str | None] = dict.fromkeys(exit_labels(kind, config))
    first = _first_exit(kind, config)
    if first is not None:
        exits[first] = following
    position = (steps[after].position + 1) if after is not None else 0
    Step.objects.filter(tenant=journey.tenant_id, version=draft, position__gte=position).update(
        position=F("position") + 1
    )
    step = Step.objects.create(
        tenant_id=journey.tenant_id, version=draft, key=key, kind=kind, name=name[:200], config=config,
        exits=exits, position=position,
    )  # fmt: skip
    _attach(draft, steps, key, after, exit)
    if kind == StepKind.SEND:
        _save_content(journey, step, content)
    audit(tenant=journey.tenant, actor=actor, action="journey.step_added", obj=journey, data={"step": key})
    return step


@transaction.atomic
def step_update(
    *, journey: Journey, actor: Actor, key: str, data: Mapping[str, Any], content: Mapping[str, Any] | None = None
) -> tuple[Step, ContentCheck]:
    """Change a step's name, config or exits (``data``) and, for a send step, its message (``content``)."""
    journey, draft = _editable(journey)
    steps = _draft_steps(draft)
    step = steps.get(key)
    if step is None:
        raise ValidationError({"key": ["No such step in this journey."]})
    unknown = set(data) - set(STEP_FIELDS)
    if unknown:
        raise ValidationError({name: ["Unknown field."] for name in sorted(unknown)})
    if "name" in data:
        step.name = str(data["name"] or "")[:200]
    if "config" in data:
        _check_step(journey, step.kind, data["config"], key, has_content=False)
        step.config = dict(data["config"])
    labels = exit_labels(step.kind, step.config)
    exits = dict(data["exits"]) if "exits" in data and isinstance(data["exits"], dict) else dict(step.exits)
    if "exits" in data and not isinstance(data["exits"], dict):
        raise ValidationError({"exits": ["Expected {exit label: step key or null}."]})
    # A split's paths may have been renamed: keep the exits that still exist, add the new ones.
    step.exits = {label: exits.get(label) for label in labels}
    for label, target in step.exits.items():
        if target is not None and (target not in steps or target == key):
            raise ValidationError({f"exits.{label}": ["Expected the key of another step of this journey, or null."]})
    step.save()
    check = ContentCheck()
    if step.kind == StepKind.SEND and (content is not None or "config" in data):
        check = _save_content(journey, step, content)
    audit(tenant=journey.tenant, actor=actor, action="journey.step_updated", obj=journey, data={"step": key})
    return step, check


def _attach(draft: JourneyVersion, steps: Mapping[str, Step], key: str, after: str | None, exit: str) -> None:
    """Make step ``key`` follow step ``after`` on its exit ``exit``, or be the first step."""
    if after is not None:
        parent = steps[after]
        parent.exits = {**parent.exits, exit: key}
        parent.save(update_fields=["exits"])
    else:
        draft.start_key = key
        draft.save(update_fields=["start_key"])


def _relink(draft: JourneyVersion, steps: dict[str, Step], key: str, to: str | None) -> None:
    """Point every exit (and the start) that leads to ``key`` at ``to`` instead."""
    for other in steps.values():
        if other.key != key and key in other.exits.values():
            other.exits = {label: (to if target == key else target) for label, target in other.exits.items()}
            other.save(update_fields=["exits"])
    if draft.start_key == key:
        draft.start_key = to or ""
        draft.save(update_fields=["start_key"])


def _prune(draft: JourneyVersion) -> list[str]:
    """Delete the steps no path reaches any more; return their keys."""
    steps = _draft_steps(draft)
    reached: set[str] = set()
    stack = [draft.start_key] if draft.start_key in steps else []
    while stack:
        key = stack.pop()
        if key in reached:
            continue
        reached.add(key)
        stack.extend(t for t in steps[key].exits.values() if t in steps)
    gone = [key for key in steps if key not in reached]
    for key in gone:
        step = steps[key]
        if step.campaign is not None:
            step.campaign.delete()
        step.delete()
    return gone


@transaction.atomic
def step_delete(*, journey: Journey, actor: Actor, key: str, keep: str | None = None) -> list[str]:
    """Remove a step; what came before it now leads to what followed on exit ``keep`` (its first exit
    by default). Steps only the other exits led to are removed too; return every removed key."""
    journey, draft = _editable(journey)
    steps = _draft_steps(draft)
    step = steps.get(key)
    if step is None:
        raise ValidationError({"key": ["No such step in this journey."]})
    labels = exit_labels(step.kind, step.config)
    keep = keep or (labels[0] if labels else None)
    if keep is not None and keep not in labels:
        raise ValidationError({"keep": [f"This step has no exit {keep!r}."]})
    following = step.exits.get(keep) if keep is not None else None
    _relink(draft, steps, key, following)
    if step.campaign is not None:
        step.campaign.delete()
    step.delete()
    gone = [key, *_prune(draft)]
    audit(tenant=journey.tenant, actor=actor, action="journey.step_deleted", obj=journey, data={"steps": gone})
    return gone


@transaction.atomic
def step_move(*, journey: Journey, actor: Actor, key: str, after: str | None, exit: str = "next") -> Step:
    """Move a one-exit step to follow step ``after`` on exit ``exit`` (to the start when None).

    The step leaves its place (what came before it now leads to what followed it) and is
    inserted at the new one. "Up" and "down" in the builder are moves after the step two
    before, or after the next one.
    """
    journey, draft = _editable(journey)
    steps = _draft_steps(draft)
    step = steps.get(key)
    if step is None:
        raise ValidationError({"key": ["No such step in this journey."]})
    labels = exit_labels(step.kind, step.config)
    if len(labels) != 1:
        raise ValidationError({"key": ["Only a step with one exit can move; delete and re-add a branch instead."]})
    if after == key:
        raise ValidationError({"after": ["A step cannot follow itself."]})
    if after is not None and after not in steps:
        raise ValidationError({"after": ["No such step in this journey."]})
    if after is not None and exit not in exit_labels(steps[after].kind, steps[after].config):
        raise ValidationError({"exit": [f"Step {after} has no exit {exit!r}."]})
    _relink(draft, steps, key, step.exits.get(labels[0]))
    steps = _draft_steps(draft)
    following = steps[after].exits.get(exit) if after is not None else (draft.start_key or None)
    step = steps[key]
    step.exits = {labels[0]: following}
    step.save(update_fields=["exits"])
    _attach(draft, steps, key, after, exit)
    problems = graph_problems(draft.start_key, _specs(_draft_steps(draft)))
    if any("comes back" in p.message for p in problems):
        raise ValidationError({"after": ["That move would make a path loop."]})
    audit(tenant=journey.tenant, actor=actor, action="journey.step_moved", obj=journey, data={"step": key})
    return step


@transaction.atomic
def steps_replace(
    *, journey: Journey, actor: Actor, steps: Sequence[Mapping[str, Any]], start_key: str | None = None
) -> list[Step]:
    """Replace the draft's steps with ``steps`` (the API's whole-graph write).

    Each item: ``key``, ``kind``, ``name``, ``config``, ``exits`` and, for a send step, ``content``.
    Steps keep their campaign when their key and kind stay. The graph is checked when the
    journey starts; here each step's own settings are.
    """
    journey, draft = _editable(journey)
    if not isinstance(steps, list | tuple):
        raise ValidationError({"steps": ["Expected a list of steps."]})
    existing = _draft_steps(draft)
    errors: dict[str, list[str]] = {}
    seen: set[str] = set()
    for index, item in enumerate(steps):
        path = f"steps[{index}]"
        if not isinstance(item, Mapping):
            errors[path] = ["Expected a step object."]
            continue
        unknown = set(item) - {"key", "kind", "name", "config", "exits", "content"}
        for name in sorted(unknown):
            errors[f"{path}.{name}"] = ["Unknown field."]
        key = item.get("key")
        if not isinstance(key, str) or not key or len(key) > 40 or not key.replace("_", "").isalnum():
            errors[f"{path}.key"] = ["A key: letters, digits or _, 40 at most."]
        elif key in seen:
            errors[f"{path}.key"] = ["Each step needs its own key."]
        else:
            seen.add(key)
        if not isinstance(item.get("exits", {}), dict):
            errors[f"{path}.exits"] = ["Expected {exit label: step key or null}."]
        spec = StepSpec(key=str(key), kind=str(item.get("kind")), config=item.get("config") or {}, exits={})
        if not isinstance(item.get("config", {}), dict):
            errors[f"{path}.config"] = ["Expected an object."]
            continue
        for problem in step_problems(spec, Registry.for_tenant(journey.tenant)):
            if problem.field != "variants":
                errors.setdefault(f"{path}.{problem.field or 'kind'}", []).append(problem.message)
    if errors:
        raise ValidationError(errors)
    keep_campaign = {
        item["key"]: existing[item["key"]].campaign
        for item in steps
        if item["key"] in existing and existing[item["key"]].kind == item["kind"]
    }
    for key, step in existing.items():
        if step.campaign is not None and keep_campaign.get(key) is None:
            step.campaign.delete()
    Step.objects.filter(tenant=journey.tenant_id, version=draft).delete()
    created: list[Step] = []
    for position, item in enumerate(steps):
        labels = exit_labels(item["kind"], item.get("config") or {})
        exits = item.get("exits") or {}
        step = Step.objects.create(
            tenant_id=journey.tenant_id, version=draft, key=item["key"], kind=item["kind"],
            name=str(item.get("name") or "")[:200], config=dict(item.get("config") or {}),
            exits={label: exits.get(label) for label in labels}, position=position,
            campaign=keep_campaign.get(item["key"]),
        )  # fmt: skip
        if step.kind == StepKind.SEND:
            try:
                _save_content(journey, step, item.get("content"))
            except ValidationError as error:
                raise ValidationError({f"steps[{position}].{k}": v for k, v in error.message_dict.items()}) from error
        created.append(step)
    draft.start_key = start_key if start_key is not None else (created[0].key if created else "")
    draft.save(update_fields=["start_key"])
    return created


# --- checking and publishing ---------------------------------------------------------------------
def _specs(steps: Mapping[str, Step]) -> list[StepSpec]:
    """The steps as the validator sees them; a send step has content when its campaign has a variant."""
    from campaigns.models import Variant

    campaigns = {step.campaign_id: step.tenant_id for step in steps.values() if step.campaign_id is not None}
    written = set(
        Variant.objects.filter(tenant_id__in=set(campaigns.values()), campaign_id__in=list(campaigns))
        .values_list("campaign_id", flat=True)
        .distinct()
        if campaigns
        else ()
    )
    missing = _preferred_content_missing(steps)
    return [
        StepSpec(
            key=step.key,
            kind=step.kind,
            config=step.config,
            exits=step.exits,
            has_content=step.kind != StepKind.SEND or step.campaign_id in written,
            missing_content=tuple(missing.get(step.key, ())),
        )
        for step in steps.values()
    ]


def _preferred_content_missing(steps: Mapping[str, Step]) -> dict[str, list[str]]:
    """Send steps on each contact's preferred channel: what each variant lacks for one of the step's channels."""
    from campaigns.models import CampaignChannel, Variant

    preferred = {
        step.campaign_id: step
        for step in steps.values()
        if step.kind == StepKind.SEND and step.campaign_id is not None and step.config.get("channel") == PREFERRED
    }
    missing: dict[str, list[str]] = {}
    if not preferred:
        return missing
    tenant_ids = {step.tenant_id for step in preferred.values()}
    variants = Variant.objects.filter(tenant_id__in=tenant_ids, campaign_id__in=list(preferred)).order_by("position")
    for variant in variants:
        step = preferred[variant.campaign_id]
        channels = step.config.get("channels")
        for channel in channels if isinstance(channels, list) else []:
            if channel in CampaignChannel.values:
                said = f"Variant “{variant.name}” ({CampaignChannel(channel).label})"
                gaps = content_missing(variant, channel)
                missing.setdefault(step.key, []).extend(f"{said}: {message}" for _field, message in gaps)
    return missing


def journey_problems(*, journey: Journey, version: JourneyVersion | None = None) -> list[Problem]:
    """What stops ``version`` (the draft, or the live version when there is no draft) from running."""
    if version is None:
        version = (
            JourneyVersion.objects.filter(tenant=journey.tenant_id, journey=journey, published_at__isnull=True).first()
            or JourneyVersion.objects.filter(tenant=journey.tenant_id, pk=journey.live_version_id).first()
        )
    registry = Registry.for_tenant(journey.tenant)
    problems = settings_problems(journey, registry)
    if version is None:
        return [*problems, Problem("Add a first step.", "steps")]
    specs = _specs(_draft_steps(version))
    for spec in specs:
        problems += step_problems(spec, registry)
    problems += graph_problems(version.start_key, specs)
    return problems


@transaction.atomic
def journey_start(*, journey: Journey, actor: Actor, migrate: bool = False) -> Journey:
    """Start (or resume) a journey: publish its draft, if any, as the version new entrants get.

    With ``migrate``, contacts in flight on older versions move to the same step (by key) of
    the new version; those whose step is gone stay where they are.
    """
    journey = _locked(journey)
    if journey.status == Journey.Status.ARCHIVED:
        raise ValidationError("An archived journey cannot start again: duplicate it instead.")
    draft = JourneyVersion.objects.filter(tenant=journey.tenant_id, journey=journey, published_at__isnull=True).first()
    if draft is None and journey.live_version_id is None:
        raise JourneyInvalid([Problem("Add a first step.", "steps")])
    problems = journey_problems(journey=journey, version=draft)
    if problems:
        raise JourneyInvalid(problems)
    now = timezone.now()
    moved = 0
    if draft is not None:
        draft.published_at = now
        draft.save(update_fields=["published_at"])
        journey.live_version = draft
        if migrate:
            moved = _migrate(journey, draft)
    journey.status = Journey.Status.LIVE
    journey.save(update_fields=["status", "live_version", "updated_at"])
    audit(
        tenant=journey.tenant, actor=actor, action="journey.started", obj=journey,
        data={"version": journey.live_version.number if journey.live_version else None, "moved": moved},
    )  # fmt: skip
    return journey


def _migrate(journey: Journey, version: JourneyVersion) -> int:
    """Move active enrollments of older versions to the step with the same key in ``version``."""
    new_steps = {s.key: s.pk for s in Step.objects.filter(tenant=journey.tenant_id, version=version)}
    moved = 0
    active = Enrollment.objects.filter(tenant=journey.tenant_id, journey=journey, status=Enrollment.Status.ACTIVE)
    for old in Step.objects.filter(tenant=journey.tenant_id, version__journey=journey).exclude(version=version):
        target = new_steps.get(old.key)
        if target is not None:
            moved += active.filter(step_id=old.pk).update(version=version, step_id=target)
    return moved


@transaction.atomic
def journey_pause(*, journey: Journey, actor: Actor) -> Journey:
    """Stop entries and steps; contacts in flight wait where they are until the journey resumes."""
    journey = _locked(journey)
    if journey.status != Journey.Status.LIVE:
        raise ValidationError("Only a live journey can be paused.")
    journey.status = Journey.Status.PAUSED
    journey.save(update_fields=["status", "updated_at"])
    audit(tenant=journey.tenant, actor=actor, action="journey.paused", obj=journey)
    return journey


@transaction.atomic
def journey_archive(*, journey: Journey, actor: Actor) -> int:
    """End a journey for good: contacts in flight exit; return how many."""
    journey = _locked(journey)
    now = timezone.now()
    exited = Enrollment.objects.filter(
        tenant=journey.tenant_id, journey=journey, status=Enrollment.Status.ACTIVE
    ).update(status=Enrollment.Status.EXITED, finished_at=now, exit_reason="journey archived", next_run_at=None)
    journey.status = Journey.Status.ARCHIVED
    journey.save(update_fields=["status", "updated_at"])
    audit(tenant=journey.tenant, actor=actor, action="journey.archived", obj=journey, data={"exited": exited})
    return exited


# --- blueprints ------------------------------------------------------------------------------------
@transaction.atomic
def journey_from_blueprint(*, tenant: Tenant, actor: Actor, blueprint: str, name: str | None = None) -> Journey:
    """Create a draft journey from a built-in blueprint (journeys/blueprints.py), with the segments and
    custom attributes it needs when the tenant lacks them."""
    from contacts.models import AttributeDefinition
    from contacts.services import attribute_define
    from journeys.blueprints import BLUEPRINTS
    from segments.services import segment_create

    chosen = BLUEPRINTS.get(blueprint)
    if chosen is None:
        raise ValidationError({"blueprint": [f"Expected one of {', '.join(BLUEPRINTS)}."]})
    for key, (label, kind) in chosen.attributes.items():
        if not AttributeDefinition.objects.filter(tenant=tenant, key=key).exists():
            attribute_define(tenant=tenant, key=key, label=label, type=kind, actor=actor)
    segment_ids: dict[str, int] = {}
    for segment_name, rules in chosen.segments.items():
        segment = Segment.objects.filter(tenant=tenant, name=segment_name).first()
        if segment is None:
            segment = segment_create(tenant=tenant, actor=actor, name=segment_name, rules=rules)
        segment_ids[f"segment:{segment_name}"] = segment.pk
    settings: dict[str, Any] = {
        key: segment_ids.get(value, value) if isinstance(value, str) else value
        for key, value in chosen.settings.items()
    }
    settings["name"] = _free_name(tenant, name or chosen.name)
    settings["description"] = chosen.description
    return journey_create(tenant=tenant, actor=actor, data={**settings, "steps": chosen.steps})


def _free_name(tenant: Tenant, name: str) -> str:
    taken = set(Journey.objects.filter(tenant=tenant, name__startswith=name).values_list("name", flat=True))
    if name not in taken:
        return name
    number = 2
    while f"{name} ({number})" in taken:
        number += 1
    return f"{name} ({number})"
