"""Deferred event ingest: stored at once, applied by a worker, each event counted exactly once."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal
from unittest import mock

import pytest
from celery.contrib.testing.worker import start_worker
from django.db.models import Sum
from rest_framework.test import APIClient

from contacts import ingest
from contacts.ingest import events_apply_backlog, events_ingest, tenants_with_stale_backlog
from contacts.models import Contact, Event, EventBacklog, EventDailyRollup, LifecycleStage
from contacts.tasks import apply_event_backlog_all
from segmentor.celery import app
from tenants.context import tenant_context
from tests.conftest import World

pytestmark = pytest.mark.django_db
BATCH = "/api/v1/events/batch/"


def purchase(key: str, amount: str = "60.00", **who) -> dict:
    return {
        "event": "purchase", "occurred_at": "2026-11-02T10:00:00Z", "revenue": amount, "currency": "EUR",
        "idempotency_key": key, **(who or {"external_id": "u-1"}),
    }  # fmt: skip


def applied(world: World) -> tuple[int, int, Decimal]:
    """(events stored, events counted by the rollups, revenue in the contacts' summaries)."""
    with tenant_context(world.tenant_a.id):
        rollups = EventDailyRollup.objects.aggregate(n=Sum("count"))["n"] or 0
        revenue = Contact.objects.aggregate(total=Sum("total_revenue"))["total"] or Decimal(0)
        return Event.objects.count(), rollups, revenue


def backlog(world: World) -> int:
    with tenant_context(world.tenant_a.id):
        return EventBacklog.objects.count()


BATCH_OF_SIX = [purchase(f"o-{i}", external_id=f"u-{i % 2}") for i in range(6)] + [
    {"event": "email_open", "external_id": "u-0", "occurred_at": "2026-11-03T08:00:00Z"},
    {"event": "page_view", "anonymous_id": "anon-1", "occurred_at": "2026-11-01T09:00:00Z"},
]


def test_deferred_events_are_stored_at_once_and_applied_once_by_the_worker(world: World):
    with tenant_context(world.tenant_a.id):
        results = events_ingest(tenant=world.tenant_a, events=BATCH_OF_SIX, defer_apply=True)
        assert [r.status for r in results] == ["accepted"] * 8 and all(r.id for r in results)
        # Stored, and the contacts exist; nothing counted yet.
        assert applied(world) == (8, 0, Decimal(0)) and backlog(world) == 1
        assert events_apply_backlog(tenant=world.tenant_a) == 8
        assert events_apply_backlog(tenant=world.tenant_a) == 0  # nothing twice
        assert applied(world) == (8, 8, Decimal("360.00")) and backlog(world) == 0
        u0 = Contact.objects.get(external_id="u-0")
        assert (u0.order_count, u0.lifecycle_stage) == (3, LifecycleStage.REPEAT_CUSTOMER)
        assert u0.last_engaged_at == dt.datetime(2026, 11, 3, 8, 0, tzinfo=dt.UTC)
        assert u0.last_order_at == dt.datetime(2026, 11, 2, 10, 0, tzinfo=dt.UTC)
        assert Contact.objects.get(anonymous_id="anon-1").lifecycle_stage == LifecycleStage.NEW_VISITOR


def test_a_repeated_key_is_a_duplicate_across_the_backlog(world: World):
    with tenant_context(world.tenant_a.id):
        events_ingest(tenant=world.tenant_a, events=BATCH_OF_SIX[:6], defer_apply=True)
        # Before the worker ran: the events table itself is the idempotency gate, deferred or not.
        again = events_ingest(tenant=world.tenant_a, events=BATCH_OF_SIX[:6], defer_apply=True)
        assert {r.status for r in again} == {"duplicate"}
        assert {r.status for r in events_ingest(tenant=world.tenant_a, events=BATCH_OF_SIX[:6])} == {"duplicate"}
        assert backlog(world) == 1  # a batch of duplicates leaves nothing to apply
        events_apply_backlog(tenant=world.tenant_a)
        after = events_ingest(tenant=world.tenant_a, events=BATCH_OF_SIX[:6], defer_apply=True)
        assert {r.status for r in after} == {"duplicate"} and backlog(world) == 0
    assert applied(world) == (6, 6, Decimal("360.00"))


def test_several_batches_of_one_contact_are_applied_together(world: World):
    with tenant_context(world.tenant_a.id):
        for i in range(3):
            events_ingest(tenant=world.tenant_a, events=[purchase(f"o-{i}", "100.00")], defer_apply=True)
        assert backlog(world) == 3
        assert events_apply_backlog(tenant=world.tenant_a, max_batches=2) == 3  # two rounds
        u1 = Contact.objects.get(external_id="u-1")
        assert (u1.order_count, u1.total_revenue) == (3, Decimal("300.00"))
        assert u1.lifecycle_stage == LifecycleStage.REPEAT_CUSTOMER


def test_a_crashed_apply_leaves_the_batch_for_the_sweep(world: World):
    with tenant_context(world.tenant_a.id):
        events_ingest(tenant=world.tenant_a, events=BATCH_OF_SIX, defer_apply=True)
        with (
            mock.patch.object(ingest, "lifecycle_refresh", side_effect=RuntimeError("worker killed")),
            pytest.raises(RuntimeError),
        ):
            events_apply_backlog(tenant=world.tenant_a)
        # The rollups and summaries written before the crash were rolled back with it.
        assert applied(world) == (8, 0, Decimal(0)) and backlog(world) == 1
    assert tenants_with_stale_backlog() == []  # fresh: its own task may still be coming
    assert tenants_with_stale_backlog(older_than=dt.timedelta(0)) == [world.tenant_a.pk]
    with (
        mock.patch.object(ingest, "BACKLOG_SWEEP_AGE", dt.timedelta(0)),
        mock.patch("contacts.tasks.apply_event_backlog.delay") as delay,
    ):
        assert apply_event_backlog_all() == 1
    delay.assert_called_once_with(world.tenant_a.pk)
    with tenant_context(world.tenant_a.id):
        assert events_apply_backlog(tenant=world.tenant_a) == 8
    assert applied(world) == (8, 8, Decimal("360.00")) and backlog(world) == 0


def test_the_api_answers_202_when_asked_to_respond_async(
    world: World, api_a: APIClient, django_capture_on_commit_callbacks
):
    with (
        mock.patch("contacts.tasks.apply_event_backlog.delay") as delay,
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = api_a.post(BATCH, {"events": [*BATCH_OF_SIX, "junk"]}, format="json", HTTP_PREFER="respond-async")
    assert response.status_code == 202, response.content
    assert response["Preference-Applied"] == "respond-async"
    assert response.json()["counts"] == {"accepted": 8, "duplicate": 0, "error": 1}
    delay.assert_called_once_with(world.tenant_a.pk)
    assert applied(world) == (8, 0, Decimal(0))
    # Without the preference the batch is applied before the answer, as always.
    sync = api_a.post(BATCH, {"events": [purchase("o-sync", "5.00")]}, format="json", HTTP_PREFER="return=minimal")
    assert sync.status_code == 200 and applied(world) == (9, 1, Decimal("5.00"))


def test_a_broker_outage_does_not_fail_a_stored_batch(
    world: World, api_a: APIClient, django_capture_on_commit_callbacks
):
    with (
        mock.patch("contacts.tasks.apply_event_backlog.delay", side_effect=OSError("broker down")),
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = api_a.post(BATCH, {"events": BATCH_OF_SIX}, format="json", HTTP_PREFER="respond-async")
    assert response.status_code == 202
    assert backlog(world) == 1  # the sweep will apply it


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_applies_an_async_batch(world: World, api_a: APIClient):
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        response = api_a.post(BATCH, {"events": BATCH_OF_SIX}, format="json", HTTP_PREFER="respond-async")
        assert response.status_code == 202
        deadline = time.monotonic() + 30
        while backlog(world) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert backlog(world) == 0
    assert applied(world) == (8, 8, Decimal("360.00"))
    with tenant_context(world.tenant_a.id):
        assert Contact.objects.get(external_id="u-1").lifecycle_stage == LifecycleStage.REPEAT_CUSTOMER
