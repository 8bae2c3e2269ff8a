"""The compiler against an independent evaluation (tests/segments/oracle.py) on generated data.

Every condition type and operator is checked on its own, then hypothesis builds nested
trees of them (all / any / not) and each must select exactly the oracle's contacts.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contacts.consent import suppression_add
from contacts.generator import load_with_orm
from contacts.models import AttributeDefinition, Contact, Suppression
from segments.compiler import Context, matching_contacts
from segments.models import Segment
from segments.rules import Registry, validate
from segments.services import rfm_recompute, segment_create, segment_refresh
from tenants.audit import Actor
from tenants.context import tenant_context
from tests.segments.oracle import World

pytestmark = pytest.mark.django_db
NOW = dt.datetime(2026, 11, 20, 10, 0, tzinfo=dt.UTC)
ACTOR = Actor.system("test")


@pytest.fixture
def data(world):
    """Tenant A with 250 generated contacts and every kind of row a condition can read."""
    tenant = world.tenant_a
    load_with_orm(tenant, contacts=250, seed=11, now=NOW)
    with tenant_context(tenant.id):
        AttributeDefinition.objects.create(tenant=tenant, key="badges", label="Badges", type="list")
        contacts = list(Contact.objects.filter(tenant=tenant).order_by("pk"))
        for index, contact in enumerate(contacts[::3]):
            contact.attributes = {**contact.attributes, "badges": ["gold", "early"][: 1 + index % 2]}
            contact.save(update_fields=["attributes"])
        for contact in contacts[::17]:
            if contact.email:
                suppression_add(
                    tenant=tenant, channel="email", address=contact.email, reason=Suppression.Reason.MANUAL, actor=ACTOR
                )
        contacts[5].erased_at = NOW
        contacts[5].save(update_fields=["erased_at"])
        rfm_recompute(tenant=tenant, now=NOW)
        buyers = segment_create(
            tenant=tenant,
            actor=ACTOR,
            name="Buyers",
            rules={"all": [{"type": "field", "field": "order_count", "op": "gte", "value": 1}]},
        )
        segment_refresh(segment=buyers, now=NOW)
        sample = contacts[10]
        yield {
            "tenant": tenant,
            "buyers": buyers.pk,
            "email": sample.email,
            "city": sample.city,
            "birth": sample.birth_date,
        }


def check(tenant, rules: dict[str, Any], world: World | None = None) -> set[int]:
    registry = Registry.for_tenant(tenant)
    errors = validate(rules, registry)
    assert not errors, errors
    ctx = Context(tenant_id=tenant.pk, attributes=registry.attributes, now=NOW)
    compiled = set(matching_contacts(rules, ctx).values_list("pk", flat=True))
    expected = (world or World.load(tenant, NOW)).matching(rules)
    assert compiled == expected, f"{rules}: compiled {len(compiled)}, expected {len(expected)}"
    return compiled


def leaves(d: dict[str, Any]) -> list[dict[str, Any]]:
    """One condition per type and operator, with values that occur in the generated data."""

    def f(field: str, op: str, value: Any = None) -> dict[str, Any]:
        return {"type": "field", "field": field, "op": op, **({} if value is None else {"value": value})}

    def a(key: str, op: str, value: Any = None) -> dict[str, Any]:
        return {"type": "attribute", "key": key, "op": op, **({} if value is None else {"value": value})}

    birth = d["birth"].isoformat() if d["birth"] else "1985-05-05"
    return [
        f("country", "in", ["DE", "FR"]), f("country", "eq", "de"), f("country", "neq", "DE"), f("country", "not_in", ["DE", "GB"]),
        f("country", "is_set"), f("country", "not_set"),
        f("email", "eq", d["email"].upper()), f("email", "in", [d["email"]]), f("email", "starts_with", "a"),
        f("email", "contains", "mail"), f("email", "not_contains", "mail"), f("email", "is_set"), f("email", "not_set"),
        f("first_name", "contains", "an"), f("first_name", "starts_with", "L"), f("last_name", "neq", "Müller"),
        f("city", "eq", d["city"] or "Berlin"), f("phone", "is_set"), f("gender", "in", ["female", "f"]),
        f("interests", "contains_any", ["running", "fitness"]), f("interests", "contains_all", ["running", "fitness"]),
        f("interests", "contains_none", ["running"]), f("interests", "is_set"), f("interests", "not_set"),
        f("lifecycle_stage", "in", ["lead", "first_time_buyer"]), f("lifecycle_stage", "eq", "lead"),
        f("lifecycle_stage", "neq", "new_visitor"), f("lifecycle_stage", "not_in", ["lead"]),
        f("birth_date", "before", "1980-01-01"), f("birth_date", "after", "1990-06-30"), f("birth_date", "on", birth),
        f("birth_date", "between", ["1975-01-01", "1985-12-31"]), f("birth_date", "within_last", 3650),
        f("birth_date", "more_than_days_ago", 3650), f("birth_date", "anniversary_within", 30),
        f("birth_date", "anniversary_within", 366), f("birth_date", "is_set"), f("birth_date", "not_set"),
        f("age", "between", [25, 34]), f("age", "gte", 40), f("age", "lt", 30), f("age", "eq", 33), f("age", "neq", 33),
        f("age", "gt", 50.5), f("age", "lte", 20),
        f("last_seen_at", "within_last", 7), f("last_seen_at", "within_last", 30), f("last_seen_at", "more_than_days_ago", 30),
        f("last_seen_at", "before", "2026-06-01"), f("last_seen_at", "after", "2026-11-01"), f("last_seen_at", "on", "2026-11-19"),
        f("last_seen_at", "between", ["2026-10-01", "2026-10-31"]), f("last_seen_at", "anniversary_within", 10),
        f("last_seen_at", "is_set"), f("last_seen_at", "not_set"), f("created_at", "within_last", 1),
        f("order_count", "gte", 2), f("order_count", "eq", 0), f("order_count", "between", [1, 3]), f("order_count", "neq", 1),
        f("order_count", "lt", 1), f("total_revenue", "gt", 100), f("total_revenue", "lte", 50.5),
        f("last_engaged_at", "within_last", 30), f("last_engaged_at", "not_set"), f("last_order_at", "more_than_days_ago", 90),
        a("plan", "eq", "pro"), a("plan", "in", ["pro", "business"]), a("plan", "neq", "pro"), a("plan", "contains", "r"),
        a("plan", "starts_with", "p"), a("plan", "is_set"), a("plan", "not_set"), a("plan", "not_in", ["free"]),
        a("loyalty_points", "gt", 100), a("loyalty_points", "between", [10, 500]), a("loyalty_points", "is_set"),
        a("loyalty_points", "not_set"), a("loyalty_points", "neq", 0),
        a("app_user", "is_true"), a("app_user", "is_false"), a("app_user", "is_set"), a("app_user", "not_set"),
        a("signup_date", "before", "2025-06-01"), a("signup_date", "within_last", 365), a("signup_date", "more_than_days_ago", 365),
        a("signup_date", "anniversary_within", 30), a("signup_date", "between", ["2024-01-01", "2025-12-31"]),
        a("signup_date", "on", "2025-03-03"), a("signup_date", "after", "2026-01-01"),
        a("badges", "contains_any", ["gold"]), a("badges", "contains_all", ["gold", "early"]), a("badges", "contains_none", ["gold"]),
        a("badges", "is_set"), a("badges", "not_set"),
        {"type": "lifecycle_change", "stage": "lead", "within_days": 30},
        {"type": "lifecycle_change", "stage": "first_time_buyer", "within_days": 365},
        {"type": "consent", "channel": "email", "purpose": "marketing", "status": "granted"},
        {"type": "consent", "channel": "email", "purpose": "marketing", "status": "withdrawn"},
        {"type": "consent", "channel": "email", "purpose": "marketing", "status": "pending"},
        {"type": "consent", "channel": "email", "purpose": "marketing", "status": "never_asked"},
        {"type": "consent", "channel": "sms", "purpose": "marketing", "status": "granted"},
        {"type": "suppression", "channel": "email", "suppressed": True},
        {"type": "suppression", "channel": "email", "suppressed": False},
        {"type": "suppression", "channel": "sms", "suppressed": True},
        {"type": "event", "name": "purchase", "op": "performed"},
        {"type": "event", "name": "purchase", "op": "not_performed", "window": {"within_days": 90}},
        {"type": "event", "name": "purchase", "op": "at_least", "count": 2, "window": {"within_days": 30}},
        {"type": "event", "name": "purchase", "op": "at_most", "count": 1, "window": {"within_days": 365}},
        {"type": "event", "name": "purchase", "op": "exactly", "count": 0},
        {"type": "event", "name": "purchase", "op": "exactly", "count": 2},
        {"type": "event", "name": "add_to_cart", "op": "at_least", "count": 2, "window": {"within_days": 7}},
        {"type": "event", "name": "page_view", "op": "performed", "window": {"between": ["2026-10-01", "2026-10-31"]}},
        {"type": "event", "name": "purchase", "op": "performed", "window": {"within_days": 365},
         "where": [{"property": "category", "op": "eq", "value": "shoes"}]},
        {"type": "event", "name": "purchase", "op": "at_least", "count": 2,
         "where": [{"property": "category", "op": "in", "value": ["shoes", "apparel"]}]},
        {"type": "event", "name": "purchase", "op": "performed", "where": [{"property": "category", "op": "neq", "value": "shoes"}]},
        {"type": "event", "name": "purchase", "op": "exactly", "count": 1, "where": [{"property": "items", "op": "gte", "value": 2}]},
        {"type": "event", "name": "add_to_cart", "op": "performed", "where": [{"property": "price", "op": "lt", "value": 40}]},
        {"type": "event", "name": "page_view", "op": "performed", "where": [{"property": "path", "op": "contains", "value": "/shoes"}]},
        {"type": "event", "name": "purchase", "op": "performed", "where": [{"property": "coupon", "op": "not_set"}]},
        {"type": "event", "name": "purchase", "op": "performed", "where": [{"property": "items", "op": "eq", "value": 1}]},
        {"type": "event", "name": "purchase", "op": "performed", "where": [{"property": "sku", "op": "not_in", "value": ["SH-1000"]}]},
        {"type": "event_aggregate", "name": "purchase", "fn": "sum", "property": "revenue", "op": "gte", "value": 500,
         "window": {"within_days": 180}},
        {"type": "event_aggregate", "name": "purchase", "fn": "sum", "property": "revenue", "op": "lt", "value": 100},
        {"type": "event_aggregate", "name": "purchase", "fn": "avg", "property": "revenue", "op": "between", "value": [20, 100]},
        {"type": "event_aggregate", "name": "purchase", "fn": "max", "property": "revenue", "op": "gt", "value": 100,
         "window": {"within_days": 365}},
        {"type": "event_aggregate", "name": "purchase", "fn": "min", "property": "revenue", "op": "lt", "value": 30},
        {"type": "event_aggregate", "name": "purchase", "fn": "sum", "property": "revenue", "op": "gte", "value": 100,
         "where": [{"property": "category", "op": "eq", "value": "shoes"}]},
        {"type": "event_aggregate", "name": "purchase", "fn": "sum", "property": "items", "op": "gte", "value": 3},
        {"type": "event_aggregate", "name": "add_to_cart", "fn": "avg", "property": "price", "op": "gte", "value": 50},
        {"type": "engagement", "action": "opened", "op": "performed", "window": {"within_days": 30}},
        {"type": "engagement", "action": "clicked", "op": "not_performed", "window": {"within_days": 90}},
        {"type": "engagement", "action": "any", "op": "performed"},
        {"type": "rfm", "score": "recency", "op": "gte", "value": 4},
        {"type": "rfm", "score": "frequency", "op": "eq", "value": 5},
        {"type": "rfm", "score": "monetary", "op": "between", "value": [2, 3]},
        {"type": "rfm", "score": "recency", "op": "neq", "value": 1},
        {"type": "rfm_group", "op": "in", "value": ["champions", "loyal"]},
        {"type": "rfm_group", "op": "not_in", "value": ["lost"]},
        {"type": "segment", "op": "in", "segment": d["buyers"]},
        {"type": "segment", "op": "not_in", "segment": d["buyers"]},
    ]  # fmt: skip


def test_every_condition_matches_the_oracle(data):
    tenant = data["tenant"]
    with tenant_context(tenant.id):
        world = World.load(tenant, NOW)
        nonempty = 0
        for leaf in leaves(data):
            nonempty += bool(check(tenant, {"all": [leaf]}, world))
        # The data exercises the conditions: most of them select someone.
        assert nonempty > len(leaves(data)) * 0.7


def trees(leaf_pool: list[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    leaf = st.sampled_from(leaf_pool)
    return st.recursive(
        leaf,
        lambda children: st.builds(lambda key, items: {key: items}, st.sampled_from(["all", "any", "not"]),
                                   st.lists(children, min_size=1, max_size=4)),
        max_leaves=8,
    ).map(lambda tree: tree if any(k in tree for k in ("all", "any", "not")) else {"all": [tree]})  # fmt: skip


def test_nested_trees_match_the_oracle(data):
    tenant = data["tenant"]
    pool = leaves(data)
    with tenant_context(tenant.id):
        world = World.load(tenant, NOW)

        @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        @given(trees(pool))
        def run(tree):
            check(tenant, tree, world)

        run()


def test_empty_groups(data):
    tenant = data["tenant"]
    with tenant_context(tenant.id):
        everyone = Contact.objects.filter(tenant=tenant, erased_at__isnull=True).count()
        assert len(check(tenant, {"all": []})) == everyone
        # Only the top may be empty: a nested empty group is a mistake to point at.
        errors = validate({"all": [{"any": []}]}, Registry.for_tenant(tenant))
        assert [e.path for e in errors] == ["all.0.any"]


def test_segment_of_segments_uses_materialised_membership(data):
    tenant = data["tenant"]
    with tenant_context(tenant.id):
        buyers = Segment.objects.get(pk=data["buyers"])
        rules = {"all": [{"type": "segment", "op": "in", "segment": buyers.pk}]}
        assert len(check(tenant, rules)) == buyers.size > 0
