"""What makes a campaign's content, schedule and channel settings valid: one place for the
web composer, the API, the admin and ``campaign_problems``.

Errors are ``{field path: [reasons]}``; template errors carry the line (``campaigns.rendering``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.utils import timezone

from campaigns.channels.email import ESP_NAME
from campaigns.models import Campaign, CampaignChannel, ChannelConfig, Variant
from campaigns.rendering import check_template
from campaigns.scheduling import crontab_fields

# The Liquid content fields of each channel, in the order the composer shows them.
CHANNEL_TEMPLATE_FIELDS: dict[str, tuple[str, ...]] = {
    CampaignChannel.EMAIL: ("subject", "preheader", "html_body", "text_body"),
    CampaignChannel.SMS: ("sms_body",),
    CampaignChannel.PUSH: ("push_title", "push_body", "push_deep_link"),
    CampaignChannel.WEBHOOK: ("webhook_payload",),
}
CTA_FIELDS = ("cta_label", "cta_url")
# Every variant field that is a Liquid template; html_body renders with HTML escaping.
TEMPLATE_FIELDS = (*dict.fromkeys(f for fields in CHANNEL_TEMPLATE_FIELDS.values() for f in fields), *CTA_FIELDS)
HTML_TEMPLATE_FIELDS = frozenset({"html_body"})
# What a variant must have, per channel: fields of which one is enough, and the error otherwise.
REQUIRED_CONTENT: dict[str, tuple[tuple[tuple[str, ...], str], ...]] = {
    CampaignChannel.EMAIL: (
        (("subject",), "An email needs a subject."),
        (("html_body", "text_body"), "Write the HTML body, the text body or both."),
    ),
    CampaignChannel.SMS: ((("sms_body",), "Write the message."),),
    CampaignChannel.PUSH: ((("push_title", "push_body"), "A push needs a title, a body or both."),),
}


# The channels a preferred-channel campaign may choose among (a webhook reaches a system, not a person).
PREFERRED_CHOICES: tuple[str, ...] = (CampaignChannel.EMAIL, CampaignChannel.SMS, CampaignChannel.PUSH)
# The channel choice "each contact's preferred channel" where one value names the channel (the composer's
# channel field, a journey send step's config ``{"channel": "preferred", "channels": [...]}``).
PREFERRED = "preferred"


def preferred_channel_errors(*, preferred: bool, channels: Any) -> dict[str, list[str]]:
    """What is wrong with a preferred-channel setting: two to three of email, SMS and push, each once."""
    if not preferred:
        return {}
    words = ", ".join(PREFERRED_CHOICES)
    if not isinstance(channels, list | tuple) or not all(isinstance(c, str) for c in channels):
        return {"preferred_channels": [f"A list of channels in the order to use them without engagement: {words}."]}
    unknown = [c for c in channels if c not in PREFERRED_CHOICES]
    if unknown:
        return {
            "preferred_channels": [
                f"Choose among {words} (not {', '.join(repr(c) for c in unknown)}): a webhook reaches a system, "
                "not a person."
            ]
        }
    if len(set(channels)) != len(channels):
        return {"preferred_channels": ["Name each channel once."]}
    if len(channels) < 2:
        return {"preferred_channels": ["Choose at least two channels to choose from."]}
    return {}


def content_missing(variant: Any, channel: str) -> list[tuple[str, str]]:
    """What a variant lacks to be sent on ``channel``: (its first field, the message) for each gap."""
    return [
        (names[0], message)
        for names, message in REQUIRED_CONTENT.get(channel, ())
        if not any((getattr(variant, name) or "").strip() for name in names)
    ]


def campaign_channels(campaign: Campaign) -> list[str]:
    """The channels a campaign's messages may go by: its preferred channels, else its one channel."""
    if campaign.preferred_channel and campaign.preferred_channels:
        return [str(c) for c in campaign.preferred_channels]
    return [campaign.channel]


def template_fields(channel: str) -> tuple[str, ...]:
    """The template fields a variant of this channel uses (its content and the call to action)."""
    return (*CHANNEL_TEMPLATE_FIELDS.get(channel, ()), *CTA_FIELDS)


CRONTAB_FIELDS = "minute hour day-of-month month day-of-week"
NO_SEGMENT = "No segment with id {} in this workspace."


# --- content and schedule --------------------------------------------------------------
@dataclass
class ContentCheck:
    """Template errors and warnings by field path (``variants[1].html_body``)."""

    errors: dict[str, list[str]] = field(default_factory=dict)
    warnings: dict[str, list[str]] = field(default_factory=dict)


def variant_templates_check(
    variant: Mapping[str, Any], *, attribute_keys: Sequence[str], prefix: str = ""
) -> ContentCheck:
    """Check every template of one variant: syntax errors (with the line) and unknown variables."""
    result = ContentCheck()
    for name in TEMPLATE_FIELDS:
        source = variant.get(name) or ""
        if not source:
            continue
        checked = check_template(source, attribute_keys=tuple(attribute_keys), html_output=name in HTML_TEMPLATE_FIELDS)
        if checked.errors:
            result.errors[f"{prefix}{name}"] = list(checked.errors)
        if checked.warnings:
            result.warnings[f"{prefix}{name}"] = list(checked.warnings)
    return result


def variant_target_errors(variant: Variant) -> dict[str, str]:
    """What a variant's target lacks (a segment for target segment, a stage for target stage)."""
    if variant.target == Variant.Target.SEGMENT and variant.target_segment_id is None:
        return {"target_segment": "Required when the target is a segment."}
    if variant.target == Variant.Target.STAGE and not variant.target_stage:
        return {"target_stage": "Required when the target is a lifecycle stage."}
    return {}


def crontab_check(value: str) -> str:
    """Return a crontab of five fields, normalised to single spaces, or raise a ValidationError."""
    try:
        return " ".join(crontab_fields(value))
    except ValidationError as error:
        raise ValidationError(error.message_dict.get("crontab", error.messages)) from None


def schedule_errors(
    *, schedule: str, send_at: dt.datetime | None, crontab: str, local_time: dt.time | None
) -> dict[str, list[str]]:
    """What is missing or wrong in a campaign's schedule fields (empty when they fit together)."""
    errors: dict[str, list[str]] = {}
    if schedule == Campaign.Schedule.AT:
        if send_at is None:
            errors["send_at"] = ["Required to send at a date and time."]
        elif send_at <= timezone.now():
            errors["send_at"] = ["Must be in the future."]
    elif schedule == Campaign.Schedule.RECURRING:
        if not crontab:
            errors["crontab"] = [f"Required for a recurring campaign ({CRONTAB_FIELDS})."]
        else:
            try:
                crontab_check(crontab)
            except ValidationError as error:
                errors["crontab"] = list(error.messages)
    elif schedule == Campaign.Schedule.LOCAL_TIME and local_time is None:
        errors["local_time"] = ["Required to send at a local time in each recipient's time zone (e.g. 09:00)."]
    return errors


# --- channel configuration ---------------------------------------------------------------------------
@dataclass(frozen=True)
class BackendSettings:
    """What a backend reads from ``ChannelConfig.settings`` (campaigns.sending.channel_backend) and the secret."""

    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    credential: str = ""  # what the secret is, when the backend cannot work without one


BACKEND_SETTINGS: dict[str, BackendSettings] = {
    ChannelConfig.Backend.DJANGO_EMAIL: BackendSettings(
        optional=("esp", "host", "port", "username", "use_tls", "use_ssl")
    ),
    ChannelConfig.Backend.TWILIO: BackendSettings(
        required=("base_url", "account_sid", "sender"), optional=("status_callback",), credential="the auth token"
    ),
    ChannelConfig.Backend.FCM: BackendSettings(required=("base_url",), credential="the server key"),
    ChannelConfig.Backend.WEBHOOK: BackendSettings(optional=("url",), credential="the signing secret"),
    ChannelConfig.Backend.CONSOLE: BackendSettings(),
    ChannelConfig.Backend.FILE: BackendSettings(),
}
_LOCAL = (ChannelConfig.Backend.CONSOLE, ChannelConfig.Backend.FILE)
BACKENDS_BY_CHANNEL: dict[str, tuple[str, ...]] = {
    CampaignChannel.EMAIL: (ChannelConfig.Backend.DJANGO_EMAIL, *_LOCAL),
    CampaignChannel.SMS: (ChannelConfig.Backend.TWILIO, *_LOCAL),
    CampaignChannel.PUSH: (ChannelConfig.Backend.FCM, *_LOCAL),
    CampaignChannel.WEBHOOK: (ChannelConfig.Backend.WEBHOOK, *_LOCAL),
}
URL_SETTINGS = frozenset({"base_url", "status_callback", "url"})
BOOL_SETTINGS = frozenset({"use_tls", "use_ssl"})


def _setting_error(key: str, value: Any) -> str | None:
    if key in BOOL_SETTINGS:
        return None if isinstance(value, bool) else "Expected true or false."
    if key == "port":
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536
        return None if ok else "Expected a port number (1-65535)."
    if not isinstance(value, str):
        return "Expected text."
    if key in URL_SETTINGS and value and not value.startswith(("https://", "http://")):
        return "Expected an http(s) URL."
    if key == "esp" and value and not ESP_NAME.match(value):
        return "Expected an email service name as django-anymail spells it, e.g. amazon_ses, sendgrid, postmark."
    return None


def channel_settings_errors(*, channel: str, backend: str, settings: Any, has_secret: bool) -> dict[str, list[str]]:
    """What a channel configuration lacks or has wrong for its backend (empty when it is usable)."""
    allowed = BACKENDS_BY_CHANNEL.get(channel, ())
    if backend not in allowed:
        return {"backend": [f"For {channel} choose one of: {', '.join(allowed)}."]}
    if not isinstance(settings, dict):
        return {"settings": ["Expected a JSON object."]}
    spec = BACKEND_SETTINGS[backend]
    known = (*spec.required, *spec.optional)
    errors: dict[str, list[str]] = {}
    for key, value in settings.items():
        if key not in known:
            errors[f"settings.{key}"] = [
                f"Unknown setting for the {backend} backend (known: {', '.join(known) or 'none'})."
            ]
        elif (problem := _setting_error(key, value)) is not None:
            errors[f"settings.{key}"] = [problem]
    for key in spec.required:
        value = settings.get(key)
        if f"settings.{key}" not in errors and not (isinstance(value, str) and value.strip()):
            errors[f"settings.{key}"] = [f"Required for the {backend} backend."]
    if spec.credential and not has_secret:
        errors["secret"] = [f"Required for the {backend} backend ({spec.credential})."]
    return errors
