"""After-commit listeners that could not hand their work over (the broker away) are kept and run again."""

from __future__ import annotations

from typing import Any

import pytest
from kombu.exceptions import OperationalError as BrokerError

from contacts.models import Contact, PendingAnnouncement
from contacts.services import contact_update
from contacts.signals import contacts_changed, tenants_with_pending_announcements
from contacts.tasks import retry_announcements
from tenants.context import tenant_context
from tests.conftest import World

pytestmark = pytest.mark.django_db

CALLS: list[tuple[int, list[int]]] = []
FAILURES: list[BaseException] = []  # raised one by one, then the listener succeeds


def flaky_listener(sender: Any, *, tenant_id: int, contact_ids: list[int], **kwargs: Any) -> None:
    if FAILURES:
        raise FAILURES.pop(0)
    CALLS.append((tenant_id, contact_ids))


@pytest.fixture
def flaky():
    CALLS.clear()
    FAILURES.clear()
    contacts_changed.connect(flaky_listener, dispatch_uid="test-flaky")
    yield
    contacts_changed.disconnect(dispatch_uid="test-flaky")


def change_a_contact(world: World, django_capture_on_commit_callbacks: Any) -> Contact:
    tenant = world.tenant_a
    with tenant_context(tenant.id):
        contact = Contact.objects.create(tenant=tenant, email="ann@example.com")
        with django_capture_on_commit_callbacks(execute=True):
            contact_update(contact=contact, data={"city": "Lyon"})
    return contact


def test_a_listener_that_could_not_queue_its_task_is_kept_and_run_again_until_it_does(
    world: World, flaky, django_capture_on_commit_callbacks
):
    refused = "Error 111 connecting to 127.0.0.1:6379. Connection refused."
    FAILURES.extend([BrokerError(refused), BrokerError(refused)])
    contact = change_a_contact(world, django_capture_on_commit_callbacks)
    tenant_id = world.tenant_a.id
    assert CALLS == []
    assert tenants_with_pending_announcements() == [tenant_id]
    with tenant_context(tenant_id):
        row = PendingAnnouncement.objects.get()
    assert (row.signal, row.receiver, row.payload, row.attempts) == (
        "contacts_changed", "tests.contacts.test_announcements.flaky_listener", {"contact_ids": [contact.pk]}, 1
    )  # fmt: skip
    assert row.error.startswith("OperationalError: Error 111")

    assert retry_announcements(tenant_id) == 0  # still away: kept, counted
    with tenant_context(tenant_id):
        assert PendingAnnouncement.objects.get().attempts == 2
    assert retry_announcements(tenant_id) == 1  # back: run with the same arguments, then forgotten
    assert [(tenant_id, [contact.pk])] == CALLS
    with tenant_context(tenant_id):
        assert not PendingAnnouncement.objects.exists()
    assert tenants_with_pending_announcements() == []


def test_a_listeners_own_bug_is_logged_not_kept(world: World, flaky, django_capture_on_commit_callbacks, caplog):
    FAILURES.append(ValueError("a bug, not an outage"))
    change_a_contact(world, django_capture_on_commit_callbacks)
    with tenant_context(world.tenant_a.id):
        assert not PendingAnnouncement.objects.exists()
    assert "a bug, not an outage" in caplog.text


def test_after_the_broker_was_found_away_listeners_fail_at_once_for_a_while(world: World, monkeypatch):
    """A write during an outage answers without waiting for every listener's publish retries: after one
    hand-over could not reach the broker, the next ones fail at once (and are kept) until the backoff ends."""
    import time

    from celery import current_app
    from kombu.exceptions import OperationalError

    from segmentor import celery as segmentor_celery
    from segmentor.celery import BrokerUnavailable, hand_over
    from segments.tasks import evaluate_contacts

    monkeypatch.setattr(segmentor_celery, "_broker_down_until", 0.0)
    nowhere = current_app.connection_for_write("redis://127.0.0.1:9/0")  # nothing listens on port 9
    with pytest.raises(OperationalError):
        hand_over(evaluate_contacts, world.tenant_a.id, [1], connection=nowhere, retry=False)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        hand_over(evaluate_contacts, world.tenant_a.id, [1])  # the real broker is up, but not tried
    assert time.monotonic() - started < 0.05
    monkeypatch.setattr(segmentor_celery, "_broker_down_until", time.monotonic() - 1)  # the backoff is over
    with pytest.raises(OperationalError) as tried:  # tried again (nothing queued on the real broker here)
        hand_over(evaluate_contacts, world.tenant_a.id, [1], connection=nowhere, retry=False)
    assert not isinstance(tried.value, BrokerUnavailable)
