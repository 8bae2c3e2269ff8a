"""What makes a journey valid: its trigger, entry and exit rules, and a graph of steps that ends.

Every problem names where it is (``step`` key and ``field``) and says what to do, so the builder
can show it on the step and the API answer it as a 400. docs/journeys.md documents each step
kind's ``config`` and ``exits``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from campaigns.models import CampaignChannel
from campaigns.validation import PREFERRED, preferred_channel_errors
from contacts.models import AttributeDefinition, Channel, LifecycleStage
from journeys.models import Journey, StepKind
from segments.rules import Registry, validate

EVENT_NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,100}")
KEY = re.compile(r"[a-z0-9_]{1,40}")
LABEL = re.compile(r"[a-z][a-z0-9_]{0,19}")
TIME = re.compile(r"([01]\d|2[0-3]):[0-5]\d")
UNITS = {"minutes": 60, "hours": 3600, "days": 86400, "weeks": 7 * 86400}
MAX_WAIT = dt.timedelta(days=366)
MAX_STEPS = 100
MAX_PATHS = 5
DATE_FIELDS = ("birth_date",)

# The exits each kind has; a split's are its paths' labels.
EXITS: dict[str, tuple[str, ...]] = {
    StepKind.SEND: ("next",),
    StepKind.WAIT: ("next",),
    StepKind.WAIT_UNTIL: ("next",),
    StepKind.WAIT_EVENT: ("happened", "timed_out"),
    StepKind.BRANCH: ("yes", "no"),
    StepKind.UPDATE: ("next",),
    StepKind.WEBHOOK: ("next",),
    StepKind.EXIT: (),
}


@dataclass(frozen=True)
class Problem:
    """Something to fix before a journey can start: on a step (``step`` key) or on the journey."""

    message: str
    field: str = ""
    step: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"step": self.step, "field": self.field, "message": self.message}


@dataclass(frozen=True)
class StepSpec:
    """A step as the validator sees it (a saved ``Step`` or the builder's unsaved input)."""

    key: str
    kind: str
    config: Mapping[str, Any]
    exits: Mapping[str, Any]
    has_content: bool = True
    # A send step on each contact's preferred channel: what its variants lack for one of its channels.
    missing_content: tuple[str, ...] = ()


def duration(value: Any) -> dt.timedelta | None:
    """``{"amount": 2, "unit": "days"}`` as a timedelta; None when malformed."""
    if not isinstance(value, Mapping) or value.get("unit") not in UNITS:
        return None
    amount = value.get("amount")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount < 1:
        return None
    try:
        return dt.timedelta(seconds=amount * UNITS[value["unit"]])
    except OverflowError:
        return None


def exit_labels(kind: str, config: Mapping[str, Any]) -> tuple[str, ...]:
    if kind == StepKind.SPLIT:
        paths = config.get("paths")
        if isinstance(paths, list):
            return tuple(str(p.get("label")) for p in paths if isinstance(p, Mapping))
        return ()
    return EXITS.get(kind, ())


# --- the journey's own settings ------------------------------------------------------------------
def settings_problems(journey: Journey, registry: Registry) -> list[Problem]:
    """Trigger, entry and exit rules."""
    problems: list[Problem] = []
    segments = registry.segment_names
    trigger = journey.trigger
    if trigger == Journey.Trigger.SEGMENT_ENTERED:
        if journey.trigger_segment_id not in segments:
            problems.append(Problem("Choose the segment whose new members enter.", "trigger_segment"))
    elif trigger == Journey.Trigger.EVENT:
        if not EVENT_NAME.fullmatch(journey.trigger_event or ""):
            problems.append(Problem("Name the event that starts the journey.", "trigger_event"))
        problems += filter_problems(journey.trigger_filters, registry, "trigger_filters")
    elif trigger == Journey.Trigger.STAGE_CHANGED:
        if journey.trigger_stage not in ("", *LifecycleStage.values):  # blank: any change of stage
            problems.append(Problem("Choose the lifecycle stage that starts the journey.", "trigger_stage"))
    elif trigger == Journey.Trigger.DATE_ATTRIBUTE:
        if journey.trigger_date_field not in date_fields(registry):
            choices = ", ".join(date_fields(registry))
            problems.append(Problem(f"Choose a date field: {choices}.", "trigger_date_field"))
    else:
        problems.append(Problem("Choose a trigger.", "trigger"))
    if journey.entry == Journey.Entry.COOLDOWN and not journey.cooldown_days:
        problems.append(Problem("A cooldown is at least one day.", "cooldown_days"))
    for name in ("entry_segment_id", "exit_segment_id"):
        value = getattr(journey, name)
        if value is not None and value not in segments:
            problems.append(Problem("No such segment in this workspace.", name.removesuffix("_id")))
    if journey.goal_event and not EVENT_NAME.fullmatch(journey.goal_event):
        problems.append(Problem("An event name: letters, digits, _ . : - (100 at most).", "goal_event"))
    if journey.exit_on_consent_withdrawn and journey.exit_on_consent_withdrawn not in Channel.values:
        problems.append(Problem("Choose a channel.", "exit_on_consent_withdrawn"))
    return problems


def date_fields(registry: Registry) -> tuple[str, ...]:
    """The fields a date trigger may use: the birth date and the tenant's date attributes."""
    attributes = AttributeDefinition.objects.filter(
        tenant=registry.tenant, type=AttributeDefinition.Type.DATE
    ).values_list("key", flat=True)
    return (*DATE_FIELDS, *(f"attributes.{key}" for key in sorted(attributes)))


def filter_problems(filters: Any, registry: Registry, field: str) -> list[Problem]:
    """Event property filters, in the segment rule language's ``where`` form."""
    if filters in (None, []):
        return []
    probe = {"all": [{"type": "event", "name": "probe", "op": "performed", "where": filters}]}
    prefix = "all.0.where"
    return [
        Problem(error.message, field + error.path.removeprefix(prefix))
        for error in validate(probe, registry)
        if error.path.startswith(prefix)
    ] or ([Problem("Expected a list of property filters.", field)] if not isinstance(filters, list) else [])


# --- steps ---------------------------------------------------------------------------------------
def step_problems(step: StepSpec, registry: Registry) -> list[Problem]:
    """One step's config, on its own (the graph is checked by ``graph_problems``)."""

    def problem(message: str, field: str = "config") -> Problem:
        return Problem(message, field, step.key)

    config = step.config if isinstance(step.config, Mapping) else {}
    kind = step.kind
    problems: list[Problem] = []
    if kind not in StepKind.values:
        return [problem(f"Unknown step kind; expected one of {', '.join(StepKind.values)}.", "kind")]
    if kind == StepKind.SEND:
        channel = config.get("channel")
        if channel == PREFERRED:
            # Each contact's preferred channel among ``channels`` (analytics/preferred_channel.py).
            wrong = preferred_channel_errors(preferred=True, channels=config.get("channels"))
            problems += [problem(m, "config.channels") for messages in wrong.values() for m in messages]
        elif channel not in CampaignChannel.values:
            choices = ", ".join([*CampaignChannel.values, PREFERRED])
            problems.append(problem(f"Expected one of {choices}.", "config.channel"))
        if not step.has_content:
            problems.append(problem("Write the message: add at least one variant.", "variants"))
        problems += [problem(message, "variants") for message in step.missing_content]
    elif kind == StepKind.WAIT:
        wait = duration(config.get("duration"))
        if wait is None or wait > MAX_WAIT:
            problems.append(problem(_DURATION_HELP, "config.duration"))
    elif kind == StepKind.WAIT_UNTIL:
        days = config.get("weekdays")
        if not isinstance(days, list) or not days or any(d not in range(7) or isinstance(d, bool) for d in days):
            problems.append(problem("Pick at least one weekday (0 Monday … 6 Sunday).", "config.weekdays"))
        if not isinstance(config.get("time"), str) or not TIME.fullmatch(config["time"]):
            problems.append(problem("A time of day as HH:MM, e.g. 09:00.", "config.time"))
    elif kind == StepKind.WAIT_EVENT:
        if not isinstance(config.get("event"), str) or not EVENT_NAME.fullmatch(config["event"]):
            problems.append(problem("Name the event to wait for.", "config.event"))
        problems += [
            Problem(p.message, "config." + p.field, step.key)
            for p in filter_problems(config.get("filters"), registry, "filters")
        ]
        timeout = duration(config.get("timeout"))
        if timeout is None or timeout > MAX_WAIT:
            problems.append(problem(_DURATION_HELP, "config.timeout"))
    elif kind == StepKind.BRANCH:
        rules = config.get("rules")
        errors = validate(rules, registry)
        problems += [problem(e.message, "config.rules" + ("." + e.path if e.path else "")) for e in errors]
    elif kind == StepKind.SPLIT:
        problems += _split_problems(config, problem)
    elif kind == StepKind.UPDATE:
        problems += _update_problems(config, registry, problem)
    elif kind == StepKind.WEBHOOK:
        url = config.get("url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")) or len(url) > 500:
            problems.append(problem("An https:// URL (500 characters at most).", "config.url"))
    return problems


_DURATION_HELP = 'A duration: {"amount": a whole number ≥ 1, "unit": minutes, hours, days or weeks}, a year at most.'


def _split_problems(config: Mapping[str, Any], problem: Any) -> list[Problem]:
    paths = config.get("paths")
    if not isinstance(paths, list) or not 2 <= len(paths) <= MAX_PATHS:
        return [problem(f"A split has 2 to {MAX_PATHS} paths.", "config.paths")]
    problems: list[Problem] = []
    labels: set[str] = set()
    for index, path in enumerate(paths):
        where = f"config.paths[{index}]"
        if not isinstance(path, Mapping):
            problems.append(problem('Expected {"label": "a", "weight": 50}.', where))
            continue
        label, weight = path.get("label"), path.get("weight")
        if not isinstance(label, str) or not LABEL.fullmatch(label) or label in ("next",):
            problems.append(problem("A short label: a lower-case letter, then letters, digits or _.", where + ".label"))
        elif label in labels:
            problems.append(problem("Each path needs its own label.", where + ".label"))
        else:
            labels.add(label)
        if not isinstance(weight, int) or isinstance(weight, bool) or not 1 <= weight <= 10_000:
            problems.append(problem("A weight from 1 to 10,000.", where + ".weight"))
    return problems


def _update_problems(config: Mapping[str, Any], registry: Registry, problem: Any) -> list[Problem]:
    problems: list[Problem] = []
    known = set(config) - {"set_attributes", "add_to_list", "stage"}
    if known:
        problems.append(problem(f"Unknown settings: {', '.join(sorted(known))}.", "config"))
    attributes = config.get("set_attributes") or {}
    if not isinstance(attributes, Mapping):
        problems.append(problem("Expected {attribute key: value}.", "config.set_attributes"))
        attributes = {}
    for key in attributes:
        if key not in registry.attributes:
            problems.append(problem(f"No custom attribute {key!r}: define it first.", "config.set_attributes"))
    add = config.get("add_to_list")
    if add is not None:
        values = add.get("values") if isinstance(add, Mapping) else None
        attribute = add.get("attribute") if isinstance(add, Mapping) else None
        if not isinstance(attribute, str) or registry.attributes.get(attribute) != "tags":
            message = "Name a custom attribute of type list (e.g. tags)."
            problems.append(problem(message, "config.add_to_list.attribute"))
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
            problems.append(problem("A list of tags to add.", "config.add_to_list.values"))
    stage = config.get("stage")
    if stage not in (None, "") and stage not in LifecycleStage.values:
        problems.append(problem(f"Expected one of {', '.join(LifecycleStage.values)}.", "config.stage"))
    if not attributes and not add and not stage:
        problems.append(problem("Say what to change: an attribute, a tag or the lifecycle stage.", "config"))
    return problems


def graph_problems(start_key: str, steps: Sequence[StepSpec]) -> list[Problem]:
    """Every exit leads to a step or ends, every step is reachable from the start, and no path loops."""
    problems: list[Problem] = []
    if not steps:
        return [Problem("Add a first step.", "steps")]
    if len(steps) > MAX_STEPS:
        problems.append(Problem(f"A journey has {MAX_STEPS} steps at most.", "steps"))
    by_key = {step.key: step for step in steps}
    if start_key not in by_key:
        problems.append(Problem("Choose the first step.", "start_key"))
    for step in steps:
        labels = exit_labels(step.kind, step.config if isinstance(step.config, Mapping) else {})
        exits = step.exits if isinstance(step.exits, Mapping) else {}
        for label in sorted(set(exits) - set(labels)):
            problems.append(Problem(f"This step has no exit {label!r}.", f"exits.{label}", step.key))
        for label in labels:
            target = exits.get(label)
            if target is not None and target not in by_key:
                problems.append(Problem(f"Exit {label!r} leads to a missing step.", f"exits.{label}", step.key))
            if target == step.key:
                problems.append(Problem(f"Exit {label!r} leads back to this step.", f"exits.{label}", step.key))
    if start_key in by_key:
        reached = _reachable(start_key, by_key)
        for step in steps:
            if step.key not in reached:
                problems.append(Problem("No path leads to this step.", "", step.key))
        cycle = _cycle(start_key, by_key)
        if cycle:
            problems.append(Problem("A path comes back here: every path must end.", "exits", cycle))
    return problems


def _targets(step: StepSpec, by_key: Mapping[str, StepSpec]) -> Iterable[str]:
    exits = step.exits if isinstance(step.exits, Mapping) else {}
    for label in exit_labels(step.kind, step.config if isinstance(step.config, Mapping) else {}):
        target = exits.get(label)
        if isinstance(target, str) and target in by_key and target != step.key:
            yield target


def _reachable(start: str, by_key: Mapping[str, StepSpec]) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        key = stack.pop()
        if key in seen:
            continue
        seen.add(key)
        stack.extend(_targets(by_key[key], by_key))
    return seen


def _cycle(start: str, by_key: Mapping[str, StepSpec]) -> str:
    """The key of a step some path returns to, or ''."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[tuple[str, Iterator[str]]] = [(start, iter(list(_targets(by_key[start], by_key))))]
    state[start] = 1
    while stack:
        key, children = stack[-1]
        child = next(children, None)
        if child is None:
            state[key] = 2
            stack.pop()
            continue
        if state.get(child) == 1:
            return child
        if child not in state:
            state[child] = 1
            stack.append((child, iter(list(_targets(by_key[child], by_key)))))
    return ""
