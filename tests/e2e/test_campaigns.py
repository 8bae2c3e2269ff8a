"""Campaigns in a real browser: compose through every step (live count, live preview), schedule it, then send
now and watch the progress bar reach 100% while a real Celery worker sends to a real SMTP server.

The live server and an in-process worker (on Redis, as in tests/test_worker.py) share the test
database: the run is queued after the request commits, the worker claims and sends its batches to
aiosmtpd, and htmx polls the progress fragment every 2 s until every delivery is settled.
"""

from __future__ import annotations

import datetime as dt
import re
import time
import zoneinfo
from collections.abc import Iterator
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from django.utils import timezone
from playwright.sync_api import ConsoleMessage, Page, expect

from campaigns.models import Campaign, CampaignRun, Delivery, Variant
from contacts.consent import ConsentEvidence, consent_change
from contacts.models import Contact
from segmentor.celery import app
from segments.services import segment_create, segment_refresh
from tenants.audit import Actor
from tenants.context import tenant_context
from tenants.models import Tenant, User
from tests.factories import UserFactory, make_tenant

pytestmark = pytest.mark.worker

SYSTEM = Actor.system("test")
API = ConsentEvidence(source="api")
PEOPLE = 800  # several claimed batches, so the bar moves while the page watches
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


@pytest.fixture
def worker() -> Iterator[object]:
    app.control.purge()  # tasks an earlier test left on the broker name tenants that no longer exist
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10) as running:
        yield running


@pytest.fixture
def shop() -> tuple[User, Tenant]:
    """PEOPLE contacts with email consent (every tenth in Germany), and one without consent."""
    owner = UserFactory(email="owner@campaigns.example")
    tenant = make_tenant("Campaign Shop", owner)
    with tenant_context(tenant.id):
        tenant.time_zone = "Europe/Berlin"
        tenant.default_sender_email = "news@shop.example"
        tenant.postal_address = "1 Market Street, Springfield"
        tenant.save()
        for n in range(PEOPLE):
            contact = Contact.objects.create(
                tenant=tenant, email=f"person{n}@example.com", first_name=f"Person{n}",
                country="DE" if n % 10 == 0 else "FR",
            )  # fmt: skip
            consent_change(
                contact=contact, channel="email", purpose="marketing", status="granted", evidence=API, actor=SYSTEM
            )
        Contact.objects.create(tenant=tenant, email="quiet@example.com", first_name="Quiet", country="FR")
        Contact.objects.create(tenant=tenant, email="ada@example.com", first_name="Ada", country="GB")
        consent_change(
            contact=Contact.objects.get(email="ada@example.com"), channel="email", purpose="marketing",
            status="granted", evidence=API, actor=SYSTEM,
        )  # fmt: skip
        everyone = segment_create(
            tenant=tenant, actor=SYSTEM, name="Everyone with email",
            rules={"all": [{"type": "field", "field": "email", "op": "is_set"}]},
        )  # fmt: skip
        germans = segment_create(
            tenant=tenant, actor=SYSTEM, name="Germans",
            rules={"all": [{"type": "field", "field": "country", "op": "eq", "value": "DE"}]},
        )  # fmt: skip
        segment_refresh(segment=everyone)
        segment_refresh(segment=germans)
    return owner, tenant


def problems_of(page: Page) -> list[str]:
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and ("Content Security Policy" in message.text or "Uncaught" in message.text):
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def save_and_continue(page: Page) -> None:
    page.get_by_role("button", name="Save and continue").click()


def test_compose_schedule_then_send_and_watch_the_progress(page: Page, sign_in, shop, smtp, worker) -> None:
    owner, tenant = shop
    problems = problems_of(page)
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if r.url.endswith("/progress/") else None)
    sign_in(owner)
    page.goto(tenant.get_absolute_url())
    page.locator("header nav").get_by_role("link", name="Campaigns").click()
    expect(page).to_have_url(re.compile(rf"/t/{tenant.slug}/campaigns/$"))
    page.get_by_role("button", name="New campaign").click()  # a link styled as a button

    # 1. Basics
    expect(page.get_by_role("heading", level=1)).to_have_text("New campaign")
    page.get_by_label("Name", exact=True).fill("Spring sale")
    page.get_by_label("Channel").select_option("email")
    page.get_by_label("Cost").fill("250")
    save_and_continue(page)

    # 2. Audience: the live count follows the checkboxes (counted, not saved, until "save")
    expect(page).to_have_url(re.compile(r"/campaigns/\d+/audience/$"))
    sendable = page.get_by_test_id("estimate-sendable")
    expect(sendable).to_have_text("0")
    page.get_by_test_id("include-segments").get_by_label("Everyone with email").check()
    expect(sendable).to_have_text(str(PEOPLE + 1))  # Quiet has no consent
    expect(page.get_by_test_id("estimate-total")).to_have_text(str(PEOPLE + 2))
    expect(page.get_by_test_id("estimate-no-consent")).to_have_text("−1")
    page.get_by_test_id("exclude-segments").get_by_label("Germans").check()
    germans = PEOPLE // 10
    expect(sendable).to_have_text(str(PEOPLE + 1 - germans))
    save_and_continue(page)

    # 3. Content: a default variant with the live preview as any contact, and the suggested CTA
    expect(page).to_have_url(re.compile(r"/campaigns/\d+/content/$"))
    page.get_by_test_id("add-variant").click()
    expect(page.get_by_label("Everyone else")).to_be_checked()
    page.get_by_label("Subject").fill("Hi {{ contact.first_name }}, spring is here")
    page.get_by_label("HTML body").fill(
        '<p>Hello {{ contact.first_name }}</p><p><a href="{{ cta.url }}">{{ cta.label }}</a></p>'
    )
    page.get_by_test_id("suggest-cta").click()
    expect(page.get_by_label("Call to action: label")).to_have_value("Learn more")
    page.get_by_label("Call to action: URL").fill("https://shop.example/spring")
    subject = page.get_by_test_id("preview-subject")
    expect(subject).to_have_text("Hi Person1, spring is here")  # the first of the audience (Person0 is German)
    page.get_by_label("Preview as", exact=True).fill("ada@example.com")
    expect(subject).to_have_text("Hi Ada, spring is here")
    expect(page.frame_locator("[data-testid=preview-html]").locator("body")).to_contain_text("Hello Ada")
    expect(page.frame_locator("[data-testid=preview-html]").get_by_role("link", name="Learn more")).to_be_visible()
    # A stage target: the suggestion follows the stage
    page.get_by_label("A lifecycle stage").check()
    page.get_by_label("Lifecycle stage", exact=True).select_option("lead")
    expect(page.get_by_test_id("suggest-cta")).to_contain_text("Start free trial")
    page.get_by_label("Everyone else").check()
    expect(page.get_by_label("Lifecycle stage", exact=True)).to_be_hidden()
    page.get_by_role("button", name="Save variant").click()
    expect(page.get_by_test_id("variant-list")).to_contain_text("Everyone else (default)")
    save_and_continue(page)

    # 4. Schedule: at a time in the tenant's zone
    expect(page).to_have_url(re.compile(r"/campaigns/\d+/schedule/$"))
    when = (timezone.now() + dt.timedelta(days=2)).astimezone(BERLIN).replace(hour=9, minute=30)
    page.get_by_label("At a date and time").check()
    page.get_by_label("Date and time", exact=True).fill(when.strftime("%Y-%m-%dT%H:%M"))
    expect(page.get_by_label("Crontab")).to_be_hidden()
    save_and_continue(page)

    # 5. Review, then schedule
    expect(page.get_by_test_id("review-schedule")).to_contain_text(f"{when:%Y-%m-%d} 09:30 (Europe/Berlin)")
    expect(page.get_by_test_id("problems")).to_have_count(0)
    page.get_by_test_id("send-button").click()
    expect(page.get_by_test_id("campaign-status")).to_have_text("Scheduled")
    expect(page.get_by_test_id("campaign-schedule")).to_contain_text(f"{when:%Y-%m-%d} 09:30 (Europe/Berlin)")
    expect(page.get_by_test_id("next-run")).to_have_text(f"{when:%Y-%m-%d} 09:30")
    with tenant_context(tenant.id):
        campaign = Campaign.objects.get(name="Spring sale")
        assert campaign.periodic_task is not None and campaign.periodic_task.clocked is not None
        assert campaign.periodic_task.clocked.clocked_time == when.replace(second=0, microsecond=0)
        assert Variant.objects.get(campaign=campaign).cta_label == "Learn more"
        assert not CampaignRun.objects.filter(campaign=campaign).exists()

    # Change of plan: send it now, and watch the progress bar while the worker sends.
    page.once("dialog", lambda dialog: dialog.accept())  # "Send “Spring sale” now instead of …?"
    page.get_by_test_id("send-now").click()
    expect(page.get_by_test_id("run-progress")).to_be_visible()

    percent = page.get_by_test_id("progress-percent")
    seen: list[int] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        value = percent.text_content() if percent.count() else None
        if value:
            seen.append(int(value.rstrip("%")))
            if seen[-1] == 100:
                break
        page.wait_for_timeout(100)
    print(f"progress values seen: {sorted(set(seen))}")
    assert seen and seen[-1] == 100, seen
    assert seen == sorted(seen), f"progress went backwards: {seen}"
    assert polls, "the page polled the progress fragment"
    expected = PEOPLE + 1 - germans
    expect(page.get_by_test_id("progress-sent")).to_have_text(str(expected))
    expect(page.get_by_test_id("progress-skipped")).to_have_text("1")  # Quiet: no consent
    expect(page.get_by_test_id("progress-pending")).to_have_text("0")
    messages = smtp.inbox.wait_for(expected)
    assert len(messages) == expected
    assert {m["Subject"] for m in messages if m["To"] == "ada@example.com"} == {"Hi Ada, spring is here"}
    # Polling stops once every delivery is settled.
    settled = len(polls)
    page.wait_for_timeout(2_500)
    assert len(polls) == settled

    # The page follows: the campaign is sent, and the log shows what happened to each delivery.
    expect(page.get_by_test_id("campaign-status")).to_have_text("Sent")
    expect(page.get_by_test_id("delivery-log").get_by_text("Pending")).to_have_count(0)
    expect(page.get_by_test_id("delivery-log").get_by_text("Sent").first).to_be_visible()

    # The delivery log: filter by status and skip reason.
    log = page.get_by_test_id("delivery-log")
    page.get_by_label("Status").select_option("skipped")
    expect(log.get_by_test_id("delivery-row")).to_have_count(1)
    expect(log).to_contain_text("Quiet")
    expect(log).to_contain_text("No consent")
    page.get_by_label("Skip reason").select_option("suppressed")
    expect(log).to_contain_text("No deliveries match.")
    with tenant_context(tenant.id):
        assert _statuses(campaign) == {"sent": expected, "skipped": 1}
    assert problems == []


def _statuses(campaign: Campaign) -> dict[str, Any]:
    from django.db.models import Count

    rows = Delivery.objects.filter(run__campaign=campaign).values("status").annotate(n=Count("id"))
    return {row["status"]: row["n"] for row in rows}
