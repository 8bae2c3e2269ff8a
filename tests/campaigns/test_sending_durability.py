"""Results are durable message by message, and ``send_run`` on a real Celery worker finishes a run.

These tests commit (``transaction=True``): the per-message result write is the one used in
production, outside any transaction, and other database sessions must see each result before the
next message is handed to the SMTP server.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from django.db import connection

from campaigns.models import Campaign, CampaignAudience, CampaignRun, Delivery, Variant
from campaigns.sending import deliveries_claim, deliveries_send, message_id, run_start
from campaigns.tasks import send_run
from contacts.consent import ConsentEvidence, consents_grant_new
from contacts.models import Contact
from segmentor.celery import app
from segments.models import Segment
from segments.services import segment_create, static_members_add
from tenants.audit import Actor
from tenants.context import tenant_context
from tests.mail import Inbox, SmtpSink

pytestmark = pytest.mark.django_db(transaction=True)
ACTOR = Actor.system("test")


def readers(world, size: int) -> tuple[Any, Campaign]:
    tenant = world.tenant_a
    with tenant_context(tenant.id):
        tenant.frequency_cap_messages = 0
        tenant.default_sender_email = "news@shop.example"
        tenant.save()
        people = Contact.objects.bulk_create(
            [Contact(tenant=tenant, email=f"reader{i}@example.com", first_name=f"Reader {i}") for i in range(size)]
        )
        consents_grant_new(
            tenant=tenant, contacts=people, channel="email", purpose="marketing",
            evidence=ConsentEvidence(source="api"), actor=ACTOR,
        )  # fmt: skip
        segment = segment_create(tenant=tenant, actor=ACTOR, name="Readers", kind=Segment.Kind.STATIC)
        static_members_add(segment=segment, actor=ACTOR, contact_ids=[c.pk for c in people])
        campaign = Campaign.objects.create(tenant=tenant, name="Newsletter", sender_name="Shop")
        CampaignAudience.objects.create(tenant=tenant, campaign=campaign, segment=segment)
        Variant.objects.create(
            tenant=tenant, campaign=campaign, name="All", subject="Hi {{ contact.first_name }}",
            html_body="<p>Hello {{ contact.first_name }}</p>",
        )  # fmt: skip
    return tenant, campaign


class WitnessInbox(Inbox):
    """Looks at the database from its own session each time a message arrives."""

    def __init__(self, tenant_id: int) -> None:
        super().__init__()
        self.tenant_id = tenant_id
        self.run_id = 0
        self.sent_when_received: list[int] = []

    def _sent(self) -> int:
        try:
            with tenant_context(self.tenant_id):
                return Delivery.objects.filter(run_id=self.run_id, status="sent").count()
        finally:
            connection.close()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        loop = asyncio.get_running_loop()
        self.sent_when_received.append(await loop.run_in_executor(None, self._sent))
        return await super().handle_DATA(server, session, envelope)


def test_each_result_is_committed_before_the_next_message_is_handed_over(world, settings):
    tenant, campaign = readers(world, 30)
    inbox = WitnessInbox(tenant.id)
    sink = SmtpSink()
    sink.inbox = inbox
    sink.controller.handler = inbox
    with sink:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_USE_TLS = "127.0.0.1", sink.port, False
        settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
        with tenant_context(tenant.id):
            run = run_start(campaign=campaign)
            inbox.run_id = run.pk
            assert not connection.in_atomic_block, "the production path: results outside a transaction"
            outcome = deliveries_send(run=run, ids=deliveries_claim(run=run))
        inbox.wait_for(30)
    assert outcome.sent == 30
    # When message n arrived, the n messages before it were already recorded as sent, seen from
    # another session: a worker killed at any moment leaves at most one message unrecorded.
    assert inbox.sent_when_received == list(range(30))


def test_send_run_on_a_real_worker_sends_every_message_once_and_finishes(world, settings):
    settings.CAMPAIGN_SEND_PARALLELISM = 3
    tenant, campaign = readers(world, 450)
    with SmtpSink() as sink:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_USE_TLS = "127.0.0.1", sink.port, False
        settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
        with tenant_context(tenant.id):
            run = run_start(campaign=campaign)
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            send_run.delay(tenant.id, run.pk)
            messages = sink.inbox.wait_for(450, timeout=60)
            with tenant_context(tenant.id):
                for _ in range(200):
                    if CampaignRun.objects.get(pk=run.pk).status == "done":
                        break
                    time.sleep(0.05)
    with tenant_context(tenant.id):
        assert CampaignRun.objects.get(pk=run.pk).status == "done"
        assert Campaign.objects.get(pk=campaign.pk).status == "sent"
        rows = list(Delivery.objects.filter(run=run))
        assert {d.status for d in rows} == {"sent"}
        assert {d.attempts for d in rows} == {1}
        ids = {message_id(d.pk, tenant) for d in rows}
    received = [m["Message-ID"] for m in messages]
    assert len(received) == 450 and set(received) == ids, "each delivery once, none lost"


def test_send_run_stops_at_a_paused_run(world, settings):
    settings.CAMPAIGN_SEND_PARALLELISM = 1
    tenant, campaign = readers(world, 3)
    with tenant_context(tenant.id):
        run = run_start(campaign=campaign)
        CampaignRun.objects.filter(pk=run.pk).update(status="paused")
        assert send_run(tenant.id, run.pk) == {}
        assert set(Delivery.objects.filter(run=run).values_list("status", flat=True)) == {"pending"}


def test_a_result_holding_quotes_backslashes_and_broken_text_is_written_as_given(world):
    """Provider answers reach the result statement as SQL literals: nothing in them may break out."""
    from campaigns.sending import ResultLog

    tenant, campaign = readers(world, 2)
    with tenant_context(tenant.id):
        run = run_start(campaign=campaign)
        first, second = deliveries_claim(run=run)
        assert connection.get_autocommit()  # the one-round-trip path, not the ORM fallback
        hostile = "550 it's \\'; DELETE FROM campaigns_delivery; -- \x00 \udcff done"
        with ResultLog(tenant.id) as log:
            assert log.fast
            log.write(first, "failed", error=hostile, provider="id'\\")
        row = Delivery.objects.get(pk=first)
        assert (row.status, row.provider_message_id) == ("failed", "id'\\")
        assert row.error == "550 it's \\'; DELETE FROM campaigns_delivery; --  ? done"
        assert Delivery.objects.get(pk=second).status == "sending"


def test_a_refused_result_raises_and_the_next_one_on_the_connection_still_lands(world):
    from django.db import DataError

    from campaigns.sending import ResultLog

    tenant, campaign = readers(world, 3)
    with tenant_context(tenant.id):
        run = run_start(campaign=campaign)
        first, second, third = deliveries_claim(run=run)
        with ResultLog(tenant.id) as log:
            log.write(first, "sent")
            with pytest.raises(DataError):  # status is varchar(10)
                log.write(second, "x" * 40)
            log.write(third, "failed", error="550 no such user")
        statuses = dict(Delivery.objects.filter(run=run).values_list("pk", "status"))
        assert statuses == {first: "sent", second: "sending", third: "failed"}
