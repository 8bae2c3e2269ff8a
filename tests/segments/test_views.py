"""The segment pages: list, builder, live preview, segment page, members, export, overlap, actions, permissions."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from typing import Any
from unittest import mock

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from contacts.ingest import events_ingest
from contacts.models import Contact
from segments.models import Segment, SegmentMember, SegmentSize
from segments.rules import Registry, validate
from segments.services import segment_create, segment_refresh, static_members_add
from segments.starters import STARTER_TEMPLATES
from segments.tasks import refresh_segment
from segments.views import size_chart
from tenants.audit import Actor
from tenants.context import tenant_context
from tenants.models import AuditLog, Tenant
from tenants.roles import Role
from tests.conftest import World
from tests.factories import UserFactory, add_member

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("test")
GERMANS = {"all": [{"type": "field", "field": "country", "op": "eq", "value": "DE"}]}
FRENCH = {"all": [{"type": "field", "field": "country", "op": "eq", "value": "FR"}]}
LEADS = {"all": [{"type": "field", "field": "lifecycle_stage", "op": "eq", "value": "lead"}]}


# --- helpers -----------------------------------------------------------------------------------
def url(name: str, world: World, segment: Segment | None = None, tenant: Tenant | None = None) -> str:
    kwargs: dict[str, Any] = {"tenant_slug": (tenant or world.tenant_a).slug}
    if segment is not None:
        kwargs["segment_id"] = segment.pk
    return reverse(f"segments:{name}", kwargs=kwargs)


def make_segment(tenant: Tenant, name: str, rules: dict[str, Any] | None = None, *, kind: str = "dynamic") -> Segment:
    with tenant_context(tenant.id):
        segment = segment_create(tenant=tenant, actor=SYSTEM, name=name, rules=rules, kind=kind)
        if segment.is_dynamic:
            segment_refresh(segment=segment)
        segment.refresh_from_db()
    return segment


def reload(segment: Segment) -> Segment:
    with tenant_context(segment.tenant_id):
        return Segment.objects.get(pk=segment.pk)


def member_ids(segment: Segment) -> set[int]:
    with tenant_context(segment.tenant_id):
        return set(SegmentMember.objects.filter(segment=segment).values_list("contact_id", flat=True))


def post_json(client: Client, target: str, body: Any) -> Any:
    return client.post(target, data=json.dumps(body), content_type="application/json")


def text(response: Any) -> str:
    return response.content.decode()


@pytest.fixture
def people(world: World) -> dict[str, Contact]:
    """Tenant A: four Germans (two leads), one French lead, one Briton; tenant B: one German."""
    a = world.tenant_a
    with tenant_context(a.id):
        made = {
            "anna": Contact.objects.create(
                tenant=a, email="anna@example.de", first_name="Anna", last_name="Schmidt", country="DE",
                lifecycle_stage="lead", interests=["running"], external_id="crm-anna",
            ),
            "bernd": Contact.objects.create(
                tenant=a, email="bernd@example.de", first_name="Bernd", country="DE", lifecycle_stage="lead",
                interests=["yoga"],
            ),
            "clara": Contact.objects.create(tenant=a, email="clara@example.de", country="DE", interests=["yoga"]),
            "dieter": Contact.objects.create(tenant=a, email="dieter@example.de", country="DE", interests=["running"]),
            "emile": Contact.objects.create(tenant=a, email="emile@example.fr", country="FR", lifecycle_stage="lead"),
            "fiona": Contact.objects.create(
                tenant=a, email="fiona@example.co.uk", first_name="=HYPERLINK(\"x\")", country="GB",
                external_id="crm-fiona",
            ),
        }  # fmt: skip
    with tenant_context(world.tenant_b.id):
        Contact.objects.create(tenant=world.tenant_b, email="gustav@b.example", country="DE")
    return made


# --- list ----------------------------------------------------------------------------------------
def test_the_list_shows_each_segment_with_kind_size_trend_and_link(
    world: World, alice_client: Client, people, django_assert_max_num_queries
):
    germans = make_segment(world.tenant_a, "Germans", GERMANS)
    make_segment(world.tenant_a, "Hand-picked", kind="static")
    make_segment(world.tenant_b, "B's secret segment", GERMANS)
    with tenant_context(world.tenant_a.id):
        SegmentSize.objects.create(
            tenant=world.tenant_a, segment=germans, measured_at=timezone.now() - dt.timedelta(days=8), size=1
        )
    with django_assert_max_num_queries(12):
        response = alice_client.get(url("list", world))
    assert response.status_code == 200
    body = text(response)
    assert "B's secret segment" not in body
    rows = {row["segment"].name: row for row in response.context["rows"]}
    assert list(rows) == ["Germans", "Hand-picked"]
    assert rows["Germans"]["size"] == 4 and rows["Germans"]["trend"] == 3
    assert "▲ +3" in body and "Static" in body and "Dynamic" in body
    assert url("detail", world, germans) in body
    assert "New segment" in body


def test_the_list_invites_a_first_segment_and_hides_new_from_viewers(world: World, alice_client, bob_client):
    assert "Build the first one" in text(alice_client.get(url("list", world)))
    response = bob_client.get(url("list", world))
    assert response.status_code == 200
    assert "New segment" not in text(response) and "Build the first one" not in text(response)


def test_the_main_navigation_leads_to_segments(world: World, alice_client: Client):
    body = text(alice_client.get(reverse("contacts:list", kwargs={"tenant_slug": world.tenant_a.slug})))
    assert f'href="{url("list", world)}"' in body


# --- create ----------------------------------------------------------------------------------------
def test_the_builder_page_embeds_the_catalogue_templates_and_the_tenants_events(
    world: World, alice_client: Client, people
):
    with tenant_context(world.tenant_a.id):
        events_ingest(
            tenant=world.tenant_a,
            events=[{"contact_id": people["anna"].pk, "event": "add_to_cart", "properties": {"sku": "shoe-1"}}],
        )
    response = alice_client.get(url("create", world))
    assert response.status_code == 200
    body = text(response)
    assert 'id="builder-catalogue"' in body and 'id="builder-templates"' in body
    assert "js/segment-builder.js" in body
    catalogue = response.context["catalogue"]
    assert catalogue["event_names"] == ["add_to_cart"]
    assert catalogue["event_properties"]["add_to_cart"] == ["sku"]
    groups = {field["group"] for field in catalogue["fields"]}
    assert {"Demographic", "Geographic", "Behavioural", "Psychographic", "Lifecycle", "Consent", "RFM"} <= groups
    # Without JavaScript the rules are a JSON textarea, and a template is a link away.
    assert 'name="rules"' in body and 'name="template"' in body


def test_every_starter_template_is_a_valid_tree(world: World):
    with tenant_context(world.tenant_a.id):
        registry = Registry.for_tenant(world.tenant_a)
        for template in STARTER_TEMPLATES:
            assert validate(template.rules, registry) == [], template.key
    keys = {template.key for template in STARTER_TEMPLATES}
    assert {"demographic", "geographic", "behavioural", "psychographic", "lifecycle"} <= keys
    assert {"new_visitors", "leads_de_fr", "ready_to_buy", "lapsed_customers", "vips"} <= keys


def test_a_template_fills_the_rules_without_javascript(world: World, alice_client: Client):
    response = alice_client.get(url("create", world) + "?template=leads_de_fr")
    rules = json.loads(response.context["form"].initial["rules"])
    assert rules == {
        "all": [
            {"type": "field", "field": "lifecycle_stage", "op": "eq", "value": "lead"},
            {"type": "field", "field": "country", "op": "in", "value": ["DE", "FR"]},
        ]
    }


def test_create_with_valid_rules_saves_and_queues_the_first_count(
    world: World, alice_client: Client, people, django_capture_on_commit_callbacks
):
    rules = {"all": [{"type": "field", "field": "country", "op": "in", "value": ["DE", "FR"]}]}
    with mock.patch.object(refresh_segment, "delay") as delay, django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(
            url("create", world),
            {"name": " DACH and France ", "description": "Launch", "kind": "dynamic", "rules": json.dumps(rules)},
        )
    with tenant_context(world.tenant_a.id):
        segment = Segment.objects.get(name="DACH and France")
    assert response.status_code == 302 and response["Location"] == url("detail", world, segment)
    assert (segment.rules, segment.version, segment.description, segment.created_by_id) == (
        rules, 1, "Launch", world.alice.pk,
    )  # fmt: skip
    delay.assert_called_once_with(world.tenant_a.pk, segment.pk)
    page = alice_client.get(response["Location"])
    assert "Segment created" in text(page) and "Counting the members" in text(page)


def test_create_with_bad_rules_shows_each_error_at_its_node_and_keeps_the_input(world: World, alice_client: Client):
    rules = {
        "all": [
            {"type": "field", "field": "country", "op": "in", "value": ["DE"]},
            {"any": [{"type": "field", "field": "country", "op": "in", "value": ["Germany"]}, {"not": []}]},
        ]
    }
    typed = json.dumps(rules, indent=1)
    response = alice_client.post(
        url("create", world), {"name": "Almost", "description": "", "kind": "dynamic", "rules": typed}
    )
    assert response.status_code == 400
    errors = response.context["rule_errors"]
    assert [e["path"] for e in errors] == ["all.1.any.0.value.0", "all.1.any.1.not"]
    assert "ISO 3166" in errors[0]["message"] and "empty" in errors[1]["message"]
    body = text(response)
    assert "The rules have 2 problems" in body
    assert "<code>all.1.any.0.value.0</code>" in body  # listed under the JSON field (no JavaScript)
    embedded = json.loads(body.split('id="builder-errors" type="application/json">')[1].split("</script>")[0])
    assert embedded == errors  # and handed to the builder, which shows them at the node
    assert response.context["form"]["rules"].value() == typed and response.context["form"]["name"].value() == "Almost"
    with tenant_context(world.tenant_a.id):
        assert not Segment.objects.exists()


def test_create_reports_bad_json_and_a_taken_name_on_their_fields(world: World, alice_client: Client):
    response = alice_client.post(url("create", world), {"name": "X", "kind": "dynamic", "rules": '{"all": [}'})
    assert response.status_code == 400
    assert "not valid JSON" in response.context["form"].errors["rules"][0]
    make_segment(world.tenant_a, "Taken", GERMANS)
    response = alice_client.post(url("create", world), {"name": "Taken", "kind": "dynamic", "rules": ""})
    assert response.status_code == 400
    assert response.context["form"].errors["name"] == ["Another segment has this name."]


def test_a_static_segment_is_created_without_rules(world: World, alice_client: Client):
    response = alice_client.post(
        url("create", world), {"name": "VIP list", "kind": "static", "rules": json.dumps(GERMANS)}
    )
    with tenant_context(world.tenant_a.id):
        segment = Segment.objects.get(name="VIP list")
    assert response.status_code == 302
    assert (segment.kind, segment.rules) == ("static", {})


# --- edit ----------------------------------------------------------------------------------------
def test_editing_the_rules_bumps_the_version_and_renaming_does_not(
    world: World, alice_client: Client, people, django_capture_on_commit_callbacks
):
    segment = make_segment(world.tenant_a, "Germans", GERMANS)
    page = alice_client.get(url("edit", world, segment))
    assert page.status_code == 200 and json.loads(page.context["form"].initial["rules"]) == GERMANS
    with mock.patch.object(refresh_segment, "delay") as delay, django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(
            url("edit", world, segment), {"name": "French", "description": "", "rules": json.dumps(FRENCH)}
        )
    assert response.status_code == 302
    saved = reload(segment)
    assert (saved.name, saved.rules, saved.version) == ("French", FRENCH, 2)
    delay.assert_called_once_with(world.tenant_a.pk, segment.pk)
    alice_client.post(url("edit", world, segment), {"name": "France", "description": "FR", "rules": json.dumps(FRENCH)})
    saved = reload(segment)
    assert (saved.name, saved.description, saved.version) == ("France", "FR", 2)


def test_edit_with_bad_rules_keeps_the_saved_segment(world: World, alice_client: Client):
    segment = make_segment(world.tenant_a, "Germans", GERMANS)
    bad = {"all": [{"type": "field", "field": "shoe_size", "op": "eq", "value": 42}]}
    response = alice_client.post(url("edit", world, segment), {"name": "Germans", "rules": json.dumps(bad)})
    assert response.status_code == 400
    assert response.context["rule_errors"] == [{"path": "all.0.field", "message": "Unknown contact field 'shoe_size'."}]
    assert reload(segment).version == 1


def test_a_segment_cannot_be_edited_to_include_itself(world: World, alice_client: Client):
    base = make_segment(world.tenant_a, "Base", GERMANS)
    uses = make_segment(world.tenant_a, "Uses base", {"all": [{"type": "segment", "op": "in", "segment": base.pk}]})
    cycle = {"all": [{"type": "segment", "op": "in", "segment": uses.pk}]}
    response = alice_client.post(url("edit", world, base), {"name": "Base", "rules": json.dumps(cycle)})
    assert response.status_code == 400
    assert response.context["rule_errors"][0]["path"] == "all.0.segment"
    # The builder's live preview knows which segment it edits, so it says the same.
    preview = post_json(alice_client, url("preview_segment", world, base), {"rules": cycle}).json()
    assert preview["errors"][0]["path"] == "all.0.segment" and preview["count"] is None


def test_a_static_segments_edit_page_has_no_builder(world: World, alice_client: Client):
    segment = make_segment(world.tenant_a, "List", kind="static")
    response = alice_client.get(url("edit", world, segment))
    assert response.status_code == 200
    assert "segment-builder.js" not in text(response)
    alice_client.post(url("edit", world, segment), {"name": "Renamed list", "description": ""})
    assert reload(segment).name == "Renamed list"


# --- live preview ------------------------------------------------------------------------------------
def test_the_preview_counts_and_samples_a_valid_tree(world: World, alice_client: Client, people):
    rules = {
        "all": [
            {"type": "field", "field": "country", "op": "in", "value": ["DE"]},
            {"any": [{"type": "field", "field": "lifecycle_stage", "op": "eq", "value": "lead"},
                     {"not": [{"type": "field", "field": "interests", "op": "contains_any", "value": ["running"]}]}]},
        ]
    }  # fmt: skip
    response = post_json(alice_client, url("preview", world), {"rules": rules})
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    data = response.json()
    assert (data["count"], data["errors"], data["timed_out"]) == (3, [], False)
    sample = data["sample"]
    assert [row["id"] for row in sample] == [people["clara"].pk, people["bernd"].pk, people["anna"].pk]
    anna = sample[-1]
    assert (anna["name"], anna["country"], anna["lifecycle_stage_label"]) == ("Anna Schmidt", "DE", "Lead")
    assert anna["url"] == reverse(
        "contacts:detail", kwargs={"tenant_slug": world.tenant_a.slug, "contact_id": anna["id"]}
    )
    assert sample[0]["name"] == "clara@example.de"


def test_the_preview_names_the_path_of_each_bad_node(world: World, alice_client: Client):
    rules = {
        "all": [
            {"type": "field", "field": "country", "op": "in", "value": ["DE"]},
            {"any": [{"type": "event", "name": "purchase", "op": "at_least"}, {}]},
        ]
    }
    data = post_json(alice_client, url("preview", world), {"rules": rules}).json()
    assert data["count"] is None and data["sample"] == []
    assert [error["path"] for error in data["errors"]] == ["all.1.any.0.count", "all.1.any.1"]


def test_the_preview_refuses_a_body_that_is_not_a_tree(world: World, alice_client: Client):
    response = alice_client.post(
        url("preview", world), data="rules=1", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["message"].startswith("Send {")


def test_the_preview_counts_only_the_tenants_own_contacts(world: World, alice_client: Client, people):
    data = post_json(alice_client, url("preview", world), {"rules": GERMANS}).json()
    assert data["count"] == 4
    assert "gustav@b.example" not in json.dumps(data)


# --- the segment page ----------------------------------------------------------------------------------
def test_the_segment_page_shows_size_chart_rules_usages_and_members(world: World, alice_client: Client, people):
    germans = make_segment(world.tenant_a, "Germans", GERMANS)
    make_segment(world.tenant_a, "German leads", {"all": [{"type": "segment", "op": "in", "segment": germans.pk}]})
    with tenant_context(world.tenant_a.id):
        SegmentSize.objects.create(
            tenant=world.tenant_a, segment=germans, measured_at=timezone.now() - dt.timedelta(days=3), size=2
        )
    response = alice_client.get(url("detail", world, germans))
    assert response.status_code == 200
    body = text(response)
    assert response.context["chart"] is not None and "<polyline" in body
    assert [u["name"] for u in response.context["usages"]] == ["German leads"]
    assert [m["email"] for m in response.context["members"]] == [
        "dieter@example.de", "clara@example.de", "bernd@example.de", "anna@example.de",
    ]  # fmt: skip
    contact_url = reverse(
        "contacts:detail", kwargs={"tenant_slug": world.tenant_a.slug, "contact_id": people["anna"].pk}
    )
    assert f'href="{contact_url}"' in body and "Anna Schmidt" in body
    assert "&quot;DE&quot;" in body  # the rules, readable
    for action in ("edit", "refresh", "delete", "export", "overlap"):
        assert url(action, world, germans) in body, action
    assert "Counting the members" not in body


def test_a_failed_refresh_and_a_pending_count_are_shown(world: World, alice_client: Client):
    segment = make_segment(world.tenant_a, "Germans", GERMANS)
    with tenant_context(world.tenant_a.id):
        Segment.objects.filter(pk=segment.pk).update(refresh_error="The segment query ran too long.", version=2)
    body = text(alice_client.get(url("detail", world, segment)))
    assert "The last refresh failed" in body and "The segment query ran too long." in body
    assert 'hx-trigger="every 3s"' not in body  # no waiting for a count that failed
    with tenant_context(world.tenant_a.id):
        Segment.objects.filter(pk=segment.pk).update(refresh_error="")
    body = text(alice_client.get(url("detail", world, segment)))
    assert "Counting the members of version 2" in body and 'hx-trigger="every 3s"' in body


def test_members_are_paged_newest_first_by_keyset(world: World, alice_client: Client):
    with tenant_context(world.tenant_a.id):
        contacts = Contact.objects.bulk_create(
            Contact(tenant=world.tenant_a, email=f"m{i:02d}@example.com", country="DE") for i in range(60)
        )
    segment = make_segment(world.tenant_a, "Germans", GERMANS)
    ids = sorted((c.pk for c in contacts), reverse=True)
    first = alice_client.get(url("detail", world, segment))
    assert [m["id"] for m in first.context["members"]] == ids[:50]
    next_url = first.context["next_url"]
    assert next_url == f"{url('detail', world, segment)}?before={ids[49]}"
    second = alice_client.get(next_url, headers={"HX-Request": "true", "HX-Target": "segment-members"})
    assert [m["id"] for m in second.context["members"]] == ids[50:]
    assert second.context["next_url"] is None
    assert "<html" not in text(second) and 'id="segment-members"' in text(second)  # htmx gets the table only
    assert "Newest members" in text(second)


def test_a_bad_members_cursor_starts_at_the_newest(world: World, alice_client: Client, people):
    segment = make_segment(world.tenant_a, "Germans", GERMANS)
    response = alice_client.get(url("detail", world, segment) + "?before=nonsense")
    assert response.status_code == 200 and len(response.context["members"]) == 4


# --- export -----------------------------------------------------------------------------------------
def test_export_streams_the_members_as_csv_and_is_audited(world: World, alice_client: Client, people):
    segment = make_segment(world.tenant_a, "Everyone", {"all": []})
    response = alice_client.get(url("export", world, segment))
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv") and "attachment" in response["Content-Disposition"]
    content = b"".join(response.streaming_content).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(content)))
    assert len(rows) == 6
    assert {row["email"] for row in rows} == {c.email for c in people.values()}
    fiona = next(row for row in rows if row["email"] == "fiona@example.co.uk")
    assert fiona["first_name"].startswith("'=")  # a spreadsheet must not run it
    assert fiona["external_id"] == "crm-fiona"
    with tenant_context(world.tenant_a.id):
        entry = AuditLog.objects.filter(object_type="segment", object_id=str(segment.pk)).latest("id")
    assert "export" in entry.action and entry.actor_user_id == world.alice.pk


def test_export_needs_the_export_permission(world: World, bob_client: Client, people):
    segment = make_segment(world.tenant_a, "Everyone", {"all": []})
    assert bob_client.get(url("export", world, segment)).status_code == 403
    assert "Export CSV" not in text(bob_client.get(url("detail", world, segment)))
    analyst = UserFactory(email="ann@a.example")
    add_member(world.tenant_a, analyst, Role.ANALYST)
    client = Client()
    client.force_login(analyst)
    assert client.get(url("export", world, segment)).status_code == 200


# --- overlap ------------------------------------------------------------------------------------------
def test_the_overlap_matrix_shows_shared_counts_and_warnings(world: World, alice_client: Client, people):
    germans = make_segment(world.tenant_a, "Germans", GERMANS)
    also = make_segment(
        world.tenant_a, "Also Germans", {"all": [{"type": "field", "field": "country", "op": "in", "value": ["DE"]}]}
    )
    leads = make_segment(world.tenant_a, "Leads", LEADS)
    make_segment(world.tenant_b, "B only", GERMANS)
    response = alice_client.get(url("overlap", world, germans))
    assert response.status_code == 200
    matrix = response.context["matrix"]
    assert [row["segment"].name for row in matrix] == ["Germans", "Also Germans", "Leads"]
    counts = [[cell["count"] for cell in row["cells"]] for row in matrix]
    assert counts == [[4, 4, 2], [4, 4, 2], [2, 2, 3]]
    body = text(response)
    assert "B only" not in body and "<html" in body  # a page of its own without JavaScript
    warnings = [w.message for w in response.context["warnings"]]
    assert "Germans and Also Germans are 100% the same: consider merging them." in warnings
    assert any(w.startswith("Leads has 3 contacts: too few") for w in warnings)
    assert "100% the same" in body
    fragment = alice_client.get(
        url("overlap", world, also), headers={"HX-Request": "true", "HX-Target": "segment-overlap"}
    )
    assert "<html" not in text(fragment) and 'data-testid="overlap-matrix"' in text(fragment)
    assert fragment.context["matrix"][0]["segment"].pk == also.pk
    assert leads.pk in [s.pk for s in fragment.context["segments"]]


def test_overlap_with_no_other_segment_says_so(world: World, alice_client: Client):
    segment = make_segment(world.tenant_a, "Alone", GERMANS)
    assert "no other segments" in text(alice_client.get(url("overlap", world, segment)))


# --- actions -------------------------------------------------------------------------------------------
def test_refresh_queues_the_task_and_says_so(world: World, alice_client: Client, django_capture_on_commit_callbacks):
    segment = make_segment(world.tenant_a, "Germans", GERMANS)
    with mock.patch.object(refresh_segment, "delay") as delay, django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(url("refresh", world, segment), follow=True)
    delay.assert_called_once_with(world.tenant_a.pk, segment.pk)
    assert "Refresh queued" in text(response)
    static = make_segment(world.tenant_a, "List", kind="static")
    with mock.patch.object(refresh_segment, "delay") as delay, django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(url("refresh", world, static), follow=True)
    delay.assert_not_called()
    assert "changes only when members are added or removed" in text(response)


def test_delete_is_blocked_while_another_segment_uses_it(world: World, alice_client: Client):
    base = make_segment(world.tenant_a, "Base", GERMANS)
    user = make_segment(world.tenant_a, "Uses base", {"all": [{"type": "segment", "op": "in", "segment": base.pk}]})
    response = alice_client.post(url("delete", world, base), follow=True)
    assert response.redirect_chain[-1][0] == url("detail", world, base)
    assert "Used by other segments: Uses base" in text(response)
    with tenant_context(world.tenant_a.id):
        assert Segment.objects.filter(pk=base.pk).exists()
    response = alice_client.post(url("delete", world, user), follow=True)
    assert response.redirect_chain[-1][0] == url("list", world)
    assert "Segment “Uses base” deleted." in text(response)
    alice_client.post(url("delete", world, base))
    with tenant_context(world.tenant_a.id):
        assert not Segment.objects.exists()


def test_static_members_are_added_by_pasted_emails_and_ids_and_removed(world: World, alice_client: Client, people):
    segment = make_segment(world.tenant_a, "List", kind="static")
    pasted = "ANNA@example.de\ncrm-fiona\n\n  nobody@example.com , gustav@b.example\nanna@example.de"
    response = alice_client.post(url("members", world, segment), {"action": "add", "identifiers": pasted}, follow=True)
    assert member_ids(segment) == {people["anna"].pk, people["fiona"].pk}
    body = text(response)
    assert "Added 2 contacts." in body
    assert "Not found (2): nobody@example.com, gustav@b.example." in body  # tenant B's contact is nobody here
    assert reload(segment).size == 2
    response = alice_client.post(
        url("members", world, segment), {"action": "add", "identifiers": "crm-anna"}, follow=True
    )
    assert "Added 0 contacts (1 already a member)." in text(response)
    alice_client.post(url("members", world, segment), {"action": "remove", "contact": people["anna"].pk})
    assert member_ids(segment) == {people["fiona"].pk}
    alice_client.post(url("members", world, segment), {"action": "remove", "identifiers": "fiona@example.co.uk"})
    assert member_ids(segment) == set()


def test_static_member_forms_report_mistakes(world: World, alice_client: Client, people):
    static = make_segment(world.tenant_a, "List", kind="static")
    response = alice_client.post(url("members", world, static), {"action": "add", "identifiers": " \n "}, follow=True)
    assert "Paste at least one email or external id." in text(response)
    dynamic = make_segment(world.tenant_a, "Germans", GERMANS)
    response = alice_client.post(
        url("members", world, dynamic), {"action": "add", "identifiers": "crm-fiona"}, follow=True
    )
    assert "follow its rules" in text(response)
    assert people["fiona"].pk not in member_ids(dynamic)


def test_a_static_segments_page_offers_the_member_forms(world: World, alice_client: Client, people):
    segment = make_segment(world.tenant_a, "List", kind="static")
    with tenant_context(world.tenant_a.id):
        static_members_add(segment=segment, actor=SYSTEM, contact_ids=[people["bernd"].pk])
    body = text(alice_client.get(url("detail", world, segment)))
    assert "Add members" in body and "Remove these" in body
    assert f'name="contact" value="{people["bernd"].pk}"' in body
    assert url("refresh", world, segment) not in body


# --- permissions and isolation ----------------------------------------------------------------------------
def test_a_viewer_reads_but_cannot_write(world: World, bob_client: Client, people):
    segment = make_segment(world.tenant_a, "Germans", GERMANS)
    static = make_segment(world.tenant_a, "List", kind="static")
    response = bob_client.get(url("detail", world, segment))
    assert response.status_code == 200
    body = text(response)
    assert url("edit", world, segment) not in body and url("delete", world, segment) not in body
    assert bob_client.get(url("create", world)).status_code == 403
    assert bob_client.get(url("edit", world, segment)).status_code == 403
    writes = [
        (url("create", world), {"name": "Mine", "kind": "dynamic", "rules": ""}),
        (url("edit", world, segment), {"name": "Hijacked", "rules": json.dumps(FRENCH)}),
        (url("refresh", world, segment), {}),
        (url("delete", world, segment), {}),
        (url("members", world, static), {"action": "add", "identifiers": "crm-anna"}),
    ]
    for target, data in writes:
        assert bob_client.post(target, data).status_code == 403, target
    assert post_json(bob_client, url("preview", world), {"rules": GERMANS}).status_code == 403
    saved = reload(segment)
    assert (saved.name, saved.version) == ("Germans", 1)
    assert member_ids(static) == set()


def test_another_tenants_segment_is_a_404(world: World, alice_client: Client, charlie_client: Client, people):
    theirs = make_segment(world.tenant_b, "B's Germans", GERMANS)
    ours = make_segment(world.tenant_a, "Germans", GERMANS)
    for name in ("detail", "edit", "overlap", "export"):
        assert alice_client.get(url(name, world, theirs)).status_code == 404, name
    for name in ("preview_segment", "refresh", "delete", "members"):
        assert alice_client.post(url(name, world, theirs)).status_code == 404, name
    assert charlie_client.get(url("detail", world, ours)).status_code == 404
    assert charlie_client.get(url("list", world)).status_code == 404
    with tenant_context(world.tenant_b.id):
        assert Segment.objects.filter(pk=theirs.pk).exists()


# --- the chart ----------------------------------------------------------------------------------------------
def test_the_size_chart_needs_two_points_and_keeps_long_histories_to_a_point_a_day():
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert size_chart([(start, 5)]) is None
    chart = size_chart([(start, 0), (start + dt.timedelta(days=1), 40)])
    assert chart is not None
    assert chart.line.split() == ["56.0,192.0", "948.0,48.0"]  # 40 of an axis topped at 50
    assert [value for _, value in chart.y_ticks] == [0, 25, 50]
    hourly = [(start + dt.timedelta(hours=h), h) for h in range(24 * 10)]
    chart = size_chart(hourly)
    assert chart is not None and len(chart.rows) == 10 and chart.rows[-1][1] == 239
