"""The platform admin for segments: a JSON rule editor validated on save, a live count, read-only materialised rows."""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

import pytest
from django.contrib.admin.sites import site
from django.db import models
from django.test import Client
from django.urls import reverse

from contacts.models import Contact
from segments.models import RfmScore, Segment, SegmentMember, SegmentSize, SegmentTransition
from segments.services import rfm_recompute, segment_create, segment_refresh
from segments.tasks import refresh_segment
from tenants.admin import PlatformAdmin
from tenants.audit import Actor
from tenants.context import platform_access, tenant_context
from tenants.models import AuditLog, Tenant, User
from tests.conftest import World

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("test")
GERMANS = {"all": [{"type": "field", "field": "country", "op": "eq", "value": "DE"}]}
MATERIALISED: list[type[models.Model]] = [SegmentMember, SegmentTransition, SegmentSize, RfmScore]
PREVIEW = "/admin/segments/segment/preview/"


@pytest.fixture
def staff_client(world: World) -> Client:
    staff = User.objects.create_superuser("staff@segmentor.example", "a-long-password")
    client = Client()
    client.force_login(staff)
    return client


def fill(tenant: Tenant, countries: tuple[str, ...]) -> Segment:
    """Contacts, a refreshed dynamic segment, a static one, and RFM scores for ``tenant``."""
    with tenant_context(tenant.id):
        for i, country in enumerate(countries):
            Contact.objects.create(
                tenant=tenant, email=f"c{i}@{tenant.slug}.example", country=country, order_count=i + 1,
                total_revenue=10 * (i + 1), last_order_at="2026-11-01T00:00:00Z",
            )  # fmt: skip
        segment = segment_create(tenant=tenant, actor=ACTOR, name="Germans", rules=GERMANS)
        segment_refresh(segment=segment)
        segment_create(tenant=tenant, actor=ACTOR, name="Hand-picked", kind=Segment.Kind.STATIC)
        rfm_recompute(tenant=tenant)
        segment.refresh_from_db()
        return segment


@pytest.fixture
def filled(world: World) -> tuple[Segment, Segment]:
    return fill(world.tenant_a, ("DE", "DE", "FR")), fill(world.tenant_b, ("DE", "GB"))


@pytest.fixture(autouse=True)
def as_platform():
    """The test itself reads every tenant's rows, as the admin does (row-level security applies to tests too)."""
    with platform_access():
        yield


def admin_url(model: type[models.Model], view: str, *args: Any) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def change_data(segment: Segment, **changes: Any) -> dict[str, Any]:
    data = {"name": segment.name, "description": segment.description, "rules": json.dumps(segment.rules)}
    return {**data, **changes}


def test_every_segments_model_is_registered_with_the_platform_admin():
    for model in (Segment, *MATERIALISED):
        assert isinstance(site._registry[model], PlatformAdmin), model


@pytest.mark.parametrize("model", [Segment, *MATERIALISED], ids=lambda m: m._meta.model_name)
def test_staff_see_every_tenants_rows(
    world: World, staff_client: Client, filled, model: type[models.Model], django_assert_max_num_queries
):
    with django_assert_max_num_queries(20):
        changelist = staff_client.get(admin_url(model, "changelist"))
    assert changelist.status_code == 200
    body = changelist.content.decode()
    assert "Tenant A" in body and "Tenant B" in body
    row = model.all_tenants.order_by("pk").first()  # type: ignore[attr-defined]
    assert staff_client.get(admin_url(model, "change", row.pk)).status_code == 200


@pytest.mark.parametrize("model", MATERIALISED, ids=lambda m: m._meta.model_name)
def test_materialised_rows_are_read_only(world: World, staff_client: Client, filled, model: type[models.Model]):
    row = model.all_tenants.order_by("pk").first()  # type: ignore[attr-defined]
    assert staff_client.get(admin_url(model, "add")).status_code == 403
    assert staff_client.get(admin_url(model, "delete", row.pk)).status_code == 403
    assert b'name="_save"' not in staff_client.get(admin_url(model, "change", row.pk)).content
    assert staff_client.post(admin_url(model, "change", row.pk), {"size": 1}).status_code == 403


def test_the_segment_page_has_the_json_editor_and_links_to_its_rows(world: World, staff_client: Client, filled):
    segment, _ = filled
    body = staff_client.get(admin_url(Segment, "change", segment.pk)).content.decode()
    assert 'src="/static/js/segment-admin.js"' in body
    assert f'data-tenant="{world.tenant_a.id}"' in body and f'data-segment="{segment.pk}"' in body
    assert f'data-preview-url="{PREVIEW}"' in body and 'id="id_rules_preview"' in body
    assert "&quot;country&quot;" in body  # the tree, as indented JSON
    members_url = admin_url(SegmentMember, "changelist") + f"?segment__id__exact={segment.pk}"
    assert f'href="{members_url}">2 members</a>' in body
    members = staff_client.get(members_url)
    assert {m.segment_id for m in members.context["cl"].result_list} == {segment.pk}
    assert len(members.context["cl"].result_list) == 2


def test_saving_bad_rules_shows_each_error_with_its_path(world: World, staff_client: Client, filled):
    segment, _ = filled
    rules = {"all": [{"type": "field", "field": "country", "op": "eq", "value": "Germany"}, {"any": []}]}
    response = staff_client.post(
        admin_url(Segment, "change", segment.pk), change_data(segment, rules=json.dumps(rules))
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["rules"] == [
        "all.0.value: 'Germany' is not an ISO 3166 country code (e.g. DE).",
        "all.1.any: This group is empty: add a condition or remove the group.",
    ]
    segment.refresh_from_db()
    assert segment.rules == GERMANS and segment.version == 1


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{not json", "Enter a valid JSON."),
        ('{"all": [' * 30 + "]}" * 30, "The JSON nests more than 40 levels deep."),
        ("[" * 100_000 + "]" * 100_000, "The JSON nests more than 40 levels deep."),
        ('{"type": "field"}', "rules: The top of a rule tree is a group: all, any or not."),
    ],
)
def test_text_that_is_not_a_tree_is_an_error_on_the_form(world: World, staff_client: Client, filled, text, error):
    segment, _ = filled
    response = staff_client.post(admin_url(Segment, "change", segment.pk), change_data(segment, rules=text))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["rules"] == [error]


def test_saving_good_rules_goes_through_the_service(
    world: World, staff_client: Client, filled, django_capture_on_commit_callbacks
):
    segment, _ = filled
    rules = {"all": [{"type": "field", "field": "country", "op": "in", "value": ["DE", "FR"]}]}
    with mock.patch.object(refresh_segment, "delay") as delay, django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            admin_url(Segment, "change", segment.pk), change_data(segment, name="DACH+FR", rules=json.dumps(rules))
        )
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    segment.refresh_from_db()
    assert (segment.name, segment.rules, segment.version, segment.tenant_id) == ("DACH+FR", rules, 2, world.tenant_a.id)
    delay.assert_called_once_with(world.tenant_a.id, segment.pk)
    assert AuditLog.all_tenants.filter(
        action="segment.updated", object_id=str(segment.pk), actor_label="staff@segmentor.example"
    ).exists()


def test_the_tenant_and_kind_of_a_segment_cannot_change(world: World, staff_client: Client, filled):
    segment, _ = filled
    data = change_data(segment, tenant=world.tenant_b.id, kind="static")
    assert staff_client.post(admin_url(Segment, "change", segment.pk), data).status_code == 302
    segment.refresh_from_db()
    assert (segment.tenant_id, segment.kind) == (world.tenant_a.id, "dynamic")


def test_adding_a_segment_checks_the_name_and_rules_within_its_tenant(world: World, staff_client: Client, filled):
    add = admin_url(Segment, "add")
    taken = {"tenant": world.tenant_a.id, "name": "Germans", "kind": "dynamic", "rules": json.dumps(GERMANS)}
    response = staff_client.post(add, taken)
    assert response.status_code == 200
    assert response.context["adminform"].form.non_field_errors() == [
        "Segment with this Tenant and Name already exists."
    ]
    foreign = {"all": [{"type": "segment", "op": "in", "segment": filled[1].pk}]}  # tenant B's segment
    response = staff_client.post(add, {**taken, "name": "Other", "rules": json.dumps(foreign)})
    assert response.context["adminform"].form.errors["rules"] == [
        f"all.0.segment: No segment with id {filled[1].pk} in this workspace."
    ]
    static = {**taken, "name": "Listed", "kind": "static"}
    assert staff_client.post(add, static).context["adminform"].form.errors["rules"] == [
        "A static segment has no rules: leave this empty."
    ]
    created = staff_client.post(add, {**taken, "name": "Germans too", "description": "Again"})
    assert created.status_code == 302
    segment = Segment.all_tenants.get(tenant=world.tenant_a, name="Germans too")
    assert segment.created_by.email == "staff@segmentor.example" and segment.rules == GERMANS
    assert AuditLog.all_tenants.filter(action="segment.created", object_id=str(segment.pk)).exists()
    listed = staff_client.post(add, {**static, "rules": ""})
    assert listed.status_code == 302
    assert Segment.all_tenants.get(tenant=world.tenant_a, name="Listed").rules == {}


def test_the_live_count_counts_inside_the_segments_tenant_only(world: World, staff_client: Client, filled):
    segment, _ = filled
    response = staff_client.post(
        PREVIEW, {"tenant": world.tenant_a.id, "segment": segment.pk, "rules": GERMANS}, content_type="application/json"
    )
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2 and body["errors"] == [] and len(body["sample"]) == 2
    assert all(row["email"].endswith("@tenant-a.example") for row in body["sample"]), body["sample"]
    tenant_b = staff_client.post(
        PREVIEW, {"tenant": world.tenant_b.id, "rules": GERMANS}, content_type="application/json"
    )
    assert tenant_b.json()["count"] == 1
    bad = {"tenant": world.tenant_a.id, "rules": {"all": [{"type": "field", "field": "country; DROP"}]}}
    errors = staff_client.post(PREVIEW, bad, content_type="application/json").json()["errors"]
    assert errors == [{"path": "all.0.field", "message": "Unknown contact field 'country; DROP'."}]
    cycle = {"tenant": world.tenant_a.id, "segment": segment.pk,
             "rules": {"all": [{"type": "segment", "op": "in", "segment": segment.pk}]}}  # fmt: skip
    [error] = staff_client.post(PREVIEW, cycle, content_type="application/json").json()["errors"]
    assert "cannot include itself" in error["message"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("{not json", 400),
        ("[" * 100_000 + "]" * 100_000, 400),
        ('{"tenant": ' + "[" * 50 + "]" * 50 + "}", 400),
        ('{"rules": {"all": []}}', 400),
        ('{"tenant": "1", "rules": {"all": []}}', 400),
        ('{"tenant": 999999999, "rules": {"all": []}}', 400),
        ('{"tenant": 99999999999999999999, "rules": {"all": []}}', 400),
        ("[]", 400),
    ],
)
def test_the_live_count_refuses_bad_bodies(world: World, staff_client: Client, body: str, status: int):
    response = staff_client.generic("POST", PREVIEW, body, content_type="application/json")
    assert response.status_code == status and response.json()["error"]


def test_the_live_count_is_for_staff_only(world: World, alice_client: Client, staff_client: Client):
    assert staff_client.get(PREVIEW).status_code == 405
    body = {"tenant": world.tenant_a.id, "rules": GERMANS}
    response = alice_client.post(PREVIEW, body, content_type="application/json")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert Client().post(PREVIEW, body, content_type="application/json").status_code == 302
    csrf_checked = Client(enforce_csrf_checks=True)
    csrf_checked.force_login(User.objects.get(email="staff@segmentor.example"))
    assert csrf_checked.post(PREVIEW, body, content_type="application/json").status_code == 403


def test_refresh_now_queues_the_dynamic_segments(
    world: World, staff_client: Client, filled, django_capture_on_commit_callbacks
):
    ids = list(Segment.all_tenants.values_list("pk", flat=True))
    with mock.patch.object(refresh_segment, "delay") as delay, django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            admin_url(Segment, "changelist"), {"action": "refresh_now", "_selected_action": ids}, follow=True
        )
    body = response.content.decode()
    assert "Queued a refresh of 2 segment(s)." in body and "Skipped 2 static segment(s)" in body
    assert sorted(call.args for call in delay.call_args_list) == sorted((s.tenant_id, s.pk) for s in filled)


def test_delete_goes_through_the_service_and_keeps_segments_in_use(world: World, staff_client: Client, filled):
    germans, _ = filled
    with tenant_context(world.tenant_a.id):
        user = segment_create(
            tenant=world.tenant_a, actor=ACTOR, name="Not German",
            rules={"all": [{"type": "segment", "op": "not_in", "segment": germans.pk}]},
        )  # fmt: skip
    assert staff_client.get(admin_url(Segment, "delete", germans.pk)).status_code == 403  # only the action
    response = staff_client.post(
        admin_url(Segment, "changelist"), {"action": "delete_segments", "_selected_action": [germans.pk]}, follow=True
    )
    body = response.content.decode()
    assert "Deleted 0 segment(s)." in body and "Kept Germans: Used by other segments: Not German." in body
    assert Segment.all_tenants.filter(pk=germans.pk).exists()
    both = [germans.pk, user.pk]
    response = staff_client.post(
        admin_url(Segment, "changelist"), {"action": "delete_segments", "_selected_action": both}, follow=True
    )
    assert "Deleted 2 segment(s)." in response.content.decode()
    assert not Segment.all_tenants.filter(pk__in=both).exists()
    assert AuditLog.all_tenants.filter(action="segment.deleted", actor_label="staff@segmentor.example").count() == 2


def test_tenant_members_are_not_let_into_the_segments_admin(world: World, alice_client: Client, filled):
    response = alice_client.get(admin_url(Segment, "changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
