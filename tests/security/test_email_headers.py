"""Line breaks and address syntax in names and subjects never make a header, a recipient or a sender.

Sender names, the workspace's name, subjects and the contact's own fields are free text, and
a template puts contact fields into the subject. Each message is sent to a real SMTP server
(aiosmtpd) and read back as a mail client would: one recipient in the envelope, one mailbox
in From (the configured address), no Bcc or Cc, a subject on one line. The same for the
emails the platform sends for a workspace (double opt-in, invitations).
"""

from __future__ import annotations

import email
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from rest_framework.test import APIClient

from campaigns.models import Campaign, CampaignAudience, Delivery, Variant
from campaigns.sending import deliveries_claim, deliveries_send, run_start
from contacts.consent import ConsentEvidence, consent_change
from contacts.models import Contact
from contacts.tasks import send_consent_confirmation
from segments.services import segment_create, static_members_add
from tenants.audit import Actor
from tenants.context import tenant_context
from tenants.models import Invitation, Tenant
from tenants.tasks import send_invitation
from tests.conftest import World
from tests.mail import free_port

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("test")
VICTIM = "victim@evil.example"
BREAK = f"\r\nBcc: {VICTIM}\r\nX-Injected: yes\r\n\r\n<h1>body</h1>"
EXPECTED_HEADERS = {
    "from", "to", "subject", "date", "mime-version", "reply-to", "message-id", "list-unsubscribe",
    "list-unsubscribe-post", "content-type", "content-transfer-encoding", "x-mailer", "x-segmentor-delivery",
}  # fmt: skip
HOSTILE_NAMES = [
    f"Shop, Inc.{BREAK}",
    f'"The Shop" <ceo@bank.example>, {VICTIM}',
    f"ceo@bank.example\n{VICTIM}",
    'Back\\slash "quote" (comment) <angle> ;semi: ',
    "Ünïcödé, GmbH\rCc: cc@evil.example",
]


class Envelopes:
    """aiosmtpd handler: keeps each message with its envelope."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=policy.default)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"


@pytest.fixture
def sink(settings) -> Iterator[Envelopes]:
    handler = Envelopes()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_USE_TLS, settings.EMAIL_USE_SSL = (
        "127.0.0.1",
        port,
        False,
        False,
    )
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    yield handler
    controller.stop()


def assert_one_clean_message(received: tuple[str, list[str], EmailMessage], *, to: str, sender: str) -> EmailMessage:
    mail_from, rcpt_tos, message = received
    assert rcpt_tos == [to] and mail_from == sender
    assert "Bcc" not in message and "Cc" not in message and "X-Injected" not in message
    [mailbox] = message["From"].addresses
    assert mailbox.addr_spec == sender
    [recipient] = message["To"].addresses
    assert recipient.addr_spec == to
    assert "\n" not in str(message["Subject"]) and "\r" not in str(message["Subject"])
    addresses = {a.addr_spec for name in ("From", "To", "Reply-To") for a in getattr(message[name], "addresses", ())}
    assert VICTIM not in addresses
    # Header names as a mail client reads them from the bytes: injected lines would be headers here.
    assert {name.lower() for name in message} <= EXPECTED_HEADERS, message.keys()
    return message


def subscriber(tenant: Tenant, address: str, **fields: Any) -> Contact:
    contact = Contact.objects.create(tenant=tenant, email=address, **fields)
    consent_change(
        contact=contact, channel="email", purpose="marketing", status="granted",
        evidence=ConsentEvidence(source="api"), actor=ACTOR,
    )  # fmt: skip
    return contact


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_campaign_with_hostile_names_and_subjects_sends_one_clean_message_each(world: World, sink, name: str):
    tenant = world.tenant_a
    with tenant_context(tenant.id):
        Tenant.objects.filter(pk=tenant.pk).update(name=name, default_sender_email="news@shop.example")
        tenant.refresh_from_db()
        people = [
            subscriber(tenant, "ann@example.com", first_name=f"Ann{BREAK}", last_name=name),
            subscriber(tenant, "bob@example.com", first_name=name),
        ]
        segment = segment_create(tenant=tenant, actor=ACTOR, name="All", kind="static")
        static_members_add(segment=segment, actor=ACTOR, contact_ids=[p.pk for p in people])
        # Written past the forms, as data that arrived by any path: the sender's name is the tenant's.
        campaign = Campaign.objects.create(tenant=tenant, name="Spring", sender_name="", reply_to="help@shop.example")
        CampaignAudience.objects.create(tenant=tenant, campaign=campaign, segment=segment)
        Variant.objects.create(
            tenant=tenant, campaign=campaign, name="All", position=0,
            subject=f"Hi {{{{ contact.first_name }}}} {{{{ contact.last_name }}}}{BREAK}",
            preheader="{{ contact.first_name }}", html_body="<p>Hi {{ contact.first_name }}</p>",
        )  # fmt: skip
        run = run_start(campaign=campaign)
        deliveries_send(run=run, ids=deliveries_claim(run=run))
        assert set(Delivery.objects.filter(run=run).values_list("status", flat=True)) == {"sent"}
    assert len(sink.received) == 2
    for received, person in zip(sorted(sink.received, key=lambda r: r[1]), people, strict=True):
        message = assert_one_clean_message(received, to=person.email, sender="news@shop.example")
        assert message["Reply-To"].addresses[0].addr_spec == "help@shop.example"
        assert message["From"].addresses[0].display_name == " ".join(name.split())


def test_a_contact_address_with_a_line_break_fails_alone(world: World, sink):
    tenant = world.tenant_a
    with tenant_context(tenant.id):
        good = subscriber(tenant, "ann@example.com", first_name="Ann")
        bad = subscriber(tenant, "bob@example.com", first_name="Bob")
        Contact.objects.filter(pk=bad.pk).update(email=f"bob@example.com{BREAK}")
        segment = segment_create(tenant=tenant, actor=ACTOR, name="All", kind="static")
        static_members_add(segment=segment, actor=ACTOR, contact_ids=[good.pk, bad.pk])
        campaign = Campaign.objects.create(
            tenant=tenant, name="x", sender_name="Shop", sender_email="news@shop.example"
        )
        CampaignAudience.objects.create(tenant=tenant, campaign=campaign, segment=segment)
        Variant.objects.create(tenant=tenant, campaign=campaign, name="All", subject="Hi", html_body="<p>Hi</p>")
        run = run_start(campaign=campaign)
        deliveries_send(run=run, ids=deliveries_claim(run=run))
        status = dict(Delivery.objects.filter(run=run).values_list("contact_id", "status"))
    assert status == {good.pk: "sent", bad.pk: "failed"}
    [received] = sink.received
    assert_one_clean_message(received, to="ann@example.com", sender="news@shop.example")


def test_addresses_with_line_breaks_are_refused_when_saved_and_at_test_send(world: World, api_a: APIClient):
    for field in ("reply_to", "sender_email"):
        response = api_a.post("/api/v1/campaigns/", {"name": "x", field: f"a@shop.example{BREAK}"}, format="json")
        assert response.status_code == 400 and field in response.json()["error"]["fields"], field
    with tenant_context(world.tenant_a.id):
        ann = Contact.objects.create(tenant=world.tenant_a, email="ann@example.com")
    campaign = api_a.post(
        "/api/v1/campaigns/",
        {"name": "x", "variants": [{"name": "All", "target": "default", "subject": "Hi", "html_body": "<p>x</p>"}]},
        format="json",
    ).json()
    response = api_a.post(
        f"/api/v1/campaigns/{campaign['id']}/send-test/", {"contact_id": ann.pk, "to": f"me@shop.example{BREAK}"},
        format="json",
    )  # fmt: skip
    assert response.status_code == 400 and "to" in response.json()["error"]["fields"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_the_double_opt_in_email_of_a_workspace_with_a_hostile_name(world: World, sink, name: str):
    tenant = world.tenant_a
    with tenant_context(tenant.id):
        Tenant.objects.filter(pk=tenant.pk).update(name=name, default_sender_email="hello@shop.example")
        contact = Contact.objects.create(tenant=tenant, email="ann@example.com")
        record = consent_change(
            contact=contact, channel="email", purpose="marketing", status="pending",
            evidence=ConsentEvidence(source="form"), actor=ACTOR,
        )  # fmt: skip
    send_consent_confirmation(tenant.id, record.pk)
    [received] = sink.received
    message = assert_one_clean_message(received, to="ann@example.com", sender="hello@shop.example")
    assert message["From"].addresses[0].display_name == " ".join(name.split())


def test_the_invitation_email_of_a_workspace_with_a_hostile_name(world: World, sink, settings):
    settings.DEFAULT_FROM_EMAIL = "Segmentor <no-reply@segmentor.example>"
    tenant = world.tenant_a
    with tenant_context(tenant.id):
        Tenant.objects.filter(pk=tenant.pk).update(name=HOSTILE_NAMES[0])
        invitation = Invitation.objects.create(tenant=tenant, email="new@example.com", role="viewer")
    send_invitation(tenant.id, invitation.pk)
    [received] = sink.received
    assert_one_clean_message(received, to="new@example.com", sender="no-reply@segmentor.example")
