"""Real parts together: a Celery worker on Redis sends an invitation to a real SMTP server."""

from __future__ import annotations

import re

import pytest
from celery.contrib.testing.worker import start_worker
from django.test import Client

from segmentor.celery import app
from tests.conftest import World
from tests.mail import SmtpSink

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker():
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10) as w:
        yield w


def test_an_invitation_reaches_the_inbox_and_lets_the_invitee_join(world: World, smtp: SmtpSink, worker, settings):
    settings.SITE_URL = "https://segmentor.example"
    client = Client()
    client.force_login(world.alice)
    response = client.post(
        f"/t/{world.tenant_a.slug}/settings/members/", {"email": "newhire@example.com", "role": "marketer"}
    )
    assert response.status_code == 302

    [message] = smtp.inbox.wait_for(1)
    assert message["To"] == "newhire@example.com"
    assert message["Subject"] == "You are invited to Tenant A on Segmentor"
    body = message.get_payload(decode=True).decode()
    link = re.search(r"https://segmentor\.example(/invitations/[^/\s]+/)", body)
    assert link, body

    from tests.factories import UserFactory

    newhire = UserFactory(email="newhire@example.com")
    invitee = Client()
    invitee.force_login(newhire)
    assert invitee.post(link.group(1))["Location"] == f"/t/{world.tenant_a.slug}/"
    assert invitee.get(f"/t/{world.tenant_a.slug}/").status_code == 200
