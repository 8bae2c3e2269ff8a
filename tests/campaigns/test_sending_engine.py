"""The sending engine's rules: quiet hours, local-time schedules, the marketing frequency cap, the
throttle, pause and cancel, one run per occurrence, retries with backoff, recorded failures."""

# Fixtures shared between these modules are imported by name, which pytest needs and ruff flags.
# ruff: noqa: F811

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

import pytest
import time_machine
from aiosmtpd.controller import Controller

from campaigns.models import Campaign, CampaignRun, ChannelConfig, Delivery, Variant
from campaigns.sending import (
    MAX_ATTEMPTS,
    THROTTLE_WINDOW,
    _local_times_by_zone,
    _retry_at,
    deliveries_claim,
    deliveries_claim_batch,
    deliveries_send,
    next_local_time,
    quiet_hours_end,
    recipient_zone,
    run_cancel,
    run_finish_if_done,
    run_start,
)
from contacts.models import Contact
from tenants.context import tenant_context
from tests.campaigns.test_channels import SMS_PATH, Reply, provider  # noqa: F401
from tests.campaigns.test_sending_channels import campaign_for, shop, subscriber, variant_for  # noqa: F401
from tests.mail import Inbox, free_port

pytestmark = pytest.mark.django_db
UTC = dt.UTC


def statuses(run: CampaignRun) -> dict[int, tuple[str, str]]:
    return {d.contact_id: (d.status, d.skip_reason) for d in Delivery.objects.filter(run=run)}


# --- quiet hours ---------------------------------------------------------------------------------
def test_quiet_hours_hold_sms_back_until_morning_in_the_recipients_zone(shop, provider):
    provider.reply(SMS_PATH, Reply.json(201, {"sid": "SM1"}))
    ChannelConfig.objects.create(
        tenant=shop, channel="sms", backend="twilio", secret="t",
        settings={"base_url": f"{provider.url}/2010-04-01", "account_sid": "AC123", "sender": "+15550001111"},
    )  # fmt: skip
    shop.time_zone = "Asia/Tokyo"
    shop.save()
    berlin = subscriber(shop, "berlin", channels=["sms"], phone="+4915100000001", time_zone="Europe/Berlin")
    york = subscriber(shop, "york", channels=["sms"], phone="+12125550001", time_zone="America/New_York")
    tokyo = subscriber(shop, "tokyo", channels=["sms"], phone="+81300000001")  # no zone: the tenant's
    campaign = campaign_for(shop, [berlin, york, tokyo], channel="sms")
    variant_for(campaign, sms_body="Hi")
    evening = dt.datetime(2026, 6, 10, 21, 30, tzinfo=UTC)  # 23:30 in Berlin, 17:30 in New York, 06:30 in Tokyo
    with time_machine.travel(evening, tick=False):
        run = run_start(campaign=campaign)
        outcome = deliveries_send(run=run, ids=deliveries_claim(run=run))
    assert (outcome.sent, outcome.deferred) == (1, 2)
    rows = {d.contact_id: d for d in Delivery.objects.filter(run=run)}
    assert rows[york.pk].status == "sent"
    assert (rows[berlin.pk].status, rows[berlin.pk].attempts) == ("pending", 0), "not an attempt"
    assert rows[berlin.pk].not_before == dt.datetime(2026, 6, 11, 6, 0, tzinfo=UTC)  # 08:00 in Berlin
    assert rows[tokyo.pk].not_before == dt.datetime(2026, 6, 10, 23, 0, tzinfo=UTC)  # 08:00 in Tokyo
    assert [r.path for r in provider.requests] == [SMS_PATH]
    assert not run_finish_if_done(run=run)

    with time_machine.travel(dt.datetime(2026, 6, 10, 23, 0, 1, tzinfo=UTC), tick=False):
        ids = deliveries_claim(run=run)
        assert ids == [rows[tokyo.pk].pk], "Berlin still sleeps"
        deliveries_send(run=run, ids=ids)
    with time_machine.travel(dt.datetime(2026, 6, 11, 6, 0, 1, tzinfo=UTC), tick=False):
        deliveries_send(run=run, ids=deliveries_claim(run=run))
        assert run_finish_if_done(run=run)
    assert {status for status, _ in statuses(run).values()} == {"sent"}
    assert len(provider.requests) == 3


def test_email_ignores_quiet_hours(shop, smtp):
    ann = subscriber(shop, "ann", email="ann@example.com", time_zone="Europe/Berlin")
    campaign = campaign_for(shop, [ann])
    variant_for(campaign, subject="Hi", html_body="<p>Hi</p>")
    with time_machine.travel(dt.datetime(2026, 6, 10, 1, 0, tzinfo=UTC)):
        run = run_start(campaign=campaign)
        deliveries_send(run=run, ids=deliveries_claim(run=run))
    assert statuses(run)[ann.pk] == ("sent", "")


@pytest.mark.parametrize(
    ("start", "end", "local", "until"),
    [
        ("21:00", "08:00", "2026-01-05 22:15", "2026-01-06 08:00"),
        ("21:00", "08:00", "2026-01-05 07:59", "2026-01-05 08:00"),
        ("21:00", "08:00", "2026-01-05 08:00", None),
        ("21:00", "08:00", "2026-01-05 20:59", None),
        ("12:00", "14:00", "2026-01-05 13:00", "2026-01-05 14:00"),
        ("12:00", "14:00", "2026-01-05 14:30", None),
        ("09:00", "09:00", "2026-01-05 09:00", None),
    ],
)
def test_quiet_hours_window(world, start, end, local, until):
    zone = zoneinfo.ZoneInfo("Europe/Berlin")
    tenant = world.tenant_a
    tenant.quiet_hours_start, tenant.quiet_hours_end = dt.time.fromisoformat(start), dt.time.fromisoformat(end)
    now = dt.datetime.fromisoformat(local).replace(tzinfo=zone)
    expected = dt.datetime.fromisoformat(until).replace(tzinfo=zone) if until else None
    assert quiet_hours_end(tenant, zone, now) == expected


# --- local time ----------------------------------------------------------------------------------
def test_local_time_schedule_sets_each_deliverys_not_before_in_its_zone(shop, smtp):
    shop.time_zone = "Asia/Tokyo"
    shop.save()
    people = {
        "berlin": subscriber(shop, "berlin", email="b@example.com", time_zone="Europe/Berlin"),
        "york": subscriber(shop, "york", email="y@example.com", time_zone="America/New_York"),
        "tenant": subscriber(shop, "tenant", email="t@example.com"),
        "kiritimati": subscriber(shop, "kiri", email="k@example.com", time_zone="Pacific/Kiritimati"),
    }
    # A zone PostgreSQL does not know (written around the validation) falls back to the tenant's.
    Contact.objects.filter(pk=people["tenant"].pk).update(time_zone="Mars/Olympus_Mons")
    campaign = campaign_for(shop, list(people.values()), schedule="local_time", local_time=dt.time(9, 0))
    variant_for(campaign, subject="Morning", html_body="<p>Good morning</p>")
    now = dt.datetime(2026, 3, 28, 7, 30, tzinfo=UTC)  # 08:30 Berlin, 03:30 New York, 16:30 Tokyo, 21:30 Kiritimati
    with time_machine.travel(now, tick=False):
        run = run_start(campaign=campaign)
    rows = {d.contact_id: d.not_before for d in Delivery.objects.filter(run=run)}
    assert rows[people["berlin"].pk] == dt.datetime(2026, 3, 28, 8, 0, tzinfo=UTC)  # 09:00 CET, today
    assert rows[people["york"].pk] == dt.datetime(2026, 3, 28, 13, 0, tzinfo=UTC)  # 09:00 EDT, today
    assert rows[people["tenant"].pk] == dt.datetime(2026, 3, 29, 0, 0, tzinfo=UTC)  # 09:00 Tokyo, tomorrow
    assert rows[people["kiritimati"].pk] == dt.datetime(2026, 3, 28, 19, 0, tzinfo=UTC)  # UTC+14, tomorrow there
    # Across the DST change in Berlin (29 March): 09:00 CEST is 07:00 UTC.
    assert next_local_time(dt.time(9), zoneinfo.ZoneInfo("Europe/Berlin"), rows[people["berlin"].pk]) == dt.datetime(
        2026, 3, 29, 7, 0, tzinfo=UTC
    )
    # The per-zone fallback used on SQLite agrees with the statement.
    Delivery.objects.filter(run=run).update(not_before=None)
    with time_machine.travel(now, tick=False):
        _local_times_by_zone(run, Campaign.objects.select_related("tenant").get(pk=campaign.pk), dt.time(9), now)
    assert {d.contact_id: d.not_before for d in Delivery.objects.filter(run=run)} == rows

    with time_machine.travel(dt.datetime(2026, 3, 28, 8, 0, 1, tzinfo=UTC), tick=False):
        ids = deliveries_claim(run=run)
        assert [Delivery.objects.get(pk=pk).contact_id for pk in ids] == [people["berlin"].pk]
        deliveries_send(run=run, ids=ids)
    assert len(smtp.inbox.wait_for(1)) == 1


def test_recipient_zone_falls_back_to_the_tenants(world):
    world.tenant_a.time_zone = "America/Chicago"
    assert str(recipient_zone("", world.tenant_a)) == "America/Chicago"
    assert str(recipient_zone("Nowhere/Special", world.tenant_a)) == "America/Chicago"
    assert str(recipient_zone("Asia/Kolkata", world.tenant_a)) == "Asia/Kolkata"


# --- frequency cap -------------------------------------------------------------------------------
def test_the_frequency_cap_counts_and_limits_marketing_only(shop, smtp):
    shop.frequency_cap_messages = 1
    shop.save()
    ann = subscriber(shop, "ann", email="ann@example.com", purposes=["marketing", "newsletter"])

    def send(purpose: str) -> tuple[str, str]:
        campaign = campaign_for(shop, [ann], purpose=purpose)
        variant_for(campaign, subject=purpose, html_body="<p>x</p>")
        run = run_start(campaign=campaign)
        deliveries_send(run=run, ids=deliveries_claim(run=run))
        return statuses(run)[ann.pk]

    assert send("newsletter") == ("sent", "")
    assert send("newsletter") == ("sent", ""), "a non-marketing campaign is not capped"
    assert send("marketing") == ("sent", ""), "newsletters did not count towards the cap"
    assert send("marketing") == ("skipped", "frequency_cap")
    assert send("newsletter") == ("sent", "")


# --- throttle, pause, cancel ---------------------------------------------------------------------
def five_people(shop) -> list[Contact]:
    return [subscriber(shop, f"p{i}", email=f"p{i}@example.com") for i in range(5)]


def test_the_throttle_limits_claims_per_minute_across_workers(shop, smtp):
    campaign = campaign_for(shop, five_people(shop), throttle_per_minute=3)
    variant_for(campaign, subject="Hi", html_body="<p>Hi</p>")
    start = dt.datetime(2026, 6, 10, 10, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False):
        run = run_start(campaign=campaign)
        first = deliveries_claim_batch(run=run, size=2)
        second = deliveries_claim_batch(run=run)  # another worker: only what is left of the minute
        third = deliveries_claim_batch(run=run)
        assert (len(first.ids), len(second.ids), third.ids) == (2, 1, [])
        assert third.run_open and third.wait == pytest.approx(60, abs=1)
        deliveries_send(run=run, ids=first.ids + second.ids)
    with time_machine.travel(start + dt.timedelta(seconds=30), tick=False):
        assert deliveries_claim_batch(run=run).ids == [], "sent messages still use the minute"
    with time_machine.travel(start + THROTTLE_WINDOW + dt.timedelta(seconds=1), tick=False):
        assert len(deliveries_claim_batch(run=run).ids) == 2


def test_skipped_deliveries_do_not_use_the_allowance(shop, smtp):
    people = [subscriber(shop, f"p{i}", email=f"p{i}@example.com") for i in range(6)]
    campaign = campaign_for(shop, people, throttle_per_minute=3)
    variant_for(campaign, subject="Hi", html_body="<p>Hi</p>")
    run = run_start(campaign=campaign)
    first = deliveries_claim(run=run)
    Contact.objects.filter(pk__in=Delivery.objects.filter(pk__in=first).values("contact_id")).update(email="")
    assert deliveries_send(run=run, ids=first).skipped == 3
    assert len(deliveries_claim(run=run)) == 3, "nothing was sent: the whole minute is left"


def test_pausing_a_run_stops_claims_and_resuming_continues(shop, smtp):
    campaign = campaign_for(shop, five_people(shop))
    variant_for(campaign, subject="Hi", html_body="<p>Hi</p>")
    run = run_start(campaign=campaign)
    assert len(deliveries_claim(run=run, size=2)) == 2
    CampaignRun.objects.filter(pk=run.pk).update(status="paused")
    paused = deliveries_claim_batch(run=run)
    assert (paused.ids, paused.run_open) == ([], False)
    CampaignRun.objects.filter(pk=run.pk).update(status="sending")
    assert len(deliveries_claim(run=run)) == 3


def test_cancel_skips_what_is_pending_and_stops_the_run(shop, smtp):
    campaign = campaign_for(shop, five_people(shop))
    variant_for(campaign, subject="Hi", html_body="<p>Hi</p>")
    run = run_start(campaign=campaign)
    in_flight = deliveries_claim(run=run, size=2)
    assert run_cancel(run=run) == 3
    run.refresh_from_db()
    assert run.status == "cancelled" and run.finished_at is not None
    rows = Delivery.objects.filter(run=run)
    assert rows.filter(status="skipped", skip_reason="cancelled").count() == 3
    assert deliveries_claim(run=run) == []
    # The batch that was already being sent finishes and is recorded.
    deliveries_send(run=run, ids=in_flight)
    assert rows.filter(status="sent").count() == 2
    assert run_cancel(run=run) == 0


# --- runs ----------------------------------------------------------------------------------------
def test_run_start_is_idempotent_per_occurrence(shop):
    campaign = campaign_for(shop, five_people(shop), schedule="recurring", crontab="0 9 * * 1")
    variant_for(campaign, subject="Hi", html_body="<p>Hi</p>")
    monday = dt.datetime(2026, 6, 8, 9, 0, tzinfo=UTC)
    first = run_start(campaign=campaign, scheduled_for=monday)
    again = run_start(campaign=campaign, scheduled_for=monday)
    assert again.pk == first.pk
    assert Delivery.objects.filter(run=first).count() == 5
    following = run_start(campaign=campaign, scheduled_for=monday + dt.timedelta(days=7))
    assert following.pk != first.pk and following.number == 2
    assert CampaignRun.objects.filter(campaign=campaign).count() == 2


def test_a_delivery_whose_variant_is_gone_is_skipped(shop, smtp):
    ann = subscriber(shop, "ann", email="ann@example.com")
    campaign = campaign_for(shop, [ann])
    variant = variant_for(campaign, subject="Hi", html_body="<p>Hi</p>")
    run = run_start(campaign=campaign)
    variant.delete()
    deliveries_send(run=run, ids=deliveries_claim(run=run))
    assert statuses(run)[ann.pk] == ("skipped", "no_variant")


# --- failures ------------------------------------------------------------------------------------
class FlakyInbox(Inbox):
    """Greylists ``greylisted@`` once (451, try later) and refuses ``nobody@`` (550)."""

    def __init__(self) -> None:
        super().__init__()
        self.greylisted = 0

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 No such user"
        if address.startswith("greylisted@") and self.greylisted == 0:
            self.greylisted += 1
            return "451 4.7.1 Greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def flaky_smtp(settings):
    inbox = FlakyInbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_USE_TLS = "127.0.0.1", controller.port, False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    yield inbox
    controller.stop()


def test_a_transient_failure_is_retried_with_backoff_then_sent_and_a_permanent_one_recorded(shop, flaky_smtp):
    grey = subscriber(shop, "grey", email="greylisted@example.com")
    gone = subscriber(shop, "gone", email="nobody@example.com")
    ann = subscriber(shop, "ann", email="ann@example.com")
    campaign = campaign_for(shop, [grey, gone, ann])
    variant_for(campaign, subject="Hi", html_body="<p>Hi</p>")
    start = dt.datetime(2026, 6, 10, 10, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False):
        run = run_start(campaign=campaign)
        outcome = deliveries_send(run=run, ids=deliveries_claim(run=run))
    assert (outcome.sent, outcome.retried, outcome.failed) == (1, 1, 1)
    rows = {d.contact_id: d for d in Delivery.objects.filter(run=run)}
    assert rows[gone.pk].status == "failed" and "550" in rows[gone.pk].error
    held = rows[grey.pk]
    assert (held.status, held.attempts) == ("pending", 1) and "451" in held.error
    assert held.not_before == start + dt.timedelta(minutes=2)
    with time_machine.travel(start + dt.timedelta(minutes=1), tick=False):
        assert deliveries_claim(run=run) == [], "not before its time"
    with time_machine.travel(start + dt.timedelta(minutes=2, seconds=1), tick=False):
        deliveries_send(run=run, ids=deliveries_claim(run=run))
        assert run_finish_if_done(run=run)
    held.refresh_from_db()
    assert (held.status, held.attempts) == ("sent", 2)
    assert sorted(m["To"] for m in flaky_smtp.wait_for(2)) == ["ann@example.com", "greylisted@example.com"]
    assert Campaign.objects.get(pk=campaign.pk).status == "sent"


def test_backoff_doubles_and_respects_retry_after():
    now = dt.datetime(2026, 1, 1, tzinfo=UTC)
    delays = [(_retry_at(now, attempt, None) - now).total_seconds() / 60 for attempt in range(1, MAX_ATTEMPTS + 3)]
    assert delays == [2, 4, 8, 16, 32, 60, 60]
    assert _retry_at(now, 1, 600) == now + dt.timedelta(minutes=10)


def test_the_last_attempt_is_recorded_as_failed(shop, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", free_port(), 1
    ann = subscriber(shop, "ann", email="ann@example.com")
    campaign = campaign_for(shop, [ann])
    variant_for(campaign, subject="Hi", html_body="<p>Hi</p>")
    run = run_start(campaign=campaign)
    Delivery.objects.filter(run=run).update(attempts=MAX_ATTEMPTS - 1)
    deliveries_send(run=run, ids=deliveries_claim(run=run))
    row = Delivery.objects.get(run=run)
    assert (row.status, row.attempts) == ("failed", MAX_ATTEMPTS)
    assert "could not open the email connection" in row.error


def test_variant_cache_follows_edits(shop, smtp):
    ann = subscriber(shop, "ann", email="ann@example.com")
    campaign = campaign_for(shop, [ann])
    variant = variant_for(campaign, subject="First {{ contact.first_name }}", html_body="<p>One</p>")
    run = run_start(campaign=campaign)
    Variant.objects.filter(pk=variant.pk).update(subject="Second {{ contact.first_name }}")
    deliveries_send(run=run, ids=deliveries_claim(run=run))
    [message] = smtp.inbox.wait_for(1)
    assert message["Subject"] == "Second Ann", "what is sent is the variant as it is at the moment of sending"


@pytest.fixture(autouse=True)
def _tenant(shop):
    with tenant_context(shop.id):
        yield
