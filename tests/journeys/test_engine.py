"""The journey engine with the clock moved forward: every trigger, step kind, goal, exit rule and
entry rule; versions; a doubled tick; the five blueprints end to end."""

# ruff: noqa: F811

from __future__ import annotations

import datetime as dt
import json

import pytest
import time_machine
from django.db import transaction

from campaigns.models import Campaign, ChannelConfig, Delivery
from campaigns.tasks import send_run
from contacts.consent import consent_change
from contacts.ingest import events_ingest
from contacts.models import AttributeDefinition, Contact, LifecycleTransition
from contacts.services import attribute_define
from journeys import triggers
from journeys.engine import advance_batch, enroll, next_weekday_time, split_path
from journeys.models import Enrollment, EnrollmentStep, Journey, Step, WebhookNotice
from journeys.notices import notices_post
from journeys.services import journey_create, journey_from_blueprint, journey_start, step_update
from segments.models import Segment, SegmentTransition
from segments.services import segment_create, static_members_add
from tests.campaigns.test_channels import Reply, provider  # noqa: F401
from tests.campaigns.test_sending_channels import ACTOR, API, shop, subscriber  # noqa: F401
from tests.journeys.conftest import T0, walk

pytestmark = pytest.mark.django_db
HOUR, DAY = dt.timedelta(hours=1), dt.timedelta(days=1)
EMAIL = {"variants": [{"name": "All", "target": "default", "subject": "Hi {{ contact.first_name }}",
                       "html_body": "<p>Hello</p>"}]}  # fmt: skip


def live(tenant, steps, **settings) -> Journey:
    data = {"name": settings.pop("name", "J"), "trigger": "event", "trigger_event": "signup", **settings}
    journey = journey_create(tenant=tenant, actor=ACTOR, data={**data, "steps": steps})
    return journey_start(journey=journey, actor=ACTOR)


def event(tenant, contact: Contact, name: str, at: dt.datetime, **properties) -> int:
    with time_machine.travel(at, tick=False):
        [result] = events_ingest(
            tenant=tenant,
            events=[{"event": name, "contact_id": contact.pk, "occurred_at": at.isoformat(), "properties": properties}],
        )
        triggers.on_events(tenant=tenant, event_ids=[result.id], now=at)
    return result.id


def enrollment(journey: Journey, contact: Contact) -> Enrollment:
    return Enrollment.objects.filter(journey=journey, contact=contact).latest("id")


def path(journey: Journey, contact: Contact) -> list[tuple[str, str]]:
    e = enrollment(journey, contact)
    steps = dict(Step.objects.filter(version__journey=journey).values_list("pk", "key"))
    return [(steps[r.step_id], r.outcome) for r in EnrollmentStep.objects.filter(enrollment_id=e.pk).order_by("seq")]


def sent_by(journey: Journey, key: str) -> dict[int, Delivery]:
    step = Step.objects.get(version=journey.live_version, key=key)
    return {d.contact_id: d for d in Delivery.objects.filter(run__campaign_id=step.campaign_id)}


def wait(key, amount, unit, following=None):
    return {"key": key, "kind": "wait", "config": {"duration": {"amount": amount, "unit": unit}},
            "exits": {"next": following}}  # fmt: skip


def send(key, following=None, channel="email", content=EMAIL):
    return {"key": key, "kind": "send", "config": {"channel": channel}, "exits": {"next": following},
            "content": content}  # fmt: skip


# --- steps -----------------------------------------------------------------------------------------
def test_a_wait_holds_the_contact_until_it_has_passed_then_a_send_queues_one_delivery(shop, people):
    journey = live(shop, [wait("s1", 2, "hours", "s2"), send("s2")])
    ann = people["ann"]
    assert enroll(journey=journey, contact_ids=[ann.pk], now=T0) == [ann.pk]
    walk(shop, T0)
    e = enrollment(journey, ann)
    assert (e.step.key, e.next_run_at, e.status) == ("s1", T0 + 2 * HOUR, "active")
    assert walk(shop, T0 + HOUR) == 0, "not due yet"
    walk(shop, T0 + 2 * HOUR)
    e.refresh_from_db()
    assert e.status == "completed"
    assert path(journey, ann) == [("s1", "next"), ("s2", "next")]
    [delivery] = sent_by(journey, "s2").values()
    assert (delivery.contact_id, delivery.status) == (ann.pk, "pending")
    history = EnrollmentStep.objects.get(enrollment_id=e.pk, seq=2)
    assert history.delivery_id == delivery.pk


def test_the_delivery_goes_out_through_the_campaign_pipeline_with_its_consent_checks(shop, people, smtp):
    journey = live(shop, [send("s1")])
    enroll(journey=journey, contact_ids=[people["ann"].pk, people["cleo"].pk], now=T0)
    walk(shop, T0)
    deliveries = sent_by(journey, "s1")
    send_run(shop.pk, next(iter(deliveries.values())).run_id)
    [message] = smtp.inbox.wait_for(1)
    assert message["To"] == "ann@example.com" and message["Subject"] == "Hi Ann"
    statuses = {
        d.contact_id: (d.status, d.skip_reason)
        for d in Delivery.objects.filter(pk__in=[d.pk for d in deliveries.values()])
    }
    assert statuses == {people["ann"].pk: ("sent", ""), people["cleo"].pk: ("skipped", "no_consent")}
    campaign = Campaign.objects.get(pk=Step.objects.get(version=journey.live_version, key="s1").campaign_id)
    assert campaign.kind == Campaign.Kind.JOURNEY and campaign.status == Campaign.Status.DRAFT


def test_wait_until_a_weekday_and_time_on_the_contacts_clock(shop, people):
    ann, ben = people["ann"], people["ben"]
    Contact.objects.filter(pk=ann.pk).update(time_zone="America/New_York")  # Ben: the shop's Berlin
    journey = live(shop, [{"key": "s1", "kind": "wait_until", "config": {"weekdays": [2], "time": "09:00"},
                           "exits": {"next": None}}])  # fmt: skip
    enroll(journey=journey, contact_ids=[ann.pk, ben.pk], now=T0)  # Monday 1 June 2026, 10:00 UTC
    walk(shop, T0)
    due = dict(Enrollment.objects.filter(journey=journey).values_list("contact_id", "next_run_at"))
    assert due[ben.pk] == dt.datetime(2026, 6, 3, 7, 0, tzinfo=dt.UTC)  # Wednesday 09:00 in Berlin
    assert due[ann.pk] == dt.datetime(2026, 6, 3, 13, 0, tzinfo=dt.UTC)  # Wednesday 09:00 in New York
    walk(shop, dt.datetime(2026, 6, 3, 7, 0, tzinfo=dt.UTC))
    statuses = dict(Enrollment.objects.filter(journey=journey).values_list("contact_id", "status"))
    assert statuses == {ben.pk: "completed", ann.pk: "active"}
    import zoneinfo

    assert next_weekday_time(T0, [0], dt.time(12), zoneinfo.ZoneInfo("UTC")) == T0 + 2 * HOUR  # later the same day


def test_wait_for_an_event_has_two_exits_and_an_event_wakes_the_contact_at_once(shop, people):
    ann, ben = people["ann"], people["ben"]
    journey = live(shop, [
        {"key": "s1", "kind": "wait_event", "exits": {"happened": "s2", "timed_out": "s3"},
         "config": {"event": "purchase", "filters": [{"property": "value", "op": "gt", "value": 50}],
                    "timeout": {"amount": 1, "unit": "hours"}}},
        send("s2"), send("s3"),
    ])  # fmt: skip
    enroll(journey=journey, contact_ids=[ann.pk, ben.pk], now=T0)
    walk(shop, T0)
    assert enrollment(journey, ann).waiting_for == "purchase"
    event(shop, ann, "purchase", T0 + 10 * dt.timedelta(minutes=1), value=20)  # filtered out: still waiting
    event(shop, ben, "purchase", T0 + 20 * dt.timedelta(minutes=1), value=80)
    assert enrollment(journey, ben).next_run_at == T0 + 20 * dt.timedelta(minutes=1), "woken by the event"
    walk(shop, T0 + 20 * dt.timedelta(minutes=1))
    assert path(journey, ben) == [("s1", "happened"), ("s2", "next")]
    assert enrollment(journey, ann).step.key == "s1"
    walk(shop, T0 + HOUR)
    assert path(journey, ann) == [("s1", "timed_out"), ("s3", "next")]


def test_a_branch_evaluates_segment_rules_for_the_batch(shop, people):
    ann, ben = people["ann"], people["ben"]
    Contact.objects.filter(pk=ann.pk).update(country="DE")
    rules = {"all": [{"type": "field", "field": "country", "op": "eq", "value": "DE"}]}
    branch = {"key": "s1", "kind": "branch", "config": {"rules": rules}, "exits": {"yes": "s2", "no": "s3"}}
    journey = live(shop, [branch, send("s2"), {"key": "s3", "kind": "exit", "exits": {}}])
    enroll(journey=journey, contact_ids=[ann.pk, ben.pk], now=T0)
    walk(shop, T0)
    assert path(journey, ann) == [("s1", "yes"), ("s2", "next")]
    assert path(journey, ben) == [("s1", "no"), ("s3", "exit")]
    assert {e.status for e in Enrollment.objects.filter(journey=journey)} == {"completed"}


def test_a_random_split_follows_its_weights_and_is_stable():
    paths = [{"label": "a", "weight": 80}, {"label": "b", "weight": 20}]
    chosen = [split_path(pk, 7, paths) for pk in range(1, 10_001)]
    assert 7_700 < chosen.count("a") < 8_300
    assert chosen == [split_path(pk, 7, paths) for pk in range(1, 10_001)]


def test_a_split_step_sends_each_contact_down_one_path(shop, people):
    journey = live(shop, [{"key": "s1", "kind": "split", "exits": {"a": "s2", "b": "s3"},
                           "config": {"paths": [{"label": "a", "weight": 50}, {"label": "b", "weight": 50}]}},
                          send("s2"), send("s3")])  # fmt: skip
    ids = [c.pk for c in people.values()]
    enroll(journey=journey, contact_ids=ids, now=T0)
    walk(shop, T0)
    for contact in people.values():
        e = enrollment(journey, contact)
        step = Step.objects.get(version=journey.live_version, key="s1")
        expected = split_path(e.pk, step.pk, step.config["paths"])
        assert path(journey, contact)[0] == ("s1", expected)


def test_an_update_step_sets_attributes_tags_and_the_stage(shop, people):
    attribute_define(tenant=shop, key="plan", label="Plan", type=AttributeDefinition.Type.TEXT, actor=ACTOR)
    attribute_define(tenant=shop, key="tags", label="Tags", type=AttributeDefinition.Type.LIST, actor=ACTOR)
    ann = people["ann"]
    Contact.objects.filter(pk=ann.pk).update(attributes={"tags": ["early"]})
    config = {"set_attributes": {"plan": "pro"}, "add_to_list": {"attribute": "tags", "values": ["vip", "early"]},
              "stage": "loyal_advocate"}  # fmt: skip
    journey = live(shop, [{"key": "s1", "kind": "update", "config": config, "exits": {"next": None}}])
    enroll(journey=journey, contact_ids=[ann.pk], now=T0)
    walk(shop, T0)
    ann.refresh_from_db()
    assert ann.attributes == {"plan": "pro", "tags": ["early", "vip"]}
    assert ann.lifecycle_stage == "loyal_advocate"
    assert LifecycleTransition.objects.filter(contact=ann, to_stage="loyal_advocate", reason="journey").exists()


def test_a_webhook_step_posts_a_signed_notice_once(shop, people, provider):
    provider.reply("/hook", Reply.json(200, {}))
    ChannelConfig.objects.create(tenant=shop, channel="webhook", backend="webhook", secret="s3cret")
    journey = live(shop, [{"key": "s1", "kind": "webhook", "config": {"url": f"{provider.url}/hook"},
                           "exits": {"next": None}}])  # fmt: skip
    enroll(journey=journey, contact_ids=[people["ann"].pk], now=T0)
    walk(shop, T0)
    assert notices_post(tenant=shop) == 1
    assert notices_post(tenant=shop) == 0, "posted once"
    [request] = provider.requests
    assert json.loads(request.body)["contact_id"] == people["ann"].pk
    assert request.headers["X-Segmentor-Delivery"].startswith("journey-")
    assert WebhookNotice.objects.get().status == "sent"


# --- goal, exits, entry rules ----------------------------------------------------------------------
def test_reaching_the_goal_converts_the_contact_wherever_it_is(shop, people):
    journey = live(shop, [wait("s1", 3, "days", "s2"), send("s2")], goal_event="purchase")
    ann = people["ann"]
    enroll(journey=journey, contact_ids=[ann.pk], now=T0)
    walk(shop, T0)
    event(shop, ann, "purchase", T0 + DAY)
    e = enrollment(journey, ann)
    assert (e.status, e.exit_reason) == ("converted", "reached the goal: purchase")
    walk(shop, T0 + 4 * DAY)
    assert sent_by(journey, "s2") == {}


def test_the_goal_is_checked_before_a_step_runs_even_if_the_event_hook_has_not_yet(shop, people):
    journey = live(shop, [wait("s1", 1, "days", "s2"), send("s2")], goal_event="purchase")
    ann = people["ann"]
    enroll(journey=journey, contact_ids=[ann.pk], now=T0)
    walk(shop, T0)
    with time_machine.travel(T0 + HOUR, tick=False):
        events_ingest(tenant=shop, events=[{"event": "purchase", "contact_id": ann.pk}])  # no hook run
    walk(shop, T0 + DAY)
    assert enrollment(journey, ann).status == "converted"
    assert sent_by(journey, "s2") == {}


def test_leaving_the_exit_segment_or_withdrawing_consent_ends_the_enrollment(shop, people):
    ann, ben = people["ann"], people["ben"]
    segment = segment_create(tenant=shop, actor=ACTOR, name="Members", kind=Segment.Kind.STATIC)
    static_members_add(segment=segment, actor=ACTOR, contact_ids=[ann.pk, ben.pk])
    journey = live(shop, [wait("s1", 1, "days", "s2"), send("s2")], exit_segment_id=segment.pk,
                   exit_on_consent_withdrawn="email")  # fmt: skip
    enroll(journey=journey, contact_ids=[ann.pk, ben.pk], now=T0)
    walk(shop, T0)
    from segments.services import static_members_remove

    with time_machine.travel(T0 + HOUR, tick=False):
        static_members_remove(segment=segment, actor=ACTOR, contact_ids=[ann.pk])
    at = SegmentTransition.objects.filter(segment=segment, kind="exited").latest("id").occurred_at
    assert triggers.on_segment_changes(tenant=shop, segment_ids=[segment.pk], occurred_at=at)["exited"] == 1
    consent_change(contact=ben, channel="email", purpose="marketing", status="withdrawn", evidence=API, actor=ACTOR)
    assert triggers.on_contacts_changed(tenant=shop, contact_ids=[ben.pk]) == 1
    assert {(e.contact_id, e.status, e.exit_reason) for e in Enrollment.objects.filter(journey=journey)} == {
        (ann.pk, "exited", "left the exit segment"),
        (ben.pk, "exited", "withdrew email consent"),
    }


def test_entry_rules_once_cooldown_segment_and_daily_cap(shop, people):
    ann, ben, cleo = people["ann"], people["ben"], people["cleo"]
    once = live(shop, [send("s1")], name="Once")
    assert enroll(journey=once, contact_ids=[ann.pk], now=T0) == [ann.pk]
    walk(shop, T0)
    assert enroll(journey=once, contact_ids=[ann.pk], now=T0 + 30 * DAY) == []
    cooling = live(shop, [wait("s1", 1, "hours")], name="Cooldown", entry="cooldown", cooldown_days=7)
    assert enroll(journey=cooling, contact_ids=[ann.pk], now=T0) == [ann.pk]
    assert enroll(journey=cooling, contact_ids=[ann.pk], now=T0 + 10 * dt.timedelta(minutes=1)) == [], "in it now"
    walk(shop, T0 + HOUR)
    assert enroll(journey=cooling, contact_ids=[ann.pk], now=T0 + 6 * DAY) == []
    assert enroll(journey=cooling, contact_ids=[ann.pk], now=T0 + 8 * DAY) == [ann.pk]
    vip = segment_create(tenant=shop, actor=ACTOR, name="VIP", kind=Segment.Kind.STATIC)
    static_members_add(segment=vip, actor=ACTOR, contact_ids=[ben.pk])
    only = live(shop, [send("s1")], name="Only VIP", entry_segment_id=vip.pk)
    assert enroll(journey=only, contact_ids=[ann.pk, ben.pk], now=T0) == [ben.pk]
    capped = live(shop, [send("s1")], name="Capped", daily_cap=2)
    assert enroll(journey=capped, contact_ids=[ann.pk], now=T0) == [ann.pk]
    assert enroll(journey=capped, contact_ids=[ben.pk, cleo.pk], now=T0 + HOUR) == [ben.pk]
    assert enroll(journey=capped, contact_ids=[cleo.pk], now=T0 + DAY) == [cleo.pk], "a new day"


def test_paused_journeys_take_no_one_in_and_hold_their_contacts(shop, people):
    from journeys.services import journey_pause

    journey = live(shop, [send("s1")])
    enroll(journey=journey, contact_ids=[people["ann"].pk], now=T0)
    journey_pause(journey=journey, actor=ACTOR)
    assert enroll(journey=journey, contact_ids=[people["ben"].pk], now=T0) == []
    assert walk(shop, T0 + HOUR) == 0
    journey_start(journey=journey, actor=ACTOR)
    assert walk(shop, T0 + HOUR) == 1


# --- triggers --------------------------------------------------------------------------------------
def test_an_event_with_matching_properties_enters_once_per_event(shop, people):
    journey = live(shop, [wait("s1", 1, "days")], trigger_event="cart_abandoned", entry="cooldown",
                   cooldown_days=1, trigger_filters=[{"property": "value", "op": "gt", "value": 50}])  # fmt: skip
    ann, ben = people["ann"], people["ben"]
    event(shop, ann, "cart_abandoned", T0, value=20)
    assert not Enrollment.objects.filter(journey=journey).exists()
    event_id = event(shop, ben, "cart_abandoned", T0, value=80)
    assert enrollment(journey, ben).trigger_detail == f"event {event_id}"
    assert triggers.on_events(tenant=shop, event_ids=[event_id], now=T0)["entered"] == 0, "a redelivered task"


def test_entering_a_segment_and_changing_stage_start_journeys(shop, people):
    ann, ben = people["ann"], people["ben"]
    segment = segment_create(tenant=shop, actor=ACTOR, name="Newsletter", kind=Segment.Kind.STATIC)
    by_segment = live(shop, [wait("s1", 1, "days")], name="Seg", trigger="segment_entered",
                      trigger_segment_id=segment.pk)  # fmt: skip
    static_members_add(segment=segment, actor=ACTOR, contact_ids=[ann.pk])
    at = SegmentTransition.objects.filter(segment=segment).latest("id").occurred_at
    assert triggers.on_segment_changes(tenant=shop, segment_ids=[segment.pk], occurred_at=at)["entered"] == 1
    assert enrollment(by_segment, ann).trigger_detail == f"entered segment {segment.pk}"
    by_stage = live(
        shop, [wait("s1", 1, "days")], name="Stage", trigger="stage_changed", trigger_stage="first_time_buyer"
    )
    assert triggers.on_stage_changes(tenant=shop, changes=[(ann.pk, "lead"), (ben.pk, "first_time_buyer")]) == 1
    assert list(Enrollment.objects.filter(journey=by_stage).values_list("contact_id", flat=True)) == [ben.pk]


def test_a_birthday_enters_on_its_day_once(shop, people):
    ann, ben = people["ann"], people["ben"]
    Contact.objects.filter(pk=ann.pk).update(birth_date=dt.date(1990, 6, 1))
    Contact.objects.filter(pk=ben.pk).update(birth_date=dt.date(1990, 6, 2))
    attribute_define(tenant=shop, key="renewal", label="Renewal", type=AttributeDefinition.Type.DATE, actor=ACTOR)
    Contact.objects.filter(pk=ben.pk).update(attributes={"renewal": "2025-06-01"})
    birthday = live(shop, [send("s1")], name="Birthday", trigger="date_attribute", trigger_date_field="birth_date",
                    entry="cooldown", cooldown_days=1)  # fmt: skip
    renewal = live(shop, [send("s1")], name="Renewal", trigger="date_attribute",
                   trigger_date_field="attributes.renewal", entry="cooldown", cooldown_days=1)  # fmt: skip
    assert triggers.enter_anniversaries(tenant=shop, now=T0) == 2
    assert triggers.enter_anniversaries(tenant=shop, now=T0 + 2 * HOUR) == 0, "the hourly tick, again"
    assert [e.contact_id for e in Enrollment.objects.filter(journey=birthday)] == [ann.pk]
    assert [e.contact_id for e in Enrollment.objects.filter(journey=renewal)] == [ben.pk]


# --- exactly once, versions ------------------------------------------------------------------------
def test_a_doubled_or_failed_tick_never_takes_a_step_twice(shop, people):
    journey = live(shop, [send("s1", "s2"), wait("s2", 1, "days")])
    ids = [c.pk for c in people.values()]
    enroll(journey=journey, contact_ids=ids, now=T0)

    class Boom(Exception):
        pass

    with pytest.raises(Boom), transaction.atomic():
        advance_batch(tenant=shop, now=T0)
        raise Boom  # the worker died before commit: nothing happened
    assert not Delivery.objects.exists() and not EnrollmentStep.objects.exists()
    assert walk(shop, T0) == 3
    assert walk(shop, T0) == 0, "the second tick finds nothing due"
    assert Delivery.objects.count() == 3
    assert EnrollmentStep.objects.count() == 3


def test_contacts_in_flight_stay_on_their_version_unless_moved(shop, people):
    journey = live(shop, [wait("s1", 1, "days", "s2"), send("s2")])
    ann, ben = people["ann"], people["ben"]
    enroll(journey=journey, contact_ids=[ann.pk], now=T0)
    walk(shop, T0)
    old = journey.live_version
    step_update(journey=journey, actor=ACTOR, key="s1", data={"config": {"duration": {"amount": 2, "unit": "days"}}})
    journey = journey_start(journey=journey, actor=ACTOR)
    assert journey.live_version_id != old.pk
    enroll(journey=journey, contact_ids=[ben.pk], now=T0)
    assert enrollment(journey, ann).version_id == old.pk
    assert enrollment(journey, ben).version_id == journey.live_version_id
    step_update(journey=journey, actor=ACTOR, key="s2", data={"name": "Renamed"})
    journey = journey_start(journey=journey, actor=ACTOR, migrate=True)
    assert {e.version_id for e in Enrollment.objects.filter(journey=journey)} == {journey.live_version_id}
    assert enrollment(journey, ann).step.key == "s1"


# --- the blueprints end to end ---------------------------------------------------------------------
def test_abandoned_cart_email_after_an_hour_then_sms_to_those_with_sms_consent(shop, people):
    journey = journey_start(journey=journey_from_blueprint(tenant=shop, actor=ACTOR, blueprint="abandoned_cart"),
                            actor=ACTOR)  # fmt: skip
    ann, ben, cleo = people["ann"], people["ben"], people["cleo"]
    for contact in (ann, ben, cleo):
        event(shop, contact, "cart_abandoned", T0)
    walk(shop, T0)
    event(shop, cleo, "purchase", T0 + 30 * dt.timedelta(minutes=1))  # the goal: converted at once
    walk(shop, T0 + HOUR)
    assert set(sent_by(journey, "s2")) == {ann.pk, ben.pk}
    walk(shop, T0 + HOUR + DAY)
    assert set(sent_by(journey, "s5")) == {ann.pk}
    assert path(journey, ann) == [("s1", "timed_out"), ("s2", "next"), ("s3", "next"), ("s4", "yes"), ("s5", "next")]
    assert path(journey, ben)[-1] == ("s4", "no")
    statuses = dict(Enrollment.objects.filter(journey=journey).values_list("contact_id", "status"))
    assert statuses == {ann.pk: "completed", ben.pk: "completed", cleo.pk: "converted"}


def test_welcome_series_for_new_leads(shop, people):
    journey = journey_start(journey=journey_from_blueprint(tenant=shop, actor=ACTOR, blueprint="welcome"), actor=ACTOR)
    ann = people["ann"]
    assert triggers.on_stage_changes(tenant=shop, changes=[(ann.pk, "lead")]) == 1
    e = enrollment(journey, ann)
    for at in (e.entered_at, e.entered_at + 2 * DAY, e.entered_at + 7 * DAY):
        walk(shop, at)
    assert [k for k, _ in path(journey, ann)] == ["s1", "s2", "s3", "s4", "s5"]
    assert all(ann.pk in sent_by(journey, key) for key in ("s1", "s3", "s5"))


def test_post_purchase_thanks_review_then_cross_sell(shop, people):
    journey = live_blueprint(shop, "post_purchase")
    ben = people["ben"]
    event(shop, ben, "purchase", T0)
    walk(shop, T0)
    assert ben.pk in sent_by(journey, "s1") and ben.pk not in sent_by(journey, "s3")
    walk(shop, T0 + 7 * DAY)
    assert ben.pk in sent_by(journey, "s3")
    walk(shop, T0 + 10 * DAY)
    assert ben.pk in sent_by(journey, "s5")
    assert enrollment(journey, ben).status == "completed"


def live_blueprint(tenant, key: str) -> Journey:
    return journey_start(journey=journey_from_blueprint(tenant=tenant, actor=ACTOR, blueprint=key), actor=ACTOR)


def test_re_engagement_wins_back_or_sunsets(shop, people):
    journey = live_blueprint(shop, "re_engagement")
    ann, ben = people["ann"], people["ben"]
    segment = Segment.objects.get(name="No engagement for 60 days")
    enroll(journey=journey, contact_ids=[ann.pk, ben.pk], now=T0)  # as the segment's entry would
    walk(shop, T0)
    assert set(sent_by(journey, "s1")) == {ann.pk, ben.pk}
    event(shop, ann, "email_open", T0 + 3 * DAY)
    walk(shop, T0 + 14 * DAY)
    ann.refresh_from_db(), ben.refresh_from_db()
    assert "sunset" in ben.attributes.get("tags", []) and "tags" not in ann.attributes
    assert path(journey, ann)[-1] == ("s3", "yes")
    assert journey.trigger_segment_id == segment.pk


def test_lifecycle_nurture_sends_the_call_to_action_of_each_stage(shop, people):
    journey = live_blueprint(shop, "lifecycle_nurture")
    ann, ben = people["ann"], people["ben"]
    Contact.objects.filter(pk=ann.pk).update(lifecycle_stage="lead")
    Contact.objects.filter(pk=ben.pk).update(lifecycle_stage="repeat_customer")
    triggers.on_stage_changes(tenant=shop, changes=[(ann.pk, "lead"), (ben.pk, "repeat_customer")])
    walk(shop, enrollment(journey, ann).entered_at)
    assert set(sent_by(journey, "m2")) == {ann.pk}  # lead → start your free trial
    assert set(sent_by(journey, "m4")) == {ben.pk}  # repeat customer → loyalty
    assert path(journey, ben) == [("b1", "no"), ("b2", "no"), ("b3", "no"), ("b4", "yes"), ("m4", "next")]
