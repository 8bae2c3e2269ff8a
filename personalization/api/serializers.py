"""Serializers of the personalisation API: they parse and render; personalization/services.py judges and writes.

A slot is written with its key, name, ``active`` and default content; its variants (content for a
segment, by id, or a lifecycle stage) are written under the slot. A site key's identify secret is in
the answer of its creation (and of ``rotate-secret/``) only.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from rest_framework import serializers

from analytics.api.serializers import PeriodOutSerializer, PeriodSerializer
from campaigns.api.serializers import ENUM_COMPONENTS, NamedChoiceField
from contacts.api.serializers import StrictSerializer
from contacts.models import LifecycleStage
from personalization.models import CONTENT_FIELDS, SiteKey, Slot, SlotVariant, validate_content_url
from personalization.services import MAX_ORIGINS
from segments.models import Segment
from tenants.api.base import TenantPrimaryKeyRelatedField

# --- choices in the schema ------------------------------------------------------------------------
# Each choice set is its own named component, documented by the campaigns API's NamedChoiceField (its
# extension names a choice set from ENUM_COMPONENTS): spectacular's enum hook would name them by field
# ("target") and collide with other apps' choices of that name. Lifecycle stages keep the campaigns' name.
ENUM_COMPONENTS.setdefault(frozenset(SlotVariant.Target.values), "SlotVariantTargetEnum")


CONTENT_HELP = {
    "headline": "The headline (plain text).",
    "body": "The text under it (plain text, at most 2,000 characters).",
    "cta_label": "The button's label.",
    "cta_url": "The button's link: https://… or a path on the site (/sale).",
    "image_url": "An image: https://… or a path on the site.",
}


def content_fields(**kwargs: Any) -> dict[str, serializers.Field]:
    """The content fields of a slot or variant, with the model's lengths and link check."""
    fields: dict[str, serializers.Field] = {}
    for name in CONTENT_FIELDS:
        validators = [validate_content_url] if name in ("cta_url", "image_url") else []
        model_field = Slot._meta.get_field(name)
        assert isinstance(model_field, models.Field) and model_field.max_length is not None
        max_length = model_field.max_length
        fields[name] = serializers.CharField(
            max_length=max_length, allow_blank=True, validators=validators, help_text=CONTENT_HELP[name], **kwargs
        )
    return fields


# --- slots ------------------------------------------------------------------------------------------
class SlotVariantSerializer(serializers.ModelSerializer):
    serializer_choice_field = NamedChoiceField
    target_segment = serializers.IntegerField(
        source="target_segment_id", allow_null=True, help_text="For target segment: the segment's id."
    )
    position = serializers.IntegerField(source="priority", help_text="0 is tried first.")

    class Meta:
        model = SlotVariant
        fields = (
            "id", "slot", "name", "position", "target", "target_segment", "target_stage", "active", *CONTENT_FIELDS,
            "created_at", "updated_at",
        )  # fmt: skip
        read_only_fields = fields


class SlotSerializer(serializers.ModelSerializer):
    # The views set ``ordered_variants`` on each slot: its variants, by priority.
    variants = SlotVariantSerializer(
        source="ordered_variants", many=True, read_only=True, help_text="The variants in the order they are tried."
    )

    class Meta:
        model = Slot
        fields = ("id", "key", "name", "active", *CONTENT_FIELDS, "variants", "created_at", "updated_at")
        read_only_fields = fields


class SlotWriteSerializer(StrictSerializer):
    key = serializers.SlugField(max_length=64, help_text='The name in the page: data-segmentor-slot="hero".')
    name = serializers.CharField(max_length=100, allow_blank=True, required=False, help_text="The key when blank.")
    active = serializers.BooleanField(required=False, help_text="An inactive slot keeps the page's own content.")

    def get_fields(self) -> dict[str, serializers.Field]:
        return {**super().get_fields(), **content_fields(required=False)}


class SlotVariantWriteSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100)
    target = NamedChoiceField(
        choices=SlotVariant.Target.choices,
        help_text="segment (with target_segment) or stage (with target_stage): whom the variant is for.",
    )
    target_segment = TenantPrimaryKeyRelatedField(
        model=Segment, allow_null=True, required=False, help_text="For target segment: the segment's id."
    )
    target_stage = NamedChoiceField(
        choices=LifecycleStage.choices, allow_blank=True, required=False, help_text="For target stage."
    )
    active = serializers.BooleanField(required=False, help_text="An inactive variant is never shown.")
    position = serializers.IntegerField(
        source="priority", min_value=0, required=False, help_text="Where it goes (0: tried first); default: last."
    )

    def get_fields(self) -> dict[str, serializers.Field]:
        return {**super().get_fields(), **content_fields(required=False)}


class SlotVariantMoveSerializer(StrictSerializer):
    position = serializers.IntegerField(min_value=0, help_text="The new place: 0 is tried first.")


class SlotFiguresQuerySerializer(PeriodSerializer):
    days = serializers.IntegerField(
        required=False, min_value=1, max_value=731, help_text="The last N days including today (UTC); default 30."
    )


class FiguresSerializer(serializers.Serializer):
    impressions = serializers.IntegerField()
    clicks = serializers.IntegerField()
    ctr = serializers.FloatField(allow_null=True, help_text="clicks / impressions; null with no impression.")
    conversions = serializers.IntegerField(help_text="Conversion events credited to the row's last click.")
    conversion_rate = serializers.FloatField(allow_null=True, help_text="conversions / clicks; null with no click.")
    revenue = serializers.DecimalField(max_digits=16, decimal_places=2)


class VariantFiguresSerializer(serializers.Serializer):
    variant = serializers.IntegerField(allow_null=True, help_text="The variant's id; null for the default content.")
    name = serializers.CharField()
    figures = FiguresSerializer()


class SlotFiguresSerializer(serializers.Serializer):
    slot = serializers.IntegerField()
    key = serializers.CharField()
    period = PeriodOutSerializer()
    rows = VariantFiguresSerializer(many=True, help_text="Each variant in the order tried, then the default.")
    totals = FiguresSerializer()


# --- site keys ---------------------------------------------------------------------------------------------
class SiteKeySerializer(serializers.ModelSerializer):
    is_active = serializers.BooleanField(read_only=True)
    allowed_origins = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = SiteKey
        fields: tuple[str, ...] = (
            "id", "name", "public_key", "allowed_origins", "require_signed_identify", "is_active", "created_at",
            "revoked_at",
        )  # fmt: skip
        read_only_fields = fields


class SiteKeyWithSecretSerializer(SiteKeySerializer):
    identify_secret = serializers.CharField(
        read_only=True,
        help_text="Signs identify calls on your server (hex HMAC-SHA256 of the user id). Shown only now: store it.",
    )

    class Meta(SiteKeySerializer.Meta):
        fields: tuple[str, ...] = (*SiteKeySerializer.Meta.fields, "identify_secret")
        read_only_fields = fields


class SiteKeyWriteSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100)
    allowed_origins = serializers.ListField(
        child=serializers.CharField(max_length=300),
        max_length=MAX_ORIGINS,
        help_text="Exact origins the snippet runs on, e.g. https://shop.example (scheme, host, port).",
    )
    require_signed_identify = serializers.BooleanField(
        required=False, help_text="Identify only with your server's signature (default true)."
    )
