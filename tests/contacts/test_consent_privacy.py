"""Consent ledger and state, double opt-in, suppression, export, erasure and retention."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from contacts.consent import (
    ConsentEvidence,
    confirmation_token,
    consent_change,
    consent_confirm,
    consent_request_confirmation,
    is_suppressed,
    suppression_add,
)
from contacts.ingest import events_ingest
from contacts.models import ConsentRecord, ConsentState, Contact, Event, EventDailyRollup, PrivacyRequest, Suppression
from contacts.privacy import contact_erase, contact_export, events_apply_retention
from contacts.services import contact_upsert
from tenants.audit import Actor
from tenants.context import tenant_context
from tenants.models import AuditLog
from tests.conftest import World

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("test")
FORM = ConsentEvidence(source="form", wording="Send me offers", wording_version="v3", ip_address="203.0.113.9")


@pytest.fixture
def in_a(world: World):
    with tenant_context(world.tenant_a.id):
        yield world.tenant_a


@pytest.fixture
def person(in_a) -> Contact:
    contact, _ = contact_upsert(tenant=in_a, data={"email": "pat@example.com", "phone": "+33612345678"})
    return contact


def state(contact: Contact, channel: str = "email", purpose: str = "marketing") -> str | None:
    row = ConsentState.objects.filter(contact=contact, channel=channel, purpose=purpose).first()
    return row.status if row else None


def test_the_ledger_only_grows_and_the_state_follows_it(person):
    assert state(person) is None  # never asked
    consent_change(contact=person, channel="email", purpose="marketing", status="granted", evidence=FORM, actor=ACTOR)
    assert state(person) == "granted"
    consent_change(
        contact=person, channel="email", purpose="marketing", status="withdrawn",
        evidence=ConsentEvidence(source="preference_centre"), actor=ACTOR,
    )  # fmt: skip
    assert state(person) == "withdrawn"
    records = list(ConsentRecord.objects.filter(contact=person).order_by("occurred_at"))
    assert [r.status for r in records] == ["granted", "withdrawn"]
    assert (records[0].wording_version, records[0].ip_address, records[0].actor) == ("v3", "203.0.113.9", "test")
    assert AuditLog.objects.filter(action="consent.withdrawn", object_id=str(person.pk)).exists()


def test_an_older_record_arriving_late_does_not_overwrite_the_state(person):
    consent_change(contact=person, channel="sms", purpose="marketing", status="withdrawn", evidence=FORM, actor=ACTOR)
    consent_change(
        contact=person, channel="sms", purpose="marketing", status="granted",
        evidence=ConsentEvidence(source="import"), actor=ACTOR, occurred_at=timezone.now() - dt.timedelta(days=30),
    )  # fmt: skip
    assert state(person, "sms") == "withdrawn"
    assert ConsentRecord.objects.filter(contact=person, channel="sms").count() == 2


def test_bad_consent_input_is_rejected(person):
    with pytest.raises(ValidationError) as error:
        consent_change(
            contact=person, channel="pigeon", purpose="spam", status="maybe",
            evidence=ConsentEvidence(source="rumour", legal_basis="whim"), actor=ACTOR,
        )  # fmt: skip
    assert set(error.value.message_dict) == {"channel", "purpose", "status", "source", "legal_basis"}


def test_double_opt_in_counts_only_once_confirmed(person, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        pending = consent_request_confirmation(contact=person, purpose="newsletter", evidence=FORM, actor=ACTOR)
    # After commit: one confirmation email (and the real-time segment update of contacts_touched).
    emails = [c for c in callbacks if "consent_request_confirmation" in c.__qualname__]
    assert len(emails) == 1 and state(person, purpose="newsletter") == "pending"
    token = confirmation_token(pending, person.email)
    with pytest.raises(ValidationError):
        consent_confirm(token=token[:-3] + "abc", ip_address=None, user_agent="")
    forged = confirmation_token(pending, "attacker@example.com")
    with pytest.raises(ValidationError, match="another address"):
        consent_confirm(token=forged, ip_address=None, user_agent="")
    granted = consent_confirm(token=token, ip_address="198.51.100.7", user_agent="Mail client")
    assert granted.source == "double_opt_in" and granted.ip_address == "198.51.100.7"
    assert state(person, purpose="newsletter") == "granted"
    assert consent_confirm(token=token, ip_address=None, user_agent="").pk == granted.pk  # clicking twice is fine


def test_unsubscribe_suppresses_and_a_reimport_does_not_undo_it(in_a, person):
    consent_change(contact=person, channel="email", purpose="marketing", status="granted", evidence=FORM, actor=ACTOR)
    consent_change(
        contact=person, channel="email", purpose="marketing", status="withdrawn",
        evidence=ConsentEvidence(source="unsubscribe_link"), actor=ACTOR,
    )  # fmt: skip
    assert is_suppressed(tenant=in_a, channel="email", address="pat@example.com")
    consent_change(
        contact=person, channel="email", purpose="marketing", status="granted",
        evidence=ConsentEvidence(source="import"), actor=ACTOR,
    )  # fmt: skip
    assert is_suppressed(tenant=in_a, channel="email", address="pat@example.com")
    # An explicit, confirmed opt-in lifts it.
    consent_change(
        contact=person, channel="email", purpose="marketing", status="granted",
        evidence=ConsentEvidence(source="double_opt_in"), actor=ACTOR,
    )  # fmt: skip
    assert not is_suppressed(tenant=in_a, channel="email", address="pat@example.com")


def test_suppression_is_by_hash_and_idempotent(in_a):
    first = suppression_add(tenant=in_a, channel="email", address="gone@example.com", reason="hard_bounce")
    again = suppression_add(tenant=in_a, channel="email", address="gone@example.com", reason="complaint")
    assert first.pk == again.pk and "gone@example.com" not in first.address_hash
    with pytest.raises(ValidationError):
        suppression_add(tenant=in_a, channel="email", address="x@example.com", reason="boredom")


def test_export_holds_everything_on_the_contact(in_a, person):
    events_ingest(tenant=in_a, events=[{"event": "page_view", "email": "pat@example.com", "properties": {"p": "/"}}])
    consent_change(contact=person, channel="email", purpose="marketing", status="granted", evidence=FORM, actor=ACTOR)
    data = contact_export(contact=person, actor=ACTOR)
    assert data["profile"]["email"] == "pat@example.com"
    assert data["events"][0]["properties"] == {"p": "/"}
    assert data["consent"][0]["wording"] == "Send me offers"
    assert data["lifecycle"] and data["deliveries"] == []
    assert PrivacyRequest.objects.filter(kind="export", contact_ref=person.pk).exists()


def test_erasure_removes_personal_data_and_keeps_them_suppressed(in_a, person):
    events_ingest(
        tenant=in_a, events=[{"event": "purchase", "email": "pat@example.com", "revenue": "9", "properties": {"a": 1}}]
    )
    consent_change(contact=person, channel="email", purpose="marketing", status="granted", evidence=FORM, actor=ACTOR)
    contact_erase(contact=person, actor=ACTOR)
    person.refresh_from_db()
    assert (person.email, person.phone, person.first_name, person.attributes) == ("", "", "", {})
    assert person.erased_at is not None
    assert Event.objects.get(contact=person).properties == {}
    assert not ConsentRecord.objects.filter(contact=person).exists()
    assert is_suppressed(tenant=in_a, channel="email", address="pat@example.com")
    assert is_suppressed(tenant=in_a, channel="sms", address="+33612345678")
    assert PrivacyRequest.objects.filter(kind="erasure", contact_ref=person.pk).exists()
    # Re-created by a later import: a new contact, still suppressed.
    again, created = contact_upsert(tenant=in_a, data={"email": "pat@example.com"})
    assert created and again.pk != person.pk
    assert Suppression.objects.filter(reason="erasure").count() == 3
    assert is_suppressed(tenant=in_a, channel="email", address=again.email)


def test_retention_deletes_old_events_and_rollups(in_a):
    old = (timezone.now() - dt.timedelta(days=800)).isoformat()
    events_ingest(
        tenant=in_a,
        events=[
            {"event": "page_view", "external_id": "r", "occurred_at": old},
            {"event": "page_view", "external_id": "r"},
        ],
    )
    assert events_apply_retention(tenant=in_a) == 1
    assert Event.objects.count() == 1 and EventDailyRollup.objects.count() == 1


def test_the_confirmation_email_carries_a_working_link(in_a, person, settings):
    import re

    from django.core import mail

    from contacts.tasks import send_consent_confirmation

    settings.SITE_URL = "https://app.example"
    in_a.default_sender_email = "news@shop.example"
    in_a.save()
    pending = consent_request_confirmation(contact=person, purpose="newsletter", evidence=FORM, actor=ACTOR)
    send_consent_confirmation(in_a.id, pending.pk)  # what the worker runs after commit
    [message] = mail.outbox
    assert message.to == ["pat@example.com"] and "news@shop.example" in message.from_email
    token = re.search(r"https://app\.example/confirm/([^/\s]+)/", message.body).group(1)
    consent_confirm(token=token, ip_address=None, user_agent="")
    assert state(person, purpose="newsletter") == "granted"
