"""Serializers of the campaigns API: they parse and render; the services judge state and write.

A campaign is written whole or in part with its ``audience`` (included and excluded segment
ids) and its ``variants`` (content per target). Errors name the field the way a client
wrote it: ``audience.include``, ``variants[1].html_body`` (with the template's line).
"""

from __future__ import annotations

import zoneinfo
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from campaigns.channels.base import SendStatus
from campaigns.models import Campaign, CampaignChannel, CampaignRun, ChannelConfig, Delivery, Variant
from campaigns.validation import CRONTAB_FIELDS, crontab_check
from contacts.api.serializers import StrictSerializer, reject_unknown_keys
from contacts.models import LifecycleStage
from tenants.api.schema import blank_allowed, or_blank

MAX_VARIANTS = 50
MAX_AUDIENCE_SEGMENTS = 100


# --- choices in the schema ------------------------------------------------------------------------------
# Each choice set is its own named component: spectacular's enum hook would name them by field
# ("channel", "status") and collide with the other apps' choices of the same field names.
ENUM_COMPONENTS: dict[frozenset[str], str] = {
    frozenset(CampaignChannel.values): "CampaignChannelEnum",
    frozenset(Campaign.Status.values): "CampaignStatusEnum",
    frozenset(Campaign.Schedule.values): "CampaignScheduleEnum",
    frozenset(Variant.Target.values): "VariantTargetEnum",
    frozenset(LifecycleStage.values): "VariantTargetStageEnum",
    frozenset(CampaignRun.Status.values): "CampaignRunStatusEnum",
    frozenset(Delivery.Status.values): "DeliveryStatusEnum",
    frozenset(Delivery.SkipReason.values): "DeliverySkipReasonEnum",
    frozenset(Delivery.ChannelReason.values): "DeliveryChannelReasonEnum",
    frozenset(ChannelConfig.Backend.values): "ChannelBackendEnum",
    frozenset(s.value for s in SendStatus): "SendStatusEnum",
}


class NamedChoiceField(serializers.ChoiceField):
    """A choice field documented as a named enum component (see ENUM_COMPONENTS)."""


class NamedChoiceFieldExtension(OpenApiSerializerFieldExtension):
    target_class = "campaigns.api.serializers.NamedChoiceField"

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> Any:
        field: NamedChoiceField = self.target
        name = ENUM_COMPONENTS.get(frozenset(str(key) for key in field.choices))
        if name is None:
            return auto_schema._map_serializer_field(field, direction, bypass_extensions=True)
        lines = "\n".join(f"* `{value}` - {label}" for value, label in field.choices.items())
        schema = {"type": "string", "enum": [str(key) for key in field.choices], "description": lines}
        component = ResolvedComponent(name=name, type=ResolvedComponent.SCHEMA, object=name, schema=schema)
        auto_schema.registry.register_on_missing(component)
        if blank_allowed(field):
            return or_blank(component.ref)
        if getattr(field, "allow_null", False):
            return {"allOf": [component.ref], "nullable": True}
        return component.ref


class CampaignsModelSerializer(serializers.ModelSerializer):
    serializer_choice_field = NamedChoiceField


# --- campaigns -----------------------------------------------------------------------------------
class AudienceSerializer(StrictSerializer):
    include = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        default=list,
        max_length=MAX_AUDIENCE_SEGMENTS,
        help_text="Segment ids whose members receive the campaign.",
    )
    exclude = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        default=list,
        max_length=MAX_AUDIENCE_SEGMENTS,
        help_text="Segment ids whose members are left out, even when an included segment has them.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = {key: list(dict.fromkeys(attrs.get(key, []))) for key in ("include", "exclude")}
        both = sorted(set(attrs["include"]) & set(attrs["exclude"]))
        if both:
            raise serializers.ValidationError(
                {"exclude": [f"Segment {pk} cannot be included and excluded at once." for pk in both]}
            )
        return attrs


class VariantSerializer(CampaignsModelSerializer):
    """One variant: its target and its content for the campaign's channel."""

    id = serializers.IntegerField(
        required=False, help_text="Keep an existing variant (its deliveries and results) by naming its id."
    )
    target_segment = serializers.IntegerField(
        source="target_segment_id", required=False, allow_null=True, help_text="The segment id, for target segment."
    )
    target_stage = NamedChoiceField(
        choices=LifecycleStage.choices, required=False, allow_blank=True, help_text="For target stage."
    )
    weight = serializers.IntegerField(
        min_value=0, max_value=10_000, default=100, help_text="A/B: variants with the same target split it by weight."
    )

    class Meta:
        model = Variant
        fields: tuple[str, ...] = (
            "id", "name", "target", "target_segment", "target_stage", "weight",
            "subject", "preheader", "html_body", "text_body",
            "sms_body",
            "push_title", "push_body", "push_deep_link",
            "webhook_payload",
            "cta_label", "cta_url",
        )  # fmt: skip
        extra_kwargs = {
            "subject": {"help_text": "Email subject (Liquid)."},
            "html_body": {"help_text": "Email HTML (Liquid, HTML-escaped)."},
            "sms_body": {"help_text": "SMS text (Liquid); a STOP footer is added."},
            "webhook_payload": {
                "help_text": "A Liquid template producing the JSON body (a default document if blank)."
            },
        }

    def to_internal_value(self, data: Any) -> Any:
        reject_unknown_keys(data, self.fields)
        return super().to_internal_value(data)


class VariantOutputSerializer(VariantSerializer):
    id = serializers.IntegerField(read_only=True)
    target_segment = serializers.IntegerField(source="target_segment_id", allow_null=True, read_only=True)
    position = serializers.IntegerField(read_only=True)

    class Meta(VariantSerializer.Meta):
        fields = (*VariantSerializer.Meta.fields, "position")


CAMPAIGN_FIELDS = (
    "name", "description", "channel", "purpose", "goal_event", "attribution_window_hours", "attribution_touch",
    "cost", "track_opens", "track_clicks", "throttle_per_minute", "schedule", "send_at", "crontab", "local_time",
    "sender_name", "sender_email", "reply_to", "sms_sender", "webhook_url", "best_time", "preferred_channel",
    "preferred_channels",
)  # fmt: skip
CAMPAIGN_HELP = {
    "channel": "Fixed once the campaign has been sent.",
    "purpose": "Consent is checked for this channel and purpose at the moment of sending.",
    "goal_event": "A conversion is this event within the attribution window after a message.",
    "cost": "For cost per conversion.",
    "attribution_touch": "click: conversions count after a click on the message (default); delivery: once sent.",
    "track_opens": "Email: add a signed tracking pixel (human and machine opens are told apart).",
    "track_clicks": "Email: send links through the signed click redirect (only to the links in the message).",
    "throttle_per_minute": "Messages per minute; 0 sends as fast as the channel allows.",
    "schedule": "now, at (send_at), recurring (crontab) or local_time (local_time in each recipient's zone).",
    "send_at": "ISO 8601; without an offset it is read in the workspace's time zone. Must be in the future.",
    "crontab": f"Five fields: {CRONTAB_FIELDS}, e.g. '0 9 * * 1' (Mondays 09:00, workspace time zone).",
    "local_time": "HH:MM, e.g. 09:00: each recipient gets it at that time in their own time zone.",
    "best_time": "Send at each recipient's best time within the 24 hours after the send starts: each message waits "
    "for the hour of the week its recipient opens and clicks most (not with schedule local_time).",
    "preferred_channel": "Send each contact the message on the channel of preferred_channels they engage with most "
    "among those they consented to (docs/preferred_channel.md); channel becomes the first of them. Each variant "
    "then needs content for every one of them. Fixed once the campaign has been sent.",
    "preferred_channels": "With preferred_channel: two or three of email, sms and push, in the order used for "
    "contacts with no engagement yet.",
}


class CampaignAudienceOutputSerializer(serializers.Serializer):
    include = serializers.ListField(child=serializers.IntegerField())
    exclude = serializers.ListField(child=serializers.IntegerField())


class CampaignSerializer(CampaignsModelSerializer):
    audience = serializers.SerializerMethodField()
    variants = VariantOutputSerializer(many=True, read_only=True)

    class Meta:
        model = Campaign
        fields: tuple[str, ...] = ("id", *CAMPAIGN_FIELDS, "status", "audience", "variants", "created_at", "updated_at")
        read_only_fields: tuple[str, ...] = fields
        extra_kwargs = {name: {"help_text": text} for name, text in CAMPAIGN_HELP.items()}

    @extend_schema_field(CampaignAudienceOutputSerializer)
    def get_audience(self, campaign: Campaign) -> dict[str, list[int]]:
        rows = campaign.audience.all()  # prefetched by the view
        return {
            "include": sorted(row.segment_id for row in rows if not row.exclude),
            "exclude": sorted(row.segment_id for row in rows if row.exclude),
        }


class CampaignSavedSerializer(CampaignSerializer):
    warnings = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        read_only=True,
        help_text="Template warnings by field path (unknown variables render empty), e.g. variants[0].subject.",
    )

    class Meta(CampaignSerializer.Meta):
        fields = (*CampaignSerializer.Meta.fields, "warnings")
        read_only_fields = fields


class CampaignWriteSerializer(StrictSerializer, CampaignsModelSerializer):
    """Create (every field but name optional) or PATCH (any subset) a campaign with its audience and variants."""

    audience = AudienceSerializer(required=False)
    variants = VariantSerializer(many=True, required=False, max_length=MAX_VARIANTS)  # type: ignore[call-arg]
    preferred_channels = serializers.ListField(
        child=serializers.CharField(max_length=10), max_length=len(CampaignChannel.values), required=False,
        help_text=CAMPAIGN_HELP["preferred_channels"],
    )  # fmt: skip

    class Meta:
        model = Campaign
        fields = (*CAMPAIGN_FIELDS, "audience", "variants")
        extra_kwargs = {name: {"help_text": text} for name, text in CAMPAIGN_HELP.items()}

    def __init__(self, *args: Any, tenant_time_zone: str = "UTC", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A send_at without an offset means the workspace's wall clock, not UTC.
        self.fields["send_at"].timezone = zoneinfo.ZoneInfo(tenant_time_zone)  # type: ignore[attr-defined]

    def to_internal_value(self, data: Any) -> Any:
        reject_unknown_keys(data, self.fields, CampaignSavedSerializer.Meta.fields)
        return CampaignsModelSerializer.to_internal_value(self, data)

    def validate_crontab(self, value: str) -> str:
        if not value.strip():
            return ""
        try:
            return crontab_check(value)
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.messages) from None

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # Unique-together checks on the model would need the tenant; the services judge the rest.
        if attrs.get("best_time") and attrs.get("schedule") == Campaign.Schedule.LOCAL_TIME:
            raise serializers.ValidationError({"best_time": ["Not with schedule local_time: choose one or the other."]})
        return attrs

    def get_validators(self) -> list[Any]:
        return []


# --- actions -----------------------------------------------------------------------------------------
CHANNEL_INPUT_HELP = "A preferred-channel campaign: the channel to render it for (its first when absent)."


class SendTestInputSerializer(StrictSerializer):
    contact_id = serializers.IntegerField(min_value=1, help_text="Render the message as this contact.")
    channel = NamedChoiceField(choices=CampaignChannel.choices, required=False, help_text=CHANNEL_INPUT_HELP)
    to = serializers.CharField(
        max_length=500,
        help_text="Where to send the test: an email address, a phone number, a device token or a webhook URL.",
    )
    variant_id = serializers.IntegerField(
        min_value=1, required=False, allow_null=True, help_text="The campaign's first variant when absent."
    )


class SendTestResultSerializer(serializers.Serializer):
    status = NamedChoiceField(
        choices=[(s.value, s.value) for s in SendStatus],
        help_text="sent; failed_transient (try again later); failed_permanent (see error).",
    )
    provider_message_id = serializers.CharField(allow_blank=True)
    error = serializers.CharField(allow_blank=True)


class MessagePreviewInputSerializer(StrictSerializer):
    contact_id = serializers.IntegerField(min_value=1, help_text="Render the message as this contact.")
    channel = NamedChoiceField(choices=CampaignChannel.choices, required=False, help_text=CHANNEL_INPUT_HELP)
    variant_id = serializers.IntegerField(
        min_value=1, required=False, allow_null=True, help_text="The campaign's first variant when absent."
    )


class MessagePreviewSerializer(serializers.Serializer):
    channel = NamedChoiceField(choices=CampaignChannel.choices)
    subject = serializers.CharField(allow_blank=True, help_text="Email.")
    preheader = serializers.CharField(allow_blank=True, help_text="Email.")
    html = serializers.CharField(allow_blank=True, help_text="Email: the HTML body with the footer.")
    text = serializers.CharField(allow_blank=True, help_text="Email: the text body.")
    from_email = serializers.CharField(allow_blank=True, help_text="Email.")
    headers = serializers.DictField(child=serializers.CharField(), help_text="Email: List-Unsubscribe and the rest.")
    sms_text = serializers.CharField(allow_blank=True, help_text="SMS, with its footer.")
    sms_encoding = serializers.CharField(allow_blank=True, help_text="SMS: GSM-7 or UCS-2.")
    sms_characters = serializers.IntegerField()
    sms_segments = serializers.IntegerField(help_text="SMS: how many parts the text is sent (and billed) as.")
    push_title = serializers.CharField(allow_blank=True)
    push_body = serializers.CharField(allow_blank=True)
    push_deep_link = serializers.CharField(allow_blank=True)
    webhook_json = serializers.CharField(allow_blank=True, help_text="Webhook: the JSON document that would be posted.")
    warnings = serializers.ListField(child=serializers.CharField(), help_text="Unknown variables (render empty).")
    errors = serializers.ListField(  # type: ignore[assignment]  # a field, not Serializer.errors
        child=serializers.CharField(), help_text="Template errors, or a failure to render for this contact."
    )


class EstimateSerializer(serializers.Serializer):
    total = serializers.IntegerField(help_text="Contacts in the included segments minus the excluded ones.")
    sendable = serializers.IntegerField(help_text="What would be sent now.")
    excluded = serializers.IntegerField(help_text="The sum of the reasons below.")
    no_address = serializers.IntegerField(help_text="No email address, phone number or device token.")
    no_consent = serializers.IntegerField(help_text="No granted consent for the channel and purpose.")
    suppressed = serializers.IntegerField(help_text="The address is suppressed (unsubscribe, bounce, complaint).")
    paused = serializers.IntegerField(help_text="Paused messages in the preference centre.")
    frequency_capped = serializers.IntegerField(help_text="Reached the workspace's frequency cap.")


class ProblemSerializer(serializers.Serializer):
    field = serializers.CharField()
    message = serializers.CharField()


class StrictQuerySerializer(serializers.Serializer):
    """Query parameters: a misspelt filter is a 400, not silently everything (cursor and page_size pass)."""

    PAGING = ("cursor", "page_size")

    def to_internal_value(self, data: Any) -> Any:
        reject_unknown_keys({k: v for k, v in data.items() if k not in self.PAGING}, self.fields)
        return super().to_internal_value(data)


# --- runs and deliveries -------------------------------------------------------------------------------
class RunSerializer(CampaignsModelSerializer):
    progress = serializers.SerializerMethodField(help_text="Deliveries by status, e.g. {'sent': 980, 'pending': 20}.")

    class Meta:
        model = CampaignRun
        fields = ("id", "number", "status", "scheduled_for", "audience_size", "started_at", "finished_at", "progress")
        read_only_fields = fields

    @extend_schema_field(serializers.DictField(child=serializers.IntegerField()))
    def get_progress(self, run: CampaignRun) -> dict[str, int]:
        progress = self.context.get("progress", {})
        return dict(progress.get(run.pk, {}))


class DeliveryFilterSerializer(StrictQuerySerializer):
    status = NamedChoiceField(choices=Delivery.Status.choices, required=False)
    skip_reason = NamedChoiceField(choices=Delivery.SkipReason.choices, required=False)
    contact_id = serializers.IntegerField(min_value=1, required=False)


class DeliverySerializer(CampaignsModelSerializer):
    contact_id = serializers.IntegerField(read_only=True)
    variant_id = serializers.IntegerField(read_only=True, allow_null=True)
    channel_scores = serializers.DictField(
        child=serializers.FloatField(), read_only=True, allow_null=True,
        help_text="Preferred channel: the engagement score (0 to 1) of each channel the contact could get it by.",
    )  # fmt: skip
    channel_reason_text = serializers.SerializerMethodField(help_text="The choice in words.")

    class Meta:
        model = Delivery
        fields = (
            "id", "contact_id", "variant_id", "status", "skip_reason", "not_before", "attempts", "sent_at",
            "provider_message_id", "error", "chosen_channel", "channel_reason", "channel_scores",
            "channel_reason_text",
        )  # fmt: skip
        read_only_fields = fields
        extra_kwargs = {
            "chosen_channel": {"help_text": "Preferred channel: the channel chosen for the contact (blank otherwise)."},
            "channel_reason": {"help_text": "Preferred channel: why that channel."},
        }

    def get_channel_reason_text(self, delivery: Delivery) -> str:
        from analytics.preferred_channel import reason_text

        return reason_text(delivery.chosen_channel, delivery.channel_reason, delivery.channel_scores)


class CampaignFilterSerializer(StrictQuerySerializer):
    status = NamedChoiceField(choices=Campaign.Status.choices, required=False)
    channel = NamedChoiceField(choices=CampaignChannel.choices, required=False)
    search = serializers.CharField(
        required=False, max_length=200, help_text="Part of the name or description (any case)."
    )


class ChannelConfigSerializer(CampaignsModelSerializer):
    has_secret = serializers.SerializerMethodField(help_text="A secret is stored (it is never shown).")

    class Meta:
        model = ChannelConfig
        fields = ("id", "channel", "backend", "settings", "has_secret", "updated_at")
        read_only_fields = fields

    def get_has_secret(self, config: ChannelConfig) -> bool:
        return bool(config.secret)


class ChannelConfigInputSerializer(StrictSerializer):
    channel = NamedChoiceField(choices=CampaignChannel.choices, required=False)
    backend = NamedChoiceField(choices=ChannelConfig.Backend.choices, required=False)
    settings = serializers.DictField(
        required=False,
        help_text="The backend's options: twilio base_url, account_sid, sender (status_callback); fcm base_url; "
        "webhook (url, a default for campaigns without one); django_email esp (a django-anymail name) or host, "
        "port, username, use_tls, use_ssl. Replaced whole when given.",
    )
    secret = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=500,
        trim_whitespace=True,
        help_text="The credential (SMS auth token, push server key, webhook signing secret). Write-only; "
        'omit it to keep the stored one, send "" to remove it.',
    )

    def to_internal_value(self, data: Any) -> Any:
        reject_unknown_keys(data, self.fields, ("id", "has_secret", "updated_at"))
        return super().to_internal_value(data)
