"""Results in a real browser: the dashboard and a campaign's results draw their charts (Chart.js, vendored,
under the strict CSP), and the tables and links are there; a viewer sees the same."""

from __future__ import annotations

from typing import cast

import pytest
from playwright.sync_api import ConsoleMessage, Page, expect

from analytics.rollup import stats_refresh
from tenants.context import tenant_context
from tenants.models import User
from tenants.roles import Role
from tests.analytics import scenario
from tests.analytics.scenario import NOW
from tests.factories import UserFactory, add_member, make_tenant


@pytest.fixture
def shop(transactional_db):
    owner = cast(User, UserFactory(email="owner@results.example"))
    tenant = make_tenant("Results Shop", owner)
    viewer = cast(User, UserFactory(email="viewer@results.example"))
    add_member(tenant, viewer, Role.VIEWER)
    built = scenario.build(tenant)
    with tenant_context(tenant.pk):
        stats_refresh(tenant=tenant, now=NOW)
    return owner, viewer, built


def problems_of(page: Page) -> list[str]:
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        # (Not "Failed to load resource": the browser asks for /favicon.ico, which the project has not.)
        if message.type == "error" and ("Content Security Policy" in message.text or "Uncaught" in message.text):
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def test_the_dashboard_and_a_campaigns_results_draw_their_charts(page: Page, sign_in, shop) -> None:
    owner, _, built = shop
    slug = built.tenant.slug
    problems = problems_of(page)
    sign_in(owner)
    page.goto(f"/t/{slug}/analytics/?start=2026-01-01&end=2026-01-31")
    for chart in ("chart-messages", "chart-engagement", "chart-conversions", "chart-targeting"):
        expect(page.locator(f'canvas[data-chart="{chart}"]')).to_have_attribute("data-rendered", "true")
    expect(page.get_by_test_id("kpi-sent")).to_have_text("15")
    expect(page.get_by_test_id("campaigns-table").get_by_role("link", name="Winter sale")).to_be_visible()
    expect(page.get_by_role("navigation").get_by_role("link", name="Analytics")).to_have_attribute(
        "aria-current", "page"
    )

    page.get_by_test_id("campaigns-table").get_by_role("link", name="Winter sale").click()
    expect(page).to_have_url(f"/t/{slug}/analytics/campaigns/{built.sale.pk}/")
    for chart in ("chart-variants", "chart-engagement", "chart-conversions", "chart-targeting", "chart-stages"):
        expect(page.locator(f'canvas[data-chart="{chart}"]')).to_have_attribute("data-rendered", "true")
    expect(page.get_by_test_id("kpi-conversions")).to_have_text("4")
    expect(page.get_by_test_id("conversion-lift")).to_have_text("+50.0%")
    rows = page.get_by_test_id("variants-table").locator("tbody tr")
    expect(rows).to_have_count(4)
    with page.expect_download() as download:
        page.get_by_test_id("variants-csv").click()
    assert download.value.suggested_filename == f"campaign-{built.sale.pk}-variants.csv"
    assert problems == [], problems


def test_a_viewer_opens_the_results_from_the_campaign_page(page: Page, sign_in, shop) -> None:
    _, viewer, built = shop
    problems = problems_of(page)
    sign_in(viewer)
    page.goto(f"/t/{built.tenant.slug}/campaigns/{built.sale.pk}/")
    page.get_by_test_id("campaign-results").click()
    expect(page.get_by_role("heading", name="Results: Winter sale")).to_be_visible()
    expect(page.locator('canvas[data-chart="chart-variants"]')).to_have_attribute("data-rendered", "true")
    page.goto(f"/t/{built.tenant.slug}/journeys/{built.welcome.pk}/")
    page.get_by_test_id("journey-results").click()
    expect(page.locator('canvas[data-chart="chart-steps"]')).to_have_attribute("data-rendered", "true")
    assert problems == [], problems
