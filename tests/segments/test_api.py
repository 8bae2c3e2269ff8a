"""The segments REST API: CRUD, validate, preview, members (pages and CSV), static lists, refresh, overlap.

Isolation (Charlie's key, the read-only key, no key) is walked for every route by
tests/isolation; the tests here add what a client of each endpoint would notice.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from rest_framework.test import APIClient

from contacts.models import AttributeDefinition, Contact
from segments.api.schema import SEED_RULES
from segments.models import Segment, SegmentMember, SegmentTransition
from segments.services import segment_create, segment_refresh
from segments.tasks import refresh_segment
from tenants.audit import Actor
from tenants.context import platform_access, tenant_context
from tenants.models import AuditLog, Tenant
from tests.conftest import World

pytestmark = pytest.mark.django_db

SEGMENTS = "/api/v1/segments/"
ACTOR = Actor.system("test")
GERMANS = {"all": [{"type": "field", "field": "country", "op": "eq", "value": "DE"}]}
DE_OR_FR = {"all": [{"type": "field", "field": "country", "op": "in", "value": ["DE", "FR"]}]}


def fields_of(response) -> dict[str, Any]:
    """The field errors of a 400, after checking it has the one error shape."""
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert set(error) <= {"code", "message", "fields"} and error["code"] == "invalid" and error["message"]
    return error.get("fields", {})


def people(tenant: Tenant, *countries: str) -> list[Contact]:
    with tenant_context(tenant.id):
        return [
            Contact.objects.create(
                tenant=tenant, email=f"p{i}-{country.lower()}-{tenant.slug}@example.com", country=country,
                first_name=f"P{i}",
            )
            for i, country in enumerate(countries)
        ]  # fmt: skip


def make_segment(tenant: Tenant, name: str, rules: dict | None = None, *, refreshed: bool = True) -> Segment:
    with tenant_context(tenant.id):
        if rules is None:
            return segment_create(tenant=tenant, actor=ACTOR, name=name, kind=Segment.Kind.STATIC)
        segment = segment_create(tenant=tenant, actor=ACTOR, name=name, rules=rules)
        if refreshed:
            segment_refresh(segment=segment)
            segment.refresh_from_db()
        return segment


def member_ids(segment: Segment) -> set[int]:
    with tenant_context(segment.tenant_id):
        return set(SegmentMember.objects.filter(segment=segment).values_list("contact_id", flat=True))


@pytest.fixture
def run_refreshes():
    """Run queued refresh tasks in-process instead of sending them to the broker."""
    with mock.patch.object(refresh_segment, "delay", side_effect=lambda *a: refresh_segment.apply(args=a)) as delay:
        yield delay


# --- create, read, update, delete ------------------------------------------------------------------
def test_create_validates_queues_the_first_refresh_and_lists_the_size(
    world: World, api_a: APIClient, run_refreshes, django_capture_on_commit_callbacks
):
    de, _fr, de2 = people(world.tenant_a, "DE", "FR", "DE")
    people(world.tenant_b, "DE")
    with django_capture_on_commit_callbacks(execute=True):
        response = api_a.post(
            SEGMENTS, {"name": "Germans", "description": "All of them", "rules": GERMANS}, format="json"
        )
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["kind"] == "dynamic" and created["rules"] == GERMANS and created["version"] == 1
    run_refreshes.assert_called_once_with(world.tenant_a.id, created["id"])

    listed = api_a.get(SEGMENTS).json()["results"]
    assert [(s["name"], s["size"], s["version"], s["materialized_version"], s["status"]) for s in listed] == [
        ("Germans", 2, 1, 1, "ready")
    ]
    assert listed[0]["refreshed_at"] is not None
    with tenant_context(world.tenant_a.id):
        assert member_ids(Segment.objects.get(pk=created["id"])) == {de.pk, de2.pk}
    assert api_a.get(f"{SEGMENTS}{created['id']}/").json()["description"] == "All of them"


def test_a_bad_tree_answers_400_with_the_path_of_each_bad_node(world: World, api_a: APIClient):
    rules = {
        "all": [
            {"type": "field", "field": "country", "op": "in", "value": ["DE", "Germany"]},
            {"any": [{"type": "event", "name": "purchase", "op": "sometimes"}]},
        ]
    }
    fields = fields_of(api_a.post(SEGMENTS, {"name": "Broken", "rules": rules}, format="json"))
    assert fields == {
        "rules": [
            {"path": "all.0.value.1", "message": "'Germany' is not an ISO 3166 country code (e.g. DE)."},
            {
                "path": "all.1.any.0.op",
                "message": "Expected one of performed, not_performed, at_least, at_most, exactly.",
            },
        ]
    }
    with platform_access():
        assert not Segment.all_tenants.exists()


def test_name_and_rule_errors_come_together(world: World, api_a: APIClient):
    make_segment(world.tenant_a, "Germans", GERMANS)
    fields = fields_of(api_a.post(SEGMENTS, {"name": "Germans", "rules": {"all": [{"type": "x"}]}}, format="json"))
    assert fields["name"] == ["Another segment has this name."]
    assert [error["path"] for error in fields["rules"]] == ["all.0.type"]


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"name": "A"}, "rules", 'Expected a rule tree: {"all": [...]}.'),
        ({"name": "A", "rules": "country = DE"}, "rules", 'Expected a rule tree: {"all": [...]}.'),
        ({"name": "A", "rules": [GERMANS]}, "rules", 'Expected a rule tree: {"all": [...]}.'),
        ({"name": "A", "kind": "static", "rules": GERMANS}, "rules", "A static segment has no rules"),
    ],
)
def test_a_missing_or_misplaced_tree_is_an_error_at_the_root(world: World, api_a: APIClient, body, field, message):
    [error] = fields_of(api_a.post(SEGMENTS, body, format="json"))[field]
    assert error["path"] == "" and error["message"].startswith(message)


def test_unknown_and_read_only_fields_are_named(world: World, api_a: APIClient):
    fields = fields_of(api_a.post(SEGMENTS, {"name": "A", "rules": GERMANS, "colour": "red", "size": 5}, format="json"))
    assert fields == {"colour": ["Unknown field."], "size": ["This field is read-only."]}
    fields = fields_of(api_a.post(SEGMENTS, {"name": "", "kind": "smart", "rules": GERMANS}, format="json"))
    assert set(fields) == {"name", "kind"}


def test_a_static_segment_starts_empty(world: World, api_a: APIClient, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = api_a.post(SEGMENTS, {"name": "VIP list", "kind": "static"}, format="json")
    assert response.status_code == 201
    assert response.json()["rules"] == {} and response.json()["size"] == 0 and response.json()["status"] == "ready"
    assert callbacks == []  # nothing to refresh


def test_update_bumps_the_version_only_when_the_rules_change(
    world: World, api_a: APIClient, django_capture_on_commit_callbacks
):
    segment = make_segment(world.tenant_a, "Germans", GERMANS)
    url = f"{SEGMENTS}{segment.pk}/"
    with django_capture_on_commit_callbacks() as callbacks:
        renamed = api_a.patch(url, {"name": "Deutsche", "description": "DE"}, format="json").json()
    assert (renamed["name"], renamed["version"], renamed["status"]) == ("Deutsche", 1, "ready") and not callbacks
    with mock.patch.object(refresh_segment, "delay") as delay, django_capture_on_commit_callbacks(execute=True):
        changed = api_a.patch(url, {"rules": DE_OR_FR}, format="json").json()
    assert (changed["version"], changed["materialized_version"], changed["status"]) == (2, 1, "pending")
    delay.assert_called_once_with(world.tenant_a.id, segment.pk)
    assert changed["rules"] == DE_OR_FR and changed["name"] == "Deutsche"

    [error] = fields_of(api_a.patch(url, {"rules": None}, format="json"))["rules"]
    assert error == {"path": "", "message": 'Expected a rule tree: {"all": [...]}.'}
    assert fields_of(api_a.patch(url, {"kind": "static"}, format="json")) == {"kind": ["This field is read-only."]}
    bad = fields_of(
        api_a.patch(url, {"rules": {"all": [{"type": "field", "field": "age", "op": "gte"}]}}, format="json")
    )
    assert bad == {"rules": [{"path": "all.0.value", "message": "Expected a number."}]}
    assert api_a.get(url).json()["version"] == 2


def test_a_segment_cannot_include_itself(world: World, api_a: APIClient):
    base = make_segment(world.tenant_a, "Germans", GERMANS)
    outer = make_segment(
        world.tenant_a, "Germans again", {"all": [{"type": "segment", "op": "in", "segment": base.pk}]}
    )
    cycle = {"all": [{"type": "segment", "op": "in", "segment": outer.pk}]}
    [error] = fields_of(api_a.patch(f"{SEGMENTS}{base.pk}/", {"rules": cycle}, format="json"))["rules"]
    assert error["path"] == "all.0.segment" and "cannot include itself" in error["message"]
    # ... and the validate endpoint says the same when told which segment is being edited.
    result = api_a.post(f"{SEGMENTS}validate/", {"rules": cycle, "segment": base.pk}, format="json").json()
    assert result["valid"] is False and result["errors"][0]["path"] == "all.0.segment"


def test_delete_refuses_while_another_segment_uses_it(world: World, api_a: APIClient):
    base = make_segment(world.tenant_a, "Germans", GERMANS)
    outer = make_segment(
        world.tenant_a, "Not German", {"all": [{"type": "segment", "op": "not_in", "segment": base.pk}]}
    )
    response = api_a.delete(f"{SEGMENTS}{base.pk}/")
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Used by other segments: Not German. Change them first."
    assert api_a.delete(f"{SEGMENTS}{outer.pk}/").status_code == 204
    assert api_a.delete(f"{SEGMENTS}{base.pk}/").status_code == 204
    with platform_access():
        assert not Segment.all_tenants.filter(tenant=world.tenant_a).exists()
        assert AuditLog.all_tenants.filter(action="segment.deleted").count() == 2


# --- validate and preview ------------------------------------------------------------------------
def test_validate_answers_valid_and_the_errors(world: World, api_a: APIClient):
    ok = api_a.post(f"{SEGMENTS}validate/", {"rules": DE_OR_FR}, format="json")
    assert ok.status_code == 200 and ok.json() == {"valid": True, "errors": []}
    bad = api_a.post(f"{SEGMENTS}validate/", {"rules": {"any": [{"type": "rfm", "score": "recency"}]}}, format="json")
    assert bad.json() == {
        "valid": False,
        "errors": [{"path": "any.0.op", "message": "Expected one of eq, neq, gt, gte, lt, lte, between."}],
    }
    assert fields_of(api_a.post(f"{SEGMENTS}validate/", {}, format="json")) == {"rules": ["This field is required."]}


def test_another_tenants_segment_is_not_a_valid_reference(world: World, api_a: APIClient):
    theirs = make_segment(world.tenant_b, "B's", GERMANS)
    response = api_a.post(f"{SEGMENTS}validate/", {"rules": GERMANS, "segment": theirs.pk}, format="json")
    assert "segment" in fields_of(response)
    rules = {"all": [{"type": "segment", "op": "in", "segment": theirs.pk}]}
    result = api_a.post(f"{SEGMENTS}validate/", {"rules": rules}, format="json").json()
    assert result["errors"] == [
        {"path": "all.0.segment", "message": f"No segment with id {theirs.pk} in this workspace."}
    ]


def test_preview_counts_only_this_tenants_contacts_and_shows_the_newest(world: World, api_a: APIClient):
    de, fr, _gb, de2 = people(world.tenant_a, "DE", "FR", "GB", "DE")
    people(world.tenant_b, "DE", "FR")
    response = api_a.post(f"{SEGMENTS}preview/", {"rules": DE_OR_FR, "sample_size": 2}, format="json")
    assert response.status_code == 200, response.content
    preview = response.json()
    assert preview["count"] == 3 and preview["errors"] == [] and preview["timed_out"] is False
    assert [row["id"] for row in preview["sample"]] == [de2.pk, fr.pk]
    assert preview["sample"][0] == {
        "id": de2.pk, "email": de2.email, "phone": "", "first_name": "P3", "last_name": "", "country": "DE",
        "lifecycle_stage": de2.lifecycle_stage,
    }  # fmt: skip
    assert de.pk not in {row["id"] for row in preview["sample"]}


def test_preview_of_an_invalid_tree_answers_the_errors_and_no_count(world: World, api_a: APIClient):
    rules = {"all": [{"type": "field", "field": "country", "op": "eq", "value": "Narnia"}]}
    preview = api_a.post(f"{SEGMENTS}preview/", {"rules": rules}, format="json").json()
    assert preview["count"] is None and preview["sample"] == []
    assert preview["errors"] == [
        {"path": "all.0.value", "message": "'Narnia' is not an ISO 3166 country code (e.g. DE)."}
    ]


def test_preview_of_a_saved_segment_counts_live_and_may_try_edited_rules(world: World, api_a: APIClient):
    segment = make_segment(world.tenant_a, "Germans", GERMANS)
    people(world.tenant_a, "DE", "FR")  # after the refresh: the materialised size is still 0
    url = f"{SEGMENTS}{segment.pk}/preview/"
    assert api_a.post(url, format="json").json()["count"] == 1
    assert api_a.post(url, {"rules": DE_OR_FR, "sample_size": 0}, format="json").json() | {"elapsed_ms": 0} == {
        "count": 2, "sample": [], "errors": [], "timed_out": False, "elapsed_ms": 0
    }  # fmt: skip
    assert api_a.get(f"{SEGMENTS}{segment.pk}/").json()["size"] == 0  # nothing saved
    static = make_segment(world.tenant_a, "Hand-picked")
    [error] = fields_of(api_a.post(f"{SEGMENTS}{static.pk}/preview/", format="json"))["rules"]
    assert error["message"].startswith("A static segment has no rules")


def test_validate_and_preview_need_the_write_scope(world: World, api_a_read: APIClient):
    for path in ("validate/", "preview/"):
        response = api_a_read.post(f"{SEGMENTS}{path}", {"rules": GERMANS}, format="json")
        assert response.status_code == 403 and response.json()["error"]["code"] == "permission_denied"


# --- members -------------------------------------------------------------------------------------------
def test_members_come_in_keyset_pages_newest_contact_first(
    world: World, api_a: APIClient, django_assert_max_num_queries
):
    germans = people(world.tenant_a, "DE", "DE", "FR", "DE", "DE", "DE")
    segment = make_segment(world.tenant_a, "Germans", GERMANS)
    expected = sorted((c.pk for c in germans if c.country == "DE"), reverse=True)
    seen: list[int] = []
    url: str | None = f"{SEGMENTS}{segment.pk}/members/?page_size=2"
    while url:
        with django_assert_max_num_queries(8):
            page = api_a.get(url).json()
        seen += [row["id"] for row in page["results"]]
        url = page["next"]
    assert seen == expected
    first = api_a.get(f"{SEGMENTS}{segment.pk}/members/").json()["results"][0]
    assert set(first) == {
        "id", "email", "phone", "first_name", "last_name", "external_id", "country", "city", "lifecycle_stage",
        "entered_at",
    }  # fmt: skip
    assert first["country"] == "DE" and first["entered_at"]


def test_members_csv_streams_every_member_spreadsheet_safe_and_is_audited(world: World, api_a: APIClient):
    with tenant_context(world.tenant_a.id):
        evil = Contact.objects.create(tenant=world.tenant_a, email="x@example.com", first_name="=HYPERLINK(1)")
    others = people(world.tenant_a, "DE")
    segment = make_segment(world.tenant_a, "Picked")
    api_a.post(f"{SEGMENTS}{segment.pk}/members/", {"contact_ids": [evil.pk, others[0].pk]}, format="json")
    with mock.patch("segments.api.export.PAGE_SIZE", 1):  # several keyset pages, read after the view returned
        response = api_a.get(f"{SEGMENTS}{segment.pk}/members.csv", HTTP_ACCEPT="text/csv")
    assert response.status_code == 200 and response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith(f'attachment; filename="segment-{segment.pk}-members-')
    text = b"".join(response.streaming_content).decode()
    rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"))))
    assert rows[0][:3] == ["segmentor_id", "email", "phone"]
    assert [row[0] for row in rows[1:]] == [str(others[0].pk), str(evil.pk)]
    assert rows[2][3] == "'=HYPERLINK(1)"
    with platform_access():
        exported = AuditLog.all_tenants.filter(action="segment.members_exported", object_id=str(segment.pk))
        assert [(e.tenant_id, e.actor_label.startswith("api key A write")) for e in exported] == [
            (world.tenant_a.id, True)
        ]


def test_members_csv_of_a_missing_segment_is_a_json_404_whatever_the_client_accepts(world: World, api_a: APIClient):
    response = api_a.get(f"{SEGMENTS}999999/members.csv", HTTP_ACCEPT="text/csv")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_static_members_are_added_and_removed_by_contact_id(world: World, api_a: APIClient):
    mine = people(world.tenant_a, "DE", "FR", "GB")
    [theirs] = people(world.tenant_b, "DE")
    segment = make_segment(world.tenant_a, "Picked")
    url = f"{SEGMENTS}{segment.pk}/members/"
    added = api_a.post(url, {"contact_ids": [c.pk for c in mine] + [theirs.pk, 10**9]}, format="json")
    assert added.status_code == 200 and added.json() == {"added": 3, "size": 3}
    assert member_ids(segment) == {c.pk for c in mine}  # another tenant's and unknown ids are skipped
    assert api_a.post(url, {"contact_ids": [mine[0].pk]}, format="json").json() == {"added": 0, "size": 3}

    removed = api_a.delete(url, {"contact_ids": [mine[0].pk]}, format="json")
    assert removed.json() == {"removed": 1, "size": 2}
    assert api_a.delete(f"{url}?contact_ids={mine[1].pk},{theirs.pk}").json() == {"removed": 1, "size": 1}
    assert api_a.get(f"{SEGMENTS}{segment.pk}/").json()["size"] == 1
    with tenant_context(world.tenant_a.id):
        kinds = list(SegmentTransition.objects.filter(segment=segment).order_by("id").values_list("kind", flat=True))
    assert kinds == ["entered"] * 3 + ["exited"] * 2


def test_static_member_changes_reject_bad_ids_and_dynamic_segments(world: World, api_a: APIClient):
    segment = make_segment(world.tenant_a, "Picked")
    url = f"{SEGMENTS}{segment.pk}/members/"
    assert "contact_ids" in fields_of(api_a.post(url, {"contact_ids": []}, format="json"))
    assert "contact_ids" in fields_of(api_a.post(url, {"contact_ids": ["a", -1]}, format="json"))
    assert "contact_ids" in fields_of(api_a.post(url, {"contact_ids": 5}, format="json"))
    assert "contact_ids" in fields_of(api_a.delete(url))
    assert "contact_ids" in fields_of(api_a.delete(f"{url}?contact_ids=1,x"))
    dynamic = make_segment(world.tenant_a, "Germans", GERMANS)
    response = api_a.post(f"{SEGMENTS}{dynamic.pk}/members/", {"contact_ids": [1]}, format="json")
    assert response.status_code == 400 and "follow its rules" in response.json()["error"]["message"]


# --- refresh and overlap ----------------------------------------------------------------------------
def test_refresh_is_queued_and_materialises_the_members(
    world: World, api_a: APIClient, run_refreshes, django_capture_on_commit_callbacks
):
    segment = make_segment(world.tenant_a, "Germans", GERMANS)
    [de] = people(world.tenant_a, "DE")
    with django_capture_on_commit_callbacks(execute=True):
        response = api_a.post(f"{SEGMENTS}{segment.pk}/refresh/")
    assert response.status_code == 202
    assert response.json() == {"status": "queued", "segment": segment.pk, "version": 1}
    run_refreshes.assert_called_once_with(world.tenant_a.id, segment.pk)
    assert api_a.get(f"{SEGMENTS}{segment.pk}/").json()["size"] == 1 and member_ids(segment) == {de.pk}
    static = make_segment(world.tenant_a, "Picked")
    assert api_a.post(f"{SEGMENTS}{static.pk}/refresh/").status_code == 400


def test_overlap_is_a_matrix_of_shared_members_with_warnings(world: World, api_a: APIClient, settings):
    people(world.tenant_a, "DE", "DE", "FR")
    germans = make_segment(world.tenant_a, "Germans", GERMANS)
    both = make_segment(world.tenant_a, "DE or FR", DE_OR_FR)
    french = make_segment(
        world.tenant_a, "French", {"all": [{"type": "field", "field": "country", "op": "eq", "value": "FR"}]}
    )
    response = api_a.get(f"{SEGMENTS}overlap/?ids={germans.pk},{both.pk},{french.pk}")
    assert response.status_code == 200, response.content
    body = response.json()
    assert [s["name"] for s in body["segments"]] == ["Germans", "DE or FR", "French"]
    assert body["matrix"] == [[2, 2, 0], [2, 3, 1], [0, 1, 1]]
    kinds = {(w["kind"], tuple(w["segments"])) for w in body["warnings"]}
    assert ("too_small", (french.pk,)) in kinds  # 1 member, under the threshold of 50
    everyone = api_a.get(f"{SEGMENTS}overlap/").json()  # no ids: the first 20 by name
    assert [s["name"] for s in everyone["segments"]] == ["DE or FR", "French", "Germans"]


@pytest.mark.parametrize("ids", ["1", "1,x", "1;2", "-1,2", ",".join(str(i) for i in range(1, 23)), "1" * 40])
def test_overlap_rejects_bad_ids(world: World, api_a: APIClient, ids: str):
    assert "ids" in fields_of(api_a.get(f"{SEGMENTS}overlap/?ids={ids}"))


def test_overlap_does_not_find_another_tenants_segments(world: World, api_a: APIClient):
    mine = make_segment(world.tenant_a, "Mine", GERMANS)
    theirs = make_segment(world.tenant_b, "Theirs", GERMANS)
    fields = fields_of(api_a.get(f"{SEGMENTS}overlap/?ids={mine.pk},{theirs.pk}"))
    assert fields == {"ids": [f"No segment with id {theirs.pk} in this workspace."]}


# --- bad input ----------------------------------------------------------------------------------------
JUNK = [
    None, True, -1, 1.5, 10**30, "", "x" * 5000, "\x00", "line\nbreak", [], [1, "a"], {},
    {"nested": {"deep": [1, 2, {"x": None}]}}, "NaN",
]  # fmt: skip


def check(response) -> None:
    assert response.status_code < 500, response.content
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) <= {"code", "message", "fields"} and error["message"]


def test_junk_in_any_field_of_any_endpoint_is_never_a_500(world: World, api_a: APIClient):
    segment = make_segment(world.tenant_a, "Germans", GERMANS)
    static = make_segment(world.tenant_a, "Picked")
    cases = [
        ("post", SEGMENTS, ["name", "description", "kind", "rules"]),
        ("patch", f"{SEGMENTS}{segment.pk}/", ["name", "description", "rules", "kind"]),
        ("patch", f"{SEGMENTS}{static.pk}/", ["rules"]),
        ("post", f"{SEGMENTS}validate/", ["rules", "segment"]),
        ("post", f"{SEGMENTS}preview/", ["rules", "segment", "sample_size"]),
        ("post", f"{SEGMENTS}{segment.pk}/preview/", ["rules", "sample_size"]),
        ("post", f"{SEGMENTS}{static.pk}/members/", ["contact_ids"]),
        ("delete", f"{SEGMENTS}{static.pk}/members/", ["contact_ids"]),
    ]
    for verb, url, names in cases:
        for value in JUNK:
            check(getattr(api_a, verb)(url, value, format="json"))
            for name in names:
                base = {"name": "Junk", "rules": GERMANS} if verb == "post" and url == SEGMENTS else {}
                check(getattr(api_a, verb)(url, {**base, name: value}, format="json"))
                check(getattr(api_a, verb)(url, {"rules": {"all": [{"type": "field", name: value}]}}, format="json"))


@pytest.mark.parametrize(
    "query", ["ids=%00", "ids=%F0%9F%98%80", "page_size=-1", "page_size=abc", "cursor=garbage", "ids=" + "9" * 3000]
)
def test_junk_in_query_parameters_is_never_a_500(world: World, api_a: APIClient, query: str):
    segment = make_segment(world.tenant_a, "Germans", GERMANS)
    check(api_a.get(f"{SEGMENTS}?{query}"))
    check(api_a.get(f"{SEGMENTS}overlap/?{query}"))
    check(api_a.get(f"{SEGMENTS}{segment.pk}/members/?{query}"))
    check(api_a.delete(f"{SEGMENTS}{segment.pk}/members/?contact_ids={query}"))


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        ("{not json", "application/json", {400}),
        ('{"rules": {"all": [}', "application/json", {400}),
        (b"\xff\xfe\x00garbage", "application/json", {400}),
        ('{"rules": NaN}', "application/json", {400}),
        ("[" * 100_000 + "]" * 100_000, "application/json", {400}),
        ('{"rules": ' + '{"all": [' * 60 + "]}" * 60 + "}", "application/json", {400}),
        # A form body: 415, or 400 (nothing parsed) when a middleware already read the form.
        ("rules=all", "application/x-www-form-urlencoded", {400, 415}),
        ("rules", "text/plain", {415}),
    ],
)
def test_a_body_that_is_not_json_or_nests_absurdly_deep_is_refused(
    world: World, api_a: APIClient, body, content_type, status
):
    for url in (SEGMENTS, f"{SEGMENTS}validate/", f"{SEGMENTS}preview/"):
        response = api_a.generic("POST", url, body, content_type=content_type)
        assert response.status_code in status, (url, response.content[:200])
        assert response.json()["error"]["message"]


def test_a_deep_but_legal_tree_is_answered_with_the_depth_limit(world: World, api_a: APIClient):
    tree: dict[str, Any] = {"type": "field", "field": "country", "op": "eq", "value": "DE"}
    for _ in range(12):
        tree = {"all": [tree]}
    result = api_a.post(f"{SEGMENTS}validate/", {"rules": tree}, format="json").json()
    assert result["valid"] is False
    assert result["errors"] == [{"path": ".".join(["all.0"] * 8), "message": "Groups nest at most 8 levels deep."}]


# --- the schema --------------------------------------------------------------------------------------
def test_openapi_documents_every_segments_endpoint_and_the_rule_tree(db):
    document = APIClient().get("/api/schema/?format=json").json()
    paths = document["paths"]
    expected = {
        "/api/v1/segments/": {"get", "post"},
        "/api/v1/segments/{segment_id}/": {"get", "patch", "delete"},
        "/api/v1/segments/validate/": {"post"},
        "/api/v1/segments/preview/": {"post"},
        "/api/v1/segments/{segment_id}/preview/": {"post"},
        "/api/v1/segments/{segment_id}/members/": {"get", "post", "delete"},
        "/api/v1/segments/{segment_id}/members.csv": {"get"},
        "/api/v1/segments/{segment_id}/refresh/": {"post"},
        "/api/v1/segments/overlap/": {"get"},
    }
    for path, verbs in expected.items():
        assert set(paths[path]) - {"parameters"} == verbs, path
    schemas = document["components"]["schemas"]
    tree = schemas["RuleTree"]
    assert set(tree["properties"]) == {"all", "any", "not"} and "none of" in tree["description"]
    condition = schemas["RuleCondition"]
    assert set(condition["discriminator"]["mapping"]) == {
        "field", "attribute", "lifecycle_change", "consent", "suppression", "event", "event_aggregate", "engagement",
        "rfm", "rfm_group", "segment",
    }  # fmt: skip
    create = paths["/api/v1/segments/"]["post"]["requestBody"]["content"]["application/json"]
    assert create["schema"] == {"$ref": "#/components/schemas/SegmentCreateRequest"}
    rules = schemas["SegmentCreateRequest"]["properties"]["rules"]
    assert {"$ref": "#/components/schemas/RuleTree"} in rules.get("allOf", [rules])
    titles = {example["summary"] for example in create["examples"].values()}
    assert {"New visitors", "Leads in Germany and France", "Ready to buy", "Lapsed customers", "VIPs"} <= titles


@pytest.mark.parametrize("title", list(SEED_RULES))
def test_every_documented_example_is_a_valid_tree(world: World, api_a: APIClient, title: str):
    _summary, rules = SEED_RULES[title]
    assert api_a.post(f"{SEGMENTS}validate/", {"rules": rules}, format="json").json() == {"valid": True, "errors": []}
    assert api_a.post(f"{SEGMENTS}preview/", {"rules": rules}, format="json").json()["count"] == 0


def test_every_tree_in_the_docs_is_valid(world: World, api_a: APIClient):
    """docs/segments.md shows trees in ```json blocks: each must pass the validator as written."""
    with tenant_context(world.tenant_a.id):
        AttributeDefinition.objects.create(tenant=world.tenant_a, key="plan", label="Plan", type="text")
        AttributeDefinition.objects.create(tenant=world.tenant_a, key="loyalty_points", label="Points", type="number")
    text = (Path(__file__).resolve().parents[2] / "docs" / "segments.md").read_text()
    blocks = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL)]
    trees = [block for block in blocks if isinstance(block, dict) and set(block) & {"all", "any", "not"}]
    conditions = [block for block in blocks if isinstance(block, dict) and "type" in block]
    assert len(trees) >= 8 and conditions
    for rules in [*trees, *({"all": [condition]} for condition in conditions)]:
        result = api_a.post(f"{SEGMENTS}validate/", {"rules": rules}, format="json").json()
        assert result == {"valid": True, "errors": []}, (rules, result)
