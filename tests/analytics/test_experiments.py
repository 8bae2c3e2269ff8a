"""A/B/n experiments end to end: the test share is sent, the rest waits, the winner goes out by itself.

Deliveries and message events are generated; the clock moves with time_machine; the winner's
messages go through ``send_run`` to a real SMTP server.
"""

# Fixtures shared between these modules are imported by name, which pytest needs and ruff flags.
# ruff: noqa: F811

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.db import connection

from analytics import experiments, stats
from analytics.experiments import (
    HOLD_UNTIL,
    ExperimentSettings,
    decide_due_experiments,
    decide_experiment,
    experiment_configure,
    experiment_decide,
    experiment_decide_due,
    experiment_delete,
)
from analytics.models import Conversion, Experiment, MessageEvent
from analytics.services import conversions_attribute
from campaigns import services
from campaigns.models import Campaign, CampaignRun, ChannelConfig, Delivery, Variant
from campaigns.selectors import campaign_list
from campaigns.sending import deliveries_claim, run_finish_if_done, run_start
from campaigns.tasks import send_run
from contacts.consent import ConsentEvidence, consents_grant_new
from contacts.models import Contact, Event
from segments.models import Segment
from segments.services import segment_create, static_members_add
from tenants.audit import Actor
from tenants.context import tenant_context
from tenants.models import AuditLog
from tests.campaigns.test_channels import SMS_PATH, Reply, provider  # noqa: F401
from tests.campaigns.test_sending_channels import campaign_for, shop  # noqa: F401

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("test")
T0 = dt.datetime(2026, 6, 1, 10, 0, tzinfo=dt.UTC)  # a Monday; 12:00 in Berlin
SALE = "https://shop.example/sale"


def people(tenant, count: int, prefix: str = "p", **fields: Any) -> list[Contact]:
    contacts = Contact.objects.bulk_create(
        [Contact(tenant=tenant, first_name=f"P{i}", email=f"{prefix}{i}@example.com", **fields) for i in range(count)]
    )
    consents_grant_new(
        tenant=tenant, contacts=contacts, channel="email", purpose="marketing",
        evidence=ConsentEvidence(source="api"), actor=ACTOR,
    )  # fmt: skip
    return contacts


def ab_campaign(tenant, contacts: list[Contact], *arms: str, **fields: Any) -> tuple[Campaign, list[Variant]]:
    """A campaign whose default target is split evenly between variants named (and worded) after ``arms``."""
    fields.setdefault("attribution_touch", "delivery")
    campaign = campaign_for(tenant, contacts, goal_event="purchase", **fields)
    variants = [
        Variant.objects.create(
            tenant=tenant,
            campaign=campaign,
            name=name,
            position=i,
            subject=name,
            sms_body=name,
            html_body='<p>Hi</p><a href="{{ cta.url }}">{{ cta.label }}</a>',
            cta_label="Shop",
            cta_url=SALE,
            webhook_payload=f'{{"arm": "{name}"}}',
        )
        for i, name in enumerate(arms)
    ]
    return campaign, variants


def configure(campaign: Campaign, control: Variant, **chosen: Any) -> Experiment:
    chosen.setdefault("duration_hours", 4)
    return experiment_configure(
        campaign=campaign, settings=ExperimentSettings(control_id=control.pk, **chosen), actor=ACTOR
    )


def sent_of(run: CampaignRun, variant: Variant) -> list[Delivery]:
    return list(Delivery.objects.filter(run=run, variant=variant, status="sent").order_by("id"))


def engage(deliveries: list[Delivery], count: int, kind: str = "click", machine: str = "") -> None:
    """``count`` of ``deliveries`` opened or clicked (by a person unless ``machine`` says why not)."""
    MessageEvent.objects.bulk_create(
        [
            MessageEvent(
                tenant_id=d.tenant_id,
                delivery_id=d.pk,
                campaign_id=d.run.campaign_id,
                variant_id=d.variant_id,
                contact_id=d.contact_id,
                kind=kind,
                url=SALE if kind == "click" else "",
                is_cta=kind == "click",
                machine=machine,
                occurred_at=T0 + dt.timedelta(hours=1),
            )
            for d in deliveries[:count]
        ]
    )


def convert(deliveries: list[Delivery], count: int) -> None:
    Conversion.objects.bulk_create(
        [
            Conversion(
                tenant_id=d.tenant_id,
                event_id=10_000 + d.pk,
                event_name="purchase",
                contact_id=d.contact_id,
                delivery_id=d.pk,
                campaign_id=d.run.campaign_id,
                variant_id=d.variant_id,
                touch="delivery",
                touched_at=T0,
                revenue=Decimal("20.00"),
                occurred_at=T0 + dt.timedelta(hours=2),
            )
            for d in deliveries[:count]
        ]
    )


def held(run: CampaignRun) -> Any:
    return Delivery.objects.filter(run=run, status="pending", variant__isnull=True, not_before=HOLD_UNTIL)


@pytest.fixture
def run_tasks_here(monkeypatch):
    """Tasks queued after commit run at once in this process (send_run, the decision)."""
    monkeypatch.setattr(send_run, "delay", lambda *args: send_run(*args))
    monkeypatch.setattr(decide_experiment, "delay", lambda *args: decide_experiment(*args))


# --- the whole story -------------------------------------------------------------------------------------
def test_the_test_share_is_sent_the_rest_waits_and_the_winner_goes_to_it(
    shop, smtp, run_tasks_here, django_capture_on_commit_callbacks
):
    contacts = people(shop, 300)
    campaign, (a, b) = ab_campaign(shop, contacts, "Spring sale", "Last chance: spring sale")
    experiment = configure(campaign, a, tested="subject", test_share=20, metric="click")
    assert experiment.status == "draft"

    with time_machine.travel(T0, tick=False):
        run = services.campaign_send_now(campaign=campaign, actor=ACTOR)
        send_run(shop.pk, run.pk)
    experiment.refresh_from_db()
    waiting = held(run).count()
    test_a, test_b = sent_of(run, a), sent_of(run, b)
    assert experiment.status == "testing" and experiment.run_id == run.pk and experiment.arms == [a.pk, b.pk]
    assert experiment.held_count == waiting == 300 - len(test_a) - len(test_b)
    assert 40 <= len(test_a) + len(test_b) <= 80, "about 20 % of 300"
    assert 15 <= len(test_a) <= 45 and 15 <= len(test_b) <= 45, "each arm sampled at the same share"
    assert experiment.decide_at == T0 + dt.timedelta(hours=4)
    assert len(smtp.inbox.wait_for(len(test_a) + len(test_b))) == len(test_a) + len(test_b)

    # Until the decision the held share is neither sent, nor skipped for "no variant", nor done.
    with time_machine.travel(T0 + dt.timedelta(hours=3), tick=False):
        assert send_run(shop.pk, run.pk) == {"sent": 0, "skipped": 0, "failed": 0, "retried": 0, "deferred": 0}
        assert deliveries_claim(run=CampaignRun.objects.get(pk=run.pk)) == []
        assert not run_finish_if_done(run=run)
        assert decide_due_experiments() == 0, "not due yet"
    assert held(run).count() == waiting and len(smtp.inbox.messages) == len(test_a) + len(test_b)
    assert not Delivery.objects.filter(run=run, status="skipped").exists()

    # People clicked B far more; a scanner "clicked" every A message, which must not count.
    engage(test_a, 2)
    engage(test_b, 20)
    engage(test_a, len(test_a), machine="security scanner")
    engage(test_b, 25, kind="open")

    with (
        time_machine.travel(T0 + dt.timedelta(hours=4, minutes=1), tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert decide_due_experiments() == 1
    experiment.refresh_from_db()
    assert (experiment.status, experiment.winner_id, experiment.significant) == ("sent", b.pk, True)
    expected = stats.two_proportion_z_test(2, len(test_a), 20, len(test_b))
    assert experiment.p_value == pytest.approx(expected.p_value) and experiment.p_value < 0.05
    assert [(r["name"], r["sent"], r["successes"]) for r in experiment.results] == [
        ("Spring sale", len(test_a), 2), ("Last chance: spring sale", len(test_b), 20),
    ]  # fmt: skip
    interval = stats.wilson_interval(20, len(test_b), 0.95)
    assert experiment.results[1]["ci_low"] == pytest.approx(interval.low)
    assert experiment.results[1]["rate"] == pytest.approx(20 / len(test_b))
    assert experiment.reason.startswith("“Last chance: spring sale” had the best click rate")
    assert experiment.decided_at == T0 + dt.timedelta(hours=4, minutes=1) and experiment.decided_by is None
    assert experiment.released_count == waiting

    # The rest got the winner, through send_run, to the SMTP server; the run and campaign are done.
    messages = smtp.inbox.wait_for(300)
    assert len(messages) == 300
    released = Delivery.objects.filter(run=run, sent_at__gte=T0 + dt.timedelta(hours=4))
    assert released.count() == waiting and set(released.values_list("variant_id", flat=True)) == {b.pk}
    subjects = [m["Subject"] for m in messages]
    assert subjects.count("Last chance: spring sale") == len(test_b) + waiting
    assert CampaignRun.objects.get(pk=run.pk).status == "done"
    assert Campaign.objects.get(pk=campaign.pk).status == "sent"
    assert AuditLog.objects.filter(tenant=shop, action="experiment.decided").count() == 1

    # A doubled tick, a redelivered task: nothing more happens.
    with (
        time_machine.travel(T0 + dt.timedelta(hours=4, minutes=5), tick=False),
        django_capture_on_commit_callbacks(execute=True) as callbacks,
    ):
        assert decide_due_experiments() == 0
        assert decide_experiment(shop.pk, experiment.pk) is False
        assert experiment_decide_due(experiment_id=experiment.pk) is None
    assert callbacks == []
    assert AuditLog.objects.filter(tenant=shop, action="experiment.decided").count() == 1
    assert len(smtp.inbox.messages) == 300


def test_the_decision_is_queued_at_the_start_and_comes_back_until_due(
    shop, monkeypatch, django_capture_on_commit_callbacks
):
    queued: list[tuple[tuple[int, int], float]] = []
    monkeypatch.setattr(decide_experiment, "apply_async", lambda args, countdown: queued.append((args, countdown)))
    contacts = people(shop, 40)
    campaign, (a, _b) = ab_campaign(shop, contacts, "A", "B")
    experiment = configure(campaign, a, duration_hours=2)
    with time_machine.travel(T0, tick=False), django_capture_on_commit_callbacks(execute=True):
        run_start(campaign=campaign)
    # Never beyond the broker's visibility timeout: it comes back and waits again.
    assert queued == [((shop.pk, experiment.pk), experiments.MAX_COUNTDOWN_SECONDS)]
    with time_machine.travel(T0 + dt.timedelta(hours=1, minutes=50), tick=False):
        assert decide_experiment(shop.pk, experiment.pk) is False
    assert queued[-1] == ((shop.pk, experiment.pk), 600)
    with time_machine.travel(T0 + dt.timedelta(hours=2), tick=False):
        assert decide_experiment(shop.pk, experiment.pk) is True
    experiment.refresh_from_db()
    assert experiment.status == "sent" and len(queued) == 2
    assert not experiment.significant and experiment.winner_id == a.pk, "nothing was sent: the control"


def test_not_significant_falls_back_to_the_control(shop, smtp, run_tasks_here, django_capture_on_commit_callbacks):
    contacts = people(shop, 200)
    campaign, (a, b) = ab_campaign(shop, contacts, "Control", "Challenger")
    experiment = configure(campaign, a, test_share=30, metric="open", fallback="control")
    with time_machine.travel(T0, tick=False):
        run = services.campaign_send_now(campaign=campaign, actor=ACTOR)
        send_run(shop.pk, run.pk)
    test_a, test_b = sent_of(run, a), sent_of(run, b)
    engage(test_a, 10, kind="open")
    engage(test_b, 11, kind="open")
    engage(test_b, len(test_b), kind="open", machine="apple privacy proxy")
    waiting = held(run).count()
    with time_machine.travel(T0 + dt.timedelta(hours=5), tick=False), django_capture_on_commit_callbacks(execute=True):
        decide_due_experiments()
    experiment.refresh_from_db()
    p_value = stats.two_proportion_z_test(10, len(test_a), 11, len(test_b)).p_value
    assert (experiment.status, experiment.significant, experiment.winner_id) == ("sent", False, a.pk)
    assert experiment.p_value == pytest.approx(p_value) and p_value > 0.05
    assert experiment.reason.startswith("No variant's open rate is better than the others' at the 95 % level")
    assert experiment.reason.endswith("as configured, the rest gets the control, “Control”.")
    assert set(Delivery.objects.filter(run=run, sent_at__gte=T0 + dt.timedelta(hours=5)).values_list(
        "variant_id", flat=True
    )) == {a.pk}  # fmt: skip
    assert len(smtp.inbox.wait_for(200)) == 200 and waiting > 0


def test_fallback_none_skips_the_rest_and_the_run_finishes(shop, run_tasks_here, django_capture_on_commit_callbacks):
    contacts = people(shop, 60)
    campaign, (a, _b) = ab_campaign(shop, contacts, "A", "B", channel="webhook", webhook_url="https://hooks.example/in")
    experiment = configure(
        campaign, a, tested="content", metric="conversion", fallback="none", method="bayesian", test_share=50
    )
    with time_machine.travel(T0, tick=False):
        run = run_start(campaign=campaign)
    # Nothing was sent by the time the test ends: the test cannot decide, and "do not send" applies.
    waiting = held(run).count()
    with time_machine.travel(T0 + dt.timedelta(hours=4), tick=False), django_capture_on_commit_callbacks(execute=True):
        decided = experiment_decide_due(experiment_id=experiment.pk)
    assert decided is not None and decided.status == "decided" and decided.winner_id is None
    assert decided.reason.endswith("as configured, the rest of the audience is not sent.")
    assert Delivery.objects.filter(run=run, status="skipped", skip_reason="no_variant").count() == waiting > 0
    assert decided.released_count == 0


def test_bayesian_conversions_pick_a_winner_among_three(shop, smtp, run_tasks_here, django_capture_on_commit_callbacks):
    contacts = people(shop, 300)
    campaign, arms = ab_campaign(shop, contacts, "A", "B", "C", attribution_touch="delivery")
    experiment = configure(
        campaign, arms[0], metric="conversion", method="bayesian", significance_level=Decimal("0.9"), test_share=60
    )
    with time_machine.travel(T0, tick=False):
        run = services.campaign_send_now(campaign=campaign, actor=ACTOR)
        send_run(shop.pk, run.pk)
    tests = [sent_of(run, v) for v in arms]
    convert(tests[0], 3)
    convert(tests[1], 30)
    convert(tests[2], 4)
    with time_machine.travel(T0 + dt.timedelta(hours=4), tick=False), django_capture_on_commit_callbacks(execute=True):
        decide_due_experiments()
    experiment.refresh_from_db()
    expected = stats.probabilities_to_be_best([(3, len(tests[0])), (30, len(tests[1])), (4, len(tests[2]))],
                                              seed=experiment.pk)  # fmt: skip
    assert experiment.winner_id == arms[1].pk and experiment.significant
    assert experiment.probability == pytest.approx(expected[1]) and expected[1] > 0.99
    assert [r["probability_best"] for r in experiment.results] == pytest.approx(expected)
    assert "probability of the best conversion rate" in experiment.reason
    assert len(smtp.inbox.wait_for(300)) == 300


def test_a_person_decides_early_once(shop, world, run_tasks_here, django_capture_on_commit_callbacks):
    contacts = people(shop, 50)
    campaign, (a, _b) = ab_campaign(shop, contacts, "A", "B", channel="webhook", webhook_url="https://hooks.example/in")
    experiment = configure(campaign, a, tested="content", metric="conversion", duration_hours=48)
    with pytest.raises(ValidationError) as error:
        experiment_decide(experiment=experiment, actor=Actor.for_user(world.alice))
    assert "Only a test under way" in str(error.value.message_dict["status"])
    with time_machine.travel(T0, tick=False):
        run_start(campaign=campaign)
    with time_machine.travel(T0 + dt.timedelta(hours=1), tick=False):
        assert experiment_decide_due(experiment_id=experiment.pk) is None, "not due for 47 hours"
        with django_capture_on_commit_callbacks(execute=True):
            decided = experiment_decide(experiment=experiment, actor=Actor.for_user(world.alice))
    assert decided.decided_by == world.alice and decided.decided_at == T0 + dt.timedelta(hours=1)
    log = AuditLog.objects.get(tenant=shop, action="experiment.decided")
    assert log.actor_user == world.alice and log.data["winner"] == a.pk
    with pytest.raises(ValidationError):
        experiment_decide(experiment=experiment, actor=Actor.for_user(world.alice))


@pytest.mark.django_db(transaction=True)
def test_two_ticks_at_the_same_moment_make_one_decision(shop, monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL")
    enqueued: list[tuple[int, int]] = []
    monkeypatch.setattr(experiments, "_send_run", lambda tenant_id, run_id: enqueued.append((tenant_id, run_id)))
    monkeypatch.setattr(decide_experiment, "apply_async", lambda *args, **kwargs: None)
    contacts = people(shop, 40)
    campaign, (a, _b) = ab_campaign(shop, contacts, "A", "B", channel="webhook", webhook_url="https://hooks.example/in")
    experiment = configure(campaign, a, tested="content", metric="conversion", duration_hours=1)
    with time_machine.travel(T0, tick=False):
        run = run_start(campaign=campaign)
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def tick() -> None:
        try:
            with tenant_context(shop.pk):
                barrier.wait()
                outcomes.append(experiment_decide_due(experiment_id=experiment.pk, now=T0 + dt.timedelta(hours=2)))
        finally:
            connection.close()

    threads = [threading.Thread(target=tick) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcome is None for outcome in outcomes) == [False, True]
    assert enqueued == [(shop.pk, run.pk)]
    assert AuditLog.objects.filter(tenant=shop, action="experiment.decided").count() == 1
    assert Delivery.objects.filter(run=run, variant=a, not_before=T0 + dt.timedelta(hours=2)).count() > 0


# --- holding ------------------------------------------------------------------------------------------------
def test_only_the_arms_are_held_and_the_sample_is_stable(shop):
    contacts = people(shop, 400)
    campaign, (a, b) = ab_campaign(shop, contacts, "A", "B")
    vip = contacts[:50]
    segment = segment_create(tenant=shop, actor=ACTOR, name="VIP", kind=Segment.Kind.STATIC)
    static_members_add(segment=segment, actor=ACTOR, contact_ids=[c.pk for c in vip])
    solo = Variant.objects.create(
        tenant=shop, campaign=campaign, name="VIP", position=0, target="segment", target_segment=segment,
        subject="For you", html_body="<p>VIP</p>",
    )  # fmt: skip
    experiment = configure(campaign, b, test_share=25)
    assert experiment.control_id == b.pk
    with time_machine.travel(T0, tick=False):
        run = run_start(campaign=campaign)
    experiment.refresh_from_db()
    assert experiment.arms == [b.pk, a.pk], "the control first"
    assert Delivery.objects.filter(run=run, variant=solo).count() == 50, "the VIP variant is not under test"
    tested = Delivery.objects.filter(run=run, variant__in=[a, b]).count()
    assert tested + held(run).count() == 350
    assert 350 * 0.25 - 25 <= tested <= 350 * 0.25 + 25
    # The sample is the same contacts whatever the run: a function of contact and experiment only.
    bucket = experiments.sample_bucket(experiment.pk)
    in_test = set(
        Delivery.objects.filter(run=run, variant__in=[a, b]).values_list("contact_id", flat=True)
    )  # fmt: skip
    computed = {
        row["contact_id"]
        for row in Delivery.objects.filter(run=run).exclude(variant=solo).annotate(b=bucket).values("contact_id", "b")
        if row["b"] < 2500
    }
    assert computed == in_test
    salt = experiments.SAMPLE_SALT * experiment.pk % experiments.SAMPLE_PRIME
    by_hand = {c for c in in_test if (c * experiments.SAMPLE_MULTIPLIER + salt) % experiments.SAMPLE_PRIME % 10_000}
    assert all((c * experiments.SAMPLE_MULTIPLIER + salt) % experiments.SAMPLE_PRIME % 10_000 < 2500 for c in by_hand)


def test_a_campaign_without_a_test_is_left_alone(shop):
    contacts = people(shop, 30)
    campaign, (_a, _b) = ab_campaign(shop, contacts, "A", "B")
    with time_machine.travel(T0, tick=False):
        run = run_start(campaign=campaign)
    assert Delivery.objects.filter(run=run, variant__isnull=False).count() == 30
    assert not held(run).exists()


def test_send_time_arms_wait_for_their_hour_and_the_winner_hour_goes_to_the_rest(
    shop, run_tasks_here, django_capture_on_commit_callbacks
):
    contacts = people(shop, 80)
    campaign, (a, b) = ab_campaign(shop, contacts, "Morning", "Evening")
    Variant.objects.filter(pk=b.pk).update(subject="Morning")  # the same message, at another time
    experiment = configure(
        campaign, a, tested="send_time", arm_send_hours={a.pk: 9, b.pk: 19}, duration_hours=30, test_share=50
    )
    with time_machine.travel(T0, tick=False):  # 12:00 in Berlin
        run = run_start(campaign=campaign)
    nine = dt.datetime(2026, 6, 2, 7, 0, tzinfo=dt.UTC)  # Tuesday 09:00 in Berlin
    nineteen = dt.datetime(2026, 6, 1, 17, 0, tzinfo=dt.UTC)  # Monday 19:00 in Berlin
    assert set(Delivery.objects.filter(run=run, variant=a).values_list("not_before", flat=True)) == {nine}
    assert set(Delivery.objects.filter(run=run, variant=b).values_list("not_before", flat=True)) == {nineteen}
    Delivery.objects.filter(run=run, variant__isnull=False).update(status="sent", sent_at=nine)
    engage(sent_of(run, b), 15)
    with (
        time_machine.travel(T0 + dt.timedelta(hours=30), tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):  # Tuesday 18:00 in Berlin
        experiment_decide_due(experiment_id=experiment.pk)
    experiment.refresh_from_db()
    assert experiment.winner_id == b.pk and experiment.significant
    later = dt.datetime(2026, 6, 2, 17, 0, tzinfo=dt.UTC)  # Tuesday 19:00 in Berlin: the winning hour
    assert set(Delivery.objects.filter(run=run, status="pending").values_list("variant_id", "not_before")) == {
        (b.pk, later)
    }


def test_a_local_time_campaign_releases_the_rest_at_each_recipients_local_time(
    shop, run_tasks_here, django_capture_on_commit_callbacks
):
    berlin = people(shop, 30, "b", time_zone="Europe/Berlin")
    york = people(shop, 30, "y", time_zone="America/New_York")
    campaign, (a, _b) = ab_campaign(
        shop, berlin + york, "A", "B", channel="webhook", webhook_url="https://hooks.example/in",
        schedule=Campaign.Schedule.LOCAL_TIME, local_time=dt.time(9, 0),
    )  # fmt: skip
    experiment = configure(campaign, a, tested="content", metric="conversion", test_share=40, duration_hours=24)
    with time_machine.travel(T0, tick=False):
        run = run_start(campaign=campaign)
    assert held(run).count() > 0
    with (
        time_machine.travel(T0 + dt.timedelta(days=1), tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):  # Tuesday 10:00 UTC
        experiment_decide_due(experiment_id=experiment.pk)
    released = Delivery.objects.filter(run=run, status="pending", variant=a, contact__in=berlin)
    assert set(released.values_list("not_before", flat=True)) == {dt.datetime(2026, 6, 3, 7, 0, tzinfo=dt.UTC)}
    in_york = Delivery.objects.filter(run=run, status="pending", variant=a, contact__in=york)
    # 09:00 in New York, the same Tuesday.
    assert set(in_york.values_list("not_before", flat=True)) == {dt.datetime(2026, 6, 2, 13, 0, tzinfo=dt.UTC)}
    assert not held(run).exists()


def test_a_later_run_of_a_recurring_campaign_sends_the_winner_to_all(
    shop, run_tasks_here, django_capture_on_commit_callbacks
):
    contacts = people(shop, 40)
    campaign, (a, _b) = ab_campaign(shop, contacts, "A", "B", schedule=Campaign.Schedule.RECURRING, crontab="0 9 * * 1")
    experiment = configure(campaign, a)
    with time_machine.travel(T0, tick=False):
        first = run_start(campaign=campaign, scheduled_for=T0)
    with time_machine.travel(T0 + dt.timedelta(hours=4), tick=False), django_capture_on_commit_callbacks(execute=True):
        experiment_decide(experiment=experiment, actor=ACTOR)
    week = T0 + dt.timedelta(days=7)
    with time_machine.travel(week, tick=False):
        second = run_start(campaign=campaign, scheduled_for=week)
    assert first.pk != second.pk
    assert set(Delivery.objects.filter(run=second).values_list("variant_id", flat=True)) == {a.pk}
    assert not held(second).exists()


# --- configuring -------------------------------------------------------------------------------------------
def errors_of(campaign: Campaign, **chosen: Any) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as error:
        experiment_configure(campaign=campaign, settings=ExperimentSettings(**chosen), actor=ACTOR)
    return error.value.message_dict


def test_configuring_checks_what_a_person_chose(shop):
    contacts = people(shop, 3)
    campaign, (a, b) = ab_campaign(shop, contacts, "Same", "Same")
    assert errors_of(campaign, control_id=None)["control"] == ["Choose the control: one of this campaign's variants."]
    assert "have the same subject" in errors_of(campaign, control_id=a.pk)["tested"][0]
    bad = errors_of(
        campaign, control_id=a.pk, tested="cta", test_share=0, duration_hours=0,
        significance_level=Decimal("0.5"), metric="nope", method="x", fallback="y",
    )  # fmt: skip
    assert set(bad) == {"test_share", "duration_hours", "significance_level", "metric", "method", "fallback", "tested"}
    Variant.objects.filter(pk=b.pk).delete()
    assert (
        "has no other variant with the same target" in errors_of(campaign, control_id=a.pk, tested="cta")["control"][0]
    )

    sms, (x, _y) = ab_campaign(shop, contacts, "X", "Y", channel="sms", attribution_touch="click")
    assert "tracked for email only" in errors_of(sms, control_id=x.pk, tested="content", metric="open")["metric"][0]
    assert (
        "only email clicks are tracked"
        in errors_of(sms, control_id=x.pk, tested="content", metric="conversion")["metric"][0].lower()
    )
    assert "SMS messages have no subject" in errors_of(sms, control_id=x.pk, metric="conversion")["tested"][0]

    other, (m, n) = ab_campaign(shop, contacts, "M", "N")
    hours = errors_of(other, control_id=m.pk, tested="send_time", arm_send_hours={m.pk: 9}, duration_hours=12)
    assert (
        "an hour from 0 to 23: “N”" in hours["arm_send_hours"][0] and "at least 24 hours" in hours["duration_hours"][0]
    )
    same = errors_of(other, control_id=m.pk, tested="send_time", arm_send_hours={m.pk: 9, n.pk: 9}, duration_hours=24)
    assert same["arm_send_hours"] == ["Give each variant its own hour."]
    # Another campaign's variant is no control of this one.
    assert errors_of(other, control_id=x.pk)["control"] == ["Choose the control: one of this campaign's variants."]


def test_a_started_test_cannot_change_or_be_deleted_and_a_draft_can(shop):
    contacts = people(shop, 20)
    campaign, (a, b) = ab_campaign(shop, contacts, "A", "B")
    experiment = configure(campaign, a, test_share=10)
    changed = configure(campaign, b, test_share=30, method="bayesian")
    assert changed.pk == experiment.pk and (changed.control_id, changed.test_share) == (b.pk, 30)
    assert list(AuditLog.objects.filter(tenant=shop, action__startswith="experiment.").values_list(
        "action", flat=True
    ).order_by("id")) == ["experiment.created", "experiment.changed"]  # fmt: skip
    experiment_delete(experiment=changed, actor=ACTOR)
    assert not Experiment.objects.filter(campaign=campaign).exists()
    experiment = configure(campaign, a)
    with time_machine.travel(T0, tick=False):
        run_start(campaign=campaign)
    assert "has started sending" in errors_of(campaign, control_id=a.pk, tested="cta")["status"][0]
    Campaign.objects.filter(pk=campaign.pk).update(status="paused")
    assert "has started" in errors_of(campaign, control_id=a.pk, tested="cta")["status"][0]
    with pytest.raises(ValidationError):
        experiment_delete(experiment=experiment, actor=ACTOR)


def test_a_cancelled_run_leaves_nothing_to_release(shop, django_capture_on_commit_callbacks):
    contacts = people(shop, 40)
    campaign, (a, _b) = ab_campaign(shop, contacts, "A", "B")
    experiment = configure(campaign, a)
    with time_machine.travel(T0, tick=False):
        run = services.campaign_send_now(campaign=campaign, actor=ACTOR)
        assert held(run).exists()
        services.campaign_cancel(campaign=campaign, actor=ACTOR)
    assert Delivery.objects.filter(run=run, status="skipped", skip_reason="cancelled").count() == 40
    with (
        time_machine.travel(T0 + dt.timedelta(hours=4), tick=False),
        django_capture_on_commit_callbacks(execute=True) as callbacks,
    ):
        decided = experiment_decide_due(experiment_id=experiment.pk)
    assert decided is not None and (decided.status, decided.released_count) == ("decided", 0)
    assert decided.winner_id == a.pk and callbacks == [], "nothing to send"


def test_a_best_time_campaign_releases_the_rest_at_each_recipients_best_hour(
    shop, run_tasks_here, django_capture_on_commit_callbacks
):
    contacts = people(shop, 40)
    campaign, (a, _b) = ab_campaign(
        shop, contacts, "A", "B", channel="webhook", webhook_url="https://hooks.example/in", best_time=True
    )
    experiment = configure(campaign, a, tested="content", metric="conversion", test_share=40, duration_hours=4)
    with time_machine.travel(T0, tick=False):
        run = run_start(campaign=campaign)
    assert held(run).count() > 0
    with (
        time_machine.travel(T0 + dt.timedelta(hours=4), tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        experiment_decide_due(experiment_id=experiment.pk)
    released = Delivery.objects.filter(run=run, status="pending", variant=a, not_before__gt=T0 + dt.timedelta(hours=4))
    # No engagement anywhere yet: everyone's best hour is the default, Tuesday 10:00 on the shop's
    # Berlin clock — 08:00 UTC the next morning, within the 24 hours after the decision.
    assert released.count() >= 20
    assert set(released.values_list("not_before", flat=True)) == {dt.datetime(2026, 6, 2, 8, 0, tzinfo=dt.UTC)}
    assert not held(run).exists()


# --- channel tests -----------------------------------------------------------------------------------------
def reachable(tenant, count: int) -> list[Contact]:
    """``count`` contacts with an email address and a mobile number, who agreed to both channels."""
    contacts = Contact.objects.bulk_create(
        [
            Contact(tenant=tenant, first_name=f"R{i}", email=f"r{i}@example.com", phone=f"+49151{i:07d}")
            for i in range(count)
        ]
    )
    for channel in ("email", "sms"):
        consents_grant_new(
            tenant=tenant, contacts=contacts, channel=channel, purpose="marketing",
            evidence=ConsentEvidence(source="api"), actor=ACTOR,
        )  # fmt: skip
    return contacts


def sms_provider(tenant, provider) -> None:
    provider.reply(SMS_PATH, Reply.json(201, {"sid": "SM1", "status": "queued"}))
    ChannelConfig.objects.create(
        tenant=tenant, channel="sms", backend="twilio", secret="t",
        settings={"base_url": f"{provider.url}/2010-04-01", "account_sid": "AC123", "sender": "+15550001111"},
    )  # fmt: skip


def sms_sent(provider) -> list[dict[str, list[str]]]:
    return [parse_qs(r.body.decode()) for r in provider.requests if r.path == SMS_PATH]


def purchases(deliveries: list[Delivery], at: dt.datetime) -> list[int]:
    events = Event.objects.bulk_create(
        [Event(tenant_id=d.tenant_id, contact_id=d.contact_id, name="purchase", occurred_at=at) for d in deliveries]
    )
    return [e.pk for e in events]


def test_a_channel_test_sends_each_arm_by_its_channel_and_the_winning_channel_gets_the_rest(
    shop, smtp, provider, run_tasks_here, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(decide_experiment, "apply_async", lambda *args, **kwargs: None)
    sms_provider(shop, provider)
    contacts = reachable(shop, 200)
    campaign, (a, b) = ab_campaign(shop, contacts, "By email", "By SMS")
    experiment = configure(
        campaign, a, tested="channel", arm_channels={b.pk: "sms"}, metric="conversion", test_share=40
    )
    assert experiment.arm_channels == {str(a.pk): "email", str(b.pk): "sms"}, "an arm left out: the campaign's"

    with time_machine.travel(T0, tick=False), django_capture_on_commit_callbacks(execute=True):
        run = services.campaign_send_now(campaign=campaign, actor=ACTOR)
    experiment.refresh_from_db()
    entry = experiment.arm_siblings[str(b.pk)]
    assert set(experiment.arm_siblings) == {str(b.pk)}, "the email arm goes with the campaign's own run"
    sibling = Campaign.objects.get(pk=entry["campaign"])
    copy = Variant.objects.get(pk=entry["variant"])
    assert (sibling.kind, sibling.channel, sibling.goal_event, sibling.attribution_touch) == (
        "journey", "sms", "purchase", "delivery"
    )  # fmt: skip
    assert (copy.campaign_id, copy.name, copy.sms_body) == (sibling.pk, "By SMS", "By SMS")
    test_run = CampaignRun.objects.get(pk=entry["run"])
    assert test_run.campaign_id == sibling.pk and test_run.status == "done"

    # The test share went out on both channels: the email arm by SMTP, the SMS arm to the SMS provider.
    test_a, test_b = sent_of(run, a), sent_of(test_run, copy)
    waiting = held(run).count()
    assert not Delivery.objects.filter(run=run, variant=b).exists(), "the SMS arm left the email run"
    assert Delivery.objects.filter(run=test_run).count() == len(test_b) == test_run.audience_size
    assert len(test_a) + len(test_b) + waiting == 200 and experiment.held_count == waiting
    assert 15 <= len(test_a) <= 65 and 15 <= len(test_b) <= 65, "about 40 % of 100 each"
    assert len(smtp.inbox.wait_for(len(test_a))) == len(test_a)
    assert {m["Subject"] for m in smtp.inbox.messages} == {"By email"}
    texts = sms_sent(provider)
    assert len(texts) == len(test_b) and all(t["Body"][0].startswith("By SMS") for t in texts)
    assert sorted(t["To"][0] for t in texts) == sorted(
        Contact.objects.filter(pk__in=[d.contact_id for d in test_b]).values_list("phone", flat=True)
    )
    assert CampaignRun.objects.get(pk=run.pk).status == "sending", "the held share waits in the campaign's run"

    # Purchases are credited (last touch: the delivery) to the message that reached each person: the
    # sibling's for the SMS arm. The SMS arm converts far better.
    credited = conversions_attribute(tenant=shop, event_ids=purchases(test_b[:30], T0 + dt.timedelta(hours=1)))
    credited += conversions_attribute(tenant=shop, event_ids=purchases(test_a[:3], T0 + dt.timedelta(hours=1)))
    assert credited == 33
    assert Conversion.objects.filter(campaign_id=sibling.pk, variant_id=copy.pk).count() == 30
    assert Conversion.objects.filter(campaign_id=campaign.pk, variant_id=a.pk).count() == 3
    so_far = experiments.experiment_interim(experiment)
    assert so_far is not None and [(r.name, r.sent, r.successes) for r in so_far.arms] == [
        ("By email", len(test_a), 3), ("By SMS", len(test_b), 30),
    ]  # fmt: skip

    with (
        time_machine.travel(T0 + dt.timedelta(hours=4, minutes=1), tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        assert decide_due_experiments() == 1
    experiment.refresh_from_db()
    assert (experiment.status, experiment.winner_id, experiment.significant) == ("sent", b.pk, True)
    assert experiment.p_value == pytest.approx(stats.two_proportion_z_test(3, len(test_a), 30, len(test_b)).p_value)
    assert [(r["name"], r["sent"], r["successes"]) for r in experiment.results] == [
        ("By email", len(test_a), 3), ("By SMS", len(test_b), 30),
    ]  # fmt: skip
    assert experiment.released_count == waiting

    # The rest went by SMS, in a new run of the sibling; no email more; everything is done.
    rest = CampaignRun.objects.get(campaign=sibling, number=2)
    assert rest.status == "done" and rest.audience_size == waiting
    assert Delivery.objects.filter(run=rest, status="sent", variant=copy).count() == waiting
    assert len(sms_sent(provider)) == len(test_b) + waiting
    assert len(smtp.inbox.messages) == len(test_a)
    assert not Delivery.objects.filter(run=run, status="pending").exists()
    assert CampaignRun.objects.get(pk=run.pk).status == "done"
    assert Campaign.objects.get(pk=campaign.pk).status == "sent"
    every = Delivery.objects.filter(run__in=[run, test_run, rest])
    assert every.count() == every.values("contact_id").distinct().count() == 200, "each contact once"
    # The hidden campaign is no campaign of the pages or the API.
    assert sibling.pk not in [c.pk for c in campaign_list(tenant=shop)]


def test_an_email_winner_of_a_channel_test_is_released_in_the_campaigns_run(
    shop, provider, monkeypatch, django_capture_on_commit_callbacks
):
    enqueued: list[tuple[int, int]] = []
    monkeypatch.setattr(experiments, "_send_run", lambda tenant_id, run_id: enqueued.append((tenant_id, run_id)))
    monkeypatch.setattr(decide_experiment, "apply_async", lambda *args, **kwargs: None)
    sms_provider(shop, provider)
    contacts = reachable(shop, 60)
    campaign, (a, b) = ab_campaign(shop, contacts, "Mail", "Text")
    experiment = configure(
        campaign, a, tested="channel", arm_channels={a.pk: "email", b.pk: "sms"}, metric="conversion", test_share=50
    )
    with time_machine.travel(T0, tick=False), django_capture_on_commit_callbacks(execute=True):
        run = run_start(campaign=campaign)
    experiment.refresh_from_db()
    test_run_id = experiment.arm_siblings[str(b.pk)]["run"]
    assert enqueued == [(shop.pk, test_run_id)], "the sibling's run is sent (the campaign's by its own caller)"
    Delivery.objects.filter(run=run, variant=a).update(status="sent", sent_at=T0)
    Delivery.objects.filter(run_id=test_run_id).update(status="sent", sent_at=T0)
    convert(sent_of(run, a), 12)
    waiting = held(run).count()
    with (
        time_machine.travel(T0 + dt.timedelta(hours=4), tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        experiment_decide_due(experiment_id=experiment.pk)
    experiment.refresh_from_db()
    assert experiment.winner_id == a.pk and experiment.released_count == waiting > 0
    assert Delivery.objects.filter(run=run, status="pending", variant=a).count() == waiting
    assert CampaignRun.objects.filter(campaign_id=experiment.arm_siblings[str(b.pk)]["campaign"]).count() == 1
    assert enqueued[-1] == (shop.pk, run.pk)


def test_a_later_run_of_a_recurring_channel_test_sends_the_winner_by_its_channel(
    shop, provider, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(experiments, "_send_run", lambda tenant_id, run_id: None)
    monkeypatch.setattr(decide_experiment, "apply_async", lambda *args, **kwargs: None)
    sms_provider(shop, provider)
    contacts = reachable(shop, 40)
    campaign, (a, b) = ab_campaign(shop, contacts, "Mail", "Text", schedule=Campaign.Schedule.RECURRING,
                                   crontab="0 9 * * 1")  # fmt: skip
    experiment = configure(campaign, a, tested="channel", arm_channels={b.pk: "sms"}, metric="conversion")
    with time_machine.travel(T0, tick=False):
        run_start(campaign=campaign, scheduled_for=T0)
    experiment.refresh_from_db()
    sibling_id, copy_id = experiment.arm_siblings[str(b.pk)]["campaign"], experiment.arm_siblings[str(b.pk)]["variant"]
    # A second occurrence while the test runs splits by weight, and the SMS arm still goes by SMS.
    with time_machine.travel(T0 + dt.timedelta(hours=1), tick=False):
        during = run_start(campaign=campaign, scheduled_for=T0 + dt.timedelta(hours=1))
    assert set(Delivery.objects.filter(run=during).values_list("variant_id", flat=True)) == {a.pk}
    by_text = Delivery.objects.filter(run__campaign_id=sibling_id, run__scheduled_for=T0 + dt.timedelta(hours=1))
    assert by_text.count() == 40 - Delivery.objects.filter(run=during).count() > 0
    assert set(by_text.values_list("variant_id", flat=True)) == {copy_id}
    Variant.objects.filter(pk=b.pk).update(sms_body="Text, reworded")
    Experiment.objects.filter(pk=experiment.pk).update(
        status="sent", winner=b, winner_name="Text", decided_at=T0 + dt.timedelta(hours=4)
    )
    week = T0 + dt.timedelta(days=7)
    with time_machine.travel(week, tick=False):
        later = run_start(campaign=campaign, scheduled_for=week)
    assert not Delivery.objects.filter(run=later).exists(), "everyone gets the winner, by SMS"
    moved = Delivery.objects.filter(run__campaign_id=sibling_id, run__scheduled_for=week)
    assert moved.count() == 40 and set(moved.values_list("variant_id", flat=True)) == {copy_id}
    assert Variant.objects.get(pk=copy_id).sms_body == "Text, reworded", "the copy follows its arm"
    assert Campaign.objects.filter(kind="journey").count() == 1, "one sibling, reused"


def test_pause_resume_and_cancel_reach_the_channel_arms_messages(shop, provider, monkeypatch):
    """The SMS arm's messages go out in a run of a hidden sibling: pausing, resuming and cancelling the
    campaign reach that run too (they only reached the campaign's own run)."""
    monkeypatch.setattr(experiments, "_send_run", lambda tenant_id, run_id: None)
    monkeypatch.setattr(decide_experiment, "apply_async", lambda *args, **kwargs: None)
    sms_provider(shop, provider)
    campaign, (a, b) = ab_campaign(shop, reachable(shop, 40), "Mail", "Text")
    experiment = configure(campaign, a, tested="channel", arm_channels={b.pk: "sms"}, metric="conversion")
    with time_machine.travel(T0, tick=False):
        services.campaign_send_now(campaign=campaign, actor=ACTOR)
    experiment.refresh_from_db()
    arm_run = CampaignRun.objects.get(pk=experiment.arm_siblings[str(b.pk)]["run"])
    assert arm_run.status == "sending" and Delivery.objects.filter(run=arm_run, status="pending").exists()

    campaign.refresh_from_db()
    services.campaign_pause(campaign=campaign, actor=ACTOR)
    assert CampaignRun.objects.get(pk=arm_run.pk).status == "paused"
    services.campaign_resume(campaign=campaign, actor=ACTOR)
    assert CampaignRun.objects.get(pk=arm_run.pk).status == "sending"
    services.campaign_cancel(campaign=campaign, actor=ACTOR)
    assert CampaignRun.objects.get(pk=arm_run.pk).status == "cancelled"
    assert not Delivery.objects.filter(run=arm_run, status="pending").exists()
    assert not sms_sent(provider)


def test_configuring_a_channel_test_needs_two_channels_set_up_and_worded(shop, provider):
    contacts = reachable(shop, 3)
    campaign, (a, b) = ab_campaign(shop, contacts, "A", "B")
    one = errors_of(campaign, control_id=a.pk, tested="channel", metric="conversion", arm_channels={a.pk: "email"})
    assert one["arm_channels"] == [
        "Give the variants at least two different channels: a channel test compares channels."
    ]
    no_provider = errors_of(campaign, control_id=a.pk, tested="channel", metric="click", arm_channels={b.pk: "sms"})
    assert no_provider["arm_channels"] == ["“B” goes by SMS: set up a SMS provider in the settings first."]
    assert no_provider["metric"] == ["Opens and clicks are tracked for email only: measure conversions instead."]
    sms_provider(shop, provider)
    Variant.objects.filter(pk=b.pk).update(sms_body="")
    unworded = errors_of(campaign, control_id=a.pk, tested="channel", metric="conversion", arm_channels={b.pk: "sms"})
    assert unworded["arm_channels"] == ["“B” goes by SMS: Write the message."]
    assert "arm_channels" in errors_of(
        campaign, control_id=a.pk, tested="channel", metric="conversion", arm_channels={b.pk: "fax"}
    )
    Variant.objects.filter(pk=b.pk).update(sms_body="B")
    Campaign.objects.filter(pk=campaign.pk).update(attribution_touch="click")
    campaign.refresh_from_db()
    clicks = errors_of(campaign, control_id=a.pk, tested="channel", metric="conversion", arm_channels={b.pk: "sms"})
    assert "only email clicks are tracked" in clicks["metric"][0].lower()
    Campaign.objects.filter(pk=campaign.pk).update(attribution_touch="delivery")
    campaign.refresh_from_db()
    done = configure(campaign, a, tested="channel", metric="conversion", arm_channels={b.pk: "sms"})
    assert done.arm_channels == {str(a.pk): "email", str(b.pk): "sms"}
    # Another test drops the channels.
    assert configure(campaign, a, tested="subject").arm_channels == {}


def test_each_arm_of_a_channel_test_is_checked_for_its_own_channel(shop, provider):
    sms_provider(shop, provider)
    contacts = reachable(shop, 4)
    campaign, (a, b) = ab_campaign(shop, contacts, "By email", "By SMS")
    configure(campaign, a, tested="channel", arm_channels={b.pk: "sms"}, metric="conversion", test_share=40)
    # The SMS arm has no email subject nor body: it needs none. Without its text it could not go out.
    Variant.objects.filter(pk=b.pk).update(subject="", html_body="")
    assert services.campaign_problems(campaign=campaign) == []
    Variant.objects.filter(pk=b.pk).update(sms_body="")
    assert [(p.field, p.variant_id) for p in services.campaign_problems(campaign=campaign)] == [("sms_body", b.pk)]
