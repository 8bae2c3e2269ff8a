"""The events API (single and batch) and identify."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.db.models import Sum
from rest_framework.test import APIClient

from contacts.ingest import events_ingest
from contacts.models import Contact, Event, EventDailyRollup, LifecycleStage, LifecycleTransition
from tenants.context import tenant_context
from tests.conftest import World, api_client

pytestmark = pytest.mark.django_db

EVENTS = "/api/v1/events/"
BATCH = "/api/v1/events/batch/"
IDENTIFY = "/api/v1/identify/"


def fields_of(response) -> dict:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] in ("invalid", "parse_error") and error["message"]
    return error.get("fields", {})


def purchase(key: str, amount: str = "25.00", **who) -> dict:
    return {
        "event": "purchase", "occurred_at": "2026-11-02T10:00:00Z", "revenue": amount, "currency": "EUR",
        "properties": {"order_id": key, "items": 2}, "idempotency_key": key, **(who or {"external_id": "u-1"}),
    }  # fmt: skip


def totals(world: World) -> tuple[int, int, Decimal]:
    """(events, events counted by the rollups, revenue in the rollups)."""
    with tenant_context(world.tenant_a.id):
        rollups = EventDailyRollup.objects.aggregate(n=Sum("count"), revenue=Sum("revenue"))
        return Event.objects.count(), rollups["n"] or 0, rollups["revenue"] or Decimal(0)


# --- single events ----------------------------------------------------------------------------
def test_a_single_event_is_stored_once(world: World, api_a: APIClient):
    first = api_a.post(EVENTS, purchase("o-1"), format="json")
    assert first.status_code == 201, first.content
    assert first.json()["status"] == "accepted" and first.json()["id"]
    again = api_a.post(EVENTS, purchase("o-1"), format="json")
    assert again.status_code == 200 and again.json() == {"index": 0, "status": "duplicate", "id": None}
    assert totals(world) == (1, 1, Decimal("25.00"))
    with tenant_context(world.tenant_a.id):
        contact = Contact.objects.get(external_id="u-1")
        assert (contact.order_count, contact.lifecycle_stage) == (1, LifecycleStage.FIRST_TIME_BUYER)
        event = Event.objects.get()
        assert (event.name, event.properties, event.source) == ("purchase", {"order_id": "o-1", "items": 2}, "api")


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"event": "page_view", "external_id": "u-1", "occurred_at": "yesterday"}, "occurred_at"),
        ({"event": "page_view", "external_id": "u-1", "occurred_at": "2999-01-01T00:00:00Z"}, "occurred_at"),
        ({"event": "page_view", "external_id": "u-1", "occurred_at": 1700000000}, "occurred_at"),
        ({"event": "page_view", "external_id": "u-1", "occurred_at": "2026-13-01T25:61:00Z"}, "occurred_at"),
        ({"event": "page_view", "external_id": "u-1", "properties": {"note": "a\x00b"}}, "properties"),
        ({"event": "page_view", "external_id": "u\x00-1"}, "external_id"),
        ({"event": "page_view"}, "contact"),
        ({"event": "", "external_id": "u-1"}, "event"),
        ({"event": ["page_view"], "external_id": "u-1"}, "event"),
        ({"event": "purchase", "external_id": "u-1", "revenue": "lots"}, "revenue"),
        ({"event": "purchase", "external_id": "u-1", "revenue": "1e15"}, "revenue"),
        ({"event": "purchase", "external_id": "u-1", "currency": "EURO"}, "currency"),
        ({"event": "page_view", "external_id": "u-1", "properties": ["a"]}, "properties"),
        ({"event": "page_view", "external_id": "u-1", "properties": {"x": "y" * 20_000}}, "properties"),
        ({"event": "page_view", "external_id": {"id": 1}}, "external_id"),
        ({"event": "page_view", "email": "not-an-address"}, "email"),
        ({"event": "page_view", "contact_id": "seven"}, "contact_id"),
        ({"event": "page_view", "contact_id": "9" * 30}, "contact_id"),
        ({"event": "page_view", "contact_id": 99999999}, "contact_id"),
        ({"event": "page_view", "external_id": "u-1", "idempotency_key": 42}, "idempotency_key"),
        ({"event": "page_view", "external_id": "u-1", "colour": "red"}, "non_field_errors"),
    ],
)
def test_a_bad_event_is_a_400_with_field_and_reason(world: World, api_a: APIClient, event, field):
    response = api_a.post(EVENTS, event, format="json")
    if field == "non_field_errors":
        assert response.status_code == 400 and "colour" in response.json()["error"]["message"]
    else:
        assert fields_of(response)[field]
    assert totals(world)[0] == 0


def test_a_single_event_rejects_malformed_bodies(world: World, api_a: APIClient):
    assert api_a.post(EVENTS, "{", content_type="application/json").json()["error"]["code"] == "parse_error"
    listed = api_a.post(EVENTS, [purchase("o-1")], format="json")
    assert listed.status_code == 400 and "JSON object" in listed.json()["error"]["message"]


# --- batches ---------------------------------------------------------------------------------
def test_a_batch_reports_every_row_and_keeps_the_valid_ones(world: World, api_a: APIClient):
    response = api_a.post(
        BATCH,
        {
            "events": [
                purchase("o-1"),
                {"event": "page_view", "anonymous_id": "anon-1", "properties": {"path": "/pricing"}},
                {"event": "page_view", "external_id": "u-1", "occurred_at": "not a time"},
                purchase("o-1"),  # the same key twice in one batch
                "page_view",
                {"event": "email_open", "email": "Ada@Example.com", "occurred_at": "2026-11-03T08:00:00+01:00"},
            ]
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["counts"] == {"accepted": 3, "duplicate": 1, "error": 2}
    statuses = [(r["index"], r["status"]) for r in body["results"]]
    assert statuses == [
        (0, "accepted"), (1, "accepted"), (2, "error"), (3, "duplicate"), (4, "error"), (5, "accepted"),
    ]  # fmt: skip
    assert body["results"][2]["errors"] == {"occurred_at": ["Expected an ISO 8601 time, e.g. 2026-11-28T09:30:00Z."]}
    assert "JSON object" in body["results"][4]["errors"]["non_field_errors"][0]
    with tenant_context(world.tenant_a.id):
        assert set(Contact.objects.values_list("external_id", "anonymous_id", "email")) == {
            ("u-1", "", ""), ("", "anon-1", ""), ("", "", "ada@example.com"),
        }  # fmt: skip
        ada = Contact.objects.get(email="ada@example.com")
        assert ada.last_engaged_at == dt.datetime(2026, 11, 3, 7, 0, tzinfo=dt.UTC)
    assert totals(world) == (3, 3, Decimal("25.00"))


def test_the_same_batch_twice_is_all_duplicates_and_counts_once(world: World, api_a: APIClient):
    batch = {
        "events": [purchase(f"o-{i}", "60.00", external_id=f"u-{i % 3}") for i in range(30)]
        + [{"event": "page_view", "external_id": "u-0", "idempotency_key": f"pv-{i}"} for i in range(10)]
    }
    first = api_a.post(BATCH, batch, format="json").json()
    assert first["counts"] == {"accepted": 40, "duplicate": 0, "error": 0}
    second = api_a.post(BATCH, batch, format="json").json()
    assert second["counts"] == {"accepted": 0, "duplicate": 40, "error": 0}
    assert {r["status"] for r in second["results"]} == {"duplicate"}
    assert totals(world) == (40, 40, Decimal("1800.00"))
    with tenant_context(world.tenant_a.id):
        orders = dict(Contact.objects.values_list("external_id", "order_count"))
        revenue = Contact.objects.aggregate(total=Sum("total_revenue"))["total"]
    assert orders == {"u-0": 10, "u-1": 10, "u-2": 10} and revenue == Decimal("1800.00")
    with tenant_context(world.tenant_a.id):
        u0 = Contact.objects.get(external_id="u-0")
        assert u0.lifecycle_stage == LifecycleStage.LOYAL_ADVOCATE
        history = LifecycleTransition.objects.filter(contact=u0).order_by("occurred_at", "id")
        assert [(t.from_stage, t.to_stage, t.reason) for t in history] == [
            ("", "lead", "first seen"), ("lead", "loyal_advocate", "events"),
        ]  # fmt: skip


def test_batch_size_and_shape_are_checked(world: World, api_a: APIClient):
    too_many = [{"event": "page_view", "external_id": "u-1"}] * 10_001
    response = api_a.post(BATCH, json.dumps({"events": too_many}), content_type="application/json")
    assert "At most 10,000 events" in fields_of(response)["events"][0]
    assert fields_of(api_a.post(BATCH, {"events": {"event": "page_view"}}, format="json"))["events"]
    assert fields_of(api_a.post(BATCH, {"events": []}, format="json"))["events"]
    assert fields_of(api_a.post(BATCH, {}, format="json"))["events"]
    assert fields_of(api_a.post(BATCH, {"events": [], "context": {}}, format="json"))["context"]
    malformed = api_a.post(BATCH, '{"events": [', content_type="application/json")
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "parse_error"
    assert totals(world)[0] == 0


def test_a_full_batch_of_ten_thousand(world: World, api_a: APIClient):
    events = [
        {"event": "page_view", "external_id": f"u-{i % 500}", "idempotency_key": f"k-{i}",
         "occurred_at": f"2026-11-{1 + i % 20:02d}T10:00:00Z", "properties": {"path": f"/p/{i % 40}"}}
        for i in range(10_000)
    ]  # fmt: skip
    body = api_a.post(BATCH, json.dumps({"events": events}), content_type="application/json").json()
    assert body["counts"] == {"accepted": 10_000, "duplicate": 0, "error": 0}
    assert totals(world)[:2] == (10_000, 10_000)


def test_events_name_contacts_of_the_own_tenant_only(world: World, api_a: APIClient, api_b: APIClient):
    contact_id = api_a.post("/api/v1/contacts/", {"email": "ada@example.com"}, format="json").json()["id"]
    assert api_a.post(EVENTS, {"event": "page_view", "contact_id": contact_id}, format="json").status_code == 201
    padded = api_a.post(EVENTS, {"event": "page_view", "contact_id": f"00{contact_id}"}, format="json")
    assert padded.status_code == 201
    other = api_b.post(EVENTS, {"event": "page_view", "contact_id": contact_id}, format="json")
    assert fields_of(other) == {"contact_id": ["No such contact."]}
    # B's external ids and emails are B's own contacts, never A's.
    assert api_b.post(EVENTS, {"event": "page_view", "email": "ada@example.com"}, format="json").status_code == 201
    with tenant_context(world.tenant_b.id):
        assert Contact.objects.get(email="ada@example.com").pk != contact_id
    assert totals(world)[0] == 2


def test_read_key_cannot_send_events(world: World, api_a_read: APIClient):
    for url, body in ((EVENTS, purchase("o-1")), (BATCH, {"events": [purchase("o-1")]})):
        response = api_a_read.post(url, body, format="json")
        assert response.status_code == 403 and response.json()["error"]["code"] == "permission_denied"
    identify = api_a_read.post(IDENTIFY, {"anonymous_id": "a", "traits": {"email": "a@example.com"}}, format="json")
    assert identify.status_code == 403
    assert totals(world)[0] == 0


# --- identify --------------------------------------------------------------------------------
def test_identify_merges_the_anonymous_visitor_into_the_known_contact(world: World, api_a: APIClient):
    api_a.post(
        BATCH,
        {
            "events": [
                {"event": "page_view", "anonymous_id": "anon-7", "occurred_at": "2026-11-01T09:00:00Z"},
                {"event": "add_to_cart", "anonymous_id": "anon-7", "occurred_at": "2026-11-01T09:05:00Z"},
                purchase("o-anon", "20.00", anonymous_id="anon-7"),
                purchase("o-known", "30.00", email="kim@example.com"),
            ]
        },
        format="json",
    )
    with tenant_context(world.tenant_a.id):
        anonymous_id = Contact.objects.get(anonymous_id="anon-7").pk
        known_id = Contact.objects.get(email="kim@example.com").pk
    response = api_a.post(
        IDENTIFY, {"anonymous_id": "anon-7", "traits": {"email": "KIM@example.com", "first_name": "Kim"}}, format="json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["id"], body["anonymous_id"], body["first_name"]) == (known_id, "anon-7", "Kim")
    assert body["engagement"]["order_count"] == 2 and body["engagement"]["total_revenue"] == "50.00"
    assert body["lifecycle_stage"] == LifecycleStage.REPEAT_CUSTOMER
    with tenant_context(world.tenant_a.id):
        assert not Contact.objects.filter(pk=anonymous_id).exists()
        assert Event.objects.filter(contact_id=known_id).count() == 4  # nothing lost
    assert totals(world) == (4, 4, Decimal("50.00"))
    # Later events of the anonymous id land on the known contact.
    api_a.post(EVENTS, {"event": "page_view", "anonymous_id": "anon-7"}, format="json")
    with tenant_context(world.tenant_a.id):
        assert Event.objects.filter(contact_id=known_id).count() == 5


def test_identify_without_an_anonymous_contact_creates_or_updates_the_known_one(world: World, api_a: APIClient):
    response = api_a.post(IDENTIFY, {"anonymous_id": "anon-9", "traits": {"external_id": "u-9"}}, format="json")
    assert response.status_code == 200
    assert (response.json()["external_id"], response.json()["anonymous_id"]) == ("u-9", "anon-9")


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"traits": {"email": "kim@example.com"}}, {"anonymous_id"}),
        ({"anonymous_id": "anon-1"}, {"traits"}),
        ({"anonymous_id": "anon-1", "traits": "kim@example.com"}, {"traits"}),
        ({"anonymous_id": "anon-1", "traits": {"email": "kim@"}}, {"traits"}),
        ({"anonymous_id": "anon-1", "traits": {"first_name": "Kim"}}, {"traits"}),
        ({"anonymous_id": "anon-1", "traits": {"email": "kim@example.com", "shoe": 9}}, {"traits"}),
        ({"anonymous_id": "x" * 201, "traits": {"email": "kim@example.com"}}, {"anonymous_id"}),
        ({"anonymous_id": "anon-1", "traits": {"email": "kim@example.com"}, "context": {}}, {"context"}),
    ],
)
def test_identify_rejects_bad_input(world: World, api_a: APIClient, body, fields):
    assert set(fields_of(api_a.post(IDENTIFY, body, format="json"))) == fields
    with tenant_context(world.tenant_a.id):
        assert not Contact.objects.exists()


def test_identify_reports_trait_errors_under_traits(world: World, api_a: APIClient):
    response = api_a.post(
        IDENTIFY, {"anonymous_id": "anon-1", "traits": {"email": "kim@", "country": "XX"}}, format="json"
    )
    assert set(fields_of(response)["traits"]) == {"email", "country"}


# --- concurrency (real commits) -----------------------------------------------------------------
def wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def someone_waits_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_that_create_the_same_contacts_both_succeed(world: World):
    """The second batch waits for the first one's new contacts, then uses them: no error, no twins."""
    events = [{"event": "page_view", "external_id": f"new-{i}"} for i in range(50)]
    release = threading.Event()
    outcome: dict[str, object] = {}

    def first() -> None:
        try:
            with tenant_context(world.tenant_a.id), transaction.atomic():
                outcome["first"] = events_ingest(tenant=world.tenant_a, events=events)
                release.wait(10)  # hold the new contacts uncommitted
        finally:
            connection.close()

    def second() -> None:
        try:
            outcome["second"] = api_client(world.secret_a).post(BATCH, {"events": events}, format="json")
        finally:
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    wait_for(lambda: "first" in outcome)
    threads[1].start()
    wait_for(someone_waits_for_a_lock)  # the second batch is blocked on the first one's contacts
    release.set()
    for thread in threads:
        thread.join(20)
    response = outcome["second"]
    assert response.status_code == 200, response.content  # type: ignore[attr-defined]
    assert response.json()["counts"] == {"accepted": 50, "duplicate": 0, "error": 0}  # type: ignore[attr-defined]
    with tenant_context(world.tenant_a.id):
        assert Contact.objects.count() == 50
        assert Event.objects.count() == 100
        assert {c.count for c in EventDailyRollup.objects.all()} == {2}
