"""Rule trees to start from: the segment types of the brief and the seed's use cases.

The builder offers them ("Start from a template") and the demo tenant is seeded with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StarterTemplate:
    """A rule tree to start from: the segment types of the brief and the seed's use cases."""

    key: str
    label: str
    section: str
    rules: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "section": self.section, "rules": self.rules}


def _field(field: str, op: str, value: Any = None) -> dict[str, Any]:
    return {"type": "field", "field": field, "op": op, **({} if value is None else {"value": value})}


def _event(name: str, op: str, days: int, count: int | None = None) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "event", "name": name, "op": op}
    if count is not None:
        node["count"] = count
    node["window"] = {"within_days": days}
    return node


TYPES, USE_CASES = "Segment types", "Use cases"
STARTER_TEMPLATES: tuple[StarterTemplate, ...] = (
    StarterTemplate("demographic", "Demographic: aged 25-34", TYPES, {"all": [_field("age", "between", [25, 34])]}),
    StarterTemplate(
        "geographic", "Geographic: in Germany or France", TYPES, {"all": [_field("country", "in", ["DE", "FR"])]}
    ),
    StarterTemplate(
        "behavioural",
        "Behavioural: added to cart twice this week, no purchase",
        TYPES,
        {"all": [_event("add_to_cart", "at_least", 7, count=2), _event("purchase", "not_performed", 7)]},
    ),
    StarterTemplate(
        "psychographic",
        "Psychographic: interested in sports or outdoors",
        TYPES,
        {"all": [_field("interests", "contains_any", ["running", "fitness", "football", "tennis", "outdoor"])]},
    ),
    StarterTemplate("lifecycle", "Lifecycle: leads", TYPES, {"all": [_field("lifecycle_stage", "eq", "lead")]}),
    StarterTemplate(
        "new_visitors",
        "New visitors (first seen in the last 7 days)",
        USE_CASES,
        {"all": [_field("lifecycle_stage", "eq", "new_visitor"), _field("first_seen_at", "within_last", 7)]},
    ),
    StarterTemplate(
        "leads_de_fr",
        "Leads in Germany and France",
        USE_CASES,
        {"all": [_field("lifecycle_stage", "eq", "lead"), _field("country", "in", ["DE", "FR"])]},
    ),
    StarterTemplate(
        "ready_to_buy",
        "Ready to buy: carts this week, no purchase",
        USE_CASES,
        {"all": [_event("add_to_cart", "at_least", 7, count=2), _event("purchase", "not_performed", 7)]},
    ),
    StarterTemplate(
        "lapsed_customers",
        "Lapsed customers: bought before, not in 90 days",
        USE_CASES,
        {"all": [_field("order_count", "gte", 1), _field("last_order_at", "more_than_days_ago", 90)]},
    ),
    StarterTemplate(
        "vips",
        "VIPs: loyal advocates or 500+ revenue",
        USE_CASES,
        {"any": [_field("lifecycle_stage", "eq", "loyal_advocate"), _field("total_revenue", "gte", 500)]},
    ),
)
STARTER_TEMPLATES_BY_KEY = {template.key: template for template in STARTER_TEMPLATES}
