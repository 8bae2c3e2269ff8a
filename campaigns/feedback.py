"""Delivery feedback: what providers and recipients tell us after sending, applied to consent and suppression.

Every source (anymail's ESP tracking webhooks, the generic JSON endpoint, Twilio-style inbound
SMS and status callbacks; see ``campaigns/views_feedback.py``) ends in ``feedback_record``,
which stores one ``DeliveryFeedback`` row — a provider's retry of the same event is a no-op —
and applies it in the same transaction, so it holds for the very next send (sending checks
consent and suppression at the moment of sending):

- hard bounce: the address is suppressed (``hard_bounce``);
- soft bounce: recorded; the third for an address within 30 days (none delivered in between)
  suppresses it like a hard bounce;
- complaint: a ``complaint`` suppression, and consent for the message's purpose (the
  campaign's, else ``marketing``) withdrawn in the ledger with the provider as evidence;
- unsubscribe (at the provider): as the one-click link: consent withdrawn and suppressed;
- inbound STOP: every SMS purpose withdrawn and the number suppressed;
- inbound START: the SMS purposes a STOP withdrew are granted again ("Replied START") and the
  number's unsubscribe suppression is lifted — never a bounce or complaint suppression;
- delivered: recorded only (it resets the soft-bounce count).

A late-arriving STOP or START that an opposite keyword from the same number has overtaken is
recorded and changes nothing. Everything runs inside the given tenant (scoped managers and
row-level security): an address or delivery of another tenant is simply not found.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from campaigns.models import CampaignChannel, Delivery, DeliveryFeedback
from contacts.consent import (
    REMOVABLE_SUPPRESSION_REASONS,
    ConsentEvidence,
    channel_address,
    consent_change,
    suppression_add,
)
from contacts.models import Channel, ConsentSource, ConsentState, ConsentStatus, Contact, Suppression
from contacts.normalize import address_hash, normalise_email, normalise_phone
from tenants.audit import Actor, audit
from tenants.context import tenant_context
from tenants.models import Tenant

logger = logging.getLogger(__name__)

Kind = DeliveryFeedback.Kind

# Carrier keywords (CTIA; Twilio's defaults), matched on the whole trimmed message.
STOP_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_KEYWORDS = frozenset({"START", "UNSTOP", "YES"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})
SOFT_BOUNCE_LIMIT = 3
SOFT_BOUNCE_WINDOW = dt.timedelta(days=30)
FEEDBACK_CHANNELS = (CampaignChannel.EMAIL, CampaignChannel.SMS)
DEFAULT_PURPOSE = "marketing"
WORDING_VERSION = "feedback-1"
MAX_DETAIL_LENGTH = 1000
MAX_PAYLOAD_BYTES = 16 * 1024
MAX_PROVIDER_LENGTH = 50
MAX_EVENT_ID_LENGTH = 200
MAX_BIGINT = 2**63 - 1
_KEYWORD_TRIM = re.compile(r"^[\s\"'“”.!]+|[\s\"'“”.!]+$")


def sms_keyword(body: str) -> str | None:
    """Return "stop", "start" or "help" when the whole message is such a keyword, else None."""
    word = _KEYWORD_TRIM.sub("", body or "").upper()
    if word in STOP_KEYWORDS:
        return "stop"
    if word in START_KEYWORDS:
        return "start"
    if word in HELP_KEYWORDS:
        return "help"
    return None


def normalise_address(channel: str, address: str) -> str:
    """The address as contacts store it (lower-case email, E.164 phone), or raise ValidationError."""
    field = "email" if channel == CampaignChannel.EMAIL else "phone"
    try:
        return normalise_email(address) if channel == CampaignChannel.EMAIL else normalise_phone(address)
    except ValidationError as error:
        raise ValidationError({field: error.messages}) from None


# --- the service ------------------------------------------------------------------------------
def feedback_record(
    *,
    tenant: Tenant,
    channel: str,
    kind: str,
    provider: str,
    provider_event_id: str,
    occurred_at: dt.datetime | None,
    address: str | None = None,
    delivery_id: int | str | None = None,
    provider_message_id: str = "",
    detail: str = "",
    payload: Any = None,
) -> DeliveryFeedback | None:
    """Store one provider event and apply it; return None when this event was recorded before.

    The delivery is found by ``delivery_id`` (the ``delivery`` metadata sending gives every
    message) or by ``provider_message_id`` among the address's contacts; the contacts by the
    delivery or the normalised address. Raises ``ValidationError`` (with a field) on bad input.
    """
    _validate(channel=channel, kind=kind, provider=provider, provider_event_id=provider_event_id)
    if occurred_at is not None and timezone.is_naive(occurred_at):
        raise ValidationError({"occurred_at": "Give a time with a time zone, e.g. 2026-11-28T09:30:00Z."})
    # The provider's time orders the events of one address (soft bounces, STOP against START);
    # a clock ahead of ours must not put one after everything that comes later.
    now = timezone.now()
    when = min(occurred_at, now) if occurred_at is not None else now
    normalised = normalise_address(channel, address) if address else ""
    with tenant_context(tenant.pk), transaction.atomic():
        seen = DeliveryFeedback.objects.filter(tenant=tenant, provider=provider, provider_event_id=provider_event_id)
        if seen.exists():
            return None
        contacts = _contacts_at(tenant, channel, normalised)
        delivery = _delivery_for(tenant, delivery_id, provider_message_id, contacts)
        if delivery is not None and delivery.contact.pk not in {c.pk for c in contacts}:
            contacts.insert(0, delivery.contact)
        if not normalised and delivery is not None:
            normalised = channel_address(delivery.contact, channel)
        if not normalised:
            field = "email" if channel == CampaignChannel.EMAIL else "phone"
            raise ValidationError({field: "An address, or a delivery that has one, is required."})
        hashed = address_hash(channel, normalised)
        try:
            with transaction.atomic():
                feedback = DeliveryFeedback.objects.create(
                    tenant=tenant, delivery=delivery, contact=contacts[0] if contacts else None, channel=channel,
                    kind=kind, provider=provider, provider_event_id=provider_event_id, occurred_at=when,
                    detail=(detail or "").replace("\x00", "")[:MAX_DETAIL_LENGTH],
                    payload={"address_hash": hashed, "event": _jsonable(payload)},
                )  # fmt: skip
        except IntegrityError:  # the same event, recorded by a concurrent request a moment ago
            return None
        _apply(
            feedback,
            tenant=tenant,
            address=normalised,
            hashed=hashed,
            contacts=[c for c in contacts if c.erased_at is None],
            purpose=_purpose(tenant, delivery),
        )
        logger.info(
            "feedback.recorded",
            extra={
                "tenant_id": tenant.pk, "feedback_id": feedback.pk, "kind": kind, "provider": provider,
                "delivery_id": delivery.pk if delivery else None,
            },
        )  # fmt: skip
        return feedback


def _validate(*, channel: str, kind: str, provider: str, provider_event_id: str) -> None:
    errors: dict[str, str] = {}
    if channel not in FEEDBACK_CHANNELS:
        errors["channel"] = f"{channel!r} is not a channel with feedback (email, sms)."
    if kind not in Kind.values:
        errors["type"] = f"{kind!r} is not a kind of feedback ({', '.join(Kind.values)})."
    elif kind in (Kind.INBOUND_STOP, Kind.INBOUND_START) and channel != CampaignChannel.SMS:
        errors["type"] = "STOP and START replies come by SMS: give a phone number."
    if not provider or len(provider) > MAX_PROVIDER_LENGTH or "\x00" in provider:
        errors["provider"] = f"Name the provider in 1 to {MAX_PROVIDER_LENGTH} characters."
    if not provider_event_id or len(provider_event_id) > MAX_EVENT_ID_LENGTH or "\x00" in provider_event_id:
        errors["id"] = f"Give the provider's event id in 1 to {MAX_EVENT_ID_LENGTH} characters."
    if errors:
        raise ValidationError(errors)


def _jsonable(payload: Any) -> Any:
    """The provider's event as JSON, or a marker when it is too big to keep."""
    if payload is None:
        return {}
    text = json.dumps(payload, default=str)
    if len(text) > MAX_PAYLOAD_BYTES:
        return {"truncated": True, "bytes": len(text)}
    return _without_nul(json.loads(text))


def _without_nul(value: Any) -> Any:
    """PostgreSQL's jsonb refuses NUL characters: drop them rather than the event."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    return value


# --- lookups (inside the tenant) ---------------------------------------------------------------
def delivery_pk(value: Any) -> int | None:
    """A delivery id from metadata or a request (a positive 64-bit integer), or None."""
    try:
        pk = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return pk if 0 < pk <= MAX_BIGINT else None


def _contacts_at(tenant: Tenant, channel: str, address: str) -> list[Contact]:
    if not address:
        return []
    column = "email" if channel == CampaignChannel.EMAIL else "phone"
    return list(Contact.objects.filter(tenant=tenant, **{column: address}).select_related("tenant").order_by("id"))


def _delivery_for(
    tenant: Tenant, delivery_id: int | str | None, provider_message_id: str, contacts: list[Contact]
) -> Delivery | None:
    deliveries = Delivery.objects.filter(tenant=tenant).select_related("contact__tenant", "run__campaign")
    if delivery_id not in (None, ""):
        pk = delivery_pk(delivery_id)
        if pk is None:
            raise ValidationError({"delivery": f"{str(delivery_id)[:40]!r} is not a delivery id."})
        return deliveries.filter(pk=pk).first()
    if provider_message_id and contacts:
        # Through the contacts: the (tenant, contact, sent_at) index, not a scan of every delivery.
        matching = deliveries.filter(contact__in=[c.pk for c in contacts], provider_message_id=provider_message_id)
        return matching.order_by("-id").first()
    return None


def _purpose(tenant: Tenant, delivery: Delivery | None) -> str | None:
    """The purpose a message was sent for; ``marketing`` (or the first purpose) when unknown."""
    purposes = list(tenant.consent_purposes or [])
    if delivery is not None and delivery.run.campaign.purpose in purposes:
        return delivery.run.campaign.purpose
    if DEFAULT_PURPOSE in purposes:
        return DEFAULT_PURPOSE
    return purposes[0] if purposes else None


# --- effects -----------------------------------------------------------------------------------
def _apply(
    feedback: DeliveryFeedback, *, tenant: Tenant, address: str, hashed: str, contacts: list[Contact],
    purpose: str | None,
) -> None:  # fmt: skip
    kind, channel, provider = feedback.kind, feedback.channel, feedback.provider
    via = f"reported by {provider}"
    if kind == Kind.BOUNCE_HARD:
        _suppress(tenant, channel, address, Suppression.Reason.HARD_BOUNCE, f"hard bounce {via}")
    elif kind == Kind.BOUNCE_SOFT:
        if _soft_bounces(feedback, hashed) >= SOFT_BOUNCE_LIMIT:
            note = f"{SOFT_BOUNCE_LIMIT} soft bounces within {SOFT_BOUNCE_WINDOW.days} days"
            _suppress(tenant, channel, address, Suppression.Reason.HARD_BOUNCE, note)
    elif kind in (Kind.COMPLAINT, Kind.UNSUBSCRIBE):
        complaint = kind == Kind.COMPLAINT
        reason = Suppression.Reason.COMPLAINT if complaint else Suppression.Reason.UNSUBSCRIBE
        _suppress(tenant, channel, address, reason, f"{'complaint' if complaint else 'unsubscribe'} {via}")
        wording = "Marked the message as spam" if complaint else "Unsubscribed at the provider"
        _withdraw(feedback, contacts, [purpose] if purpose else [], f"{wording} ({via})")
    elif kind == Kind.INBOUND_STOP:
        if _overtaken(feedback, hashed, by=Kind.INBOUND_START):
            return
        _suppress(tenant, channel, address, Suppression.Reason.UNSUBSCRIBE, f"replied STOP ({provider})")
        _withdraw(feedback, contacts, list(tenant.consent_purposes or []), f"Replied {feedback.detail or 'STOP'}")
    elif kind == Kind.INBOUND_START:
        if _overtaken(feedback, hashed, by=Kind.INBOUND_STOP):
            return
        _grant_again(feedback, contacts, purpose, f"Replied {feedback.detail or 'START'}")
        _lift_unsubscribe(tenant, channel, hashed, provider)


def _suppress(tenant: Tenant, channel: str, address: str, reason: str, note: str) -> Suppression:
    suppression = suppression_add(tenant=tenant, channel=channel, address=address, reason=reason, note=note)
    # One row per address: a person's own decision (STOP, complaint) replaces a suppression
    # that staff may lift by hand (manual, hard bounce), so lifting that cannot undo it.
    if suppression.reason in REMOVABLE_SUPPRESSION_REASONS and reason not in REMOVABLE_SUPPRESSION_REASONS:
        Suppression.objects.filter(tenant=tenant, pk=suppression.pk).update(reason=reason, note=note[:200])
        suppression.reason = reason
    return suppression


def _address_feedback(feedback: DeliveryFeedback, hashed: str, kinds: Iterable[str]) -> Any:
    return DeliveryFeedback.objects.filter(
        tenant_id=feedback.tenant_id, channel=feedback.channel, kind__in=list(kinds), payload__address_hash=hashed
    )


def _soft_bounces(feedback: DeliveryFeedback, hashed: str) -> int:
    """Soft bounces of the address in the window up to this one, since its last delivery."""
    since = feedback.occurred_at - SOFT_BOUNCE_WINDOW
    delivered = _address_feedback(feedback, hashed, [Kind.DELIVERED]).filter(
        occurred_at__gt=since, occurred_at__lte=feedback.occurred_at
    )
    last_delivered = delivered.order_by("-occurred_at").values_list("occurred_at", flat=True).first()
    if last_delivered is not None:
        since = last_delivered
    return (
        _address_feedback(feedback, hashed, [Kind.BOUNCE_SOFT])
        .filter(occurred_at__gt=since, occurred_at__lte=feedback.occurred_at)
        .count()
    )


def _overtaken(feedback: DeliveryFeedback, hashed: str, *, by: str) -> bool:
    """Whether the number sent the opposite keyword after this one (its event arrived first)."""
    return _address_feedback(feedback, hashed, [by]).filter(occurred_at__gt=feedback.occurred_at).exists()


def _evidence(feedback: DeliveryFeedback, wording: str) -> ConsentEvidence:
    # There is no ledger source for an ESP's report: an unsubscribe or complaint at the mailbox
    # provider is the person's List-Unsubscribe or "spam" button, so it counts as an unsubscribe.
    source = ConsentSource.INBOUND_STOP if feedback.channel == Channel.SMS else ConsentSource.UNSUBSCRIBE_LINK
    return ConsentEvidence(source=source, wording=wording, wording_version=WORDING_VERSION)


def _actor(feedback: DeliveryFeedback) -> Actor:
    return Actor.system(f"the contact (via {feedback.provider}, feedback {feedback.pk})")


def _withdraw(feedback: DeliveryFeedback, contacts: list[Contact], purposes: list[str], wording: str) -> None:
    """Withdraw each purpose that is not withdrawn already (a repeat adds no ledger row).

    Dated now, when we learn of it (as the unsubscribe link is): a provider's time, to the
    second and on its own clock, could fall before the grant it answers and be outranked by it.
    """
    for contact in contacts:
        states = _states(contact, feedback.channel)
        for purpose in purposes:
            if states.get(purpose) == ConsentStatus.WITHDRAWN:
                continue
            consent_change(
                contact=contact, channel=feedback.channel, purpose=purpose, status=ConsentStatus.WITHDRAWN,
                evidence=_evidence(feedback, wording), actor=_actor(feedback),
            )  # fmt: skip


def _grant_again(feedback: DeliveryFeedback, contacts: list[Contact], purpose: str | None, wording: str) -> None:
    """Grant the purposes a STOP withdrew; a number that never replied STOP opts in to ``purpose``."""
    for contact in contacts:
        rows = ConsentState.objects.filter(
            tenant_id=contact.tenant_id, contact=contact, channel=feedback.channel
        ).select_related("record")
        stopped = [
            s.purpose
            for s in rows
            if s.status == ConsentStatus.WITHDRAWN and s.record.source == ConsentSource.INBOUND_STOP
        ]
        granted = {s.purpose for s in rows if s.status == ConsentStatus.GRANTED}
        purposes = stopped or ([purpose] if purpose and purpose not in granted else [])
        for item in purposes:
            if item not in contact.tenant.consent_purposes:
                continue
            consent_change(
                contact=contact, channel=feedback.channel, purpose=item, status=ConsentStatus.GRANTED,
                evidence=_evidence(feedback, wording), actor=_actor(feedback),
            )  # fmt: skip


def _states(contact: Contact, channel: str) -> dict[str, str]:
    rows = ConsentState.objects.filter(tenant_id=contact.tenant_id, contact=contact, channel=channel)
    return dict(rows.values_list("purpose", "status"))


def _lift_unsubscribe(tenant: Tenant, channel: str, hashed: str, provider: str) -> None:
    """Lift the number's unsubscribe suppression (as consent_change does for a confirmed opt-in)."""
    lifted = Suppression.objects.filter(
        tenant=tenant, channel=channel, address_hash=hashed, reason=Suppression.Reason.UNSUBSCRIBE
    )
    suppression = lifted.first()
    if suppression is None:
        return
    audit(
        tenant=tenant, actor=Actor.system(f"the contact (replied START via {provider})"), action="suppression.removed",
        obj=suppression, data={"channel": channel, "reason": suppression.reason},
    )  # fmt: skip
    lifted.delete()
