"""Consent (an append-only ledger with a derived current state) and suppression."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.core import signing
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from contacts.lifecycle import lifecycle_refresh
from contacts.models import (
    Channel,
    ConsentRecord,
    ConsentSource,
    ConsentState,
    ConsentStatus,
    Contact,
    LegalBasis,
    Suppression,
)
from contacts.normalize import address_hash
from contacts.signals import contacts_touched
from tenants.audit import Actor, audit
from tenants.models import Tenant

CONFIRM_SALT = "contacts.consent.confirm"
CONFIRM_MAX_AGE = dt.timedelta(days=7)
# Withdrawals from these sources also suppress the address, so a re-import cannot re-subscribe it.
SUPPRESSING_SOURCES = frozenset({ConsentSource.UNSUBSCRIBE_LINK, ConsentSource.INBOUND_STOP})
# Only an explicit, confirmed opt-in lifts an unsubscribe suppression (never an import).
RESUBSCRIBING_SOURCES = frozenset({ConsentSource.DOUBLE_OPT_IN, ConsentSource.PREFERENCE_CENTRE})


@dataclass(frozen=True)
class ConsentEvidence:
    """What was shown and where the person was when they decided."""

    source: str
    legal_basis: str = LegalBasis.CONSENT
    wording: str = ""
    wording_version: str = ""
    ip_address: str | None = None
    user_agent: str = ""


def channel_address(contact: Contact, channel: str) -> str:
    """The address a channel reaches the contact at (empty when it has none)."""
    if channel == Channel.EMAIL:
        return contact.email
    if channel in (Channel.SMS, Channel.WHATSAPP):
        return contact.phone
    return ""


def _validate(tenant: Tenant, channel: str, purpose: str, status: str, evidence: ConsentEvidence) -> None:
    errors: dict[str, str] = {}
    if channel not in Channel.values:
        errors["channel"] = f"{channel!r} is not a channel ({', '.join(Channel.values)})."
    if purpose not in tenant.consent_purposes:
        errors["purpose"] = (
            f"{purpose!r} is not one of this workspace's purposes ({', '.join(tenant.consent_purposes)})."
        )
    if status not in ConsentStatus.values:
        errors["status"] = f"{status!r} is not a consent status."
    if evidence.source not in ConsentSource.values:
        errors["source"] = f"{evidence.source!r} is not a consent source."
    if evidence.legal_basis not in LegalBasis.values:
        errors["legal_basis"] = f"{evidence.legal_basis!r} is not a legal basis."
    if errors:
        raise ValidationError(errors)


def _ledger_row(
    contact: Contact,
    channel: str,
    purpose: str,
    status: str,
    evidence: ConsentEvidence,
    actor: Actor,
    occurred_at: dt.datetime,
) -> ConsentRecord:
    """An unsaved ledger row carrying the evidence and the actor."""
    return ConsentRecord(
        tenant_id=contact.tenant_id,
        contact=contact,
        channel=channel,
        purpose=purpose,
        status=status,
        legal_basis=evidence.legal_basis,
        source=evidence.source,
        wording=evidence.wording,
        wording_version=evidence.wording_version,
        ip_address=evidence.ip_address,
        user_agent=evidence.user_agent[:500],
        actor=actor.label,
        occurred_at=occurred_at,
    )


@transaction.atomic
def consent_change(
    *,
    contact: Contact,
    channel: str,
    purpose: str,
    status: str,
    evidence: ConsentEvidence,
    actor: Actor,
    occurred_at: dt.datetime | None = None,
) -> ConsentRecord:
    """Append to the ledger and move the current state with it, in one transaction."""
    if contact.erased_at is not None:
        raise ValidationError("This contact was erased; no consent can be recorded for it.")
    tenant = contact.tenant
    _validate(tenant, channel, purpose, status, evidence)
    occurred_at = occurred_at or timezone.now()
    record = _ledger_row(contact, channel, purpose, status, evidence, actor, occurred_at)
    record.save()
    state = ConsentState.objects.filter(tenant=tenant, contact=contact, channel=channel, purpose=purpose).first()
    # The state follows the newest record by time (a late-arriving old import does not win).
    if state is None:
        ConsentState.objects.create(
            tenant=tenant, contact=contact, channel=channel, purpose=purpose, status=status, record=record,
            updated_at=occurred_at,
        )  # fmt: skip
    elif state.updated_at <= occurred_at:
        state.status, state.record, state.updated_at = status, record, occurred_at
        state.save(update_fields=["status", "record", "updated_at"])
    address = channel_address(contact, channel)
    if address and status == ConsentStatus.WITHDRAWN and evidence.source in SUPPRESSING_SOURCES:
        suppression_add(tenant=tenant, channel=channel, address=address, reason=Suppression.Reason.UNSUBSCRIBE)
    if address and status == ConsentStatus.GRANTED and evidence.source in RESUBSCRIBING_SOURCES:
        Suppression.objects.filter(
            tenant=tenant, channel=channel, address_hash=address_hash(channel, address),
            reason=Suppression.Reason.UNSUBSCRIBE,
        ).delete()  # fmt: skip
    lifecycle_refresh(tenant=tenant, contacts=[contact], reason="consent")
    contacts_touched(tenant.pk, [contact.pk])
    audit(
        tenant=tenant,
        actor=actor,
        action=f"consent.{status}",
        obj=contact,
        data={"channel": channel, "purpose": purpose, "source": evidence.source, "record_id": record.pk},
    )
    return record


@transaction.atomic
def consents_grant_new(
    *, tenant: Tenant, contacts: list[Contact], channel: str, purpose: str, evidence: ConsentEvidence, actor: Actor
) -> list[ConsentRecord]:
    """Grant consent to many contacts that have no decision yet on this channel and purpose.

    The bulk form of ``consent_change`` for imports: contacts that already decided keep
    their decision, and one audit entry covers the batch.
    """
    _validate(tenant, channel, purpose, ConsentStatus.GRANTED, evidence)
    decided = set(
        ConsentState.objects.filter(tenant=tenant, contact__in=contacts, channel=channel, purpose=purpose).values_list(
            "contact_id", flat=True
        )
    )
    contacts = [c for c in contacts if c.pk not in decided and c.erased_at is None]
    if not contacts:
        return []
    now = timezone.now()
    records = ConsentRecord.objects.bulk_create(
        [_ledger_row(c, channel, purpose, ConsentStatus.GRANTED, evidence, actor, now) for c in contacts],
        batch_size=1000,
    )
    ConsentState.objects.bulk_create(
        [
            ConsentState(
                tenant=tenant,
                contact=record.contact,
                channel=channel,
                purpose=purpose,
                status=ConsentStatus.GRANTED,
                record=record,
                updated_at=now,
            )
            for record in records
        ],
        batch_size=1000,
    )
    lifecycle_refresh(tenant=tenant, contacts=contacts, reason="consent")
    contacts_touched(tenant.pk, [c.pk for c in contacts])
    audit(
        tenant=tenant, actor=actor, action="consent.granted",
        data={"channel": channel, "purpose": purpose, "source": evidence.source, "contacts": len(records)},
    )  # fmt: skip
    return records


def consent_states(contact: Contact) -> dict[tuple[str, str], ConsentState]:
    return {
        (s.channel, s.purpose): s for s in ConsentState.objects.filter(tenant_id=contact.tenant_id, contact=contact)
    }


# --- double opt-in ------------------------------------------------------------------------
def confirmation_token(record: ConsentRecord, email: str) -> str:
    """A signed link for one pending record, bound to the address it was sent to."""
    payload = {"t": record.tenant_id, "r": record.pk, "a": address_hash(Channel.EMAIL, email)}
    return signing.dumps(payload, salt=CONFIRM_SALT)


@transaction.atomic
def consent_request_confirmation(
    *, contact: Contact, purpose: str, evidence: ConsentEvidence, actor: Actor
) -> ConsentRecord:
    """Record a pending email opt-in and send the confirmation link (consent counts once confirmed)."""
    from contacts.tasks import send_consent_confirmation

    if not contact.email:
        raise ValidationError({"email": "The contact has no email address to confirm."})
    record = consent_change(
        contact=contact, channel=Channel.EMAIL, purpose=purpose, status=ConsentStatus.PENDING,
        evidence=evidence, actor=actor,
    )  # fmt: skip
    transaction.on_commit(lambda: send_consent_confirmation.delay(contact.tenant_id, record.pk))
    return record


@dataclass(frozen=True)
class ConfirmationPreview:
    """What a confirmation link would confirm, shown before the person presses the button."""

    tenant_name: str
    channel: str
    purpose: str
    confirmed: bool


def _load_confirmation_token(token: str) -> tuple[int, int, str]:
    try:
        payload = signing.loads(token, salt=CONFIRM_SALT, max_age=CONFIRM_MAX_AGE)
        return int(payload["t"]), int(payload["r"]), str(payload["a"])
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        raise ValidationError("This confirmation link is not valid or has expired.") from None


def _pending_for_token(tenant_id: int, record_id: int, hashed: str) -> tuple[ConsentRecord, ConsentState | None]:
    """Return the pending record a token names and the current state (inside the token's tenant)."""
    pending = ConsentRecord.objects.select_related("contact", "contact__tenant").filter(pk=record_id).first()
    if pending is None or pending.status != ConsentStatus.PENDING:
        raise ValidationError("This confirmation link is not valid or has expired.")
    contact = pending.contact
    if not contact.email or address_hash(Channel.EMAIL, contact.email) != hashed:
        raise ValidationError("This confirmation link was sent to another address.")
    state = ConsentState.objects.filter(
        tenant_id=tenant_id, contact=contact, channel=pending.channel, purpose=pending.purpose
    ).first()
    return pending, state


def confirmation_preview(*, token: str) -> ConfirmationPreview:
    """Describe a confirmation link without confirming anything (mail scanners prefetch links)."""
    from tenants.context import tenant_context

    tenant_id, record_id, hashed = _load_confirmation_token(token)
    with tenant_context(tenant_id):
        pending, state = _pending_for_token(tenant_id, record_id, hashed)
        return ConfirmationPreview(
            tenant_name=pending.contact.tenant.name,
            channel=pending.channel,
            purpose=pending.purpose,
            confirmed=state is not None and state.status == ConsentStatus.GRANTED,
        )


def consent_confirm(*, token: str, ip_address: str | None, user_agent: str) -> ConsentRecord:
    """Turn a pending opt-in into granted consent, if the link is genuine, fresh and for this address."""
    from tenants.context import tenant_context

    tenant_id, record_id, hashed = _load_confirmation_token(token)
    with tenant_context(tenant_id), transaction.atomic():
        pending, state = _pending_for_token(tenant_id, record_id, hashed)
        contact = pending.contact
        if state is not None and state.status == ConsentStatus.GRANTED:
            return state.record
        evidence = ConsentEvidence(
            source=ConsentSource.DOUBLE_OPT_IN, legal_basis=pending.legal_basis, wording=pending.wording,
            wording_version=pending.wording_version, ip_address=ip_address, user_agent=user_agent,
        )  # fmt: skip
        return consent_change(
            contact=contact, channel=pending.channel, purpose=pending.purpose, status=ConsentStatus.GRANTED,
            evidence=evidence, actor=Actor.system("the contact (double opt-in link)"),
        )  # fmt: skip


def confirmation_url(token: str) -> str:
    from django.urls import reverse

    return settings.SITE_URL + reverse("consent_confirm", kwargs={"token": token})


# --- suppression --------------------------------------------------------------------------
def suppression_add(
    *, tenant: Tenant, channel: str, address: str, reason: str, note: str = "", actor: Actor | None = None
) -> Suppression:
    """Suppress a normalised address on a channel (idempotent); audited when a person or key asks for it."""
    if channel not in Channel.values:
        raise ValidationError({"channel": f"{channel!r} is not a channel."})
    if reason not in Suppression.Reason.values:
        raise ValidationError({"reason": f"{reason!r} is not a suppression reason."})
    if not address:
        raise ValidationError({"address": "An address is required."})
    suppression, created = Suppression.objects.get_or_create(
        tenant=tenant, channel=channel, address_hash=address_hash(channel, address),
        defaults={"reason": reason, "note": note[:200]},
    )  # fmt: skip
    column = {Channel.EMAIL: "email", Channel.SMS: "phone", Channel.WHATSAPP: "phone"}.get(Channel(channel))
    if created and column:
        addressed = Contact.objects.filter(tenant=tenant, **{column: address}).values_list("pk", flat=True)
        contacts_touched(tenant.pk, addressed)
    if actor is not None and created:
        audit(
            tenant=tenant, actor=actor, action="suppression.added", obj=suppression,
            data={"channel": channel, "reason": reason},
        )  # fmt: skip
    return suppression


# Unsubscribes, complaints and erasures are the person's decision: only their own confirmed
# opt-in lifts an unsubscribe (see consent_change), and nothing lifts the others by hand.
REMOVABLE_SUPPRESSION_REASONS = frozenset({Suppression.Reason.MANUAL, Suppression.Reason.HARD_BOUNCE})


@transaction.atomic
def suppression_remove(*, suppression: Suppression, actor: Actor) -> None:
    """Lift a manual or hard-bounce suppression; refuse the ones the person asked for."""
    if suppression.reason not in REMOVABLE_SUPPRESSION_REASONS:
        raise ValidationError(
            f"“{suppression.get_reason_display()}” suppressions record the person's own decision "
            "and cannot be removed by hand."
        )
    audit(
        tenant=suppression.tenant, actor=actor, action="suppression.removed", obj=suppression,
        data={"channel": suppression.channel, "reason": suppression.reason},
    )  # fmt: skip
    suppression.delete()


def is_suppressed(*, tenant: Tenant, channel: str, address: str) -> bool:
    return (
        bool(address)
        and Suppression.objects.filter(
            tenant=tenant, channel=channel, address_hash=address_hash(channel, address)
        ).exists()
    )
