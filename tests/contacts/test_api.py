"""The contacts REST API: contacts, bulk upsert and attribute definitions.

Events and identify are in test_api_events.py; consent, suppression and privacy in
test_api_consent.py.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from contacts.consent import ConsentEvidence, consent_change
from contacts.models import AttributeDefinition, ConsentSource, Contact, LifecycleStage
from tenants.audit import Actor
from tenants.context import tenant_context
from tenants.models import Tenant
from tests.conftest import World

pytestmark = pytest.mark.django_db

CONTACTS = "/api/v1/contacts/"
BULK = "/api/v1/contacts/bulk/"
ATTRIBUTES = "/api/v1/attributes/"


def fields_of(response) -> dict:
    """The field errors of a 400, after checking it has the one error shape."""
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] in ("invalid", "parse_error") and error["message"]
    return error.get("fields", {})


def post_json(client: APIClient, url: str, body: str):
    return client.post(url, body, content_type="application/json")


def define(tenant: Tenant, key: str, kind: str) -> None:
    with tenant_context(tenant.id):
        AttributeDefinition.objects.create(tenant=tenant, key=key, label=key.title(), type=kind)


def contact_in(tenant: Tenant, **lookup) -> Contact:
    with tenant_context(tenant.id):
        return Contact.objects.get(**lookup)


# --- create, read, update ------------------------------------------------------------------
def test_create_normalises_and_returns_the_whole_contact(world: World, api_a: APIClient):
    define(world.tenant_a, "plan", AttributeDefinition.Type.TEXT)
    response = api_a.post(
        CONTACTS,
        {
            "external_id": "u-1", "email": "  Ada@Example.COM ", "phone": "+44 20 7946 0958",
            "first_name": "Ada", "last_name": "Lovelace", "country": "gb", "time_zone": "Europe/London",
            "birth_date": "1985-12-10", "interests": ["Maths", "engines", "maths"], "company": "Analytical",
            "attributes": {"plan": "pro"},
        },
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["email"] == "ada@example.com"
    assert body["phone"] == "+442079460958"
    assert body["country"] == "GB"
    assert body["birth_date"] == "1985-12-10"
    assert body["interests"] == ["maths", "engines"]
    assert body["attributes"] == {"plan": "pro"}
    assert body["lifecycle_stage"] == LifecycleStage.LEAD
    assert body["engagement"]["order_count"] == 0 and body["engagement"]["total_revenue"] == "0.00"
    assert body["consent"] == []
    assert contact_in(world.tenant_a, pk=body["id"]).last_name == "Lovelace"


def test_create_is_an_upsert_on_external_id_then_email(world: World, api_a: APIClient):
    first = api_a.post(CONTACTS, {"external_id": "u-1", "first_name": "Ada"}, format="json")
    again = api_a.post(CONTACTS, {"external_id": "u-1", "email": "ada@example.com"}, format="json")
    by_email = api_a.post(CONTACTS, {"email": "ADA@example.com", "city": "London"}, format="json")
    assert (first.status_code, again.status_code, by_email.status_code) == (201, 200, 200)
    assert first.json()["id"] == again.json()["id"] == by_email.json()["id"]
    assert by_email.json()["first_name"] == "Ada" and by_email.json()["city"] == "London"


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"email": "ada@example.com", "first_name": {"a": 1}}, "first_name", "Expected text."),
        ({"email": "ada@example.com", "nickname": "Ada"}, "nickname", "Unknown field."),
        ({"email": "ada@example.com", "lifecycle_stage": "lead"}, "lifecycle_stage", "read-only"),
        ({"email": "not-an-address"}, "email", "not a valid email address"),
        ({"email": "ada@example.com", "phone": "+49 123"}, "phone", "phone number"),
        ({"email": "ada@example.com", "country": "Atlantis"}, "country", "ISO 3166"),
        ({"email": "ada@example.com", "birth_date": "1990-02-30"}, "birth_date", "not a date"),
        ({"email": "ada@example.com", "birth_date": "2999-01-01"}, "birth_date", "between 1900 and today"),
        ({"email": "ada@example.com", "time_zone": "Mars/Olympus"}, "time_zone", "IANA"),
        ({"email": "ada@example.com", "interests": [1, 2]}, "interests", "list of text tags"),
        ({"email": "ada@example.com", "interests": ["a\x00b"]}, "interests", "NUL characters"),
        ({"email": "ada@example.com", "attributes": {"note": "\x00"}}, "attributes", "NUL characters"),
        ({"email": "ada@example.com", "first_name": "x" * 101}, "first_name", "At most 100"),
        ({"email": "ada@example.com", "attributes": ["plan"]}, "attributes", "Expected an object"),
        ({"email": "ada@example.com", "attributes": {"seats": "many"}}, "attributes", "seats: 'many' is not a number"),
        ({"email": "ada@example.com", "attributes": {"vip": "maybe"}}, "attributes", "vip: 'maybe' is not yes/no"),
        ({"email": "ada@example.com", "attributes": {"plan": "x"}}, "attributes", "plan: unknown attribute"),
        ({"first_name": "Nobody"}, "non_field_errors", "external_id or an email"),
    ],
)
def test_create_rejects_bad_input_with_field_and_reason(world: World, api_a: APIClient, body, field, reason):
    define(world.tenant_a, "seats", AttributeDefinition.Type.NUMBER)
    define(world.tenant_a, "vip", AttributeDefinition.Type.BOOLEAN)
    define(world.tenant_a, "note", AttributeDefinition.Type.TEXT)
    response = api_a.post(CONTACTS, body, format="json")
    error = response.json()["error"]
    if field == "non_field_errors":
        assert response.status_code == 400 and reason in error["message"]
    else:
        assert reason in " ".join(fields_of(response)[field])
    with tenant_context(world.tenant_a.id):
        assert not Contact.objects.exists()


def test_create_rejects_malformed_json_and_non_objects(world: World, api_a: APIClient):
    broken = post_json(api_a, CONTACTS, '{"email": "ada@example.com",')
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "parse_error"
    listed = post_json(api_a, CONTACTS, '["ada@example.com"]')
    assert listed.status_code == 400 and "JSON object" in listed.json()["error"]["message"]


def test_unknown_attributes_are_defined_on_the_fly_when_the_tenant_allows_it(world: World, api_a: APIClient):
    rejected = api_a.post(CONTACTS, {"email": "ada@example.com", "attributes": {"seats": 12}}, format="json")
    assert "unknown attribute" in fields_of(rejected)["attributes"][0]
    Tenant.objects.filter(pk=world.tenant_a.pk).update(auto_define_attributes=True)
    accepted = api_a.post(
        CONTACTS, {"email": "ada@example.com", "attributes": {"seats": 12, "renews": "2027-01-31"}}, format="json"
    )
    assert accepted.status_code == 201 and accepted.json()["attributes"] == {"seats": 12, "renews": "2027-01-31"}
    with tenant_context(world.tenant_a.id):
        types = dict(AttributeDefinition.objects.values_list("key", "type"))
    assert types == {"seats": "number", "renews": "date"}
    # Once defined, the type holds.
    wrong = api_a.post(CONTACTS, {"email": "ada@example.com", "attributes": {"seats": "lots"}}, format="json")
    assert "defined as number" in fields_of(wrong)["attributes"][0]


def test_retrieve_and_another_tenants_contact_is_the_same_404_as_a_missing_one(
    world: World, api_a: APIClient, api_b: APIClient
):
    contact_id = api_a.post(CONTACTS, {"email": "ada@example.com"}, format="json").json()["id"]
    assert api_a.get(f"{CONTACTS}{contact_id}/").json()["email"] == "ada@example.com"
    other = api_b.get(f"{CONTACTS}{contact_id}/")
    missing = api_b.get(f"{CONTACTS}99999999/")
    assert other.status_code == missing.status_code == 404
    assert other.json() == missing.json() == {"error": {"code": "not_found", "message": "Not found."}}
    assert api_b.patch(f"{CONTACTS}{contact_id}/", {"first_name": "Mallory"}, format="json").status_code == 404
    assert contact_in(world.tenant_a, pk=contact_id).first_name == ""


def test_partial_update_changes_only_what_is_sent(world: World, api_a: APIClient):
    define(world.tenant_a, "plan", AttributeDefinition.Type.TEXT)
    define(world.tenant_a, "seats", AttributeDefinition.Type.NUMBER)
    created = api_a.post(
        CONTACTS, {"email": "ada@example.com", "city": "London", "attributes": {"plan": "pro", "seats": 3}},
        format="json",
    ).json()  # fmt: skip
    url = f"{CONTACTS}{created['id']}/"
    response = api_a.patch(url, {"first_name": "Ada", "attributes": {"seats": "5", "plan": None}}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["first_name"], body["city"], body["attributes"]) == ("Ada", "London", {"seats": 5})


def test_partial_update_rejects_bad_input(world: World, api_a: APIClient):
    ada = api_a.post(CONTACTS, {"email": "ada@example.com"}, format="json").json()
    api_a.post(CONTACTS, {"email": "grace@example.com"}, format="json")
    url = f"{CONTACTS}{ada['id']}/"
    assert "Another contact" in fields_of(api_a.patch(url, {"email": "grace@example.com"}, format="json"))["email"][0]
    assert fields_of(api_a.patch(url, {"country": "XX"}, format="json"))["country"]
    assert fields_of(api_a.patch(url, {"favourite_colour": "red"}, format="json")) == {
        "favourite_colour": ["Unknown field."]
    }
    assert fields_of(api_a.patch(url, {"engagement": {}}, format="json")) == {
        "engagement": ["This field is read-only."]
    }
    assert post_json(api_a, url, "{").status_code in (400, 405)
    assert api_a.generic("PATCH", url, "{", content_type="application/json").status_code == 400
    assert contact_in(world.tenant_a, pk=ada["id"]).email == "ada@example.com"


def test_there_is_no_hard_delete(world: World, api_a: APIClient):
    contact_id = api_a.post(CONTACTS, {"email": "ada@example.com"}, format="json").json()["id"]
    response = api_a.delete(f"{CONTACTS}{contact_id}/")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"
    assert api_a.put(f"{CONTACTS}{contact_id}/", {"email": "x@example.com"}, format="json").status_code == 405


def test_read_key_reads_but_cannot_write(world: World, api_a: APIClient, api_a_read: APIClient):
    contact_id = api_a.post(CONTACTS, {"email": "ada@example.com"}, format="json").json()["id"]
    assert api_a_read.get(CONTACTS).status_code == 200
    assert api_a_read.get(f"{CONTACTS}{contact_id}/").status_code == 200
    for response in (
        api_a_read.post(CONTACTS, {"email": "eve@example.com"}, format="json"),
        api_a_read.patch(f"{CONTACTS}{contact_id}/", {"first_name": "Eve"}, format="json"),
        api_a_read.post(BULK, {"contacts": [{"email": "eve@example.com"}]}, format="json"),
        api_a_read.post(ATTRIBUTES, {"key": "plan", "type": "text"}, format="json"),
    ):
        assert response.status_code == 403 and response.json()["error"]["code"] == "permission_denied"
    with tenant_context(world.tenant_a.id):
        assert list(Contact.objects.values_list("email", flat=True)) == ["ada@example.com"]
        assert not AttributeDefinition.objects.exists()


# --- list ------------------------------------------------------------------------------------
@pytest.fixture
def three_contacts(world: World, api_a: APIClient) -> dict[str, int]:
    rows = [
        {"external_id": "u-1", "email": "ada@example.com", "country": "GB"},
        {"external_id": "u-2", "email": "grace@example.com", "country": "US"},
        {"external_id": "u-3", "email": "linus@example.com", "country": "FI"},
    ]
    results = api_a.post(BULK, {"contacts": rows}, format="json").json()["results"]
    return {row["external_id"]: result["id"] for row, result in zip(rows, results, strict=True)}


def listed(client: APIClient, query: str = "") -> list[str]:
    response = client.get(f"{CONTACTS}{query}")
    assert response.status_code == 200, response.content
    return [c["external_id"] for c in response.json()["results"]]


def test_list_filters(world: World, api_a: APIClient, api_b: APIClient, three_contacts):
    assert listed(api_a) == ["u-3", "u-2", "u-1"]  # newest first
    assert listed(api_a, "?email=GRACE@example.com") == ["u-2"]
    assert listed(api_a, "?external_id=u-3") == ["u-3"]
    assert listed(api_a, "?country=gb") == ["u-1"]
    with tenant_context(world.tenant_a.id):
        Contact.objects.filter(external_id="u-1").update(lifecycle_stage=LifecycleStage.FIRST_TIME_BUYER)
        Contact.objects.filter(external_id="u-2").update(updated_at=timezone.now() - dt.timedelta(days=3))
    assert listed(api_a, "?lifecycle_stage=first_time_buyer") == ["u-1"]
    since = (timezone.now() - dt.timedelta(days=1)).isoformat()
    assert listed(api_a, f"?updated_since={since.replace('+', '%2B')}") == ["u-3", "u-1"]
    assert listed(api_b) == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?country=XX", "country"),
        ("?lifecycle_stage=champion", "lifecycle_stage"),
        ("?updated_since=last-tuesday", "updated_since"),
        ("?email=not-an-address", "email"),
    ],
)
def test_list_rejects_bad_filters(world: World, api_a: APIClient, query, field):
    assert field in fields_of(api_a.get(f"{CONTACTS}{query}"))


def test_list_pages_with_a_cursor(world: World, api_a: APIClient, three_contacts):
    first = api_a.get(f"{CONTACTS}?page_size=2").json()
    second = api_a.get(first["next"]).json()
    assert [c["external_id"] for c in first["results"] + second["results"]] == ["u-3", "u-2", "u-1"]
    assert second["next"] is None


def test_list_shows_consent_without_a_query_per_contact(world: World, api_a: APIClient, three_contacts):
    with tenant_context(world.tenant_a.id):
        for contact in Contact.objects.all():
            consent_change(
                contact=contact, channel="email", purpose="newsletter", status="granted",
                evidence=ConsentEvidence(source=ConsentSource.FORM), actor=Actor.system("test"),
            )  # fmt: skip
    with CaptureQueriesContext(connection) as three:
        body = api_a.get(CONTACTS).json()
    assert {c["consent"][0]["status"] for c in body["results"]} == {"granted"}
    assert set(body["results"][0]["consent"][0]) == {"channel", "purpose", "status", "updated_at"}
    api_a.post(BULK, {"contacts": [{"email": f"more{i}@example.com"} for i in range(20)]}, format="json")
    with CaptureQueriesContext(connection) as twenty_three:
        assert len(api_a.get(CONTACTS).json()["results"]) == 23
    assert len(twenty_three) == len(three)


# --- bulk upsert --------------------------------------------------------------------------------
def test_bulk_keeps_valid_rows_and_reports_every_row(world: World, api_a: APIClient):
    api_a.post(CONTACTS, {"external_id": "u-1", "email": "ada@example.com"}, format="json")
    response = api_a.post(
        BULK,
        {
            "contacts": [
                {"external_id": "u-1", "first_name": "Ada"},
                {"email": "grace@example.com", "last_name": "Hopper"},
                {"email": "broken@", "first_name": "Broken"},
                "not an object",
                {"external_id": "u-9", "shoe_size": 44},
                {"external_id": "u-10", "birth_date": "31/12/1990"},
                {"email": "GRACE@example.com", "city": "Arlington"},
            ]
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["counts"] == {"created": 1, "updated": 2, "error": 4}
    results = body["results"]
    assert [r["status"] for r in results] == ["updated", "created", "error", "error", "error", "error", "updated"]
    assert [r["index"] for r in results] == list(range(7))
    assert "email" in results[2]["errors"] and results[2]["id"] is None
    assert "JSON object" in results[3]["errors"]["non_field_errors"][0]
    assert "shoe_size" in results[4]["errors"]["non_field_errors"][0]
    assert "birth_date" in results[5]["errors"]
    assert results[1]["id"] == results[6]["id"]
    with tenant_context(world.tenant_a.id):
        saved = {c.email: (c.first_name, c.last_name, c.city) for c in Contact.objects.all()}
    assert saved == {"ada@example.com": ("Ada", "", ""), "grace@example.com": ("", "Hopper", "Arlington")}


def test_bulk_rejects_oversize_and_malformed_requests(world: World, api_a: APIClient):
    too_many = api_a.post(BULK, {"contacts": [{"email": f"c{i}@example.com"} for i in range(10_001)]}, format="json")
    assert "At most 10,000 contacts" in fields_of(too_many)["contacts"][0]
    assert fields_of(api_a.post(BULK, {"contacts": {"email": "a@example.com"}}, format="json"))["contacts"]
    assert fields_of(api_a.post(BULK, {"contacts": []}, format="json"))["contacts"]
    assert fields_of(api_a.post(BULK, {}, format="json"))["contacts"]
    assert fields_of(api_a.post(BULK, {"contacts": [], "mode": "replace"}, format="json"))["mode"]
    assert post_json(api_a, BULK, '{"contacts": [{"email": "a@example.com"}').json()["error"]["code"] == "parse_error"
    assert post_json(api_a, BULK, "[]").status_code == 400
    with tenant_context(world.tenant_a.id):
        assert not Contact.objects.exists()


def test_bulk_of_ten_thousand(world: World, api_a: APIClient):
    rows = [{"external_id": f"u-{i}", "email": f"c{i}@example.com", "country": "DE"} for i in range(10_000)]
    body = post_json(api_a, BULK, json.dumps({"contacts": rows})).json()
    assert body["counts"] == {"created": 10_000, "updated": 0, "error": 0}
    again = post_json(api_a, BULK, json.dumps({"contacts": rows})).json()
    assert again["counts"] == {"created": 0, "updated": 10_000, "error": 0}
    with tenant_context(world.tenant_a.id):
        assert Contact.objects.count() == 10_000


# --- attribute definitions --------------------------------------------------------------------
def test_attribute_definitions_crud(world: World, api_a: APIClient, api_b: APIClient):
    created = api_a.post(ATTRIBUTES, {"key": "plan", "label": "Plan", "type": "text"}, format="json")
    assert created.status_code == 201, created.content
    attribute = created.json()
    url = f"{ATTRIBUTES}{attribute['id']}/"
    assert [a["key"] for a in api_a.get(ATTRIBUTES).json()["results"]] == ["plan"]
    assert api_a.get(url).json()["type"] == "text"
    relabelled = api_a.patch(url, {"label": "Subscription plan", "key": "plan", "type": "text"}, format="json")
    assert relabelled.status_code == 200 and relabelled.json()["label"] == "Subscription plan"
    assert (
        api_a.post(CONTACTS, {"email": "a@example.com", "attributes": {"plan": "pro"}}, format="json").status_code
        == 201
    )
    assert api_b.get(url).status_code == 404 and api_b.delete(url).status_code == 404
    assert api_a.delete(url).status_code == 204
    assert api_a.get(url).status_code == 404
    rejected = api_a.post(CONTACTS, {"email": "a@example.com", "attributes": {"plan": "pro"}}, format="json")
    assert "unknown attribute" in fields_of(rejected)["attributes"][0]


def test_attribute_label_defaults_from_the_key(world: World, api_a: APIClient):
    body = api_a.post(ATTRIBUTES, {"key": "renewal_date", "type": "date"}, format="json").json()
    assert body["label"] == "Renewal date"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"key": "Plan Name", "type": "text"}, "key"),
        ({"key": "plan", "type": "colour"}, "type"),
        ({"key": "plan"}, "type"),
        ({"key": "plan", "type": "text", "default": "free"}, "default"),
        ({"key": "existing", "type": "text"}, "key"),
        ({"key": 7, "type": "text"}, "key"),
    ],
)
def test_attribute_create_rejects_bad_input(world: World, api_a: APIClient, body, field):
    define(world.tenant_a, "existing", AttributeDefinition.Type.TEXT)
    assert field in fields_of(api_a.post(ATTRIBUTES, body, format="json"))


def test_attribute_key_and_type_cannot_change(world: World, api_a: APIClient):
    attribute = api_a.post(ATTRIBUTES, {"key": "seats", "type": "number"}, format="json").json()
    url = f"{ATTRIBUTES}{attribute['id']}/"
    assert "key" in fields_of(api_a.patch(url, {"key": "licences"}, format="json"))
    assert "type" in fields_of(api_a.patch(url, {"type": "text"}, format="json"))
    assert "label" in fields_of(api_a.patch(url, {"label": " "}, format="json"))
    assert "colour" in fields_of(api_a.patch(url, {"colour": "red"}, format="json"))
    assert api_a.get(url).json() == attribute


# --- the schema ------------------------------------------------------------------------------------
def test_openapi_documents_every_contacts_endpoint(db):
    document = APIClient().get("/api/schema/?format=json").json()
    paths = document["paths"]
    expected = {
        "/api/v1/contacts/": {"get", "post"},
        "/api/v1/contacts/{contact_id}/": {"get", "patch"},
        "/api/v1/contacts/bulk/": {"post"},
        "/api/v1/contacts/{contact_id}/consent/": {"get", "post"},
        "/api/v1/contacts/{contact_id}/export/": {"get"},
        "/api/v1/contacts/{contact_id}/erase/": {"post"},
        "/api/v1/events/": {"post"},
        "/api/v1/events/batch/": {"post"},
        "/api/v1/identify/": {"post"},
        "/api/v1/suppressions/": {"get", "post"},
        "/api/v1/suppressions/{suppression_id}/": {"get", "delete"},
        "/api/v1/attributes/": {"get", "post"},
        "/api/v1/attributes/{attribute_id}/": {"get", "patch", "delete"},
    }
    for path, verbs in expected.items():
        assert set(paths[path]) - {"parameters"} == verbs, path
    for path in ("/api/v1/contacts/bulk/", "/api/v1/events/batch/"):
        operation = paths[path]["post"]
        assert operation["requestBody"]["content"]["application/json"]["examples"]
        assert operation["responses"]["200"]["content"]["application/json"]["examples"]
    list_parameters = {p["name"] for p in paths["/api/v1/contacts/"]["get"]["parameters"]}
    assert {"email", "external_id", "lifecycle_stage", "country", "updated_since", "cursor"} <= list_parameters
    contact = document["components"]["schemas"]["Contact"]["properties"]
    assert {"email", "phone", "country", "interests", "attributes", "engagement", "consent"} <= set(contact)


def test_bulk_updates_only_the_fields_each_row_sends(world: World, api_a: APIClient):
    api_a.post(
        BULK,
        {"contacts": [{"external_id": "u-1", "city": "Paris", "last_name": "Curie"},
                      {"external_id": "u-2", "city": "Oslo", "last_name": "Abel"}]},
        format="json",
    )  # fmt: skip
    body = api_a.post(
        BULK, {"contacts": [{"external_id": "u-1", "city": "Warsaw"}, {"external_id": "u-2", "last_name": "Lie"}]},
        format="json",
    ).json()  # fmt: skip
    assert body["counts"] == {"created": 0, "updated": 2, "error": 0}
    with tenant_context(world.tenant_a.id):
        saved = {c.external_id: (c.city, c.last_name) for c in Contact.objects.all()}
    assert saved == {"u-1": ("Warsaw", "Curie"), "u-2": ("Oslo", "Lie")}
