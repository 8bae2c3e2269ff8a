"""Hostile rule trees at every door that takes one: refused with a message, never SQL, never a 500.

tests/segments/test_injection.py takes the rule language apart through the API's validate and
preview (names, operators, values, sizes, depths). This walks the same kind of trees through
every other place a rule tree or a piece of one arrives: creating and changing segments (API,
builder page, form, admin preview), a journey's branch step, trigger filters and wait-event
filters (API and the step page). Tenant B holds a canary contact: a tree that escaped into SQL
(``' OR 1=1``, ``UNION SELECT``) would count or show it. It must never appear, no table may
shrink, and every answer is a 200 with errors or a 400.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from contacts.models import AttributeDefinition, Contact, Event
from segments.models import Segment
from tenants.context import platform_access, tenant_context
from tests.conftest import World
from tests.security.site import inspect
from tests.segments.test_injection import JSON_PATH_TRICKS, ORM_TRICKS, SQL

pytestmark = pytest.mark.django_db

CANARY = "canary-of-b@b.example"
UNION = "x' UNION SELECT email FROM contacts_contact WHERE email LIKE 'canary%' --"
VALUES = [*SQL, UNION, "%", "_", "\\", "\x00", "'" * 300, "ﬀ", "😀" * 10]


THOROUGH = ("builder preview",)
PAGES = ("segment form", "segment edit form", "journey branch page")  # whole pages: slower, fewer trees


def leaf(**condition: Any) -> dict[str, Any]:
    return {"all": [condition]}


def hostile_trees() -> list[tuple[str, Any]]:
    """Trees that must be refused (names, operators) and trees that must match nothing (values)."""
    trees: list[tuple[str, Any]] = []
    for name in [*SQL, *ORM_TRICKS, *JSON_PATH_TRICKS]:
        trees += [
            (f"field {name!r}", leaf(type="field", field=name, op="eq", value="DE")),
            (f"attribute {name!r}", leaf(type="attribute", key=name, op="eq", value="x")),
            (f"event {name!r}", leaf(type="event", name=name, op="performed")),
            (f"property {name!r}", leaf(type="event", name="purchase", op="performed",
                                        where=[{"property": name, "op": "eq", "value": 1}])),
            (f"op {name!r}", leaf(type="field", field="first_name", op=name, value="x")),
        ]  # fmt: skip
    for value in VALUES:
        trees += [
            (f"value {value[:20]!r}", leaf(type="field", field="first_name", op="eq", value=value)),
            (f"contains {value[:20]!r}", leaf(type="field", field="email", op="contains", value=value)),
            (f"attribute value {value[:20]!r}", leaf(type="attribute", key="plan", op="eq", value=value)),
            (f"property value {value[:20]!r}", leaf(type="event", name="purchase", op="performed",
                                                    where=[{"property": "category", "op": "eq", "value": value}])),
        ]  # fmt: skip
    return trees


def odd_shapes() -> list[tuple[str, Any]]:
    """Trees of the wrong shape, too deep, too big, with references that are not ids."""
    deep: Any = leaf(type="field", field="country", op="eq", value="DE")
    for _ in range(12):
        deep = {"not": [deep]}
    return [
        ("a string", "' OR 1=1 --"),
        ("a number", 1),
        ("null", None),
        ("a list", [{"type": "field"}]),
        ("two groups", {"all": [], "any": []}),
        ("an unknown group", {"and": [], "or": []}),
        ("a group of text", {"all": "1=1"}),
        ("a group of numbers", {"all": [1, 2, 3]}),
        ("twelve levels", deep),
        ("past the size limit", {"any": [leaf(type="field", field="city", op="eq", value="x")["all"][0]] * 201}),
        ("a segment id as text", leaf(type="segment", op="in", segment="1 OR 1=1")),
        ("a huge segment id", leaf(type="segment", op="in", segment=10**30)),
        ("an extra key", {"all": [{"type": "field", "field": "country", "op": "eq", "value": "DE", "extra": "1=1"}]}),
    ]


@pytest.fixture
def tables(world: World) -> dict[str, Any]:
    """Tenant A's data, tenant B's canary, and a segment of B to reference by id."""
    with tenant_context(world.tenant_b.id):
        canary = Contact.objects.create(tenant=world.tenant_b, email=CANARY, first_name="CanaryOfB", country="DE")
        theirs = Segment.objects.create(tenant=world.tenant_b, name="B's", rules={"all": []})
    with tenant_context(world.tenant_a.id):
        AttributeDefinition.objects.create(tenant=world.tenant_a, key="plan", label="Plan", type="text")
        Contact.objects.create(tenant=world.tenant_a, email="ann@a.example", first_name="Ann", country="DE")
    return {"canary": canary, "b_segment": theirs}


def row_counts() -> tuple[int, int, int]:
    with platform_access():
        return Contact.all_tenants.count(), Segment.all_tenants.count(), Event.all_tenants.count()


class Doors:
    """Every place a rule tree can be sent, each returning (status, body)."""

    def __init__(self, world: World, api: APIClient, tables: dict[str, Any]) -> None:
        self.world, self.api = world, api
        self.slug = world.tenant_a.slug
        self.ui = Client()
        self.ui.force_login(world.alice)
        from tests.factories import UserFactory

        self.staff = Client()
        self.staff.force_login(UserFactory(email="staff-rules@platform.example", is_staff=True, is_superuser=True))
        with tenant_context(world.tenant_a.id):
            self.segment = Segment.objects.create(tenant=world.tenant_a, name="Mine", rules={"all": []})
        self.journey = self._journey()

    def _journey(self) -> dict[str, Any]:
        body = {
            "name": "Rules", "trigger": "event", "trigger_event": "signup",
            "steps": [
                {"key": "s1", "kind": "branch", "config": {"rules": {"all": []}}, "exits": {"yes": None, "no": None}},
                {"key": "s2", "kind": "wait_event",
                 "config": {"event": "purchase", "timeout": {"amount": 1, "unit": "hours"}},
                 "exits": {"happened": None, "timed_out": None}},
            ],
            "start_key": "s1",
        }  # fmt: skip
        response = self.api.post("/api/v1/journeys/", body, format="json")
        assert response.status_code == 201, response.content
        return response.json()

    def all(self) -> dict[str, Callable[[Any], Any]]:
        return {
            "API validate": lambda t: self.api.post("/api/v1/segments/validate/", {"rules": t}, format="json"),
            "API preview": lambda t: self.api.post("/api/v1/segments/preview/", {"rules": t}, format="json"),
            "API create": lambda t: self.api.post("/api/v1/segments/", {"name": "h", "rules": t}, format="json"),
            "API change": lambda t: self.api.patch(f"/api/v1/segments/{self.segment.pk}/", {"rules": t}, format="json"),
            "builder preview": lambda t: self.ui.post(
                f"/t/{self.slug}/segments/preview/", json.dumps({"rules": t}), content_type="application/json"
            ),
            "segment form": lambda t: self.ui.post(
                f"/t/{self.slug}/segments/new/", {"name": "h", "kind": "dynamic", "rules": json.dumps(t)}
            ),
            "segment edit form": lambda t: self.ui.post(
                f"/t/{self.slug}/segments/{self.segment.pk}/edit/", {"name": "h", "rules": json.dumps(t)}
            ),
            "admin preview": lambda t: self.staff.post(
                "/admin/segments/segment/preview/",
                json.dumps({"tenant": self.world.tenant_a.pk, "rules": t}),
                content_type="application/json",
            ),
            "journey branch": lambda t: self.api.patch(
                f"/api/v1/journeys/{self.journey['id']}/steps/s1/", {"config": {"rules": t}}, format="json"
            ),
            "journey trigger filters": lambda t: self.api.patch(
                f"/api/v1/journeys/{self.journey['id']}/", {"trigger_filters": _where(t)}, format="json"
            ),
            "journey wait filters": lambda t: self.api.patch(
                f"/api/v1/journeys/{self.journey['id']}/steps/s2/",
                {"config": {"event": "purchase", "filters": _where(t), "timeout": {"amount": 1, "unit": "hours"}}},
                format="json",
            ),
            "journey branch page": lambda t: self.step_page("s1", {"rules": json.dumps(t)}),
        }

    def step_page(self, key: str, fields: dict[str, str]) -> Any:
        url = f"/t/{self.slug}/journeys/{self.journey['id']}/steps/{key}/"
        [form] = [
            f for f in inspect(self.ui.get(url).content.decode()).forms if f.method == "post" and "rules" in f.fields
        ]
        data = {k: v for k, v in form.fields.items() if k != "csrfmiddlewaretoken"}
        return self.ui.post(url, {**data, **fields})


def _where(tree: Any) -> Any:
    """The property filters inside a tree, or the tree itself: what a filter list would carry."""
    try:
        return tree["all"][0]["where"]
    except (KeyError, IndexError, TypeError):
        return tree


def test_hostile_trees_are_refused_or_match_nothing_at_every_door(world: World, api_a: APIClient, tables):
    doors = Doors(world, api_a, tables)
    contacts, _segments, events = row_counts()
    problems = []
    every, shapes = hostile_trees(), odd_shapes()
    for door, send in doors.all().items():
        # Every tree at the builder (nothing else sends it them); a sample (and every odd shape) at the
        # doors that share its validator, which tests/segments/test_injection.py takes apart too.
        trees = (every if door in THOROUGH else every[:: 30 if door in PAGES else 10]) + shapes
        for label, tree in trees:
            response = send(tree)
            body = response.content.decode("utf-8", "replace")
            where = f"{door} / {label}"
            if response.status_code >= 500:
                problems.append(f"{where}: {response.status_code}")
            elif response.status_code not in (200, 201, 302, 400):
                problems.append(f"{where}: unexpected {response.status_code}")
            if CANARY in body or "CanaryOfB" in body:
                problems.append(f"{where}: tenant B's canary in the answer")
            if "Traceback" in body or "ProgrammingError" in body or "syntax error at or near" in body:
                problems.append(f"{where}: a database error in the answer")
            if door.endswith("preview") and response.status_code == 200:
                count = response.json().get("count")
                if count not in (None, 0, 1):
                    problems.append(f"{where}: counted {count} (tenant A has 1 contact)")
    assert problems == [], "\n".join(problems)
    assert row_counts()[0] == contacts and row_counts()[2] == events


def test_a_refused_tree_is_named_by_its_path_at_every_door_that_saves(world: World, api_a: APIClient, tables):
    doors = Doors(world, api_a, tables).all()
    tree = leaf(type="field", field="country; DROP TABLE contacts_contact; --", op="eq", value="DE")
    assert doors["API create"](tree).status_code == 400
    page = doors["segment form"](tree)
    assert page.status_code == 400 and "Unknown contact field" in page.content.decode()
    branch = doors["journey branch"](tree)
    assert branch.status_code == 400 and "Unknown contact field" in json.dumps(branch.json())
    assert doors["journey branch page"](tree).status_code == 400
    with tenant_context(world.tenant_a.id):
        assert not Segment.objects.filter(name="h").exists()


def test_another_workspaces_segment_is_refused_by_id_everywhere(world: World, api_a: APIClient, tables):
    doors = Doors(world, api_a, tables).all()
    tree = leaf(type="segment", op="in", segment=tables["b_segment"].pk)
    for door in ("API validate", "API create", "builder preview", "journey branch"):
        body = doors[door](tree).content.decode()
        assert "No segment with id" in body, door
    response = api_a.post(
        "/api/v1/campaigns/", {"name": "x", "audience": {"include": [tables["b_segment"].pk]}}, format="json"
    )
    assert response.status_code == 400 and "audience" in str(response.json()["error"]["fields"])


@pytest.mark.parametrize("levels", [50, 2_000, 100_000])
def test_json_nested_past_the_parser_is_a_form_error_not_a_500(world: World, api_a: APIClient, tables, levels: int):
    """Python's JSON decoder gives up on deep nesting with RecursionError, which is not a ValueError."""
    doors = Doors(world, api_a, tables)
    text = '{"all": [' * levels + "]}" * levels
    slug = world.tenant_a.slug
    answers = {
        "builder preview": doors.ui.post(
            f"/t/{slug}/segments/preview/", '{"rules": ' + text + "}", content_type="application/json"
        ),
        "segment form": doors.ui.post(f"/t/{slug}/segments/new/", {"name": "h", "kind": "dynamic", "rules": text}),
        "journey branch page": doors.step_page("s1", {"rules": text}),
        "API preview": api_a.generic(
            "POST", "/api/v1/segments/preview/", '{"rules": ' + text + "}", content_type="application/json"
        ),
    }
    for door, response in answers.items():
        assert response.status_code in (200, 400), (door, response.status_code)
        assert "Traceback" not in response.content.decode("utf-8", "replace")
