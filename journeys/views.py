"""The journey pages: the list, the settings, the journey page with its builder, each step's editor, and
the enrollments with a contact's path.

The builder draws the version being edited (the draft, else the live version) top to bottom; a
branch, a split and a wait for an event show their exits as columns side by side, each continuing
with the steps of that exit. Every write goes through journeys/services.py: a live journey's edits
go to a draft, and "Publish changes" makes it the version new entrants get.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers

from campaigns.forms import CHANNEL_CHOICES
from campaigns.models import CampaignChannel, Variant
from campaigns.validation import CHANNEL_TEMPLATE_FIELDS, PREFERRED, campaign_channels
from contacts.models import Channel, LifecycleStage
from journeys import selectors, services
from journeys.blueprints import BLUEPRINTS
from journeys.forms import (
    OP_LABELS,
    WEEKDAYS,
    EnrollmentFilterForm,
    FilterFormSet,
    JourneyFilterForm,
    SettingsForm,
    StepEditor,
    exit_name,
    filter_forms,
    filter_initial,
    filter_list,
    settings_field,
    step_channels,
)
from journeys.models import Enrollment, Journey, JourneyVersion, Step, StepKind
from journeys.validation import Problem, exit_labels
from segments.models import Segment
from segments.selectors import builder_catalogue
from tenants.audit import Actor
from tenants.roles import Permission
from tenants.web import TenantView

ENROLLMENT_PAGE_SIZE = 50
# What the "add a step" control offers; a send step's channel is chosen with it.
ADD_KINDS: list[tuple[str, str]] = [
    ("send:email", "Send an email"), ("send:sms", "Send an SMS"), ("send:push", "Send a push notification"),
    ("send:webhook", "Send a message by webhook"), ("wait", "Wait for a duration"),
    ("wait_until", "Wait until a day and time"), ("wait_event", "Wait for an event"),
    ("branch", "Branch on a condition"), ("split", "Random split (A/B paths)"), ("update", "Update the contact"),
    ("webhook", "Notify a webhook"), ("exit", "Exit the journey"),
]  # fmt: skip
# Where a journey-level problem is fixed: its settings, or the builder.
SETTINGS_PROBLEMS = frozenset(
    {
        "trigger", "trigger_segment", "trigger_event", "trigger_filters", "trigger_stage", "trigger_date_field",
        "cooldown_days", "entry_segment", "exit_segment", "goal_event", "exit_on_consent_withdrawn",
    }
)  # fmt: skip


def _is_partial(request: HttpRequest, target: str) -> bool:
    """An htmx request that swaps only ``target`` (not a history restore, which needs the whole page)."""
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and htmx.target == target and not htmx.history_restore_request  # type: ignore[union-attr]


# --- words for settings and steps --------------------------------------------------------------
def duration_text(value: Any) -> str:
    if not isinstance(value, Mapping) or not isinstance(value.get("amount"), int):
        return "?"
    amount, unit = value["amount"], str(value.get("unit") or "")
    return f"{amount} {unit.removesuffix('s') if amount == 1 else unit}"


def _value_text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_value_text(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def filters_text(filters: Any) -> str:
    """Property filters in words: "value > 50 and coupon is set"."""
    parts = []
    for item in filters if isinstance(filters, list) else []:
        if isinstance(item, Mapping):
            op = str(item.get("op", ""))
            words = f"{item.get('property')} {OP_LABELS.get(op, op)}"
            parts.append(words if "value" not in item else f"{words} {_value_text(item['value'])}")
    return " and ".join(parts)


def trigger_text(journey: Journey) -> str:
    """The trigger in words (the segment must be loaded with the journey)."""
    trigger = journey.trigger
    if trigger == Journey.Trigger.SEGMENT_ENTERED:
        segment = journey.trigger_segment
        return f"Enters the segment “{segment.name}”" if segment else "Enters a segment (not chosen)"
    if trigger == Journey.Trigger.EVENT:
        where = filters_text(journey.trigger_filters)
        return f"Performs {journey.trigger_event or '(no event)'}" + (f" where {where}" if where else "")
    if trigger == Journey.Trigger.STAGE_CHANGED:
        if not journey.trigger_stage:
            return "Lifecycle stage changes (any stage)"
        return f"Lifecycle stage changes to {LifecycleStage(journey.trigger_stage).label}"
    if trigger == Journey.Trigger.DATE_ATTRIBUTE:
        name = journey.trigger_date_field
        return "Every year on the birth date" if name == "birth_date" else f"Every year on {name or '(no date)'}"
    return journey.get_trigger_display()


COMPARISONS = {
    "eq": "=", "neq": "≠", "gt": ">", "gte": "≥", "lt": "<", "lte": "≤", "in": "is one of", "not_in": "is none of",
    "is_set": "is set", "not_set": "is not set", "is_true": "is yes", "is_false": "is no",
}  # fmt: skip


def rules_text(node: Any, segments: Mapping[int, str], limit: int = 140) -> str:
    """A rule tree in short words, cut at ``limit`` characters."""
    text = _rule_words(node, segments, top=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _rule_words(node: Any, segments: Mapping[int, str], top: bool = False) -> str:
    if not isinstance(node, Mapping):
        return "?"
    for key, word in (("all", " and "), ("any", " or ")):
        if isinstance(node.get(key), list):
            children = [_rule_words(child, segments) for child in node[key]]
            if not children:
                return "everyone" if top else "(empty)"
            joined = word.join(children)
            return joined if top or len(children) == 1 else f"({joined})"
    if isinstance(node.get("not"), list):
        return "not (" + " or ".join(_rule_words(child, segments) for child in node["not"]) + ")"
    kind, op = node.get("type"), str(node.get("op", ""))
    comparison = COMPARISONS.get(op, op.replace("_", " "))
    value = f" {_value_text(node['value'])}" if "value" in node else ""
    if kind == "field":
        return f"{node.get('field')} {comparison}{value}"
    if kind == "attribute":
        return f"{node.get('key')} {comparison}{value}"
    if kind == "consent":
        return f"{node.get('channel')} consent {node.get('status')}"
    if kind == "suppression":
        return f"{'' if node.get('suppressed', True) else 'not '}suppressed on {node.get('channel')}"
    if kind == "event":
        count = f" {node.get('count')}×" if "count" in node else ""
        return f"{op.replace('_', ' ')}{count} {node.get('name')}"
    if kind == "segment":
        segment = node.get("segment")
        name = segments.get(segment, f"#{segment}") if isinstance(segment, int) else f"#{segment}"
        return f"{'not ' if op == 'not_in' else ''}in “{name}”"
    if kind == "engagement":
        return f"{op.replace('_', ' ')} ({node.get('action')})"
    return f"{str(kind or 'condition').replace('_', ' ')} {comparison}{value}".strip()


def step_summary(step: Step, variants: Sequence[Variant], segments: Mapping[int, str]) -> str:
    """One line saying what a step does."""
    config = step.config if isinstance(step.config, Mapping) else {}
    kind = step.kind
    if kind == StepKind.SEND:
        channel = str(config.get("channel") or "")
        label = CampaignChannel(channel).label if channel in CampaignChannel.values else "?"
        if channel == PREFERRED:
            # Each contact's preferred channel: the gist is the first channel's.
            channels = step_channels(config)
            label = "Preferred channel: " + ", ".join(CampaignChannel(c).label for c in channels)
            channel = channels[0]
        if not variants:
            return f"{label} · no message yet"
        first = variants[0]
        gist = {
            "email": first.subject, "sms": first.sms_body, "push": first.push_title or first.push_body,
            "webhook": first.cta_label or "JSON payload",
        }.get(channel, "")  # fmt: skip
        count = f"{len(variants)} variants" if len(variants) > 1 else "1 variant"
        gist = gist if len(gist) <= 60 else gist[:59] + "…"
        return f"{label} · {count}" + (f" · “{gist}”" if gist else "")
    if kind == StepKind.WAIT:
        return f"Wait {duration_text(config.get('duration'))}"
    if kind == StepKind.WAIT_UNTIL:
        days = [WEEKDAYS[d][:3] for d in config.get("weekdays") or [] if isinstance(d, int) and 0 <= d < 7]
        return f"Until the next {' or '.join(days) or '?'} at {config.get('time') or '?'} (contact's time)"
    if kind == StepKind.WAIT_EVENT:
        where = filters_text(config.get("filters"))
        event = f"{config.get('event') or '?'}" + (f" where {where}" if where else "")
        return f"Up to {duration_text(config.get('timeout'))} for {event}"
    if kind == StepKind.BRANCH:
        rules = config.get("rules")
        if isinstance(rules, Mapping) and rules.get("all") == []:
            return "No condition yet: everyone takes “Yes”"
        return f"If {rules_text(rules, segments)}"
    if kind == StepKind.SPLIT:
        paths = [p for p in config.get("paths") or [] if isinstance(p, Mapping)]
        total = sum(p["weight"] for p in paths if isinstance(p.get("weight"), int)) or 1
        return " · ".join(
            f"{p.get('label')} {round(100 * p['weight'] / total)}%" for p in paths if isinstance(p.get("weight"), int)
        )
    if kind == StepKind.UPDATE:
        parts = []
        for key, value in (config.get("set_attributes") or {}).items():
            parts.append(f"set {key} = {_value_text(value)}")
        add = config.get("add_to_list")
        if isinstance(add, Mapping):
            parts.append(f"add {_value_text(add.get('values') or [])} to {add.get('attribute')}")
        if config.get("stage") in LifecycleStage.values:
            parts.append(f"stage → {LifecycleStage(config['stage']).label}")
        return "; ".join(parts).capitalize() or "Nothing to change yet"
    if kind == StepKind.WEBHOOK:
        return f"POST {config.get('url') or '?'}"
    if kind == StepKind.EXIT:
        return "The journey ends here"
    return ""


# --- the builder's drawing ---------------------------------------------------------------------
@dataclass
class StepCard:
    step: Step
    summary: str
    figures: selectors.StepFigures
    problems: list[str]
    exits: list[tuple[str, str]]  # (label, name) of a step with several exits
    up: bool = False
    down: bool = False

    @property
    def title(self) -> str:
        return self.step.name or self.step.get_kind_display()

    @property
    def multi_exit(self) -> bool:
        return len(self.exits) > 1


@dataclass(frozen=True)
class FlowItem:
    """One piece of the drawing, in reading order: a card, an "add a step" control, the end of a path,
    a pointer to a step drawn elsewhere, or the opening and closing of columns."""

    kind: str  # card, add, end, goto, missing, lanes, lane, close
    key: str = ""  # card, goto, missing: the step
    after: str = ""  # add: the step (blank: the start) and its exit where a new step goes
    exit: str = "next"
    label: str = ""  # lane: the exit's name
    ends: bool = False  # add: the path ends here
    card: StepCard | None = None


@dataclass
class Flow:
    items: list[FlowItem] = field(default_factory=list)
    orphans: list[FlowItem] = field(default_factory=list)
    # Where each drawn step is drawn: after (step key, exit), or None for the first step and orphans.
    parents: dict[str, tuple[str, str] | None] = field(default_factory=dict)


def flow_of(start_key: str, steps: Mapping[str, Step]) -> Flow:
    """Draw the graph from ``start_key``: each step once, where a path first reaches it; the other
    places that lead to it say "continues at". Steps no path reaches are drawn apart."""
    flow = Flow()

    def chain(key: str | None, parent: tuple[str, str] | None, out: list[FlowItem]) -> None:
        while True:
            if key is None:
                out.append(FlowItem("end"))
                return
            if key not in steps:
                out.append(FlowItem("missing", key=key))
                return
            if key in flow.parents:
                out.append(FlowItem("goto", key=key))
                return
            flow.parents[key] = parent
            step = steps[key]
            out.append(FlowItem("card", key=key))
            labels = exit_labels(step.kind, step.config if isinstance(step.config, Mapping) else {})
            exits = step.exits if isinstance(step.exits, Mapping) else {}
            if not labels:
                return
            if len(labels) == 1:
                target = exits.get(labels[0])
                out.append(FlowItem("add", after=key, exit=labels[0], ends=target is None))
                parent, key = (key, labels[0]), target
                continue
            out.append(FlowItem("lanes"))
            for label in labels:
                target = exits.get(label)
                out.append(FlowItem("lane", label=exit_name(label), exit=label))
                out.append(FlowItem("add", after=key, exit=label, ends=target is None))
                chain(target, (key, label), out)
                out.append(FlowItem("close"))
            out.append(FlowItem("close"))
            return

    start = start_key if start_key in steps else None
    flow.items.append(FlowItem("add", after="", ends=start is None))
    chain(start, None, flow.items)
    for key in steps:
        if key not in flow.parents:
            chain(key, None, flow.orphans)
    return flow


def move_target(flow: Flow, steps: Mapping[str, Step], start_key: str, key: str, up: bool) -> tuple[str, str] | None:
    """Where "up" or "down" puts a one-exit step, as (after, exit) for ``step_move`` (after "" is the
    start): up goes after the step two before; down after the next one. None: it cannot move so."""
    step = steps.get(key)
    if step is None or key not in flow.parents or len(exit_labels(step.kind, step.config)) != 1:
        return None
    if up:
        parent = flow.parents[key]
        if parent is None:
            return None  # the first step, or a step no path reaches
        grandparent = flow.parents.get(parent[0])
        if grandparent is None:
            return ("", "next") if parent[0] == start_key else None
        return grandparent
    label = exit_labels(step.kind, step.config)[0]
    following = step.exits.get(label)
    if following not in steps or flow.parents.get(following) != (key, label):
        return None
    labels = exit_labels(steps[following].kind, steps[following].config)
    return (following, labels[0]) if len(labels) == 1 else None


# --- base ---------------------------------------------------------------------------------------
class JourneysView(TenantView):
    """Base for the journey pages: the acting person, the journey, its steps and enrollments in the URL."""

    def actor(self) -> Actor:
        return Actor.for_user(self.membership.user)

    def journey(self, journey_id: int) -> Journey:
        journeys = Journey.objects.filter(tenant=self.tenant).select_related(
            "trigger_segment", "entry_segment", "exit_segment", "live_version"
        )
        journey = get_object_or_404(journeys, pk=journey_id)
        journey.tenant = self.tenant  # the same row, already loaded: spare the services a query
        return journey

    def url(self, name: str, journey: Journey | None = None, **kwargs: Any) -> str:
        kwargs["tenant_slug"] = self.tenant.slug
        if journey is not None:
            kwargs["journey_id"] = journey.pk
        return reverse(f"journeys:{name}", kwargs=kwargs)

    def editable(self, journey: Journey) -> bool:
        return self.can(Permission.EDIT_CONTENT) and journey.status in services.EDITABLE

    def shown_version(self, journey: Journey) -> JourneyVersion | None:
        """The version the builder shows and edits: the draft, else the live version."""
        draft = JourneyVersion.objects.filter(tenant=self.tenant, journey=journey, published_at__isnull=True).first()
        return draft or journey.live_version

    def steps_of(self, version: JourneyVersion | None) -> dict[str, Step]:
        if version is None:
            return {}
        rows = Step.objects.filter(tenant=self.tenant, version=version).order_by("position", "id")
        return {step.key: step for step in rows}

    def step(self, version: JourneyVersion | None, key: str) -> Step:
        if version is None:
            raise Http404("No such step.")
        return get_object_or_404(
            Step.objects.filter(tenant=self.tenant, version=version).select_related("campaign"), key=key
        )

    def builder_url(self, journey: Journey, key: str = "") -> str:
        return self.url("detail", journey) + (f"#step-{key}" if key else "")


def _messages_of(request: HttpRequest, error: ValidationError) -> None:
    for message in error.messages:
        messages.error(request, message)


# --- list ---------------------------------------------------------------------------------------
class JourneyListView(JourneysView):
    http_method_names = ["get", "head", "options"]

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form = JourneyFilterForm(request.GET)
        rows: list[dict[str, Any]] = []
        status = 200
        if form.is_valid():
            journeys = list(
                selectors.journey_list(
                    tenant=self.tenant, status=form.cleaned_data["status"] or None, search=form.cleaned_data["q"]
                ).select_related("trigger_segment")
            )
            counts = selectors.journey_counts(tenant=self.tenant, journey_ids=[j.pk for j in journeys])
            for journey in journeys:
                entered, converted = counts[journey.pk]["entered"], counts[journey.pk]["converted"]
                rows.append(
                    {
                        "journey": journey,
                        "trigger": trigger_text(journey),
                        "counts": counts[journey.pk],
                        "rate": 100 * converted / entered if entered else None,
                    }
                )
        else:
            status = 400
        context = {"form": form, "rows": rows, "filters_active": form.active}
        partial = _is_partial(request, "journey-results")
        template = "journeys/_journey_table.html" if partial else "journeys/journey_list.html"
        response = render(request, template, context, status=status)
        patch_vary_headers(response, ["HX-Request", "HX-Target"])
        return response


# --- settings: create (blank or from a blueprint) and edit ---------------------------------------
class SettingsPage(JourneysView):
    def render_settings(
        self, journey: Journey | None, form: SettingsForm, filters: Any, status: int = 200
    ) -> HttpResponse:
        context = {
            "journey": journey,
            "form": form,
            "filters": filters,
            "blueprints": list(BLUEPRINTS.values()) if journey is None else [],
            "can_edit": self.can(Permission.EDIT_CONTENT) and (journey is None or self.editable(journey)),
        }
        return render(self.request, "journeys/settings_form.html", context, status=status)

    def bound(self, journey: Journey | None) -> tuple[SettingsForm, Any]:
        form = SettingsForm(self.request.POST, tenant=self.tenant, journey=journey)
        filters = FilterFormSet(self.request.POST, prefix="filters")
        return form, filters

    def service_errors(self, form: SettingsForm, filters: Any, error: ValidationError) -> None:
        """A service's errors on the settings' fields; a filter's on its row."""
        if not hasattr(error, "error_dict"):
            form.add_error(None, error)
            return
        rows = filter_forms(filters)
        for path, errors in error.error_dict.items():
            for message in ValidationError(errors).messages:
                if path.startswith("trigger_filters"):
                    index, _, name = path.removeprefix("trigger_filters").lstrip(".[").partition(".")
                    index = index.rstrip("]")
                    if index.isdigit() and int(index) < len(rows) and (name or "property") in rows[int(index)].fields:
                        rows[int(index)].add_error(name or "property", message)
                    else:
                        form.add_error(None, f"Property filters: {message}")
                    continue
                name = settings_field(path)
                form.add_error(name if name in form.fields else None, message)


class JourneyCreateView(SettingsPage):
    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form = SettingsForm(tenant=self.tenant, initial={"purpose": (self.tenant.consent_purposes or ["marketing"])[0]})
        return self.render_settings(None, form, FilterFormSet(prefix="filters"))

    def post(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form, filters = self.bound(None)
        if not (form.is_valid() & filters.is_valid()):
            return self.render_settings(None, form, filters, status=400)
        try:
            journey = services.journey_create(
                tenant=self.tenant, actor=self.actor(), data=form.to_data(filter_list(filters))
            )
        except ValidationError as error:
            self.service_errors(form, filters, error)
            return self.render_settings(None, form, filters, status=400)
        messages.success(request, "Journey created. Add its first step below.")
        return redirect(self.builder_url(journey))


class BlueprintCreateView(JourneysView):
    """A new draft journey from one of the built-in blueprints, which the person then edits."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        key = request.POST.get("blueprint", "")
        try:
            journey = services.journey_from_blueprint(tenant=self.tenant, actor=self.actor(), blueprint=key)
        except ValidationError as error:
            _messages_of(request, error)
            return redirect(self.url("create"))
        messages.success(request, f"“{journey.name}” created from its blueprint: edit it, then start it.")
        return redirect(self.builder_url(journey))


class SettingsView(SettingsPage):
    def get(self, request: HttpRequest, tenant_slug: str, journey_id: int) -> HttpResponse:
        journey = self.journey(journey_id)
        form = SettingsForm(tenant=self.tenant, journey=journey, initial=SettingsForm.initial_for(journey))
        filters = FilterFormSet(initial=filter_initial(journey.trigger_filters), prefix="filters")
        return self.render_settings(journey, form, filters)

    def post(self, request: HttpRequest, tenant_slug: str, journey_id: int) -> HttpResponse:
        journey = self.journey(journey_id)
        form, filters = self.bound(journey)
        if not (form.is_valid() & filters.is_valid()):
            return self.render_settings(journey, form, filters, status=400)
        try:
            services.journey_update(journey=journey, actor=self.actor(), data=form.to_data(filter_list(filters)))
        except ValidationError as error:
            self.service_errors(form, filters, error)
            return self.render_settings(journey, form, filters, status=400)
        messages.success(request, "Settings saved.")
        return redirect(self.builder_url(journey))


# --- the journey page: summary, problems, the builder --------------------------------------------
class JourneyDetailView(JourneysView):
    http_method_names = ["get", "head", "options"]

    def get(self, request: HttpRequest, tenant_slug: str, journey_id: int) -> HttpResponse:
        journey = self.journey(journey_id)
        version = self.shown_version(journey)
        steps = self.steps_of(version)
        problems = services.journey_problems(journey=journey, version=version) if version else []
        if journey.status == Journey.Status.ARCHIVED:
            problems = []
        figures = selectors.step_figures(journey=journey, version=version) if version else {}
        flow = flow_of(version.start_key if version else "", steps)
        cards = self.cards(journey, version, steps, flow, problems, figures)
        flow.items = [FlowItem(i.kind, i.key, i.after, i.exit, i.label, i.ends, cards.get(i.key)) for i in flow.items]
        flow.orphans = [
            FlowItem(i.kind, i.key, i.after, i.exit, i.label, i.ends, cards.get(i.key)) for i in flow.orphans
        ]
        summary = selectors.journey_summary(journey=journey)
        has_draft = version is not None and version.is_draft
        editable = self.editable(journey)
        started = journey.live_version_id is not None
        context = {
            "journey": journey,
            "version": version,
            "has_draft": has_draft,
            "flow": flow,
            "step_count": len(steps),
            "journey_problems": [
                {
                    "message": p.message,
                    "settings": p.field.split(".")[0].split("[")[0] in SETTINGS_PROBLEMS,
                }
                for p in problems
                if not p.step
            ],
            "problem_count": len(problems),
            "summary": summary,
            "rate": 100 * summary.conversion_rate,
            "trigger": trigger_text(journey),
            "editable": editable,
            "add_kinds": ADD_KINDS,
            "add_kinds_open": [(value, label) for value, label in ADD_KINDS if value != "exit"],
            "can_start": editable and (journey.status != Journey.Status.LIVE or has_draft),
            "start_label": _start_label(journey, has_draft),
            "can_migrate": editable and started and has_draft,
            "can_pause": editable and journey.status == Journey.Status.LIVE,
            "can_archive": self.can(Permission.EDIT_CONTENT) and started and journey.status != Journey.Status.ARCHIVED,
            "can_delete": self.can(Permission.EDIT_CONTENT) and not started,
            "settings": _settings_rows(journey),
        }
        return render(request, "journeys/journey_detail.html", context)

    def cards(
        self, journey: Journey, version: JourneyVersion | None, steps: Mapping[str, Step], flow: Flow,
        problems: Sequence[Problem], figures: Mapping[str, selectors.StepFigures],
    ) -> dict[str, StepCard]:  # fmt: skip
        campaign_ids = [s.campaign_id for s in steps.values() if s.campaign_id is not None]
        variants: dict[int, list[Variant]] = {}
        for variant in Variant.objects.filter(tenant=self.tenant, campaign_id__in=campaign_ids).order_by(
            "position", "id"
        ):
            variants.setdefault(variant.campaign_id, []).append(variant)
        needs_names = any(s.kind == StepKind.BRANCH for s in steps.values())
        names = dict(Segment.objects.filter(tenant=self.tenant).values_list("id", "name")) if needs_names else {}
        by_step: dict[str, list[str]] = {}
        for problem in problems:
            if problem.step:
                by_step.setdefault(problem.step, []).append(problem.message)
        start = version.start_key if version else ""
        editable = self.editable(journey)
        cards = {}
        for key, step in steps.items():
            labels = exit_labels(step.kind, step.config if isinstance(step.config, Mapping) else {})
            cards[key] = StepCard(
                step=step,
                summary=step_summary(step, variants.get(step.campaign_id or 0, []), names),
                figures=figures.get(key, selectors.StepFigures()),
                problems=by_step.get(key, []),
                exits=[(label, exit_name(label)) for label in labels],
                up=editable and move_target(flow, steps, start, key, up=True) is not None,
                down=editable and move_target(flow, steps, start, key, up=False) is not None,
            )
        return cards


def _start_label(journey: Journey, has_draft: bool) -> str:
    if journey.live_version_id is None:
        return "Start"
    if journey.status == Journey.Status.PAUSED:
        return "Resume and publish changes" if has_draft else "Resume"
    return "Publish changes"


def _settings_rows(journey: Journey) -> list[tuple[str, str]]:
    days = journey.cooldown_days
    entry = "Once ever" if journey.entry == Journey.Entry.ONCE else f"Again after {days} day{'' if days == 1 else 's'}"
    rows = [("Entry", entry)]
    if journey.entry_segment is not None:
        rows.append(("Only members of", journey.entry_segment.name))
    if journey.daily_cap:
        rows.append(("Daily cap", f"{journey.daily_cap} per day"))
    rows.append(("Goal", journey.goal_event or "—"))
    exits = []
    if journey.exit_segment is not None:
        exits.append(f"leaves “{journey.exit_segment.name}”")
    if journey.exit_on_consent_withdrawn:
        exits.append(f"withdraws {Channel(journey.exit_on_consent_withdrawn).label} consent")
    rows.append(("Exits when", " or ".join(exits) or "—"))
    rows.append(("Purpose", journey.purpose))
    return rows


# --- the journey's life: start / publish, pause, archive, delete ----------------------------------
class JourneyActionView(JourneysView):
    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str, journey_id: int) -> HttpResponse:
        journey = self.journey(journey_id)
        try:
            return self.act(journey)
        except services.JourneyInvalid as invalid:
            count = len(invalid.problems)
            messages.error(
                request, f"Not started: fix the {'problem' if count == 1 else f'{count} problems'} shown below first."
            )
        except ValidationError as error:
            _messages_of(request, error)
        return redirect(self.builder_url(journey))

    def act(self, journey: Journey) -> HttpResponse:
        raise NotImplementedError


class JourneyStartView(JourneyActionView):
    def act(self, journey: Journey) -> HttpResponse:
        publishing = journey.live_version_id is not None
        migrate = self.request.POST.get("migrate") == "1"
        journey = services.journey_start(journey=journey, actor=self.actor(), migrate=migrate)
        number = journey.live_version.number if journey.live_version else 1
        if publishing:
            moved = " Contacts in flight move to it." if migrate else " Contacts in flight finish where they are."
            messages.success(self.request, f"Live: new entrants get version {number}.{moved}")
        else:
            messages.success(self.request, "The journey is live: contacts who meet its trigger enter from now on.")
        return redirect(self.builder_url(journey))


class JourneyPauseView(JourneyActionView):
    def act(self, journey: Journey) -> HttpResponse:
        services.journey_pause(journey=journey, actor=self.actor())
        messages.success(self.request, "Paused: nobody enters, and contacts in flight wait where they are.")
        return redirect(self.builder_url(journey))


class JourneyArchiveView(JourneyActionView):
    def act(self, journey: Journey) -> HttpResponse:
        exited = services.journey_archive(journey=journey, actor=self.actor())
        messages.success(self.request, f"Archived: {exited} contact{'' if exited == 1 else 's'} in flight exited.")
        return redirect(self.builder_url(journey))


class JourneyDeleteView(JourneyActionView):
    def act(self, journey: Journey) -> HttpResponse:
        name = journey.name
        services.journey_delete(journey=journey, actor=self.actor())
        messages.success(self.request, f"Journey “{name}” deleted.")
        return redirect(self.url("list"))


# --- steps --------------------------------------------------------------------------------------
class StepPage(JourneysView):
    """Shared by the new-step and step pages: the editor for the kind, and the service's errors in place."""

    def render_step(
        self, journey: Journey, editor: StepEditor, *, step: Step | None, place: dict[str, str] | None = None,
        problems: Sequence[str] = (), rule_errors: Sequence[dict[str, str]] = (), status: int = 200,
    ) -> HttpResponse:  # fmt: skip
        can_edit = self.editable(journey)
        context: dict[str, Any] = {
            "journey": journey,
            "editor": editor,
            "form": editor.form,
            "step": step,
            "kind": editor.kind,
            "kind_label": StepKind(editor.kind).label,
            "place": place,
            "problems": problems,
            "can_edit": can_edit,
            "channel": editor.channel,
            "variant_rows": _content_fields(editor),
            "channels": CHANNEL_CHOICES,
        }
        if editor.kind == StepKind.BRANCH:
            context.update(
                rule_errors=list(rule_errors),
                catalogue=builder_catalogue(self.tenant) if can_edit else None,
                preview_url=reverse("segments:preview", kwargs={"tenant_slug": self.tenant.slug}),
                contacts_url=reverse("contacts:list", kwargs={"tenant_slug": self.tenant.slug}),
            )
        return render(self.request, "journeys/step_form.html", context, status=status)


def _content_fields(editor: StepEditor) -> list[dict[str, Any]]:
    """Each variant form with its channel's content fields, in the composer's order; the last, blank one
    (``extra``) adds a variant."""
    if editor.variants is None:
        return []
    assert editor.campaign is not None
    # Each contact's preferred channel: every one of its channels' fields.
    channels = campaign_channels(editor.campaign)
    names = [name for channel in channels for name in CHANNEL_TEMPLATE_FIELDS.get(channel, ())]
    initial = editor.variants.initial_form_count()
    return [
        {
            "form": form,
            "content": [form[name] for name in names if name in form.fields],
            "extra": index >= initial,
            "open": index < initial or initial == 0 or (form.is_bound and form.has_changed()),
        }
        for index, form in enumerate(editor.variants.forms)
    ]


class StepCreateView(StepPage):
    """A new step at a place (after a step, on one of its exits; or at the start): choose its kind, fill it in."""

    def place(self, journey: Journey, source: Mapping[str, Any], kind: str) -> tuple[dict[str, str], str]:
        """The place a new step goes, checked against the draft; an error message when it is not there."""
        version = self.shown_version(journey)
        steps = self.steps_of(version)
        after, exit = str(source.get("after") or ""), str(source.get("exit") or "next")
        place = {"after": after, "exit": exit}
        following = (version.start_key if version else "") or None
        if after:
            parent = steps.get(after)
            if parent is None:
                return place, "That step is not in this journey any more."
            if exit not in exit_labels(parent.kind, parent.config):
                return place, f"Step {after} has no exit {exit!r}."
            place["after_name"] = parent.name or parent.get_kind_display()
            place["exit_name"] = exit_name(exit) if len(exit_labels(parent.kind, parent.config)) > 1 else ""
            following = parent.exits.get(exit)
        place["ends"] = "" if following in steps else "yes"
        if kind == StepKind.EXIT and following in steps:
            # An exit has no way on: the steps after it would be left unreachable.
            return place, "An exit goes where a path ends; delete the steps after this place first."
        return place, ""

    def kind_of(self, source: Mapping[str, Any]) -> tuple[str, str]:
        kind, _, channel = str(source.get("kind") or "").partition(":")
        channel = channel or str(source.get("channel") or "")
        if channel not in CampaignChannel.values and channel != PREFERRED:
            channel = CampaignChannel.EMAIL
        return kind, channel

    def choose(self, journey: Journey, place: dict[str, str], error: str, status: int) -> HttpResponse:
        context = {
            "journey": journey,
            "place": place,
            "error": error,
            "add_kinds": [(k, label) for k, label in ADD_KINDS if place.get("ends") or k != StepKind.EXIT],
            "can_edit": self.editable(journey),
        }
        return render(self.request, "journeys/step_choose.html", context, status=status)

    def get(self, request: HttpRequest, tenant_slug: str, journey_id: int) -> HttpResponse:
        journey = self.journey(journey_id)
        kind, channel = self.kind_of(request.GET)
        place, error = self.place(journey, request.GET, kind)
        if error or kind not in StepKind.values:
            bad = error or (request.GET.get("kind") and "Choose what the step does.")
            return self.choose(journey, place, bad or "", status=400 if bad else 200)
        editor = StepEditor(kind, tenant=self.tenant, config={"channel": channel} if kind == StepKind.SEND else {})
        return self.render_step(journey, editor, step=None, place=place)

    def post(self, request: HttpRequest, tenant_slug: str, journey_id: int) -> HttpResponse:
        journey = self.journey(journey_id)
        kind, channel = self.kind_of(request.POST)
        place, wrong = self.place(journey, request.POST, kind)
        if wrong or kind not in StepKind.values:
            return self.choose(journey, place, wrong or "Choose what the step does.", status=400)
        config = {"channel": channel} if kind == StepKind.SEND else {}
        editor = StepEditor(kind, request.POST, tenant=self.tenant, config=config)
        if not editor.is_valid():
            return self.render_step(journey, editor, step=None, place=place, status=400)
        try:
            step = services.step_add(
                journey=journey, actor=self.actor(), kind=kind, after=place["after"] or None, exit=place["exit"],
                name=editor.form.cleaned_data["name"], config=editor.config(), content=editor.content(),
            )  # fmt: skip
        except ValidationError as error:
            rule_errors = editor.add_service_errors(error)
            return self.render_step(journey, editor, step=None, place=place, rule_errors=rule_errors, status=400)
        for warning in editor.warnings():
            messages.warning(request, warning)
        messages.success(request, f"Step “{step}” added.")
        return redirect(self.builder_url(journey, step.key))


class StepEditView(StepPage):
    def editor(self, journey: Journey, step: Step, data: Mapping[str, Any] | None = None) -> StepEditor:
        targets = [
            (s.key, f"{s.name or s.get_kind_display()} ({s.key})")
            for s in self.steps_of_version(step)
            if s.key != step.key
        ]
        variants: list[Variant] = []
        if step.campaign is not None:
            step.campaign.tenant = self.tenant
            rows = Variant.objects.filter(tenant=self.tenant, campaign=step.campaign).order_by("position", "id")
            variants = list(rows)
        return StepEditor(
            step.kind, data, tenant=self.tenant, step=step, targets=targets, campaign=step.campaign, variants=variants
        )

    def steps_of_version(self, step: Step) -> list[Step]:
        return list(Step.objects.filter(tenant=self.tenant, version_id=step.version_id).order_by("position", "id"))

    def get(self, request: HttpRequest, tenant_slug: str, journey_id: int, step_key: str) -> HttpResponse:
        journey = self.journey(journey_id)
        version = self.shown_version(journey)
        step = self.step(version, step_key)
        mine: list[Problem] = []
        if journey.status != Journey.Status.ARCHIVED:
            mine = [p for p in services.journey_problems(journey=journey, version=version) if p.step == step.key]
        rule_errors = [
            {"path": p.field.removeprefix("config.rules").lstrip("."), "message": p.message}
            for p in mine
            if p.field.startswith("config.rules")
        ]
        problems = [p.message for p in mine]
        editor = self.editor(journey, step)
        return self.render_step(journey, editor, step=step, problems=problems, rule_errors=rule_errors)

    def post(self, request: HttpRequest, tenant_slug: str, journey_id: int, step_key: str) -> HttpResponse:
        journey = self.journey(journey_id)
        version = self.shown_version(journey)
        step = self.step(version, step_key)
        assert version is not None
        channel = request.POST.get("channel")
        if step.kind == StepKind.SEND and channel and channel != step.config.get("channel"):
            return self.change_channel(journey, step, channel)
        editor = self.editor(journey, step, request.POST)
        if not editor.is_valid():
            return self.render_step(journey, editor, step=step, status=400)
        data: dict[str, Any] = {"name": editor.form.cleaned_data["name"], "config": editor.config()}
        exits = editor.new_exits()
        if exits is not None:
            data["exits"] = exits
        content = editor.content()
        if content is not None and not version.is_draft:
            # The first edit of a live journey copies it into a draft, variants too: these become new ones.
            content["variants"] = [{k: v for k, v in row.items() if k != "id"} for row in content["variants"]]
        try:
            saved, _ = services.step_update(
                journey=journey, actor=self.actor(), key=step.key, data=data, content=content
            )
        except ValidationError as error:
            rule_errors = editor.add_service_errors(error)
            return self.render_step(journey, editor, step=step, rule_errors=rule_errors, status=400)
        for warning in editor.warnings():
            messages.warning(request, warning)
        messages.success(request, f"Step “{saved}” saved.")
        if request.POST.get("go") == "stay":
            return redirect(self.url("step_edit", journey, step_key=saved.key))
        return redirect(self.builder_url(journey, saved.key))

    def change_channel(self, journey: Journey, step: Step, channel: str) -> HttpResponse:
        """A send step's new channel: saved first, so that the page shows that channel's message fields."""
        if channel not in CampaignChannel.values and channel != PREFERRED:
            messages.error(self.request, "Choose a channel.")
            return redirect(self.url("step_edit", journey, step_key=step.key))
        config = {**step.config, "channel": channel}
        if channel == PREFERRED:
            config["channels"] = step_channels(step.config)
        try:
            services.step_update(journey=journey, actor=self.actor(), key=step.key, data={"config": config})
        except ValidationError as error:
            _messages_of(self.request, error)
        else:
            label = dict(CHANNEL_CHOICES)[channel]
            messages.info(
                self.request, f"The channel is now {label}. Write each variant's {label} message, then save again."
            )
        return redirect(self.url("step_edit", journey, step_key=step.key))


class StepMoveView(JourneysView):
    """Up: after the step two before it (or to the start); down: after the next step."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str, journey_id: int, step_key: str) -> HttpResponse:
        journey = self.journey(journey_id)
        version = self.shown_version(journey)
        step = self.step(version, step_key)
        assert version is not None
        direction = request.POST.get("direction")
        steps = self.steps_of(version)
        target = (
            move_target(flow_of(version.start_key, steps), steps, version.start_key, step.key, up=direction == "up")
            if direction in ("up", "down")
            else None
        )
        if target is None:
            messages.error(request, f"“{step}” cannot move {direction if direction in ('up', 'down') else 'so'}.")
            return redirect(self.builder_url(journey, step.key))
        after, exit = target
        try:
            services.step_move(journey=journey, actor=self.actor(), key=step.key, after=after or None, exit=exit)
        except ValidationError as error:
            _messages_of(request, error)
        return redirect(self.builder_url(journey, step.key))


class StepDeleteView(JourneysView):
    """Remove a step; of a step with several exits, the path of the chosen exit stays ("keep")."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str, journey_id: int, step_key: str) -> HttpResponse:
        journey = self.journey(journey_id)
        step = self.step(self.shown_version(journey), step_key)
        keep = request.POST.get("keep") or None
        try:
            gone = services.step_delete(journey=journey, actor=self.actor(), key=step.key, keep=keep)
        except ValidationError as error:
            _messages_of(request, error)
            return redirect(self.builder_url(journey, step.key))
        others = len(gone) - 1
        also = f", and {others} step{'' if others == 1 else 's'} only its other exits led to" if others > 0 else ""
        messages.success(request, f"Step “{step}” deleted{also}.")
        return redirect(self.builder_url(journey))


# --- enrollments ----------------------------------------------------------------------------------
class EnrollmentListView(JourneysView):
    """A journey's enrollments, newest first, a page at a time (keyset: no OFFSET, no COUNT)."""

    http_method_names = ["get", "head", "options"]

    def get(self, request: HttpRequest, tenant_slug: str, journey_id: int) -> HttpResponse:
        journey = self.journey(journey_id)
        form = EnrollmentFilterForm(request.GET)
        rows: list[Enrollment] = []
        next_url = None
        status = 200
        if form.is_valid():
            enrollments = selectors.enrollment_list(journey=journey, status=form.cleaned_data["status"] or None)
            before = form.cleaned_data["before"]
            if before:
                anchor = Enrollment.objects.filter(tenant=self.tenant, journey=journey, pk=before).first()
                if anchor is not None:
                    enrollments = enrollments.filter(
                        Q(entered_at__lt=anchor.entered_at) | Q(entered_at=anchor.entered_at, id__lt=anchor.pk)
                    )
            rows = list(enrollments[: ENROLLMENT_PAGE_SIZE + 1])
            if len(rows) > ENROLLMENT_PAGE_SIZE:
                rows = rows[:ENROLLMENT_PAGE_SIZE]
                query = {"status": form.cleaned_data["status"], "before": rows[-1].pk}
                next_url = f"{self.url('enrollments', journey)}?{urlencode({k: v for k, v in query.items() if v})}"
        else:
            status = 400
        status_filter = form.cleaned_data.get("status") if form.is_valid() else ""
        context = {
            "journey": journey,
            "form": form,
            "rows": rows,
            "next_url": next_url,
            "first_url": self.url("enrollments", journey) + (f"?status={status_filter}" if status_filter else ""),
            "continued": bool(form.is_valid() and form.cleaned_data["before"]),
            "summary": selectors.journey_summary(journey=journey),
        }
        return render(request, "journeys/enrollment_list.html", context, status=status)


class EnrollmentDetailView(JourneysView):
    http_method_names = ["get", "head", "options"]

    def get(self, request: HttpRequest, tenant_slug: str, journey_id: int, enrollment_id: int) -> HttpResponse:
        journey = self.journey(journey_id)
        enrollment = get_object_or_404(
            Enrollment.objects.filter(tenant=self.tenant, journey=journey).select_related("contact", "step", "version"),
            pk=enrollment_id,
        )
        path = selectors.enrollment_path(enrollment=enrollment)
        for row in path:
            row["exit_name"] = exit_name(row["outcome"]) if row["outcome"] in _KNOWN_EXITS else row["outcome"]
        context = {"journey": journey, "enrollment": enrollment, "path": path}
        return render(request, "journeys/enrollment_detail.html", context)


_KNOWN_EXITS = frozenset({"next", "yes", "no", "happened", "timed_out"})
