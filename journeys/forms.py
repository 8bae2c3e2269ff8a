"""Forms for the journey pages: the list's filters, the settings, each step kind's editor and a send
step's message.

They parse what a person typed into the shapes journeys/services.py takes (docs/journeys.md lists
each step kind's config); the services own the rules, and their errors come back onto these forms'
fields (``StepEditor.add_service_errors``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, cast

from django import forms
from django.core.exceptions import ValidationError

from campaigns.forms import (
    CHANNEL_CHOICES,
    SenderForm,
    VariantForm,
    channel_order,
    preferred_channels_field,
    preferred_first_field,
    preferred_order,
    tenant_segments,
)
from campaigns.models import Campaign, CampaignChannel, Variant
from campaigns.validation import PREFERRED, PREFERRED_CHOICES
from contacts.models import AttributeDefinition, Channel, LifecycleStage
from contacts.selectors import purpose_label
from journeys.models import Enrollment, Journey, Step, StepKind
from journeys.validation import DATE_FIELDS, MAX_PATHS, UNITS, exit_labels
from segments.models import Segment
from segments.rules import MAX_PROPERTY_FILTERS, PROPERTY_KEY, PROPERTY_OPS
from tenants.models import Tenant
from tenants.web import add_service_errors

UNIT_CHOICES = [(unit, unit) for unit in UNITS]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
OP_LABELS = {
    "eq": "is", "neq": "is not", "in": "is one of", "not_in": "is none of", "contains": "contains", "gt": ">",
    "gte": "≥", "lt": "<", "lte": "≤", "is_set": "is set", "not_set": "is not set",
}  # fmt: skip
NUMBER_OPS = frozenset({"gt", "gte", "lt", "lte"})
LIST_OPS = frozenset({"in", "not_in"})
NO_VALUE_OPS = frozenset({"is_set", "not_set"})
NUMBER = re.compile(r"-?\d+(\.\d+)?")
TIME = re.compile(r"([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d+)?)?")
MAX_JSON_CHARS = 200_000
MAX_VARIANTS = 20
DATE_LABELS = {"birth_date": "Birth date"}


def _choices(form: forms.BaseForm, name: str, choices: Sequence[tuple[Any, str]]) -> None:
    cast(forms.ChoiceField, form.fields[name]).choices = list(choices)


def _segments(form: forms.BaseForm, tenant: Tenant, *names: str) -> None:
    for name in names:
        cast(forms.ModelChoiceField, form.fields[name]).queryset = tenant_segments(tenant)


def parse_json(text: str, *, expect: type, example: str) -> Any:
    """``text`` as JSON of type ``expect`` (a form error otherwise); blank: an empty one."""
    text = text.strip()
    if not text:
        return expect()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValidationError(
            "This is not valid JSON (line %(line)s, column %(column)s: %(message)s).",
            params={"line": error.lineno, "column": error.colno, "message": error.msg},
        ) from None
    except RecursionError:  # nested deeper than Python's decoder goes (not a ValueError)
        raise ValidationError("This JSON nests too deep.") from None
    if not isinstance(value, expect):
        raise ValidationError(f"Expected {example}.")
    return value


# --- the list ------------------------------------------------------------------------------------
class JourneyFilterForm(forms.Form):
    q = forms.CharField(required=False, max_length=200, label="Search")
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *Journey.Status.choices])

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["q"].widget.attrs.update({"type": "search", "placeholder": "Journey name…", "autocomplete": "off"})

    @property
    def active(self) -> bool:
        return self.is_valid() and any(self.cleaned_data.get(k) for k in ("q", "status"))


class EnrollmentFilterForm(forms.Form):
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *Enrollment.Status.choices])
    before = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)


# --- event property filters (a trigger's, a wait for an event's) --------------------------------
def parse_scalar(text: str) -> Any:
    """A typed value: "quoted" text stays text; true/false and numbers become what they say."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    if NUMBER.fullmatch(text):
        return float(text) if "." in text else int(text)
    return text


def scalar_text(value: Any) -> str:
    """A value as ``parse_scalar`` reads it back (text that looks like a number is quoted)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    if parse_scalar(text) != text or "," in text:
        return json.dumps(text, ensure_ascii=False)
    return text


class FilterRowForm(forms.Form):
    """One property filter: property, operator, value. A row without a property is left out."""

    property = forms.CharField(required=False, max_length=64, label="Property")
    op = forms.ChoiceField(choices=[(op, OP_LABELS[op]) for op in PROPERTY_OPS], initial="eq", label="Operator")
    value = forms.CharField(required=False, max_length=500, label="Value")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["property"].widget.attrs.update({"placeholder": "e.g. value", "autocomplete": "off"})
        self.fields["value"].widget.attrs.update({"placeholder": "e.g. 50"})

    def clean_property(self) -> str:
        prop = cast(str, self.cleaned_data.get("property") or "").strip()
        if prop and not PROPERTY_KEY.fullmatch(prop):
            raise ValidationError("A property name: letters, digits and _ (64 at most).")
        return prop

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        op, raw = data.get("op"), cast(str, data.get("value") or "").strip()
        if not data.get("property") or op is None:
            return data
        if op in NO_VALUE_OPS:
            data["parsed"] = None
        elif op in NUMBER_OPS:
            if not NUMBER.fullmatch(raw):
                self.add_error("value", "A number.")
            else:
                data["parsed"] = parse_scalar(raw)
        elif op in LIST_OPS:
            items = [parse_scalar(part) for part in raw.split(",") if part.strip()]
            if not items:
                self.add_error("value", "One or more values, separated by commas.")
            data["parsed"] = items
        elif not raw:
            self.add_error("value", "A value.")
        else:
            data["parsed"] = parse_scalar(raw)
        return data

    def as_filter(self) -> dict[str, Any]:
        data = self.cleaned_data
        item: dict[str, Any] = {"property": data["property"], "op": data["op"]}
        if data["op"] not in NO_VALUE_OPS:
            item["value"] = data["parsed"]
        return item


FilterFormSet = forms.formset_factory(
    FilterRowForm, extra=2, max_num=MAX_PROPERTY_FILTERS, absolute_max=MAX_PROPERTY_FILTERS + 2
)


def filter_initial(filters: Any) -> list[dict[str, Any]]:
    """The rows for a saved filter list (anything that is not a filter is left out)."""
    rows = []
    for item in filters if isinstance(filters, list) else []:
        if not isinstance(item, Mapping):
            continue
        value = item.get("value")
        text = ", ".join(scalar_text(v) for v in value) if isinstance(value, list) else scalar_text(value or "")
        rows.append({"property": item.get("property", ""), "op": item.get("op", "eq"), "value": text})
    return rows


def filter_list(formset: forms.BaseFormSet) -> list[dict[str, Any]]:
    """The filters of a valid formset, in order; rows without a property are left out."""
    return [form.as_filter() for form in formset.forms if form.cleaned_data.get("property")]


def filter_forms(formset: forms.BaseFormSet) -> list[forms.Form]:
    """The rows ``filter_list`` used, in the same order (a service error's index names one of them)."""
    return [form for form in formset.forms if form.cleaned_data.get("property")]


# --- the journey's settings ----------------------------------------------------------------------
class SettingsForm(forms.Form):
    """Name, trigger, entry rules, goal and exits: what ``journey_create``/``journey_update`` take."""

    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    trigger = forms.ChoiceField(
        choices=Journey.Trigger.choices, widget=forms.RadioSelect, label="A contact enters when it",
        initial=Journey.Trigger.EVENT,
    )  # fmt: skip
    trigger_segment = forms.ModelChoiceField(
        queryset=Segment.all_tenants.none(), required=False, label="Segment", empty_label="Choose a segment"
    )
    trigger_event = forms.CharField(
        required=False, max_length=100, label="Event name", help_text="The event's name, e.g. cart_abandoned."
    )
    trigger_stage = forms.ChoiceField(
        required=False, choices=[("", "Any change of stage"), *LifecycleStage.choices], label="New stage"
    )
    trigger_date_field = forms.ChoiceField(
        required=False, label="Date", help_text="Contacts enter every year on this date, at the daily date check."
    )
    entry = forms.ChoiceField(
        choices=Journey.Entry.choices, widget=forms.RadioSelect, label="A contact may enter", initial="once"
    )
    cooldown_days = forms.IntegerField(required=False, min_value=1, max_value=3650, label="Cooldown (days)")
    entry_segment = forms.ModelChoiceField(
        queryset=Segment.all_tenants.none(), required=False, label="Only members of", empty_label="Anyone"
    )
    daily_cap = forms.IntegerField(
        min_value=0, max_value=100_000_000, initial=0, label="Daily cap",
        help_text="At most this many contacts enter per day (UTC); 0: no cap.",
    )  # fmt: skip
    goal_event = forms.CharField(
        required=False, max_length=100, label="Goal event",
        help_text="A contact who performs it leaves the journey at once and counts as converted, e.g. purchase.",
    )  # fmt: skip
    exit_segment = forms.ModelChoiceField(
        queryset=Segment.all_tenants.none(), required=False, label="Exit when the contact leaves",
        empty_label="No segment",
    )  # fmt: skip
    exit_on_consent_withdrawn = forms.ChoiceField(
        required=False, choices=[("", "No"), *Channel.choices], label="Exit when consent is withdrawn on"
    )
    purpose = forms.ChoiceField(help_text="Consent for this purpose is checked before every message of the journey.")

    def __init__(self, *args: Any, tenant: Tenant, journey: Journey | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _segments(self, tenant, "trigger_segment", "entry_segment", "exit_segment")
        purposes = list(tenant.consent_purposes or ["marketing"])
        if journey is not None and journey.purpose not in purposes:
            purposes.append(journey.purpose)
        _choices(self, "purpose", [(p, purpose_label(p)) for p in purposes])
        dates = [("", "Choose a date"), *((name, DATE_LABELS.get(name, name)) for name in DATE_FIELDS)]
        definitions = AttributeDefinition.objects.filter(tenant=tenant, type=AttributeDefinition.Type.DATE)
        for key, label in definitions.order_by("key").values_list("key", "label"):
            dates.append((f"attributes.{key}", label))
        if journey is not None and journey.trigger_date_field not in {value for value, _ in dates}:
            dates.append((journey.trigger_date_field, journey.trigger_date_field))
        _choices(self, "trigger_date_field", dates)
        self.fields["trigger_event"].widget.attrs["autocomplete"] = "off"
        self.fields["goal_event"].widget.attrs["autocomplete"] = "off"

    @staticmethod
    def initial_for(journey: Journey) -> dict[str, Any]:
        names = (
            "name", "description", "trigger", "trigger_event", "trigger_stage", "trigger_date_field", "entry",
            "daily_cap", "goal_event", "exit_on_consent_withdrawn", "purpose",
        )  # fmt: skip
        initial: dict[str, Any] = {name: getattr(journey, name) for name in names}
        initial.update(
            trigger_segment=journey.trigger_segment_id,
            entry_segment=journey.entry_segment_id,
            exit_segment=journey.exit_segment_id,
            cooldown_days=journey.cooldown_days or None,
        )
        return initial

    def to_data(self, filters: list[dict[str, Any]]) -> dict[str, Any]:
        """The settings as the services take them; fields of the other triggers are cleared."""
        data = self.cleaned_data
        trigger = data["trigger"]

        def pk(name: str) -> int | None:
            return data[name].pk if data.get(name) is not None else None

        return {
            "name": data["name"],
            "description": data["description"],
            "trigger": trigger,
            "trigger_segment_id": pk("trigger_segment") if trigger == Journey.Trigger.SEGMENT_ENTERED else None,
            "trigger_event": data["trigger_event"].strip() if trigger == Journey.Trigger.EVENT else "",
            "trigger_filters": filters if trigger == Journey.Trigger.EVENT else [],
            "trigger_stage": data["trigger_stage"] if trigger == Journey.Trigger.STAGE_CHANGED else "",
            "trigger_date_field": data["trigger_date_field"] if trigger == Journey.Trigger.DATE_ATTRIBUTE else "",
            "entry": data["entry"],
            "cooldown_days": (data["cooldown_days"] or 0) if data["entry"] == Journey.Entry.COOLDOWN else 0,
            "entry_segment_id": pk("entry_segment"),
            "daily_cap": data["daily_cap"],
            "goal_event": data["goal_event"].strip(),
            "exit_segment_id": pk("exit_segment"),
            "exit_on_consent_withdrawn": data["exit_on_consent_withdrawn"],
            "purpose": data["purpose"],
        }


def settings_field(path: str) -> str:
    """The settings form's field for a service error path (``trigger_segment_id`` → ``trigger_segment``)."""
    return path.removesuffix("_id")


# --- steps ---------------------------------------------------------------------------------------
class StepForm(forms.Form):
    """A step's name and the config of its kind (subclasses add the kind's fields)."""

    name = forms.CharField(
        required=False, max_length=200, label="Name", help_text="Shown on the journey's map; blank: the kind."
    )
    # Where the service's errors on the config go: "config.<head>" → field name.
    error_fields: dict[str, str] = {}

    def __init__(self, *args: Any, tenant: Tenant, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tenant = tenant

    @classmethod
    def initial_for(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def config(self) -> dict[str, Any]:
        return {}


def _duration_initial(value: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(value, Mapping):
        return {f"{prefix}unit": "days"}
    return {f"{prefix}amount": value.get("amount"), f"{prefix}unit": value.get("unit") or "days"}


class WaitForm(StepForm):
    amount = forms.IntegerField(min_value=1, max_value=527_040, label="Wait for")
    unit = forms.ChoiceField(choices=UNIT_CHOICES, initial="days", label="Unit")
    error_fields = {"duration": "amount"}

    @classmethod
    def initial_for(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        return _duration_initial(config.get("duration"))

    def config(self) -> dict[str, Any]:
        return {"duration": {"amount": self.cleaned_data["amount"], "unit": self.cleaned_data["unit"]}}


class WaitUntilForm(StepForm):
    weekdays = forms.TypedMultipleChoiceField(
        choices=[(str(i), day) for i, day in enumerate(WEEKDAYS)], coerce=int, widget=forms.CheckboxSelectMultiple,
        label="On the next", help_text="The first of these days (or today, if the time is still ahead).",
    )  # fmt: skip
    time = forms.CharField(
        max_length=12, label="At", widget=forms.TimeInput(attrs={"type": "time"}),
        help_text="On the contact's clock: its time zone, else the workspace's.",
    )  # fmt: skip
    error_fields = {"weekdays": "weekdays", "time": "time"}

    @classmethod
    def initial_for(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        days = config.get("weekdays")
        return {
            "weekdays": [str(d) for d in days] if isinstance(days, list) else [],
            "time": config.get("time") or "09:00",
        }

    def clean_time(self) -> str:
        value = cast(str, self.cleaned_data["time"]).strip()
        if not TIME.fullmatch(value):
            raise ValidationError("A time of day as HH:MM, e.g. 09:00.")
        return value[:5]

    def config(self) -> dict[str, Any]:
        return {"weekdays": sorted(set(self.cleaned_data["weekdays"])), "time": self.cleaned_data["time"]}


class WaitEventForm(StepForm):
    event = forms.CharField(max_length=100, label="Event", help_text="The event's name, e.g. purchase.")
    timeout_amount = forms.IntegerField(min_value=1, max_value=527_040, label="Wait at most")
    timeout_unit = forms.ChoiceField(choices=UNIT_CHOICES, initial="hours", label="Unit")
    error_fields = {"event": "event", "timeout": "timeout_amount"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["event"].widget.attrs["autocomplete"] = "off"

    @classmethod
    def initial_for(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        return {"event": config.get("event") or "", **_duration_initial(config.get("timeout"), "timeout_")}

    def config(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "event": data["event"].strip(),
            "timeout": {"amount": data["timeout_amount"], "unit": data["timeout_unit"]},
        }


class BranchForm(StepForm):
    rules = forms.CharField(
        required=False, label="Condition (JSON)", max_length=MAX_JSON_CHARS, strip=False,
        widget=forms.Textarea(attrs={"rows": 12, "spellcheck": "false", "class": "rules-json"}),
        help_text='A segment rule tree, e.g. {"all": [{"type": "field", "field": "country", "op": "eq", '
        '"value": "DE"}]}. Contacts who match it when they arrive take "yes"; the others "no".',
    )  # fmt: skip
    error_fields = {"rules": "rules"}

    @classmethod
    def initial_for(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        rules = config.get("rules") or {"all": []}
        return {"rules": json.dumps(rules, indent=2, ensure_ascii=False)}

    def clean_rules(self) -> Any:
        return parse_json(self.cleaned_data.get("rules") or "", expect=dict, example='a rule tree ({"all": [...]})')

    def config(self) -> dict[str, Any]:
        return {"rules": self.cleaned_data["rules"] or {"all": []}}


class PathRowForm(forms.Form):
    """One path of a random split; a row without a label is left out."""

    label = forms.CharField(required=False, max_length=20, label="Label")
    weight = forms.IntegerField(required=False, min_value=1, max_value=10_000, label="Weight")
    original = forms.CharField(required=False, max_length=20, widget=forms.HiddenInput)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        data["label"] = cast(str, data.get("label") or "").strip()
        if data["label"] and data.get("weight") is None and "weight" not in self.errors:
            self.add_error("weight", "A weight from 1 to 10,000.")
        return data


PathFormSet = forms.formset_factory(PathRowForm, extra=0, max_num=MAX_PATHS, absolute_max=MAX_PATHS + 2)


def path_rows(formset: forms.BaseFormSet) -> list[forms.Form]:
    return [form for form in formset.forms if form.cleaned_data.get("label")]


class SplitForm(StepForm):
    error_fields: dict[str, str] = {}


class UpdateForm(StepForm):
    set_attributes = forms.CharField(
        required=False, label="Set attributes (JSON)", max_length=MAX_JSON_CHARS,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "class": "code"}),
        help_text='Custom attributes and their new values, e.g. {"plan": "pro"}.',
    )  # fmt: skip
    list_attribute = forms.ChoiceField(required=False, label="Add tags to")
    list_values = forms.CharField(
        required=False, max_length=2000, label="Tags", help_text="Separated by commas, e.g. vip, sunset."
    )
    stage = forms.ChoiceField(
        required=False, choices=[("", "Leave it as it is"), *LifecycleStage.choices], label="Lifecycle stage"
    )
    error_fields = {
        "set_attributes": "set_attributes", "add_to_list.attribute": "list_attribute",
        "add_to_list.values": "list_values", "stage": "stage",
    }  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        lists = AttributeDefinition.objects.filter(tenant=self.tenant, type=AttributeDefinition.Type.LIST)
        choices = [("", "No list"), *lists.order_by("key").values_list("key", "label")]
        current = self.initial.get("list_attribute") or (self.data.get(self.add_prefix("list_attribute")) or "")
        if current and current not in {value for value, _ in choices}:
            choices.append((current, current))
        _choices(self, "list_attribute", choices)

    @classmethod
    def initial_for(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        add = config.get("add_to_list")
        add = add if isinstance(add, Mapping) else {}
        values = add.get("values")
        values = values if isinstance(values, list) else []
        attributes = config.get("set_attributes") or {}
        return {
            "set_attributes": json.dumps(attributes, ensure_ascii=False) if attributes else "",
            "list_attribute": add.get("attribute") or "",
            "list_values": ", ".join(str(v) for v in values),
            "stage": config.get("stage") or "",
        }

    def clean_set_attributes(self) -> Any:
        return parse_json(self.cleaned_data.get("set_attributes") or "", expect=dict, example='{"key": value}')

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        values = [v.strip() for v in cast(str, data.get("list_values") or "").split(",") if v.strip()]
        data["list_values"] = values
        if values and not data.get("list_attribute"):
            self.add_error("list_attribute", "Choose the list attribute the tags go to.")
        if data.get("list_attribute") and not values:
            self.add_error("list_values", "Name at least one tag.")
        return data

    def config(self) -> dict[str, Any]:
        data = self.cleaned_data
        config: dict[str, Any] = {}
        if data["set_attributes"]:
            config["set_attributes"] = data["set_attributes"]
        if data["list_attribute"]:
            config["add_to_list"] = {"attribute": data["list_attribute"], "values": data["list_values"]}
        if data["stage"]:
            config["stage"] = data["stage"]
        return config


class WebhookForm(StepForm):
    url = forms.CharField(
        max_length=500, label="URL",
        help_text="Each contact reaching this step is a signed JSON POST to this https address.",
    )  # fmt: skip
    error_fields = {"url": "url"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["url"].widget.attrs.update({"placeholder": "https://example.com/hooks/journey", "type": "url"})

    @classmethod
    def initial_for(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        return {"url": config.get("url") or ""}

    def clean_url(self) -> str:
        url = cast(str, self.cleaned_data["url"]).strip()
        if not url.startswith("https://"):
            raise ValidationError("Use an https:// address: the payload carries personal data.")
        return url

    def config(self) -> dict[str, Any]:
        return {"url": self.cleaned_data["url"]}


class SendForm(StepForm):
    channel = forms.ChoiceField(choices=CHANNEL_CHOICES, label="Channel")
    # Each contact's preferred channel (analytics/preferred_channel.py): the channels it may choose.
    channels = preferred_channels_field()
    first = preferred_first_field()
    error_fields = {"channel": "channel", "channels": "channels"}
    order: list[str] | None = None

    @classmethod
    def initial_for(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        channels = step_channels(config)
        return {"channel": config.get("channel") or CampaignChannel.EMAIL, "channels": channels, "first": channels[0]}

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("channel") == PREFERRED:
            self.order = preferred_order(self, "channels", "first")
        return data

    def config(self) -> dict[str, Any]:
        channel = self.cleaned_data["channel"]
        if channel == PREFERRED and self.order:
            return {"channel": PREFERRED, "channels": self.order}
        return {"channel": channel}


# A new step on each contact's preferred channel chooses between these until the person says otherwise.
DEFAULT_PREFERRED = [CampaignChannel.EMAIL, CampaignChannel.SMS]


def posted_channels(data: Any) -> list[str]:
    """The channels a send step's form posts for each contact's preferred channel, in order (none when fewer
    than two: the form says so)."""
    order = channel_order(data.getlist("channels"), data.get("first") or "")
    return order if len(order) >= 2 else []


def step_channels(config: Mapping[str, Any]) -> list[str]:
    """A send step's channels on each contact's preferred channel, as far as they are valid (the default else)."""
    channels = config.get("channels")
    if isinstance(channels, list):
        valid = [c for c in dict.fromkeys(channels) if c in PREFERRED_CHOICES]
        if len(valid) >= 2:
            return valid
    return list(DEFAULT_PREFERRED)


class ExitForm(StepForm):
    pass


STEP_FORMS: dict[str, type[StepForm]] = {
    StepKind.SEND: SendForm,
    StepKind.WAIT: WaitForm,
    StepKind.WAIT_UNTIL: WaitUntilForm,
    StepKind.WAIT_EVENT: WaitEventForm,
    StepKind.BRANCH: BranchForm,
    StepKind.SPLIT: SplitForm,
    StepKind.UPDATE: UpdateForm,
    StepKind.WEBHOOK: WebhookForm,
    StepKind.EXIT: ExitForm,
}
MULTI_EXIT = frozenset({StepKind.BRANCH, StepKind.SPLIT, StepKind.WAIT_EVENT})
DEFAULT_SPLIT = {"paths": [{"label": "a", "weight": 50}, {"label": "b", "weight": 50}]}


class ExitsForm(forms.Form):
    """Where each exit of a branch, split or wait for an event leads: another step, or the end."""

    def __init__(
        self, *args: Any, labels: Sequence[str], names: Mapping[str, str], targets: Sequence[tuple[str, str]],
        **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self.labels = list(labels)
        for label in self.labels:
            self.fields[f"exit_{label}"] = forms.ChoiceField(
                required=False, choices=[("", "End the journey"), *targets], label=names.get(label, label)
            )

    def exits(self) -> dict[str, str | None]:
        return {label: self.cleaned_data.get(f"exit_{label}") or None for label in self.labels}


class StepVariantForm(VariantForm):
    """A variant of a send step's message (the campaigns composer's form), in a list of them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Declared here: VariantForm keeps only the fields of the channel.
        self.fields["variant_id"] = forms.IntegerField(required=False, widget=forms.HiddenInput)
        self.fields["target"].widget = forms.Select(choices=Variant.Target.choices)
        self.fields["target"].widget.attrs["data-variant-target"] = ""

    def as_variant(self) -> dict[str, Any]:
        data = self.cleaned_data
        variant = {name: data[name] for name in self.fields if name not in ("variant_id", "target_segment", "DELETE")}
        variant["target_segment_id"] = data["target_segment"].pk if data.get("target_segment") else None
        if data.get("variant_id"):
            variant["id"] = data["variant_id"]
        return variant


VariantFormSet = forms.formset_factory(
    StepVariantForm, extra=1, can_delete=True, max_num=MAX_VARIANTS, absolute_max=MAX_VARIANTS + 1
)


def variant_initial(variant: Variant) -> dict[str, Any]:
    names = (
        "name", "target", "target_stage", "weight", "subject", "preheader", "html_body", "text_body", "sms_body",
        "push_title", "push_body", "push_deep_link", "webhook_payload", "cta_label", "cta_url",
    )  # fmt: skip
    initial: dict[str, Any] = {name: getattr(variant, name) for name in names}
    initial.update(target_segment=variant.target_segment_id, variant_id=variant.pk)
    return initial


class StepEditor:
    """The whole editor of one step: its kind's form, and the lists some kinds have (property
    filters, split paths, a message's variants and sender, where the exits lead).

    ``data`` binds it (a POST); without it, ``step`` (or, for a new step, ``config``) fills it.
    """

    def __init__(
        self,
        kind: str,
        data: Mapping[str, Any] | None = None,
        *,
        tenant: Tenant,
        step: Step | None = None,
        config: Mapping[str, Any] | None = None,
        targets: Sequence[tuple[str, str]] = (),
        campaign: Campaign | None = None,
        variants: Sequence[Variant] = (),
    ) -> None:
        self.kind = kind
        self.tenant = tenant
        self.step = step
        config = dict(step.config if step is not None else config or {})
        if kind == StepKind.SPLIT and not config.get("paths"):
            config = dict(DEFAULT_SPLIT)
        self.saved_config = config
        form_class = STEP_FORMS[kind]
        initial = {"name": step.name if step else "", **form_class.initial_for(config)}
        self.form: StepForm = form_class(data, initial=initial, tenant=tenant)
        self.filters: forms.BaseFormSet | None = None
        self.paths: forms.BaseFormSet | None = None
        self.exits: ExitsForm | None = None
        self.sender: SenderForm | None = None
        self.variants: forms.BaseFormSet | None = None
        self.campaign: Campaign | None = None
        if kind == StepKind.WAIT_EVENT:
            self.filters = FilterFormSet(data, initial=filter_initial(config.get("filters")), prefix="filters")
        if kind == StepKind.SPLIT:
            paths = [p for p in config.get("paths") or [] if isinstance(p, Mapping)]
            rows = [{"label": p.get("label"), "weight": p.get("weight"), "original": p.get("label")} for p in paths]
            self.paths = PathFormSet(data, initial=rows, prefix="paths")
            # Room for the paths a split may still get.
            self.paths.extra = max(MAX_PATHS - len(rows), 0)
        if kind in MULTI_EXIT and step is not None:
            labels = exit_labels(kind, config)
            self.exits = ExitsForm(
                data, labels=labels, names={label: exit_name(label) for label in labels}, targets=targets,
                initial={f"exit_{label}": step.exits.get(label) or "" for label in labels}, prefix="exits",
            )  # fmt: skip
        if kind == StepKind.SEND:
            channel = str(config.get("channel") or CampaignChannel.EMAIL)
            preferred = step_channels(config) if channel == PREFERRED else []
            if preferred and data is not None and hasattr(data, "getlist"):
                # The channels as posted: each variant is checked for the channels about to be saved.
                preferred = posted_channels(data) or preferred
            if campaign is None:
                campaign = Campaign(tenant=tenant, kind=Campaign.Kind.JOURNEY, channel=channel)
            # The step's channel is the message's (each contact's preferred one: the variants hold each channel's).
            campaign.channel = preferred[0] if preferred else channel
            campaign.preferred_channel, campaign.preferred_channels = bool(preferred), preferred
            self.campaign = campaign
            self.sender = SenderForm(data, instance=campaign, prefix="sender")
            rows = [variant_initial(v) for v in variants]
            self.variants = VariantFormSet(data, initial=rows, prefix="variants", form_kwargs={"campaign": campaign})
            if not rows and self.variants.forms:
                # The first variant is everyone's message: open, named, for everyone.
                self.variants.forms[-1].initial.update({"name": "Everyone", "target": Variant.Target.DEFAULT})
            elif rows:
                self.variants.forms[-1].initial.update({"name": "", "target": Variant.Target.SEGMENT})
        self._sent_variants: list[forms.Form] = []

    @property
    def channel(self) -> str:
        """A send step's channel ("preferred" for each contact's preferred one; "" for the other kinds)."""
        if self.campaign is None:
            return ""
        return PREFERRED if self.campaign.preferred_channel else self.campaign.channel

    # --- parsing ---
    def parts(self) -> list[Any]:
        return [p for p in (self.form, self.filters, self.paths, self.exits, self.sender, self.variants) if p]

    def is_valid(self) -> bool:
        valid = [part.is_valid() for part in self.parts()]  # every part, so that every error shows
        return all(valid)

    def config(self) -> dict[str, Any]:
        config = self.form.config()
        if self.filters is not None:
            filters = filter_list(self.filters)
            if filters:
                config["filters"] = filters
        if self.paths is not None:
            config["paths"] = [
                {"label": row.cleaned_data["label"], "weight": row.cleaned_data["weight"]}
                for row in path_rows(self.paths)
            ]
        return config

    def new_exits(self) -> dict[str, str | None] | None:
        """Where the exits lead; a split's renamed path keeps where it led."""
        if self.exits is None:
            return None
        chosen = self.exits.exits()
        if self.paths is None:
            return chosen
        return {
            row.cleaned_data["label"]: chosen.get(row.cleaned_data.get("original") or row.cleaned_data["label"])
            for row in path_rows(self.paths)
        }

    def content(self) -> dict[str, Any] | None:
        """A send step's message: sender fields and variants (targeted ones first, the default last)."""
        if self.sender is None or self.variants is None:
            return None
        deleted = set(map(id, self.variants.deleted_forms))
        initial_count = self.variants.initial_form_count()
        kept = [
            form
            for index, form in enumerate(self.variants.forms)
            if id(form) not in deleted and (index < initial_count or form.has_changed())
        ]
        targeted = [f for f in kept if f.cleaned_data["target"] != Variant.Target.DEFAULT]
        self._sent_variants = targeted + [f for f in kept if f.cleaned_data["target"] == Variant.Target.DEFAULT]
        return {
            **{name: self.sender.cleaned_data[name] for name in self.sender.fields},
            "variants": [cast(StepVariantForm, form).as_variant() for form in self._sent_variants],
        }

    def warnings(self) -> list[str]:
        return [w for form in self._sent_variants for w in cast(StepVariantForm, form).warnings]

    # --- the service's errors, in place ---
    def add_service_errors(self, error: ValidationError) -> list[dict[str, str]]:
        """Put a service's errors on the fields they name; return a branch's rule errors (path, message)."""
        rule_errors: list[dict[str, str]] = []
        if not hasattr(error, "error_dict"):
            add_service_errors(self.form, error)
            return rule_errors
        for path, errors in error.error_dict.items():
            for message in ValidationError(errors).messages:
                if path.startswith("config.rules"):
                    rule_errors.append({"path": path.removeprefix("config.rules").lstrip("."), "message": message})
                self._place(path, message)
        return rule_errors

    def _place(self, path: str, message: str) -> None:
        form, field = self._field_for(path)
        if form is not None and field in form.fields:
            form.add_error(field, message)
        elif path.startswith("config.rules"):
            where = path.removeprefix("config.rules").lstrip(".")
            self.form.add_error("rules", f"{where}: {message}" if where else message)
        else:
            self.form.add_error(None, message)

    def _field_for(self, path: str) -> tuple[forms.BaseForm | None, str]:
        if path.startswith("config."):
            rest = path.removeprefix("config.")
            indexed = re.fullmatch(r"(filters|paths)[.\[](\d+)\]?\.?(\w*)", rest)
            if indexed:
                group, index, field = indexed.groups()
                rows = (
                    filter_forms(self.filters)
                    if group == "filters" and self.filters
                    else path_rows(self.paths)
                    if self.paths
                    else []
                )
                if int(index) >= len(rows):
                    return None, ""
                return rows[int(index)], field or ("label" if group == "paths" else "property")
            for head, field in self.form.error_fields.items():
                if rest == head or rest.startswith((head + ".", head + "[")):
                    return self.form, field
            return None, ""
        if path.startswith("exits.") and self.exits is not None:
            return self.exits, f"exit_{path.removeprefix('exits.')}"
        if path.startswith("content.variants["):
            index, _, field = path.removeprefix("content.variants[").partition("]")
            field = field.lstrip(".").removesuffix("_id")
            if index.isdigit() and int(index) < len(self._sent_variants):
                return self._sent_variants[int(index)], field
            return None, ""
        if path.startswith("content.") and self.sender is not None:
            return self.sender, path.removeprefix("content.")
        if path in ("name", "channel"):
            return self.form, path
        return None, ""


def exit_name(label: str) -> str:
    """An exit as the builder shows it."""
    return EXIT_NAMES.get(label, f"Path {label}")


EXIT_NAMES = {"next": "Next", "yes": "Yes", "no": "No", "happened": "The event happened", "timed_out": "Timed out"}
