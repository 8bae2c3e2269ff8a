"""Every change of a campaign's state: check, send now, schedule, pause, resume, cancel, test, preview.

State rules (anything else raises ``ValidationError`` on the field ``status``):

- ``draft`` → ``scheduled`` (``campaign_schedule`` with a later time) or ``sending``
  (``campaign_send_now``, or ``campaign_schedule`` whose schedule starts at once);
- ``scheduled`` → ``scheduled`` again (a changed schedule updates its beat row) or ``sending``;
- ``sending`` ↔ ``paused`` (a scheduled campaign can be paused too: its beat row stops);
- anything but ``sent`` and ``cancelled`` → ``cancelled``.

Every function takes keyword arguments only and writes an audit row. ``user`` is who acts: a
``User``, an ``Actor`` (e.g. ``Actor.for_api_key(key)``) or None for the system. Side effects on
the queue happen after commit.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as dt
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import make_msgid
from typing import Any

from django.core.exceptions import EmptyResultSet, ValidationError
from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from campaigns import scheduling, selectors, sending
from campaigns.channels.base import (
    OutgoingEmail,
    OutgoingMessage,
    OutgoingPush,
    OutgoingSms,
    OutgoingWebhook,
    SendResult,
    sms_segments,
)
from campaigns.models import (
    Campaign,
    CampaignAudience,
    CampaignChannel,
    CampaignRun,
    ChannelConfig,
    ContactPause,
    Delivery,
    Variant,
)
from campaigns.rendering import RenderError
from campaigns.validation import (
    NO_SEGMENT,
    ContentCheck,
    campaign_channels,
    channel_settings_errors,
    content_missing,
    preferred_channel_errors,
    schedule_errors,
    template_fields,
    variant_target_errors,
    variant_templates_check,
)
from contacts.models import AttributeDefinition, ConsentState, ConsentStatus, Contact, Suppression
from contacts.normalize import normalise_email, normalise_phone
from segments.models import Segment
from segments.services import SET_BASED, query_settings
from tenants.audit import Actor, audit
from tenants.models import Tenant

Status = Campaign.Status
# A campaign "at" a time a little in the past (the form took a while) still goes out.
SEND_AT_SLACK = dt.timedelta(minutes=5)


# The order the sender checks them in (campaigns.sending): a contact counts under the first.
REASONS = ("no_address", "no_consent", "suppressed", "paused", "frequency_capped")


# Enough memory for the estimate's sets to be hashed (a suppression list of ~500,000 addresses).
ESTIMATE_SETTINGS = {"work_mem": "64MB"}


# --- values ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """Something that stops a campaign from being sent. ``variant_id`` is set for a variant's field."""

    field: str
    message: str
    variant_id: int | None = None


@dataclass(frozen=True)
class Preview:
    """A variant rendered for one contact, as the channel would send it."""

    channel: str
    subject: str = ""
    preheader: str = ""
    html: str = ""
    text: str = ""
    from_email: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    sms_text: str = ""
    sms_encoding: str = ""
    sms_characters: int = 0
    sms_segments: int = 0
    push_title: str = ""
    push_body: str = ""
    push_deep_link: str = ""
    webhook_json: str = ""
    # Template warnings (unknown variables) and errors (syntax, or a render failure for this contact).
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AudienceEstimate:
    """How many contacts the campaign reaches now, and why the others would be skipped.

    Each excluded contact counts once, under the first reason in the order the sender checks
    them: no address, no consent, suppressed, paused by the contact, frequency cap reached.
    """

    total: int
    no_address: int
    no_consent: int
    suppressed: int
    paused: int
    frequency_capped: int
    elapsed_ms: float = 0.0

    @property
    def excluded(self) -> int:
        return self.no_address + self.no_consent + self.suppressed + self.paused + self.frequency_capped

    @property
    def sendable(self) -> int:
        return self.total - self.excluded

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total, "sendable": self.sendable, "excluded": self.excluded,
            "no_address": self.no_address, "no_consent": self.no_consent, "suppressed": self.suppressed,
            "paused": self.paused, "frequency_capped": self.frequency_capped,
        }  # fmt: skip


# --- helpers -----------------------------------------------------------------------------------
def _state_error(campaign: Campaign, action: str) -> ValidationError:
    return ValidationError(
        {"status": f"A {campaign.get_status_display().lower()} campaign cannot be {action}."}, code="invalid_state"
    )


def _locked(campaign: Campaign) -> Campaign:
    """Lock the campaign row for the rest of the transaction and bring ``campaign`` up to date."""
    fresh = Campaign.objects.select_for_update().select_related("tenant").get(pk=campaign.pk)
    for name in ("status", "schedule", "send_at", "crontab", "local_time", "periodic_task_id"):
        setattr(campaign, name, getattr(fresh, name))
    return fresh


def _raise_problems(problems: list[Problem]) -> None:
    if not problems:
        return
    errors: dict[str, list[str]] = {}
    for problem in problems:
        errors.setdefault(problem.field, []).append(problem.message)
    raise ValidationError(errors, code="not_ready")


def _family_runs(campaign: Campaign) -> Any:
    """The campaign's runs and its siblings' (its messages on other channels, campaigns/siblings.py): the
    preferred channel's, recorded as the campaign's, and those of the arms of its channel A/B tests."""
    from analytics.models import Experiment

    arms = Experiment.objects.filter(tenant_id=campaign.tenant_id, campaign_id=campaign.pk).values_list(
        "arm_siblings", flat=True
    )
    arm_campaigns = {int(entry["campaign"]) for sibling in arms for entry in (sibling or {}).values()}
    return CampaignRun.objects.filter(
        Q(campaign_id__in=[campaign.pk, *sorted(arm_campaigns)]) | Q(campaign__sibling_of_id=campaign.pk),
        tenant_id=campaign.tenant_id,
    )


def _enqueue_send(run: CampaignRun) -> None:
    from campaigns.tasks import send_run

    tenant_id, run_id = run.tenant_id, run.pk
    transaction.on_commit(lambda: send_run.delay(tenant_id, run_id))


# --- checks ------------------------------------------------------------------------------------
def campaign_problems(*, campaign: Campaign, include_schedule: bool = True) -> list[Problem]:
    """Return what stops the campaign from being sent: audience, content, templates, channel, schedule."""
    problems: list[Problem] = []
    tenant = campaign.tenant
    if not campaign.audience.filter(exclude=False).exists():
        problems.append(Problem("audience", "Choose at least one segment to send to."))
    variants = list(Variant.objects.filter(tenant_id=campaign.tenant_id, campaign=campaign))
    if not variants:
        problems.append(Problem("variants", "Add the message content."))
    keys = attribute_keys(tenant.pk)
    channel = campaign.channel
    # In an A/B test of channels an arm is written for its own channel (analytics/experiments.py); a
    # preferred-channel campaign's variants for each channel it may choose.
    from analytics.experiments import variant_channels

    channels = variant_channels(campaign)
    preferred = campaign_channels(campaign) if campaign.preferred_channel else []
    for variant in variants:
        label = f"Variant “{variant.name}”"
        for written_for in preferred or [channels.get(variant.pk, channel)]:
            said = f"{label} ({CampaignChannel(written_for).label})" if preferred else label
            for name, message in content_missing(variant, written_for):
                problems.append(Problem(name, f"{said}: {message}", variant.pk))
            for name, errors in _variant_check(variant, written_for, keys).errors.items():
                problems.extend(Problem(name, f"{said}: {error}", variant.pk) for error in errors)
        if variant.target == Variant.Target.SEGMENT and not variant.target_segment_id:
            problems.append(Problem("target_segment", f"{label}: choose the segment it is for.", variant.pk))
        if variant.target == Variant.Target.STAGE and not variant.target_stage:
            problems.append(Problem("target_stage", f"{label}: choose the lifecycle stage it is for.", variant.pk))
    if preferred:
        problems.extend(_preferred_problems(campaign, preferred))
    elif channel != CampaignChannel.EMAIL and not ChannelConfig.objects.filter(tenant=tenant, channel=channel).exists():
        problems.append(
            Problem("channel", f"Set up a {campaign.get_channel_display()} provider in the settings first.")
        )
    if channel == CampaignChannel.WEBHOOK and not campaign.webhook_url:
        configured = ChannelConfig.objects.filter(tenant=tenant, channel=channel).values_list("settings", flat=True)
        if not any((settings_ or {}).get("url") for settings_ in configured):
            problems.append(Problem("webhook_url", "Give the URL the webhook is posted to."))
    if include_schedule:
        problems.extend(_schedule_problems(campaign))
    return problems


def _preferred_problems(campaign: Campaign, channels: list[str]) -> list[Problem]:
    """A preferred-channel campaign: valid channels, each with a provider, and no A/B test."""
    from analytics.models import Experiment

    problems = [
        Problem(name, message)
        for name, messages in preferred_channel_errors(preferred=True, channels=channels).items()
        for message in messages
    ]
    configured = set(ChannelConfig.objects.filter(tenant_id=campaign.tenant_id).values_list("channel", flat=True))
    for each in channels:
        if each in CampaignChannel.values and each != CampaignChannel.EMAIL and each not in configured:
            label = CampaignChannel(each).label
            problems.append(Problem("preferred_channels", f"Set up a {label} provider in the settings first."))
    if Experiment.objects.filter(tenant_id=campaign.tenant_id, campaign=campaign).exists():
        problems.append(Problem("preferred_channel", HAS_EXPERIMENT))
    return problems


def _schedule_problems(campaign: Campaign) -> list[Problem]:
    now = timezone.now()
    schedule = campaign.schedule
    if schedule == Campaign.Schedule.AT:
        if campaign.send_at is None:
            return [Problem("send_at", "Choose the date and time to send at.")]
        if campaign.send_at < now - SEND_AT_SLACK:
            return [Problem("send_at", "This time has passed; choose a later one or send now.")]
    elif schedule == Campaign.Schedule.RECURRING:
        try:
            scheduling.crontab_fields(campaign.crontab)
        except ValidationError as error:
            return [Problem("crontab", message) for message in error.message_dict["crontab"]]
    elif schedule == Campaign.Schedule.LOCAL_TIME and campaign.local_time is None:
        return [Problem("local_time", "Choose the local time each recipient gets the message at.")]
    return []


# --- state changes -----------------------------------------------------------------------------
@transaction.atomic
def campaign_send_now(*, campaign: Campaign, actor: Actor) -> CampaignRun:
    """Snapshot the audience into a new run and start sending it (after commit).

    Allowed from draft and scheduled (a one-off schedule is dropped; a recurring one keeps going
    and this run comes on top).
    """
    _locked(campaign)
    if campaign.status not in (Status.DRAFT, Status.SCHEDULED):
        raise _state_error(campaign, "sent now")
    _raise_problems(campaign_problems(campaign=campaign, include_schedule=False))
    if campaign.schedule != Campaign.Schedule.RECURRING:
        scheduling.schedule_remove(campaign=campaign)
    run = _start(campaign)
    audit(
        tenant=campaign.tenant, actor=actor, action="campaign.sent_now", obj=campaign,
        data={"run": run.pk, "audience": run.audience_size},
    )  # fmt: skip
    return run


def _start(campaign: Campaign, scheduled_for: dt.datetime | None = None) -> CampaignRun:
    run = sending.run_start(campaign=campaign, scheduled_for=scheduled_for)
    campaign.status = Campaign.objects.values_list("status", flat=True).get(pk=campaign.pk)
    if run.status == CampaignRun.Status.SENDING:
        _enqueue_send(run)
    return run


@transaction.atomic
def campaign_schedule(*, campaign: Campaign, actor: Actor) -> None:
    """Put the campaign on its schedule (``campaign.schedule``), creating or updating its beat row.

    - ``now``: start a run at once (as ``campaign_send_now``);
    - ``at``: a one-off beat task at ``send_at`` (aware; a form reads a naive input in the tenant's
      zone, see ``scheduling.aware_in_tenant_zone``);
    - ``recurring``: a crontab beat task in the tenant's zone, one run per occurrence;
    - ``local_time``: one run that reaches each recipient at ``local_time`` in their zone, started
      at ``send_at`` when that is later, else at once.

    Allowed from draft and scheduled, and for a recurring campaign that is sending or paused (its
    new crontab applies from the next occurrence). Raises ValidationError listing the problems.
    """
    _locked(campaign)
    recurring_running = (
        campaign.schedule == Campaign.Schedule.RECURRING
        and campaign.periodic_task_id is not None
        and campaign.status in (Status.SENDING, Status.PAUSED)
    )
    if campaign.status not in (Status.DRAFT, Status.SCHEDULED) and not recurring_running:
        raise _state_error(campaign, "scheduled")
    _raise_problems(campaign_problems(campaign=campaign))
    data: dict[str, Any] = {"schedule": campaign.schedule}
    if not scheduling.needs_beat(campaign):
        scheduling.schedule_remove(campaign=campaign)
        run = _start(campaign)
        data["run"] = run.pk
    else:
        task = scheduling.schedule_sync(campaign=campaign, enabled=campaign.status != Status.PAUSED)
        if campaign.status in (Status.DRAFT, Status.SCHEDULED):
            Campaign.objects.filter(pk=campaign.pk).update(status=Status.SCHEDULED)
            campaign.status = Status.SCHEDULED
        data["periodic_task"] = task.pk if task else None
        next_at = scheduling.next_occurrence(campaign)
        data["next"] = next_at.isoformat() if next_at else None
    audit(tenant=campaign.tenant, actor=actor, action="campaign.scheduled", obj=campaign, data=data)


@transaction.atomic
def campaign_pause(*, campaign: Campaign, actor: Actor) -> None:
    """Pause a sending or scheduled campaign: its sending runs stop at the next batch, its beat row stops."""
    _locked(campaign)
    if campaign.status not in (Status.SENDING, Status.SCHEDULED):
        raise _state_error(campaign, "paused")
    runs = _family_runs(campaign).filter(status=CampaignRun.Status.SENDING).update(status=CampaignRun.Status.PAUSED)
    scheduling.schedule_set_enabled(campaign=campaign, enabled=False)
    previous = campaign.status
    Campaign.objects.filter(pk=campaign.pk).update(status=Status.PAUSED)
    campaign.status = Status.PAUSED
    audit(
        tenant=campaign.tenant, actor=actor, action="campaign.paused", obj=campaign,
        data={"runs": runs, "was": previous},
    )  # fmt: skip


@transaction.atomic
def campaign_resume(*, campaign: Campaign, actor: Actor) -> None:
    """Resume a paused campaign: paused runs send again (enqueued after commit), the beat row restarts.

    The campaign becomes ``sending`` when a run resumes, else ``scheduled`` again.
    """
    _locked(campaign)
    if campaign.status != Status.PAUSED:
        raise _state_error(campaign, "resumed")
    runs = list(_family_runs(campaign).filter(status=CampaignRun.Status.PAUSED))
    CampaignRun.objects.filter(pk__in=[run.pk for run in runs]).update(status=CampaignRun.Status.SENDING)
    for run in runs:
        _enqueue_send(run)
    # A one-off schedule whose run exists already must not fire again; a recurring one goes on.
    runs_all = CampaignRun.objects.filter(tenant_id=campaign.tenant_id, campaign=campaign)
    started = runs_all.exists()
    recurring = campaign.schedule == Campaign.Schedule.RECURRING
    if campaign.periodic_task_id and (recurring or not started):
        scheduling.schedule_set_enabled(campaign=campaign, enabled=True)
    if runs:
        status = Status.SENDING
    elif campaign.periodic_task_id and (recurring or not started):
        status = Status.SCHEDULED
    elif started:
        still_open = (
            _family_runs(campaign).exclude(status__in=[CampaignRun.Status.DONE, CampaignRun.Status.CANCELLED]).exists()
        )
        status = Status.SENDING if still_open else Status.SENT
    else:
        status = Status.DRAFT
    Campaign.objects.filter(pk=campaign.pk).update(status=status)
    campaign.status = status
    audit(tenant=campaign.tenant, actor=actor, action="campaign.resumed", obj=campaign, data={"runs": len(runs)})


@transaction.atomic
def campaign_cancel(*, campaign: Campaign, actor: Actor) -> None:
    """Cancel a campaign not yet sent: open runs are cancelled (pending deliveries skipped), the beat row removed."""
    _locked(campaign)
    if campaign.status in (Status.SENT, Status.CANCELLED):
        raise _state_error(campaign, "cancelled")
    open_runs = _family_runs(campaign).filter(
        status__in=[CampaignRun.Status.PENDING, CampaignRun.Status.SENDING, CampaignRun.Status.PAUSED]
    )
    skipped = 0
    runs = list(open_runs)
    for run in runs:
        skipped += sending.run_cancel(run=run)
    scheduling.schedule_remove(campaign=campaign)
    Campaign.objects.filter(pk=campaign.pk).update(status=Status.CANCELLED)
    campaign.status = Status.CANCELLED
    audit(
        tenant=campaign.tenant, actor=actor, action="campaign.cancelled", obj=campaign,
        data={"runs": len(runs), "deliveries_cancelled": skipped},
    )  # fmt: skip


# --- preview and test --------------------------------------------------------------------------
def _variant_of(campaign: Campaign, variant: Variant) -> Variant:
    if variant.campaign_id != campaign.pk or variant.tenant_id != campaign.tenant_id:
        raise ValidationError({"variant": "This variant belongs to another campaign."})
    return variant


def _sample_contact(campaign: Campaign, contact: Contact | None) -> Contact:
    if contact is not None:
        if contact.tenant_id != campaign.tenant_id:
            raise ValidationError({"contact": "No such contact."})
        return contact
    found = selectors.preview_contact(campaign, None)
    if found is None:
        raise ValidationError({"contact": "The workspace has no contacts yet: add one to preview as."})
    return found


def _variant_check(variant: Variant, channel: str, keys: list[str]) -> ContentCheck:
    """The template errors and warnings of the fields a variant of this channel uses."""
    return variant_templates_check(
        {name: getattr(variant, name) for name in template_fields(channel)}, attribute_keys=keys
    )


def _template_warnings(campaign: Campaign, variant: Variant) -> tuple[list[str], list[str]]:
    check = _variant_check(variant, campaign.channel, attribute_keys(campaign.tenant_id))

    def labelled(by_field: dict[str, list[str]]) -> list[str]:
        return [
            f"{str(getattr(Variant._meta.get_field(name), 'verbose_name', name)).capitalize()}: {message}"
            for name, messages in by_field.items()
            for message in messages
        ]

    return labelled(check.warnings), labelled(check.errors)


def on_channel(campaign: Campaign, channel: str | None) -> Campaign:
    """The campaign as it sends on ``channel``, one of those it may choose (itself when None or its own).

    An unsaved copy: a preferred-channel campaign's message is previewed and tested on each channel."""
    if not channel or channel == campaign.channel:
        return campaign
    if channel not in campaign_channels(campaign):
        raise ValidationError({"channel": f"This campaign does not send by {channel}."})
    shadow = copy.copy(campaign)
    shadow.channel = channel
    return shadow


def campaign_preview(
    *, campaign: Campaign, variant: Variant, contact: Contact | None, channel: str | None = None
) -> Preview:  # fmt: skip
    """Render ``variant`` for ``contact`` (the first contact of the audience when None), with template warnings,
    on ``channel`` (a preferred-channel campaign's other channels; its own when None).

    Nothing is written; a template that fails for this contact comes back in ``errors``.
    """
    _variant_of(campaign, variant)
    campaign = on_channel(campaign, channel)
    warnings, errors = _template_warnings(campaign, variant)
    target = _sample_contact(campaign, contact)
    if errors:
        return Preview(channel=campaign.channel, warnings=warnings, errors=errors)
    try:
        message = sending.message_build(campaign=campaign, variant=variant, contact=target, delivery_id=None)
    except RenderError as error:
        return Preview(channel=campaign.channel, warnings=warnings, errors=[str(error)])
    return _preview_of(campaign.channel, message, warnings)


def _preview_of(channel: str, message: OutgoingMessage, warnings: list[str]) -> Preview:
    if isinstance(message, OutgoingEmail):
        headers = {k: v for k, v in message.all_headers().items() if k != "Message-ID"}
        preheader = getattr(message, "preheader", "")
        return Preview(
            channel=channel, subject=message.subject, preheader=preheader, html=message.html, text=message.text,
            from_email=message.from_email, headers=headers, warnings=warnings,
        )  # fmt: skip
    if isinstance(message, OutgoingSms):
        length = sms_segments(message.text)
        return Preview(
            channel=channel, sms_text=message.text, sms_encoding=length.encoding, sms_characters=length.characters,
            sms_segments=length.segments, warnings=warnings,
        )  # fmt: skip
    if isinstance(message, OutgoingPush):
        return Preview(
            channel=channel, push_title=message.title, push_body=message.body, push_deep_link=message.deep_link,
            warnings=warnings,
        )  # fmt: skip
    return Preview(
        channel=channel, webhook_json=json.dumps(dict(message.payload), indent=2, sort_keys=True, default=str),
        warnings=warnings,
    )  # fmt: skip


def _test_recipient(campaign: Campaign, message: OutgoingMessage, to: str) -> OutgoingMessage:
    try:
        if isinstance(message, OutgoingEmail):
            domain = message.from_email.rsplit("@", 1)[-1].strip(">") or "segmentor.local"
            return dataclasses.replace(
                message, to=normalise_email(to) or _missing(), subject=f"[Test] {message.subject}",
                message_id=make_msgid(idstring="test", domain=domain), metadata={},
            )  # fmt: skip
        if isinstance(message, OutgoingSms):
            return dataclasses.replace(message, to=normalise_phone(to) or _missing())
    except ValidationError as error:
        raise ValidationError({"to": error.messages}) from None
    if isinstance(message, OutgoingPush):
        return dataclasses.replace(message, tokens=(to.strip() or _missing(),), title=f"[Test] {message.title}")
    if isinstance(message, OutgoingWebhook):
        return dataclasses.replace(message, url=to.strip() or message.url, delivery_id="")
    return message


def _missing() -> str:
    raise ValidationError({"to": "Give the address to send the test to."})


def campaign_send_test(
    *, campaign: Campaign, variant: Variant, contact: Contact | None, to: str, actor: Actor, channel: str | None = None
) -> SendResult:
    """Send ``variant`` rendered for ``contact`` to ``to`` (an email address, a phone number, a push token
    or a webhook URL), subject prefixed “[Test]”, on ``channel`` (as ``campaign_preview``). Creates no
    delivery and counts against no cap."""
    _variant_of(campaign, variant)
    campaign = on_channel(campaign, channel)
    _, errors = _template_warnings(campaign, variant)
    if errors:
        raise ValidationError({"variant": errors})
    target = _sample_contact(campaign, contact)
    try:
        message = sending.message_build(campaign=campaign, variant=variant, contact=target, delivery_id=None)
    except RenderError as error:
        raise ValidationError({"variant": str(error)}) from None
    message = _test_recipient(campaign, message, to)
    backend = sending.channel_backend(tenant=campaign.tenant, channel=campaign.channel)
    try:
        [result] = backend.send_many([message])
    finally:
        backend.close()
    audit(
        tenant=campaign.tenant, actor=actor, action="campaign.test_sent", obj=campaign,
        data={"variant": variant.pk, "contact": target.pk, "channel": campaign.channel, "status": str(result.status)},
    )  # fmt: skip
    return result


# --- audience ----------------------------------------------------------------------------------
def _sql(queryset: Any) -> tuple[str, list[Any]]:
    sql, params = queryset.query.sql_with_params()
    return sql, list(params)


@dataclass(frozen=True)
class _Check:
    """One reason to skip, as a SQL condition on the audience row ``a`` and its joins."""

    reason: str
    condition: str
    params: tuple[Any, ...] = ()
    # Costly per row (hashing): tested only for rows that pass the cheaper checks before it.
    costly: bool = False


def audience_estimate(
    *, campaign: Campaign, include: Sequence[int] | None = None, exclude: Sequence[int] | None = None
) -> AudienceEstimate:
    """Count the audience and the contacts the sender would skip now, in one set-based statement.

    Mirrors the checks made at the moment of sending (``campaigns.sending``), in the same order;
    a contact counts under the first reason that applies. The sets (granted consents, pauses,
    contacts at the cap) are joined to the audience by hashing, the suppressions are one hashed
    subplan, so the cost grows with the rows once, never with a lookup per contact.
    """
    started = time.perf_counter()
    tenant = campaign.tenant
    now = timezone.now()
    channel = campaign.channel
    postgres = connection.vendor == "postgresql"
    column = {CampaignChannel.EMAIL: "email", CampaignChannel.SMS: "phone"}.get(CampaignChannel(channel))
    address = column or ("push_tokens" if channel == CampaignChannel.PUSH else None)
    preferred = campaign.preferred_channel
    if preferred:
        # Reached when one of its channels is (each channel's suppressions are checked when sending).
        column, address = None, None
    try:
        contacts = sending.audience(campaign, include=include, exclude=exclude)
        shown = sending.PREFERRED_COLUMNS if preferred else ([address] if address else [])
        audience_sql, params = _sql(contacts.values("id", *shown))
    except EmptyResultSet:  # no segment included yet: nobody
        return AudienceEstimate(0, 0, 0, 0, 0, 0, elapsed_ms=(time.perf_counter() - started) * 1000)
    joins: list[str] = []
    checks: list[_Check] = []
    if preferred:
        from analytics.preferred_channel import choice_sql

        choice = choice_sql(
            tenant_id=tenant.pk, channels=campaign_channels(campaign), purpose=campaign.purpose, with_scores=False
        )
        joins.append(choice.joins)
        params += choice.params
        checks.append(_Check("no_consent", f"NOT {choice.reachable}"))
    elif column:
        checks.append(_Check("no_address", f"a.{column} = ''"))
    elif channel == CampaignChannel.PUSH:
        empty = "'[]'::jsonb, 'null'::jsonb" if postgres else "'[]', 'null'"
        checks.append(_Check("no_address", f"(a.push_tokens IS NULL OR a.push_tokens IN ({empty}))"))
    if channel != CampaignChannel.WEBHOOK and not preferred:
        granted = ConsentState.objects.filter(
            tenant=tenant, channel=channel, purpose=campaign.purpose, status=ConsentStatus.GRANTED
        ).values("contact_id")  # one row per contact: (tenant, contact, channel, purpose) is unique
        sql, more = _sql(granted)
        joins.append(f"LEFT JOIN ({sql}) AS consent ON consent.contact_id = a.id")
        params += more
        checks.append(_Check("no_consent", "consent.contact_id IS NULL"))
    suppressions = Suppression.objects.filter(tenant=tenant, channel=channel).order_by()
    # Hashing every address costs time: only when the tenant has suppressions on this channel.
    if column and suppressions.exists():
        sql, more = _sql(suppressions.values("address_hash"))
        digest = (
            "ENCODE(SHA256(CONVERT_TO(%s || a.{column}, 'UTF8')), 'hex')" if postgres else "SHA256(%s || a.{column})"
        ).format(column=column)
        checks.append(_Check("suppressed", f"{digest} IN ({sql})", (f"{channel}:", *more), costly=True))
    paused = ContactPause.objects.filter(tenant=tenant, until__gt=now)
    if paused.exists():
        sql, more = _sql(paused.values("contact_id"))  # one pause per contact
        joins.append(f"LEFT JOIN ({sql}) AS paused ON paused.contact_id = a.id")
        params += more
        checks.append(_Check("paused", "paused.contact_id IS NOT NULL"))
    if tenant.frequency_cap_messages and campaign.purpose == sending.MARKETING_PURPOSE:
        # As the sender: only marketing messages count, and only marketing campaigns are held back.
        since = now - dt.timedelta(days=tenant.frequency_cap_days)
        capped = (
            Delivery.objects.filter(
                tenant=tenant,
                status=Delivery.Status.SENT,
                sent_at__gte=since,
                run__campaign__purpose=sending.MARKETING_PURPOSE,
            )
            .values("contact_id")
            .annotate(n=Count("id"))
            .filter(n__gte=tenant.frequency_cap_messages)
            .values("contact_id")
        )
        sql, more = _sql(capped)
        joins.append(f"LEFT JOIN ({sql}) AS capped ON capped.contact_id = a.id")
        params += more
        checks.append(_Check("frequency_capped", "capped.contact_id IS NOT NULL"))
    # A reason counts the rows it applies to and no earlier one applies to. The executor tests
    # an AND from left to right: a rare condition (a pause, the cap) goes first, so the costly
    # hash is computed for few rows; the costly one goes last.
    columns, select_params = ["COUNT(*)"], []
    for index, check in enumerate(checks):
        earlier = checks[:index]
        parts = [(f"NOT ({c.condition})", c.params) for c in earlier if not c.costly]
        parts += [(f"NOT ({c.condition})", c.params) for c in earlier if c.costly]
        mine = (f"({check.condition})", check.params)
        parts = [*parts, mine] if check.costly or check.reason in ("no_address", "no_consent") else [mine, *parts]
        columns.append(f"COUNT(*) FILTER (WHERE {' AND '.join(text for text, _ in parts)})")
        select_params += [value for _, values in parts for value in values]
    statement = f"SELECT {', '.join(columns)} FROM ({audience_sql}) AS a {' '.join(joins)}"
    with (
        query_settings(**SET_BASED, **ESTIMATE_SETTINGS) if postgres else contextlib.nullcontext(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement, select_params + params)
        total, *found = cursor.fetchone()
    counts = dict(zip([c.reason for c in checks], found, strict=True))
    return AudienceEstimate(
        total=total, **{name: counts.get(name, 0) for name in REASONS},
        elapsed_ms=(time.perf_counter() - started) * 1000,
    )  # fmt: skip


# --- editing: what a campaign is (its settings, audience and variants) and channel configs ----------
EDITABLE = frozenset({Campaign.Status.DRAFT, Campaign.Status.SCHEDULED, Campaign.Status.PAUSED})
DELETABLE = frozenset({Campaign.Status.DRAFT, Campaign.Status.CANCELLED})
SCHEDULE_FIELDS = frozenset({"schedule", "send_at", "crontab", "local_time"})
PREFERRED_FIELDS = frozenset({"preferred_channel", "preferred_channels"})
HAS_EXPERIMENT = "This campaign has an A/B test: remove it to send on each contact's preferred channel."
READ_ONLY_REASON: dict[str, str] = {
    Campaign.Status.SENDING: "The campaign is sending: pause it to edit it.",
    Campaign.Status.SENT: "The campaign has been sent: its content is read-only (duplicate it to send again).",
    Campaign.Status.CANCELLED: "The campaign was cancelled: its content is read-only.",
}


def attribute_keys(tenant_id: int) -> list[str]:
    return list(AttributeDefinition.objects.filter(tenant_id=tenant_id).values_list("key", flat=True))


def campaign_content_check(*, tenant_id: int, variants: Sequence[Mapping[str, Any]]) -> ContentCheck:
    """Check the templates of every variant; paths name the variant by its place in the list."""
    keys = attribute_keys(tenant_id)
    result = ContentCheck()
    for index, variant in enumerate(variants):
        checked = variant_templates_check(variant, attribute_keys=keys, prefix=f"variants[{index}].")
        result.errors.update(checked.errors)
        result.warnings.update(checked.warnings)
    return result


def _segment_errors(
    tenant_id: int, audience: Mapping[str, list[int]] | None, variants: Sequence[Mapping[str, Any]]
) -> dict[str, list[str]]:
    wanted: set[int] = set()
    if audience is not None:
        wanted |= set(audience.get("include", [])) | set(audience.get("exclude", []))
    wanted |= {v["target_segment_id"] for v in variants if v.get("target_segment_id") is not None}
    found = set(Segment.objects.filter(tenant_id=tenant_id, pk__in=wanted).values_list("pk", flat=True))
    errors: dict[str, list[str]] = {}
    for key in ("include", "exclude"):
        missing = [pk for pk in (audience or {}).get(key, []) if pk not in found]
        if missing:
            errors[f"audience.{key}"] = [NO_SEGMENT.format(pk) for pk in missing]
    for index, variant in enumerate(variants):
        pk = variant.get("target_segment_id")
        if pk is not None and pk not in found:
            errors[f"variants[{index}].target_segment"] = [NO_SEGMENT.format(pk)]
    return errors


def problem_paths(campaign: Campaign, problems: list[Any]) -> dict[str, list[str]]:
    """What stops a campaign, keyed like the body: a variant's problem under ``variants[i].field``."""
    order = list(
        Variant.objects.filter(tenant_id=campaign.tenant_id, campaign=campaign)
        .order_by("position", "id")
        .values_list("pk", flat=True)
    )
    fields: dict[str, list[str]] = {}
    for problem in problems:
        path = problem.field or "non_field_errors"
        if problem.variant_id in order:
            path = f"variants[{order.index(problem.variant_id)}].{problem.field}"
        fields.setdefault(path, []).append(problem.message)
    return fields


def _save_audience(campaign: Campaign, audience: Mapping[str, list[int]]) -> None:
    CampaignAudience.objects.filter(tenant_id=campaign.tenant_id, campaign=campaign).delete()
    CampaignAudience.objects.bulk_create(
        CampaignAudience(tenant_id=campaign.tenant_id, campaign=campaign, segment_id=pk, exclude=exclude)
        for exclude, key in ((False, "include"), (True, "exclude"))
        for pk in audience.get(key, [])
    )


def _save_variants(campaign: Campaign, variants: Sequence[Mapping[str, Any]]) -> None:
    """Replace the variant list: named ids are updated in place, the others created, the missing deleted."""
    existing = {v.pk: v for v in Variant.objects.filter(tenant_id=campaign.tenant_id, campaign=campaign)}
    errors: dict[str, list[str]] = {}
    for index, data in enumerate(variants):
        pk = data.get("id")
        if pk is not None and pk not in existing:
            errors[f"variants[{index}].id"] = [f"No variant with id {pk} in this campaign."]
    kept = {data["id"] for data in variants if data.get("id") is not None}
    if campaign.status == Campaign.Status.PAUSED and set(existing) - kept:
        errors["variants"] = ["The campaign is paused mid-run: edit its variants, but do not remove any."]
    merged: list[Variant] = []
    for position, data in enumerate(variants):
        variant = existing.get(data["id"]) if data.get("id") is not None else None
        if variant is None:
            variant = Variant(tenant_id=campaign.tenant_id, campaign=campaign)
        for key, value in data.items():
            if key != "id":
                setattr(variant, key, value)
        variant.position = position
        # A target names only what it uses: a default variant keeps no segment or stage.
        if variant.target != Variant.Target.SEGMENT:
            variant.target_segment_id = None
        if variant.target != Variant.Target.STAGE:
            variant.target_stage = ""
        for name, message in variant_target_errors(variant).items():
            errors[f"variants[{position}].{name}"] = [message]
        merged.append(variant)
    if errors:
        raise ValidationError(errors)
    Variant.objects.filter(tenant_id=campaign.tenant_id, campaign=campaign).exclude(pk__in=kept).delete()
    for variant in merged:
        variant.full_clean(exclude=["tenant", "campaign", "target_segment"], validate_unique=False)
        variant.save()


def _apply(campaign: Campaign, data: Mapping[str, Any]) -> ContentCheck:
    """Validate and save ``data`` onto ``campaign`` (already locked or new); return the template warnings."""
    variants = data.get("variants")
    errors = _segment_errors(campaign.tenant_id, data.get("audience"), variants or [])
    check = campaign_content_check(tenant_id=campaign.tenant_id, variants=variants or [])
    errors.update(check.errors)
    if SCHEDULE_FIELDS & set(data):
        merged = {name: data.get(name, getattr(campaign, name)) for name in SCHEDULE_FIELDS}
        errors.update(schedule_errors(**merged))
    if PREFERRED_FIELDS & set(data):
        data = {**data, **_preferred_settings(campaign, data, errors)}
    if errors:
        raise ValidationError(errors)
    for name, value in data.items():
        if name not in ("audience", "variants"):
            setattr(campaign, name, value)
    campaign.full_clean(exclude=["tenant", "created_by", "periodic_task"], validate_unique=False)
    campaign.save()
    if data.get("audience") is not None:
        _save_audience(campaign, data["audience"])
    if variants is not None:
        _save_variants(campaign, variants)
    elif campaign.pk is not None:
        # Warnings describe the whole campaign, not only what this request changed.
        saved = list(Variant.objects.filter(tenant_id=campaign.tenant_id, campaign=campaign).values())
        check.warnings = campaign_content_check(tenant_id=campaign.tenant_id, variants=saved).warnings
    return check


def _preferred_settings(campaign: Campaign, data: Mapping[str, Any], errors: dict[str, list[str]]) -> dict[str, Any]:
    """Check the preferred-channel settings (into ``errors``); return them with the channel they imply (the first)."""
    preferred = bool(data.get("preferred_channel", campaign.preferred_channel))
    channels = data.get("preferred_channels", campaign.preferred_channels)
    found = preferred_channel_errors(preferred=preferred, channels=channels)
    errors.update(found)
    if not preferred or found:
        return {}
    if campaign.pk is not None:
        from analytics.models import Experiment

        if Experiment.objects.filter(tenant_id=campaign.tenant_id, campaign_id=campaign.pk).exists():
            errors["preferred_channel"] = [HAS_EXPERIMENT]
            return {}
    return {"preferred_channel": True, "preferred_channels": list(channels), "channel": channels[0]}


@transaction.atomic
def campaign_create(*, tenant: Tenant, actor: Actor, data: Mapping[str, Any]) -> tuple[Campaign, ContentCheck]:
    """Create a draft campaign with its audience and variants; return it with the template warnings."""
    campaign = Campaign(tenant=tenant, created_by=actor.user, status=Campaign.Status.DRAFT)
    check = _apply(campaign, data)
    audit(tenant=tenant, actor=actor, action="campaign.created", obj=campaign)
    return campaign, check


@transaction.atomic
def campaign_update(*, campaign: Campaign, actor: Actor, data: Mapping[str, Any]) -> tuple[Campaign, ContentCheck]:
    """Change a draft, scheduled or paused campaign; a scheduled one is rescheduled when its timing changed."""
    campaign = Campaign.objects.select_for_update().get(tenant_id=campaign.tenant_id, pk=campaign.pk)
    if campaign.status not in EDITABLE:
        raise ValidationError(READ_ONLY_REASON.get(campaign.status, "This campaign cannot be edited."))
    if "channel" in data and data["channel"] != campaign.channel and campaign.status != Campaign.Status.DRAFT:
        raise ValidationError({"channel": ["Only a draft may change its channel."]})
    for name in sorted(PREFERRED_FIELDS & set(data)):
        if data[name] != getattr(campaign, name) and campaign.status != Campaign.Status.DRAFT:
            raise ValidationError({name: ["Only a draft may change how it chooses its channel."]})
    before = {name: getattr(campaign, name) for name in SCHEDULE_FIELDS}
    check = _apply(campaign, data)
    if campaign.status != Campaign.Status.DRAFT:
        # A scheduled or paused campaign goes out without another look: it must stay ready to send.
        from campaigns.services import campaign_problems

        problems = campaign_problems(campaign=campaign, include_schedule=False)
        if problems:
            raise ValidationError(problem_paths(campaign, problems))
    rescheduled = campaign.status == Campaign.Status.SCHEDULED and any(
        getattr(campaign, name) != value for name, value in before.items()
    )
    audit(
        tenant=campaign.tenant, actor=actor, action="campaign.updated", obj=campaign,
        data={"fields": sorted(data), "rescheduled": rescheduled},
    )  # fmt: skip
    if rescheduled:
        campaign_schedule(campaign=campaign, actor=actor)
    return campaign, check


@transaction.atomic
def campaign_delete(*, campaign: Campaign, actor: Actor) -> None:
    """Delete a draft or cancelled campaign (a sent one stays for its results)."""
    campaign = Campaign.objects.select_for_update().get(tenant_id=campaign.tenant_id, pk=campaign.pk)
    if campaign.status not in DELETABLE:
        raise ValidationError(
            f"A {campaign.get_status_display().lower()} campaign cannot be deleted: only drafts and cancelled "
            "campaigns can (cancel it first)."
        )
    audit(tenant=campaign.tenant, actor=actor, action="campaign.deleted", obj=campaign)
    scheduling.schedule_remove(campaign=campaign)
    campaign.delete()


@transaction.atomic
def channel_config_save(
    *, tenant: Tenant, actor: Actor, channel: str, backend: str | None = None,
    settings: dict[str, Any] | None = None, secret: str | None = None,
) -> ChannelConfig:  # fmt: skip
    """Create or change the tenant's provider account for ``channel``; ``secret=None`` keeps the stored one."""
    config = ChannelConfig.objects.select_for_update().filter(tenant_id=tenant.pk, channel=channel).first()
    if config is None:
        if backend is None:
            raise ValidationError({"backend": ["Required to configure a channel."]})
        config = ChannelConfig(tenant=tenant, channel=channel, backend=backend)
    if backend is not None:
        config.backend = backend
    if settings is not None:
        config.settings = settings
    if secret is not None:
        config.secret = secret
    errors = channel_settings_errors(
        channel=config.channel, backend=config.backend, settings=config.settings, has_secret=bool(config.secret)
    )
    if errors:
        raise ValidationError(errors)
    config.save()
    audit(
        tenant=tenant, actor=actor, action="channel_config.saved", obj=config,
        data={"channel": config.channel, "backend": config.backend, "secret_changed": secret is not None},
    )  # fmt: skip
    return config


@transaction.atomic
def channel_config_delete(*, config: ChannelConfig, actor: Actor) -> None:
    """Forget a channel's provider account (email falls back to the project's backend)."""
    audit(
        tenant=config.tenant, actor=actor, action="channel_config.deleted", obj=config, data={"channel": config.channel}
    )
    config.delete()


# --- journeys' send steps --------------------------------------------------------------------------
# What a journey's send step sets on its hidden campaign besides the variants.
JOURNEY_CAMPAIGN_FIELDS = frozenset(
    {"channel", "purpose", "goal_event", "sender_name", "sender_email", "reply_to", "sms_sender", "webhook_url",
     "preferred_channel", "preferred_channels"}
)  # fmt: skip


@transaction.atomic
def journey_campaign_save(
    *, tenant: Tenant, campaign: Campaign | None, name: str, data: Mapping[str, Any]
) -> tuple[Campaign, ContentCheck]:
    """Create or change the hidden campaign behind a journey's send step: channel, sender and variants.

    The same validation as a campaign's content (templates, targets); raises ValidationError.
    """
    unknown = set(data) - JOURNEY_CAMPAIGN_FIELDS - {"variants"}
    if unknown:
        raise ValidationError({key: ["Unknown field."] for key in sorted(unknown)})
    if campaign is None:
        campaign = Campaign(tenant=tenant, kind=Campaign.Kind.JOURNEY, status=Campaign.Status.DRAFT)
    else:
        campaign = Campaign.objects.select_for_update().get(
            tenant_id=tenant.pk, pk=campaign.pk, kind=Campaign.Kind.JOURNEY
        )
    campaign.name = name[:200]
    return campaign, _apply(campaign, data)


def journey_campaign_copy(*, campaign: Campaign) -> Campaign:
    """A copy of a journey step's campaign and its variants (a new journey version sends its own)."""
    variants = list(Variant.objects.filter(tenant_id=campaign.tenant_id, campaign=campaign).order_by("position", "id"))
    copy = Campaign.objects.get(tenant_id=campaign.tenant_id, pk=campaign.pk)
    copy.pk = None
    copy.periodic_task = None
    copy.save()
    for variant in variants:
        variant.pk = None
        variant.campaign = copy
    Variant.objects.bulk_create(variants)
    return copy
