"""Event ingest: idempotency, rollups, summaries, lifecycle, identify and merge."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db.models import Count, Sum
from django.db.models.functions import TruncDate

from contacts.consent import ConsentEvidence, consent_change
from contacts.ingest import contact_identify, events_ingest
from contacts.models import ConsentRecord, ConsentState, Contact, Event, EventDailyRollup, LifecycleStage
from contacts.services import contact_upsert
from tenants.audit import Actor
from tenants.context import tenant_context
from tests.conftest import World

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("test")


@pytest.fixture
def in_a(world: World):
    with tenant_context(world.tenant_a.id):
        yield world.tenant_a


def purchase(ref: dict, amount: str, when: str, key: str = "") -> dict:
    return {
        "event": "purchase",
        "revenue": amount,
        "currency": "EUR",
        "occurred_at": when,
        "idempotency_key": key,
        **ref,
    }


def assert_rollups_match_events(tenant) -> None:
    expected = {
        (row["contact_id"], row["name"], row["day"]): (row["n"], row["revenue"] or Decimal(0))
        for row in Event.objects.filter(tenant=tenant)
        .annotate(day=TruncDate("occurred_at", tzinfo=dt.UTC))
        .values("contact_id", "name", "day")
        .annotate(n=Count("id"), revenue=Sum("revenue"))
    }
    actual = {
        (r.contact_id, r.name, r.day): (r.count, r.revenue) for r in EventDailyRollup.objects.filter(tenant=tenant)
    }
    assert actual == expected


def test_a_batch_is_stored_with_rollups_and_summaries(in_a):
    results = events_ingest(
        tenant=in_a,
        events=[
            {"event": "page_view", "external_id": "u1", "occurred_at": "2026-11-01T10:00:00Z"},
            purchase({"external_id": "u1"}, "40.00", "2026-11-01T11:00:00Z", "o-1"),
            purchase({"external_id": "u1"}, "60.50", "2026-11-03T09:00:00+01:00", "o-2"),
            {"event": "email_open", "external_id": "u1", "occurred_at": "2026-11-04T08:00:00Z"},
            {"event": "page_view", "anonymous_id": "anon-9"},
        ],
    )
    assert [r.status for r in results] == ["accepted"] * 5
    u1 = Contact.objects.get(external_id="u1")
    assert (u1.order_count, u1.total_revenue) == (2, Decimal("100.50"))
    assert u1.last_order_at == dt.datetime(2026, 11, 3, 8, 0, tzinfo=dt.UTC)
    assert u1.first_seen_at <= dt.datetime(2026, 11, 1, 10, 0, tzinfo=dt.UTC)
    assert u1.last_engaged_at == dt.datetime(2026, 11, 4, 8, 0, tzinfo=dt.UTC)
    assert u1.lifecycle_stage == LifecycleStage.REPEAT_CUSTOMER
    anonymous = Contact.objects.get(anonymous_id="anon-9")
    assert anonymous.lifecycle_stage == LifecycleStage.NEW_VISITOR
    assert_rollups_match_events(in_a)


def test_a_repeated_idempotency_key_is_a_no_op(in_a):
    batch = [purchase({"email": "buyer@example.com"}, "10", "2026-11-05T10:00:00Z", f"k-{i}") for i in range(3)]
    assert {r.status for r in events_ingest(tenant=in_a, events=batch)} == {"accepted"}
    assert {r.status for r in events_ingest(tenant=in_a, events=batch)} == {"duplicate"}
    # within one batch too
    [first, second] = events_ingest(
        tenant=in_a, events=[purchase({"email": "buyer@example.com"}, "5", "2026-11-06T10:00:00Z", "same")] * 2
    )
    assert (first.status, second.status) == ("accepted", "duplicate")
    buyer = Contact.objects.get(email="buyer@example.com")
    assert buyer.order_count == 4 and buyer.total_revenue == Decimal("35.00")
    assert_rollups_match_events(in_a)


def test_bad_rows_are_reported_and_good_rows_kept(in_a):
    results = events_ingest(
        tenant=in_a,
        events=[
            {"event": "", "external_id": "u1"},
            {"event": "page_view"},
            {"event": "page_view", "external_id": "u1", "occurred_at": "yesterday"},
            {"event": "purchase", "external_id": "u1", "revenue": "lots"},
            {"event": "purchase", "external_id": "u1", "currency": "euro"},
            {"event": "page_view", "external_id": "u1", "properties": ["not", "an", "object"]},
            {"event": "page_view", "external_id": "u1", "colour": "red"},
            {"event": "page_view", "contact_id": 987654321},
            {"event": "page_view", "email": "not-an-email"},
            {"event": "page_view", "external_id": "u1", "occurred_at": "2099-01-01T00:00:00Z"},
            {"event": "page_view", "external_id": "u1"},
        ],
    )
    fields = [set(r.errors) for r in results]
    assert fields == [
        {"event"}, {"contact"}, {"occurred_at"}, {"revenue"}, {"currency"}, {"properties"},
        {"non_field_errors"}, {"contact_id"}, {"email"}, {"occurred_at"}, set(),
    ]  # fmt: skip
    assert results[-1].status == "accepted"
    assert Event.objects.count() == 1


def test_events_by_contact_id_are_confined_to_the_tenant(world: World):
    with tenant_context(world.tenant_b.id):
        other, _ = contact_upsert(tenant=world.tenant_b, data={"email": "b-person@example.com"})
    with tenant_context(world.tenant_a.id):
        [result] = events_ingest(tenant=world.tenant_a, events=[{"event": "page_view", "contact_id": other.pk}])
        assert result.status == "error" and Event.objects.count() == 0


def test_identify_merges_the_anonymous_visitor_into_the_known_contact(in_a):
    events_ingest(
        tenant=in_a,
        events=[
            {"event": "page_view", "anonymous_id": "anon-1", "occurred_at": "2026-11-01T10:00:00Z"},
            {"event": "add_to_cart", "anonymous_id": "anon-1", "occurred_at": "2026-11-01T10:05:00Z"},
            purchase({"anonymous_id": "anon-1"}, "20", "2026-11-01T10:10:00Z", "p-anon"),
        ],
    )
    known, _ = contact_upsert(tenant=in_a, data={"email": "known@example.com", "first_name": "Kim"})
    events_ingest(tenant=in_a, events=[purchase({"email": "known@example.com"}, "30", "2026-11-01T12:00:00Z", "p-k")])
    anonymous = Contact.objects.get(anonymous_id="anon-1")
    consent_change(
        contact=anonymous, channel="push", purpose="marketing", status="granted",
        evidence=ConsentEvidence(source="form"), actor=ACTOR,
    )  # fmt: skip
    total_events = Event.objects.count()

    merged = contact_identify(
        tenant=in_a, anonymous_id="anon-1", traits={"email": "known@example.com", "city": "Lyon"}, actor=ACTOR
    )
    assert merged.pk == known.pk
    assert not Contact.objects.filter(pk=anonymous.pk).exists()
    assert Event.objects.filter(contact=merged).count() == total_events == 4
    assert (merged.order_count, merged.total_revenue) == (2, Decimal("50.00"))
    assert merged.anonymous_id == "anon-1" and merged.city == "Lyon" and merged.first_name == "Kim"
    assert merged.lifecycle_stage == LifecycleStage.REPEAT_CUSTOMER
    assert ConsentRecord.objects.filter(contact=merged).count() == 1
    assert ConsentState.objects.get(contact=merged, channel="push").status == "granted"
    assert_rollups_match_events(in_a)
    # Later events with the anonymous id land on the known contact.
    events_ingest(tenant=in_a, events=[{"event": "page_view", "anonymous_id": "anon-1"}])
    assert Event.objects.filter(contact=merged).count() == 5


@pytest.mark.django_db(transaction=True)
def test_identify_merges_the_visitors_first_event_contact_created_while_it_ran(world: World):
    """The snippet sends a visitor's first page view and its identify at once. When the event's anonymous
    contact is committed after identify looked for it, identify's claim of the anonymous id collides with
    it (a 500 before): identify now merges that contact instead."""
    import threading

    from django.db import connection, transaction

    tenant = world.tenant_a
    with tenant_context(tenant.id):
        known, _ = contact_upsert(tenant=tenant, data={"email": "racer@example.com"})
    inserted, release = threading.Event(), threading.Event()

    def first_event() -> None:
        try:
            with tenant_context(tenant.id), transaction.atomic():
                events_ingest(tenant=tenant, events=[{"event": "page_view", "anonymous_id": "anon-race"}])
                inserted.set()
                release.wait(10)  # committed once identify waits on the anonymous id's unique index
        finally:
            connection.close()

    thread = threading.Thread(target=first_event)
    thread.start()
    assert inserted.wait(10)
    threading.Timer(0.5, release.set).start()
    with tenant_context(tenant.id):
        merged = contact_identify(
            tenant=tenant, anonymous_id="anon-race", traits={"email": "racer@example.com"}, actor=ACTOR
        )
        thread.join(10)
        assert merged.pk == known.pk and merged.anonymous_id == "anon-race"
        assert list(Contact.objects.filter(anonymous_id="anon-race").values_list("pk", flat=True)) == [known.pk]
        assert Event.objects.get(name="page_view", contact__email="racer@example.com")
