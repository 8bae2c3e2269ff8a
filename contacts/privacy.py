"""Privacy requests: export (GDPR art. 15), erasure (art. 17), and event retention."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import transaction
from django.forms.models import model_to_dict
from django.utils import timezone

from contacts.fields import CONTACT_FIELDS
from contacts.models import (
    Channel,
    ConsentRecord,
    ConsentState,
    Contact,
    Event,
    EventDailyRollup,
    LifecycleTransition,
    PrivacyRequest,
    Suppression,
)
from contacts.normalize import address_hash
from contacts.signals import contact_erasing, contacts_touched
from tenants.audit import Actor, audit
from tenants.models import Tenant

RETENTION_BATCH = 10_000
PERSONAL_TEXT_FIELDS = [f.name for f in CONTACT_FIELDS if f.type not in ("date", "tags", "tokens")] + ["anonymous_id"]
PERSONAL_LIST_FIELDS = [f.name for f in CONTACT_FIELDS if f.type in ("tags", "tokens")]


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date | dt.datetime) else value


def contact_export_data(contact: Contact) -> dict[str, Any]:
    """Everything held on one contact, as JSON-ready data."""
    tenant_id = contact.tenant_id
    profile = {k: _iso(v) for k, v in model_to_dict(contact, exclude=["tenant"]).items()}
    profile["country"] = str(contact.country.code or "") if contact.country else ""
    profile["total_revenue"] = str(contact.total_revenue)
    for name in ("created_at", "updated_at", "lifecycle_changed_at", "first_seen_at", "last_seen_at"):
        profile[name] = _iso(getattr(contact, name))
    profile["last_engaged_at"] = _iso(contact.last_engaged_at)
    profile["last_order_at"] = _iso(contact.last_order_at)
    events = [
        {
            "id": e.pk,
            "event": e.name,
            "occurred_at": e.occurred_at.isoformat(),
            "properties": e.properties,
            "revenue": str(e.revenue) if e.revenue is not None else None,
            "currency": e.currency,
            "source": e.source,
        }
        for e in Event.objects.filter(tenant_id=tenant_id, contact=contact).order_by("occurred_at").iterator()
    ]
    consent = [
        {
            "channel": r.channel,
            "purpose": r.purpose,
            "status": r.status,
            "legal_basis": r.legal_basis,
            "source": r.source,
            "wording": r.wording,
            "wording_version": r.wording_version,
            "ip_address": r.ip_address,
            "user_agent": r.user_agent,
            "actor": r.actor,
            "occurred_at": r.occurred_at.isoformat(),
        }
        for r in ConsentRecord.objects.filter(tenant_id=tenant_id, contact=contact).order_by("occurred_at", "id")
    ]
    lifecycle = [
        {"from": t.from_stage, "to": t.to_stage, "reason": t.reason, "at": t.occurred_at.isoformat()}
        for t in LifecycleTransition.objects.filter(tenant_id=tenant_id, contact=contact).order_by("occurred_at")
    ]
    return {
        "exported_at": timezone.now().isoformat(),
        "profile": profile,
        "events": events,
        "consent": consent,
        "lifecycle": lifecycle,
        # Deliveries arrive with campaigns; the key is here so the shape does not change.
        "deliveries": [],
    }


@transaction.atomic
def contact_export(*, contact: Contact, actor: Actor) -> dict[str, Any]:
    """Export a contact's data and record the request."""
    data = contact_export_data(contact)
    PrivacyRequest.objects.create(
        tenant_id=contact.tenant_id, kind=PrivacyRequest.Kind.EXPORT, contact=contact, contact_ref=contact.pk,
        requested_by=actor.label, completed_at=timezone.now(),
    )  # fmt: skip
    audit(
        tenant=contact.tenant, actor=actor, action="contact.exported", obj=contact, data={"events": len(data["events"])}
    )
    return data


@transaction.atomic
def contact_erase(*, contact: Contact, actor: Actor) -> PrivacyRequest:
    """Remove a contact's personal data; keep only suppression hashes so they are not mailed again.

    The contact row stays (anonymised) so aggregate figures keep adding up; its
    events keep name, time and revenue but lose their properties; the consent
    ledger, which holds addresses, IPs and wording shown to the person, goes.
    """
    tenant = contact.tenant
    for channel, address in ((Channel.EMAIL, contact.email), (Channel.SMS, contact.phone)):
        if address:
            Suppression.objects.get_or_create(
                tenant=tenant, channel=channel, address_hash=address_hash(channel, address),
                defaults={"reason": Suppression.Reason.ERASURE},
            )  # fmt: skip
    if contact.phone:
        Suppression.objects.get_or_create(
            tenant=tenant, channel=Channel.WHATSAPP, address_hash=address_hash(Channel.WHATSAPP, contact.phone),
            defaults={"reason": Suppression.Reason.ERASURE},
        )  # fmt: skip
    for name in PERSONAL_TEXT_FIELDS:
        setattr(contact, name, "")
    for name in PERSONAL_LIST_FIELDS:
        setattr(contact, name, [])
    contact.birth_date = None
    contact.attributes = {}
    contact.erased_at = timezone.now()
    contact.save()
    Event.objects.filter(tenant=tenant, contact=contact).update(properties={}, idempotency_key="")
    ConsentState.objects.filter(tenant=tenant, contact=contact).delete()
    ConsentRecord.objects.filter(tenant=tenant, contact=contact).delete()
    contact_erasing.send(sender=Contact, tenant_id=tenant.pk, contact_id=contact.pk)
    request = PrivacyRequest.objects.create(
        tenant=tenant, kind=PrivacyRequest.Kind.ERASURE, contact=contact, contact_ref=contact.pk,
        requested_by=actor.label, completed_at=timezone.now(),
    )  # fmt: skip
    contacts_touched(tenant.pk, [contact.pk])
    audit(tenant=tenant, actor=actor, action="contact.erased", obj=contact)
    return request


def events_apply_retention(*, tenant: Tenant, now: dt.datetime | None = None) -> int:
    """Delete events (and rollup days) older than the tenant's retention period, in batches."""
    cutoff = (now or timezone.now()) - dt.timedelta(days=tenant.event_retention_days)
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(
                Event.objects.filter(tenant=tenant, occurred_at__lt=cutoff).values_list("pk", flat=True)[
                    :RETENTION_BATCH
                ]
            )
            if not ids:
                break
            deleted += Event.objects.filter(tenant=tenant, pk__in=ids).delete()[0]
    EventDailyRollup.objects.filter(tenant=tenant, day__lt=cutoff.date()).delete()
    return deleted
