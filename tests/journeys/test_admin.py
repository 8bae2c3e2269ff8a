"""The platform admin for journeys: settings saved through the services within the journey's tenant, the steps
and problems shown, state actions through the services, draft steps checked on save, read-only enrollments."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from django.contrib.admin.sites import site
from django.db import models
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from contacts.models import Contact
from journeys.models import Enrollment, EnrollmentStep, Journey, JourneyVersion, Step, WebhookNotice
from journeys.services import journey_from_blueprint, journey_start, step_update
from segments.models import Segment
from segments.services import segment_create
from tenants.admin import PlatformAdmin
from tenants.audit import Actor
from tenants.context import platform_access, tenant_context
from tenants.models import AuditLog, Tenant, User
from tests.conftest import World

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("test")
MODELS: list[type[models.Model]] = [Journey, JourneyVersion, Step, Enrollment, EnrollmentStep, WebhookNotice]


@pytest.fixture
def staff_client(world: World) -> Client:
    staff = User.objects.create_superuser("staff@segmentor.example", "a-long-password")
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture(autouse=True)
def as_platform():
    """The test itself reads every tenant's rows, as the admin does (row-level security applies to tests too)."""
    with platform_access():
        yield


def admin_url(model: type[models.Model], view: str, *args: Any) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def fill(tenant: Tenant) -> Journey:
    """A started abandoned-cart journey with a contact walking it (two steps taken) and a webhook notice."""
    with tenant_context(tenant.id):
        journey = journey_from_blueprint(tenant=tenant, actor=ACTOR, blueprint="abandoned_cart")
        journey = journey_start(journey=journey, actor=ACTOR)
        steps = {s.key: s for s in Step.objects.filter(version=journey.live_version)}
        contact = Contact.objects.create(tenant=tenant, email=f"walker@{tenant.slug}.example")
        early = timezone.now() - dt.timedelta(hours=2)
        enrollment = Enrollment.objects.create(
            tenant=tenant, journey=journey, version=journey.live_version, contact=contact, step=steps["s2"], seq=2,
            entered_at=early,
        )  # fmt: skip
        EnrollmentStep.objects.create(
            tenant=tenant, enrollment_id=enrollment.pk, step_id=steps["s1"].pk, seq=1, entered_at=early,
            left_at=early + dt.timedelta(hours=1), outcome="timed_out",
        )  # fmt: skip
        EnrollmentStep.objects.create(
            tenant=tenant, enrollment_id=enrollment.pk, step_id=steps["s2"].pk, seq=2,
            entered_at=early + dt.timedelta(hours=1), delivery_id=4242,
        )  # fmt: skip
        WebhookNotice.objects.create(
            tenant=tenant, enrollment_id=enrollment.pk, step_id=steps["s2"].pk, seq=3, url="https://hooks.example/x",
            payload={"journey": journey.pk}, next_attempt_at=timezone.now(),
        )  # fmt: skip
        return journey


@pytest.fixture
def filled(world: World) -> tuple[Journey, Journey]:
    return fill(world.tenant_a), fill(world.tenant_b)


def journey_form(tenant: Tenant, **changes: Any) -> dict[str, Any]:
    """The add/change form of a journey, as a browser posts it."""
    data: dict[str, Any] = {
        "tenant": tenant.pk, "name": "Admin journey", "description": "", "trigger": "event",
        "trigger_segment": "", "trigger_event": "signed_up", "trigger_filters": "[]", "trigger_stage": "",
        "trigger_date_field": "", "entry": "once", "cooldown_days": 0, "entry_segment": "", "daily_cap": 0,
        "goal_event": "purchase", "exit_segment": "", "exit_on_consent_withdrawn": "", "purpose": "marketing",
    }  # fmt: skip
    return {**data, **changes}


def step_form(step: Step, **changes: Any) -> dict[str, Any]:
    data = {"name": step.name, "config": json.dumps(step.config), "exits": json.dumps(step.exits)}
    return {**data, **{k: json.dumps(v) if k in ("config", "exits") else v for k, v in changes.items()}}


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_every_journeys_model_is_registered_with_the_platform_admin():
    for model in MODELS:
        assert isinstance(site._registry[model], PlatformAdmin), model


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m._meta.model_name)
def test_changelists_and_change_pages_render_every_tenants_rows(
    world: World, staff_client: Client, filled, model: type[models.Model], django_assert_max_num_queries
):
    with django_assert_max_num_queries(25):
        changelist = staff_client.get(admin_url(model, "changelist"))
    assert changelist.status_code == 200
    assert {row.tenant_id for row in changelist.context["cl"].result_list} == {world.tenant_a.id, world.tenant_b.id}
    row = model.all_tenants.order_by("pk").first()  # type: ignore[attr-defined]
    assert staff_client.get(admin_url(model, "change", row.pk)).status_code == 200


def test_a_journey_page_shows_its_steps_and_what_stops_it(world: World, staff_client: Client, filled):
    journey, _ = filled
    body = staff_client.get(admin_url(Journey, "change", journey.pk)).content.decode()
    assert "Version 1 (live), first step s1." in body
    assert "Wait 1 hour for a purchase" in body and "Cart reminder SMS" in body and "1 variant(s)" in body
    assert "Nothing: it can start." in body
    with tenant_context(world.tenant_a.id):
        step_update(journey=journey, actor=ACTOR, key="s3", data={"exits": {"next": None}})
    body = staff_client.get(admin_url(Journey, "change", journey.pk)).content.decode()
    assert "Version 2 (draft), first step s1." in body
    assert "step s4 · No path leads to this step." in body


def test_adding_a_journey_goes_through_the_service_in_its_tenant(world: World, staff_client: Client, filled):
    with tenant_context(world.tenant_a.id):
        segment = segment_create(tenant=world.tenant_a, actor=ACTOR, name="VIPs", kind=Segment.Kind.STATIC)
    assert staff_client.get(admin_url(Journey, "add")).status_code == 200
    data = journey_form(world.tenant_a, entry_segment=segment.pk, trigger_filters='[{"property": "plan", '
                        '"op": "eq", "value": "pro"}]')  # fmt: skip
    response = staff_client.post(admin_url(Journey, "add"), data)
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    journey = Journey.all_tenants.get(name="Admin journey")
    assert journey.tenant_id == world.tenant_a.id and journey.entry_segment_id == segment.pk
    assert journey.created_by is not None and journey.created_by.email == "staff@segmentor.example"
    assert JourneyVersion.all_tenants.filter(journey=journey, number=1).exists()
    assert AuditLog.all_tenants.filter(tenant=world.tenant_a, action="journey.created", object_id=str(journey.pk))

    response = staff_client.post(admin_url(Journey, "change", journey.pk), journey_form(world.tenant_a, daily_cap=50))
    assert response.status_code == 302
    assert Journey.all_tenants.get(pk=journey.pk).daily_cap == 50
    assert AuditLog.all_tenants.filter(tenant=world.tenant_a, action="journey.updated", object_id=str(journey.pk))


def test_settings_are_checked_as_the_services_check_them(world: World, staff_client: Client, filled):
    with tenant_context(world.tenant_b.id):
        segment_b = segment_create(tenant=world.tenant_b, actor=ACTOR, name="B only", kind=Segment.Kind.STATIC)
    response = staff_client.post(admin_url(Journey, "add"), journey_form(world.tenant_a, exit_segment=segment_b.pk))
    assert response.context["adminform"].form.errors["exit_segment"] == ["No such segment in this workspace."]
    response = staff_client.post(admin_url(Journey, "add"), journey_form(world.tenant_a, trigger_event=""))
    assert response.context["adminform"].form.errors["trigger_event"] == ["Name the event that starts the journey."]
    response = staff_client.post(admin_url(Journey, "add"), journey_form(world.tenant_a, entry="cooldown"))
    assert response.context["adminform"].form.errors["cooldown_days"] == ["A cooldown is at least one day."]
    response = staff_client.post(
        admin_url(Journey, "add"), journey_form(world.tenant_a, trigger="date_attribute", trigger_date_field="x")
    )
    assert "Choose a date field: birth_date." in response.context["adminform"].form.errors["trigger_date_field"]
    response = staff_client.post(admin_url(Journey, "add"), journey_form(world.tenant_a, name=filled[0].name))
    assert response.context["adminform"].form.errors["name"] == ["Another journey has this name."]
    assert not Journey.all_tenants.filter(name="Admin journey").exists()


def test_start_pause_and_archive_actions_go_through_the_services(world: World, staff_client: Client, filled):
    journey_a, journey_b = filled
    changelist = admin_url(Journey, "changelist")
    response = staff_client.post(
        changelist, {"action": "pause_journeys", "_selected_action": [journey_a.pk, journey_b.pk]}, follow=True
    )
    assert "Paused 2 journey(s)." in messages_of(response)
    assert set(Journey.all_tenants.values_list("status", flat=True)) == {"paused"}
    assert AuditLog.all_tenants.filter(tenant=world.tenant_a, action="journey.paused").exists()

    with tenant_context(world.tenant_b.id):  # B's draft gets a loose end: it cannot start
        step_update(journey=journey_b, actor=ACTOR, key="s3", data={"exits": {"next": None}})
    response = staff_client.post(
        changelist, {"action": "start_journeys", "_selected_action": [journey_a.pk, journey_b.pk]}, follow=True
    )
    notes = messages_of(response)
    assert "Started 1 journey(s)." in notes
    assert any(n.startswith(f"Left {journey_b.name}: ") and "No path leads to this step." in n for n in notes)
    assert Journey.all_tenants.get(pk=journey_a.pk).status == "live"
    assert Journey.all_tenants.get(pk=journey_b.pk).status == "paused"

    response = staff_client.post(
        changelist, {"action": "archive_journeys", "_selected_action": [journey_a.pk]}, follow=True
    )
    assert "Archived 1 journey(s)." in messages_of(response)
    enrollment = Enrollment.all_tenants.get(journey=journey_a)
    assert enrollment.status == "exited" and enrollment.exit_reason == "journey archived"


def test_archived_and_started_journeys_are_protected(world: World, staff_client: Client, filled):
    journey, _ = filled
    assert staff_client.get(admin_url(Journey, "delete", journey.pk)).status_code == 403
    changelist = staff_client.get(admin_url(Journey, "changelist")).content.decode()
    assert 'value="delete_selected"' not in changelist and 'value="start_journeys"' in changelist
    Journey.all_tenants.filter(pk=journey.pk).update(status="archived")
    page = staff_client.get(admin_url(Journey, "change", journey.pk))
    assert page.status_code == 200 and b'name="_save"' not in page.content
    response = staff_client.post(admin_url(Journey, "change", journey.pk), journey_form(world.tenant_a))
    assert response.status_code == 403 and Journey.all_tenants.get(pk=journey.pk).name != "Admin journey"


def test_a_draft_journey_is_deleted_with_its_hidden_campaigns(world: World, staff_client: Client, filled):
    from campaigns.models import Campaign

    with tenant_context(world.tenant_a.id):
        draft = journey_from_blueprint(tenant=world.tenant_a, actor=ACTOR, blueprint="welcome")
    hidden = set(Step.all_tenants.filter(version__journey=draft).values_list("campaign_id", flat=True))
    response = staff_client.post(admin_url(Journey, "delete", draft.pk), {"post": "yes"})
    assert response.status_code == 302
    assert not Journey.all_tenants.filter(pk=draft.pk).exists()
    assert not Campaign.all_tenants.filter(pk__in=hidden).exists()
    assert AuditLog.all_tenants.filter(tenant=world.tenant_a, action="journey.deleted").exists()


def test_a_draft_step_is_checked_and_saved_through_the_service(world: World, staff_client: Client, filled):
    journey, _ = filled
    live_step = Step.all_tenants.get(version=journey.live_version, key="s3")
    # A published step is read-only: the live version stays as it was published.
    response = staff_client.post(admin_url(Step, "change", live_step.pk), step_form(live_step, name="Changed"))
    assert response.status_code == 403
    with tenant_context(world.tenant_a.id):
        step_update(journey=journey, actor=ACTOR, key="s3", data={"name": "Wait a day"})
    draft_step = Step.all_tenants.get(version__journey=journey, version__published_at__isnull=True, key="s3")

    bad = staff_client.post(
        admin_url(Step, "change", draft_step.pk),
        step_form(draft_step, config={"duration": {"amount": 0, "unit": "days"}}, exits={"next": "s9", "maybe": None}),
    )
    errors = bad.context["adminform"].form.errors
    assert errors["config"] == [
        'config.duration: A duration: {"amount": a whole number ≥ 1, "unit": minutes, hours, days or weeks}, '
        "a year at most."
    ]
    assert any("no exit 'maybe'" in e for e in errors["exits"])
    assert any("Exit 'next'" in e for e in errors["exits"])

    nul = staff_client.post(
        admin_url(Step, "change", draft_step.pk), step_form(draft_step, config={"duration": {"unit": "days\x00"}})
    )
    assert nul.context["adminform"].form.errors["config"] == ["NUL characters (U+0000) cannot be stored."]

    good = staff_client.post(
        admin_url(Step, "change", draft_step.pk),
        step_form(draft_step, name="Wait two days", config={"duration": {"amount": 2, "unit": "days"}}),
    )
    assert good.status_code == 302, good.context and good.context["adminform"].form.errors
    saved = Step.all_tenants.get(pk=draft_step.pk)
    assert saved.name == "Wait two days" and saved.config["duration"]["amount"] == 2
    assert Step.all_tenants.get(pk=live_step.pk).config["duration"]["amount"] == 1
    assert AuditLog.all_tenants.filter(tenant=world.tenant_a, action="journey.step_updated").count() == 2
    assert staff_client.get(admin_url(Step, "add")).status_code == 403


def test_enrollments_are_read_only_filter_and_show_the_path(world: World, staff_client: Client, filled):
    journey, _ = filled
    enrollment = Enrollment.all_tenants.get(journey=journey)
    body = staff_client.get(admin_url(Enrollment, "change", enrollment.pk)).content.decode()
    assert "Wait 1 hour for a purchase" in body and "timed_out" in body and "4242" in body
    assert "Cart reminder email" in body
    listed = staff_client.get(
        admin_url(Enrollment, "changelist") + f"?status__exact=active&journey__id__exact={journey.pk}"
    )
    assert [row.pk for row in listed.context["cl"].result_list] == [enrollment.pk]
    assert (
        staff_client.get(admin_url(Enrollment, "changelist") + "?status__exact=converted")
        .context["cl"]
        .result_list.count()
        == 0
    )
    assert staff_client.get(admin_url(Enrollment, "add")).status_code == 403
    assert staff_client.post(admin_url(Enrollment, "change", enrollment.pk), {"status": "converted"}).status_code == 403
    notice = WebhookNotice.all_tenants.filter(tenant=world.tenant_a).first()
    assert staff_client.post(admin_url(WebhookNotice, "change", notice.pk), {"status": "sent"}).status_code == 403
    assert WebhookNotice.all_tenants.get(pk=notice.pk).status == "pending"


def test_tenant_members_are_not_let_into_the_journeys_admin(world: World, alice_client: Client, filled):
    response = alice_client.get(admin_url(Journey, "changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
