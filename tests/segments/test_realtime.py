"""Real time: a write to contacts reaches a real Celery worker, which updates the memberships."""

from __future__ import annotations

import time

import pytest
from celery.contrib.testing.worker import start_worker

from contacts.consent import ConsentEvidence, consent_change, suppression_add
from contacts.ingest import events_ingest
from contacts.models import Contact, Suppression
from contacts.privacy import contact_erase
from contacts.services import contact_update, contacts_bulk_upsert
from contacts.signals import contacts_changed
from segmentor.celery import app
from segments.models import Segment, SegmentMember, SegmentTransition
from segments.services import segment_create, segment_refresh
from tenants.audit import Actor
from tenants.context import tenant_context

ACTOR = Actor.system("test")
GERMANS = {"all": [{"type": "field", "field": "country", "op": "eq", "value": "DE"}]}


class Received:
    def __init__(self) -> None:
        self.calls: list[tuple[int, list[int]]] = []

    def __call__(self, sender, *, tenant_id, contact_ids, **kwargs) -> None:
        self.calls.append((tenant_id, contact_ids))


@pytest.fixture
def received():
    receiver = Received()
    contacts_changed.connect(receiver, dispatch_uid="test-receiver")
    yield receiver
    contacts_changed.disconnect(dispatch_uid="test-receiver")


@pytest.mark.django_db
def test_every_kind_of_contact_write_announces_the_contacts_it_touched(
    world, received, django_capture_on_commit_callbacks
):
    tenant = world.tenant_a
    with tenant_context(tenant.id):
        with django_capture_on_commit_callbacks(execute=True):
            [result] = contacts_bulk_upsert(tenant=tenant, rows=[{"email": "ann@example.com", "country": "FR"}])
        contact = Contact.objects.get(pk=result.id)
        with django_capture_on_commit_callbacks(execute=True):
            contact_update(contact=contact, data={"country": "DE"})
        with django_capture_on_commit_callbacks(execute=True):
            consent_change(
                contact=contact, channel="email", purpose="marketing", status="granted",
                evidence=ConsentEvidence(source="api"), actor=ACTOR,
            )  # fmt: skip
        with django_capture_on_commit_callbacks(execute=True):
            suppression_add(tenant=tenant, channel="email", address="ann@example.com", reason=Suppression.Reason.MANUAL)
        with django_capture_on_commit_callbacks(execute=True):
            events_ingest(tenant=tenant, events=[{"event": "page_view", "email": "ann@example.com"}])
        with django_capture_on_commit_callbacks(execute=True):
            contact_erase(contact=contact, actor=ACTOR)
    assert received.calls == [(tenant.id, [contact.pk])] * 6


@pytest.mark.django_db
def test_listeners_run_in_the_tenants_scope_after_the_commit(world, django_capture_on_commit_callbacks):
    """The announcements go out with the tenant in scope, in the database too (row-level security), even
    when the code that committed has left its tenant context: the listeners' small queries see the rows."""
    from django.db import connection

    from contacts.signals import events_recorded
    from tenants.context import current_scope

    seen: list[tuple[int | None, str, int]] = []

    def listener(sender, *, tenant_id, event_ids, **kwargs) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('app.tenant_id', true)")
            (setting,) = cursor.fetchone()
        seen.append((current_scope().tenant_id, setting, Contact.objects.filter(tenant_id=tenant_id).count()))

    events_recorded.connect(listener, dispatch_uid="test-scope")
    try:
        tenant = world.tenant_a
        with django_capture_on_commit_callbacks() as callbacks, tenant_context(tenant.id):
            events_ingest(tenant=tenant, events=[{"event": "page_view", "email": "scope@example.com"}])
        for callback in callbacks:  # as after the request's commit, outside its tenant context
            callback()
    finally:
        events_recorded.disconnect(dispatch_uid="test-scope")
    assert seen == [(tenant.id, str(tenant.id), 1)]


@pytest.fixture
def worker():
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10) as w:
        yield w


def wait_for(check, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting for the worker")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_change_moves_the_contact_between_segments_within_seconds(world, worker):
    tenant = world.tenant_a
    with tenant_context(tenant.id):
        [ann, bob] = [
            Contact.objects.get(pk=r.id)
            for r in contacts_bulk_upsert(
                tenant=tenant, rows=[{"email": "ann@example.com", "country": "DE"}, {"email": "bob@example.com"}]
            )
        ]
        germans = segment_create(tenant=tenant, actor=ACTOR, name="Germans", rules=GERMANS)
        buyers = segment_create(
            tenant=tenant, actor=ACTOR, name="Buyers",
            rules={"all": [{"type": "event", "name": "purchase", "op": "performed"}]},
        )  # fmt: skip
        # The first refresh is queued when a segment is created; wait for both.
        wait_for(lambda: Segment.objects.filter(materialized_version=1).count() == 2)
        assert set(SegmentMember.objects.filter(segment=germans).values_list("contact_id", flat=True)) == {ann.pk}

        contact_update(contact=bob, data={"country": "DE"})
        contact_update(contact=ann, data={"country": "AT"})
        events_ingest(tenant=tenant, events=[{"event": "purchase", "email": "bob@example.com", "revenue": "20"}])

        wait_for(lambda: SegmentMember.objects.filter(segment=buyers, contact=bob).exists())
        wait_for(
            lambda: set(SegmentMember.objects.filter(segment=germans).values_list("contact_id", flat=True)) == {bob.pk}
        )
        kinds = set(SegmentTransition.objects.filter(segment=germans).values_list("contact_id", "kind"))
        assert kinds == {(ann.pk, "entered"), (bob.pk, "entered"), (ann.pk, "exited")}
        assert segment_refresh(segment=germans).entered == 0  # real time left nothing for the full refresh
