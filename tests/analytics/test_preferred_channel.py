"""The preferred-channel profile: the scoring rule, the set-based recompute held to the Python reference on
generated engagement, and the choice among a campaign's channels."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.utils import timezone

from analytics.models import ChannelProfile
from analytics.preferred_channel import (
    HALF_LIFE,
    ChannelChoice,
    Touch,
    best_channel,
    channel_profiles_compute,
    choose_channel,
    contact_touches,
    profile_scores,
    reason_text,
)
from analytics.tasks import channel_profiles_recompute
from contacts.privacy import contact_erase
from segmentor.periodic import PERIODIC_TASKS
from tenants.audit import Actor
from tenants.context import tenant_context
from tests.analytics.preferred_channel_data import EXPECTED, engagement_world, random_history

pytestmark = pytest.mark.django_db
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


# --- the rule --------------------------------------------------------------------------------------
def test_a_score_is_recency_weighted_engagement_per_message_shrunk_towards_zero():
    # One message opened (email: ½) now: ½ / (1 + 1).
    assert profile_scores([Touch("email", NOW, 0.5)], NOW)["email"] == 0.25
    # Ten of ten clicked: 10 / 11.
    assert profile_scores([Touch("sms", NOW, 1.0)] * 10, NOW)["sms"] == pytest.approx(0.909, abs=1e-3)
    # A message a half-life old weighs half: clicked then, ignored now.
    old = NOW - HALF_LIFE
    scores = profile_scores([Touch("push", old, 1.0), Touch("push", NOW, 0.0)], NOW)
    assert scores["push"] == pytest.approx(0.5 / (1.5 + 1), abs=1e-3)
    # Every channel has a score; none without messages.
    assert scores == {"email": 0.0, "sms": 0.0, "push": scores["push"]}
    assert best_channel(scores) == "push" and best_channel({"email": 0.0, "sms": 0.0}) == ""
    # A tie goes to the earlier channel (email, SMS, push).
    assert best_channel({"email": 0.3, "sms": 0.3, "push": 0.1}) == "email"


def test_the_choice_among_a_campaigns_channels_and_its_reason():
    scores = {"email": 0.8, "sms": 0.1, "push": 0.5}
    assert choose_channel(order=["email", "sms"], available=["email", "sms"], scores=scores) == ChannelChoice(
        "email", "most_engaged", {"email": 0.8, "sms": 0.1}
    )
    assert choose_channel(order=["sms", "push"], available=["sms", "push"], scores=scores).channel == "push"
    only = choose_channel(order=["email", "sms"], available=["sms"], scores=scores)
    assert (only.channel, only.reason, only.scores) == ("sms", "only_consented", {"sms": 0.1})
    quiet = choose_channel(order=["sms", "email"], available=["email", "sms"], scores={})
    assert (quiet.channel, quiet.reason) == ("sms", "no_engagement")
    # The order decides a tie; no consent at all falls back to the first channel.
    assert choose_channel(order=["sms", "email"], available=["email", "sms"], scores={"email": 0.4, "sms": 0.4}) == (
        ChannelChoice("sms", "most_engaged", {"sms": 0.4, "email": 0.4})
    )
    assert choose_channel(order=["sms", "email"], available=[], scores=scores).reason == "no_consent"
    assert reason_text("email", "most_engaged", {"email": 0.8, "sms": 0.1}) == "most engaged: Email 0.800 vs SMS 0.100"
    assert reason_text("sms", "only_consented", {"sms": 0.1}) == "only consented channel: SMS"
    assert reason_text("email", "no_engagement", {"email": 0, "sms": 0}).startswith("no engagement yet: Email")
    assert reason_text("", "", None) == ""


# --- the recompute ---------------------------------------------------------------------------------
@pytest.fixture
def world_people(world):
    tenant = world.tenant_a
    with tenant_context(tenant.id):
        yield tenant, engagement_world(tenant, NOW)


def profiles(tenant) -> dict[int, ChannelProfile]:
    return {p.contact_id: p for p in ChannelProfile.objects.filter(tenant=tenant)}


def test_the_recompute_finds_each_kinds_channel_on_generated_engagement(world_people):
    tenant, people = world_people
    assert connection.vendor == "postgresql"
    result = channel_profiles_compute(tenant=tenant, now=NOW)
    found = profiles(tenant)
    everyone = [c for contacts in people.values() for c in contacts]
    assert result.contacts == len(everyone) - len(people["quiet"]) == result.written
    best = {
        "email_fan": "email",
        "sms_fan": "sms",
        "sms_imported": "sms",
        "lapsed_sms": "email",
        "email_only": "sms",
        "no_phone": "sms",
        "no_consent": "sms",
        "push_fan": "push",
    }  # fmt: skip (regardless of consent: the profile is not the choice)
    for kind, channel in best.items():
        for contact in people[kind]:
            assert found[contact.pk].best_channel == channel, kind
    # Machine opens do not count (sms_fan's emails), nor our tracking's copies of its own opens (sms_imported).
    for kind in ("sms_fan", "sms_imported"):
        assert all(found[c.pk].email_score == 0 for c in people[kind])
    fan = found[people["email_fan"][0].pk]
    assert fan.messages_counted == 14 and fan.engagements_counted == 7
    assert 0 < fan.sms_score < fan.email_score or fan.sms_score == 0
    # Recency: five-month-old SMS clicks weigh less than this week's email opens.
    lapsed = found[people["lapsed_sms"][0].pk]
    assert lapsed.email_score > lapsed.sms_score > 0
    assert not any(c.pk in found for c in people["quiet"])
    assert set(EXPECTED) == set(people)


def test_the_sql_recompute_matches_the_python_reference_on_noisy_histories(world):
    tenant = world.tenant_a
    with tenant_context(tenant.id):
        random_history(tenant, NOW, contacts=150, seed=7)
        channel_profiles_compute(tenant=tenant, now=NOW)
        found = profiles(tenant)
        expected = {pk: profile_scores(touches, NOW) for pk, touches in contact_touches(tenant, NOW).items()}
        assert set(found) == set(expected) and len(found) > 100
        for pk, scores in expected.items():
            row = found[pk]
            got = {"email": row.email_score, "sms": row.sms_score, "push": row.push_score}
            assert got == pytest.approx(scores, abs=1.1e-3), pk
            if max(scores.values()) - sorted(scores.values())[-2] > 2e-3:  # clear of rounding ties
                assert row.best_channel == best_channel(scores)


def test_a_second_recompute_rewrites_nothing_and_forgets_who_is_gone(world_people):
    tenant, people = world_people
    channel_profiles_compute(tenant=tenant, now=NOW)
    again = channel_profiles_compute(tenant=tenant, now=NOW)
    assert again.written == 0 and again.removed == 0
    gone = people["email_fan"][0]
    contact_erase(contact=gone, actor=Actor.system("test"))
    # Half a year later only the most recent messages are left in the window.
    later = channel_profiles_compute(tenant=tenant, now=NOW + dt.timedelta(days=60))
    assert gone.pk not in profiles(tenant) and later.removed >= 1
    assert later.written > 0  # the scores moved with time
    far = channel_profiles_compute(tenant=tenant, now=NOW + dt.timedelta(days=400))
    assert far.contacts == 0 and not profiles(tenant)


def test_the_daily_task_recomputes_every_tenant(world_people, settings):
    tenant, people = world_people
    assert any(spec.task == "analytics.tasks.channel_profiles_recompute_all" for spec in PERIODIC_TASKS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(timezone, "now", lambda: NOW)
        assert channel_profiles_recompute(tenant.pk) == sum(len(c) for k, c in people.items() if k != "quiet")
