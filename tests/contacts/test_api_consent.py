"""The consent, suppression and privacy endpoints of the contacts API."""

from __future__ import annotations

import hashlib

import pytest
from rest_framework.test import APIClient

from contacts.consent import confirmation_token, consent_confirm, is_suppressed
from contacts.models import (
    ConsentRecord,
    ConsentState,
    Contact,
    Event,
    LifecycleStage,
    PrivacyRequest,
    Suppression,
)
from tenants.context import tenant_context
from tenants.models import AuditLog
from tests.conftest import World

pytestmark = pytest.mark.django_db

CONTACTS = "/api/v1/contacts/"
SUPPRESSIONS = "/api/v1/suppressions/"


def fields_of(response) -> dict:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] in ("invalid", "parse_error") and error["message"]
    return error.get("fields", {})


@pytest.fixture
def ada(world: World, api_a: APIClient) -> dict:
    """A contact of tenant A with a phone, an event with properties and an attribute."""
    response = api_a.post(
        CONTACTS,
        {"external_id": "u-ada", "email": "ada@example.com", "phone": "+4915112345678", "first_name": "Ada",
         "last_name": "Lovelace", "city": "London", "interests": ["maths"]},
        format="json",
    )  # fmt: skip
    assert response.status_code == 201
    api_a.post(
        "/api/v1/events/",
        {"event": "purchase", "external_id": "u-ada", "revenue": "42.00", "currency": "GBP",
         "properties": {"card_last4": "4242", "address": "12 St James's Square"}, "idempotency_key": "o-1"},
        format="json",
    )  # fmt: skip
    return response.json()


def consent_url(contact: dict) -> str:
    return f"{CONTACTS}{contact['id']}/consent/"


def grant(**extra) -> dict:
    return {
        "channel": "email", "purpose": "newsletter", "status": "granted", "wording": "Send me the newsletter",
        "wording_version": "2026-11", **extra,
    }  # fmt: skip


def consent_of(client: APIClient, contact: dict) -> list[dict]:
    return client.get(f"{CONTACTS}{contact['id']}/").json()["consent"]


# --- consent ---------------------------------------------------------------------------------
def test_grant_and_withdraw_move_the_state_and_the_ledger_only_grows(world: World, api_a: APIClient, ada):
    granted = api_a.post(consent_url(ada), grant(), format="json", HTTP_USER_AGENT="Integrator/1.0")
    assert granted.status_code == 201, granted.content
    record = granted.json()
    assert (record["status"], record["source"], record["legal_basis"]) == ("granted", "api", "consent")
    assert record["ip_address"] == "127.0.0.1" and record["user_agent"] == "Integrator/1.0"
    assert record["actor"].startswith("api key A write")
    assert [(c["channel"], c["purpose"], c["status"]) for c in consent_of(api_a, ada)] == [
        ("email", "newsletter", "granted")
    ]
    assert api_a.get(f"{CONTACTS}{ada['id']}/").json()["lifecycle_stage"] == LifecycleStage.FIRST_TIME_BUYER

    withdrawn = api_a.post(
        consent_url(ada),
        grant(status="withdrawn", ip_address="203.0.113.9", user_agent="Mozilla/5.0 (the person's browser)"),
        format="json",
    )
    assert withdrawn.status_code == 201
    assert withdrawn.json()["ip_address"] == "203.0.113.9"
    assert [c["status"] for c in consent_of(api_a, ada)] == ["withdrawn"]
    ledger = api_a.get(consent_url(ada)).json()
    assert [r["status"] for r in ledger["results"]] == ["withdrawn", "granted"]  # newest first, nothing replaced
    with tenant_context(world.tenant_a.id):
        assert ConsentRecord.objects.count() == 2
        assert AuditLog.objects.filter(action__startswith="consent.").count() == 2


def test_the_ledger_pages_with_a_cursor(world: World, api_a: APIClient, ada):
    for status in ("granted", "withdrawn", "granted"):
        api_a.post(consent_url(ada), grant(status=status), format="json")
    first = api_a.get(f"{consent_url(ada)}?page_size=2").json()
    second = api_a.get(first["next"]).json()
    assert [r["status"] for r in first["results"] + second["results"]] == ["granted", "withdrawn", "granted"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (grant(channel="fax"), "channel"),
        (grant(purpose="telepathy"), "purpose"),
        (grant(status="pending"), "status"),
        (grant(status="maybe"), "status"),
        (grant(legal_basis="because"), "legal_basis"),
        (grant(double_opt_in="sure"), "double_opt_in"),
        (grant(channel="sms", double_opt_in=True), "double_opt_in"),
        (grant(status="withdrawn", double_opt_in=True), "double_opt_in"),
        (grant(ip_address="not-an-ip"), "ip_address"),
        (grant(source="form"), "source"),
        ({"channel": "email", "status": "granted"}, "purpose"),
    ],
)
def test_consent_rejects_bad_input(world: World, api_a: APIClient, ada, body, field):
    assert field in fields_of(api_a.post(consent_url(ada), body, format="json"))
    with tenant_context(world.tenant_a.id):
        assert not ConsentRecord.objects.exists()


def test_double_opt_in_is_pending_until_the_person_confirms(
    world: World, api_a: APIClient, ada, monkeypatch, django_capture_on_commit_callbacks
):
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr("contacts.tasks.send_consent_confirmation.delay", lambda *args: sent.append(args))
    with django_capture_on_commit_callbacks(execute=True):
        response = api_a.post(consent_url(ada), grant(double_opt_in=True), format="json")
    assert response.status_code == 201, response.content
    record = response.json()
    assert record["status"] == "pending"
    assert sent == [(world.tenant_a.id, record["id"])]  # the confirmation email is queued after commit
    assert [c["status"] for c in consent_of(api_a, ada)] == ["pending"]
    assert api_a.get(f"{CONTACTS}{ada['id']}/").json()["lifecycle_stage"] == LifecycleStage.FIRST_TIME_BUYER

    with tenant_context(world.tenant_a.id):
        pending = ConsentRecord.objects.get(pk=record["id"])
        token = confirmation_token(pending, "ada@example.com")
    consent_confirm(token=token, ip_address="198.51.100.7", user_agent="Mail client")
    assert [c["status"] for c in consent_of(api_a, ada)] == ["granted"]
    ledger = api_a.get(consent_url(ada)).json()["results"]
    assert [(r["status"], r["source"]) for r in ledger] == [("granted", "double_opt_in"), ("pending", "api")]


def test_double_opt_in_needs_an_email_address(world: World, api_a: APIClient):
    contact = api_a.post(CONTACTS, {"external_id": "u-no-mail"}, format="json").json()
    assert "email" in fields_of(api_a.post(consent_url(contact), grant(double_opt_in=True), format="json"))


def test_consent_belongs_to_the_contacts_tenant(world: World, api_a: APIClient, api_b: APIClient, ada):
    api_a.post(consent_url(ada), grant(), format="json")
    assert api_b.get(consent_url(ada)).status_code == 404
    assert api_b.post(consent_url(ada), grant(status="withdrawn"), format="json").status_code == 404
    missing = api_a.get(f"{CONTACTS}99999999/consent/")
    assert missing.status_code == 404 and missing.json() == api_b.get(consent_url(ada)).json()
    assert [c["status"] for c in consent_of(api_a, ada)] == ["granted"]


def test_read_key_reads_the_ledger_but_cannot_record_consent(world: World, api_a_read: APIClient, ada):
    assert api_a_read.get(consent_url(ada)).status_code == 200
    assert api_a_read.post(consent_url(ada), grant(), format="json").status_code == 403


# --- suppressions --------------------------------------------------------------------------------
def test_suppressing_an_address_hashes_it_and_never_shows_it_again(world: World, api_a: APIClient):
    created = api_a.post(
        SUPPRESSIONS, {"channel": "email", "address": "  Eve@Example.COM ", "reason": "complaint"}, format="json"
    )
    assert created.status_code == 201, created.content
    body = created.json()
    expected_hash = hashlib.sha256(b"email:eve@example.com").hexdigest()
    assert (body["address"], body["address_hash"], body["reason"]) == ("eve@example.com", expected_hash, "complaint")
    again = api_a.post(SUPPRESSIONS, {"channel": "email", "address": "eve@example.com"}, format="json")
    assert again.status_code == 200 and again.json()["id"] == body["id"] and again.json()["reason"] == "complaint"

    listing = api_a.get(SUPPRESSIONS)
    assert "eve@example.com" not in listing.content.decode().lower()
    assert [s["address_hash"] for s in listing.json()["results"]] == [expected_hash]
    detail = api_a.get(f"{SUPPRESSIONS}{body['id']}/")
    assert "address" not in detail.json() and detail.json()["address_hash"] == expected_hash
    found = api_a.get(f"{SUPPRESSIONS}?channel=email&address=EVE%40example.com").json()["results"]
    assert [s["id"] for s in found] == [body["id"]]
    assert api_a.get(f"{SUPPRESSIONS}?channel=sms").json()["results"] == []
    with tenant_context(world.tenant_a.id):
        assert is_suppressed(tenant=world.tenant_a, channel="email", address="eve@example.com")


def test_phone_suppressions_are_normalised_to_e164(world: World, api_a: APIClient):
    body = api_a.post(SUPPRESSIONS, {"channel": "sms", "address": "+49 151 1234 5678"}, format="json").json()
    assert body["address"] == "+4915112345678" and body["reason"] == "manual"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"channel": "email", "address": "not-an-address"}, "address"),
        ({"channel": "sms", "address": "12"}, "address"),
        ({"channel": "pigeon", "address": "eve@example.com"}, "channel"),
        ({"channel": "email", "address": "eve@example.com", "reason": "erasure"}, "reason"),
        ({"channel": "email", "address": "eve@example.com", "reason": "bored"}, "reason"),
        ({"channel": "email"}, "address"),
        ({"channel": "email", "address": "eve@example.com", "expires": "never"}, "expires"),
        ({"channel": "email", "address": ["eve@example.com"]}, "address"),
    ],
)
def test_suppression_rejects_bad_input(world: World, api_a: APIClient, body, field):
    assert field in fields_of(api_a.post(SUPPRESSIONS, body, format="json"))
    with tenant_context(world.tenant_a.id):
        assert not Suppression.objects.exists()


def test_suppression_list_filters_are_checked(world: World, api_a: APIClient):
    assert "channel" in fields_of(api_a.get(f"{SUPPRESSIONS}?address=eve@example.com"))
    assert "address" in fields_of(api_a.get(f"{SUPPRESSIONS}?channel=email&address=nope"))
    assert "reason" in fields_of(api_a.get(f"{SUPPRESSIONS}?reason=whim"))


def test_deleting_suppressions(world: World, api_a: APIClient, api_a_read: APIClient, api_b: APIClient):
    manual = api_a.post(SUPPRESSIONS, {"channel": "email", "address": "m@example.com"}, format="json").json()
    complaint = api_a.post(
        SUPPRESSIONS, {"channel": "email", "address": "c@example.com", "reason": "complaint"}, format="json"
    ).json()
    assert api_a_read.delete(f"{SUPPRESSIONS}{manual['id']}/").status_code == 403
    assert api_b.delete(f"{SUPPRESSIONS}{manual['id']}/").status_code == 404
    refused = api_a.delete(f"{SUPPRESSIONS}{complaint['id']}/")
    assert refused.status_code == 400 and "cannot be removed" in refused.json()["error"]["message"]
    assert api_a.delete(f"{SUPPRESSIONS}{manual['id']}/").status_code == 204
    assert api_a.get(f"{SUPPRESSIONS}{manual['id']}/").status_code == 404
    with tenant_context(world.tenant_a.id):
        assert list(Suppression.objects.values_list("reason", flat=True)) == ["complaint"]


# --- export and erasure ------------------------------------------------------------------------
def test_export_contains_the_profile_events_and_consent(world: World, api_a: APIClient, api_a_read: APIClient, ada):
    api_a.post(consent_url(ada), grant(), format="json")
    response = api_a_read.get(f"{CONTACTS}{ada['id']}/export/")
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="contact-{ada["id"]}.json"'
    data = response.json()
    assert data["profile"]["email"] == "ada@example.com" and data["profile"]["city"] == "London"
    assert [(e["event"], e["properties"]["card_last4"]) for e in data["events"]] == [("purchase", "4242")]
    assert [(c["channel"], c["status"], c["wording"]) for c in data["consent"]] == [
        ("email", "granted", "Send me the newsletter")
    ]
    assert data["lifecycle"] and data["deliveries"] == []
    with tenant_context(world.tenant_a.id):
        assert PrivacyRequest.objects.get().kind == PrivacyRequest.Kind.EXPORT


def test_erasure_removes_personal_data_and_keeps_the_suppression(world: World, api_a: APIClient, ada):
    api_a.post(consent_url(ada), grant(), format="json")
    response = api_a.post(f"{CONTACTS}{ada['id']}/erase/")
    assert response.status_code == 200, response.content
    request = response.json()
    assert (request["kind"], request["contact_id"]) == ("erasure", ada["id"])
    assert request["requested_by"].startswith("api key A write") and request["completed_at"]

    erased = api_a.get(f"{CONTACTS}{ada['id']}/").json()
    assert erased["erased_at"]
    for field in ("email", "phone", "external_id", "first_name", "last_name", "city"):
        assert erased[field] == "", field
    assert erased["interests"] == [] and erased["consent"] == []
    assert "ada@example.com" not in api_a.get(CONTACTS).content.decode()
    with tenant_context(world.tenant_a.id):
        assert list(Event.objects.values_list("name", "properties")) == [("purchase", {})]
        assert not ConsentRecord.objects.exists() and not ConsentState.objects.exists()
        reasons = dict(Suppression.objects.values_list("channel", "reason"))
    assert reasons == {"email": "erasure", "sms": "erasure", "whatsapp": "erasure"}
    # An erased contact cannot be filled in again.
    assert api_a.patch(f"{CONTACTS}{ada['id']}/", {"first_name": "Ada"}, format="json").status_code == 400
    assert api_a.post(consent_url(ada), grant(), format="json").status_code == 400


def test_the_suppression_outlives_erasure_and_re_creation(world: World, api_a: APIClient, ada):
    api_a.post(f"{CONTACTS}{ada['id']}/erase/")
    again = api_a.post(CONTACTS, {"email": "ADA@example.com", "first_name": "Ada"}, format="json")
    assert again.status_code == 201 and again.json()["id"] != ada["id"]
    found = api_a.get(f"{SUPPRESSIONS}?channel=email&address=ada@example.com").json()["results"]
    assert [s["reason"] for s in found] == ["erasure"]
    assert api_a.delete(f"{SUPPRESSIONS}{found[0]['id']}/").status_code == 400  # kept for good
    with tenant_context(world.tenant_a.id):
        assert is_suppressed(tenant=world.tenant_a, channel="email", address="ada@example.com")
        assert Contact.objects.filter(email="ada@example.com").count() == 1


def test_privacy_endpoints_are_scoped_and_erasure_needs_write(
    world: World, api_a_read: APIClient, api_b: APIClient, ada
):
    assert api_b.get(f"{CONTACTS}{ada['id']}/export/").status_code == 404
    assert api_b.post(f"{CONTACTS}{ada['id']}/erase/").status_code == 404
    denied = api_a_read.post(f"{CONTACTS}{ada['id']}/erase/")
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "permission_denied"
    assert api_a_read.get(f"{CONTACTS}{ada['id']}/").json()["email"] == "ada@example.com"
    with tenant_context(world.tenant_a.id):
        assert not PrivacyRequest.objects.exists()


def test_tenant_b_gets_404_on_every_contact_endpoint_of_tenant_a(world: World, api_b: APIClient, ada):
    base = f"{CONTACTS}{ada['id']}/"
    calls = [
        ("get", base), ("patch", base), ("get", f"{base}consent/"), ("post", f"{base}consent/"),
        ("get", f"{base}export/"), ("post", f"{base}erase/"),
    ]  # fmt: skip
    for verb, url in calls:
        response = getattr(api_b, verb)(url, {}, format="json")
        assert response.status_code == 404, f"{verb} {url}"
        assert response.json() == {"error": {"code": "not_found", "message": "Not found."}}
