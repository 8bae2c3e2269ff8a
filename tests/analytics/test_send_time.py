"""Send-time optimisation: profiles from human engagement with the tenant's prior, the best-time
option that holds each delivery until its contact's hour, the composer and API field, the contact
page, and a real send at the chosen moment."""

# Fixtures shared between these modules are imported by name, which pytest needs and ruff flags.
# ruff: noqa: F811

from __future__ import annotations

import datetime as dt
import random
import re
import zoneinfo
from typing import Any

import pytest
import time_machine
from django.test import Client
from django.urls import reverse

from analytics.models import MessageEvent, SendTimeBaseline, SendTimeProfile
from analytics.send_time import (
    DEFAULT_HOUR_OF_WEEK,
    LOOKBACK,
    _apply_python,
    _compute_python,
    apply_best_times,
    best_moment,
    choose_hour,
    contact_best_send_time,
    describe_hour_of_week,
    engagement_cells,
    hour_of_week,
    scheduled_send_hours,
    send_time_profiles_compute,
)
from analytics.tasks import send_time_recompute
from campaigns import tasks as campaign_tasks
from campaigns.models import Campaign, CampaignRun, Delivery
from campaigns.sending import run_next_due, run_start
from contacts.models import Contact
from segmentor.periodic import PERIODIC_TASKS
from tests.campaigns.test_sending_channels import campaign_for, shop, subscriber, variant_for  # noqa: F401
from tests.conftest import World

pytestmark = pytest.mark.django_db
UTC = dt.UTC
NOW = dt.datetime(2026, 6, 10, 12, 0, tzinfo=UTC)  # a Wednesday; Berlin is UTC+2, New York UTC-4
_delivery_ids = iter(range(1, 10**9))


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def engage(contact: Contact, when: dt.datetime, *, kind: str = "open", machine: str = "", delivery: int = 0) -> int:
    """Record an engagement with a message (a new one unless ``delivery`` names it); return the message's id."""
    delivery = delivery or next(_delivery_ids)
    MessageEvent.objects.create(
        tenant_id=contact.tenant_id, delivery_id=delivery, campaign_id=1, contact_id=contact.pk, kind=kind,
        machine=machine, occurred_at=when,
    )  # fmt: skip
    return delivery


def profiles(tenant_id: int) -> dict[int, tuple[int, float, int]]:
    return {
        p.contact_id: (p.best_hour_of_week, p.confidence, p.events_counted)
        for p in SendTimeProfile.objects.filter(tenant_id=tenant_id)
    }


# --- the rule --------------------------------------------------------------------------------------
def test_hours_of_the_week_count_from_monday_midnight():
    assert hour_of_week(dt.datetime(2026, 6, 8, 0, 30)) == 0  # a Monday
    assert hour_of_week(dt.datetime(2026, 6, 9, 10, 59)) == 34  # Tuesday 10:00-11:00
    assert hour_of_week(dt.datetime(2026, 6, 14, 23, 0)) == 167  # Sunday 23:00
    assert describe_hour_of_week(34) == "Tuesday 10:00-11:00"
    assert describe_hour_of_week(167) == "Sunday 23:00-00:00"
    assert DEFAULT_HOUR_OF_WEEK == 34


# The tenant: 10 engagements on Tuesdays 10:00 (its peak), 5 on Wednesdays 10:00, 1 on Thursdays 04:00,
# 3 on Saturdays 00:00. The prior weighs the peak as 3 engagements: score(h) = own(h) × 10 + 3 × tenant(h),
# against 3 × 10 = 30 for the peak with no engagement of the contact's own.
TENANT = [0] * 168
TENANT[34], TENANT[58], TENANT[76], TENANT[120] = 10, 5, 1, 3


@pytest.mark.parametrize(
    ("own", "expected"),
    [
        ({}, (34, 0.0)),  # no history: the tenant's peak
        ({76: 1}, (34, 0.0)),  # 1 × 10 + 3 × 1 = 13 < 30
        ({58: 1}, (34, 0.0)),  # 10 + 15 = 25 < 30: one engagement needs an hour above 2/3 of the peak
        ({58: 1, 76: 1}, (34, 0.0)),  # single engagements spread thin do not move the contact
        ({34: 1}, (34, 0.25)),  # at the peak: 10 + 30 = 40, a quarter of it their own
        ({58: 2}, (58, 0.57)),  # 20 + 15 = 35 > 30 (20 / 35 their own): two, at an hour above 1/3 of the peak
        ({76: 2}, (34, 0.0)),  # 20 + 3 = 23 < 30: two, at an hour the tenant shuns
        ({76: 3}, (76, 0.91)),  # 30 + 3 = 33 > 30: three at one hour always beat the prior
        ({120: 3, 34: 1}, (34, 0.25)),  # 30 + 9 = 39 < 10 + 30 = 40
        ({120: 4, 34: 1}, (120, 0.82)),  # 40 + 9 = 49 > 40 (40 / 49 = 81.6 %)
    ],
)
def test_choose_hour_blends_own_engagement_with_the_tenants_distribution(own, expected):
    assert choose_hour(own, TENANT) == expected


def test_equal_scores_go_to_the_hour_the_tenant_prefers_then_the_earlier_one():
    tenant = [0] * 168
    tenant[40], tenant[100], tenant[20] = 6, 6, 4  # peak 6: score(h) = own(h) × 6 + 3 × tenant(h)
    assert choose_hour({100: 1, 40: 1}, tenant) == (40, 0.25), "6 + 18 = 24 for both, and equal shares: the earlier"
    assert choose_hour({20: 2, 100: 1}, tenant) == (100, 0.25), "12 + 12 = 24 = 6 + 18: the tenant's favourite"
    assert choose_hour({20: 3, 100: 1}, tenant) == (20, 0.6), "18 + 12 = 30 against 24"


def test_a_tenant_without_engagement_sends_on_tuesday_at_ten():
    assert choose_hour({}, [0] * 168) == (DEFAULT_HOUR_OF_WEEK, 0.0)
    ties = [0] * 168
    ties[100] = ties[40] = 3
    assert choose_hour({}, ties) == (40, 0.0), "equal peaks: the earlier hour"


# --- the recompute ---------------------------------------------------------------------------------
@pytest.fixture
def engaged(shop):
    """Engagement by people in four zones (the tenant's is Europe/Berlin), with what must not count."""
    people = {
        "fan": subscriber(shop, "fan"),  # no zone: Berlin's
        "night": subscriber(shop, "night", time_zone="America/New_York"),
        "tokyo": subscriber(shop, "tokyo", time_zone="Asia/Tokyo"),
        "two": subscriber(shop, "two", time_zone="Europe/Berlin"),
        "mars": subscriber(shop, "mars"),
        "quiet": subscriber(shop, "quiet"),
        "gone": subscriber(shop, "gone"),
        "old": subscriber(shop, "old"),
    }
    # A zone PostgreSQL does not know (written around the validation) counts as the tenant's.
    Contact.objects.filter(pk=people["mars"].pk).update(time_zone="Mars/Olympus_Mons")
    # fan: four messages opened on Tuesdays 10:xx in Berlin (08:xx UTC), one of them also clicked and
    # re-opened in the same hour (one engagement), plus a privacy proxy's open and an unsubscribe.
    first = engage(people["fan"], at("2026-06-09 08:05"))
    engage(people["fan"], at("2026-06-09 08:07"), kind="click", delivery=first)
    engage(people["fan"], at("2026-06-09 08:50"), delivery=first)
    for day in ("2026-06-02", "2026-05-26", "2026-05-19"):
        engage(people["fan"], at(f"{day} 08:30"))
    engage(people["fan"], at("2026-06-06 01:00"), machine="apple privacy proxy")
    engage(people["fan"], at("2026-06-06 01:00"), kind="unsub")
    # night: Wednesdays 22:30 in New York = Thursdays 02:30 UTC (hour 70 there, 76 in Berlin).
    for day in ("2026-06-04", "2026-05-28", "2026-05-21"):
        engage(people["night"], at(f"{day} 02:30"))
    # tokyo: one open, Monday 23:30 UTC = Tuesday 08:30 in Tokyo (hour 32; Tuesday 01:30 = 25 in Berlin).
    engage(people["tokyo"], at("2026-06-08 23:30"))
    # two: Fridays 16:10 UTC = 18:10 in Berlin (hour 114), twice.
    engage(people["two"], at("2026-06-05 16:10"))
    engage(people["two"], at("2026-05-29 16:10"))
    # mars: Monday 07:00 UTC = 09:00 on the tenant's clock (hour 9).
    engage(people["mars"], at("2026-06-08 07:00"))
    # gone is erased; old engaged before the window.
    engage(people["gone"], at("2026-06-09 08:00"))
    Contact.objects.filter(pk=people["gone"].pk).update(erased_at=NOW)
    engage(people["old"], NOW - LOOKBACK - dt.timedelta(minutes=1))
    return shop, people


def test_profiles_match_hand_computed_expectations(engaged):
    tenant, people = engaged
    result = send_time_profiles_compute(tenant=tenant, now=NOW)
    # The tenant: hour 34 × 4 (fan), 70 × 3 (night), 114 × 2 (two), 32 × 1 (tokyo), 9 × 1 (mars): peak 4 at 34.
    baseline = SendTimeBaseline.objects.get(tenant=tenant)
    expected_counts = [0] * 168
    expected_counts[34], expected_counts[70], expected_counts[114], expected_counts[32], expected_counts[9] = (
        4, 3, 2, 1, 1,
    )  # fmt: skip
    assert baseline.hour_counts == expected_counts
    assert (baseline.best_hour_of_week, baseline.events_counted, baseline.contacts_profiled) == (34, 11, 5)
    assert (result.contacts, result.engagements, result.best_hour_of_week, result.written) == (5, 11, 34, 5)
    # score(h) = own(h) × 4 + 3 × tenant(h); the prior's peak scores 3 × 4 = 12.
    assert profiles(tenant.pk) == {
        people["fan"].pk: (34, 0.57, 4),  # 16 + 12 = 28, 16 of it their own (57.1 %)
        people["night"].pk: (70, 0.57, 3),  # 12 + 9 = 21 > 12: on New York's clock
        people["two"].pk: (114, 0.57, 2),  # 8 + 6 = 14 > 12
        people["tokyo"].pk: (34, 0.0, 1),  # 4 + 3 = 7 < 12: one open does not beat the tenant's habit
        people["mars"].pk: (34, 0.0, 1),  # hour 9 on the tenant's clock: 4 + 3 = 7 < 12
    }
    # Nothing changed: nothing is written again.
    assert send_time_profiles_compute(tenant=tenant, now=NOW).written == 0


def test_profiles_follow_new_engagement_and_drop_out_of_the_window(engaged):
    tenant, people = engaged
    send_time_profiles_compute(tenant=tenant, now=NOW)
    # Three more Friday evenings for tokyo (Saturday 03:00 in Tokyo = Friday 18:00 UTC: hour 123 there).
    for day in ("2026-06-05", "2026-05-29", "2026-05-22"):
        engage(people["tokyo"], at(f"{day} 18:00"))
    result = send_time_profiles_compute(tenant=tenant, now=NOW)
    assert profiles(tenant.pk)[people["tokyo"].pk] == (123, 0.57, 4)  # 3 × 4 + 3 × 3 = 21 > 12
    assert result.written == 1
    later = send_time_profiles_compute(tenant=tenant, now=NOW + LOOKBACK + dt.timedelta(days=30))
    assert (later.contacts, later.removed) == (0, 5) and profiles(tenant.pk) == {}
    baseline = SendTimeBaseline.objects.get(tenant=tenant)
    assert (baseline.best_hour_of_week, baseline.events_counted) == (DEFAULT_HOUR_OF_WEEK, 0)


def test_the_python_path_agrees_with_the_sql_on_generated_data(shop):
    rng = random.Random(7)
    zones = ["", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Asia/Kolkata", "Australia/Adelaide"]
    people = [subscriber(shop, f"p{i}", time_zone=rng.choice(zones)) for i in range(60)]
    for person in people:
        messages = [next(_delivery_ids) for _ in range(rng.randint(0, 6))]
        habit = rng.randrange(168)
        for message in messages:
            for _ in range(rng.randint(1, 3)):
                base = NOW - dt.timedelta(days=rng.randint(0, 170), hours=habit % 24)
                engage(person, base + dt.timedelta(minutes=rng.randint(0, 200)), delivery=message)
            if rng.random() < 0.2:
                engage(person, NOW - dt.timedelta(hours=rng.randint(1, 2000)), machine="security scanner")
    send_time_profiles_compute(tenant=shop, now=NOW)
    by_sql = profiles(shop.pk)
    counts = SendTimeBaseline.objects.get(tenant=shop).hour_counts
    SendTimeProfile.objects.all().delete()
    python_counts, contacts, written, removed = _compute_python(shop, NOW)
    assert python_counts == counts and contacts == written == len(by_sql) > 40 and removed == 0
    assert profiles(shop.pk) == by_sql
    # And each profile is the rule applied to the contact's own cells.
    cells = engagement_cells(shop, NOW)
    for contact_id, (hour, confidence, total) in by_sql.items():
        assert (hour, confidence) == choose_hour(cells[contact_id], counts)
        assert total == sum(cells[contact_id].values())


def test_the_periodic_task_recomputes_each_tenant(engaged, world: World):
    tenant, _people = engaged
    assert any(spec.task == "analytics.tasks.send_time_recompute_all" for spec in PERIODIC_TASKS)
    with time_machine.travel(NOW, tick=False):
        assert send_time_recompute(tenant.pk) == 5
        assert send_time_recompute(world.tenant_b.pk) == 0
    assert SendTimeProfile.all_tenants.filter(tenant_id=world.tenant_b.pk).count() == 0


# --- sending at the best time ----------------------------------------------------------------------
START = at("2026-06-10 09:20")  # Wednesday: 11:20 in Berlin, 05:20 in New York, 18:20 in Tokyo, 14:50 in Kolkata


def best_time_campaign(tenant, hours: dict[str, tuple[str, int | None]], **fields: Any) -> tuple[Campaign, dict]:
    """A best-time campaign to one person per (zone, best hour of the week); None: no profile."""
    people = {}
    for name, (zone, hour) in hours.items():
        people[name] = subscriber(tenant, name, email=f"{name}@example.com", time_zone=zone)
        if hour is not None:
            SendTimeProfile.objects.create(
                tenant=tenant, contact=people[name], best_hour_of_week=hour, confidence=0.5, events_counted=3,
                computed_at=START,
            )  # fmt: skip
    campaign = campaign_for(tenant, list(people.values()), best_time=True, **fields)
    variant_for(campaign, subject="Hi {{ contact.first_name }}", html_body="<p>Hi</p>")
    return campaign, people


def held_until(run: CampaignRun) -> dict[int, dt.datetime | None]:
    return {d.contact_id: d.not_before for d in Delivery.objects.filter(run=run)}


def test_each_delivery_waits_for_its_contacts_best_hour_within_24_hours(shop):
    SendTimeBaseline.objects.create(tenant=shop, hour_counts=[], best_hour_of_week=60, computed_at=START)
    campaign, people = best_time_campaign(
        shop,
        {
            "fan": ("", 34),  # Tuesday 10:00: not within the day, so 10:00 tomorrow in Berlin
            "night": ("America/New_York", 70),  # Wednesday 22:00 in New York, tonight
            "tokyo": ("Asia/Tokyo", 34),  # Tuesday 10:00: 10:00 tomorrow in Tokyo
            "two": ("Europe/Berlin", 114),  # Friday 18:00: 18:00 today in Berlin
            "now": ("Europe/Berlin", 59),  # Wednesday 11:00: the hour is on, at once
            "kolkata": ("Asia/Kolkata", 68),  # Wednesday 20:00 in Kolkata (UTC+5:30)
            "new": ("", None),  # no profile: the tenant's busiest hour (Wednesday 12:00)
            "same": ("Europe/Berlin", 35),  # Tuesday 11:00 is six days away; 11:00 today is on: at once
            "early": ("Europe/Berlin", 33),  # Tuesday 09:00: 09:00 has passed today, so 09:00 tomorrow
        },
    )
    with time_machine.travel(START, tick=False):
        run = run_start(campaign=campaign)
    expected = {
        people["fan"].pk: at("2026-06-11 08:00"),
        people["night"].pk: at("2026-06-11 02:00"),
        people["tokyo"].pk: at("2026-06-11 01:00"),
        people["two"].pk: at("2026-06-10 16:00"),
        people["now"].pk: START,
        people["kolkata"].pk: at("2026-06-10 14:30"),
        people["new"].pk: at("2026-06-10 10:00"),
        people["same"].pk: START,
        people["early"].pk: at("2026-06-11 07:00"),
    }
    assert held_until(run) == expected
    assert all(START <= moment < START + dt.timedelta(hours=24) for moment in expected.values())
    # The fallback used on SQLite sets the same moments.
    Delivery.objects.filter(run=run).update(not_before=None)
    assert _apply_python(run, shop, 60, START) == 9
    assert held_until(run) == expected
    # A delivery something else holds back (an experiment's held share) is left alone, by both paths.
    far = at("2030-01-01 00:00")
    for apply in (apply_best_times, lambda run: _apply_python(run, shop, 60, START)):
        Delivery.objects.filter(run=run).update(not_before=None)
        Delivery.objects.filter(run=run, contact=people["fan"]).update(not_before=far)
        assert apply(run) == 8
        assert held_until(run) == {**expected, people["fan"].pk: far}
    Delivery.objects.filter(run=run, contact=people["fan"]).update(not_before=expected[people["fan"].pk])
    # The run page's distribution of scheduled hours, on the tenant's clock.
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    hours = scheduled_send_hours(run=run, zone=berlin)
    assert [(h.astimezone(berlin).strftime("%a %H:%M"), n) for h, n in hours] == [
        ("Wed 11:00", 2), ("Wed 12:00", 1), ("Wed 16:00", 1), ("Wed 18:00", 1),
        ("Thu 03:00", 1), ("Thu 04:00", 1), ("Thu 09:00", 1), ("Thu 10:00", 1),
    ]  # fmt: skip


def test_without_a_baseline_contacts_without_history_get_tuesday_at_ten(shop):
    campaign, people = best_time_campaign(shop, {"new": ("Europe/Berlin", None)})
    monday = at("2026-06-08 15:00")  # Monday 17:00 in Berlin: Tuesday 10:00 is within the day
    with time_machine.travel(monday, tick=False):
        run = run_start(campaign=campaign)
    assert held_until(run) == {people["new"].pk: at("2026-06-09 08:00")}


def test_across_a_daylight_saving_change_the_wall_clock_hour_is_kept(shop):
    campaign, people = best_time_campaign(shop, {"sunday": ("Europe/Berlin", 154)})  # Sunday 10:00
    saturday = at("2026-03-28 12:00")  # 13:00 CET; clocks go forward at 02:00 on Sunday
    with time_machine.travel(saturday, tick=False):
        run = run_start(campaign=campaign)
    assert held_until(run) == {people["sunday"].pk: at("2026-03-29 08:00")}  # 10:00 CEST
    assert best_moment(154, zoneinfo.ZoneInfo("Europe/Berlin"), saturday) == at("2026-03-29 08:00")


def test_a_later_start_counts_from_the_occurrence_and_other_campaigns_are_untouched(shop):
    campaign, people = best_time_campaign(shop, {"two": ("Europe/Berlin", 114)})
    friday = at("2026-06-12 06:00")
    with time_machine.travel(START, tick=False):
        run = run_start(campaign=campaign, scheduled_for=friday)  # Friday 08:00 in Berlin
    assert held_until(run) == {people["two"].pk: at("2026-06-12 16:00")}, "Friday 18:00, the best hour itself"
    # Released later (an experiment's held share): the 24 hours start from the release.
    Delivery.objects.filter(run=run).update(not_before=None)
    assert apply_best_times(run, after=at("2026-06-12 17:30")) == 1  # Friday 19:30 in Berlin
    assert held_until(run) == {people["two"].pk: at("2026-06-13 16:00")}, "18:00 on Saturday"
    plain = campaign_for(shop, list(people.values()))
    local = campaign_for(shop, list(people.values()), best_time=True, schedule="local_time", local_time=dt.time(9))
    for other in (plain, local):
        variant_for(other, subject="Hi", html_body="<p>Hi</p>")
    with time_machine.travel(START, tick=False):
        assert held_until(run_start(campaign=plain)) == {people["two"].pk: None}
        local_run = run_start(campaign=local)
        assert apply_best_times(local_run) == 0, "a local time already times each delivery"
    assert held_until(local_run) == {people["two"].pk: at("2026-06-11 07:00")}  # 09:00 in Berlin


def test_a_real_send_goes_out_at_each_contacts_hour(shop, smtp, monkeypatch):
    campaign, people = best_time_campaign(
        shop, {"ann": ("Europe/Berlin", 60), "bea": ("America/New_York", 70)}
    )  # Wednesday 12:00 in Berlin (10:00 UTC); Wednesday 22:00 in New York (Thursday 02:00 UTC)
    rechecks: list[float] = []
    monkeypatch.setattr(
        campaign_tasks.send_run, "apply_async", lambda args, kwargs=None, countdown=None: rechecks.append(countdown)
    )
    with time_machine.travel(START, tick=False):
        run = run_start(campaign=campaign)
        assert campaign_tasks.send_run(shop.pk, run.pk)["sent"] == 0
        assert run_next_due(run=run) == at("2026-06-10 10:00"), "nothing is due before Ann's hour"
    assert rechecks == [600], "the task comes back to check (at most every 10 minutes)"
    first = at("2026-06-10 10:00:01")
    with time_machine.travel(first, tick=False):
        assert campaign_tasks.send_run(shop.pk, run.pk)["sent"] == 1
    [message] = smtp.inbox.wait_for(1)
    assert message["To"] == "ann@example.com"
    second = at("2026-06-11 02:00:01")
    with time_machine.travel(second, tick=False):
        assert campaign_tasks.send_run(shop.pk, run.pk)["sent"] == 1
    assert [m["To"] for m in smtp.inbox.wait_for(2)] == ["ann@example.com", "bea@example.com"]
    sent = {d.contact_id: (d.status, d.sent_at) for d in Delivery.objects.filter(run=run)}
    assert sent == {people["ann"].pk: ("sent", first), people["bea"].pk: ("sent", second)}
    run.refresh_from_db()
    assert run.status == CampaignRun.Status.DONE


# --- the composer, the API, the contact page -------------------------------------------------------
def schedule_url(campaign: Campaign) -> str:
    return reverse("campaigns:schedule", kwargs={"tenant_slug": campaign.tenant.slug, "campaign_id": campaign.pk})


def test_the_composer_saves_and_shows_the_option(world: World, shop, alice_client: Client, bob_client: Client):
    campaign = campaign_for(shop, [subscriber(shop, "ann", email="ann@example.com")])
    page = alice_client.get(schedule_url(campaign))
    assert page.status_code == 200 and 'name="best_time"' in page.content.decode()
    saved = alice_client.post(schedule_url(campaign), {"schedule": "now", "best_time": "on", "go": "stay"})
    assert saved.status_code == 302
    campaign.refresh_from_db()
    assert campaign.best_time
    shown = alice_client.get(schedule_url(campaign)).content.decode()
    assert re.search(r'<input type="checkbox" name="best_time"[^>]* checked', shown)
    refused = alice_client.post(
        schedule_url(campaign), {"schedule": "local_time", "local_time": "09:00", "best_time": "on"}
    )
    assert refused.status_code == 400 and "choose one or the other" in refused.content.decode()
    cleared = alice_client.post(schedule_url(campaign), {"schedule": "now", "go": "stay"})
    assert cleared.status_code == 302
    campaign.refresh_from_db()
    assert not campaign.best_time and campaign.schedule == "now"
    assert bob_client.post(schedule_url(campaign), {"schedule": "now", "best_time": "on"}).status_code == 403


def test_the_api_field_round_trips(world: World, api_a, api_b):
    created = api_a.post("/api/v1/campaigns/", {"name": "Best", "best_time": True}, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["best_time"] is True
    url = f"/api/v1/campaigns/{body['id']}/"
    assert api_a.get(url).json()["best_time"] is True
    assert api_a.patch(url, {"best_time": False}, format="json").json()["best_time"] is False
    bad = api_a.patch(url, {"best_time": "sometimes"}, format="json")
    assert bad.status_code == 400 and "best_time" in bad.json()["error"]["fields"]
    both = api_a.patch(url, {"schedule": "local_time", "local_time": "09:00", "best_time": True}, format="json")
    assert both.status_code == 400 and "best_time" in both.json()["error"]["fields"]
    assert api_b.patch(url, {"best_time": True}, format="json").status_code == 404
    schema = api_a.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    assert "Send at each recipient's best time within the 24 hours" in schema.content.decode()


def test_the_contact_page_shows_the_best_send_time(engaged, world: World, alice_client: Client):
    tenant, people = engaged
    page = reverse("contacts:detail", kwargs={"tenant_slug": tenant.slug, "contact_id": people["night"].pk})
    before = alice_client.get(page).content.decode()
    assert "Best send time" in before and "Tuesday 10:00-11:00" in before and "no engagement to learn from" in before
    send_time_profiles_compute(tenant=tenant, now=NOW)
    night = alice_client.get(page).content.decode()
    assert "Wednesday 22:00-23:00" in night and "America/New_York" in night and "from 3 engagements" in night
    assert "confidence 57 %" in night
    quiet = reverse("contacts:detail", kwargs={"tenant_slug": tenant.slug, "contact_id": people["quiet"].pk})
    text = alice_client.get(quiet).content.decode()
    assert "Tuesday 10:00-11:00" in text and "the workspace's busiest hour" in text
    best = contact_best_send_time(tenant=tenant, contact=people["tokyo"])
    assert (best.hour_of_week, best.source, best.zone) == (34, "workspace", "Asia/Tokyo")


def test_a_best_time_runs_page_shows_its_messages_by_hour(shop, world: World, alice_client: Client, bob_client):
    campaign, _people = best_time_campaign(
        shop, {"a": ("Europe/Berlin", 60), "b": ("", 60), "c": ("America/New_York", 70)}
    )  # two at Wednesday 12:00 in Berlin, one at 04:00 on Thursday in Berlin (22:00 in New York)
    with time_machine.travel(START, tick=False):
        run_start(campaign=campaign)
    page = reverse("campaigns:detail", kwargs={"tenant_slug": shop.slug, "campaign_id": campaign.pk})
    for client in (alice_client, bob_client):
        body = client.get(page).content.decode()
        rows = re.findall(r"<tr><td>(\w{3} [\d-]+ [\d:]+)</td><td class=\"num\">(\d+)</td>", body)
        assert rows == [("Wed 2026-06-10 12:00", "2"), ("Thu 2026-06-11 04:00", "1")]
    plain = campaign_for(shop, [subscriber(shop, "d", email="d@example.com")])
    variant_for(plain, subject="Hi", html_body="<p>Hi</p>")
    run_start(campaign=plain)
    other = reverse("campaigns:detail", kwargs={"tenant_slug": shop.slug, "campaign_id": plain.pk})
    assert "scheduled-send-hours" not in alice_client.get(other).content.decode()
