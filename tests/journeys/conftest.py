"""Shared by the journey tests: a shop with subscribers, and a clock to walk journeys with."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine

from contacts.models import Contact
from journeys.engine import advance_due
from tests.campaigns.test_sending_channels import shop, subscriber  # noqa: F401

T0 = dt.datetime(2026, 6, 1, 10, 0, tzinfo=dt.UTC)


def walk(tenant, at: dt.datetime) -> int:
    """Move the clock to ``at`` and let the engine walk every due enrollment."""
    with time_machine.travel(at, tick=False):
        return advance_due(tenant=tenant, now=at)


@pytest.fixture
def people(shop):  # noqa: F811
    """Ann (email and SMS consent), Ben (email only), Cleo (no consent)."""
    return {
        "ann": subscriber(shop, "ann", channels=["email", "sms"], email="ann@example.com", phone="+4915100000001"),
        "ben": subscriber(shop, "ben", email="ben@example.com"),
        "cleo": Contact.objects.create(tenant=shop, first_name="Cleo", email="cleo@example.com"),
    }
