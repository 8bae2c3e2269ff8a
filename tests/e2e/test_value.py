"""The customer value page in a real browser: its four charts are drawn, without a CSP complaint."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import ConsoleMessage, Page, expect

from analytics.value import value_snapshot_forget
from contacts.models import Contact, LifecycleTransition
from segments.models import Segment, SegmentMember
from tenants.context import tenant_context
from tenants.models import Tenant, User
from tests.factories import UserFactory, make_tenant

CSP_VIOLATION = re.compile(r"Content Security Policy", re.IGNORECASE)


@pytest.fixture
def shop() -> Iterator[tuple[User, Tenant]]:
    """A lead, a first-time buyer and a repeat customer who moved up this week, and a segment of buyers."""
    owner = UserFactory(email="owner@value.example")
    tenant = make_tenant("Value Shop", owner)
    now = timezone.now()
    with tenant_context(tenant.pk):
        people = {
            name: Contact.objects.create(
                tenant=tenant,
                email=f"{name}@value.example",
                lifecycle_stage=stage,
                order_count=orders,
                total_revenue=Decimal(revenue),
                first_seen_at=now - dt.timedelta(days=200),
                last_order_at=now - dt.timedelta(days=2) if orders else None,
            )
            for name, stage, orders, revenue in [
                ("lena", "lead", 0, "0"),
                ("finn", "first_time_buyer", 1, "80.00"),
                ("rosa", "repeat_customer", 3, "240.00"),
            ]
        }
        LifecycleTransition.objects.bulk_create(
            LifecycleTransition(tenant=tenant, contact=people[name], from_stage=a, to_stage=b, occurred_at=when)
            for name, a, b, when in [
                ("finn", "lead", "first_time_buyer", now - dt.timedelta(days=3)),
                ("rosa", "first_time_buyer", "repeat_customer", now - dt.timedelta(days=1)),
                ("lena", "", "lead", now - dt.timedelta(days=10)),
            ]
        )
        buyers = Segment.objects.create(tenant=tenant, name="Buyers", kind=Segment.Kind.STATIC)
        SegmentMember.objects.bulk_create(
            SegmentMember(tenant=tenant, segment=buyers, contact=people[name], entered_at=now)
            for name in ("finn", "rosa")
        )
    yield owner, tenant
    value_snapshot_forget(tenant_id=tenant.pk)


def test_the_value_page_draws_its_charts(page: Page, sign_in, shop) -> None:
    owner, tenant = shop
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and (CSP_VIOLATION.search(message.text) or "Uncaught" in message.text):
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(str(error)))
    sign_in(owner)
    page.goto(f"/t/{tenant.slug}/analytics/value/")
    expect(page.get_by_role("heading", name="Customer value and lifecycle")).to_be_visible()
    expect(page.locator('canvas[data-rendered="true"]')).to_have_count(4)
    for chart in ("value-funnel-chart", "value-flow-chart", "value-clv-stage-chart", "value-clv-segment-chart"):
        canvas = page.locator(f'canvas[data-chart="{chart}"]')
        expect(canvas).to_have_attribute("data-rendered", "true")
        box = canvas.bounding_box()
        assert box is not None and box["height"] > 100 and box["width"] > 100, chart
    expect(page.get_by_test_id("total-contacts")).to_have_text("3")
    expect(page.get_by_test_id("clv-segment-table")).to_contain_text("Buyers")

    page.get_by_label("Time range").select_option("30d")
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"\?range=30d$"))
    expect(page.locator('canvas[data-rendered="true"]')).to_have_count(4)
    expect(page.get_by_test_id("flow-table")).to_contain_text("Lead → First-time buyer")
    assert errors == []
