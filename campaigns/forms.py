"""Forms for the campaign pages: the list's filters, the composer's steps, the delivery log's filters.

They parse input and check what a person typed (a template's syntax at its line, a date in the
past, a crontab that does not parse); campaigns/services.py owns the rules about states.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, cast

from cron_descriptor import get_description
from django import forms
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.utils import timezone
from django_celery_beat.validators import crontab_validator

from campaigns.channels.base import sms_segments
from campaigns.models import Campaign, CampaignChannel, Delivery, Variant
from campaigns.scheduling import tenant_zone
from campaigns.services import attribute_keys
from campaigns.validation import (
    CHANNEL_TEMPLATE_FIELDS,
    PREFERRED,
    PREFERRED_CHOICES,
    REQUIRED_CONTENT,
    TEMPLATE_FIELDS,
    campaign_channels,
    template_fields,
    variant_templates_check,
)
from contacts.models import Contact, LifecycleStage
from contacts.selectors import purpose_label
from segments.models import Segment
from tenants.models import Tenant

# Campaign-level sender settings per channel (the tenant's defaults when blank).
SENDER_FIELDS: dict[str, tuple[str, ...]] = {
    CampaignChannel.EMAIL: ("sender_name", "sender_email", "reply_to"),
    CampaignChannel.SMS: ("sms_sender",),
    CampaignChannel.PUSH: (),
    CampaignChannel.WEBHOOK: ("webhook_url",),
}
# The seed's funnel: awareness (new visitors), consideration (leads), conversion (ready to buy).
CTA_BY_STAGE: dict[str, str] = {
    LifecycleStage.NEW_VISITOR: "Learn more",
    LifecycleStage.LEAD: "Start free trial",
    LifecycleStage.FIRST_TIME_BUYER: "Buy now",
    LifecycleStage.REPEAT_CUSTOMER: "Buy now",
    LifecycleStage.LOYAL_ADVOCATE: "Buy now",
}
CTA_DEFAULT = "Learn more"
# Beyond this many parts an SMS is refused: carriers drop or mangle longer concatenations.
SMS_MAX_SEGMENTS = 10


def suggested_cta(target: str, stage: str) -> str:
    """The call to action the funnel suggests for a variant's target."""
    if target == Variant.Target.STAGE and stage:
        return CTA_BY_STAGE.get(stage, CTA_DEFAULT)
    return CTA_DEFAULT


def describe_crontab(expression: str) -> str:
    """A crontab in words ("At 09:00, only on Monday"), or "" when it does not parse."""
    try:
        return str(get_description(expression, options=_CRON_OPTIONS))
    except Exception:  # noqa: BLE001 - the library raises several unrelated types for bad input
        return ""


class _CronOptions:
    def __init__(self) -> None:
        from cron_descriptor import CasingTypeEnum, Options

        self.value = Options()
        self.value.use_24hour_time_format = True
        self.value.casing_type = CasingTypeEnum.Sentence
        self.value.verbose = False


_CRON_OPTIONS = _CronOptions().value


def sms_warning(text: str) -> str:
    """A warning for an SMS sent in more than one part ("" for one part)."""
    length = sms_segments(text)
    if length.segments <= 1:
        return ""
    return (
        f"This message is {length.characters} characters ({length.encoding}) and is sent as {length.segments} "
        f"SMS segments; each segment is billed."
    )


def _choices(form: forms.BaseForm, name: str, choices: list[tuple[str, str]]) -> None:
    cast(forms.ChoiceField, form.fields[name]).choices = choices


def tenant_segments(tenant: Tenant) -> QuerySet[Segment]:
    return Segment.objects.filter(tenant=tenant).order_by("name")


# --- the list ------------------------------------------------------------------------------------
class CampaignFilterForm(forms.Form):
    q = forms.CharField(required=False, max_length=200, label="Search")
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *Campaign.Status.choices])
    channel = forms.ChoiceField(required=False, choices=[("", "Any channel"), *CampaignChannel.choices])

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["q"].widget.attrs.update({"type": "search", "placeholder": "Campaign name…", "autocomplete": "off"})

    @property
    def active(self) -> bool:
        return self.is_valid() and any(self.cleaned_data.get(k) for k in ("q", "status", "channel"))


# --- step 1: basics ------------------------------------------------------------------------------
PREFERRED_LABELS = [(c, CampaignChannel(c).label) for c in PREFERRED_CHOICES]
CHANNEL_CHOICES = [*CampaignChannel.choices, (PREFERRED, "Each contact's preferred channel")]


def preferred_channels_field() -> forms.MultipleChoiceField:
    return forms.MultipleChoiceField(
        choices=PREFERRED_LABELS, required=False, widget=forms.CheckboxSelectMultiple,
        label="Channels it may choose", help_text="Two or three; each variant gets content for each of them.",
    )  # fmt: skip


def preferred_first_field() -> forms.ChoiceField:
    return forms.ChoiceField(
        choices=[("", "—"), *PREFERRED_LABELS], required=False, label="Without engagement, send by",
        help_text="For contacts who have not engaged yet (the others follow in this order: email, SMS, push).",
    )  # fmt: skip


def preferred_order(form: forms.BaseForm, chosen_name: str, first_name: str) -> list[str] | None:
    """The channels of "each contact's preferred channel" in order: the one chosen first, then the others in
    their usual order; None (with the form's errors) when fewer than two are chosen or the first is not one."""
    chosen = form.cleaned_data.get(chosen_name) or []
    first = form.cleaned_data.get(first_name) or ""
    if len(chosen) < 2:
        form.add_error(chosen_name, "Choose at least two channels to choose from.")
        return None
    if first and first not in chosen:
        form.add_error(first_name, "Choose one of the channels it may choose.")
        return None
    return channel_order(chosen, first)


def channel_order(chosen: Sequence[str], first: str) -> list[str]:
    """The chosen channels in the order used without engagement: ``first``, then the others in their usual order."""
    order = [first] if first in chosen else []
    return order + [c for c in PREFERRED_CHOICES if c in chosen and c not in order]


class BasicsForm(forms.ModelForm):
    purpose = forms.ChoiceField(help_text="Consent for this channel and purpose is checked at the moment of sending.")
    channel = forms.ChoiceField(
        choices=CHANNEL_CHOICES,
        help_text="The preferred channel is the one each contact engages with most among those they consented to.",
    )
    preferred_channels = preferred_channels_field()
    preferred_first = preferred_first_field()

    class Meta:
        model = Campaign
        fields = [
            "name", "description", "channel", "purpose", "goal_event", "attribution_window_hours",
            "attribution_touch", "cost", "throttle_per_minute", "track_opens", "track_clicks",
        ]  # fmt: skip
        labels = {
            "goal_event": "Goal event",
            "attribution_window_hours": "Attribution window (hours)",
            "cost": "Cost",
            "throttle_per_minute": "Throttle (messages per minute)",
            "attribution_touch": "Counts from",
            "track_opens": "Track opens (a tracking pixel)",
            "track_clicks": "Track clicks (links go through a redirect)",
        }
        help_texts = {
            "goal_event": "A conversion is this event (e.g. purchase) within the window after a message.",
            "cost": "What the campaign costs, for the cost per conversion.",
            "throttle_per_minute": "0: as fast as the channel allows.",
        }
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}

    def __init__(self, *args: Any, tenant: Tenant, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        purposes = list(tenant.consent_purposes or ["marketing"])
        current = self.instance.purpose if self.instance.pk else None
        if current and current not in purposes:
            purposes.append(current)
        _choices(self, "purpose", [(p, purpose_label(p)) for p in purposes])
        self.fields["attribution_touch"].required = False  # blank: after a click, the default
        self.fields["attribution_window_hours"].widget.attrs["max"] = 24 * 90
        if self.instance.pk and self.instance.preferred_channel:
            channels = list(self.instance.preferred_channels or [])
            self.initial.update(
                channel=PREFERRED, preferred_channels=channels, preferred_first=channels[0] if channels else ""
            )
        if self.instance.pk and self.instance.status != Campaign.Status.DRAFT:
            for name in ("channel", "preferred_channels", "preferred_first"):
                self.fields[name].disabled = True

    def clean(self) -> dict[str, Any]:
        """ "Each contact's preferred channel" is the campaign's channel options: the first one chosen, then the
        others in their usual order; the campaign's channel is the first."""
        data = super().clean() or {}
        if data.get("channel") != PREFERRED:
            data["preferred_channel"] = False
            data.pop("preferred_channels", None)
        elif (order := preferred_order(self, "preferred_channels", "preferred_first")) is not None:
            data.update(channel=order[0], preferred_channel=True, preferred_channels=order)
        data.pop("preferred_first", None)
        return data

    def clean_attribution_touch(self) -> str:
        return self.cleaned_data.get("attribution_touch") or Campaign.AttributionTouch.CLICK

    def clean_attribution_window_hours(self) -> int:
        hours = cast(int, self.cleaned_data["attribution_window_hours"])
        if hours < 1 or hours > 24 * 90:
            raise ValidationError("Between 1 hour and 90 days (2,160 hours).")
        return hours

    def clean_cost(self) -> Any:
        cost = self.cleaned_data["cost"]
        if cost is not None and cost < 0:
            raise ValidationError("The cost cannot be negative.")
        return cost


# --- step 2: audience ----------------------------------------------------------------------------
class AudienceForm(forms.Form):
    include = forms.ModelMultipleChoiceField(
        queryset=Segment.all_tenants.none(), required=False, widget=forms.CheckboxSelectMultiple,
        label="Send to members of", help_text="Anyone in at least one of these segments.",
    )  # fmt: skip
    exclude = forms.ModelMultipleChoiceField(
        queryset=Segment.all_tenants.none(), required=False, widget=forms.CheckboxSelectMultiple,
        label="But not to members of", help_text="Anyone in one of these is left out.",
    )  # fmt: skip

    def __init__(self, *args: Any, tenant: Tenant, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        segments = tenant_segments(tenant)
        for name in ("include", "exclude"):
            cast(forms.ModelMultipleChoiceField, self.fields[name]).queryset = segments

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        both = {s.pk for s in data.get("include") or []} & {s.pk for s in data.get("exclude") or []}
        if both:
            names = ", ".join(sorted(s.name for s in data["include"] if s.pk in both))
            raise ValidationError(f"A segment cannot be both included and excluded: {names}.")
        return data


# --- step 3: content -----------------------------------------------------------------------------
class HttpsURLField(forms.URLField):
    """A URL field that reads an address typed without a scheme as https."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("assume_scheme", "https")
        super().__init__(**kwargs)


class SenderForm(forms.ModelForm):
    """The campaign's sender (email, SMS) or webhook address, shown above the variants."""

    class Meta:
        model = Campaign
        fields = ["sender_name", "sender_email", "reply_to", "sms_sender", "webhook_url"]
        field_classes = {"webhook_url": HttpsURLField}
        labels = {"sms_sender": "SMS sender id", "webhook_url": "Webhook URL"}
        help_texts = {
            "webhook_url": "Each message is a JSON POST to this https address, signed with HMAC-SHA256.",
            "sender_name": "Blank: the workspace's default sender.",
            "sender_email": "Blank: the workspace's default sender address.",
            "sms_sender": "A number or an alphanumeric id (up to 11 characters); blank: the provider's default.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        shown = {name for channel in campaign_channels(self.instance) for name in SENDER_FIELDS.get(channel, ())}
        for name in list(self.fields):
            if name not in shown:
                del self.fields[name]
        if "webhook_url" in self.fields:
            self.fields["webhook_url"].required = True
            self.fields["webhook_url"].widget.attrs["placeholder"] = "https://example.com/hooks/segmentor"

    def clean_webhook_url(self) -> str:
        url = cast(str, self.cleaned_data.get("webhook_url") or "")
        if url and not url.startswith("https://"):
            raise ValidationError("Use an https:// address: the payload carries personal data.")
        return url

    def clean_sms_sender(self) -> str:
        sender = cast(str, self.cleaned_data.get("sms_sender") or "").strip()
        if sender and not sender.lstrip("+").isdigit() and len(sender) > 11:
            raise ValidationError("An alphanumeric sender id has at most 11 characters.")
        return sender


class VariantForm(forms.ModelForm):
    """One variant: its target, its weight, the channel's content and the call to action.

    Templates are checked here: a syntax error is a field error naming the line; unknown
    variables and a long SMS are warnings (``self.warnings``), shown but not blocking.
    """

    # Declared so that no query runs at import: the tenant's segments are set per form.
    target_segment = forms.ModelChoiceField(queryset=Segment.all_tenants.none(), required=False, label="Segment")

    class Meta:
        model = Variant
        fields = [
            "name", "target", "target_segment", "target_stage", "weight", "subject", "preheader", "html_body",
            "text_body", "sms_body", "push_title", "push_body", "push_deep_link", "webhook_payload", "cta_label",
            "cta_url",
        ]  # fmt: skip
        labels = {
            "target": "Who gets it",
            "target_segment": "Segment",
            "target_stage": "Lifecycle stage",
            "weight": "A/B weight",
            "html_body": "HTML body",
            "text_body": "Text body",
            "sms_body": "Message",
            "push_title": "Title",
            "push_body": "Body",
            "push_deep_link": "Deep link",
            "webhook_payload": "Payload (JSON, Liquid allowed)",
            "cta_label": "Call to action: label",
            "cta_url": "Call to action: URL",
        }
        help_texts = {
            "weight": "Variants with the same target split its contacts by weight (A/B).",
            "preheader": "The line inbox apps show after the subject.",
            "webhook_payload": "Blank: a default document with the contact and the campaign.",
            "cta_url": "Use {{ cta.url }} and {{ cta.label }} in the content.",
        }
        widgets = {
            "html_body": forms.Textarea(attrs={"rows": 10, "spellcheck": "false", "class": "code"}),
            "text_body": forms.Textarea(attrs={"rows": 5}),
            "sms_body": forms.Textarea(attrs={"rows": 4}),
            "webhook_payload": forms.Textarea(attrs={"rows": 6, "spellcheck": "false", "class": "code"}),
            "target": forms.RadioSelect,
        }

    def __init__(self, *args: Any, campaign: Campaign, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.campaign = campaign
        self.warnings: list[str] = []
        self.field_warnings: dict[str, list[str]] = {}
        segment_field = cast(forms.ModelChoiceField, self.fields["target_segment"])
        segment_field.queryset = tenant_segments(campaign.tenant)
        segment_field.required = False
        _choices(self, "target_stage", [("", "—"), *LifecycleStage.choices])
        self.fields["weight"].widget.attrs.update({"min": 1, "max": 1000})
        self.channels = campaign_channels(campaign)
        content = {name for channel in self.channels for name in template_fields(channel)}
        shown = {*content, "name", "target", "target_segment", "target_stage", "weight"}
        for name in list(self.fields):
            if name not in shown:
                del self.fields[name]
        if len(self.channels) > 1:
            # Each contact's preferred channel: one message per channel, labelled by it.
            for channel in self.channels:
                for name in CHANNEL_TEMPLATE_FIELDS.get(channel, ()):
                    self.fields[name].label = f"{CampaignChannel(channel).label}: {self.fields[name].label}"
        if "sms_body" in self.fields:
            self.fields["sms_body"].help_text = "Reply STOP to opt out is added at the end."
        self.fields["cta_label"].widget.attrs["data-cta-label"] = ""
        self.fields["target_stage"].widget.attrs["data-cta-stage"] = ""

    def clean_weight(self) -> int:
        weight = cast(int, self.cleaned_data["weight"])
        if not 1 <= weight <= 1000:
            raise ValidationError("Between 1 and 1000.")
        return weight

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        target = data.get("target")
        if target == Variant.Target.SEGMENT and not data.get("target_segment"):
            self.add_error("target_segment", "Choose the segment this variant is for.")
        if target == Variant.Target.STAGE and not data.get("target_stage"):
            self.add_error("target_stage", "Choose the lifecycle stage this variant is for.")
        if target != Variant.Target.SEGMENT:
            data["target_segment"] = None
        if target != Variant.Target.STAGE:
            data["target_stage"] = ""
        self._check_templates(data)
        self._check_required(data)
        return data

    def _check_templates(self, data: dict[str, Any]) -> None:
        shown = {name: data.get(name) for name in TEMPLATE_FIELDS if name in self.fields}
        check = variant_templates_check(shown, attribute_keys=attribute_keys(self.campaign.tenant_id))
        for name, errors in check.errors.items():
            for error in errors:
                self.add_error(name, error)
        for name, warnings in check.warnings.items():
            self.field_warnings.setdefault(name, []).extend(warnings)
            label = self.fields[name].label or name
            self.warnings.extend(f"{label}: {w}" for w in warnings)
        if "sms_body" in self.fields and data.get("sms_body"):
            length = sms_segments(data["sms_body"])
            if length.segments > SMS_MAX_SEGMENTS:
                self.add_error("sms_body", f"Too long: {length.segments} segments; at most {SMS_MAX_SEGMENTS}.")
            elif warning := sms_warning(data["sms_body"]):
                self.field_warnings.setdefault("sms_body", []).append(warning)
                self.warnings.append(f"Message: {warning}")

    def _check_required(self, data: dict[str, Any]) -> None:
        many = len(self.channels) > 1
        for channel in self.channels:
            for names, message in REQUIRED_CONTENT.get(channel, ()):
                if not any(data.get(name) for name in names) and not any(name in self.errors for name in names):
                    self.add_error(names[0], f"{CampaignChannel(channel).label}: {message}" if many else message)


class PreviewContactForm(forms.Form):
    """Whom the preview renders for: a contact's id or email (blank: the first contact of the audience)."""

    preview_contact = forms.CharField(required=False, max_length=254, label="Preview as")

    def __init__(self, *args: Any, tenant: Tenant, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tenant = tenant
        self.fields["preview_contact"].widget.attrs.update(
            {"placeholder": "Contact id or email", "autocomplete": "off", "list": "preview-contacts"}
        )

    def clean_preview_contact(self) -> Contact | None:
        raw = cast(str, self.cleaned_data.get("preview_contact") or "").strip()
        contacts = Contact.objects.filter(tenant=self.tenant, erased_at__isnull=True)
        if not raw:
            return None
        contact = contacts.filter(pk=int(raw)).first() if raw.isdigit() else contacts.filter(email__iexact=raw).first()
        if contact is None:
            raise ValidationError("No contact with this id or email.")
        return contact


class TestSendForm(forms.Form):
    """Where a test goes: the signed-in person's email, or a phone number for SMS."""

    to = forms.CharField(required=False, max_length=254, label="Send a test to")

    def __init__(self, *args: Any, channel: str, user_email: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.channel = channel
        self.user_email = user_email
        if channel == CampaignChannel.SMS:
            self.fields["to"].label = "Send a test SMS to"
            self.fields["to"].widget.attrs.update({"type": "tel", "placeholder": "+4915112345678"})
        elif channel == CampaignChannel.PUSH:
            self.fields["to"].label = "Send a test push to the device token"
        elif channel == CampaignChannel.WEBHOOK:
            self.fields["to"].label = "Post a test to"
            self.fields["to"].help_text = "Blank: the campaign's webhook URL."
            self.fields["to"].widget.attrs["placeholder"] = "https://"

    def clean_to(self) -> str:
        if self.channel == CampaignChannel.EMAIL:
            return self.user_email  # a test goes to yourself, never to an address typed here
        to = cast(str, self.cleaned_data.get("to") or "").strip().replace(" ", "")
        if self.channel == CampaignChannel.SMS:
            digits = to.removeprefix("+")
            if not to.startswith("+") or not digits.isdigit() or not 8 <= len(digits) <= 15:
                raise ValidationError("A phone number in international format, e.g. +4915112345678.")
        return to


# --- step 4: schedule ----------------------------------------------------------------------------
class ScheduleForm(forms.ModelForm):
    send_at = forms.DateTimeField(
        required=False, label="Date and time", input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )  # fmt: skip
    local_time = forms.TimeField(
        required=False, label="Local time", widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M")
    )

    class Meta:
        model = Campaign
        fields = ["schedule", "send_at", "crontab", "local_time", "best_time"]
        widgets = {"schedule": forms.RadioSelect}
        labels = {"schedule": "When", "crontab": "Crontab"}
        help_texts = {"crontab": "minute hour day-of-month month day-of-week, e.g. 0 9 * * 1 (Mondays at 09:00)."}

    def __init__(self, *args: Any, tenant: Tenant, **kwargs: Any) -> None:
        self.zone = tenant_zone(tenant)
        instance = kwargs.get("instance")
        if instance is not None and instance.send_at and "initial" not in kwargs:
            kwargs["initial"] = {"send_at": timezone.localtime(instance.send_at, self.zone).replace(tzinfo=None)}
        super().__init__(*args, **kwargs)
        self.fields["send_at"].help_text = f"In the workspace's time zone ({tenant.time_zone})."
        self.fields["crontab"].widget.attrs.update({"placeholder": "0 9 * * 1", "spellcheck": "false"})
        self.fields["local_time"].help_text = "Each recipient gets it at this time in their own time zone."

    def clean_send_at(self) -> dt.datetime | None:
        value = self.cleaned_data.get("send_at")
        if value is None:
            return None
        # The browser sends a wall-clock time: it is the tenant's, whatever zone the field read it in.
        if timezone.is_aware(value):
            value = timezone.make_naive(value)
        return value.replace(tzinfo=self.zone)

    def clean_crontab(self) -> str:
        return " ".join(cast(str, self.cleaned_data.get("crontab") or "").split())

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        schedule = data.get("schedule")
        if schedule == Campaign.Schedule.AT:
            send_at = data.get("send_at")
            if send_at is None and "send_at" not in self.errors:
                self.add_error("send_at", "Choose the date and time to send.")
            elif send_at is not None and send_at <= timezone.now():
                self.add_error("send_at", "This time has passed; choose one in the future.")
        elif schedule == Campaign.Schedule.RECURRING:
            crontab = data.get("crontab") or ""
            if not crontab:
                self.add_error("crontab", "Write when it repeats, e.g. 0 9 * * 1.")
            else:
                try:
                    crontab_validator(crontab)
                except ValidationError as error:
                    self.add_error("crontab", f"This crontab does not parse: {' '.join(error.messages)}")
        elif schedule == Campaign.Schedule.LOCAL_TIME and data.get("local_time") is None:
            self.add_error("local_time", "Choose the local time.")
        if data.get("best_time") and schedule == Campaign.Schedule.LOCAL_TIME:
            self.add_error("best_time", "A local time already sets each recipient's time: choose one or the other.")
        return data


# --- the delivery log ----------------------------------------------------------------------------
class DeliveryFilterForm(forms.Form):
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *Delivery.Status.choices])
    skip_reason = forms.ChoiceField(
        required=False, label="Skip reason", choices=[("", "Any reason"), *Delivery.SkipReason.choices]
    )
    after = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)

    @property
    def active(self) -> bool:
        return self.is_valid() and bool(self.cleaned_data.get("status") or self.cleaned_data.get("skip_reason"))
