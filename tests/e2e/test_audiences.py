"""Ad audiences in a real browser: choose a segment, download its Google Customer Match file, see the
export recorded with its counts, and read the lookalike seed summary."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from audiences.models import AudienceExport
from contacts.consent import suppression_add
from contacts.models import Suppression
from tenants.context import tenant_context
from tenants.models import Tenant, User
from tests.audiences.helpers import allow_advertising, parse_csv, person, segment_of
from tests.factories import UserFactory, make_tenant


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def shop() -> Iterator[tuple[User, Tenant, int]]:
    """Three warm leads: one consented to advertising, one did not, one consented but suppressed."""
    owner = UserFactory(email="owner@audience.example")
    tenant = make_tenant("Audience Shop", owner)
    with tenant_context(tenant.pk):
        allow_advertising(tenant)
        people = [
            person(tenant, consent=("email",), email="ada@example.com", country="DE"),
            person(tenant, consent=(), email="bob@example.com", country="DE"),
            person(tenant, consent=("email",), email="cyd@example.com", country="FR"),
        ]
        suppression_add(tenant=tenant, channel="email", address="cyd@example.com", reason=Suppression.Reason.MANUAL)
        segment = segment_of(tenant, people)
    yield owner, tenant, segment.pk


def test_a_marketer_downloads_a_google_audience_and_sees_the_export_recorded(page: Page, sign_in, shop) -> None:
    owner, tenant, segment_id = shop
    sign_in(owner)
    page.goto(f"/t/{tenant.slug}/audiences/")
    form = page.get_by_test_id("choose-form")
    form.get_by_label("Segment").select_option(str(segment_id))
    with page.expect_download() as download_info:
        page.get_by_test_id("download").click()
    download = download_info.value
    assert download.suggested_filename.endswith(".csv")
    rows = parse_csv(Path(download.path()).read_text(encoding="utf-8"))
    assert rows[0][0] == "Email"
    assert [row[0] for row in rows[1:]] == [sha("ada@example.com")]  # no consent, suppressed: left out

    page.goto(f"/t/{tenant.slug}/audiences/")
    with tenant_context(tenant.pk):
        export = AudienceExport.objects.get()
    assert (export.status, export.row_count, export.format) == ("succeeded", 1, "google")
    row = page.get_by_test_id(f"export-{export.pk}")
    expect(row).to_contain_text("Warm leads")
    expect(row).to_contain_text("Succeeded")


def test_the_lookalike_seed_summary_shows_what_describes_the_segment(page: Page, sign_in, shop) -> None:
    owner, tenant, segment_id = shop
    sign_in(owner)
    page.goto(f"/t/{tenant.slug}/audiences/")
    page.get_by_test_id("choose-form").get_by_label("Segment").select_option(str(segment_id))
    page.get_by_test_id("lookalike").click()
    expect(page.get_by_test_id("seed-size")).to_have_text("3")
    expect(page.locator("body")).to_contain_text("Germany")
