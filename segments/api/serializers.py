"""Serializers of the segments API: they parse and render; the rule validator and the services judge.

A rule tree is passed on untouched (``RuleTreeField``) so the API, the builder and the admin
share one validator (segments/rules.py), whose errors keep their paths.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from contacts.api.serializers import StrictSerializer, reject_unknown_keys
from contacts.models import LifecycleStage
from segments.models import Segment
from segments.selectors import OVERLAP_MAX_SEGMENTS, SAMPLE_SIZE
from segments.services import MAX_STATIC_IDS
from tenants.api.base import TenantPrimaryKeyRelatedField

MAX_SAMPLE_SIZE = 100


class RuleTreeField(serializers.Field):
    """Any JSON value, handed to the validator as it came (documented as the RuleTree component)."""

    def to_internal_value(self, data: Any) -> Any:
        return data

    def to_representation(self, value: Any) -> Any:
        return value


class SegmentKindField(serializers.ChoiceField):
    """dynamic or static (documented as the SegmentKindEnum component)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=Segment.Kind.choices, **kwargs)


class RuleErrorSerializer(serializers.Serializer):
    path = serializers.CharField(help_text='Where in the tree, e.g. "all.0.any.2.value"; empty for the tree itself.')
    message = serializers.CharField()


# --- segments ------------------------------------------------------------------------------
class SegmentSerializer(serializers.ModelSerializer):
    kind = SegmentKindField(read_only=True)
    rules = RuleTreeField(read_only=True, help_text="The rule tree; {} for a static segment.")
    status = serializers.SerializerMethodField(
        help_text="ready: the members follow the current rules; pending: a refresh of changed rules is queued "
        "or running; error: the last refresh failed (see refresh_error)."
    )

    class Meta:
        model = Segment
        fields = (
            "id", "name", "description", "kind", "rules", "size", "version", "materialized_version", "status",
            "refreshed_at", "refresh_error", "time_relative", "depends_on", "created_at", "updated_at",
        )  # fmt: skip
        read_only_fields = fields
        extra_kwargs = {
            "size": {"help_text": "Members at the last refresh (dynamic) or change (static)."},
            "version": {"help_text": "Bumped on every change of the rules."},
            "materialized_version": {"help_text": "The version the current members were computed from."},
            "time_relative": {"help_text": "The rules move with the clock and are refreshed periodically."},
            "depends_on": {"help_text": "Ids of the segments the rules refer to."},
        }

    def get_status(self, segment: Segment) -> str:
        if segment.refresh_error:
            return "error"
        if segment.is_dynamic and segment.materialized_version != segment.version:
            return "pending"
        return "ready"


class SegmentCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200, help_text="Unique in the workspace.")
    description = serializers.CharField(required=False, allow_blank=True, default="")
    kind = SegmentKindField(default=Segment.Kind.DYNAMIC)
    rules = RuleTreeField(
        required=False, allow_null=True, help_text="Required for a dynamic segment; a static one has none."
    )

    def to_internal_value(self, data: Any) -> Any:
        reject_unknown_keys(data, self.fields, SegmentSerializer.Meta.fields)
        return super().to_internal_value(data)


class SegmentUpdateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    rules = RuleTreeField(
        required=False, allow_null=True, help_text="A new tree bumps the version and queues a refresh."
    )

    def to_internal_value(self, data: Any) -> Any:
        reject_unknown_keys(data, self.fields, SegmentSerializer.Meta.fields)
        return super().to_internal_value(data)


# --- validate and preview --------------------------------------------------------------------
class RulesInputSerializer(StrictSerializer):
    rules = RuleTreeField(allow_null=True, help_text="The tree to check.")
    segment = TenantPrimaryKeyRelatedField(
        model=Segment,
        required=False,
        allow_null=True,
        help_text="The segment being edited, if any: a rule that leads back to it is refused as a cycle.",
    )


class PreviewInputSerializer(RulesInputSerializer):
    sample_size = serializers.IntegerField(
        min_value=0, max_value=MAX_SAMPLE_SIZE, default=SAMPLE_SIZE, help_text="How many matching contacts to show."
    )


class SegmentPreviewInputSerializer(StrictSerializer):
    rules = RuleTreeField(required=False, allow_null=True, help_text="Edited rules to count instead of the saved ones.")
    sample_size = serializers.IntegerField(min_value=0, max_value=MAX_SAMPLE_SIZE, default=SAMPLE_SIZE)


class ValidationResultSerializer(serializers.Serializer):
    valid = serializers.BooleanField()
    errors = RuleErrorSerializer(many=True)  # type: ignore[assignment]  # a field, not Serializer.errors


class SampleContactSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    email = serializers.CharField()
    phone = serializers.CharField()
    first_name = serializers.CharField()
    last_name = serializers.CharField()
    country = serializers.CharField()
    lifecycle_stage = serializers.ChoiceField(choices=LifecycleStage.choices)


class PreviewSerializer(serializers.Serializer):
    count = serializers.IntegerField(allow_null=True, help_text="Matching contacts; null when invalid or timed out.")
    sample = SampleContactSerializer(many=True, help_text="The newest matching contacts.")
    errors = RuleErrorSerializer(many=True)  # type: ignore[assignment]  # a field, not Serializer.errors
    timed_out = serializers.BooleanField(help_text="The count ran past its time limit and was cancelled.")
    elapsed_ms = serializers.FloatField()


# --- members ---------------------------------------------------------------------------------
class MemberSerializer(SampleContactSerializer):
    external_id = serializers.CharField()
    city = serializers.CharField()
    entered_at = serializers.DateTimeField(help_text="When the contact entered the segment (this time).")


class ContactIdsSerializer(StrictSerializer):
    contact_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        allow_empty=False,
        max_length=MAX_STATIC_IDS,
        help_text=f"Contact ids of this workspace (at most {MAX_STATIC_IDS:,}); unknown and erased ones are skipped.",
    )


class MembersAddedSerializer(serializers.Serializer):
    added = serializers.IntegerField(help_text="Contacts that were not members before.")
    size = serializers.IntegerField()


class MembersRemovedSerializer(serializers.Serializer):
    removed = serializers.IntegerField(help_text="Contacts that were members.")
    size = serializers.IntegerField()


class RefreshQueuedSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["queued"])
    segment = serializers.IntegerField()
    version = serializers.IntegerField(help_text="The rules' version the refresh will materialise.")


# --- overlap ---------------------------------------------------------------------------------
class OverlapQuerySerializer(serializers.Serializer):
    ids = serializers.CharField(
        required=False,
        help_text=f"Comma-separated segment ids, 2 to {OVERLAP_MAX_SEGMENTS}. "
        f"Without it: the first {OVERLAP_MAX_SEGMENTS} segments by name.",
    )

    def validate_ids(self, value: str) -> list[int]:
        parts = [part.strip() for part in value.split(",") if part.strip()]
        if not all(part.isascii() and part.isdigit() and len(part) <= 18 for part in parts):
            raise serializers.ValidationError("Expected segment ids separated by commas, e.g. 3,5,8.")
        ids = list(dict.fromkeys(int(part) for part in parts))
        if not 2 <= len(ids) <= OVERLAP_MAX_SEGMENTS:
            raise serializers.ValidationError(f"Name 2 to {OVERLAP_MAX_SEGMENTS} segments.")
        return ids


class OverlapSegmentSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    size = serializers.IntegerField()
    refreshed_at = serializers.DateTimeField(allow_null=True)


class OverlapWarningSerializer(serializers.Serializer):
    kind = serializers.CharField(help_text="too_small or near_duplicate.")
    message = serializers.CharField()
    segments = serializers.ListField(child=serializers.IntegerField())


class OverlapSerializer(serializers.Serializer):
    segments = OverlapSegmentSerializer(many=True)
    matrix = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField()),
        help_text="matrix[i][j]: members that segments[i] and segments[j] share; matrix[i][i] is the size.",
    )
    warnings = OverlapWarningSerializer(many=True)
