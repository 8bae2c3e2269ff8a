"""Delivery feedback through real HTTP requests: ESP webhooks (anymail), the generic endpoint, Twilio SMS."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from campaigns.channels.webhook import webhook_signature
from campaigns.feedback import feedback_record, sms_keyword
from campaigns.models import Campaign, CampaignAudience, ChannelConfig, Delivery, DeliveryFeedback, Variant
from campaigns.sending import deliveries_claim, deliveries_send, run_start
from campaigns.views_feedback import twilio_signature
from contacts.consent import ConsentEvidence, consent_change, suppression_add
from contacts.models import ConsentRecord, ConsentState, Contact, Suppression
from contacts.normalize import address_hash
from segments.services import segment_create, segment_refresh
from tenants.audit import Actor
from tenants.context import tenant_context
from tenants.models import Tenant
from tests.conftest import World

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("test")
FORM = "application/x-www-form-urlencoded"
HOOK_SECRET = {"a": "whsec-tenant-a", "b": "whsec-tenant-b"}
SMS_TOKEN = {"a": "twilio-token-a", "b": "twilio-token-b"}
ANYMAIL_AUTH = "esp:webhook-password"
MAILGUN_KEY = "mailgun-signing-key"


# --- fixtures and helpers ------------------------------------------------------------------------
def person(tenant: Tenant, email: str, phone: str = "") -> Contact:
    contact = Contact.objects.create(tenant=tenant, email=email, phone=phone, first_name=email.split("@")[0].title())
    channels = ("email", "sms") if phone else ("email",)
    for channel in channels:
        for purpose in ("marketing", "newsletter"):
            consent_change(
                contact=contact, channel=channel, purpose=purpose, status="granted",
                evidence=ConsentEvidence(source="form"), actor=ACTOR,
            )  # fmt: skip
    return contact


def configure(tenant: Tenant, key: str) -> None:
    with tenant_context(tenant.id):
        ChannelConfig.objects.create(tenant=tenant, channel="webhook", backend="webhook", secret=HOOK_SECRET[key])
        ChannelConfig.objects.create(
            tenant=tenant, channel="sms", backend="twilio", settings={"account_sid": "AC1"}, secret=SMS_TOKEN[key]
        )


@pytest.fixture
def shop(world: World) -> dict[str, Any]:
    """Tenant A with Ann and Ben, a marketing email campaign and one sent run; tenant B with Bea."""
    a, b = world.tenant_a, world.tenant_b
    configure(a, "a")
    configure(b, "b")
    with tenant_context(a.id):
        a.default_sender_email = "news@shop.example"
        a.save()
        ann = person(a, "ann@example.com", "+33612345678")
        ben = person(a, "ben@example.com", "+33612345679")
        everyone = segment_create(
            tenant=a, actor=ACTOR, name="Everyone", rules={"all": [{"type": "field", "field": "email", "op": "is_set"}]}
        )
        segment_refresh(segment=everyone)
        campaign = Campaign.objects.create(tenant=a, name="Sale", sender_name="Shop")
        CampaignAudience.objects.create(tenant=a, campaign=campaign, segment=everyone)
        Variant.objects.create(tenant=a, campaign=campaign, name="All", subject="Hi", html_body="<p>Hi</p>")
    with tenant_context(b.id):
        # Tenant B has a contact at Ann's address: nothing sent to tenant A may touch her.
        bea = person(b, "ann@example.com", "+33612345678")
    return {"a": a, "b": b, "ann": ann, "ben": ben, "bea": bea, "campaign": campaign}


def send_run(campaign: Campaign) -> dict[str, Delivery]:
    """Start a run, send it, and return its deliveries by first name."""
    with tenant_context(campaign.tenant_id):
        run = run_start(campaign=campaign)
        deliveries_send(run=run, ids=deliveries_claim(run=run))
        rows = Delivery.objects.filter(run=run).select_related("contact")
        return {d.contact.email.split("@")[0]: d for d in rows}


def hook_url(tenant: Tenant) -> str:
    return reverse("hooks_feedback", kwargs={"slug": tenant.slug})


def post_events(tenant: Tenant, events: Any, secret: str | None = None, **headers: str) -> Any:
    body = events if isinstance(events, (bytes, str)) else json.dumps(events)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret}"} if secret else {}
    return Client().post(hook_url(tenant), body, content_type="application/json", **auth, **headers)


def suppression(tenant: Tenant, channel: str, address: str) -> Suppression | None:
    with tenant_context(tenant.id):
        return Suppression.objects.filter(channel=channel, address_hash=address_hash(channel, address)).first()


def consent(contact: Contact, channel: str = "email", purpose: str = "marketing") -> str:
    with tenant_context(contact.tenant_id):
        return ConsentState.objects.get(contact=contact, channel=channel, purpose=purpose).status


def ledger(contact: Contact) -> list[ConsentRecord]:
    with tenant_context(contact.tenant_id):
        return list(ConsentRecord.objects.filter(contact=contact).order_by("id"))


def feedback_rows(tenant: Tenant) -> list[DeliveryFeedback]:
    with tenant_context(tenant.id):
        return list(DeliveryFeedback.objects.order_by("id"))


def iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# --- the generic endpoint --------------------------------------------------------------------------
def test_a_hard_bounce_suppresses_the_address_and_the_next_send_skips_it(shop, smtp):
    first = send_run(shop["campaign"])
    assert {d.status for d in first.values()} == {"sent"}
    assert {m["To"] for m in smtp.inbox.wait_for(2)} == {"ann@example.com", "ben@example.com"}
    event = {
        "type": "bounce_hard", "email": " Ann@Example.com ", "id": "evt-1", "provider": "relay",
        "occurred_at": iso(timezone.now()), "delivery": first["ann"].pk, "reason": "550 5.1.1 no such user",
    }  # fmt: skip

    response = post_events(shop["a"], [event], HOOK_SECRET["a"])

    assert response.status_code == 200, response.content
    assert response.json()["counts"] == {"recorded": 1, "duplicate": 0, "error": 0}
    row = feedback_rows(shop["a"])[0]
    assert (row.kind, row.delivery_id, row.contact_id) == ("bounce_hard", first["ann"].pk, shop["ann"].pk)
    assert "550 5.1.1" in row.detail
    assert suppression(shop["a"], "email", "ann@example.com").reason == "hard_bounce"
    second = send_run(shop["campaign"])
    assert (second["ann"].status, second["ann"].skip_reason) == ("skipped", "suppressed")
    assert second["ben"].status == "sent"
    # Tenant B's contact at the same address is untouched.
    assert suppression(shop["b"], "email", "ann@example.com") is None


def test_the_third_soft_bounce_within_30_days_suppresses(shop):
    now = timezone.now()

    def soft(n: int, days_ago: int) -> dict[str, Any]:
        return {"type": "soft_bounce", "email": "ben@example.com", "id": f"soft-{n}",
                "occurred_at": iso(now - dt.timedelta(days=days_ago))}  # fmt: skip

    # One 40 days ago is outside the window, and a delivery in between resets the count.
    events = [soft(1, 40), soft(2, 20), {"type": "delivered", "email": "ben@example.com", "id": "ok-1",
              "occurred_at": iso(now - dt.timedelta(days=15))}, soft(3, 10), soft(4, 5)]  # fmt: skip
    assert post_events(shop["a"], events, HOOK_SECRET["a"]).status_code == 200
    assert suppression(shop["a"], "email", "ben@example.com") is None

    assert post_events(shop["a"], [soft(5, 1)], HOOK_SECRET["a"]).status_code == 200

    row = suppression(shop["a"], "email", "ben@example.com")
    assert row is not None and row.reason == "hard_bounce" and "3 soft bounces" in row.note
    assert consent(shop["ben"]) == "granted"  # a bounce says nothing about consent


def test_a_repeated_event_is_a_no_op(shop):
    event = {"type": "complaint", "email": "ann@example.com", "id": "fbl-9", "provider": "relay"}
    before = len(ledger(shop["ann"]))

    first = post_events(shop["a"], [event], HOOK_SECRET["a"])
    again = post_events(shop["a"], [event, event], HOOK_SECRET["a"])

    assert first.json()["counts"]["recorded"] == 1
    assert again.status_code == 200 and again.json()["counts"] == {"recorded": 0, "duplicate": 2, "error": 0}
    assert len(feedback_rows(shop["a"])) == 1
    assert len(ledger(shop["ann"])) == before + 1


def test_valid_events_apply_and_bad_ones_get_a_field_and_a_reason(shop):
    events = [
        {"type": "hard_bounce", "email": "ben@example.com", "id": "ok"},
        {"type": "hard_bounce", "email": "not an address", "id": "e1"},
        {"type": "bounce_hard", "email": "ann@example.com"},
        {"type": "exploded", "email": "ann@example.com", "id": "e3"},
        {"type": "complaint", "email": "ann@example.com", "phone": "+33612345678", "id": "e4"},
        {"type": "stop", "email": "ann@example.com", "id": "e5"},
        {"type": "delivered", "email": "ann@example.com", "id": "e6", "occurred_at": "yesterday"},
        {"type": "delivered", "email": "ann@example.com", "id": "e7", "delivery": "x1"},
        "just a string",
    ]
    response = post_events(shop["a"], {"events": events}, HOOK_SECRET["a"])

    assert response.status_code == 400
    body = response.json()
    assert body["counts"] == {"recorded": 1, "duplicate": 0, "error": 8}
    errors = {r["index"]: r.get("errors", {}) for r in body["results"]}
    assert errors[0] == {} and body["results"][0]["status"] == "recorded"
    assert set(errors[1]) == {"email"}
    assert set(errors[2]) == {"id"}
    assert set(errors[3]) == {"type"} and "exploded" in errors[3]["type"][0]
    assert set(errors[4]) == {"email"}
    assert set(errors[5]) == {"type"}
    assert set(errors[6]) == {"occurred_at"}
    assert set(errors[7]) == {"delivery"}
    assert set(errors[8]) == {"event"}
    # The good one is applied, the bad ones changed nothing.
    assert suppression(shop["a"], "email", "ben@example.com").reason == "hard_bounce"
    assert suppression(shop["a"], "email", "ann@example.com") is None
    assert len(feedback_rows(shop["a"])) == 1


def test_a_complaint_withdraws_consent_with_evidence_and_suppresses(shop):
    sent = send_run(shop["campaign"])
    # A hard bounce suppression that staff could lift must not hide the complaint.
    with tenant_context(shop["a"].id):
        suppression_add(tenant=shop["a"], channel="email", address="ann@example.com", reason="hard_bounce")
    event = {"type": "complaint", "email": "ann@example.com", "id": "fbl-1", "provider": "relay",
             "delivery": str(sent["ann"].pk)}  # fmt: skip

    assert post_events(shop["a"], [event], HOOK_SECRET["a"]).status_code == 200

    assert consent(shop["ann"]) == "withdrawn"
    assert consent(shop["ann"], purpose="newsletter") == "granted"  # only the campaign's purpose
    record = ledger(shop["ann"])[-1]
    assert (record.channel, record.purpose, record.status) == ("email", "marketing", "withdrawn")
    assert "spam" in record.wording and "relay" in record.wording and "relay" in record.actor
    assert suppression(shop["a"], "email", "ann@example.com").reason == "complaint"
    assert consent(shop["bea"]) == "granted"


def test_an_unsubscribe_at_the_provider_is_an_unsubscribe(shop):
    event = {"type": "unsubscribe", "email": "ben@example.com", "id": "u-1", "provider": "relay"}
    assert post_events(shop["a"], [event], HOOK_SECRET["a"]).status_code == 200
    assert consent(shop["ben"]) == "withdrawn"
    assert ledger(shop["ben"])[-1].source == "unsubscribe_link"
    assert suppression(shop["a"], "email", "ben@example.com").reason == "unsubscribe"


def test_the_generic_endpoint_takes_a_signed_body_and_refuses_bad_credentials(shop):
    events = json.dumps([{"type": "hard_bounce", "email": "ben@example.com", "id": "sig-1"}]).encode()
    now = int(time.time())

    def signed(secret: str, timestamp: int) -> dict[str, str]:
        return {"HTTP_X_SEGMENTOR_SIGNATURE": webhook_signature(secret=secret, timestamp=timestamp, body=events),
                "HTTP_X_SEGMENTOR_TIMESTAMP": str(timestamp)}  # fmt: skip

    assert post_events(shop["a"], events).status_code == 401
    assert post_events(shop["a"], events, "wrong").status_code == 403
    assert post_events(shop["a"], events, HOOK_SECRET["b"]).status_code == 403  # B's secret on A's slug
    assert post_events(shop["b"], events, HOOK_SECRET["a"]).status_code == 403  # A's secret on B's slug
    unknown = Tenant(slug="no-such-workspace")
    assert post_events(unknown, events, HOOK_SECRET["a"]).status_code == 403
    assert post_events(shop["a"], events, **signed(HOOK_SECRET["b"], now)).status_code == 403
    assert post_events(shop["a"], events, **signed(HOOK_SECRET["a"], now - 3600)).status_code == 403  # replayed
    assert post_events(shop["a"], events, HTTP_AUTHORIZATION=f"Basic {HOOK_SECRET['a']}").status_code == 403
    assert feedback_rows(shop["a"]) == [] and feedback_rows(shop["b"]) == []

    assert post_events(shop["a"], events, **signed(HOOK_SECRET["a"], now)).status_code == 200
    assert suppression(shop["a"], "email", "ben@example.com") is not None


def test_a_workspace_without_a_webhook_secret_accepts_nothing(shop):
    with tenant_context(shop["a"].id):
        ChannelConfig.objects.filter(channel="webhook").update(secret="")
    response = post_events(shop["a"], [{"type": "hard_bounce", "email": "ben@example.com", "id": "x"}], "")
    assert response.status_code == 401
    assert post_events(shop["a"], "[]", "anything").status_code == 403


def test_tenant_a_hook_never_touches_tenant_b(shop):
    with tenant_context(shop["b"].id):
        campaign_b = Campaign.objects.create(tenant=shop["b"], name="B sale")
        segment = segment_create(
            tenant=shop["b"], actor=ACTOR, name="All B",
            rules={"all": [{"type": "field", "field": "email", "op": "is_set"}]},
        )  # fmt: skip
        segment_refresh(segment=segment)
        CampaignAudience.objects.create(tenant=shop["b"], campaign=campaign_b, segment=segment)
        Variant.objects.create(tenant=shop["b"], campaign=campaign_b, name="All", subject="B", html_body="<p>B</p>")
        b_delivery = Delivery.objects.get(run=run_start(campaign=campaign_b))
    events = [
        # Tenant B's delivery id under tenant A's hook: not linked, nothing in B.
        {"type": "complaint", "email": "someone@else.example", "id": "x-1", "delivery": b_delivery.pk},
        # Ann's address and number, which tenant B's Bea has too: only tenant A's Ann is affected.
        {"type": "complaint", "email": "ann@example.com", "id": "x-2"},
        {"type": "stop", "phone": "+33612345678", "id": "x-3"},
    ]
    response = post_events(shop["a"], events, HOOK_SECRET["a"])

    assert response.status_code == 200, response.content
    rows = feedback_rows(shop["a"])
    assert rows[0].delivery_id is None and rows[0].contact_id is None
    assert consent(shop["ann"]) == "withdrawn" and consent(shop["ann"], "sms") == "withdrawn"
    assert consent(shop["bea"]) == "granted" and consent(shop["bea"], "sms") == "granted"
    assert suppression(shop["b"], "email", "ann@example.com") is None
    assert suppression(shop["b"], "sms", "+33612345678") is None
    assert feedback_rows(shop["b"]) == []
    with tenant_context(shop["b"].id):
        assert len(ConsentRecord.objects.filter(contact=shop["bea"])) == 4  # the four grants of the fixture


def test_garbage_gets_a_4xx_never_a_500(shop, settings):
    secret = HOOK_SECRET["a"]
    garbage: list[Any] = [
        b"", b"not json", b"\xff\xfe\x00", b'"a string"', b"42", b"null", b'{"events": "nope"}', b"{}",
        b"[" * 5000, json.dumps([[1, 2]]), json.dumps([{"type": 7, "email": ["x"], "id": {"a": 1}}]),
        json.dumps([{"type": "hard_bounce", "email": "a\u0000b@example.com", "id": "nul\u0000"}]),
        json.dumps([{"type": "hard_bounce", "email": "x@example.com", "id": "i" * 300, "provider": "p" * 80}]),
        json.dumps([{"type": "hard_bounce", "phone": "+1", "id": "p1"}]),
        json.dumps([{"type": "hard_bounce", "email": "x@example.com", "id": "d", "delivery": "9" * 40}]),
        json.dumps([{"type": "hard_bounce", "email": "x@example.com", "id": "t", "occurred_at": "2026-13-45T99:99Z"}]),
        json.dumps([{"type": "hard_bounce", "email": "x@example.com", "id": True}]),
        json.dumps([{}] * 1001),
    ]  # fmt: skip
    for body in garbage:
        response = post_events(shop["a"], body, secret)
        assert 400 <= response.status_code < 500, (body[:60], response.status_code, response.content[:200])
    # A NUL inside a provider's payload is dropped, the event kept.
    nul = [{"type": "delivered", "email": "ben@example.com", "id": "n1", "reason": "ok\u0000", "extra": "a\u0000"}]
    assert post_events(shop["a"], nul, secret).status_code == 200
    # Oversized bodies are refused before they are read.
    big = json.dumps([{"type": "delivered", "email": "ben@example.com", "id": "x", "pad": "x" * 1_100_000}])
    assert post_events(shop["a"], big, secret).status_code == 413
    assert Client().get(hook_url(shop["a"])).status_code == 405


# --- anymail (a real Mailgun-shaped webhook) -----------------------------------------------------------
@pytest.fixture
def anymail_settings(settings):
    settings.ANYMAIL = {"WEBHOOK_SECRET": ANYMAIL_AUTH, "MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_KEY}
    return settings


def mailgun_event(event: str, recipient: str, delivery: Any, *, token: str, **extra: Any) -> dict[str, Any]:
    timestamp = str(int(time.time()))
    signature = hmac.new(MAILGUN_KEY.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    variables = {"delivery": str(delivery)} if delivery is not None else {}
    return {
        "signature": {"token": token, "timestamp": timestamp, "signature": signature},
        "event-data": {
            "event": event, "timestamp": float(timestamp), "id": f"id-{token}", "recipient": recipient,
            "user-variables": variables, "message": {"headers": {"message-id": "d1.abc@shop.example"}}, **extra,
        },
    }  # fmt: skip


def post_mailgun(payload: dict[str, Any], auth: str = ANYMAIL_AUTH) -> Any:
    credentials = base64.b64encode(auth.encode()).decode()
    return Client().post(
        reverse("anymail:mailgun_tracking_webhook"), json.dumps(payload), content_type="application/json",
        HTTP_AUTHORIZATION=f"Basic {credentials}",
    )  # fmt: skip


def test_an_esp_complaint_through_anymail_withdraws_consent(shop, anymail_settings):
    sent = send_run(shop["campaign"])
    payload = mailgun_event("complained", "ann@example.com", sent["ann"].pk, token="tok-complaint")

    response = post_mailgun(payload)

    assert response.status_code == 200, response.content
    row = feedback_rows(shop["a"])[0]
    assert (row.kind, row.provider, row.delivery_id) == ("complaint", "mailgun", sent["ann"].pk)
    assert consent(shop["ann"]) == "withdrawn"
    record = ledger(shop["ann"])[-1]
    assert "spam" in record.wording and "mailgun" in record.actor
    assert suppression(shop["a"], "email", "ann@example.com").reason == "complaint"
    # Mailgun retries: the same event again changes nothing.
    assert post_mailgun(payload).status_code == 200
    assert len(feedback_rows(shop["a"])) == 1 and ledger(shop["ann"])[-1].pk == record.pk
    assert consent(shop["bea"]) == "granted"


def test_an_esp_hard_bounce_through_anymail_stops_the_next_send(shop, anymail_settings, smtp):
    sent = send_run(shop["campaign"])
    failed = mailgun_event(
        "failed", "ben@example.com", sent["ben"].pk, token="tok-bounce", severity="permanent", reason="bounce",
        **{"delivery-status": {"code": 550, "message": "No such mailbox", "description": ""}},
    )  # fmt: skip
    temporary = mailgun_event("failed", "ann@example.com", sent["ann"].pk, token="tok-defer", severity="temporary")

    assert post_mailgun(failed).status_code == 200
    assert post_mailgun(temporary).status_code == 200  # deferred: not a bounce

    assert suppression(shop["a"], "email", "ben@example.com").reason == "hard_bounce"
    assert suppression(shop["a"], "email", "ann@example.com") is None
    assert [r.kind for r in feedback_rows(shop["a"])] == ["bounce_hard"]
    assert "No such mailbox" in feedback_rows(shop["a"])[0].detail
    second = send_run(shop["campaign"])
    assert second["ben"].skip_reason == "suppressed" and second["ann"].status == "sent"


def test_anymail_garbage_gets_a_4xx_never_a_500(shop, anymail_settings):
    url = reverse("anymail:mailgun_tracking_webhook")
    auth = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(ANYMAIL_AUTH.encode()).decode()}
    signed_but_empty = mailgun_event("complained", "ann@example.com", None, token="tok-g")
    del signed_but_empty["event-data"]["event"]
    cases = [
        (url, b"not json", "application/json"),
        (url, b"{}", "application/json"),
        (url, json.dumps(signed_but_empty).encode(), "application/json"),
        (url, b"token=x&timestamp=1&signature=y", FORM),
        (reverse("anymail:mailjet_tracking_webhook"), b"[{]", "application/json"),
        (reverse("anymail:postmark_tracking_webhook"), b"[1]", "application/json"),
    ]
    for path, body, content_type in cases:
        response = Client().post(path, body, content_type=content_type, **auth)
        assert 400 <= response.status_code < 500, (path, body, response.status_code)
    assert feedback_rows(shop["a"]) == []


def test_anymail_events_without_auth_or_tenant_change_nothing(shop, anymail_settings):
    sent = send_run(shop["campaign"])
    complaint = mailgun_event("complained", "ann@example.com", sent["ann"].pk, token="tok-1")

    assert post_mailgun(complaint, auth="esp:wrong").status_code == 400  # anymail refuses the basic auth
    assert post_mailgun(mailgun_event("complained", "ann@example.com", None, token="tok-2")).status_code == 200
    assert post_mailgun(mailgun_event("complained", "ann@example.com", "junk", token="tok-3")).status_code == 200
    assert post_mailgun(mailgun_event("complained", "ann@example.com", 10**12, token="tok-4")).status_code == 200
    # Without basic auth configured the webhooks would be open to anyone: they are closed.
    anymail_settings.ANYMAIL = {"MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_KEY}
    unguarded = mailgun_event("complained", "ann@example.com", sent["ann"].pk, token="tok-5")
    assert post_mailgun(unguarded).status_code == 404

    assert feedback_rows(shop["a"]) == [] and feedback_rows(shop["b"]) == []
    assert consent(shop["ann"]) == "granted"


# --- Twilio-style SMS ----------------------------------------------------------------------------------
def post_twilio(name: str, tenant: Tenant, params: dict[str, str], token: str | None, query: str = "") -> Any:
    url = reverse(name, kwargs={"slug": tenant.slug}) + query
    headers = {}
    if token is not None:
        signature = twilio_signature(
            auth_token=token, url=f"http://testserver{url}", params={k: [v] for k, v in params.items()}
        )
        headers["HTTP_X_TWILIO_SIGNATURE"] = signature
    return Client().post(url, urlencode(params), content_type=FORM, **headers)


def sms(tenant: Tenant, body: str, sid: str, sender: str = "+33612345678", token: str | None = None) -> Any:
    params = {"From": sender, "To": "+15005550006", "Body": body, "MessageSid": sid, "AccountSid": "AC1"}
    return post_twilio("hooks_sms_inbound", tenant, params, SMS_TOKEN["a"] if token is None else token)


def test_stop_and_start_by_sms_round_trip(shop):
    ann = shop["ann"]
    # A complaint suppression on the email side is not the SMS side's business.
    stop = sms(shop["a"], "  Stop ", "SM-stop")

    assert stop.status_code == 200 and stop["Content-Type"].startswith("text/xml")
    assert b"<Response><Message>You are unsubscribed from Tenant A" in stop.content
    assert consent(ann, "sms") == "withdrawn" and consent(ann, "sms", "newsletter") == "withdrawn"
    assert consent(ann, "email") == "granted"
    assert suppression(shop["a"], "sms", "+33612345678").reason == "unsubscribe"
    withdrawal = ledger(ann)[-1]
    assert (withdrawal.source, withdrawal.wording) == ("inbound_stop", "Replied STOP")
    # The provider retries the same message: nothing more happens, the answer is the same.
    assert sms(shop["a"], "STOP", "SM-stop").content == stop.content
    assert len(feedback_rows(shop["a"])) == 1

    start = sms(shop["a"], "start", "SM-start")

    assert b"<Message>You are subscribed to Tenant A messages again" in start.content
    assert consent(ann, "sms") == "granted" and consent(ann, "sms", "newsletter") == "granted"
    assert suppression(shop["a"], "sms", "+33612345678") is None
    grant = ledger(ann)[-1]
    assert (grant.status, grant.wording) == ("granted", "Replied START")
    # Tenant B's contact with the same number heard nothing of it.
    assert consent(shop["bea"], "sms") == "granted" and feedback_rows(shop["b"]) == []


def test_start_lifts_no_bounce_suppression_and_other_texts_change_nothing(shop):
    status = {"MessageSid": "SM-out-1", "MessageStatus": "undelivered", "To": "+33612345679", "ErrorCode": "30006"}
    assert post_twilio("hooks_sms_status", shop["a"], status, SMS_TOKEN["a"]).status_code == 204
    assert suppression(shop["a"], "sms", "+33612345679").reason == "hard_bounce"

    start = sms(shop["a"], "YES", "SM-yes", sender="+33612345679")
    hello = sms(shop["a"], "Is the sale still on?", "SM-hello")
    help_ = sms(shop["a"], "help", "SM-help")

    assert start.status_code == 200
    assert suppression(shop["a"], "sms", "+33612345679").reason == "hard_bounce"
    assert hello.content.endswith(b"<Response></Response>")
    assert b"reply STOP to unsubscribe" in help_.content
    assert [r.kind for r in feedback_rows(shop["a"])] == ["bounce_hard", "inbound_start"]


def test_sms_hooks_refuse_a_bad_signature(shop):
    refused = [
        sms(shop["a"], "STOP", "SM-1", token="not-the-token"),
        sms(shop["a"], "STOP", "SM-2", token=SMS_TOKEN["b"]),  # tenant B's token on A's slug
        sms(shop["b"], "STOP", "SM-3", token=SMS_TOKEN["a"]),  # A's token on B's slug
        sms(shop["a"], "STOP", "SM-4", token=""),
        post_twilio("hooks_sms_status", shop["a"], {"MessageSid": "S", "MessageStatus": "failed"}, "nope"),
    ]
    unsigned = Client().post(reverse("hooks_sms_inbound", kwargs={"slug": shop["a"].slug}), {"From": "+33612345678"})

    assert [r.status_code for r in refused] == [403] * 5 and unsigned.status_code == 403
    assert consent(shop["ann"], "sms") == "granted" and consent(shop["bea"], "sms") == "granted"
    assert feedback_rows(shop["a"]) == [] and feedback_rows(shop["b"]) == []


def test_status_callbacks_link_the_delivery_and_sort_the_errors(shop):
    sent = send_run(shop["campaign"])
    with tenant_context(shop["a"].id):
        Delivery.objects.filter(pk=sent["ann"].pk).update(provider_message_id="SM-ann")

    def status(sid: str, state: str, to: str, code: str = "", query: str = "") -> int:
        params = {"MessageSid": sid, "MessageStatus": state, "To": to, "ErrorCode": code}
        return post_twilio("hooks_sms_status", shop["a"], params, SMS_TOKEN["a"], query).status_code

    assert status("SM-ann", "delivered", "+33612345678") == 204
    assert status("SM-ann", "sent", "+33612345678") == 204  # not feedback
    assert status("SM-ben", "undelivered", "+33612345679", "30003", f"?delivery={sent['ben'].pk}") == 204
    assert status("SM-ann", "failed", "+33612345678", "30007") == 204  # carrier filtering: our content
    assert status("SM-ann", "failed", "+33612345678", "30005") == 204

    rows = feedback_rows(shop["a"])
    assert [(r.kind, r.delivery_id) for r in rows] == [
        ("delivered", sent["ann"].pk), ("bounce_soft", sent["ben"].pk), ("bounce_hard", sent["ann"].pk),
    ]  # fmt: skip
    assert suppression(shop["a"], "sms", "+33612345678").reason == "hard_bounce"
    assert suppression(shop["a"], "sms", "+33612345679") is None  # one soft bounce is not enough
    # 21610: the number opted out at the provider.
    assert status("SM-x", "undelivered", "+33612345679", "21610") == 204
    assert consent(shop["ben"], "sms") == "withdrawn"


def test_sms_garbage_gets_a_4xx_never_a_500(shop):
    token = SMS_TOKEN["a"]
    cases = [
        ("hooks_sms_inbound", {"Body": "STOP"}),
        ("hooks_sms_inbound", {"From": "not a number", "Body": "STOP", "MessageSid": "g1"}),
        ("hooks_sms_inbound", {"From": "+33612345678", "Body": "STOP", "MessageSid": "x" * 300}),
        ("hooks_sms_inbound", {"From": "+33612345678", "Body": "STOP", "MessageSid": "g\x002"}),
        ("hooks_sms_status", {"MessageSid": "g3"}),
        ("hooks_sms_status", {"MessageSid": "g4", "MessageStatus": "failed", "ErrorCode": "30005", "To": "garbage"}),
    ]
    for name, params in cases:
        response = post_twilio(name, shop["a"], params, token)
        assert 400 <= response.status_code < 500, (name, params, response.status_code)
    # Odd but harmless input is simply not feedback.
    odd = {"MessageSid": "g5", "MessageStatus": "🤷"}
    assert post_twilio("hooks_sms_status", shop["a"], odd, token).status_code == 204
    url = reverse("hooks_sms_inbound", kwargs={"slug": shop["a"].slug})
    broken = Client().post(
        url, b"--x\r\nbroken", content_type="multipart/form-data; boundary=x", HTTP_X_TWILIO_SIGNATURE="abc"
    )
    assert broken.status_code in (400, 403)
    assert Client().post(url, "x" * 70_000, content_type=FORM).status_code == 413
    assert feedback_rows(shop["a"]) == []


# --- the service -------------------------------------------------------------------------------------
def test_keywords_are_whole_trimmed_words():
    assert [sms_keyword(t) for t in ("STOP", " stopall ", "Unsubscribe.", "cancel", "End", "QUIT!")] == ["stop"] * 6
    assert [sms_keyword(t) for t in ("start", "UNSTOP", "yes")] == ["start"] * 3
    assert sms_keyword("please stop") is None and sms_keyword("") is None and sms_keyword("Help") == "help"


def test_a_late_stop_does_not_undo_a_later_start(shop):
    now = timezone.now()
    common = {"tenant": shop["a"], "channel": "sms", "provider": "twilio", "address": "+33612345678"}
    feedback_record(kind="inbound_start", provider_event_id="late-start", occurred_at=now, **common)
    feedback_record(
        kind="inbound_stop", provider_event_id="early-stop", occurred_at=now - dt.timedelta(minutes=5), **common
    )
    assert consent(shop["ann"], "sms") == "granted"
    assert suppression(shop["a"], "sms", "+33612345678") is None
    assert len(feedback_rows(shop["a"])) == 2


def test_erasing_a_contact_blanks_what_campaigns_kept_about_it(shop):
    from campaigns.models import ContactPause
    from contacts.privacy import contact_erase

    a, ann, ben = shop["a"], shop["ann"], shop["ben"]
    now = timezone.now()
    for contact, event_id in ((ann, "bounce-ann"), (ben, "bounce-ben")):
        feedback_record(
            tenant=a, channel="email", kind="bounce_soft", provider="mailgun", provider_event_id=event_id,
            occurred_at=now, address=contact.email, detail=f"550 {contact.email} mailbox full",
            payload={"recipient": contact.email},
        )  # fmt: skip
    with tenant_context(a.id):
        ContactPause.objects.create(tenant=a, contact=ann, until=now + dt.timedelta(days=30))
        contact_erase(contact=Contact.objects.get(pk=ann.pk), actor=ACTOR)
        erased = DeliveryFeedback.objects.get(contact=ann)
        assert erased.detail == "" and set(erased.payload) == {"address_hash"}
        assert erased.payload["address_hash"] == address_hash("email", "ann@example.com")
        assert not ContactPause.objects.filter(contact=ann).exists()
        kept = DeliveryFeedback.objects.get(contact=ben)
        assert "ben@example.com" in kept.detail and kept.payload["event"] == {"recipient": "ben@example.com"}


def test_the_list_unsubscribe_mailto_unsubscribes_through_an_esp_inbound_webhook(shop, anymail_settings):
    from urllib.parse import parse_qs, unquote, urlsplit

    from campaigns.sending import message_build

    campaign, ann = shop["campaign"], shop["ann"]
    with tenant_context(campaign.tenant_id):
        variant = Variant.objects.filter(campaign=campaign).first()
        message = message_build(campaign=campaign, variant=variant, contact=ann, delivery_id=1)
    header = message.all_headers()["List-Unsubscribe"]
    mailto = next(part.strip("<> ") for part in header.split(",") if "mailto:" in part)
    to, query = urlsplit(mailto).path, parse_qs(urlsplit(mailto).query)
    subject = unquote(query["subject"][0])

    def inbound(subject: str, token: str) -> Any:
        timestamp = str(int(time.time()))
        signature = hmac.new(MAILGUN_KEY.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
        mime = f"From: ann@example.com\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nPlease stop.\r\n"
        credentials = base64.b64encode(ANYMAIL_AUTH.encode()).decode()
        return Client().post(
            reverse("anymail:mailgun_inbound_webhook"),
            {"body-mime": mime, "timestamp": timestamp, "token": token, "signature": signature},
            HTTP_AUTHORIZATION=f"Basic {credentials}",
        )

    assert inbound("unsubscribe not-a-signed-token", "tok-forged").status_code == 200
    assert consent(ann, "email") == "granted"
    assert inbound(subject, "tok-mailto").status_code == 200
    assert consent(ann, "email") == "withdrawn"
    assert suppression(shop["a"], "email", "ann@example.com") is not None
    assert consent(shop["ben"], "email") == "granted"
