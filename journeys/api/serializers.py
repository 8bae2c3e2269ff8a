"""Serializers of the journeys API: they parse and render; the services judge state and write.

A journey is written with its settings (segments by id: ``trigger_segment``, ``entry_segment``,
``exit_segment``) and, optionally, its whole graph: ``steps`` and ``start_key``. A send step's
message is its ``content``: variants in the campaigns API's shape, and sender fields. Errors name
the field the way a client wrote it: ``steps[2].config.duration``,
``steps[0].content.variants[1].html_body``.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from campaigns.api.serializers import (
    MAX_VARIANTS,
    CampaignsModelSerializer,
    StrictQuerySerializer,
    VariantOutputSerializer,
    VariantSerializer,
)
from campaigns.models import Campaign
from contacts.api.serializers import StrictSerializer, reject_unknown_keys
from contacts.models import Channel, LifecycleStage
from contacts.services import NUL_MESSAGE, contains_nul
from journeys.blueprints import BLUEPRINTS
from journeys.models import Enrollment, Journey, JourneyVersion, Step, StepKind
from journeys.selectors import JourneySummary, StepFigures, enrollment_path
from journeys.validation import MAX_STEPS
from tenants.api.schema import blank_allowed, or_blank

MAX_ID = 2**63 - 1  # ids are bigints: a larger number is refused here, not by the database
MAX_TRIGGER_FILTERS = 50

# --- choices in the schema ------------------------------------------------------------------------
# Each choice set is its own named component (as in the campaigns API): spectacular's enum hook would
# name them by field ("status", "kind") and collide with the other apps' choices of the same names.
ENUM_COMPONENTS: dict[frozenset[str], str] = {
    frozenset(Journey.Status.values): "JourneyStatusEnum",
    frozenset(Journey.Trigger.values): "JourneyTriggerEnum",
    frozenset(Journey.Entry.values): "JourneyEntryEnum",
    frozenset(StepKind.values): "JourneyStepKindEnum",
    frozenset(Enrollment.Status.values): "JourneyEnrollmentStatusEnum",
    frozenset(LifecycleStage.values): "JourneyTriggerStageEnum",
    frozenset(Channel.values): "JourneyConsentChannelEnum",
    frozenset(BLUEPRINTS): "JourneyBlueprintEnum",
}


class JourneyChoiceField(serializers.ChoiceField):
    """A choice field documented as a named enum component (see ENUM_COMPONENTS)."""


class JourneyChoiceFieldExtension(OpenApiSerializerFieldExtension):
    target_class = "journeys.api.serializers.JourneyChoiceField"

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> Any:
        field: JourneyChoiceField = self.target
        name = ENUM_COMPONENTS.get(frozenset(str(key) for key in field.choices))
        if name is None:
            return auto_schema._map_serializer_field(field, direction, bypass_extensions=True)
        lines = "\n".join(f"* `{value}` - {label}" for value, label in field.choices.items())
        schema = {"type": "string", "enum": [str(key) for key in field.choices], "description": lines}
        component = ResolvedComponent(name=name, type=ResolvedComponent.SCHEMA, object=name, schema=schema)
        auto_schema.registry.register_on_missing(component)
        if blank_allowed(field):
            return or_blank(component.ref)
        return component.ref


class JsonObjectField(serializers.DictField):
    """A JSON object for a jsonb column, which cannot hold U+0000 (key or value): refused here, not by the database."""

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if contains_nul(value):
            raise serializers.ValidationError(NUL_MESSAGE)
        return value


class JourneysModelSerializer(serializers.ModelSerializer):
    serializer_choice_field = JourneyChoiceField


# --- journeys: settings ---------------------------------------------------------------------------
SETTINGS = (
    "name", "description", "trigger", "trigger_segment", "trigger_event", "trigger_filters", "trigger_stage",
    "trigger_date_field", "entry", "cooldown_days", "entry_segment", "daily_cap", "goal_event", "exit_segment",
    "exit_on_consent_withdrawn", "purpose",
)  # fmt: skip
SEGMENT_HELP = {
    "trigger_segment": "For trigger segment_entered: the segment id whose new members enter.",
    "entry_segment": "Only contacts in this segment (id) may enter; null: anyone.",
    "exit_segment": "Contacts who leave this segment (id) leave the journey; null: none.",
}
SETTINGS_HELP = {
    "trigger": "segment_entered (trigger_segment), event (trigger_event, trigger_filters), stage_changed "
    "(trigger_stage; blank: any change) or date_attribute (trigger_date_field).",
    "trigger_event": "For trigger event: the event name that starts the journey, e.g. cart_abandoned.",
    "trigger_filters": 'For trigger event: property filters, e.g. [{"property": "value", "op": "gt", "value": 50}].',
    "trigger_stage": "For trigger stage_changed: the stage entered; blank for any change of stage.",
    "trigger_date_field": "For trigger date_attribute: birth_date or attributes.<key> of a date attribute; "
    "contacts enter on its anniversary.",
    "entry": "once (once ever) or cooldown (again cooldown_days after the last entry).",
    "cooldown_days": "For entry cooldown: at least 1.",
    "daily_cap": "At most this many entrants per (UTC) day; 0: no cap.",
    "goal_event": "A contact who performs this event leaves at once and counts as converted.",
    "exit_on_consent_withdrawn": "Contacts who withdraw consent on this channel (for purpose) leave the journey.",
    "purpose": "Consent is checked for each send step's channel and this purpose.",
}


def segment_field(name: str, **kwargs: Any) -> serializers.IntegerField:
    return serializers.IntegerField(
        source=f"{name}_id", allow_null=True, help_text=SEGMENT_HELP[name], min_value=1, max_value=MAX_ID, **kwargs
    )


class JourneyCountsSerializer(serializers.Serializer):
    entered = serializers.IntegerField(help_text="Enrollments in all, every status.")
    active = serializers.IntegerField(help_text="In the journey now.")
    completed = serializers.IntegerField(help_text="Walked a path to its end.")
    converted = serializers.IntegerField(help_text="Reached the goal.")
    exited = serializers.IntegerField(help_text="Left by an exit rule or when the journey was archived.")
    conversion_rate = serializers.FloatField(help_text="converted / entered (0 when nobody entered).")


COUNTS = ("entered", "active", "completed", "converted", "exited")


def counts_data(counts: dict[str, int] | None) -> dict[str, Any]:
    """``selectors.journey_counts``' row for one journey, with the conversion rate."""
    summary = JourneySummary(**{name: (counts or {}).get(name, 0) for name in COUNTS})
    return {**{name: getattr(summary, name) for name in COUNTS}, "conversion_rate": summary.conversion_rate}


class JourneySerializer(JourneysModelSerializer):
    trigger_segment = segment_field("trigger_segment", read_only=True)
    entry_segment = segment_field("entry_segment", read_only=True)
    exit_segment = segment_field("exit_segment", read_only=True)
    trigger_filters = serializers.ListField(
        child=serializers.DictField(), read_only=True, help_text=SETTINGS_HELP["trigger_filters"]
    )
    live_version = serializers.SerializerMethodField(
        help_text="The number of the version new entrants get; null until the journey first starts."
    )
    counts = serializers.SerializerMethodField(help_text="Enrollments by status, and the conversion rate.")

    class Meta:
        model = Journey
        fields: tuple[str, ...] = ("id", *SETTINGS, "status", "live_version", "counts", "created_at", "updated_at")
        read_only_fields: tuple[str, ...] = fields
        extra_kwargs = {name: {"help_text": text} for name, text in SETTINGS_HELP.items()}

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_live_version(self, journey: Journey) -> int | None:
        return journey.live_version.number if journey.live_version is not None else None

    @extend_schema_field(JourneyCountsSerializer)
    def get_counts(self, journey: Journey) -> dict[str, Any]:
        return counts_data(self.context.get("counts", {}).get(journey.pk))


# --- steps ----------------------------------------------------------------------------------------
class JourneyStepContentSerializer(serializers.Serializer):
    variants = VariantOutputSerializer(many=True, help_text="As in the campaigns API.")
    sender_name = serializers.CharField(allow_blank=True)
    sender_email = serializers.CharField(allow_blank=True)
    reply_to = serializers.CharField(allow_blank=True)
    sms_sender = serializers.CharField(allow_blank=True)
    webhook_url = serializers.CharField(allow_blank=True)


def step_content(step: Step) -> dict[str, Any] | None:
    """A send step's message (its hidden campaign's variants and sender fields); None for other kinds."""
    if step.kind != StepKind.SEND:
        return None
    campaign = step.campaign
    senders = ("sender_name", "sender_email", "reply_to", "sms_sender", "webhook_url")
    if campaign is None:
        return {"variants": [], **dict.fromkeys(senders, "")}
    variants = VariantOutputSerializer(campaign.variants.all(), many=True).data  # prefetched by the selector
    return {"variants": variants, **{name: getattr(campaign, name) for name in senders}}


STEP_CONFIG_HELP = (
    "Per kind (docs/journeys.md): send {channel} (or each contact's preferred channel: {channel: preferred, "
    "channels: [two or three of email, sms, push, in the order used without engagement]}, docs/preferred_channel.md); "
    "wait {duration: {amount, unit}}; wait_until {weekdays, time}; "
    "wait_event {event, filters, timeout}; branch {rules: a segment rule tree}; split {paths: [{label, weight}]}; "
    "update {set_attributes, add_to_list, stage}; webhook {url}; exit {}."
)
STEP_EXITS_HELP = (
    "Exit label → the key of the next step, or null where the journey ends: next; yes/no for branch; "
    "happened/timed_out for wait_event; one per path label for split; none for exit."
)


class JourneyStepSerializer(JourneysModelSerializer):
    config = serializers.DictField(read_only=True, help_text=STEP_CONFIG_HELP)
    exits = serializers.DictField(
        child=serializers.CharField(allow_null=True), read_only=True, help_text=STEP_EXITS_HELP
    )
    content = serializers.SerializerMethodField(help_text="A send step's message; null for other kinds.")

    class Meta:
        model = Step
        fields: tuple[str, ...] = ("key", "kind", "name", "config", "exits", "position", "content")
        read_only_fields: tuple[str, ...] = fields

    @extend_schema_field(JourneyStepContentSerializer(allow_null=True))
    def get_content(self, step: Step) -> dict[str, Any] | None:
        return step_content(step)


class JourneyStepFiguresSerializer(serializers.Serializer):
    waiting = serializers.IntegerField(help_text="Contacts at this step now.")
    passed = serializers.IntegerField(help_text="Contacts who have left this step.")
    converted = serializers.IntegerField(help_text="Of those, how many reached the goal.")


class JourneyStepWithFiguresSerializer(JourneyStepSerializer):
    figures = serializers.SerializerMethodField(help_text="Over every version of the journey (keys carry over).")

    class Meta(JourneyStepSerializer.Meta):
        fields = (*JourneyStepSerializer.Meta.fields, "figures")
        read_only_fields = fields

    @extend_schema_field(JourneyStepFiguresSerializer)
    def get_figures(self, step: Step) -> dict[str, int]:
        figures = self.context.get("figures", {}).get(step.key, StepFigures())
        return {"waiting": figures.waiting, "passed": figures.passed, "converted": figures.converted}


class JourneyStepSavedSerializer(JourneyStepSerializer):
    warnings = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        read_only=True,
        help_text="Template warnings by field path (unknown variables render empty), e.g. variants[0].subject.",
    )

    class Meta(JourneyStepSerializer.Meta):
        fields = (*JourneyStepSerializer.Meta.fields, "warnings")
        read_only_fields = fields


class JourneyStepsDeletedSerializer(serializers.Serializer):
    deleted = serializers.ListField(
        child=serializers.CharField(), help_text="The step's key, and those of steps no path reached any more."
    )


class JourneyVersionSerializer(JourneysModelSerializer):
    is_draft = serializers.BooleanField(read_only=True, help_text="Not published yet: the version being edited.")

    class Meta:
        model = JourneyVersion
        fields = ("number", "start_key", "published_at", "is_draft")
        read_only_fields = fields


class JourneyDetailSerializer(JourneySerializer):
    version = serializers.SerializerMethodField(
        help_text="The version shown: the draft being edited, else the live one; null before the first step."
    )
    steps = serializers.SerializerMethodField(help_text="The shown version's steps, in builder order.")

    class Meta(JourneySerializer.Meta):
        fields = (*JourneySerializer.Meta.fields[:-2], "version", "steps", "created_at", "updated_at")
        read_only_fields = fields

    @extend_schema_field(JourneyVersionSerializer(allow_null=True))
    def get_version(self, journey: Journey) -> dict[str, Any] | None:
        version = self.context.get("version")
        return JourneyVersionSerializer(version).data if version is not None else None

    @extend_schema_field(JourneyStepWithFiguresSerializer(many=True))
    def get_steps(self, journey: Journey) -> Any:
        steps = self.context.get("steps", [])
        return JourneyStepWithFiguresSerializer(steps, many=True, context=self.context).data


class JourneyArchivedSerializer(JourneyDetailSerializer):
    exited = serializers.SerializerMethodField(help_text="Contacts in flight who exited now.")

    class Meta(JourneyDetailSerializer.Meta):
        fields = (*JourneyDetailSerializer.Meta.fields, "exited")
        read_only_fields = fields

    def get_exited(self, journey: Journey) -> int:
        return int(self.context.get("exited", 0))


# --- writing --------------------------------------------------------------------------------------
class JourneyStepContentWriteSerializer(StrictSerializer, CampaignsModelSerializer):
    """A send step's message: variants as in the campaigns API, and sender fields (workspace defaults if blank)."""

    variants = VariantSerializer(many=True, required=False, max_length=MAX_VARIANTS)  # type: ignore[call-arg]

    class Meta:
        model = Campaign
        fields = ("variants", "sender_name", "sender_email", "reply_to", "sms_sender", "webhook_url")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return attrs  # the service judges the content (templates, targets)

    def get_validators(self) -> list[Any]:
        return []


def check_content(attrs: dict[str, Any], kind: str | None) -> dict[str, Any]:
    if attrs.get("content") is not None and kind is not None and kind != StepKind.SEND:
        raise serializers.ValidationError({"content": ["Only a send step has content."]})
    if attrs.get("content") is None:
        attrs.pop("content", None)
    return attrs


class JourneyStepWriteSerializer(StrictSerializer):
    """One step of the whole-graph write."""

    key = serializers.CharField(max_length=40, help_text="Its name in exits and start_key: letters, digits, _.")
    kind = JourneyChoiceField(choices=StepKind.choices)
    name = serializers.CharField(max_length=200, allow_blank=True, required=False)
    config = JsonObjectField(required=False, help_text=STEP_CONFIG_HELP)
    exits = JsonObjectField(
        child=serializers.CharField(max_length=40, allow_null=True), required=False, help_text=STEP_EXITS_HELP
    )
    content = JourneyStepContentWriteSerializer(required=False, allow_null=True, help_text="Send steps only.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return check_content(attrs, attrs.get("kind"))


@extend_schema_field(JourneyStepWriteSerializer(many=True))
class JourneyStepListField(serializers.Field):
    """The whole graph, each step checked in full even in a PATCH (a partial parse skips missing keys)."""

    def to_internal_value(self, data: Any) -> Any:
        steps = JourneyStepWriteSerializer(many=True, data=data, max_length=MAX_STEPS)  # type: ignore[call-arg]
        if not steps.is_valid():
            raise serializers.ValidationError(steps.errors)
        return [dict(step) for step in steps.validated_data]

    def to_representation(self, value: Any) -> Any:
        return value


class JourneyWriteSerializer(StrictSerializer, JourneysModelSerializer):
    """Create (name required) or PATCH (any subset) a journey's settings and, with ``steps``, its draft's graph."""

    trigger_segment = segment_field("trigger_segment", required=False)
    entry_segment = segment_field("entry_segment", required=False)
    exit_segment = segment_field("exit_segment", required=False)
    trigger_filters = serializers.ListField(
        child=JsonObjectField(), required=False, max_length=MAX_TRIGGER_FILTERS,
        help_text=SETTINGS_HELP["trigger_filters"],
    )  # fmt: skip
    steps = JourneyStepListField(required=False, help_text="The draft's whole graph; replaces its steps.")
    start_key = serializers.CharField(
        max_length=40, required=False, allow_null=True,
        help_text="With steps: the key of the first step (the first in the list when absent).",
    )  # fmt: skip

    class Meta:
        model = Journey
        fields = (*SETTINGS, "steps", "start_key")
        extra_kwargs = {name: {"help_text": text} for name, text in SETTINGS_HELP.items()}

    def to_internal_value(self, data: Any) -> Any:
        read_only = ("id", "status", "live_version", "counts", "version", "created_at", "updated_at")
        reject_unknown_keys(data, self.fields, read_only)
        return JourneysModelSerializer.to_internal_value(self, data)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "start_key" in attrs and "steps" not in attrs:
            raise serializers.ValidationError({"start_key": ["Send start_key with the steps it names."]})
        return attrs

    def get_validators(self) -> list[Any]:
        return []  # the name is unique per workspace: the service checks it within the tenant


class JourneyStepAddSerializer(StrictSerializer):
    kind = JourneyChoiceField(choices=StepKind.choices)
    after = serializers.CharField(
        max_length=40, required=False, allow_null=True, default=None,
        help_text="Insert after this step (its key); null or absent: at the start.",
    )  # fmt: skip
    exit = serializers.CharField(
        max_length=20, required=False, default="next",
        help_text="On which exit of `after`, e.g. yes for a branch. What followed there follows the new step.",
    )  # fmt: skip
    name = serializers.CharField(max_length=200, allow_blank=True, required=False, default="")
    config = JsonObjectField(required=False, default=dict, help_text=STEP_CONFIG_HELP)
    content = JourneyStepContentWriteSerializer(required=False, allow_null=True, help_text="Send steps only.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return check_content(attrs, attrs.get("kind"))


class JourneyStepUpdateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200, allow_blank=True, required=False)
    config = JsonObjectField(required=False, help_text=STEP_CONFIG_HELP)
    exits = JsonObjectField(
        child=serializers.CharField(max_length=40, allow_null=True), required=False, help_text=STEP_EXITS_HELP
    )
    content = JourneyStepContentWriteSerializer(
        required=False, allow_null=True, help_text="Send steps only; variants replace the list (name ids to keep)."
    )


class JourneyStepMoveSerializer(StrictSerializer):
    after = serializers.CharField(
        max_length=40, allow_null=True, help_text="Move after this step (its key); null: to the start."
    )
    exit = serializers.CharField(max_length=20, required=False, default="next", help_text="On which exit of `after`.")


class JourneyStepDeleteQuerySerializer(StrictQuerySerializer):
    keep = serializers.CharField(
        max_length=20, required=False,
        help_text="Which exit's steps take the deleted step's place (its first exit by default); the steps "
        "only its other exits led to are deleted too.",
    )  # fmt: skip


class JourneyStartSerializer(StrictSerializer):
    migrate = serializers.BooleanField(
        required=False, default=False,
        help_text="Move contacts in flight on older versions to the step with the same key in the new one.",
    )  # fmt: skip


class JourneyFromBlueprintSerializer(StrictSerializer):
    blueprint = JourneyChoiceField(choices=[(key, b.name) for key, b in BLUEPRINTS.items()])
    name = serializers.CharField(
        max_length=200, required=False, help_text="The blueprint's name (numbered if taken) when absent."
    )


class JourneyFilterSerializer(StrictQuerySerializer):
    status = JourneyChoiceField(choices=Journey.Status.choices, required=False)
    search = serializers.CharField(required=False, max_length=200, help_text="Part of the name (any case).")


# --- validation and blueprints --------------------------------------------------------------------
class JourneyProblemSerializer(serializers.Serializer):
    step = serializers.CharField(allow_blank=True, help_text="The step's key; blank for the journey's settings.")
    field = serializers.CharField(allow_blank=True, help_text="e.g. config.duration, exits.next, trigger_event.")
    message = serializers.CharField()


class JourneyValidationSerializer(serializers.Serializer):
    valid = serializers.BooleanField(help_text="Nothing stops the draft from starting.")
    problems = JourneyProblemSerializer(many=True)


class JourneyBlueprintSerializer(serializers.Serializer):
    key = JourneyChoiceField(choices=[(key, b.name) for key, b in BLUEPRINTS.items()])
    name = serializers.CharField()
    description = serializers.CharField()


# --- enrollments ----------------------------------------------------------------------------------
class JourneyEnrollmentFilterSerializer(StrictQuerySerializer):
    status = JourneyChoiceField(choices=Enrollment.Status.choices, required=False)


class JourneyEnrollmentSerializer(JourneysModelSerializer):
    contact_id = serializers.IntegerField(read_only=True)
    step_key = serializers.CharField(
        source="step.key", read_only=True, allow_null=True, help_text="The current (or last) step's key."
    )
    version = serializers.IntegerField(source="version.number", read_only=True, help_text="The version it walks.")

    class Meta:
        model = Enrollment
        fields: tuple[str, ...] = (
            "id", "contact_id", "status", "step_key", "version", "seq", "entered_at", "step_entered_at",
            "next_run_at", "finished_at", "exit_reason", "trigger_detail",
        )  # fmt: skip
        read_only_fields: tuple[str, ...] = fields


class JourneyPathStepSerializer(serializers.Serializer):
    seq = serializers.IntegerField(help_text="The step's number in the walk.")
    key = serializers.CharField(allow_blank=True)
    kind = serializers.CharField(allow_blank=True)
    name = serializers.CharField()
    entered_at = serializers.DateTimeField()
    left_at = serializers.DateTimeField(allow_null=True)
    outcome = serializers.CharField(allow_blank=True, help_text="The exit taken, or what the step did.")
    delivery_id = serializers.IntegerField(allow_null=True, help_text="A send step's delivery.")
    detail = serializers.CharField(allow_blank=True)


class JourneyEnrollmentDetailSerializer(JourneyEnrollmentSerializer):
    path = serializers.SerializerMethodField(help_text="The steps taken, in order.")

    class Meta(JourneyEnrollmentSerializer.Meta):
        fields = (*JourneyEnrollmentSerializer.Meta.fields, "path")
        read_only_fields = fields

    @extend_schema_field(JourneyPathStepSerializer(many=True))
    def get_path(self, enrollment: Enrollment) -> Any:
        return JourneyPathStepSerializer(enrollment_path(enrollment=enrollment), many=True).data
