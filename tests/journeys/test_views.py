"""The journey pages: list, settings (blank and from a blueprint), the builder, the step editor for every
kind, start/pause/archive/delete, enrollments and a contact's path; who may read and write; query counts."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from campaigns.models import Campaign, Variant
from contacts.models import AttributeDefinition, Contact
from journeys.models import Enrollment, EnrollmentStep, Journey, JourneyVersion, Step
from journeys.services import journey_create, journey_draft, journey_start, steps_replace
from segments.services import segment_create
from tenants.audit import Actor
from tenants.context import tenant_context
from tests.conftest import World

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("test")
GERMANS = {"all": [{"type": "field", "field": "country", "op": "eq", "value": "DE"}]}
EMAIL = {"variants": [{"name": "All", "target": "default", "subject": "Hi", "html_body": "<p>Hello</p>"}]}
T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


# --- helpers -----------------------------------------------------------------------------------
def url(name: str, journey: Journey | None = None, *, slug: str = "", **kwargs: Any) -> str:
    if journey is not None:
        kwargs["journey_id"] = journey.pk
    return reverse(f"journeys:{name}", kwargs={"tenant_slug": slug or journey.tenant.slug, **kwargs})  # type: ignore[union-attr]


def text(response: Any) -> str:
    return response.content.decode()


def reload(journey: Journey) -> Journey:
    with tenant_context(journey.tenant_id):
        return Journey.objects.select_related("live_version").get(pk=journey.pk)


def draft_steps(journey: Journey) -> dict[str, Step]:
    with tenant_context(journey.tenant_id):
        draft = journey_draft(journey=Journey.objects.get(pk=journey.pk))
        return {s.key: s for s in Step.objects.filter(version=draft).select_related("campaign")}


def start_key(journey: Journey) -> str:
    with tenant_context(journey.tenant_id):
        return journey_draft(journey=Journey.objects.get(pk=journey.pk)).start_key


def make_journey(world: World, name: str = "Cart", steps: list[dict] | None = None, **settings: Any) -> Journey:
    with tenant_context(world.tenant_a.id):
        data = {"name": name, "trigger": "event", "trigger_event": "cart_abandoned", "goal_event": "purchase"}
        journey = journey_create(tenant=world.tenant_a, actor=SYSTEM, data={**data, **settings})
        if steps is not None:
            steps_replace(journey=journey, actor=SYSTEM, steps=steps)
        return journey


def wait(key: str, following: str | None, amount: int = 1, unit: str = "days") -> dict[str, Any]:
    return {"key": key, "kind": "wait", "config": {"duration": {"amount": amount, "unit": unit}},
            "exits": {"next": following}}  # fmt: skip


def send(key: str, following: str | None) -> dict[str, Any]:
    return {"key": key, "kind": "send", "name": f"Mail {key}", "config": {"channel": "email"},
            "exits": {"next": following}, "content": EMAIL}  # fmt: skip


def branch(key: str, yes: str | None, no: str | None) -> dict[str, Any]:
    return {"key": key, "kind": "branch", "name": "German?", "config": {"rules": GERMANS},
            "exits": {"yes": yes, "no": no}}  # fmt: skip


LINE = [wait("s1", "s2"), send("s2", "s3"), wait("s3", None, 2, "hours")]


def enroll(journey: Journey, contact: Contact, *, status: str = "active", at: dt.datetime = T0, **extra) -> Enrollment:
    with tenant_context(journey.tenant_id):
        version = JourneyVersion.objects.filter(journey=journey).order_by("number").first()
        return Enrollment.objects.create(
            tenant_id=journey.tenant_id, journey=journey, version=version, contact=contact, status=status,
            entered_at=at, **extra,
        )  # fmt: skip


def person(world: World, email: str, **extra: Any) -> Contact:
    with tenant_context(world.tenant_a.id):
        return Contact.objects.create(tenant=world.tenant_a, email=email, **extra)


# --- the list ----------------------------------------------------------------------------------
def test_the_list_shows_status_trigger_counts_and_rate_in_a_bounded_number_of_queries(
    world: World, alice_client: Client, django_assert_max_num_queries
):
    cart = make_journey(world, steps=LINE)
    for n in range(4):
        make_journey(world, name=f"Other {n}", trigger="stage_changed", trigger_stage="lead", trigger_event="")
    with tenant_context(world.tenant_b.id):
        journey_create(tenant=world.tenant_b, actor=SYSTEM, data={"name": "B's secret journey", "trigger_event": "x"})
    people = [person(world, f"p{n}@example.com") for n in range(4)]
    enroll(cart, people[0], status="converted")
    enroll(cart, people[1], status="active")
    enroll(cart, people[2], status="completed")
    enroll(cart, people[3], status="exited")
    with django_assert_max_num_queries(12):
        response = alice_client.get(url("list", slug=world.tenant_a.slug))
    assert response.status_code == 200
    body = text(response)
    assert "B's secret journey" not in body
    rows = {row["journey"].name: row for row in response.context["rows"]}
    assert set(rows) == {"Cart", "Other 0", "Other 1", "Other 2", "Other 3"}
    assert rows["Cart"]["counts"]["entered"] == 4 and rows["Cart"]["counts"]["active"] == 1
    assert rows["Cart"]["rate"] == 25.0 and "25.0%" in body
    assert "Performs cart_abandoned" in body and "Lifecycle stage changes to Lead" in body
    # Filters: by status and name (the htmx request gets the table only).
    response = alice_client.get(url("list", slug=world.tenant_a.slug), {"q": "other 2"}, HTTP_HX_REQUEST="true",
                                HTTP_HX_TARGET="journey-results")  # fmt: skip
    assert [r["journey"].name for r in response.context["rows"]] == ["Other 2"]
    assert "<h1>" not in text(response)
    response = alice_client.get(url("list", slug=world.tenant_a.slug), {"status": "nonsense"})
    assert response.status_code == 400


def test_the_main_navigation_links_to_journeys(world: World, alice_client: Client):
    body = text(alice_client.get(url("list", slug=world.tenant_a.slug)))
    assert f'href="{url("list", slug=world.tenant_a.slug)}" aria-current="page">Journeys</a>' in body


# --- settings ----------------------------------------------------------------------------------
def settings_post(**overrides: Any) -> dict[str, Any]:
    data = {
        "name": "Abandoned carts", "description": "", "trigger": "event", "trigger_event": "cart_abandoned",
        "trigger_stage": "", "trigger_date_field": "", "entry": "cooldown", "cooldown_days": "3",
        "daily_cap": "100", "goal_event": "purchase", "exit_on_consent_withdrawn": "email", "purpose": "marketing",
        "filters-TOTAL_FORMS": "2", "filters-INITIAL_FORMS": "0",
        "filters-0-property": "value", "filters-0-op": "gt", "filters-0-value": "50",
        "filters-1-property": "", "filters-1-op": "eq", "filters-1-value": "",
    }  # fmt: skip
    data.update(overrides)
    return data


def test_a_blank_journey_is_created_from_the_settings_form(world: World, alice_client: Client):
    new = url("create", slug=world.tenant_a.slug)
    page = alice_client.get(new)
    assert page.status_code == 200
    body = text(page)
    assert "Welcome series" in body and "Abandoned cart" in body and "Lifecycle nurture" in body  # the blueprints
    response = alice_client.post(new, settings_post())
    assert response.status_code == 302
    with tenant_context(world.tenant_a.id):
        journey = Journey.objects.get(name="Abandoned carts")
    assert response["Location"] == url("detail", journey)
    assert journey.trigger_filters == [{"property": "value", "op": "gt", "value": 50}]
    assert (journey.entry, journey.cooldown_days, journey.daily_cap) == ("cooldown", 3, 100)
    assert (journey.goal_event, journey.exit_on_consent_withdrawn, journey.status) == ("purchase", "email", "draft")
    # The journey page says what is missing.
    page = alice_client.get(url("detail", journey))
    assert "Add a first step." in text(page)
    assert "Performs cart_abandoned where value &gt; 50" in text(page)


def test_settings_are_edited_and_other_triggers_fields_cleared(world: World, alice_client: Client):
    journey = make_journey(world, steps=LINE)
    with tenant_context(world.tenant_a.id):
        segment = segment_create(tenant=world.tenant_a, actor=SYSTEM, name="Germans", rules=GERMANS)
    edit = url("settings", journey)
    page = alice_client.get(edit)
    assert page.status_code == 200 and 'value="cart_abandoned"' in text(page)
    data = settings_post(
        name="Cart", trigger="segment_entered", trigger_segment=str(segment.pk), exit_segment=str(segment.pk)
    )
    response = alice_client.post(edit, data)
    assert response.status_code == 302
    journey = reload(journey)
    assert (journey.trigger, journey.trigger_segment_id, journey.exit_segment_id) == (
        "segment_entered", segment.pk, segment.pk,
    )  # fmt: skip
    assert journey.trigger_event == "" and journey.trigger_filters == []
    assert "Enters the segment “Germans”" in text(alice_client.get(url("detail", journey)))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"trigger_event": ""}, "Name the event that starts the journey."),
        ({"trigger_event": "bad name!"}, "Name the event that starts the journey."),
        ({"filters-0-value": "fifty"}, "A number."),
        ({"filters-0-property": "no spaces"}, "A property name"),
        ({"trigger": "segment_entered"}, "Choose the segment whose new members enter."),
        ({"trigger": "date_attribute"}, "Choose a date field"),
        ({"entry": "cooldown", "cooldown_days": ""}, "A cooldown is at least one day."),
        ({"goal_event": "two words"}, "An event name"),
        ({"daily_cap": "-1"}, "greater than or equal to 0"),
        ({"name": ""}, "This field is required."),
        ({"trigger_segment": "999999", "trigger": "segment_entered"}, "Select a valid choice"),
    ],
)
def test_bad_settings_are_form_errors_not_500s(world: World, alice_client: Client, overrides, message):
    response = alice_client.post(url("create", slug=world.tenant_a.slug), settings_post(**overrides))
    assert response.status_code == 400
    assert message in text(response)
    assert 'data-testid="form-error-summary"' in text(response)
    with tenant_context(world.tenant_a.id):
        assert not Journey.objects.exists()


def test_a_name_in_use_and_another_tenants_segment_are_refused(world: World, alice_client: Client):
    make_journey(world, name="Taken")
    response = alice_client.post(url("create", slug=world.tenant_a.slug), settings_post(name="Taken"))
    assert response.status_code == 400 and "Another journey has this name." in text(response)
    with tenant_context(world.tenant_b.id):
        theirs = segment_create(tenant=world.tenant_b, actor=SYSTEM, name="B segment", rules=GERMANS)
    response = alice_client.post(
        url("create", slug=world.tenant_a.slug),
        settings_post(name="Mine", trigger="segment_entered", trigger_segment=str(theirs.pk)),
    )
    assert response.status_code == 400 and "Select a valid choice" in text(response)


def test_a_journey_from_a_blueprint_is_drawn_with_its_branches(world: World, alice_client: Client):
    response = alice_client.post(
        url("create_from_blueprint", slug=world.tenant_a.slug), {"blueprint": "abandoned_cart"}
    )
    assert response.status_code == 302
    with tenant_context(world.tenant_a.id):
        journey = Journey.objects.get(name="Abandoned cart")
    assert response["Location"] == url("detail", journey)
    page = alice_client.get(url("detail", journey))
    body = text(page)
    assert page.context["journey_problems"] == [] and page.context["problem_count"] == 0
    # The wait for an event shows its two exits side by side, the branch its yes/no.
    assert re.search(r'data-exit="happened".*data-exit="timed_out"', body, re.S)
    assert re.search(r'data-exit="yes".*data-exit="no"', body, re.S)
    assert "Up to 1 hour for purchase" in body and "Email · 1 variant · “You left something behind”" in body
    assert "If sms consent granted" in body
    assert body.count('data-testid="step-card"') == 5
    assert 'data-testid="start"' in body and "disabled" not in re.search(r'<button[^>]*data-testid="start"[^>]*>',
                                                                         body).group(0)  # fmt: skip
    # An unknown blueprint is a message, not an error page.
    response = alice_client.post(url("create_from_blueprint", slug=world.tenant_a.slug), {"blueprint": "nope"},
                                 follow=True)  # fmt: skip
    assert response.status_code == 200 and "Expected one of" in text(response)


# --- the builder -------------------------------------------------------------------------------
def test_a_step_reached_from_two_places_is_drawn_once(world: World, alice_client: Client):
    steps = [branch("s1", "s2", "s3"), send("s2", "s4"), wait("s3", "s4"), send("s4", None),
             wait("s9", None)]  # fmt: skip  # s9: no path leads to it
    journey = make_journey(world, steps=steps)
    page = alice_client.get(url("detail", journey))
    assert page.status_code == 200
    body = text(page)
    assert body.count('id="step-s4"') == 1
    assert body.count('data-testid="flow-goto"') == 1 and "→ continues at" in body
    kinds = [item.kind for item in page.context["flow"].items]
    assert kinds.count("lanes") == 1 and kinds.count("lane") == 2
    # The orphan is drawn apart, with its problem on its card.
    assert [item.key for item in page.context["flow"].orphans if item.kind == "card"] == ["s9"]
    assert "No path leads to this step." in body


def test_problems_show_on_their_step_and_at_the_top_and_block_the_start(world: World, alice_client: Client):
    journey = make_journey(world, steps=[wait("s1", "s2"),
                                         {"key": "s2", "kind": "send", "config": {"channel": "email"},
                                          "exits": {"next": None}}])  # fmt: skip
    page = alice_client.get(url("detail", journey))
    cards = {item.key: item.card for item in page.context["flow"].items if item.kind == "card"}
    assert cards["s2"].problems == ["Write the message: add at least one variant."]
    assert cards["s1"].problems == []
    assert re.search(r'<button[^>]*data-testid="start"[^>]*disabled', text(page))
    # Start anyway (a stale page): refused, with a message.
    response = alice_client.post(url("start", journey), follow=True)
    assert "Not started: fix the problem shown below first." in text(response)
    assert reload(journey).status == "draft"
    # A settings problem is a journey-level one, with a link to the settings.
    with tenant_context(world.tenant_a.id):
        Journey.objects.filter(pk=journey.pk).update(trigger_event="")
    page = alice_client.get(url("detail", journey))
    assert [p["message"] for p in page.context["journey_problems"]] == ["Name the event that starts the journey."]
    assert page.context["journey_problems"][0]["settings"] is True


def test_steps_are_added_through_the_forms_at_every_place(world: World, alice_client: Client):
    journey = make_journey(world)
    new = url("step_create", journey)
    # The chooser, then a wait at the start.
    assert alice_client.get(new).status_code == 200
    page = alice_client.get(new, {"kind": "wait", "after": "", "exit": "next"})
    assert page.status_code == 200 and "Wait for" in text(page)
    response = alice_client.post(new, {"kind": "wait", "after": "", "exit": "next", "name": "Cool off",
                                       "amount": "2", "unit": "hours"})  # fmt: skip
    assert response.status_code == 302 and response["Location"].endswith("#step-s1")
    # An email after it, with its message.
    variant = {
        "variants-TOTAL_FORMS": "1", "variants-INITIAL_FORMS": "0", "variants-0-name": "Everyone",
        "variants-0-target": "default", "variants-0-weight": "100", "variants-0-subject": "Still thinking?",
        "variants-0-html_body": "<p>Hi {{ contact.first_name }}</p>", "variants-0-cta_label": "Back to cart",
        "variants-0-cta_url": "https://shop.example/cart",
    }  # fmt: skip
    page = alice_client.get(new, {"kind": "send:email", "after": "s1", "exit": "next"})
    assert page.status_code == 200 and "Subject" in text(page)
    response = alice_client.post(new, {"kind": "send", "channel": "email", "after": "s1", "exit": "next",
                                       "sender-sender_name": "Shop", **variant})  # fmt: skip
    assert response.status_code == 302, text(response)
    # A branch between them, with its rules.
    response = alice_client.post(new, {"kind": "branch", "after": "s1", "exit": "next", "name": "German?",
                                       "rules": '{"all": [{"type": "field", "field": "country", "op": "eq", '
                                                '"value": "DE"}]}'})  # fmt: skip
    assert response.status_code == 302
    steps = draft_steps(journey)
    assert start_key(journey) == "s1"
    assert steps["s1"].config == {"duration": {"amount": 2, "unit": "hours"}} and steps["s1"].name == "Cool off"
    assert steps["s1"].exits == {"next": "s3"}
    assert steps["s3"].exits == {"yes": "s2", "no": None}  # what followed goes on the first exit
    campaign = steps["s2"].campaign
    assert campaign is not None and campaign.kind == Campaign.Kind.JOURNEY and campaign.sender_name == "Shop"
    with tenant_context(world.tenant_a.id):
        assert list(Variant.objects.filter(campaign=campaign).values_list("subject", "cta_label")) == [
            ("Still thinking?", "Back to cart")
        ]
    # The "no" path gets a step of its own; the page then has nothing left to fix.
    response = alice_client.post(new, {"kind": "exit", "after": "s3", "exit": "no", "name": "Not for us"})
    assert response.status_code == 302
    assert draft_steps(journey)["s3"].exits == {"yes": "s2", "no": "s4"}
    page = alice_client.get(url("detail", journey))
    assert page.context["problem_count"] == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kind": "wait", "amount": "0", "unit": "days"}, "greater than or equal to 1"),
        ({"kind": "wait", "amount": "400", "unit": "days"}, "a year at most"),
        ({"kind": "wait", "amount": "2", "unit": "fortnights"}, "Select a valid choice"),
        ({"kind": "wait_until", "time": "25:00"}, "A time of day as HH:MM"),
        ({"kind": "wait_until", "weekdays": ["9"], "time": "09:00"}, "Select a valid choice"),
        (
            {
                "kind": "wait_event",
                "event": "purchase",
                "timeout_amount": "1",
                "timeout_unit": "hours",
                "filters-TOTAL_FORMS": "1",
                "filters-INITIAL_FORMS": "0",
                "filters-0-property": "value",
                "filters-0-op": "in",
                "filters-0-value": "",
            },
            "One or more values",
        ),
        (
            {
                "kind": "wait_event",
                "event": "",
                "timeout_amount": "1",
                "timeout_unit": "hours",
                "filters-TOTAL_FORMS": "0",
                "filters-INITIAL_FORMS": "0",
            },
            "This field is required.",
        ),
        ({"kind": "branch", "rules": "{not json"}, "This is not valid JSON"),
        (
            {"kind": "branch", "rules": '{"all": [{"type": "field", "field": "shoe_size", "op": "eq", "value": 1}]}'},
            'data-testid="rule-errors"',
        ),
        ({"kind": "update", "set_attributes": '{"plan": "pro"}'}, "No custom attribute"),
        ({"kind": "update", "set_attributes": "[1]"}, "Expected {&quot;key&quot;: value}."),
        ({"kind": "update"}, "Say what to change"),
        ({"kind": "webhook", "url": "http://example.com/hook"}, "Use an https:// address"),
        (
            {
                "kind": "split",
                "paths-TOTAL_FORMS": "2",
                "paths-INITIAL_FORMS": "0",
                "paths-0-label": "A",
                "paths-0-weight": "1",
                "paths-1-label": "b",
                "paths-1-weight": "1",
            },
            "A short label",
        ),
        (
            {
                "kind": "split",
                "paths-TOTAL_FORMS": "1",
                "paths-INITIAL_FORMS": "0",
                "paths-0-label": "a",
                "paths-0-weight": "1",
            },
            "A split has 2 to 5 paths.",
        ),
        (
            {
                "kind": "send",
                "channel": "email",
                "variants-TOTAL_FORMS": "1",
                "variants-INITIAL_FORMS": "0",
                "variants-0-name": "All",
                "variants-0-target": "default",
                "variants-0-weight": "100",
                "variants-0-html_body": "<p>x</p>",
            },
            "An email needs a subject.",
        ),
        (
            {
                "kind": "send",
                "channel": "email",
                "variants-TOTAL_FORMS": "1",
                "variants-INITIAL_FORMS": "0",
                "variants-0-name": "All",
                "variants-0-target": "default",
                "variants-0-weight": "100",
                "variants-0-subject": "Hi {% if %}",
                "variants-0-html_body": "<p>x</p>",
            },
            "subject",
        ),
        (
            {
                "kind": "send",
                "channel": "email",
                "variants-TOTAL_FORMS": "1",
                "variants-INITIAL_FORMS": "0",
                "variants-0-name": "DE",
                "variants-0-target": "segment",
                "variants-0-weight": "100",
                "variants-0-subject": "Hallo",
                "variants-0-html_body": "<p>x</p>",
            },
            "Choose the segment this variant is for.",
        ),
        ({"kind": "nonsense"}, "Choose what the step does."),
        ({"kind": "exit"}, "An exit goes where a path ends"),
        ({"kind": "wait", "after": "s77", "amount": "1", "unit": "days"}, "That step is not in this journey any more."),
        ({"kind": "wait", "after": "s1", "exit": "yes", "amount": "1", "unit": "days"}, "has no exit"),
    ],
)
def test_bad_step_input_is_a_form_error_not_a_500(world: World, alice_client: Client, data, message):
    journey = make_journey(world, steps=[wait("s1", None)])
    response = alice_client.post(url("step_create", journey), {"after": "", "exit": "next", **data})
    assert response.status_code == 400
    assert message in text(response)
    assert set(draft_steps(journey)) == {"s1"}


def test_a_branch_shows_its_rule_errors_for_the_segment_builder(world: World, alice_client: Client):
    journey = make_journey(world, steps=[wait("s1", None)])
    rules = '{"all": [{"type": "field", "field": "country", "op": "eq", "value": "Narnia"}]}'
    response = alice_client.post(url("step_create", journey), {"kind": "branch", "after": "s1", "exit": "next",
                                                               "rules": rules})  # fmt: skip
    assert response.status_code == 400
    errors = response.context["rule_errors"]
    assert errors and errors[0]["path"] == "all.0.value"
    body = text(response)
    assert 'id="builder-errors"' in body and 'id="builder-catalogue"' in body and "segment-builder.js" in body


def test_each_kind_is_edited_through_its_form(world: World, alice_client: Client):
    with tenant_context(world.tenant_a.id):
        AttributeDefinition.objects.create(tenant=world.tenant_a, key="plan", label="Plan", type="text")
        AttributeDefinition.objects.create(tenant=world.tenant_a, key="tags", label="Tags", type="list")
    steps = [
        wait("s1", "s2"),
        {"key": "s2", "kind": "wait_until", "config": {"weekdays": [0], "time": "09:00"}, "exits": {"next": "s3"}},
        {"key": "s3", "kind": "wait_event", "config": {"event": "purchase", "timeout": {"amount": 1, "unit": "days"}},
         "exits": {"happened": None, "timed_out": "s4"}},
        {"key": "s4", "kind": "split", "exits": {"a": "s5", "b": "s6"},
         "config": {"paths": [{"label": "a", "weight": 50}, {"label": "b", "weight": 50}]}},
        {"key": "s5", "kind": "update", "config": {"stage": "lead"}, "exits": {"next": None}},
        {"key": "s6", "kind": "webhook", "config": {"url": "https://hooks.example/a"}, "exits": {"next": None}},
    ]  # fmt: skip
    journey = make_journey(world, steps=steps)
    for key in ("s1", "s2", "s3", "s4", "s5", "s6"):
        assert alice_client.get(url("step_edit", journey, step_key=key)).status_code == 200, key

    def save(key: str, data: dict[str, Any]) -> Any:
        response = alice_client.post(url("step_edit", journey, step_key=key), data)
        assert response.status_code == 302, text(response)
        return draft_steps(journey)[key]

    assert save("s1", {"name": "", "amount": "3", "unit": "weeks"}).config == {"duration": {"amount": 3,
                                                                                          "unit": "weeks"}}  # fmt: skip
    assert save("s2", {"weekdays": ["4", "1"], "time": "17:30"}).config == {"weekdays": [1, 4], "time": "17:30"}
    step = save("s3", {"event": "purchase", "timeout_amount": "2", "timeout_unit": "hours",
                       "filters-TOTAL_FORMS": "2", "filters-INITIAL_FORMS": "0",
                       "filters-0-property": "currency", "filters-0-op": "in", "filters-0-value": 'EUR, "10"',
                       "filters-1-property": "", "filters-1-op": "eq", "filters-1-value": "",
                       "exits-exit_happened": "s6", "exits-exit_timed_out": "s4"})  # fmt: skip
    assert step.config == {"event": "purchase", "timeout": {"amount": 2, "unit": "hours"},
                           "filters": [{"property": "currency", "op": "in", "value": ["EUR", "10"]}]}  # fmt: skip
    assert step.exits == {"happened": "s6", "timed_out": "s4"}
    # The saved filter comes back as it was typed.
    assert 'value="EUR, &quot;10&quot;"' in text(alice_client.get(url("step_edit", journey, step_key="s3")))
    # A split: path "b" renamed "control" keeps where it led; a third path is added and ends.
    step = save("s4", {"paths-TOTAL_FORMS": "5", "paths-INITIAL_FORMS": "2",
                       "paths-0-label": "a", "paths-0-weight": "80", "paths-0-original": "a",
                       "paths-1-label": "control", "paths-1-weight": "10", "paths-1-original": "b",
                       "paths-2-label": "c", "paths-2-weight": "10", "paths-2-original": "",
                       "exits-exit_a": "s5", "exits-exit_b": "s6"})  # fmt: skip
    assert step.config["paths"] == [{"label": "a", "weight": 80}, {"label": "control", "weight": 10},
                                    {"label": "c", "weight": 10}]  # fmt: skip
    assert step.exits == {"a": "s5", "control": "s6", "c": None}
    step = save("s5", {"set_attributes": '{"plan": "pro"}', "list_attribute": "tags", "list_values": "vip, early",
                       "stage": ""})  # fmt: skip
    assert step.config == {"set_attributes": {"plan": "pro"}, "add_to_list": {"attribute": "tags",
                                                                             "values": ["vip", "early"]}}  # fmt: skip
    assert save("s6", {"url": "https://hooks.example/b"}).config == {"url": "https://hooks.example/b"}
    # Re-pointing an exit at the step itself is refused in place.
    response = alice_client.post(url("step_edit", journey, step_key="s4"), {
        "paths-TOTAL_FORMS": "2", "paths-INITIAL_FORMS": "2", "paths-0-label": "a", "paths-0-weight": "1",
        "paths-0-original": "a", "paths-1-label": "b", "paths-1-weight": "1", "paths-1-original": "control",
        "exits-exit_a": "s4", "exits-exit_control": "",
    })  # fmt: skip
    assert response.status_code == 400 and "Select a valid choice" in text(response)


def test_a_send_steps_variants_are_added_edited_and_removed(world: World, alice_client: Client):
    journey = make_journey(world, steps=[send("s1", None)])
    edit = url("step_edit", journey, step_key="s1")
    with tenant_context(world.tenant_a.id):
        segment = segment_create(tenant=world.tenant_a, actor=SYSTEM, name="Germans", rules=GERMANS)
        first = Variant.objects.get(campaign=draft_steps(journey)["s1"].campaign)
    page = alice_client.get(edit)
    assert page.status_code == 200 and 'value="Hi"' in text(page)
    base = {
        "name": "Mail", "channel": "email", "variants-TOTAL_FORMS": "2", "variants-INITIAL_FORMS": "1",
        "variants-0-variant_id": str(first.pk), "variants-0-name": "All", "variants-0-target": "default",
        "variants-0-weight": "100", "variants-0-subject": "Hello again", "variants-0-html_body": "<p>Hello</p>",
        "variants-1-name": "Germans", "variants-1-target": "segment", "variants-1-target_segment": str(segment.pk),
        "variants-1-weight": "100", "variants-1-subject": "Hallo {{ contact.nickname }}",
        "variants-1-html_body": "<p>Hallo</p>",
    }  # fmt: skip
    response = alice_client.post(edit, base, follow=True)
    assert response.status_code == 200
    assert "unknown" in text(response).lower() or "nickname" in text(response)  # the template warning is shown
    with tenant_context(world.tenant_a.id):
        variants = list(Variant.objects.filter(campaign=draft_steps(journey)["s1"].campaign).order_by("position"))
    # The targeted variant goes first, the default last; the default kept its row.
    assert [(v.name, v.target, v.target_segment_id) for v in variants] == [
        ("Germans", "segment", segment.pk), ("All", "default", None),
    ]  # fmt: skip
    assert variants[1].pk == first.pk and variants[1].subject == "Hello again"
    # Remove the German one.
    response = alice_client.post(edit, {
        "name": "Mail", "channel": "email", "variants-TOTAL_FORMS": "3", "variants-INITIAL_FORMS": "2",
        "variants-0-variant_id": str(variants[0].pk), "variants-0-name": "Germans", "variants-0-target": "segment",
        "variants-0-target_segment": str(segment.pk), "variants-0-weight": "100", "variants-0-subject": "Hallo",
        "variants-0-html_body": "<p>Hallo</p>", "variants-0-DELETE": "on",
        "variants-1-variant_id": str(first.pk), "variants-1-name": "All", "variants-1-target": "default",
        "variants-1-weight": "100", "variants-1-subject": "Hello again", "variants-1-html_body": "<p>Hello</p>",
        "variants-2-name": "", "variants-2-target": "segment", "variants-2-weight": "100",
    })  # fmt: skip
    assert response.status_code == 302, text(response)
    with tenant_context(world.tenant_a.id):
        assert list(Variant.objects.filter(campaign=draft_steps(journey)["s1"].campaign).values_list("name")) == [
            ("All",)
        ]
    # A new channel is saved first; the page then asks for that channel's message.
    response = alice_client.post(edit, {"name": "Mail", "channel": "sms"}, follow=True)
    assert "The channel is now SMS" in text(response) and "Message" in text(response)
    assert draft_steps(journey)["s1"].config == {"channel": "sms"}


def test_steps_move_up_and_down_and_a_branch_is_deleted_keeping_one_path(world: World, alice_client: Client):
    journey = make_journey(world, steps=[wait("s1", "s2"), send("s2", "s3"), wait("s3", None, 2, "hours")])
    page = alice_client.get(url("detail", journey))
    cards = {item.key: item.card for item in page.context["flow"].items if item.kind == "card"}
    assert (cards["s1"].up, cards["s1"].down, cards["s3"].up, cards["s3"].down) == (False, True, True, False)
    assert alice_client.post(url("step_move", journey, step_key="s3"), {"direction": "up"}).status_code == 302
    steps = draft_steps(journey)
    assert (start_key(journey), steps["s1"].exits, steps["s3"].exits, steps["s2"].exits) == (
        "s1", {"next": "s3"}, {"next": "s2"}, {"next": None},
    )  # fmt: skip
    assert alice_client.post(url("step_move", journey, step_key="s1"), {"direction": "down"}).status_code == 302
    assert start_key(journey) == "s3" and draft_steps(journey)["s3"].exits == {"next": "s1"}
    # To the start: "up" from second place.
    alice_client.post(url("step_move", journey, step_key="s1"), {"direction": "up"})
    assert start_key(journey) == "s1"
    # A move that cannot be: a message, nothing changes.
    response = alice_client.post(url("step_move", journey, step_key="s1"), {"direction": "up"}, follow=True)
    assert "cannot move up" in text(response) and start_key(journey) == "s1"
    # A branch at the start: delete it and keep its "no" path.
    alice_client.post(url("step_create", journey), {"kind": "branch", "after": "", "exit": "next",
                                                    "rules": '{"all": []}'})  # fmt: skip
    branch_key = start_key(journey)
    alice_client.post(url("step_create", journey), {"kind": "exit", "after": branch_key, "exit": "no"})
    steps = draft_steps(journey)
    assert steps[branch_key].exits["yes"] == "s1"
    response = alice_client.post(url("step_delete", journey, step_key=branch_key), {"keep": "no"}, follow=True)
    assert "deleted, and 3 steps only its other exits led to" in text(response)
    steps = draft_steps(journey)
    assert len(steps) == 1 and start_key(journey) in steps and next(iter(steps.values())).kind == "exit"
    # A plain delete.
    only = start_key(journey)
    alice_client.post(url("step_delete", journey, step_key=only))
    assert draft_steps(journey) == {}


def test_start_pause_publish_with_migration_archive_and_delete(world: World, alice_client: Client):
    journey = make_journey(world, steps=LINE)
    response = alice_client.post(url("start", journey), follow=True)
    assert "The journey is live" in text(response)
    journey = reload(journey)
    assert journey.status == "live" and journey.live_version is not None
    page = alice_client.get(url("detail", journey))
    assert page.context["can_pause"] and not page.context["can_start"] and not page.context["can_delete"]
    # An edit makes a draft: "Publish changes", with the choice to move contacts in flight.
    alice_client.post(url("step_edit", journey, step_key="s3"), {"amount": "5", "unit": "hours"})
    page = alice_client.get(url("detail", journey))
    body = text(page)
    assert page.context["start_label"] == "Publish changes" and 'name="migrate"' in body
    assert 'data-testid="draft-notice"' in body and "Wait 5 hours" in body
    contact = person(world, "flight@example.com")
    with tenant_context(world.tenant_a.id):
        live_s1 = Step.objects.get(version=reload(journey).live_version, key="s1")
    enrollment = enroll(journey, contact, step=live_s1)
    response = alice_client.post(url("start", journey), {"migrate": "1"}, follow=True)
    assert "new entrants get version 2" in text(response)
    with tenant_context(world.tenant_a.id):
        enrollment.refresh_from_db()
        assert enrollment.version.number == 2 and enrollment.step.key == "s1"
    # Pause, resume, archive.
    alice_client.post(url("pause", journey))
    assert reload(journey).status == "paused"
    assert alice_client.get(url("detail", journey)).context["start_label"] == "Resume"
    alice_client.post(url("start", journey))
    assert reload(journey).status == "live"
    response = alice_client.post(url("archive", journey), follow=True)
    assert "Archived: 1 contact in flight exited." in text(response)
    page = alice_client.get(url("detail", journey))
    assert reload(journey).status == "archived" and not page.context["editable"]
    assert 'data-testid="add-step"' not in text(page)
    # An archived journey's step page is read-only; a post is refused in place.
    response = alice_client.post(url("step_edit", journey, step_key="s1"), {"amount": "2", "unit": "days"})
    assert response.status_code == 400 and "archived journey cannot be edited" in text(response)
    # Only a journey that never started can be deleted.
    response = alice_client.post(url("delete", journey), follow=True)
    assert "cannot be deleted: archive it instead" in text(response)
    fresh = make_journey(world, name="Fresh", steps=LINE)
    response = alice_client.post(url("delete", fresh))
    assert response.status_code == 302 and response["Location"] == url("list", slug=world.tenant_a.slug)
    with tenant_context(world.tenant_a.id):
        assert set(Journey.objects.values_list("name", flat=True)) == {"Cart"}


# --- enrollments -------------------------------------------------------------------------------
def test_the_enrollment_list_filters_and_pages_and_the_path_shows_each_step(
    world: World, alice_client: Client, monkeypatch
):
    monkeypatch.setattr("journeys.views.ENROLLMENT_PAGE_SIZE", 2)
    with tenant_context(world.tenant_a.id):
        world.tenant_a.time_zone = "Europe/Berlin"
        world.tenant_a.save()
    journey = make_journey(world, steps=[branch("s1", "s2", None), send("s2", None)])
    steps = draft_steps(journey)
    people = [person(world, f"e{n}@example.com", first_name=f"Eve{n}") for n in range(4)]
    rows = [
        enroll(journey, people[n], status=status, at=T0 + dt.timedelta(hours=n), step=steps["s2"])
        for n, status in enumerate(["converted", "active", "active", "completed"])
    ]
    with tenant_context(world.tenant_a.id):
        EnrollmentStep.objects.create(tenant_id=journey.tenant_id, enrollment_id=rows[0].pk, step_id=steps["s1"].pk,
                                      seq=1, entered_at=T0, left_at=T0, outcome="yes")  # fmt: skip
        EnrollmentStep.objects.create(tenant_id=journey.tenant_id, enrollment_id=rows[0].pk, step_id=steps["s2"].pk,
                                      seq=2, entered_at=T0, left_at=T0 + dt.timedelta(minutes=1), outcome="next",
                                      delivery_id=4242)  # fmt: skip
    listing = url("enrollments", journey)
    page = alice_client.get(listing)
    assert [e.pk for e in page.context["rows"]] == [rows[3].pk, rows[2].pk]  # newest first
    assert page.context["next_url"]
    page2 = alice_client.get(page.context["next_url"])
    assert [e.pk for e in page2.context["rows"]] == [rows[1].pk, rows[0].pk] and page2.context["next_url"] is None
    active = alice_client.get(listing, {"status": "active"})
    assert {e.pk for e in active.context["rows"]} == {rows[1].pk, rows[2].pk}
    assert alice_client.get(listing, {"status": "bogus"}).status_code == 400
    # The path: steps with times and the exit taken, the delivery, a link to the contact.
    path = alice_client.get(url("enrollment", journey, enrollment_id=rows[0].pk))
    body = text(path)
    assert path.status_code == 200
    assert reverse("contacts:detail", kwargs={"tenant_slug": world.tenant_a.slug, "contact_id": people[0].pk}) in body
    assert [row["exit_name"] for row in path.context["path"]] == ["Yes", "Next"]
    assert "German?" in body and "Delivery #4242" in body and "left 2026-03-02 10:01:00" in body  # Berlin time
    # Another journey's enrollment is not found under this journey.
    other = make_journey(world, name="Other", steps=[wait("s1", None)])
    assert alice_client.get(url("enrollment", other, enrollment_id=rows[0].pk)).status_code == 404


# --- who may do what -----------------------------------------------------------------------------
def every_page(journey: Journey, enrollment: Enrollment) -> list[str]:
    return [
        url("list", slug=journey.tenant.slug), url("create", slug=journey.tenant.slug), url("detail", journey),
        url("settings", journey), url("step_create", journey),
        url("step_create", journey) + "?kind=send:email&after=s2&exit=next",
        *(url("step_edit", journey, step_key=key) for key in ("s1", "s2", "s3")),
        url("enrollments", journey), url("enrollment", journey, enrollment_id=enrollment.pk),
    ]  # fmt: skip


def test_bob_the_viewer_reads_every_page_without_edit_controls_and_cannot_post(world: World, bob_client: Client):
    journey = make_journey(world, steps=[branch("s1", "s2", None), send("s2", "s3"), wait("s3", None)])
    enrollment = enroll(journey, person(world, "bob-sees@example.com"))
    for page_url in every_page(journey, enrollment):
        response = bob_client.get(page_url)
        assert response.status_code == 200, page_url
        body = text(response)
        assert 'data-testid="add-step"' not in body and 'data-testid="save-step"' not in body, page_url
        assert 'data-testid="new-journey"' not in body and "Create journey" not in body, page_url
    step_page = text(bob_client.get(url("step_edit", journey, step_key="s1")))
    assert 'data-testid="read-only"' in step_page and "segment-builder.js" not in step_page
    posts = [
        (url("create", slug=world.tenant_a.slug), settings_post()),
        (url("create_from_blueprint", slug=world.tenant_a.slug), {"blueprint": "welcome"}),
        (url("settings", journey), settings_post()),
        (url("step_create", journey), {"kind": "wait", "amount": "1", "unit": "days"}),
        (url("step_edit", journey, step_key="s3"), {"amount": "1", "unit": "days"}),
        (url("step_move", journey, step_key="s3"), {"direction": "up"}),
        (url("step_delete", journey, step_key="s3"), {}),
        (url("start", journey), {}), (url("pause", journey), {}), (url("archive", journey), {}),
        (url("delete", journey), {}),
    ]  # fmt: skip
    for post_url, data in posts:
        assert bob_client.post(post_url, data).status_code == 403, post_url
    assert reload(journey).status == "draft" and set(draft_steps(journey)) == {"s1", "s2", "s3"}


def test_charlie_gets_404_for_tenant_a_journeys_even_inside_his_own_tenant(world: World, charlie_client: Client):
    journey = make_journey(world, steps=LINE)
    enrollment = enroll(journey, person(world, "hidden@example.com"))
    for page_url in every_page(journey, enrollment):
        assert charlie_client.get(page_url).status_code == 404, page_url
    # A's journey id under B's slug: a 404 too, for every page and action.
    b = world.tenant_b.slug
    pages = [
        ("detail", {}), ("settings", {}), ("enrollments", {}), ("step_create", {}), ("step_edit", {"step_key": "s1"}),
        ("enrollment", {"enrollment_id": enrollment.pk}),
    ]  # fmt: skip
    for name, kwargs in pages:
        page = reverse(f"journeys:{name}", kwargs={"tenant_slug": b, "journey_id": journey.pk, **kwargs})
        assert charlie_client.get(page).status_code == 404, name
    for name in ("start", "pause", "archive", "delete"):
        action = reverse(f"journeys:{name}", kwargs={"tenant_slug": b, "journey_id": journey.pk})
        assert charlie_client.post(action).status_code == 404, name
    action = reverse("journeys:step_delete", kwargs={"tenant_slug": b, "journey_id": journey.pk, "step_key": "s1"})
    assert charlie_client.post(action).status_code == 404
    assert set(draft_steps(journey)) == {"s1", "s2", "s3"} and reload(journey).status == "draft"


# --- query counts --------------------------------------------------------------------------------
def test_the_journey_page_does_not_query_per_step_or_enrollment(
    world: World, alice_client: Client, django_assert_max_num_queries
):
    def build(n: int) -> Journey:
        steps = []
        for i in range(1, n + 1):
            following = f"s{i + 1}" if i < n else None
            steps.append(wait(f"s{i}", following) if i % 2 else branch(f"s{i}", following, None))
        return make_journey(world, name=f"Long {n}", steps=steps)

    small, big = build(4), build(24)
    for journey in (small, big):
        steps = draft_steps(journey)
        for n in range(5):
            enroll(journey, person(world, f"q{journey.pk}-{n}@example.com"), step=steps["s1"])
    with django_assert_max_num_queries(22):
        page = alice_client.get(url("detail", big))
    assert page.status_code == 200 and len([i for i in page.context["flow"].items if i.kind == "card"]) == 24
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    counts = []
    for journey in (small, big):
        with CaptureQueriesContext(connection) as captured:
            alice_client.get(url("detail", journey))
        counts.append(len(captured))
    assert counts[0] == counts[1]  # the same number of queries for 4 steps and for 24


def test_a_live_journeys_message_is_edited_in_its_draft_and_the_live_one_is_kept(world: World, alice_client: Client):
    journey = make_journey(world, steps=[send("s1", None)])
    with tenant_context(world.tenant_a.id):
        journey_start(journey=Journey.objects.get(pk=journey.pk), actor=SYSTEM)
        live_step = Step.objects.get(version=reload(journey).live_version, key="s1")
        live_variant = Variant.objects.get(campaign=live_step.campaign)
    page = alice_client.get(url("step_edit", journey, step_key="s1"))
    assert page.status_code == 200 and f'value="{live_variant.pk}"' in text(page)  # the live one, before any edit
    response = alice_client.post(url("step_edit", journey, step_key="s1"), {
        "name": "Mail", "channel": "email", "variants-TOTAL_FORMS": "1", "variants-INITIAL_FORMS": "1",
        "variants-0-variant_id": str(live_variant.pk), "variants-0-name": "All", "variants-0-target": "default",
        "variants-0-weight": "100", "variants-0-subject": "New subject", "variants-0-html_body": "<p>New</p>",
    })  # fmt: skip
    assert response.status_code == 302, text(response)
    draft = draft_steps(journey)["s1"]
    with tenant_context(world.tenant_a.id):
        assert list(Variant.objects.filter(campaign=draft.campaign).values_list("subject", flat=True)) == [
            "New subject"
        ]
        live_variant.refresh_from_db()
        assert live_variant.subject == "Hi"  # contacts keep getting the live version until the publish
    page = alice_client.get(url("detail", journey))
    assert page.context["start_label"] == "Publish changes" and "New subject" in text(page)


def test_the_services_filter_errors_land_on_their_row(world: World, alice_client: Client):
    long_text = "x" * 300  # the form takes it; the rule language allows 200 characters
    response = alice_client.post(url("create", slug=world.tenant_a.slug), settings_post(**{
        "filters-0-op": "eq", "filters-0-value": long_text,
    }))  # fmt: skip
    assert response.status_code == 400
    rows = response.context["filters"].forms
    assert rows[0].errors == {"value": ["At most 200 characters."]}
    journey = make_journey(world, steps=[wait("s1", None)])
    response = alice_client.post(url("step_create", journey), {
        "kind": "wait_event", "after": "s1", "exit": "next", "event": "purchase", "timeout_amount": "1",
        "timeout_unit": "hours", "filters-TOTAL_FORMS": "2", "filters-INITIAL_FORMS": "0",
        "filters-0-property": "", "filters-0-op": "eq", "filters-0-value": "",
        "filters-1-property": "coupon", "filters-1-op": "eq", "filters-1-value": long_text,
    })  # fmt: skip
    assert response.status_code == 400
    rows = response.context["editor"].filters.forms
    assert rows[0].errors == {} and rows[1].errors == {"value": ["At most 200 characters."]}
