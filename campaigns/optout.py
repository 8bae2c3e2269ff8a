"""Opting out: signed unsubscribe links (RFC 8058 one-click), the preference centre and pauses.

Every marketing message carries one token. It is signed with ``django.core.signing`` (a salt
of its own, so no other signed value of the project can stand in for it) and names the
tenant, the contact, the channel and the purpose the message was sent for, plus the campaign
for reporting. It has no expiry: a link in a years-old message must still unsubscribe
(RFC 8058), but an edited token fails its signature and is refused.

The token is the only credential: the pages behind it need no login and no cookie, and
each one runs inside the token's tenant (scoped managers and row-level security), so
nothing outside that tenant can be reached, whatever the token says.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.exceptions import ValidationError
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from campaigns.models import ContactPause
from campaigns.signals import unsubscribed
from contacts.consent import (
    ConsentEvidence,
    channel_address,
    consent_change,
    consent_states,
    is_suppressed,
)
from contacts.models import Channel, ConsentRecord, ConsentSource, ConsentState, ConsentStatus, Contact
from contacts.selectors import purpose_label
from tenants.audit import Actor, audit
from tenants.context import tenant_context

logger = logging.getLogger(__name__)

OPTOUT_SALT = "campaigns.optout.link"
# "." is not in the base64url alphabet, so the token is one dot-atom: valid in a URL path
# and in the local part of an email address alike (":", the default, is neither).
TOKEN_SEPARATOR = "."  # noqa: S105 (not a secret)
# RFC 5321 4.5.3.1.1: a local part is at most 64 octets.
MAILTO_LOCAL_PART_MAX = 64
MAILTO_PREFIX = "unsubscribe+"
PREFERENCE_CHANNELS: tuple[str, ...] = (Channel.EMAIL, Channel.SMS, Channel.PUSH)
PAUSE_DAYS = 30
INVALID_LINK = "This link is not valid. Please use the link from the most recent message you received."
WORDING_VERSION = "optout-1"


class OptOutLinkInvalid(ValidationError):
    """The token is malformed, tampered with or (when a max age is asked for) too old."""


class ContactGone(ValidationError):
    """The token is genuine but its contact was erased or deleted: nothing is left to change."""


@dataclass(frozen=True)
class OptOutLink:
    """What a genuine token names."""

    tenant_id: int
    contact_id: int
    channel: str
    purpose: str
    campaign_id: int | None = None


@dataclass(frozen=True)
class UnsubscribeOutcome:
    """What an unsubscribe did, for the page that answers it."""

    tenant_name: str
    postal_address: str
    channel: str
    purpose: str
    changed: bool


@dataclass(frozen=True)
class PreferenceCell:
    channel: str
    purpose: str
    label: str
    status: str  # granted, withdrawn, pending, or "" when never asked


@dataclass(frozen=True)
class PreferenceRow:
    channel: str
    label: str
    has_address: bool
    suppressed: bool
    cells: tuple[PreferenceCell, ...]


@dataclass(frozen=True)
class PreferencePage:
    tenant_name: str
    postal_address: str
    link: OptOutLink
    address_hint: str
    purposes: tuple[str, ...]
    rows: tuple[PreferenceRow, ...]
    paused_until: dt.datetime | None


# --- tokens and links ----------------------------------------------------------------------------
def _signer() -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=OPTOUT_SALT, sep=TOKEN_SEPARATOR)


def unsubscribe_token(
    *, tenant_id: int, contact_id: int, channel: str, purpose: str, campaign_id: int | None = None
) -> str:
    """Sign a link for one contact, channel and purpose (and the campaign, for reporting)."""
    payload: list[Any] = [int(tenant_id), int(contact_id), str(channel), str(purpose)]
    if campaign_id is not None:
        payload.append(int(campaign_id))
    return _signer().sign_object(payload)


def optout_link_load(token: str, *, max_age: dt.timedelta | None = None) -> OptOutLink:
    """Return what a token names, or raise ``OptOutLinkInvalid``. No expiry unless ``max_age``."""
    try:
        payload = _signer().unsign_object(token, max_age=max_age)
        tenant_id, contact_id, channel, purpose, *rest = payload
        campaign_id = int(rest[0]) if rest else None
        link = OptOutLink(int(tenant_id), int(contact_id), str(channel), str(purpose), campaign_id)
    except (signing.BadSignature, TypeError, ValueError, IndexError):
        raise OptOutLinkInvalid(INVALID_LINK) from None
    if link.channel not in Channel.values:
        raise OptOutLinkInvalid(INVALID_LINK)
    return link


def unsubscribe_url(token: str) -> str:
    return settings.SITE_URL + reverse("optout_unsubscribe", kwargs={"token": token})


def preferences_url(token: str) -> str:
    return settings.SITE_URL + reverse("optout_preferences", kwargs={"token": token})


def list_unsubscribe_headers(token: str, mailto_domain: str | None = None) -> dict[str, str]:
    """The RFC 2369 and RFC 8058 headers for a marketing email (DKIM must sign both).

    The mailto form is added only when ``unsubscribe+TOKEN`` fits in an address's local part;
    the https link, which one-click needs, is always there.
    """
    links = [f"<{unsubscribe_url(token)}>"]
    local_part = MAILTO_PREFIX + token
    if mailto_domain and len(local_part) <= MAILTO_LOCAL_PART_MAX:
        links.append(f"<mailto:{local_part}@{mailto_domain}>")
    return {"List-Unsubscribe": ", ".join(links), "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


# --- reads ---------------------------------------------------------------------------------------
def _contact_for(link: OptOutLink, *, lock: bool = False) -> Contact:
    """Return the token's contact inside the token's tenant (call within its tenant context)."""
    contacts = Contact.objects.filter(tenant_id=link.tenant_id, pk=link.contact_id).select_related("tenant")
    contact = (contacts.select_for_update(of=("self",)) if lock else contacts).first()
    if contact is None or contact.erased_at is not None:
        raise ContactGone("We no longer hold any details for this link, so you will receive no messages through it.")
    return contact


def _mask(address: str) -> str:
    """Enough of an address for its owner to recognise it, little for anyone else."""
    if "@" in address:
        name, domain = address.split("@", 1)
        return f"{name[:1]}•••@{domain}"
    return f"•••{address[-3:]}" if address else ""


def _has_address(contact: Contact, channel: str) -> bool:
    return bool(contact.push_tokens) if channel == Channel.PUSH else bool(channel_address(contact, channel))


def unsubscribe_status(token: str) -> UnsubscribeOutcome:
    """Describe what an unsubscribe link would do, changing nothing (link scanners fetch it)."""
    link = optout_link_load(token)
    with tenant_context(link.tenant_id):
        contact = _contact_for(link)
        tenant = contact.tenant
        return UnsubscribeOutcome(
            tenant_name=tenant.name,
            postal_address=tenant.postal_address,
            channel=link.channel,
            purpose=link.purpose,
            changed=not _is_unsubscribed(contact, link.channel, link.purpose),
        )


def _is_unsubscribed(contact: Contact, channel: str, purpose: str) -> bool:
    state = ConsentState.objects.filter(
        tenant_id=contact.tenant_id, contact=contact, channel=channel, purpose=purpose
    ).first()
    if state is None or state.status != ConsentStatus.WITHDRAWN:
        return False
    address = channel_address(contact, channel)
    return not address or is_suppressed(tenant=contact.tenant, channel=channel, address=address)


def preference_page(token: str) -> PreferencePage:
    """The preference centre's contents for the token's contact."""
    link = optout_link_load(token)
    with tenant_context(link.tenant_id):
        contact = _contact_for(link)
        tenant = contact.tenant
        states = consent_states(contact)
        purposes = tuple(tenant.consent_purposes)
        rows = []
        for channel in PREFERENCE_CHANNELS:
            address = channel_address(contact, channel)
            cells = tuple(
                PreferenceCell(channel, purpose, purpose_label(purpose), states[key].status if key in states else "")
                for purpose in purposes
                for key in [(channel, purpose)]
            )
            rows.append(
                PreferenceRow(
                    channel=channel,
                    label=Channel(channel).label,
                    has_address=_has_address(contact, channel),
                    suppressed=is_suppressed(tenant=tenant, channel=channel, address=address),
                    cells=cells,
                )
            )
        pause = ContactPause.objects.filter(tenant_id=tenant.pk, contact=contact).first()
        now = timezone.now()
        return PreferencePage(
            tenant_name=tenant.name,
            postal_address=tenant.postal_address,
            link=link,
            address_hint=_mask(channel_address(contact, link.channel)),
            purposes=purposes,
            rows=tuple(rows),
            paused_until=pause.until if pause is not None and pause.until > now else None,
        )


def is_paused(contact_id: int, at: dt.datetime) -> bool:
    """Whether the contact asked for a pause that still runs at ``at`` (current tenant only)."""
    return ContactPause.objects.filter(contact_id=contact_id, until__gt=at).exists()


# --- writes --------------------------------------------------------------------------------------
def _evidence(source: str, wording: str, ip: str | None, user_agent: str) -> ConsentEvidence:
    return ConsentEvidence(
        source=source, wording=wording, wording_version=WORDING_VERSION, ip_address=ip, user_agent=user_agent[:500]
    )


def unsubscribe(
    token: str,
    *,
    ip: str | None,
    user_agent: str,
    source: str = ConsentSource.UNSUBSCRIBE_LINK,
    wording: str = "Unsubscribe link",
) -> UnsubscribeOutcome:
    """Withdraw the token's consent and (by consent_change's rule) suppress the address.

    Effective for the very next send: the ledger row, the state and the suppression are
    committed before this returns. Clicking again changes nothing.
    """
    link = optout_link_load(token)
    with tenant_context(link.tenant_id), transaction.atomic():
        # The row lock serialises two clicks at once (the mailbox provider's POST and the
        # person's), so the second sees the first's withdrawal instead of writing another.
        contact = _contact_for(link, lock=True)
        tenant = contact.tenant
        changed = not _is_unsubscribed(contact, link.channel, link.purpose)
        if changed:
            consent_change(
                contact=contact, channel=link.channel, purpose=link.purpose, status=ConsentStatus.WITHDRAWN,
                evidence=_evidence(source, wording, ip, user_agent),
                actor=Actor.system("the contact (unsubscribe link)"),
            )  # fmt: skip
            logger.info(
                "optout.unsubscribed",
                extra={"tenant_id": tenant.pk, "contact_id": contact.pk, "campaign_id": link.campaign_id},
            )
            if link.campaign_id is not None:
                unsubscribed(tenant.pk, contact.pk, link.campaign_id)
        return UnsubscribeOutcome(tenant.name, tenant.postal_address, link.channel, link.purpose, changed)


def preference_change(token: str, *, channel: str, purpose: str, status: str, ip: str | None, user_agent: str) -> bool:
    """Opt in or out of one channel and purpose from the preference centre; False if already so.

    Opting in here is the person's own explicit choice, so it lifts an unsubscribe
    suppression of the address (consent_change's RESUBSCRIBING_SOURCES).
    """
    link = optout_link_load(token)
    if channel not in PREFERENCE_CHANNELS:
        raise ValidationError("Choose email, SMS or push.")
    if status not in (ConsentStatus.GRANTED, ConsentStatus.WITHDRAWN):
        raise ValidationError("Choose to opt in or to opt out.")
    with tenant_context(link.tenant_id), transaction.atomic():
        contact = _contact_for(link, lock=True)
        if purpose not in contact.tenant.consent_purposes:
            raise ValidationError("This kind of message is not offered any more.")
        state = ConsentState.objects.filter(
            tenant_id=contact.tenant_id, contact=contact, channel=channel, purpose=purpose
        ).first()
        address = channel_address(contact, channel)
        suppressed = is_suppressed(tenant=contact.tenant, channel=channel, address=address)
        # Opting in again still counts while the address is suppressed: that is what lifts it.
        if state is not None and state.status == status and not (status == ConsentStatus.GRANTED and suppressed):
            return False
        verb = "Receive" if status == ConsentStatus.GRANTED else "Stop receiving"
        label = purpose.replace("_", " ")
        consent_change(
            contact=contact, channel=channel, purpose=purpose, status=status,
            evidence=_evidence(
                ConsentSource.PREFERENCE_CENTRE, f"{verb} {label} messages by {Channel(channel).label}", ip, user_agent
            ),
            actor=Actor.system("the contact (preference centre)"),
        )  # fmt: skip
        return True


def unsubscribe_all(token: str, *, ip: str | None, user_agent: str) -> list[ConsentRecord]:
    """Withdraw every channel and purpose, and suppress the addresses (an unsubscribe, not a toggle).

    Undecided pairs are withdrawn too, so a later import cannot opt the person in.
    """
    link = optout_link_load(token)
    with tenant_context(link.tenant_id), transaction.atomic():
        contact = _contact_for(link, lock=True)
        tenant = contact.tenant
        states = consent_states(contact)
        # Any channel the person was ever asked about, even one the page does not list.
        channels = list(PREFERENCE_CHANNELS) + sorted({ch for ch, _ in states} - set(PREFERENCE_CHANNELS))
        evidence = _evidence(ConsentSource.UNSUBSCRIBE_LINK, "Unsubscribe from all", ip, user_agent)
        records = []
        for channel in channels:
            for purpose in tenant.consent_purposes:
                if _is_unsubscribed(contact, channel, purpose):
                    continue
                record = consent_change(
                    contact=contact, channel=channel, purpose=purpose, status=ConsentStatus.WITHDRAWN,
                    evidence=evidence, actor=Actor.system("the contact (preference centre)"),
                )  # fmt: skip
                records.append(record)
        return records


def pause_start(token: str, *, days: int = PAUSE_DAYS) -> ContactPause:
    """Hold every message to the contact back for ``days`` (replacing any running pause)."""
    link = optout_link_load(token)
    with tenant_context(link.tenant_id), transaction.atomic():
        contact = _contact_for(link, lock=True)
        until = timezone.now() + dt.timedelta(days=days)
        pause, _ = ContactPause.objects.update_or_create(
            tenant=contact.tenant, contact=contact, defaults={"until": until}
        )
        audit(
            tenant=contact.tenant, actor=Actor.system("the contact (preference centre)"), action="contact.paused",
            obj=contact, data={"days": days},
        )  # fmt: skip
        return pause


def pause_end(token: str) -> bool:
    """End the contact's pause now; False if none was running."""
    link = optout_link_load(token)
    with tenant_context(link.tenant_id), transaction.atomic():
        contact = _contact_for(link, lock=True)
        deleted, _ = ContactPause.objects.filter(tenant_id=contact.tenant_id, contact=contact).delete()
        if deleted:
            audit(
                tenant=contact.tenant, actor=Actor.system("the contact (preference centre)"),
                action="contact.pause_ended", obj=contact,
            )  # fmt: skip
        return bool(deleted)
