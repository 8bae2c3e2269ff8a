"""The rule tree in the OpenAPI schema, and the seed use cases as examples.

The components are built from the rule language's own tables (segments/rules.py), so the
documentation cannot drift from the validator. docs/segments.md is the long form.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import OpenApiExample

from contacts.models import Channel, LifecycleStage
from segments.models import RfmGroup, Segment
from segments.rules import (
    AGGREGATE_FNS,
    AGGREGATE_OPS,
    CONDITION_TYPES,
    CONSENT_STATES,
    CONTACT_FIELD_SPECS,
    ENGAGEMENT_ACTIONS,
    EVENT_OPS,
    MAX_CONDITIONS,
    MAX_DAYS,
    MAX_DEPTH,
    MAX_LIST_VALUES,
    MAX_PROPERTY_FILTERS,
    MAX_TEXT,
    OPS_BY_TYPE,
    PROPERTY_OPS,
    RFM_SCORES,
    SEGMENT_OPS,
    SUPPRESSION_ADDRESS,
)

TREE = "RuleTree"
NODE = "RuleNode"
CONDITION = "RuleCondition"
WINDOW = "RuleWindow"
PROPERTY_FILTER = "RulePropertyFilter"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _enum(values: Any, description: str = "") -> dict[str, Any]:
    # Wrapped in allOf so drf-spectacular's enum hook leaves it inline: the language reuses key
    # names ("op", "type", "channel") with different choices, which the hook would report as collisions.
    schema: dict[str, Any] = {"allOf": [{"type": "string", "enum": list(values)}]}
    if description:
        schema["description"] = description
    return schema


def _days(description: str, most: int = MAX_DAYS) -> dict[str, Any]:
    return {"type": "integer", "minimum": 1, "maximum": most, "description": description}


def _ops_table() -> str:
    return "; ".join(f"{kind}: {', '.join(ops)}" for kind, ops in OPS_BY_TYPE.items())


VALUE_SHAPES = (
    "The value's shape follows the operator: none for is_set, not_set, is_true and is_false; a whole "
    f"number of days (1-{MAX_DAYS}; anniversary_within 1-366) for within_last, more_than_days_ago and "
    f"anniversary_within; a list of 1-{MAX_LIST_VALUES} values for in, not_in, contains_any, contains_all and "
    "contains_none; [from, to] (inclusive) for between; one value otherwise. Dates are YYYY-MM-DD (UTC days), "
    f"countries ISO 3166 codes, text at most {MAX_TEXT} characters, numbers at most 1e12 in size."
)

FIELD_LINES = ", ".join(f"{spec.name} ({spec.type})" for spec in CONTACT_FIELD_SPECS)

TREE_DESCRIPTION = f"""A segment's rules: a **group** at the top, nesting groups and conditions.

- `{{"all": [...]}}`: every child matches; `{{"any": [...]}}`: at least one does; `{{"not": [...]}}`: none of
  them does. A group has exactly one of these keys. Only the top `all` may be empty (everyone).
- A **condition** is an object with a `type`: {", ".join(CONDITION_TYPES)}.
- Limits: {MAX_DEPTH} levels of groups, {MAX_CONDITIONS} conditions.
- Every condition is true or false for every contact: a missing value makes a positive condition false and
  its negation true. Days are UTC days; "within the last N days" is today and the N-1 days before it.
- The validator answers with the path of each bad node (`all.0.any.2.value`) and a message.

See docs/segments.md for every condition with examples."""


def components() -> dict[str, dict[str, Any]]:
    """The rule tree's schemas, by component name."""
    value = {"description": VALUE_SHAPES}
    where = {  # null, like absent: no property filters
        "type": "array", "items": _ref(PROPERTY_FILTER), "maxItems": MAX_PROPERTY_FILTERS, "nullable": True,
    }  # fmt: skip
    window = {
        "description": "Optional: no window (absent or null) means ever.",
        "nullable": True,
        "oneOf": [
            {
                "type": "object",
                "required": ["within_days"],
                "additionalProperties": False,
                "properties": {"within_days": _days("Today and the N-1 days before it (UTC).")},
            },
            {
                "type": "object",
                "required": ["between"],
                "additionalProperties": False,
                "properties": {
                    "between": {
                        "type": "array",
                        "items": {"type": "string", "format": "date"},
                        "minItems": 2,
                        "maxItems": 2,
                        "description": "[first day, last day], both included (UTC days).",
                    }
                },
            },
        ],
    }
    property_filter = {
        "type": "object",
        "description": "A filter on the event's properties (purchase where category = shoes).",
        "required": ["property", "op"],
        "additionalProperties": False,
        "properties": {
            "property": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"},
            "op": _enum(PROPERTY_OPS, "gt/gte/lt/lte compare numbers; eq, neq, in, not_in and contains text."),
            "value": {"description": "Text, a number or true/false; a list for in and not_in; none for is_set."},
        },
    }
    event_name = {"type": "string", "pattern": r"^[A-Za-z0-9_.:\-]{1,100}$", "example": "purchase"}
    conditions: dict[str, dict[str, Any]] = {
        "field": {
            "description": "A contact field. The operators fit the field's type: " + _ops_table() + ".",
            "required": ["field", "op"],
            "properties": {
                "field": _enum((s.name for s in CONTACT_FIELD_SPECS), f"The field and its type: {FIELD_LINES}."),
                "op": _enum(sorted({op for ops in OPS_BY_TYPE.values() for op in ops})),
                "value": value,
            },
        },
        "attribute": {
            "description": "A custom attribute (Settings → Attributes), with the operators of its type "
            "(text, number, boolean, date; list attributes take the tags operators).",
            "required": ["key", "op"],
            "properties": {"key": {"type": "string"}, "op": {"type": "string"}, "value": value},
        },
        "lifecycle_change": {
            "description": "The lifecycle stage changed to `stage` within the last `within_days` days.",
            "required": ["stage", "within_days"],
            "properties": {"stage": _enum(LifecycleStage.values), "within_days": _days("Days.")},
        },
        "consent": {
            "description": "The current consent for a channel and purpose; never_asked when there is no record.",
            "required": ["channel", "purpose", "status"],
            "properties": {
                "channel": _enum(Channel.values),
                "purpose": {"type": "string", "description": "One of the workspace's consent purposes."},
                "status": _enum(CONSENT_STATES),
            },
        },
        "suppression": {
            "description": "The contact's address for the channel is (or is not) on the suppression list.",
            "required": ["channel", "suppressed"],
            "properties": {"channel": _enum(SUPPRESSION_ADDRESS), "suppressed": {"type": "boolean"}},
        },
        "event": {
            "description": "Performed an event: ever, or within a window; at_least / at_most / exactly take a "
            f"count. `where` filters on event properties (at most {MAX_PROPERTY_FILTERS}).",
            "required": ["name", "op"],
            "properties": {
                "name": event_name,
                "op": _enum(EVENT_OPS),
                "count": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
                "window": _ref(WINDOW),
                "where": where,
            },
        },
        "event_aggregate": {
            "description": "The sum, average, minimum or maximum of a numeric property (revenue, or any "
            "property) of an event within a window, compared with a number (or [from, to] for between).",
            "required": ["name", "fn", "property", "op", "value"],
            "properties": {
                "name": event_name,
                "fn": _enum(AGGREGATE_FNS),
                "property": {"type": "string", "example": "revenue"},
                "op": _enum(AGGREGATE_OPS),
                "value": {"description": "A number, or [from, to] for between."},
                "window": _ref(WINDOW),
                "where": where,
            },
        },
        "engagement": {
            "description": "Opened, clicked, or either (any), a message within a window.",
            "required": ["action", "op"],
            "properties": {
                "action": _enum(ENGAGEMENT_ACTIONS),
                "op": _enum(("performed", "not_performed")),
                "window": _ref(WINDOW),
            },
        },
        "rfm": {
            "description": "A recency, frequency or monetary score: 1-5 quintiles among the workspace's buyers, "
            "5 best. Contacts without an order have no score (so no rfm condition matches them).",
            "required": ["score", "op", "value"],
            "properties": {
                "score": _enum(RFM_SCORES),
                "op": _enum(OPS_BY_TYPE["number"][:-2]),
                "value": {"description": "1-5, or [from, to] for between."},
            },
        },
        "rfm_group": {
            "description": "One of the named RFM groups (champions, loyal, at risk, hibernating…).",
            "required": ["op", "value"],
            "properties": {
                "op": _enum(SEGMENT_OPS),
                "value": {"type": "array", "items": _enum(RfmGroup.values), "minItems": 1},
            },
        },
        "segment": {
            "description": "Member (in) or not (not_in) of another segment, by id. Cycles are refused.",
            "required": ["op", "segment"],
            "properties": {"op": _enum(SEGMENT_OPS), "segment": {"type": "integer"}},
        },
    }
    schemas: dict[str, dict[str, Any]] = {
        TREE: {
            "type": "object",
            "description": TREE_DESCRIPTION,
            "minProperties": 1,
            "maxProperties": 1,
            "additionalProperties": False,
            "properties": {
                key: {"type": "array", "items": _ref(NODE), "description": text}
                for key, text in (
                    ("all", "Every child matches."),
                    ("any", "At least one child matches."),
                    ("not", "None of the children matches."),
                )
            },
        },
        NODE: {"description": "A nested group or a condition.", "oneOf": [_ref(TREE), _ref(CONDITION)]},
        WINDOW: window,
        PROPERTY_FILTER: property_filter,
    }
    mapping = {}
    for kind, spec in conditions.items():
        name = condition_component(kind)
        mapping[kind] = _ref(name)["$ref"]
        schemas[name] = {
            "type": "object",
            "description": spec["description"],
            "required": ["type", *spec["required"]],
            "additionalProperties": False,
            "properties": {"type": _enum([kind]), **spec["properties"]},
        }
    schemas[CONDITION] = {
        "description": "A condition; its `type` says which keys it takes.",
        "oneOf": [_ref(condition_component(kind)) for kind in conditions],
        "discriminator": {"propertyName": "type", "mapping": mapping},
    }
    return schemas


def condition_component(kind: str) -> str:
    return "Rule" + "".join(part.title() for part in kind.split("_")) + "Condition"


class RuleTreeFieldExtension(OpenApiSerializerFieldExtension):
    """Document segments.api.serializers.RuleTreeField as a reference to the RuleTree component."""

    target_class = "segments.api.serializers.RuleTreeField"

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> Any:
        for name, schema in components().items():
            component = ResolvedComponent(name=name, type=ResolvedComponent.SCHEMA, object=name, schema=schema)
            auto_schema.registry.register_on_missing(component)
        if self.target.read_only:  # a segment as read: a static one's rules are {}
            return {"oneOf": [_ref(TREE), {"type": "object", "maxProperties": 0}]}
        return _ref(TREE)


class SegmentKindFieldExtension(OpenApiSerializerFieldExtension):
    """Name the segment kinds' enum ourselves: spectacular's enum hook would otherwise collide with
    the other "kind" choices of the API (privacy requests) and warn."""

    target_class = "segments.api.serializers.SegmentKindField"

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> Any:
        lines = "\n".join(f"* `{value}` - {label}" for value, label in Segment.Kind.choices)
        schema = {"type": "string", "enum": list(Segment.Kind.values), "description": lines}
        component = ResolvedComponent(
            name="SegmentKindEnum", type=ResolvedComponent.SCHEMA, object="SegmentKindEnum", schema=schema
        )
        auto_schema.registry.register_on_missing(component)
        return component.ref


# --- the seed use cases ------------------------------------------------------------------------
NEW_VISITORS = {
    "all": [
        {"type": "field", "field": "lifecycle_stage", "op": "eq", "value": "new_visitor"},
        {"type": "field", "field": "first_seen_at", "op": "within_last", "value": 7},
    ]
}
LEADS_DE_FR = {
    "all": [
        {"type": "field", "field": "country", "op": "in", "value": ["DE", "FR"]},
        {"type": "field", "field": "lifecycle_stage", "op": "eq", "value": "lead"},
        {"type": "consent", "channel": "email", "purpose": "marketing", "status": "granted"},
    ]
}
READY_TO_BUY = {
    "all": [
        {"type": "event", "name": "add_to_cart", "op": "at_least", "count": 2, "window": {"within_days": 7}},
        {"type": "event", "name": "purchase", "op": "not_performed", "window": {"within_days": 7}},
    ]
}
LAPSED_CUSTOMERS = {
    "all": [
        {"type": "field", "field": "order_count", "op": "gte", "value": 1},
        {"type": "field", "field": "last_order_at", "op": "more_than_days_ago", "value": 180},
        {"not": [{"type": "suppression", "channel": "email", "suppressed": True}]},
    ]
}
VIPS = {
    "any": [
        {"type": "rfm_group", "op": "in", "value": ["champions", "loyal"]},
        {
            "type": "event_aggregate", "name": "purchase", "fn": "sum", "property": "revenue", "op": "gte",
            "value": 1000, "window": {"within_days": 365},
        },
    ]
}  # fmt: skip
SEED_RULES: dict[str, tuple[str, dict[str, Any]]] = {
    "New visitors": ("First seen within the last 7 days and still a new visitor.", NEW_VISITORS),
    "Leads in Germany and France": ("Leads in DE or FR who granted email marketing consent.", LEADS_DE_FR),
    "Ready to buy": ("Added to cart at least twice this week (the last 7 days) and no purchase.", READY_TO_BUY),
    "Lapsed customers": ("Bought before, not in the last 180 days, and email not suppressed.", LAPSED_CUSTOMERS),
    "VIPs": ("Champions or loyal by RFM, or 1,000 or more revenue in the last year.", VIPS),
}


def rule_examples(*, named: bool = False) -> list[OpenApiExample]:
    """The seed use cases as request examples: ``{"rules": tree}``, with a name when ``named``."""
    return [
        OpenApiExample(
            title,
            summary=title,
            description=text,
            request_only=True,
            value={**({"name": title} if named else {}), "rules": tree},
        )
        for title, (text, tree) in SEED_RULES.items()
    ]
