"""An SMTP server that stalls or answers slowly: retried later with the reason, never sooner than the backoff.

Refusals (5xx permanent, 4xx retried with backoff, the last attempt failed) are covered in
tests/campaigns/test_sending_engine.py and test_channels.py; ``make faults`` (bench/faults.py) runs
the whole course — five tries with growing gaps, then failed, the run done — on real workers.
"""

# Fixtures shared between these modules are imported by name, which pytest needs and ruff flags.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from django.utils import timezone

from campaigns.models import Delivery
from campaigns.sending import MAX_ATTEMPTS, RETRY_DELAY, deliveries_claim, deliveries_send, run_start
from tests.campaigns.test_sending_channels import campaign_for, shop, subscriber, variant_for  # noqa: F401
from tests.mail import Inbox, free_port

pytestmark = pytest.mark.django_db


class SlowInbox(Inbox):
    """Says nothing for ``stall`` seconds to ``stalled@`` (then 451); takes ``slow@`` after ``slow`` seconds;
    defers ``deferred@`` (451); takes everyone else's at once."""

    def __init__(self, stall: float = 0.0, slow: float = 0.0) -> None:
        super().__init__()
        self.stall, self.slow = stall, slow
        self.tried: dict[str, dt.datetime] = {}  # when each address was last given

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        self.tried[address] = timezone.now()
        if address.startswith("stalled@"):
            await asyncio.sleep(self.stall)
            return "451 4.4.2 Timeout"
        if address.startswith("deferred@"):
            return "451 4.3.0 Try again later"
        if address.startswith("slow@"):
            await asyncio.sleep(self.slow)
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def slow_smtp(settings) -> Iterator[SlowInbox]:
    inbox = SlowInbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_USE_TLS = "127.0.0.1", controller.port, False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_TIMEOUT = 1
    yield inbox
    controller.stop()


@pytest.mark.parametrize(("attempts_before", "status"), [(0, "pending"), (MAX_ATTEMPTS - 1, "failed")])
def test_a_server_that_stalls_past_the_timeout_is_retried_later_then_failed_and_the_batch_goes_on(
    shop, slow_smtp, attempts_before, status
):
    slow_smtp.stall = 4.0
    ann = subscriber(shop, "ann", email="ann@example.com")
    stalled = subscriber(shop, "stalled", email="stalled@example.com")
    bob = subscriber(shop, "bob", email="bob@example.com")
    campaign = campaign_for(shop, [ann, stalled, bob])
    variant_for(campaign, subject="Hi", html_body="<p>Hi</p>")
    run = run_start(campaign=campaign)
    Delivery.objects.filter(run=run, contact=stalled).update(attempts=attempts_before)
    deliveries_send(run=run, ids=deliveries_claim(run=run))
    waited = slow_smtp.tried["bob@example.com"] - slow_smtp.tried["stalled@example.com"]
    assert waited < dt.timedelta(seconds=3), "the stall costs the timeout (1 s), not the server's 4 s"
    rows = {d.contact_id: d for d in Delivery.objects.filter(run=run)}
    assert (rows[ann.pk].status, rows[bob.pk].status) == ("sent", "sent")
    held = rows[stalled.pk]
    assert (held.status, held.attempts) == (status, attempts_before + 1)
    assert "timed out" in held.error
    assert (held.not_before is not None) == (status == "pending")
    assert sorted(m["To"] for m in slow_smtp.wait_for(2)) == ["ann@example.com", "bob@example.com"]


def test_the_backoff_counts_from_the_failure_not_from_the_start_of_a_slow_batch(shop, slow_smtp):
    slow_smtp.slow = 1.5
    slow = subscriber(shop, "slow", email="slow@example.com")
    deferred = subscriber(shop, "deferred", email="deferred@example.com")
    campaign = campaign_for(shop, [slow, deferred])
    variant_for(campaign, subject="Hi", html_body="<p>Hi</p>")
    run = run_start(campaign=campaign)
    deliveries_send(run=run, ids=deliveries_claim(run=run))
    held = Delivery.objects.get(run=run, contact=deferred)
    assert held.status == "pending" and "451" in held.error
    # The 451 came after the slow message (1.5 s): the first retry waits RETRY_DELAY from then.
    refused_at = slow_smtp.tried["deferred@example.com"]
    assert refused_at + RETRY_DELAY <= held.not_before <= refused_at + RETRY_DELAY + dt.timedelta(seconds=1)
