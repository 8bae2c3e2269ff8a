"""The journeys REST API: CRUD with the whole graph, validate, start/pause/archive, steps, enrollments,
blueprints, bad input and the schema.

Isolation for every route (Charlie's key, the read-only key, no key) is walked by tests/isolation; the
tests here add what a client of each endpoint would notice.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from campaigns.models import Campaign, Variant
from contacts.models import Contact
from journeys.models import Enrollment, EnrollmentStep, Journey, JourneyVersion, Step
from segments.models import Segment
from segments.services import segment_create
from tenants.audit import Actor
from tenants.context import tenant_context
from tenants.models import AuditLog, Tenant
from tests.conftest import World

pytestmark = pytest.mark.django_db

JOURNEYS = "/api/v1/journeys/"
ACTOR = Actor.system("test")


def email(**overrides: Any) -> dict[str, Any]:
    return {"name": "Everyone", "target": "default", "subject": "Hello", "html_body": "<p>Hi</p>", **overrides}


def wait(key: str, following: str | None, amount: int = 1, unit: str = "days") -> dict[str, Any]:
    return {"key": key, "kind": "wait", "config": {"duration": {"amount": amount, "unit": unit}},
            "exits": {"next": following}}  # fmt: skip


CART = {
    "name": "Abandoned cart",
    "trigger": "event",
    "trigger_event": "cart_abandoned",
    "trigger_filters": [{"property": "value", "op": "gt", "value": 50}],
    "entry": "cooldown",
    "cooldown_days": 1,
    "goal_event": "purchase",
    "steps": [
        {"key": "s1", "kind": "wait_event", "name": "Wait for a purchase",
         "config": {"event": "purchase", "timeout": {"amount": 1, "unit": "hours"}},
         "exits": {"happened": None, "timed_out": "s2"}},
        {"key": "s2", "kind": "send", "name": "Reminder", "config": {"channel": "email"}, "exits": {"next": "s3"},
         "content": {"variants": [email(subject="Hi {{ contact.first_name }}"),
                                  email(name="Leads", target="stage", target_stage="lead")],
                     "sender_name": "The Shop"}},
        wait("s3", "s4"),
        {"key": "s4", "kind": "branch", "name": "Agreed to texts?",
         "config": {"rules": {"all": [{"type": "consent", "channel": "sms", "purpose": "marketing",
                                       "status": "granted"}]}},
         "exits": {"yes": "s5", "no": None}},
        {"key": "s5", "kind": "send", "name": "SMS", "config": {"channel": "sms"}, "exits": {"next": None},
         "content": {"variants": [{"name": "All", "target": "default", "sms_body": "Your cart is waiting"}]}},
    ],
    "start_key": "s1",
}  # fmt: skip


def fields_of(response: Any) -> dict[str, Any]:
    """The field errors of a 400, after checking it has the one error shape."""
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert set(error) <= {"code", "message", "fields"} and error["code"] == "invalid" and error["message"]
    return error.get("fields", {})


def create(api: APIClient, **body: Any) -> dict[str, Any]:
    response = api.post(JOURNEYS, {**CART, **body}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def url(journey: dict[str, Any] | int, tail: str = "") -> str:
    pk = journey if isinstance(journey, int) else journey["id"]
    return f"{JOURNEYS}{pk}/{tail}"


def steps_by_key(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["key"]: step for step in body["steps"]}


def static_segment(tenant: Tenant, name: str) -> Segment:
    with tenant_context(tenant.id):
        return segment_create(tenant=tenant, actor=ACTOR, name=name, kind=Segment.Kind.STATIC)


def contact(tenant: Tenant, email_: str) -> Contact:
    with tenant_context(tenant.id):
        return Contact.objects.create(tenant=tenant, email=email_)


def enroll(tenant: Tenant, journey_id: int, person: Contact, key: str, **fields: Any) -> Enrollment:
    """An enrollment at step ``key`` of the journey's newest version, as the engine would leave it."""
    with tenant_context(tenant.id):
        version = JourneyVersion.objects.filter(journey_id=journey_id).order_by("-number").first()
        step = Step.objects.get(version=version, key=key)
        return Enrollment.objects.create(
            tenant=tenant, journey_id=journey_id, version=version, contact=person, step=step,
            entered_at=fields.pop("entered_at", timezone.now()), **fields,
        )  # fmt: skip


# --- create, read, update, delete ----------------------------------------------------------------------
def test_a_journey_is_created_from_json_with_its_whole_graph(world: World, api_a: APIClient):
    body = create(api_a)
    assert body["status"] == "draft" and body["live_version"] is None
    assert body["trigger_filters"] == CART["trigger_filters"] and body["cooldown_days"] == 1
    assert body["version"]["number"] == 1 and body["version"]["is_draft"] and body["version"]["start_key"] == "s1"
    assert body["counts"] == {
        "entered": 0, "active": 0, "completed": 0, "converted": 0, "exited": 0, "conversion_rate": 0.0
    }  # fmt: skip
    steps = steps_by_key(body)
    assert [s["key"] for s in body["steps"]] == ["s1", "s2", "s3", "s4", "s5"]
    assert steps["s1"]["exits"] == {"happened": None, "timed_out": "s2"} and steps["s1"]["content"] is None
    assert steps["s4"]["exits"] == {"yes": "s5", "no": None}
    content = steps["s2"]["content"]
    assert content["sender_name"] == "The Shop"
    # The variants in the campaigns API's shape, in order.
    assert [(v["name"], v["target"], v["target_stage"], v["position"]) for v in content["variants"]] == [
        ("Everyone", "default", "", 0),
        ("Leads", "stage", "lead", 1),
    ]
    assert {"id", "subject", "html_body", "weight", "target_segment", "cta_url"} <= set(content["variants"][0])
    assert steps["s3"]["figures"] == {"waiting": 0, "passed": 0, "converted": 0}
    with tenant_context(world.tenant_a.id):
        journey = Journey.objects.get(pk=body["id"])
        assert journey.created_by is None  # an API key, not a person
        hidden = Campaign.objects.filter(kind=Campaign.Kind.JOURNEY)
        assert hidden.count() == 2 and Variant.objects.filter(campaign__in=hidden).count() == 3
        assert AuditLog.objects.filter(action="journey.created", object_id=str(journey.pk)).exists()
    assert api_a.get(url(body)).json() == body
    # The hidden campaigns are no campaigns of the campaigns API.
    assert api_a.get("/api/v1/campaigns/").json()["results"] == []


def test_create_needs_a_name_and_checks_every_step_at_its_path(api_a: APIClient):
    assert fields_of(api_a.post(JOURNEYS, {"trigger_event": "x"}, format="json")) == {
        "name": ["This field is required."]
    }
    bad = {
        **CART,
        "steps": [
            wait("s1", "s2", amount=0),
            {"key": "s2", "kind": "send", "config": {"channel": "email"},
             "content": {"variants": [email(html_body="<p>{% if %}</p>")]}},
        ],
    }  # fmt: skip
    fields = fields_of(api_a.post(JOURNEYS, bad, format="json"))
    assert set(fields) == {"steps[0].config.duration"}
    bad["steps"][0] = wait("s1", "s2")
    fields = fields_of(api_a.post(JOURNEYS, bad, format="json"))
    assert list(fields) == ["steps[1].content.variants[0].html_body"]
    assert not Journey.all_tenants.exists()


def test_retrieve_patch_settings_and_replace_steps(world: World, api_a: APIClient):
    body = create(api_a)
    segment = static_segment(world.tenant_a, "VIPs")
    response = api_a.patch(url(body), {"entry_segment": segment.pk, "daily_cap": 500}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["entry_segment"] == segment.pk and response.json()["daily_cap"] == 500
    assert [s["key"] for s in response.json()["steps"]] == ["s1", "s2", "s3", "s4", "s5"]  # steps untouched
    s2_variants = steps_by_key(response.json())["s2"]["content"]["variants"]

    # Replacing the graph keeps a send step's message when its key and kind stay and content is left out.
    graph = {"steps": [{k: v for k, v in CART["steps"][1].items() if k != "content"} | {"exits": {"next": "s9"}},
                       wait("s9", None, amount=2)], "start_key": "s2"}  # fmt: skip
    response = api_a.patch(url(body), graph, format="json")
    assert response.status_code == 200, response.content
    replaced = response.json()
    assert replaced["version"]["start_key"] == "s2" and [s["key"] for s in replaced["steps"]] == ["s2", "s9"]
    assert steps_by_key(replaced)["s2"]["content"]["variants"] == s2_variants
    assert api_a.post(url(body, "validate/")).json() == {"valid": True, "problems": []}


def test_a_partial_update_still_checks_each_step_in_full(api_a: APIClient):
    body = create(api_a)
    fields = fields_of(api_a.patch(url(body), {"steps": [{"config": {}}]}, format="json"))
    assert fields == {"steps[0].key": ["This field is required."], "steps[0].kind": ["This field is required."]}
    fields = fields_of(api_a.patch(url(body), {"start_key": "s2"}, format="json"))
    assert list(fields) == ["start_key"]


def test_delete_a_draft_and_refuse_one_that_started(world: World, api_a: APIClient):
    body = create(api_a)
    assert api_a.delete(url(body)).status_code == 204
    assert not Journey.all_tenants.filter(pk=body["id"]).exists()
    assert not Campaign.all_tenants.filter(tenant=world.tenant_a, kind=Campaign.Kind.JOURNEY).exists()
    started = create(api_a, name="Started")
    assert api_a.post(url(started, "start/"), format="json").status_code == 200
    response = api_a.delete(url(started))
    assert response.status_code == 400
    assert "archive it instead" in response.json()["error"]["message"]


# --- validate, start, pause, archive -----------------------------------------------------------------------
def test_validate_lists_problems_and_start_refuses_with_them(api_a: APIClient):
    body = create(api_a)
    assert api_a.patch(url(body, "steps/s3/"), {"exits": {"next": None}}, format="json").status_code == 200
    api_a.patch(url(body, "steps/s2/"), {"content": {"variants": []}}, format="json")
    result = api_a.post(url(body, "validate/")).json()
    assert result["valid"] is False
    assert {"step": "s2", "field": "variants", "message": "Write the message: add at least one variant."} in result[
        "problems"
    ]
    assert {"step": "s4", "field": "", "message": "No path leads to this step."} in result["problems"]

    response = api_a.post(url(body, "start/"), {"migrate": False}, format="json")
    fields = fields_of(response)
    assert fields["problems"] == result["problems"]
    assert response.json()["error"]["message"] == "The journey cannot start: fix the problems first."
    assert api_a.get(url(body)).json()["status"] == "draft"


def test_start_pause_resume_and_archive(world: World, api_a: APIClient):
    body = create(api_a)
    started = api_a.post(url(body, "start/"), format="json")
    assert started.status_code == 200, started.content
    assert started.json()["status"] == "live" and started.json()["live_version"] == 1
    assert started.json()["version"]["is_draft"] is False
    assert api_a.post(url(body, "pause/")).json()["status"] == "paused"
    assert fields_of(api_a.post(url(body, "pause/"))) == {}  # only a live journey pauses
    assert api_a.post(url(body, "start/"), format="json").json()["status"] == "live"

    person = contact(world.tenant_a, "walker@a.example")
    enroll(world.tenant_a, body["id"], person, "s3")
    archived = api_a.post(url(body, "archive/"))
    assert archived.status_code == 200
    assert archived.json()["status"] == "archived" and archived.json()["exited"] == 1
    assert archived.json()["counts"]["exited"] == 1
    response = api_a.patch(url(body), {"name": "Again"}, format="json")
    assert "archived journey cannot be edited" in response.json()["error"]["message"]
    assert api_a.post(url(body, "steps/"), {"kind": "exit"}, format="json").status_code == 400
    assert api_a.post(url(body, "start/"), format="json").status_code == 400


def test_editing_a_live_journey_edits_a_draft_that_start_publishes_and_can_migrate(world: World, api_a: APIClient):
    body = create(api_a)
    api_a.post(url(body, "start/"), format="json")
    person = contact(world.tenant_a, "walker@a.example")
    enrollment = enroll(world.tenant_a, body["id"], person, "s3")
    # Reading a live journey creates no draft.
    assert api_a.get(url(body)).json()["version"] == {
        "number": 1, "start_key": "s1", "published_at": api_a.get(url(body)).json()["version"]["published_at"],
        "is_draft": False,
    }  # fmt: skip
    with tenant_context(world.tenant_a.id):
        assert JourneyVersion.objects.filter(journey_id=body["id"]).count() == 1

    changed = api_a.patch(
        url(body, "steps/s3/"), {"config": {"duration": {"amount": 3, "unit": "days"}}}, format="json"
    )
    assert changed.status_code == 200, changed.content
    detail = api_a.get(url(body)).json()
    assert detail["live_version"] == 1 and detail["version"]["number"] == 2 and detail["version"]["is_draft"]
    assert steps_by_key(detail)["s3"]["config"]["duration"]["amount"] == 3
    assert steps_by_key(detail)["s3"]["figures"]["waiting"] == 1  # figures follow the key across versions

    published = api_a.post(url(body, "start/"), {"migrate": True}, format="json")
    assert published.json()["live_version"] == 2
    with tenant_context(world.tenant_a.id):
        moved = Enrollment.objects.select_related("version", "step").get(pk=enrollment.pk)
        assert moved.version.number == 2 and moved.step.key == "s3"


# --- steps -----------------------------------------------------------------------------------------------
def test_steps_are_added_edited_moved_and_deleted(api_a: APIClient):
    body = create(api_a, name="Builder", steps=[], start_key=None)
    assert body["steps"] == [] and body["version"]["start_key"] == ""
    first = api_a.post(
        url(body, "steps/"), {"kind": "wait", "config": {"duration": {"amount": 1, "unit": "hours"}}}, format="json"
    )
    assert first.status_code == 201, first.content
    assert first.json()["key"] == "s1" and first.json()["exits"] == {"next": None}
    sent = api_a.post(
        url(body, "steps/"),
        {"kind": "send", "after": "s1", "name": "Mail", "config": {"channel": "email"},
         "content": {"variants": [email(subject="Hi {{ contact.nickname }}")]}},
        format="json",
    )  # fmt: skip
    assert sent.status_code == 201, sent.content
    assert sent.json()["key"] == "s2" and sent.json()["content"]["variants"][0]["subject"] == (
        "Hi {{ contact.nickname }}"
    )
    assert list(sent.json()["warnings"]) == ["variants[0].subject"]
    branch = api_a.post(
        url(body, "steps/"),
        {"kind": "branch", "after": "s1",
         "config": {"rules": {"all": [{"type": "field", "field": "country", "op": "eq", "value": "DE"}]}}},
        format="json",
    )  # fmt: skip
    assert branch.json()["key"] == "s3" and branch.json()["exits"] == {"yes": "s2", "no": None}

    renamed = api_a.patch(url(body, "steps/s2/"), {"name": "Welcome", "content": {"sender_name": "Ada"}}, format="json")
    assert renamed.status_code == 200, renamed.content
    assert renamed.json()["name"] == "Welcome" and renamed.json()["content"]["sender_name"] == "Ada"
    assert len(renamed.json()["content"]["variants"]) == 1  # content without variants keeps them
    assert renamed.json()["warnings"] == {"variants[0].subject": renamed.json()["warnings"]["variants[0].subject"]}

    moved = api_a.post(url(body, "steps/s1/move/"), {"after": "s2"}, format="json")
    assert moved.status_code == 200, moved.content
    detail = api_a.get(url(body)).json()
    assert detail["version"]["start_key"] == "s3"
    assert steps_by_key(detail)["s2"]["exits"] == {"next": "s1"}
    assert fields_of(api_a.post(url(body, "steps/s3/move/"), {"after": "s1"}, format="json")) == {
        "key": ["Only a step with one exit can move; delete and re-add a branch instead."]
    }

    deleted = api_a.delete(url(body, "steps/s3/") + "?keep=no")
    assert deleted.status_code == 200
    assert set(deleted.json()["deleted"]) == {"s1", "s2", "s3"}
    assert api_a.get(url(body)).json()["steps"] == []


def test_step_errors_name_their_field_and_unknown_keys_are_404(api_a: APIClient):
    body = create(api_a)
    assert api_a.patch(url(body, "steps/s99/"), {"name": "x"}, format="json").status_code == 404
    assert api_a.delete(url(body, "steps/s99/")).status_code == 404
    assert api_a.post(url(body, "steps/nope/move/"), {"after": None}, format="json").status_code == 404
    assert fields_of(api_a.post(url(body, "steps/"), {"kind": "wait", "after": "s99"}, format="json")) == {
        "config.duration": [
            'A duration: {"amount": a whole number ≥ 1, "unit": minutes, hours, days or weeks}, a year at most.'
        ]
    }
    wait_ = {"kind": "wait", "config": {"duration": {"amount": 1, "unit": "days"}}}
    assert list(fields_of(api_a.post(url(body, "steps/"), {**wait_, "after": "s99"}, format="json"))) == ["after"]
    assert list(
        fields_of(api_a.post(url(body, "steps/"), {**wait_, "after": "s4", "exit": "next"}, format="json"))
    ) == ["exit"]
    assert fields_of(api_a.post(url(body, "steps/"), {**wait_, "content": {"variants": []}}, format="json")) == {
        "content": ["Only a send step has content."]
    }
    assert fields_of(api_a.patch(url(body, "steps/s3/"), {"content": {"variants": []}}, format="json")) == {
        "content": ["Only a send step has content."]
    }
    assert list(fields_of(api_a.patch(url(body, "steps/s3/"), {"exits": {"next": "s3"}}, format="json"))) == [
        "exits.next"
    ]
    assert list(fields_of(api_a.patch(url(body, "steps/s3/"), {"kind": "send"}, format="json"))) == ["kind"]
    assert list(fields_of(api_a.delete(url(body, "steps/s4/") + "?keep=maybe"))) == ["keep"]
    assert list(fields_of(api_a.delete(url(body, "steps/s4/") + "?kept=no"))) == ["kept"]
    loop = fields_of(api_a.post(url(body, "steps/s1/move/"), {"after": "s3"}, format="json"))
    assert "key" in loop  # a two-exit step cannot move
    assert fields_of(api_a.post(url(body, "steps/s3/move/"), {"after": "s3"}, format="json")) == {
        "after": ["A step cannot follow itself."]
    }
    assert fields_of(api_a.post(url(body, "steps/s3/move/"), {}, format="json")) == {
        "after": ["This field is required."]
    }
    # Nothing changed.
    assert [s["key"] for s in api_a.get(url(body)).json()["steps"]] == ["s1", "s2", "s3", "s4", "s5"]


# --- list ------------------------------------------------------------------------------------------------
def test_the_list_counts_enrollments_filters_and_pages(world: World, api_a: APIClient, django_assert_max_num_queries):
    cart = create(api_a)
    other = create(api_a, name="Birthday", trigger="date_attribute", trigger_date_field="birth_date")
    create(api_a, name="Welcome")
    api_a.post(url(cart, "start/"), format="json")
    for index, status in enumerate(["active", "active", "converted", "exited"]):
        person = contact(world.tenant_a, f"p{index}@a.example")
        enroll(world.tenant_a, cart["id"], person, "s1", status=status)
    with django_assert_max_num_queries(8):  # key, journeys page, one counts query, the rest of the request
        listed = api_a.get(JOURNEYS)
    assert listed.status_code == 200
    rows = listed.json()["results"]
    assert [row["name"] for row in rows] == ["Abandoned cart", "Birthday", "Welcome"]
    assert rows[0]["counts"] == {
        "entered": 4, "active": 2, "completed": 0, "converted": 1, "exited": 1, "conversion_rate": 0.25
    }  # fmt: skip
    assert rows[0]["status"] == "live" and rows[0]["live_version"] == 1 and "steps" not in rows[0]
    assert rows[1]["trigger"] == "date_attribute" and rows[1]["counts"]["entered"] == 0
    assert [r["name"] for r in api_a.get(JOURNEYS, {"status": "live"}).json()["results"]] == ["Abandoned cart"]
    assert [r["id"] for r in api_a.get(JOURNEYS, {"search": "BIRTH"}).json()["results"]] == [other["id"]]
    first = api_a.get(JOURNEYS, {"page_size": 2}).json()
    assert [r["name"] for r in first["results"]] == ["Abandoned cart", "Birthday"] and first["next"]
    second = api_a.get(first["next"]).json()
    assert [r["name"] for r in second["results"]] == ["Welcome"] and second["next"] is None
    assert list(fields_of(api_a.get(JOURNEYS, {"status": "running"}))) == ["status"]
    assert list(fields_of(api_a.get(JOURNEYS, {"stauts": "live"}))) == ["stauts"]


# --- enrollments -----------------------------------------------------------------------------------------
def test_enrollments_list_and_detail_with_the_path(world: World, api_a: APIClient, api_b: APIClient):
    body = create(api_a)
    api_a.post(url(body, "start/"), format="json")
    early = timezone.now() - dt.timedelta(hours=3)
    walker = contact(world.tenant_a, "walker@a.example")
    done = contact(world.tenant_a, "done@a.example")
    active = enroll(world.tenant_a, body["id"], walker, "s2", seq=2, entered_at=early, step_entered_at=early)
    finished = enroll(
        world.tenant_a, body["id"], done, "s1", status="converted", seq=1, finished_at=timezone.now(),
        exit_reason="reached the goal",
    )  # fmt: skip
    with tenant_context(world.tenant_a.id):
        steps = {s.key: s for s in Step.objects.filter(version__journey_id=body["id"])}
        EnrollmentStep.objects.create(
            tenant=world.tenant_a, enrollment_id=active.pk, step_id=steps["s1"].pk, seq=1, entered_at=early,
            left_at=early + dt.timedelta(hours=1), outcome="timed_out",
        )  # fmt: skip
        EnrollmentStep.objects.create(
            tenant=world.tenant_a, enrollment_id=active.pk, step_id=steps["s2"].pk, seq=2,
            entered_at=early + dt.timedelta(hours=1), delivery_id=77,
        )  # fmt: skip

    listed = api_a.get(url(body, "enrollments/")).json()
    assert [row["id"] for row in listed["results"]] == [finished.pk, active.pk]
    row = listed["results"][1]
    assert row["contact_id"] == walker.pk and row["status"] == "active" and row["step_key"] == "s2"
    assert row["version"] == 1 and row["finished_at"] is None and "email" not in str(row)
    converted = api_a.get(url(body, "enrollments/"), {"status": "converted"}).json()["results"]
    assert [(r["id"], r["exit_reason"]) for r in converted] == [(finished.pk, "reached the goal")]
    paged = api_a.get(url(body, "enrollments/"), {"page_size": 1}).json()
    assert len(paged["results"]) == 1 and paged["next"]
    assert list(fields_of(api_a.get(url(body, "enrollments/"), {"status": "lost"}))) == ["status"]

    detail = api_a.get(url(body, f"enrollments/{active.pk}/")).json()
    assert [(p["seq"], p["key"], p["kind"], p["outcome"], p["delivery_id"]) for p in detail["path"]] == [
        (1, "s1", "wait_event", "timed_out", None),
        (2, "s2", "send", "", 77),
    ]
    assert detail["path"][0]["left_at"] is not None and detail["path"][1]["left_at"] is None
    # An enrollment of another journey, or another tenant's, is not found here.
    other = create(api_a, name="Other")
    assert api_a.get(url(other, f"enrollments/{active.pk}/")).status_code == 404
    assert api_a.get(url(body, "enrollments/99999999999999999999/")).status_code == 404
    assert api_b.get(url(body, f"enrollments/{active.pk}/")).status_code == 404


def test_detail_and_enrollments_read_in_a_fixed_number_of_queries(
    world: World, api_a: APIClient, django_assert_max_num_queries
):
    body = create(api_a)
    api_a.post(url(body, "start/"), format="json")
    api_a.patch(url(body, "steps/s3/"), {"name": "Wait a day"}, format="json")  # a draft and a live version
    for index in range(6):
        enroll(world.tenant_a, body["id"], contact(world.tenant_a, f"p{index}@a.example"), f"s{index % 5 + 1}")
    # The key, the journey, the draft, its steps with their variants, the figures and the counts.
    with django_assert_max_num_queries(13):
        detail = api_a.get(url(body))
    assert sum(step["figures"]["waiting"] for step in detail.json()["steps"]) == 6
    with django_assert_max_num_queries(5):
        enrollments = api_a.get(url(body, "enrollments/"))
    assert len(enrollments.json()["results"]) == 6


# --- blueprints --------------------------------------------------------------------------------------------
def test_blueprints_are_listed_and_start_journeys(world: World, api_a: APIClient):
    blueprints = api_a.get(JOURNEYS + "blueprints/").json()
    assert [b["key"] for b in blueprints] == [
        "welcome", "abandoned_cart", "post_purchase", "re_engagement", "lifecycle_nurture"
    ]  # fmt: skip
    assert all(b["name"] and b["description"] for b in blueprints)
    made = api_a.post(JOURNEYS + "from-blueprint/", {"blueprint": "re_engagement"}, format="json")
    assert made.status_code == 201, made.content
    assert made.json()["name"] == "Re-engagement (win-back and sunset)" and made.json()["status"] == "draft"
    with tenant_context(world.tenant_a.id):
        assert made.json()["trigger_segment"] == Segment.objects.get(name="No engagement for 60 days").pk
    assert api_a.post(url(made.json(), "validate/")).json()["valid"] is True
    again = api_a.post(JOURNEYS + "from-blueprint/", {"blueprint": "re_engagement"}, format="json")
    assert again.json()["name"] == "Re-engagement (win-back and sunset) (2)"
    named = api_a.post(JOURNEYS + "from-blueprint/", {"blueprint": "welcome", "name": "Hello"}, format="json")
    assert named.json()["name"] == "Hello" and len(named.json()["steps"]) == 5
    assert list(fields_of(api_a.post(JOURNEYS + "from-blueprint/", {"blueprint": "nope"}, format="json"))) == [
        "blueprint"
    ]


# --- keys and tenants --------------------------------------------------------------------------------------
def test_a_read_only_key_reads_but_every_write_is_403(world: World, api_a: APIClient, api_a_read: APIClient):
    body = create(api_a)
    assert api_a_read.get(url(body)).status_code == 200
    assert api_a_read.get(JOURNEYS).json()["results"][0]["id"] == body["id"]
    writes = [
        ("post", JOURNEYS, CART), ("patch", url(body), {"name": "x"}), ("delete", url(body), None),
        ("post", url(body, "validate/"), None), ("post", url(body, "start/"), None),
        ("post", url(body, "pause/"), None),
        ("post", url(body, "archive/"), None), ("post", url(body, "steps/"), {"kind": "exit"}),
        ("patch", url(body, "steps/s1/"), {"name": "x"}), ("delete", url(body, "steps/s1/"), None),
        ("post", url(body, "steps/s3/move/"), {"after": None}),
        ("post", JOURNEYS + "from-blueprint/", {"blueprint": "welcome"}),
    ]  # fmt: skip
    for verb, target, data in writes:
        response = getattr(api_a_read, verb)(target, data, format="json")
        assert response.status_code == 403, f"{verb} {target}"
        assert response.json()["error"]["code"] == "permission_denied"
    with tenant_context(world.tenant_a.id):
        assert Journey.objects.count() == 1
    assert api_a.get(url(body)).json()["name"] == "Abandoned cart"


def test_another_tenants_journeys_are_404_and_never_listed(world: World, api_a: APIClient, api_b: APIClient):
    body = create(api_a)
    assert api_b.get(JOURNEYS).json()["results"] == []
    for verb, tail, data in [
        ("get", "", None), ("patch", "", {"name": "Mine"}), ("delete", "", None), ("post", "start/", None),
        ("post", "validate/", None), ("post", "steps/", {"kind": "exit"}), ("patch", "steps/s1/", {"name": "x"}),
        ("delete", "steps/s1/", None), ("post", "steps/s3/move/", {"after": None}), ("get", "enrollments/", None),
    ]:  # fmt: skip
        response = getattr(api_b, verb)(url(body, tail), data, format="json")
        assert response.status_code == 404, f"{verb} {tail}"
        assert response.json() == {"error": {"code": "not_found", "message": "Not found."}}
    # Tenant A's segment is as unknown to B as a missing one.
    segment = static_segment(world.tenant_a, "A only")
    fields = fields_of(api_b.post(JOURNEYS, {**CART, "entry_segment": segment.pk}, format="json"))
    assert fields == {"entry_segment": ["No such segment in this workspace."]}
    # B's journey may share A's name: names are unique per workspace.
    assert api_b.post(JOURNEYS, CART, format="json").status_code == 201
    assert fields_of(api_a.post(JOURNEYS, CART, format="json")) == {"name": ["Another journey has this name."]}


# --- bad input ---------------------------------------------------------------------------------------------
JUNK_BODIES: list[Any] = [
    ["not", "an", "object"],
    "a string",
    {"name": ["x"], "trigger": "whenever", "cooldown_days": "ten", "daily_cap": 10**30, "entry_segment": "abc"},
    {"trigger_segment": 10**30, "exit_segment": -1, "trigger_filters": {"property": "x"}, "entry": 5},
    {"trigger_filters": ["x", 1, None], "trigger_stage": "royalty", "exit_on_consent_withdrawn": "pigeon"},
    {"steps": {"s1": {}}, "start_key": ["s1"]},
    {"steps": ["s1", 7, None, {"key": "s1", "kind": "teleport"}]},
    {"steps": [{"key": "s1", "kind": "wait", "config": {"duration": {"amount": 10**30, "unit": "days"}}}]},
    {"steps": [{"key": "s1", "kind": "wait", "config": {"duration": {"amount": 1.5, "unit": "eons"}}}]},
    {"steps": [{"key": "s1", "kind": "split", "config": {"paths": [{"label": ["a"], "weight": "x"}, 7]}}]},
    {"steps": [{"key": "s1", "kind": "wait_until", "config": {"weekdays": [[1], {}, 9], "time": 900}}]},
    {"steps": [{"key": "s1", "kind": "wait_event", "config": {"event": {}, "filters": "x", "timeout": []}}]},
    {"steps": [{"key": "s1", "kind": "branch", "config": {"rules": [1, {"all": "x"}]}}]},
    {"steps": [{"key": "s1", "kind": "update", "config": {"set_attributes": ["x"], "add_to_list": "tags"}}]},
    {"steps": [{"key": "s1", "kind": "webhook", "config": {"url": 7}, "exits": ["next"]}]},
    {"steps": [{"key": "s" * 500, "kind": "send", "config": {"channel": "fax"}, "exits": {"next": {"a": 1}},
                "content": {"variants": [{"id": 10**20, "weight": 10**9, "target_segment": "x"}, 7]}}]},
    {"steps": [{"key": "é", "kind": "send", "config": {"channel": "sms"}, "content": "hello"}]},
    {"kind": "teleport", "after": 7, "exit": ["next"], "config": [], "content": 5, "migrate": "perhaps"},
    {"kind": "send", "config": {"channel": "email"}, "content": {"variants": "all", "sender_email": "nope"}},
    {"after": {"$gt": ""}, "exit": None, "exits": "next", "name": {"x": 1}, "blueprint": 7},
    {"status": "live", "id": 3, "counts": {}, "keep": "x" * 100},
    # PostgreSQL's text and jsonb refuse U+0000 anywhere: a 400, not a database error.
    {"name": "a\x00", "trigger_filters": [{"property": "\x00", "op": "eq", "value": 1}]},
    {"steps": [{"key": "s1", "kind": "exit", "config": {"\x00": "\x00"}}]},
    {"config": {"rules": {"all": [{"\x00": 1}]}}, "exits": {"next\x00": None}, "kind": "wait"},
]  # fmt: skip


def test_junk_to_every_journey_route_is_a_4xx_and_changes_nothing(world: World, api_a: APIClient):
    body = create(api_a)
    person = contact(world.tenant_a, "walker@a.example")
    enrollment = enroll(world.tenant_a, body["id"], person, "s1")
    before = api_a.get(url(body)).json()
    targets = [
        JOURNEYS, url(body), url(body, "validate/"), url(body, "start/"), url(body, "steps/"), url(body, "steps/s3/"),
        url(body, "steps/s3/move/"), JOURNEYS + "from-blueprint/", url(body, "pause/"),
    ]  # fmt: skip
    for target in targets:
        for junk in JUNK_BODIES:
            for verb in ("post", "patch"):
                response = getattr(api_a, verb)(target, junk, format="json")
                assert response.status_code < 500, f"{verb.upper()} {target} {junk!r:.80}: {response.status_code}"
                if response.status_code == 400:
                    assert set(response.json()["error"]) <= {"code", "message", "fields"}
    for target in (JOURNEYS, url(body, "enrollments/"), url(body, f"enrollments/{enrollment.pk}/")):
        response = api_a.get(target, {"status": "nope", "cursor": "%%%", "page_size": "-1", "search": "\x00"})
        assert response.status_code < 500, target
    assert api_a.delete(url(body, "steps/s3/") + "?keep=%00").status_code < 500
    for verb, tail in [("patch", "steps/s%00/"), ("delete", "steps/s%00/"), ("post", "steps/s%00/move/"),
                       ("patch", "steps/" + "s" * 500 + "/")]:  # fmt: skip
        assert getattr(api_a, verb)(url(body, tail), {"after": None}, format="json").status_code == 404, tail
    deep: Any = {"all": []}
    for _ in range(60):
        deep = {"not": deep}
    too_deep = api_a.patch(url(body, "steps/s4/"), {"config": {"rules": deep}}, format="json")
    assert too_deep.status_code == 400
    after = api_a.get(url(body)).json()
    assert after["steps"] == before["steps"] and after["name"] == before["name"]


def test_strings_and_huge_numbers_are_field_errors(api_a: APIClient):
    fields = fields_of(
        api_a.post(JOURNEYS, {**CART, "cooldown_days": "ten", "daily_cap": 10**30, "trigger_segment": 10**30},
                   format="json")
    )  # fmt: skip
    assert set(fields) == {"cooldown_days", "daily_cap", "trigger_segment"}
    fields = fields_of(api_a.post(JOURNEYS, {**CART, "steps": [{"key": "s1", "kind": "teleport"}]}, format="json"))
    assert fields == {"steps[0].kind": ['"teleport" is not a valid choice.']}
    fields = fields_of(api_a.post(JOURNEYS, {**CART, "colour": "red", "status": "live"}, format="json"))
    assert fields == {"colour": ["Unknown field."], "status": ["This field is read-only."]}
    assert api_a.get(JOURNEYS).json()["results"] == []
    # A number where a step key goes is read as the key "5"; the graph check names the exit.
    body = create(api_a, steps=[{**wait("s1", None), "exits": {"next": 5}}])
    assert steps_by_key(body)["s1"]["exits"] == {"next": "5"}
    assert api_a.post(url(body, "validate/")).json()["problems"] == [
        {"step": "s1", "field": "exits.next", "message": "Exit 'next' leads to a missing step."}
    ]


def test_an_update_step_naming_a_list_as_its_attribute_is_a_400(api_a: APIClient):
    config = {"add_to_list": {"attribute": ["tags"], "values": ["vip"]}}
    response = api_a.post(
        JOURNEYS, {**CART, "steps": [{"key": "s1", "kind": "update", "config": config}]}, format="json"
    )
    assert list(fields_of(response)) == ["steps[0].config.add_to_list.attribute"]


def test_bad_trigger_filters_are_refused(api_a: APIClient):
    filters = [{"property": {"a": 1}, "op": "bigger", "value": 50}]
    fields = fields_of(api_a.post(JOURNEYS, {**CART, "trigger_filters": filters}, format="json"))
    assert any(path.startswith("trigger_filters") for path in fields)


# --- the schema --------------------------------------------------------------------------------------------
def test_openapi_documents_every_journeys_endpoint(db, tmp_path):
    from django.core.management import call_command

    response = APIClient().get("/api/schema/?format=json")
    assert response.status_code == 200
    document = response.json()
    paths = document["paths"]
    expected = {
        "/api/v1/journeys/": {"get", "post"},
        "/api/v1/journeys/{journey_id}/": {"get", "patch", "delete"},
        "/api/v1/journeys/{journey_id}/validate/": {"post"},
        "/api/v1/journeys/{journey_id}/start/": {"post"},
        "/api/v1/journeys/{journey_id}/pause/": {"post"},
        "/api/v1/journeys/{journey_id}/archive/": {"post"},
        "/api/v1/journeys/{journey_id}/steps/": {"post"},
        "/api/v1/journeys/{journey_id}/steps/{step_key}/": {"patch", "delete"},
        "/api/v1/journeys/{journey_id}/steps/{step_key}/move/": {"post"},
        "/api/v1/journeys/{journey_id}/enrollments/": {"get"},
        "/api/v1/journeys/{journey_id}/enrollments/{enrollment_id}/": {"get"},
        "/api/v1/journeys/blueprints/": {"get"},
        "/api/v1/journeys/from-blueprint/": {"post"},
    }
    for path, verbs in expected.items():
        assert set(paths[path]) - {"parameters"} == verbs, path
        for verb in verbs:
            assert paths[path][verb]["description"], (path, verb)
    schemas = document["components"]["schemas"]
    create_body = paths["/api/v1/journeys/"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert create_body == {"$ref": "#/components/schemas/JourneyWriteRequest"}
    assert paths["/api/v1/journeys/"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert {"steps", "start_key", "trigger_segment", "entry_segment", "exit_segment"} <= set(
        schemas["JourneyWriteRequest"]["properties"]
    )
    # A send step's content reuses the campaigns API's variant shape.
    content = schemas["JourneyStepContent"]["properties"]["variants"]
    assert content["items"] == {"$ref": "#/components/schemas/VariantOutput"}
    assert schemas["JourneyStepContentWriteRequest"]["properties"]["variants"]["items"] == {
        "$ref": "#/components/schemas/VariantRequest"
    }
    assert set(schemas["JourneyStepKindEnum"]["enum"]) == {
        "send", "wait", "wait_until", "wait_event", "branch", "split", "update", "webhook", "exit"
    }  # fmt: skip
    enrollments = paths["/api/v1/journeys/{journey_id}/enrollments/"]["get"]
    assert {"status", "cursor"} <= {p["name"] for p in enrollments["parameters"]}
    # The whole schema (every app's endpoints) still generates without a warning.
    call_command("spectacular", "--fail-on-warn", "--validate", "--file", str(tmp_path / "schema.yaml"))
