"""Real parts together: a Celery worker on Redis walks a journey; events arrive through the API;
messages reach a real SMTP server."""

from __future__ import annotations

import time

import pytest
from celery.contrib.testing.worker import start_worker

from journeys.models import Enrollment
from journeys.services import journey_create, journey_start
from segmentor.celery import app
from tenants.context import tenant_context
from tests.campaigns.test_sending_channels import ACTOR, subscriber
from tests.conftest import api_client

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker():
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10) as w:
        yield w


def wait_for(check, timeout: float = 15.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the worker")


def content(subject: str) -> dict:
    return {"variants": [{"name": "All", "target": "default", "subject": subject, "html_body": "<p>Hi</p>"}]}


def test_an_event_starts_a_journey_and_a_waited_for_event_moves_it_on_within_seconds(world, worker, smtp, settings):
    settings.SITE_URL = "https://app.segmentor.example"
    tenant = world.tenant_a
    with tenant_context(tenant.id):
        tenant.default_sender_email, tenant.postal_address = "news@shop.example", "Shop, 1 Road, Berlin"
        tenant.save()
        ann = subscriber(tenant, "ann", email="ann@example.com")
        steps = [
            {"key": "s1", "kind": "send", "config": {"channel": "email"}, "exits": {"next": "s2"},
             "content": content("Welcome")},
            {"key": "s2", "kind": "wait_event", "exits": {"happened": "s3", "timed_out": None},
             "config": {"event": "activated", "timeout": {"amount": 1, "unit": "days"}}},
            {"key": "s3", "kind": "send", "config": {"channel": "email"}, "exits": {"next": None},
             "content": content("Nice work")},
        ]  # fmt: skip
        journey = journey_create(
            tenant=tenant, actor=ACTOR,
            data={"name": "Onboarding", "trigger": "event", "trigger_event": "signup", "steps": steps},
        )  # fmt: skip
        journey_start(journey=journey, actor=ACTOR)

    api = api_client(world.secret_a)
    assert api.post("/api/v1/events/", {"event": "signup", "email": "ann@example.com"}, format="json").status_code in (
        200,
        201,
        202,
    )
    [welcome] = smtp.inbox.wait_for(1)
    assert welcome["Subject"] == "Welcome"
    with tenant_context(tenant.id):
        wait_for(lambda: Enrollment.objects.filter(contact=ann, waiting_for="activated").exists())
        sent = time.monotonic()
        response = api.post("/api/v1/events/", {"event": "activated", "email": "ann@example.com"}, format="json")
        assert response.status_code in (200, 201, 202)
        [_, nice] = smtp.inbox.wait_for(2)
        elapsed = time.monotonic() - sent
        assert nice["Subject"] == "Nice work"
        assert elapsed < 5, f"the waited-for event moved the contact on in {elapsed:.2f} s"
        wait_for(lambda: Enrollment.objects.get(contact=ann).status == "completed")


def test_abandoned_cart_with_a_worker_and_the_clock_moved_an_hour_then_a_day(world, worker, smtp, settings):
    """The blueprint as a tenant runs it: the event through the API, the beat's tick with the clock
    moved forward (time-machine moves the worker's clock too: it runs in this process)."""
    import datetime as dt

    import time_machine

    from journeys.services import journey_from_blueprint
    from journeys.tasks import tick_all

    settings.SITE_URL = "https://app.segmentor.example"
    tenant = world.tenant_a
    start = dt.datetime.now(dt.UTC)
    with tenant_context(tenant.id):
        tenant.default_sender_email, tenant.postal_address = "news@shop.example", "Shop, 1 Road, Berlin"
        tenant.save()
        ann = subscriber(tenant, "ann", email="ann@example.com")
        journey_start(
            journey=journey_from_blueprint(tenant=tenant, actor=ACTOR, blueprint="abandoned_cart"), actor=ACTOR
        )
    api = api_client(world.secret_a)
    response = api.post("/api/v1/events/", {"event": "cart_abandoned", "email": "ann@example.com"}, format="json")
    assert response.status_code in (200, 201, 202)
    with tenant_context(tenant.id):
        wait_for(lambda: Enrollment.objects.filter(contact=ann, waiting_for="purchase").exists())
    with time_machine.travel(start + dt.timedelta(hours=1, minutes=1), tick=True):
        tick_all.delay()
        [reminder] = smtp.inbox.wait_for(1)
        assert reminder["Subject"] == "You left something behind"
    with time_machine.travel(start + dt.timedelta(days=1, hours=1, minutes=2), tick=True):
        tick_all.delay()
        with tenant_context(tenant.id):
            wait_for(lambda: Enrollment.objects.get(contact=ann).status == "completed")
            assert Enrollment.objects.get(contact=ann).step.key == "s4", "no SMS consent: the branch ended it"
    assert len(smtp.inbox.messages) == 1
