"""Every channel end to end through ``deliveries_send``: real SMTP (aiosmtpd), a local HTTP server as
the SMS and push provider and the webhook receiver; rendered content, footers, opt-out headers, the
provider's request shape, and what is recorded."""

# Fixtures shared between these modules are imported by name, which pytest needs and ruff flags.
# ruff: noqa: F811

from __future__ import annotations

import datetime as dt
import email.header
import re
from email.message import Message
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
import time_machine
from django.test import Client

from analytics.tracking import read_click
from campaigns.channels.base import OutgoingEmail, OutgoingPush, OutgoingSms, OutgoingWebhook
from campaigns.channels.email import DjangoEmailBackend
from campaigns.channels.webhook import verify_webhook_signature
from campaigns.models import Campaign, CampaignAudience, ChannelConfig, Delivery, Variant
from campaigns.sending import (
    SMS_STOP_FOOTER,
    ChannelNotConfigured,
    channel_backend,
    deliveries_claim,
    deliveries_send,
    message_build,
    message_id,
    run_start,
)
from contacts.consent import ConsentEvidence, consent_change
from contacts.models import ConsentState, Contact
from segments.models import Segment
from segments.services import segment_create, static_members_add
from tenants.audit import Actor
from tenants.context import tenant_context
from tests.campaigns.test_channels import PUSH_PATH, SMS_PATH, Provider, Reply, fcm_answer, provider  # noqa: F401

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("test")
API = ConsentEvidence(source="api")
SITE = "https://app.segmentor.example"
POSTAL = "Shop & Co GmbH\nHauptstraße 1\n10115 Berlin"


@pytest.fixture
def shop(world, settings):
    settings.SITE_URL = SITE
    tenant = world.tenant_a
    with tenant_context(tenant.id):
        tenant.name = "Shop & Co"
        tenant.default_sender_email = "news@shop.example"
        tenant.postal_address = POSTAL
        tenant.time_zone = "Europe/Berlin"
        tenant.save()
        yield tenant


def subscriber(tenant, name: str, *, channels=("email",), purposes=("marketing",), **fields) -> Contact:
    contact = Contact.objects.create(tenant=tenant, first_name=name.title(), **fields)
    for channel in channels:
        for purpose in purposes:
            consent_change(
                contact=contact, channel=channel, purpose=purpose, status="granted", evidence=API, actor=ACTOR
            )
    return contact


def campaign_for(tenant, contacts: list[Contact], *, channel: str = "email", **fields) -> Campaign:
    segment = segment_create(
        tenant=tenant, actor=ACTOR, name=f"{channel} {Segment.objects.count()}", kind=Segment.Kind.STATIC
    )
    static_members_add(segment=segment, actor=ACTOR, contact_ids=[c.pk for c in contacts])
    campaign = Campaign.objects.create(tenant=tenant, name="Spring sale", channel=channel, **fields)
    CampaignAudience.objects.create(tenant=tenant, campaign=campaign, segment=segment)
    return campaign


def variant_for(campaign: Campaign, **content: Any) -> Variant:
    return Variant.objects.create(tenant=campaign.tenant, campaign=campaign, name="Everyone", **content)


def send_all(campaign: Campaign) -> dict[int, Delivery]:
    run = run_start(campaign=campaign)
    deliveries_send(run=run, ids=deliveries_claim(run=run))
    return {d.contact_id: d for d in Delivery.objects.filter(run=run)}


def body_parts(message: Message) -> dict[str, str]:
    return {
        part.get_content_type(): cast(bytes, part.get_payload(decode=True))
        .decode(part.get_content_charset() or "utf-8")
        .replace("\r\n", "\n")
        for part in message.walk()
        if not part.is_multipart()
    }


def clicked_links(html: str) -> list[tuple[str, bool]]:
    """The URLs (and CTA marks) behind the click-tracking links of a message."""
    tokens = re.findall(r'href="[^"]*/r/c/([^"/]+)/"', html)
    return [(c.url, c.is_cta) for c in map(read_click, tokens) if c is not None]


def unfold(header: str) -> str:
    return header.replace("\r", "").replace("\n", "")


# --- email ---------------------------------------------------------------------------------------
def test_marketing_email_has_preheader_footer_and_one_click_unsubscribe(shop, smtp):
    ann = subscriber(shop, "ann", email="ann@example.com")
    campaign = campaign_for(shop, [ann], sender_name="Shop News", reply_to="help@shop.example")
    variant_for(
        campaign, subject="Hi {{ contact.first_name }}, 20 % off", preheader="Only until {{ 'Sunday' }}",
        html_body='<html><body><p>Hello {{ contact.first_name }}</p><a href="{{ cta.url }}">{{ cta.label }}</a>'
        "</body></html>",
        cta_label="Buy now", cta_url="https://shop.example/sale?c={{ contact.id }}",
    )  # fmt: skip
    rows = send_all(campaign)
    assert rows[ann.pk].status == "sent"

    [message] = smtp.inbox.wait_for(1)
    assert message["Subject"] == "Hi Ann, 20 % off"
    assert str(email.header.make_header(email.header.decode_header(message["From"]))) == (
        "Shop News <news@shop.example>"
    )
    assert message["Reply-To"] == "help@shop.example"
    assert message["Message-ID"] == message_id(rows[ann.pk].pk, shop)
    unsubscribe = unfold(message["List-Unsubscribe"])
    https, mailto = (link.strip(" <>") for link in unsubscribe.split(","))
    assert https.startswith(f"{SITE}/u/") and mailto.startswith("mailto:unsubscribe@shop.example?subject=")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    parts = body_parts(message)
    html, text = parts["text/html"], parts["text/plain"]
    assert html.index("Only until Sunday") < html.index("Hello Ann"), "the preheader comes first"
    assert 'style="display:none' in html.split("Only until Sunday")[0][-400:]
    # Links lead through the signed click redirect (the CTA marked); the opt-out links do not.
    assert clicked_links(html) == [(f"https://shop.example/sale?c={ann.pk}", True)]
    assert f"{SITE}/r/o/" in html, "the open pixel"
    assert "Hauptstraße 1<br>10115 Berlin" in html and "Shop &amp; Co" in html
    assert f'<a href="{https}">Unsubscribe</a>' in html and "/preferences/" in html
    assert html.rstrip().endswith("</body></html>"), "the footer goes inside the body"
    assert "Only until Sunday" not in text, "the preheader is for the inbox list, not the text part"
    assert f"Buy now (https://shop.example/sale?c={ann.pk})" in text
    assert "Hauptstraße 1\n10115 Berlin" in text and f"Unsubscribe: {https}" in text

    # The header's link unsubscribes with one POST, no login (RFC 8058).
    response = Client().post(urlsplit(https).path, {"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    state = ConsentState.objects.get(contact=ann, channel="email", purpose="marketing")
    assert state.status == "withdrawn"


def test_transactional_email_has_no_opt_out_footer(shop, smtp):
    shop.consent_purposes = [*shop.consent_purposes, "transactional"]
    shop.save()
    ann = subscriber(shop, "ann", email="ann@example.com", purposes=["transactional"])
    campaign = campaign_for(shop, [ann], purpose="transactional")
    variant_for(
        campaign, subject="Your receipt", html_body="<p>Thanks</p>", text_body="Thanks, {{ contact.first_name }}"
    )
    send_all(campaign)
    [message] = smtp.inbox.wait_for(1)
    assert message["List-Unsubscribe"] is None
    assert body_parts(message)["text/plain"] == "Thanks, Ann"


def test_a_template_error_fails_only_that_delivery(shop, smtp):
    ann = subscriber(shop, "ann", email="ann@example.com")
    bob = subscriber(shop, "bob", email="bob@example.com", attributes={"items": list(range(2000))})
    campaign = campaign_for(shop, [ann, bob])
    variant_for(
        campaign,
        subject="Hi",
        html_body="{% for i in contact.attributes.items %}{% for j in contact.attributes.items %}x{% endfor %}"
        "{% endfor %}",
    )
    rows = send_all(campaign)
    assert rows[ann.pk].status == "sent"
    assert rows[bob.pk].status == "failed" and rows[bob.pk].error.startswith("Template:")


def test_message_build_for_a_preview_has_a_fresh_message_id_and_the_footer(shop):
    ann = subscriber(shop, "ann", email="ann@example.com")
    campaign = campaign_for(shop, [ann])
    variant = variant_for(campaign, subject="Hi", html_body="<p>Hi</p>")
    first = message_build(campaign=campaign, variant=variant, contact=ann)
    second = message_build(campaign=campaign, variant=variant, contact=ann)
    assert isinstance(first, OutgoingEmail) and isinstance(second, OutgoingEmail)
    assert first.message_id != second.message_id and "@shop.example>" in first.message_id
    assert "Unsubscribe" in first.html and "Unsubscribe:" in first.text and first.unsubscribe_url
    assert "delivery" not in first.metadata


# --- SMS -----------------------------------------------------------------------------------------
def sms_config(tenant, provider: Provider, **settings: Any) -> ChannelConfig:
    return ChannelConfig.objects.create(
        tenant=tenant, channel="sms", backend="twilio", secret="tok-secret",
        settings={
            "base_url": f"{provider.url}/2010-04-01", "account_sid": "AC123", "sender": "+15550001111", **settings
        },
    )  # fmt: skip


def test_sms_goes_to_the_provider_with_the_stop_footer(shop, provider):
    provider.reply(SMS_PATH, Reply.json(201, {"sid": "SM1"}), Reply.json(201, {"sid": "SM2"}))
    sms_config(shop, provider)
    ann = subscriber(shop, "ann", channels=["sms"], phone="+4915112345678", time_zone="America/New_York")
    bob = subscriber(shop, "bob", channels=["sms"], phone="+447700900123", time_zone="America/New_York")
    campaign = campaign_for(shop, [ann, bob], channel="sms", sms_sender="ShopCo")
    variant_for(
        campaign, sms_body="Hi {{ contact.first_name }}, 20% off today: {{ cta.url }}", cta_url="https://s.example/x"
    )
    with time_machine.travel(dt.datetime(2026, 6, 10, 16, 0, tzinfo=dt.UTC)):  # noon in New York
        rows = send_all(campaign)
    assert {rows[c.pk].status for c in (ann, bob)} == {"sent"}
    assert {rows[ann.pk].provider_message_id, rows[bob.pk].provider_message_id} == {"SM1", "SM2"}
    forms = {parse_qs(r.body.decode())["To"][0]: parse_qs(r.body.decode()) for r in provider.requests}
    assert forms["+4915112345678"] == {
        "To": ["+4915112345678"], "From": ["ShopCo"],
        "Body": [f"Hi Ann, 20% off today: https://s.example/x\n{SMS_STOP_FOOTER}"],
    }  # fmt: skip
    assert provider.requests[0].headers["Authorization"].startswith("Basic ")


def test_sms_sender_falls_back_to_the_channel_config(shop, provider):
    sms_config(shop, provider, sender="+15550009999")
    ann = subscriber(shop, "ann", channels=["sms"], phone="+4915112345678")
    campaign = campaign_for(shop, [ann], channel="sms")
    variant = variant_for(campaign, sms_body="Reply STOP to end. Hi!")
    message = message_build(campaign=campaign, variant=variant, contact=ann)
    assert isinstance(message, OutgoingSms)
    assert message.sender == "+15550009999"
    assert message.text == "Reply STOP to end. Hi!", "no second STOP line when the text has one"


def test_sms_without_a_provider_fails_with_a_clear_error(shop):
    ann = subscriber(shop, "ann", channels=["sms"], phone="+4915112345678")
    campaign = campaign_for(shop, [ann], channel="sms")
    variant_for(campaign, sms_body="Hi")
    with time_machine.travel(dt.datetime(2026, 6, 10, 10, 0, tzinfo=dt.UTC)):
        rows = send_all(campaign)
    assert rows[ann.pk].status == "failed"
    assert "No SMS provider is set up" in rows[ann.pk].error


def test_sms_with_an_incomplete_provider_fails_with_what_is_missing(shop, provider):
    ChannelConfig.objects.create(tenant=shop, channel="sms", backend="twilio", secret="x", settings={})
    ann = subscriber(shop, "ann", channels=["sms"], phone="+4915112345678")
    campaign = campaign_for(shop, [ann], channel="sms")
    variant_for(campaign, sms_body="Hi")
    with time_machine.travel(dt.datetime(2026, 6, 10, 10, 0, tzinfo=dt.UTC)):
        rows = send_all(campaign)
    assert rows[ann.pk].status == "failed" and "account_sid" in rows[ann.pk].error
    assert provider.requests == []


# --- push ----------------------------------------------------------------------------------------
def test_push_goes_to_every_device_token_and_forgets_unregistered_ones(shop, provider):
    provider.route(PUSH_PATH, fcm_answer)
    ChannelConfig.objects.create(
        tenant=shop, channel="push", backend="fcm", secret="srv-key",
        settings={"base_url": f"{provider.url}/v1/projects/demo"},
    )  # fmt: skip
    ann = subscriber(shop, "ann", channels=["push"], push_tokens=["phone", "gone-tablet"])
    nobody = subscriber(shop, "nobody", channels=["push"])
    campaign = campaign_for(shop, [ann, nobody], channel="push")
    variant_for(
        campaign, push_title="Hi {{ contact.first_name }}", push_body="Your cart misses you",
        push_deep_link="shop://cart?c={{ contact.id }}",
    )  # fmt: skip
    with time_machine.travel(dt.datetime(2026, 6, 10, 10, 0, tzinfo=dt.UTC)):
        rows = send_all(campaign)
    assert (rows[ann.pk].status, rows[ann.pk].provider_message_id) == ("sent", "projects/demo/messages/phone-1")
    assert (rows[nobody.pk].status, rows[nobody.pk].skip_reason) == ("skipped", "no_address")
    bodies = [orjson.loads(r.body)["message"] for r in provider.requests]
    assert [b["token"] for b in bodies] == ["phone", "gone-tablet"]
    assert bodies[0]["notification"] == {"title": "Hi Ann", "body": "Your cart misses you"}
    assert bodies[0]["data"]["deep_link"] == f"shop://cart?c={ann.pk}"
    assert bodies[0]["data"]["delivery"] == str(rows[ann.pk].pk)
    assert provider.requests[0].headers["Authorization"] == "Bearer srv-key"
    ann.refresh_from_db()
    assert ann.push_tokens == ["phone"]


def test_push_message_build_lists_the_tokens(shop):
    ann = subscriber(shop, "ann", channels=["push"], push_tokens=["a", "b", "a"])
    campaign = campaign_for(shop, [ann], channel="push")
    message = message_build(campaign=campaign, variant=variant_for(campaign, push_title="T"), contact=ann)
    assert isinstance(message, OutgoingPush) and message.tokens == ("a", "b")


# --- webhook -------------------------------------------------------------------------------------
def test_webhook_posts_the_rendered_json_signed(shop, provider):
    provider.reply("/hooks/in", Reply(204))
    ChannelConfig.objects.create(tenant=shop, channel="webhook", backend="webhook", secret="whsec-1")
    ann = subscriber(shop, "ann", channels=[], email="ann@example.com")
    campaign = campaign_for(shop, [ann], channel="webhook", webhook_url=f"{provider.url}/hooks/in")
    variant_for(campaign, webhook_payload='{"who": "{{ contact.first_name }}", "email": "{{ contact.email }}", "n": 1}')
    rows = send_all(campaign)
    assert rows[ann.pk].status == "sent"
    [request] = provider.requests
    assert orjson.loads(request.body) == {"who": "Ann", "email": "ann@example.com", "n": 1}
    assert request.headers["X-Segmentor-Delivery"] == str(rows[ann.pk].pk)
    assert verify_webhook_signature(
        secret="whsec-1", body=request.body, signature=request.headers["X-Segmentor-Signature"],
        timestamp=request.headers["X-Segmentor-Timestamp"],
    )  # fmt: skip
    assert not verify_webhook_signature(
        secret="another", body=request.body, signature=request.headers["X-Segmentor-Signature"],
        timestamp=request.headers["X-Segmentor-Timestamp"],
    )  # fmt: skip


def test_webhook_default_document_and_invalid_json(shop):
    ChannelConfig.objects.create(tenant=shop, channel="webhook", backend="webhook", secret="whsec-1")
    ann = subscriber(shop, "ann", channels=[], email="ann@example.com")
    campaign = campaign_for(shop, [ann], channel="webhook", webhook_url="https://hooks.example/in")
    variant = variant_for(campaign, cta_label="Go")
    message = message_build(campaign=campaign, variant=variant, contact=ann, delivery_id=77)
    assert isinstance(message, OutgoingWebhook)
    assert message.payload["delivery_id"] == 77 and message.payload["campaign"]["id"] == campaign.pk
    assert message.payload["contact"]["id"] == ann.pk and message.payload["contact"]["first_name"] == "Ann"
    assert message.secret == "whsec-1" and message.delivery_id == "77"
    variant.webhook_payload = '{"name": "{{ contact.first_name }}'
    variant.save()
    rows = send_all(campaign)
    assert rows[ann.pk].status == "failed" and "not valid JSON" in rows[ann.pk].error


# --- backends ------------------------------------------------------------------------------------
def test_channel_backend_follows_the_tenants_configuration(shop, settings, tmp_path):
    settings.VAR_DIR = tmp_path
    assert isinstance(channel_backend(tenant=shop, channel="email"), DjangoEmailBackend)
    for channel in ("sms", "push", "webhook"):
        with pytest.raises(ChannelNotConfigured, match="Settings → Channels"):
            channel_backend(tenant=shop, channel=channel)
    smtp_config = ChannelConfig.objects.create(
        tenant=shop, channel="email", backend="django_email", secret="pw",
        settings={"host": "smtp.shop.example", "port": 2525, "username": "news"},
    )  # fmt: skip
    backend = channel_backend(tenant=shop, channel="email")
    assert isinstance(backend, DjangoEmailBackend)
    assert backend.options | {"timeout": None} == {
        "host": "smtp.shop.example", "port": 2525, "username": "news", "password": "pw", "use_tls": True,
        "use_ssl": False, "timeout": None,
    }  # fmt: skip
    smtp_config.settings = {"esp": "../../etc"}
    smtp_config.save()
    with pytest.raises(ChannelNotConfigured, match="Unknown email service"):
        channel_backend(tenant=shop, channel="email")
    ChannelConfig.objects.create(tenant=shop, channel="push", backend="twilio", settings={"base_url": "x"})
    with pytest.raises(ChannelNotConfigured, match="cannot send Push"):
        channel_backend(tenant=shop, channel="push")
    ChannelConfig.objects.create(tenant=shop, channel="webhook", backend="webhook")
    with pytest.raises(ChannelNotConfigured, match="signing secret"):
        channel_backend(tenant=shop, channel="webhook")
    ChannelConfig.objects.create(tenant=shop, channel="sms", backend="file")
    ann = subscriber(shop, "ann", channels=["sms"], phone="+4915112345678")
    campaign = campaign_for(shop, [ann], channel="sms")
    variant_for(campaign, sms_body="Hi {{ contact.first_name }}")
    with time_machine.travel(dt.datetime(2026, 6, 10, 10, 0, tzinfo=dt.UTC)):
        rows = send_all(campaign)
    assert rows[ann.pk].status == "sent"
    [written] = (tmp_path / "outbox" / shop.slug / "sms").glob("*.jsonl")
    assert orjson.loads(written.read_bytes())["text"] == f"Hi Ann\n{SMS_STOP_FOOTER}"
