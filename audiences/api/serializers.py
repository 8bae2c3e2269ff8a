"""Serializers of the ad audiences API: they parse and render; audiences/services.py judges and writes."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from audiences.models import AudienceDestination, AudienceExport, AudienceFormat, ExportKind
from audiences.selectors import EXCLUSION_REASONS
from audiences.services import MAX_INTERVAL_MINUTES, MIN_INTERVAL_MINUTES, MIN_SECRET_LENGTH, next_run
from contacts.api.serializers import StrictSerializer

# Each choice set is a named component of its own: spectacular's enum hook would name them by field
# ("kind", "format", "status") and collide with other apps' choices of the same field names.
ENUM_COMPONENTS: dict[frozenset[str], str] = {
    frozenset(ExportKind.values): "AudienceExportKindEnum",
    frozenset(AudienceFormat.values): "AudienceFormatEnum",
    frozenset(AudienceDestination.Schedule.values): "AudienceScheduleEnum",
    frozenset(AudienceExport.Status.values): "AudienceExportStatusEnum",
    frozenset(AudienceExport.Delivery.values): "AudienceExportDeliveryEnum",
    frozenset(AudienceExport.Trigger.values): "AudienceExportTriggerEnum",
}


class AudienceChoiceField(serializers.ChoiceField):
    """A choice field documented as a named enum component (see ENUM_COMPONENTS)."""


class AudienceChoiceFieldExtension(OpenApiSerializerFieldExtension):
    target_class = "audiences.api.serializers.AudienceChoiceField"

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> Any:
        field: AudienceChoiceField = self.target
        name = ENUM_COMPONENTS[frozenset(str(key) for key in field.choices)]
        lines = "\n".join(f"* `{value}` - {label}" for value, label in field.choices.items())
        schema = {"type": "string", "enum": [str(key) for key in field.choices], "description": lines}
        component = ResolvedComponent(name=name, type=ResolvedComponent.SCHEMA, object=name, schema=schema)
        auto_schema.registry.register_on_missing(component)
        return component.ref


class DestinationSerializer(serializers.ModelSerializer):
    serializer_choice_field = AudienceChoiceField
    segment = serializers.IntegerField(source="segment_id", read_only=True)
    has_secret = serializers.SerializerMethodField(help_text="A signing secret is stored (it is never shown).")
    next_run = serializers.SerializerMethodField(help_text="When the export runs next; null when it is off.")

    class Meta:
        model = AudienceDestination
        fields = (
            "id", "name", "segment", "kind", "format", "url", "has_secret", "schedule", "interval_minutes",
            "crontab", "enabled", "next_run", "created_at", "updated_at",
        )  # fmt: skip
        read_only_fields = fields

    def get_has_secret(self, destination: AudienceDestination) -> bool:
        return bool(destination.secret)

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_next_run(self, destination: AudienceDestination) -> Any:
        when = next_run(destination)
        return serializers.DateTimeField().to_representation(when) if when else None


class DestinationInputSerializer(StrictSerializer):
    name = serializers.CharField(max_length=120, required=False)
    segment = serializers.IntegerField(min_value=1, required=False, help_text="The id of a segment of the workspace.")
    kind = AudienceChoiceField(choices=ExportKind.choices, required=False)
    format = AudienceChoiceField(choices=AudienceFormat.choices, required=False)
    url = serializers.CharField(max_length=500, required=False, help_text="An https:// URL that receives the file.")
    secret = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=500,
        help_text=f"HMAC-SHA256 signing key, at least {MIN_SECRET_LENGTH} characters. Write-only; omit it (or send "
        '"") on a change to keep the stored one.',
    )
    schedule = AudienceChoiceField(choices=AudienceDestination.Schedule.choices, required=False)
    interval_minutes = serializers.IntegerField(
        required=False, allow_null=True, min_value=MIN_INTERVAL_MINUTES, max_value=MAX_INTERVAL_MINUTES
    )
    crontab = serializers.CharField(
        required=False, allow_blank=True, max_length=100, help_text="Five fields, in the workspace's time zone."
    )
    enabled = serializers.BooleanField(required=False)

    def to_internal_value(self, data: Any) -> Any:
        values = super().to_internal_value(data)
        if not values.get("secret"):
            values.pop("secret", None)
        return values


@extend_schema_field(
    {
        "type": "object",
        "properties": {
            reason: {"type": "integer", "description": label} for reason, label in EXCLUSION_REASONS.items()
        },
    }
)
class ExcludedField(serializers.JSONField):
    pass


class ExportSerializer(serializers.ModelSerializer):
    serializer_choice_field = AudienceChoiceField
    segment = serializers.IntegerField(source="segment_id", read_only=True, allow_null=True)
    destination = serializers.IntegerField(source="destination_id", read_only=True, allow_null=True)
    excluded = ExcludedField(read_only=True, help_text="Members left out, by reason (each counted once).")
    definition = serializers.JSONField(read_only=True, help_text="The segment's kind and rules at export time.")

    class Meta:
        model = AudienceExport
        fields = (
            "id", "segment", "segment_name", "segment_version", "membership_version", "membership_refreshed_at",
            "definition", "definition_hash", "kind", "format", "delivery", "destination", "trigger", "requested_by",
            "consent_purpose", "status", "created_at", "started_at", "finished_at", "member_count", "row_count",
            "excluded", "file_sha256", "file_bytes", "parts_total", "parts_sent", "attempts", "next_attempt_at",
            "error",
        )  # fmt: skip
        read_only_fields = fields


class ShareSerializer(serializers.Serializer):
    value = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]  # a field named like Field.label
    seed = serializers.IntegerField(help_text="Seed members with this value.")
    overall = serializers.IntegerField(help_text="Contacts with this value.")
    seed_share = serializers.FloatField(help_text="Of the seed, 0-1.")
    overall_share = serializers.FloatField(help_text="Of every contact, 0-1.")
    lift = serializers.FloatField(allow_null=True, help_text="seed_share / overall_share.")


class ValueFigureSerializer(serializers.Serializer):
    label = serializers.CharField()  # type: ignore[assignment]  # a field named like Field.label
    seed = serializers.CharField(allow_null=True, help_text="A decimal amount, or a share (0-1) for Buyers.")
    overall = serializers.CharField(allow_null=True)
    money = serializers.BooleanField()


class LookalikeSerializer(serializers.Serializer):
    segment = serializers.IntegerField()
    seed_size = serializers.IntegerField()
    audience_size = serializers.IntegerField(help_text="Every contact that is not erased.")
    countries = ShareSerializer(many=True)
    stages = ShareSerializer(many=True)
    tags = serializers.DictField(child=ShareSerializer(many=True), help_text="Top tags per psychographic field.")
    value = ValueFigureSerializer(many=True)
    value_as_of = serializers.DateTimeField(allow_null=True)
    computed_at = serializers.DateTimeField()
