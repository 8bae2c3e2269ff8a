"""People with and without advertising consent, and a segment of them, built through the services."""

from __future__ import annotations

import csv
import io
from typing import Any

from campaigns.channels.webhook import verify_webhook_signature
from contacts.consent import ConsentEvidence, consent_change
from contacts.models import Contact
from segments.models import Segment
from segments.services import segment_create, static_members_add
from tenants.audit import Actor
from tenants.models import Tenant
from tests.campaigns.test_channels import Received, Reply

ACTOR = Actor.system("test")
API = ConsentEvidence(source="api")
SECRET = "a-long-signing-secret-0123456789"


def allow_advertising(tenant: Tenant) -> None:
    if "advertising" not in tenant.consent_purposes:
        tenant.consent_purposes = [*tenant.consent_purposes, "advertising"]
        tenant.save(update_fields=["consent_purposes"])


def person(
    tenant: Tenant, *, consent: tuple[str, ...] = ("email", "sms"), purpose: str = "advertising", **fields: Any
) -> Contact:
    """A contact with ``fields``; advertising consent granted on each channel in ``consent``."""
    contact = Contact.objects.create(tenant=tenant, **fields)
    for channel in consent:
        consent_change(contact=contact, channel=channel, purpose=purpose, status="granted", evidence=API, actor=ACTOR)
    return contact


def segment_of(tenant: Tenant, contacts: list[Contact], name: str = "Warm leads") -> Segment:
    segment = segment_create(tenant=tenant, actor=ACTOR, name=name, kind=Segment.Kind.STATIC)
    static_members_add(segment=segment, actor=ACTOR, contact_ids=[c.pk for c in contacts])
    segment.refresh_from_db()
    return segment


def parse_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def verified(request: Received, secret: str = SECRET) -> bool:
    """What a receiver does: the signature over the raw body and the timestamp, checked."""
    return verify_webhook_signature(
        secret=secret,
        body=request.body,
        signature=request.headers.get("X-Segmentor-Signature", ""),
        timestamp=request.headers.get("X-Segmentor-Timestamp", ""),
    )


def signed_only(request: Received) -> Reply:
    return Reply(200, b"ok") if verified(request) else Reply(401, b"bad signature")
