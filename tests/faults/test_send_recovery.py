"""The database lost in the middle of a batch: the batch is put right once it is back, nothing twice.

The sender's own database session is terminated (``pg_terminate_backend``, as a restart or a failover
does) while the SMTP server is taking a message. ``deliveries_send`` then writes the result of every
message it handed over, puts the rest of the claimed batch back to pending, and raises (the task
retries); the next batch sends the rest. These tests commit: the sender's session really ends.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import psycopg
import pytest
from django.db import OperationalError, connection

from campaigns.models import Delivery
from campaigns.sending import deliveries_claim, deliveries_send, message_id, run_finish_if_done, run_start
from tenants.context import tenant_context
from tests.campaigns.test_sending_durability import readers
from tests.mail import Inbox

pytestmark = pytest.mark.django_db(transaction=True)


class SessionKiller(Inbox):
    """Takes each message; while taking message number ``at``, ends the sender's database session."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at
        self.pid = 0
        self.params: dict[str, Any] = {}

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if len(self.messages) + 1 == self.at:
            with psycopg.connect(**self.params, autocommit=True) as other:
                other.execute("SELECT pg_terminate_backend(%s, 5000)", [self.pid])
        return await super().handle_DATA(server, session, envelope)


def test_a_batch_cut_by_a_lost_database_is_put_right_and_the_rest_sent_once(world, smtp):
    tenant, campaign = readers(world, 30)
    inbox = SessionKiller(at=10)
    smtp.inbox = smtp.controller.handler = inbox  # read by each new SMTP session
    with tenant_context(tenant.id):
        run = run_start(campaign=campaign)
        connection.ensure_connection()
        inbox.pid = connection.connection.info.backend_pid
        inbox.params = {
            k: v for k, v in connection.get_connection_params().items() if k not in ("cursor_factory", "context")
        }
        with pytest.raises(OperationalError):
            deliveries_send(run=run, ids=deliveries_claim(run=run))
        # Every message handed over is recorded as sent (the tenth too, whose result was lost with
        # the session); the twenty never handed over are pending again, with no attempt used.
        rows = list(Delivery.objects.filter(run=run))
        assert Counter(d.status for d in rows) == {"sent": 10, "pending": 20}
        assert {d.attempts for d in rows if d.status == "pending"} == {0}
        assert len(inbox.messages) == 10

        deliveries_send(run=run, ids=deliveries_claim(run=run))
        assert run_finish_if_done(run=run)
        ids = {message_id(d.pk, tenant) for d in Delivery.objects.filter(run=run)}
    received = [m["Message-ID"] for m in inbox.wait_for(30)]
    assert len(received) == 30 and set(received) == ids, "each message once, none lost"
