"""Injection through the rule tree, attempted through the API.

Every name a tree carries (contact fields, attribute keys, event and property names,
operators, condition types, keys) is checked against the registry or a strict pattern and
refused with the path of the node and a message. Every value is a query parameter: a
SQL-looking value matches only itself, and the compiled SQL never contains it.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from rest_framework.test import APIClient

from contacts.ingest import events_ingest
from contacts.models import AttributeDefinition, Contact
from segments.compiler import Context, matching_contacts
from segments.models import Segment
from segments.rules import Registry, validate
from tenants.context import platform_access, tenant_context
from tenants.models import Tenant
from tests.conftest import World

pytestmark = pytest.mark.django_db

VALIDATE = "/api/v1/segments/validate/"
PREVIEW = "/api/v1/segments/preview/"
SQL = [
    "country; DROP TABLE contacts_contact; --",
    "id) OR 1=1 --",
    "' OR '1'='1",
    "x'); DELETE FROM segments_segment; --",
    "1; SELECT pg_sleep(10)",
    "$$; DROP TABLE x; $$",
    "/* */ UNION SELECT password FROM tenants_user --",
]
ORM_TRICKS = ["attributes__x", "country__in", "email__regex", "tenant_id", "tenant__name", "pk", "id", "password"]
JSON_PATH_TRICKS = ["plan.x", "plan->>'x'", "{plan,x}", "$.plan", "plan[0]", 'pl"an', "pl'an", "plan x", "", "0plan"]
UNICODE = ["ｃｏｕｎｔｒｙ", "country\u200b", "country\n", "COUNTRY", "country\x00", "x" * 10_000]
HOSTILE_NAMES = [*SQL, *ORM_TRICKS, *JSON_PATH_TRICKS, *UNICODE]
LITERAL = "' OR 1=1 --"


def one_condition(condition: dict[str, Any]) -> dict[str, Any]:
    return {"all": [condition]}


def errors_of(client: APIClient, rules: Any) -> list[dict[str, str]]:
    response = client.post(VALIDATE, {"rules": rules}, format="json")
    assert response.status_code == 200, response.content[:300]
    body = response.json()
    assert body["valid"] is (body["errors"] == [])
    return body["errors"]


def refused_at(client: APIClient, rules: Any, path: str) -> str:
    """The one message for ``path``, after checking it is the tree's only error and reads well."""
    errors = errors_of(client, rules)
    assert [e["path"] for e in errors] == [path], errors
    message = errors[0]["message"]
    assert message and len(message) < 300  # a 10,000-character name is quoted, not echoed in full
    return message


def count(client: APIClient, rules: Any) -> int:
    response = client.post(PREVIEW, {"rules": rules}, format="json")
    assert response.status_code == 200, response.content[:300]
    body = response.json()
    assert body["errors"] == [], body["errors"]
    return body["count"]


@pytest.fixture
def data(world: World) -> dict[str, Any]:
    """Tenant A: an ordinary contact, and one whose values are SQL-looking text."""
    tenant = world.tenant_a
    with tenant_context(tenant.id):
        for key, kind in (("plan", "text"), ("points", "number"), ("badges", "list"), ("signup", "date")):
            AttributeDefinition.objects.create(tenant=tenant, key=key, label=key.title(), type=kind)
        plain = Contact.objects.create(
            tenant=tenant, email="ada@example.com", first_name="Ada", country="DE", interests=["shoes"],
            attributes={"plan": "pro", "points": 5, "badges": ["gold"], "signup": "2025-01-01"},
        )  # fmt: skip
        odd = Contact.objects.create(
            tenant=tenant, email="odd@example.com", first_name=LITERAL, country="FR", interests=[LITERAL.lower()],
            attributes={"plan": LITERAL, "badges": [LITERAL.lower()]},
        )  # fmt: skip
        events_ingest(
            tenant=tenant,
            events=[
                {"contact_id": plain.pk, "event": "purchase", "revenue": "10", "properties": {"category": "shoes"}},
                {"contact_id": odd.pk, "event": "purchase", "revenue": "20", "properties": {"category": LITERAL}},
            ],
        )
    return {"tenant": tenant, "plain": plain, "odd": odd}


def contact_rows() -> int:
    with platform_access():
        return Contact.all_tenants.count()


# --- names are refused with a path ------------------------------------------------------------
@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=repr)
def test_a_hostile_field_name_is_refused(world: World, api_a: APIClient, name: str):
    condition = {"type": "field", "field": name, "op": "eq", "value": "DE"}
    assert refused_at(api_a, one_condition(condition), "all.0.field").startswith("Unknown contact field")


@pytest.mark.parametrize("key", [*SQL, *ORM_TRICKS, *JSON_PATH_TRICKS, *UNICODE, "plan\n", "PLAN"], ids=repr)
def test_a_hostile_attribute_key_is_refused(world: World, api_a: APIClient, key: str):
    condition = {"type": "attribute", "key": key, "op": "eq", "value": "pro"}
    assert refused_at(api_a, one_condition(condition), "all.0.key").startswith("Unknown custom attribute")


@pytest.mark.parametrize("name", [*SQL, "purchase\n", "purchase\x00", "purch%", "purch*", "", "x" * 101], ids=repr)
def test_a_hostile_event_name_is_refused(world: World, api_a: APIClient, name: str):
    for condition in (
        {"type": "event", "name": name, "op": "performed"},
        {"type": "event_aggregate", "name": name, "fn": "sum", "property": "revenue", "op": "gt", "value": 1},
    ):
        assert refused_at(api_a, one_condition(condition), "all.0.name").startswith("Expected an event name")


@pytest.mark.parametrize("prop", [*SQL, *JSON_PATH_TRICKS, "category\n", "x" * 65], ids=repr)
def test_a_hostile_property_name_is_refused(world: World, api_a: APIClient, prop: str):
    where = {
        "type": "event",
        "name": "purchase",
        "op": "performed",
        "where": [{"property": prop, "op": "eq", "value": 1}],
    }
    assert refused_at(api_a, one_condition(where), "all.0.where.0.property").startswith("Expected a property name")
    total = {"type": "event_aggregate", "name": "purchase", "fn": "max", "property": prop, "op": "gt", "value": 1}
    assert refused_at(api_a, one_condition(total), "all.0.property").startswith("Expected revenue or a numeric")


@pytest.mark.parametrize(
    "op", [*SQL, "=", "exact", "__in", "regex", "iregex", "raw", "extra", "in; --", "EQ", None, 1, [], {}], ids=repr
)
def test_a_hostile_operator_is_refused(data, api_a: APIClient, op: Any):
    where = [{"property": "category", "op": op, "value": "x"}]
    conditions = {
        "all.0.op": {"type": "field", "field": "country", "op": op, "value": "DE"},
        "all.1.op": {"type": "attribute", "key": "points", "op": op, "value": 1},
        "all.2.op": {"type": "event", "name": "purchase", "op": op},
        "all.3.where.0.op": {"type": "event", "name": "purchase", "op": "performed", "where": where},
        "all.4.op": {"type": "rfm", "score": "recency", "op": op, "value": 3},
        "all.5.op": {"type": "segment", "op": op, "segment": 1},
    }  # fmt: skip
    errors = errors_of(api_a, {"all": list(conditions.values())})
    assert {e["path"] for e in errors} >= set(conditions)
    assert not {e["path"] for e in errors} - set(conditions) - {"all.5.segment"}


@pytest.mark.parametrize("kind", [*SQL, "Field", "field ", "__class__", "compile", None, 0, ["field"]], ids=repr)
def test_a_hostile_condition_type_is_refused(world: World, api_a: APIClient, kind: Any):
    message = refused_at(api_a, one_condition({"type": kind, "field": "country"}), "all.0.type")
    assert message.startswith("Unknown condition type")


@pytest.mark.parametrize("key", ["field__in", "extra", "raw", "where", "sql", "'; --", "tenant_id"])
def test_an_unknown_key_on_a_condition_is_refused(world: World, api_a: APIClient, key: str):
    condition = {"type": "field", "field": "country", "op": "eq", "value": "DE", key: "1=1"}
    assert refused_at(api_a, one_condition(condition), f"all.0.{key}").startswith("Unknown key")


@pytest.mark.parametrize("target", ["1 OR 1=1", True, 1.0, -1, 10**20, None, [1], {"id": 1}], ids=repr)
def test_a_segment_reference_must_be_an_id_of_this_workspace(world: World, api_a: APIClient, target: Any):
    condition = {"type": "segment", "op": "in", "segment": target}
    assert refused_at(api_a, one_condition(condition), "all.0.segment").startswith("No segment with id")


def test_another_workspaces_segment_cannot_be_referenced(world: World, data, api_a: APIClient):
    with tenant_context(world.tenant_b.id):
        theirs = Segment.objects.create(tenant=world.tenant_b, name="B", rules=one_condition({"type": "x"}))
    condition = {"type": "segment", "op": "in", "segment": theirs.pk}
    assert refused_at(api_a, one_condition(condition), "all.0.segment").startswith("No segment with id")


def test_a_hostile_tree_is_refused_on_create_and_nothing_is_saved(data, api_a: APIClient):
    rules = {"any": [{"type": "field", "field": name, "op": "eq", "value": "DE"} for name in SQL]}
    response = api_a.post("/api/v1/segments/", {"name": "Evil", "rules": rules}, format="json")
    assert response.status_code == 400
    paths = [error["path"] for error in response.json()["error"]["fields"]["rules"]]
    assert paths == [f"any.{i}.field" for i in range(len(SQL))]
    with platform_access():
        assert not Segment.all_tenants.exists()


# --- values are parameters -----------------------------------------------------------------------
@pytest.mark.parametrize("value", [*SQL, "%", "_", "\\", "%' --", '"', "\\'; --", "ﬀ"], ids=repr)
def test_a_sql_looking_value_matches_nothing_and_breaks_nothing(data, api_a: APIClient, value: str):
    before = contact_rows()
    conditions = [
        {"type": "field", "field": "first_name", "op": "eq", "value": value},
        {"type": "field", "field": "first_name", "op": "contains", "value": value},
        {"type": "field", "field": "email", "op": "starts_with", "value": value},
        {"type": "field", "field": "city", "op": "in", "value": [value, "Berlin"]},
        {"type": "field", "field": "interests", "op": "contains_any", "value": [value]},
        {"type": "attribute", "key": "plan", "op": "eq", "value": value},
        {"type": "attribute", "key": "plan", "op": "contains", "value": value},
        {"type": "attribute", "key": "badges", "op": "contains_all", "value": [value]},
        {"type": "event", "name": "purchase", "op": "performed",
         "where": [{"property": "category", "op": "eq", "value": value}]},
        {"type": "event", "name": "purchase", "op": "at_least", "count": 1,
         "where": [{"property": "category", "op": "contains", "value": value}]},
    ]  # fmt: skip
    for condition in conditions:
        assert count(api_a, one_condition(condition)) == 0, condition
    # Negated, each matches everyone: the value neither widened nor broke the query.
    assert count(api_a, {"not": [{"any": conditions}]}) == 2
    assert contact_rows() == before


def test_a_sql_looking_value_matches_exactly_the_contact_that_holds_it(data, api_a: APIClient):
    odd = data["odd"].pk
    conditions = [
        {"type": "field", "field": "first_name", "op": "eq", "value": LITERAL},
        {"type": "field", "field": "first_name", "op": "starts_with", "value": "' or 1"},
        {"type": "field", "field": "interests", "op": "contains_any", "value": [LITERAL]},
        {"type": "attribute", "key": "plan", "op": "eq", "value": LITERAL},
        {"type": "attribute", "key": "plan", "op": "in", "value": [LITERAL, "enterprise"]},
        {"type": "attribute", "key": "badges", "op": "contains_all", "value": [LITERAL]},
        {"type": "event", "name": "purchase", "op": "performed",
         "where": [{"property": "category", "op": "eq", "value": LITERAL}]},
    ]  # fmt: skip
    for condition in conditions:
        response = api_a.post(PREVIEW, {"rules": one_condition(condition)}, format="json").json()
        assert (response["count"], [row["id"] for row in response["sample"]]) == (1, [odd]), condition


def test_like_wildcards_in_a_value_are_literal(data, api_a: APIClient):
    assert count(api_a, one_condition({"type": "field", "field": "email", "op": "contains", "value": "%"})) == 0
    assert count(api_a, one_condition({"type": "field", "field": "email", "op": "starts_with", "value": "_"})) == 0
    assert count(api_a, one_condition({"type": "field", "field": "email", "op": "contains", "value": "@"})) == 2


def test_the_compiled_sql_carries_names_and_values_only_as_parameters(world: World, data):
    """Even a key that slipped into the registry (here written straight to the table, past the
    service that refuses it) and hostile values reach the database as parameters, never as SQL."""
    tenant: Tenant = data["tenant"]
    evil_key = "plan') OR 1=1 --"
    with tenant_context(tenant.id):
        AttributeDefinition.objects.create(tenant=tenant, key=evil_key, label="Evil", type="number")
        AttributeDefinition.objects.create(tenant=tenant, key=evil_key + "t", label="Evil text", type="text")
        registry = Registry.for_tenant(tenant)
        rules = {
            "any": [
                {"type": "field", "field": "first_name", "op": "eq", "value": SQL[0]},
                {"type": "attribute", "key": evil_key, "op": "gt", "value": 1},
                {"type": "attribute", "key": evil_key + "t", "op": "eq", "value": SQL[1]},
                {"type": "event", "name": "purchase", "op": "performed",
                 "where": [{"property": "category", "op": "eq", "value": SQL[2]},
                           {"property": "price", "op": "gt", "value": 3}]},
                {"type": "event_aggregate", "name": "purchase", "fn": "avg", "property": "price", "op": "gt",
                 "value": 1, "where": [{"property": "category", "op": "in", "value": [SQL[3], SQL[4]]}]},
            ]
        }  # fmt: skip
        assert validate(rules, registry) == []
        contacts = matching_contacts(rules, Context(tenant_id=tenant.pk, attributes=registry.attributes))
        sql, params = contacts.query.sql_with_params()
        for text in (evil_key, *SQL[:5]):
            assert text not in sql
        flat = [str(p) for p in params]
        assert {evil_key, evil_key + "t", "purchase", "category", "price"} <= set(flat)
        assert all(any(text in p for p in flat) for text in SQL[:5])
        assert list(contacts) == []  # and the query runs


# --- sizes, bytes and depths ------------------------------------------------------------------------
def test_huge_strings_are_refused_with_their_limit(data, api_a: APIClient):
    huge = "x" * 100_000
    rules = {
        "all": [
            {"type": "field", "field": "city", "op": "eq", "value": huge},
            {"type": "field", "field": "city", "op": "in", "value": ["ok", huge]},
            {"type": "event", "name": "purchase", "op": "performed",
             "where": [{"property": "category", "op": "eq", "value": huge}]},
        ]
    }  # fmt: skip
    errors = errors_of(api_a, rules)
    assert errors == [
        {"path": "all.0.value", "message": "At most 200 characters."},
        {"path": "all.1.value.1", "message": "At most 200 characters."},
        {"path": "all.2.where.0.value", "message": "At most 200 characters."},
    ]


def test_nul_bytes_are_refused_everywhere(data, api_a: APIClient):
    rules = {
        "all": [
            {"type": "field", "field": "city", "op": "eq", "value": "Ber\x00lin"},
            {"type": "field", "field": "country", "op": "eq", "value": "DE\x00"},
            {"type": "field", "field": "birth_date", "op": "on", "value": "2000-01-0\x00"},
            {"type": "event", "name": "purchase", "op": "performed",
             "where": [{"property": "category", "op": "in", "value": ["shoes\x00"]}]},
            {"type": "consent", "channel": "email", "purpose": "marketing\x00", "status": "granted"},
        ]
    }  # fmt: skip
    paths = [e["path"] for e in errors_of(api_a, rules)]
    assert paths == ["all.0.value", "all.1.value", "all.2.value", "all.3.where.0.value.0", "all.4.purpose"]
    response = api_a.post("/api/v1/segments/", {"name": "Nul\x00name", "rules": {"all": []}}, format="json")
    assert response.status_code == 400 and "name" in response.json()["error"]["fields"]


def test_depth_bombs_are_refused(data, api_a: APIClient):
    leaf: Any = {"type": "field", "field": "country", "op": "eq", "value": "DE"}
    nine = leaf
    for _ in range(9):
        nine = {"any": [nine]}
    assert refused_at(api_a, nine, ".".join(["any.0"] * 8)) == "Groups nest at most 8 levels deep."
    for levels in (30, 1_000, 200_000):  # past the body's nesting cap, and past Python's recursion limit
        body = '{"rules": ' + '{"not": [' * levels + "]}" * levels + "}"
        response = api_a.generic("POST", VALIDATE, body, content_type="application/json")
        assert response.status_code == 400, levels
        assert response.json()["error"] == {
            "code": "parse_error",
            "message": "JSON parse error - nested more than 40 levels deep.",
        }
    deep_value: Any = "DE"
    for _ in range(30):
        deep_value = [deep_value]
    message = refused_at(api_a, one_condition({**leaf, "op": "in", "value": deep_value}), "all.0.value.0")
    assert "is not an ISO 3166 country code" in message


def test_ten_thousand_conditions_are_refused_at_the_limit(data, api_a: APIClient):
    leaf = {"type": "field", "field": "country", "op": "eq", "value": "DE"}
    assert errors_of(api_a, {"all": [leaf] * 200}) == []
    started = time.perf_counter()
    errors = errors_of(api_a, {"all": [leaf] * 10_000})
    assert errors == [{"path": "all.200", "message": "A segment has at most 200 conditions."}]
    nested = {"any": [{"all": [leaf] * 150}, {"not": [leaf] * 9_850}]}
    assert errors_of(api_a, nested) == [{"path": "any.1.not.50", "message": "A segment has at most 200 conditions."}]
    assert time.perf_counter() - started < 5
    many_values = one_condition({**leaf, "op": "in", "value": ["DE"] * 100_000})
    assert refused_at(api_a, many_values, "all.0.value") == "At most 500 values."
    many_filters = {"type": "event", "name": "purchase", "op": "performed",
                    "where": [{"property": "category", "op": "eq", "value": "x"}] * 11}  # fmt: skip
    assert refused_at(api_a, one_condition(many_filters), "all.0.where").startswith("Expected a list of at most 10")


def test_thousands_of_empty_groups_are_answered_not_crashed(data, api_a: APIClient):
    errors = errors_of(api_a, {"all": [{"any": []}] * 5_000})
    assert len(errors) == 5_000 and errors[0] == {
        "path": "all.0.any",
        "message": "This group is empty: add a condition or remove the group.",
    }


@pytest.mark.parametrize(
    "condition",
    [
        {"type": "field", "field": "birth_date", "op": "after", "value": "9999-12-31"},
        {"type": "field", "field": "birth_date", "op": "on", "value": "9999-12-31"},
        {"type": "field", "field": "last_seen_at", "op": "between", "value": ["0001-01-01", "9999-12-31"]},
        {"type": "field", "field": "last_seen_at", "op": "after", "value": "9999-12-31"},
        {"type": "field", "field": "age", "op": "gte", "value": -999_999_999_999},
        {"type": "field", "field": "age", "op": "between", "value": [-999_999_999_999, 999_999_999_999]},
        {"type": "field", "field": "order_count", "op": "gt", "value": 999_999_999_999},
        {"type": "field", "field": "total_revenue", "op": "lte", "value": -999_999_999_999.5},
        {"type": "attribute", "key": "points", "op": "between", "value": [-1e12, 1e12]},
        {"type": "event", "name": "purchase", "op": "performed", "window": {"between": ["9999-12-31", "9999-12-31"]},
         "where": [{"property": "category", "op": "eq", "value": 10**30}]},
        {"type": "event", "name": "purchase", "op": "exactly", "count": 1_000_000, "window": {"within_days": 3650}},
    ],
    ids=lambda c: f"{c.get('field') or c.get('key') or c.get('name')}-{c['op']}",
)  # fmt: skip
def test_extreme_values_are_answered_not_crashed(data, api_a: APIClient, condition: dict[str, Any]):
    assert count(api_a, one_condition(condition)) in (0, 1, 2)


def test_a_fraction_is_compared_exactly_with_an_integer_column(data, api_a: APIClient):
    with tenant_context(data["tenant"].id):
        Contact.objects.filter(pk=data["plain"].pk).update(order_count=1)
        Contact.objects.filter(pk=data["odd"].pk).update(order_count=3)

    def orders(op: str, value: Any) -> int:
        return count(api_a, one_condition({"type": "field", "field": "order_count", "op": op, "value": value}))

    assert (orders("eq", 1), orders("eq", 1.5), orders("neq", 1.5), orders("gte", 0.5), orders("lt", 1.5)) == (
        1,
        0,
        2,
        2,
        1,
    )


def test_segment_names_are_stored_as_given(data, api_a: APIClient):
    response = api_a.post("/api/v1/segments/", {"name": SQL[0], "rules": {"all": []}}, format="json")
    assert response.status_code == 201, response.content
    assert [s["name"] for s in api_a.get("/api/v1/segments/").json()["results"]] == [SQL[0]]
