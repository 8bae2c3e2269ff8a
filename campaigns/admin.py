"""The platform admin for campaigns: every tenant's campaigns, runs, deliveries and provider accounts.

A campaign is edited with its audience and variants inline, inside its tenant: segments must
be the campaign tenant's, and every template is checked on save (the error at its line, under
the field). Sent, sending and cancelled campaigns are read-only. Pause, resume and cancel are
admin actions that call the services. Runs, deliveries and provider feedback are read-only
lists; the delivery table never counts all its rows. A provider secret is a write-only password
input and is never shown back.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from campaigns.models import (
    Campaign,
    CampaignAudience,
    CampaignRun,
    ChannelConfig,
    ContactPause,
    Delivery,
    DeliveryFeedback,
    Variant,
)
from campaigns.sending import run_progress
from campaigns.services import EDITABLE, SCHEDULE_FIELDS, attribute_keys, channel_config_save
from campaigns.validation import (
    BACKENDS_BY_CHANNEL,
    NO_SEGMENT,
    channel_settings_errors,
    crontab_check,
    preferred_channel_errors,
    schedule_errors,
    variant_templates_check,
)
from contacts.admin import BigTableAdmin, ReadOnlyAdmin
from tenants.admin import PlatformAdmin
from tenants.audit import Actor, audit
from tenants.context import tenant_context


def _campaign_tenant_id(form: forms.ModelForm) -> int | None:
    """The tenant of the campaign an inline row belongs to (set by CampaignInlineFormSet, saved or not)."""
    return getattr(form, "campaign_tenant_id", None)


class CampaignInlineFormSet(BaseInlineFormSet):
    """Tell each row its campaign's tenant before validation (a new campaign's id is not known yet)."""

    def add_fields(self, form: forms.Form, index: int | None) -> None:
        super().add_fields(form, index)
        form.campaign_tenant_id = self.instance.tenant_id  # type: ignore[attr-defined]


def _check_segment(form: forms.ModelForm, name: str) -> None:
    """A segment chosen by raw id must be the campaign tenant's: another tenant's is as unknown as a missing one."""
    segment = form.cleaned_data.get(name)
    tenant_id = _campaign_tenant_id(form)
    if segment is not None and tenant_id is not None and segment.tenant_id != tenant_id:
        form.add_error(name, NO_SEGMENT.format(segment.pk))


# --- campaigns -------------------------------------------------------------------------------------------
# The segment fields are left to the inlines' ``fields``: the admin builds them per request (inside its
# platform view); built here at import, they would ask the tenant-scoped manager with no tenant set.
class CampaignAudienceForm(forms.ModelForm):
    class Meta:
        model = CampaignAudience
        fields = ("exclude",)

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        _check_segment(self, "segment")
        return cleaned


class VariantAdminForm(forms.ModelForm):
    class Meta:
        model = Variant
        fields = (
            "name", "position", "target", "target_stage", "weight", "subject", "preheader",
            "html_body", "text_body", "sms_body", "push_title", "push_body", "push_deep_link", "webhook_payload",
            "cta_label", "cta_url",
        )  # fmt: skip

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        _check_segment(self, "target_segment")
        target = cleaned.get("target")
        if target == Variant.Target.SEGMENT and cleaned.get("target_segment") is None:
            self.add_error("target_segment", "Required when the target is a segment.")
        if target == Variant.Target.STAGE and not cleaned.get("target_stage"):
            self.add_error("target_stage", "Required when the target is a lifecycle stage.")
        tenant_id = _campaign_tenant_id(self)
        keys = attribute_keys(tenant_id) if tenant_id is not None else []
        for name, errors in variant_templates_check(cleaned, attribute_keys=keys).errors.items():
            if name not in self.errors:
                for error in errors:
                    self.add_error(name, error)
        return cleaned


class CampaignAudienceInline(admin.TabularInline):
    model = CampaignAudience
    form = CampaignAudienceForm
    formset = CampaignInlineFormSet
    fields = ("segment", "exclude")
    raw_id_fields = ("segment",)
    extra = 0

    def get_queryset(self, request: HttpRequest) -> models.QuerySet[Any]:
        return CampaignAudience.all_tenants.select_related("segment")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _editable(obj) and super().has_change_permission(request, obj)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _editable(obj) and super().has_add_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _editable(obj) and super().has_delete_permission(request, obj)


class VariantInline(admin.StackedInline):
    model = Variant
    form = VariantAdminForm
    formset = CampaignInlineFormSet
    raw_id_fields = ("target_segment",)
    extra = 0
    fieldsets = (
        (None, {"fields": ("name", "position", "target", "target_segment", "target_stage", "weight")}),
        ("Email", {"fields": ("subject", "preheader", "html_body", "text_body")}),
        ("SMS", {"fields": ("sms_body",)}),
        ("Push", {"fields": ("push_title", "push_body", "push_deep_link")}),
        ("Webhook", {"fields": ("webhook_payload",)}),
        ("Call to action", {"fields": ("cta_label", "cta_url")}),
    )

    def get_queryset(self, request: HttpRequest) -> models.QuerySet[Any]:
        return Variant.all_tenants.select_related("target_segment")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _editable(obj) and super().has_change_permission(request, obj)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _editable(obj) and super().has_add_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A paused campaign's deliveries point at its variants: edit them, do not remove them.
        return (
            obj is None or obj.status in (Campaign.Status.DRAFT, Campaign.Status.SCHEDULED)
        ) and super().has_delete_permission(request, obj)


def _editable(campaign: Campaign | None) -> bool:
    return campaign is None or campaign.status in EDITABLE


class CampaignAdminForm(forms.ModelForm):
    webhook_url = forms.URLField(required=False, max_length=500, assume_scheme="https")

    class Meta:
        model = Campaign
        fields = (
            "tenant", "name", "description", "channel", "purpose", "goal_event", "attribution_window_hours", "cost",
            "throttle_per_minute", "schedule", "send_at", "crontab", "local_time", "sender_name", "sender_email",
            "reply_to", "sms_sender", "webhook_url", "preferred_channel", "preferred_channels",
        )  # fmt: skip
        help_texts = {
            "preferred_channels": 'A JSON list, in the order used without engagement, e.g. ["email", "sms"]; the '
            "campaign's channel becomes the first.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None and "tenant" in self.fields:  # absent when shown read-only
            self.fields["tenant"].disabled = True  # a campaign stays with its tenant
            if self.instance.status != Campaign.Status.DRAFT:
                for name in ("channel", "preferred_channel", "preferred_channels"):
                    self.fields[name].disabled = True

    def clean_crontab(self) -> str:
        value = self.cleaned_data.get("crontab", "")
        if not value.strip():
            return ""
        return crontab_check(value)

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        if SCHEDULE_FIELDS & set(self.changed_data) and not SCHEDULE_FIELDS & set(self.errors):
            tenant = cleaned.get("tenant") or getattr(self.instance, "tenant", None)
            send_at = cleaned.get("send_at")
            if send_at is not None and tenant is not None:
                from campaigns.scheduling import aware_in_tenant_zone

                send_at = aware_in_tenant_zone(send_at, tenant)
            errors = schedule_errors(
                schedule=cleaned.get("schedule", Campaign.Schedule.NOW), send_at=send_at,
                crontab=cleaned.get("crontab", ""), local_time=cleaned.get("local_time"),
            )  # fmt: skip
            for name, messages_ in errors.items():
                self.add_error(name, messages_)
        preferred = bool(cleaned.get("preferred_channel"))
        channels = cleaned.get("preferred_channels") or []
        found = preferred_channel_errors(preferred=preferred, channels=channels)
        for name, messages_ in found.items():
            self.add_error(name, messages_)
        if preferred and not found:
            cleaned["channel"] = channels[0]  # the campaign sends on the first, its siblings on the others
        return cleaned


@admin.register(Campaign)
class CampaignAdmin(PlatformAdmin):
    form = CampaignAdminForm
    formfield_overrides: ClassVar[Any] = {models.URLField: {"assume_scheme": "https"}}
    inlines = (CampaignAudienceInline, VariantInline)
    list_display = ("name", "tenant", "channel", "status", "schedule", "send_at", "created_at")
    list_filter = ("tenant", "kind", "status", "channel", "schedule")
    search_fields = ("name",)
    ordering: ClassVar[Any] = ("-id",)
    actions = ["pause_campaigns", "resume_campaigns", "cancel_campaigns"]
    readonly_fields = ("status", "periodic_task", "created_by", "created_at", "updated_at", "runs_link")
    fieldsets = (
        (None, {"fields": ("tenant", "name", "description", "channel", "status", "runs_link")}),
        ("Preferred channel", {"fields": ("preferred_channel", "preferred_channels")}),
        ("Consent and measurement", {"fields": ("purpose", "goal_event", "attribution_window_hours", "cost",
                                                "throttle_per_minute")}),
        ("Schedule", {"fields": ("schedule", "send_at", "crontab", "local_time", "periodic_task")}),
        ("Sender", {"fields": ("sender_name", "sender_email", "reply_to", "sms_sender", "webhook_url")}),
        ("Record", {"fields": ("created_by", "created_at", "updated_at")}),
    )  # fmt: skip

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Sending, sent and cancelled campaigns are shown read-only (the list actions stay available).
        return (obj is None or obj.status in EDITABLE) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return (
            obj is None or obj.status in (Campaign.Status.DRAFT, Campaign.Status.CANCELLED)
        ) and super().has_delete_permission(request, obj)

    def has_state_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("campaigns.change_campaign"))

    @admin.display(description="Runs")
    def runs_link(self, campaign: Campaign) -> SafeString:
        if campaign.pk is None:
            return format_html("{}", "—")
        from django.urls import reverse

        url = reverse("admin:campaigns_campaignrun_changelist") + f"?campaign__id__exact={campaign.pk}"
        return format_html('<a href="{}">{}</a>', url, "Runs and progress")

    def save_model(self, request: HttpRequest, obj: Campaign, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user  # type: ignore[assignment]
        with tenant_context(obj.tenant_id):
            obj.save()

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        campaign: Campaign = form.instance
        with tenant_context(campaign.tenant_id):
            for instance in formset.save(commit=False):
                instance.tenant_id = campaign.tenant_id
                instance.save()
            for instance in formset.deleted_objects:
                instance.delete()

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        campaign: Campaign = form.instance
        actor = Actor.for_user(request.user)  # type: ignore[arg-type]
        with tenant_context(campaign.tenant_id):
            audit(
                tenant=campaign.tenant, actor=actor, action="campaign.updated" if change else "campaign.created",
                obj=campaign, data={"fields": sorted(form.changed_data), "via": "admin"},
            )  # fmt: skip
            if change and campaign.status == Campaign.Status.SCHEDULED and SCHEDULE_FIELDS & set(form.changed_data):
                from campaigns.services import campaign_schedule

                campaign_schedule(campaign=campaign, actor=actor)

    def _each(self, request: HttpRequest, queryset: models.QuerySet[Campaign], service_name: str, done: str) -> None:
        from campaigns import services

        service = getattr(services, service_name)
        actor = Actor.for_user(request.user)  # type: ignore[arg-type]
        changed, refused = 0, []
        for campaign in queryset.select_related("tenant"):
            with tenant_context(campaign.tenant_id):
                try:
                    with transaction.atomic():
                        service(campaign=campaign, actor=actor)
                    changed += 1
                except ValidationError as error:
                    refused.append(f"{campaign.name}: {' '.join(error.messages)}")
        self.message_user(request, f"{done} {changed} campaign(s).", messages.SUCCESS)
        for reason in refused:
            self.message_user(request, f"Left {reason}", messages.WARNING)

    @admin.action(description="Pause the selected campaigns", permissions=["state"])
    def pause_campaigns(self, request: HttpRequest, queryset: models.QuerySet[Campaign]) -> None:
        self._each(request, queryset, "campaign_pause", "Paused")

    @admin.action(description="Resume the selected paused campaigns", permissions=["state"])
    def resume_campaigns(self, request: HttpRequest, queryset: models.QuerySet[Campaign]) -> None:
        self._each(request, queryset, "campaign_resume", "Resumed")

    @admin.action(description="Cancel the selected campaigns (unsent deliveries are skipped)", permissions=["state"])
    def cancel_campaigns(self, request: HttpRequest, queryset: models.QuerySet[Campaign]) -> None:
        self._each(request, queryset, "campaign_cancel", "Cancelled")


# --- runs and deliveries: look, never touch ------------------------------------------------------------
@admin.register(CampaignRun)
class CampaignRunAdmin(ReadOnlyAdmin):
    ordering: ClassVar[Any] = ("-id",)
    list_display = ("id", "campaign", "tenant", "number", "status", "scheduled_for", "audience_size", "started_at",
                    "finished_at")  # fmt: skip
    list_filter = ("tenant", "status")
    list_select_related = ("tenant", "campaign")
    search_fields = ("=campaign__id", "campaign__name")
    fields = ("tenant", "campaign", "number", "status", "scheduled_for", "audience_size", "started_at", "finished_at",
              "progress", "deliveries")  # fmt: skip

    @admin.display(description="Progress (deliveries by status)")
    def progress(self, run: CampaignRun) -> str:
        counts = run_progress(run=run)
        done = sum(counts.get(s, 0) for s in ("sent", "skipped", "failed"))
        total = sum(counts.values())
        parts = ", ".join(f"{status} {count:,}" for status, count in sorted(counts.items()))
        return f"{done:,} of {total:,} settled ({parts or 'no deliveries'})"

    @admin.display(description="Delivery log")
    def deliveries(self, run: CampaignRun) -> SafeString:
        from django.urls import reverse

        url = reverse("admin:campaigns_delivery_changelist") + f"?run__id__exact={run.pk}"
        return format_html('<a href="{}">{}</a>', url, "Deliveries of this run")


@admin.register(Delivery)
class DeliveryAdmin(BigTableAdmin):
    list_display = ("id", "tenant", "run_id", "contact_id", "variant_id", "status", "skip_reason", "attempts",
                    "sent_at", "chosen_channel", "channel_reason")  # fmt: skip
    list_filter = ("tenant", "status", "skip_reason")
    search_fields = ("=run__id", "=contact__id", "=provider_message_id")
    search_help_text = "Exact run id, contact id or provider message id."
    raw_id_fields = ("contact", "run", "variant")


@admin.register(DeliveryFeedback)
class DeliveryFeedbackAdmin(BigTableAdmin):
    """Bounces, complaints and inbound STOP/START as the providers reported them."""

    list_display = ("id", "tenant", "channel", "kind", "provider", "occurred_at", "contact_id", "delivery_id")
    list_filter = ("tenant", "channel", "kind")
    search_fields = ("=contact__id", "=provider_event_id")
    raw_id_fields = ("contact", "delivery")


@admin.register(ContactPause)
class ContactPauseAdmin(ReadOnlyAdmin):
    """Pauses contacts chose in the preference centre (not consent: messages resume by themselves)."""

    ordering: ClassVar[Any] = ("-id",)
    list_display = ("id", "tenant", "contact_id", "until", "created_at")
    search_fields = ("=contact__id",)
    raw_id_fields = ("contact",)
    show_full_result_count = False


# --- provider accounts ---------------------------------------------------------------------------------
class ChannelConfigAdminForm(forms.ModelForm):
    secret = forms.CharField(
        required=False,
        strip=True,
        max_length=500,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only: leave empty to keep the stored secret.",
    )
    clear_secret = forms.BooleanField(required=False, help_text="Remove the stored secret.")

    class Meta:
        model = ChannelConfig
        fields = ("tenant", "channel", "backend", "settings")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial["secret"] = ""  # never sent to the browser
        if self.instance.pk is not None and "tenant" in self.fields:
            self.fields["tenant"].disabled = True
            self.fields["channel"].disabled = True
        backends = "; ".join(f"{channel}: {', '.join(names)}" for channel, names in BACKENDS_BY_CHANNEL.items())
        self.fields["backend"].help_text = f"Backends per channel — {backends}."

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        channel, backend = cleaned.get("channel"), cleaned.get("backend")
        if channel is None or backend is None or "settings" in self.errors:
            return cleaned
        has_secret = bool(cleaned.get("secret")) or (bool(self.instance.secret) and not cleaned.get("clear_secret"))
        errors = channel_settings_errors(
            channel=channel, backend=backend, settings=cleaned.get("settings") or {}, has_secret=has_secret
        )
        for key, messages_ in errors.items():
            name = key.split(".", 1)[0]
            for message in messages_:
                self.add_error(name if name in self.fields else None, f"{key}: {message}" if "." in key else message)
        return cleaned


@admin.register(ChannelConfig)
class ChannelConfigAdmin(PlatformAdmin):
    form = ChannelConfigAdminForm
    list_display = ("channel", "tenant", "backend", "has_secret", "updated_at")
    list_filter = ("tenant", "channel", "backend")
    ordering: ClassVar[Any] = ("tenant", "channel")

    @admin.display(boolean=True, description="Secret stored")
    def has_secret(self, config: ChannelConfig) -> bool:
        return bool(config.secret)

    def save_model(self, request: HttpRequest, obj: ChannelConfig, form: Any, change: bool) -> None:
        """Save through the service (checks per backend, audit); an empty secret keeps the stored one."""
        data = form.cleaned_data
        secret = "" if data.get("clear_secret") else (data.get("secret") or None)
        with tenant_context(obj.tenant_id):
            saved = channel_config_save(
                tenant=obj.tenant, actor=Actor.for_user(request.user),  # type: ignore[arg-type]
                channel=obj.channel, backend=obj.backend, settings=obj.settings or {}, secret=secret,
            )  # fmt: skip
        obj.pk = saved.pk
        obj._state.adding = False
        obj.refresh_from_db()
