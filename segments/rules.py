"""The segment rule language: its field registry and its validator.

A rule tree is JSON. A group is ``{"all": [...]}``, ``{"any": [...]}`` or ``{"not": [...]}``
(none of the children match); a condition is an object with a ``type``. docs/segments.md
describes every condition with examples. The validator answers with the path of each bad
node (``all.0.any.2.value``) and a human message; segments/compiler.py only ever sees trees
that passed it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.utils.functional import cached_property
from django_countries import countries

from contacts.models import AttributeDefinition, Channel, ConsentStatus, LifecycleStage
from segments.models import RfmGroup
from tenants.models import Tenant

MAX_DEPTH = 8
MAX_CONDITIONS = 200
MAX_LIST_VALUES = 500
MAX_TEXT = 200
MAX_DAYS = 3650
MAX_PROPERTY_FILTERS = 10
GROUP_KEYS = ("all", "any", "not")
PROPERTY_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
EVENT_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,100}$")

# Operators by value type. Each maps to the shape of its value (see _check_value).
TEXT_OPS = ("eq", "neq", "in", "not_in", "contains", "not_contains", "starts_with", "is_set", "not_set")
CHOICE_OPS = ("eq", "neq", "in", "not_in")
COUNTRY_OPS = ("eq", "neq", "in", "not_in", "is_set", "not_set")
TAGS_OPS = ("contains_any", "contains_all", "contains_none", "is_set", "not_set")
NUMBER_OPS = ("eq", "neq", "gt", "gte", "lt", "lte", "between", "is_set", "not_set")
DATE_OPS = (
    "before", "after", "on", "between", "within_last", "more_than_days_ago", "anniversary_within", "is_set", "not_set",
)  # fmt: skip
BOOLEAN_OPS = ("is_true", "is_false", "is_set", "not_set")
OPS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "text": TEXT_OPS,
    "choice": CHOICE_OPS,
    "country": COUNTRY_OPS,
    "tags": TAGS_OPS,
    "number": NUMBER_OPS,
    "age": NUMBER_OPS[:-2],
    "date": DATE_OPS,
    "datetime": DATE_OPS,
    "boolean": BOOLEAN_OPS,
}
OP_LABELS = {
    "eq": "is", "neq": "is not", "in": "is any of", "not_in": "is none of", "contains": "contains",
    "not_contains": "does not contain", "starts_with": "starts with", "is_set": "is set", "not_set": "is not set",
    "contains_any": "contains any of", "contains_all": "contains all of", "contains_none": "contains none of",
    "gt": ">", "gte": "≥", "lt": "<", "lte": "≤", "between": "is between", "before": "is before", "after": "is after",
    "on": "is on", "within_last": "within the last (days)", "more_than_days_ago": "more than (days) ago",
    "anniversary_within": "anniversary within the next (days)", "is_true": "is yes", "is_false": "is no",
    "performed": "performed", "not_performed": "did not perform", "at_least": "at least", "at_most": "at most",
    "exactly": "exactly",
}  # fmt: skip
EVENT_OPS = ("performed", "not_performed", "at_least", "at_most", "exactly")
AGGREGATE_FNS = ("sum", "avg", "min", "max")
AGGREGATE_OPS = ("gt", "gte", "lt", "lte", "eq", "between")
PROPERTY_OPS = ("eq", "neq", "in", "not_in", "contains", "gt", "gte", "lt", "lte", "is_set", "not_set")
ENGAGEMENT_ACTIONS = {
    "opened": ("email_open", "push_open"),
    "clicked": ("email_click", "sms_click", "link_click"),
    "any": ("email_open", "push_open", "email_click", "sms_click", "link_click"),
}
CONSENT_STATES = (*ConsentStatus.values, "never_asked")
RFM_SCORES = ("recency", "frequency", "monetary")
SEGMENT_OPS = ("in", "not_in")
# The contact column a channel's suppression is keyed by (contacts.normalize.address_hash).
SUPPRESSION_ADDRESS = {Channel.EMAIL: "email", Channel.SMS: "phone", Channel.WHATSAPP: "phone"}


@dataclass(frozen=True)
class FieldSpec:
    name: str
    label: str
    group: str  # the builder's picker groups the way marketers think
    type: str  # a key of OPS_BY_TYPE
    column: str = ""  # the Contact column (age reads birth_date); defaults to name
    nullable: bool = False
    choices: tuple[tuple[str, str], ...] = ()

    @property
    def db_column(self) -> str:
        return self.column or self.name


def _f(name: str, label: str, group: str, kind: str, **extra: Any) -> FieldSpec:
    return FieldSpec(name, label, group, kind, **extra)


CONTACT_FIELD_SPECS: tuple[FieldSpec, ...] = (
    _f("email", "Email", "Identity", "text"),
    _f("phone", "Phone", "Identity", "text"),
    _f("external_id", "External id", "Identity", "text"),
    _f("first_name", "First name", "Identity", "text"),
    _f("last_name", "Last name", "Identity", "text"),
    _f("locale", "Locale", "Identity", "text"),
    _f("time_zone", "Time zone", "Identity", "text"),
    _f("push_tokens", "Push device tokens", "Identity", "tags"),
    _f("birth_date", "Birth date", "Demographic", "date", nullable=True),
    _f("age", "Age (years)", "Demographic", "age", column="birth_date", nullable=True),
    _f("gender", "Gender", "Demographic", "text"),
    _f("income_band", "Income band", "Demographic", "text"),
    _f("education", "Education", "Demographic", "text"),
    _f("job_role", "Job role", "Demographic", "text"),
    _f("country", "Country", "Geographic", "country"),
    _f("region", "Region", "Geographic", "text"),
    _f("city", "City", "Geographic", "text"),
    _f("postal_code", "Postal code", "Geographic", "text"),
    _f("company", "Company", "B2B", "text"),
    _f("industry", "Industry", "B2B", "text"),
    _f("company_size", "Company size", "B2B", "text"),
    _f("buying_stage", "Buying stage", "B2B", "text"),
    _f("interests", "Interests", "Psychographic", "tags"),
    _f("values", "Values", "Psychographic", "tags"),
    _f("lifestyle", "Lifestyle", "Psychographic", "tags"),
    _f("attitudes", "Attitudes", "Psychographic", "tags"),
    _f("lifecycle_stage", "Lifecycle stage", "Lifecycle", "choice", choices=tuple(LifecycleStage.choices)),
    _f("lifecycle_changed_at", "Lifecycle stage changed", "Lifecycle", "datetime", nullable=True),
    _f("created_at", "Created", "Lifecycle", "datetime"),
    _f("first_seen_at", "First seen", "Behavioural", "datetime", nullable=True),
    _f("last_seen_at", "Last seen", "Behavioural", "datetime", nullable=True),
    _f("order_count", "Orders (all time)", "Behavioural", "number"),
    _f("total_revenue", "Revenue (all time)", "Behavioural", "number"),
    _f("last_order_at", "Last order", "Behavioural", "datetime", nullable=True),
    _f("last_engaged_at", "Last engaged (opened or clicked)", "Engagement", "datetime", nullable=True),
)
CONTACT_FIELD_SPECS_BY_NAME = {spec.name: spec for spec in CONTACT_FIELD_SPECS}
ATTRIBUTE_TYPES = {
    AttributeDefinition.Type.TEXT: "text",
    AttributeDefinition.Type.NUMBER: "number",
    AttributeDefinition.Type.BOOLEAN: "boolean",
    AttributeDefinition.Type.DATE: "date",
    AttributeDefinition.Type.LIST: "tags",
}
CONDITION_TYPES = (
    "field", "attribute", "lifecycle_change", "consent", "suppression", "event", "event_aggregate", "engagement",
    "rfm", "rfm_group", "segment",
)  # fmt: skip


@dataclass(frozen=True)
class RuleError:
    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


class InvalidRules(ValueError):
    def __init__(self, errors: list[RuleError]) -> None:
        super().__init__("; ".join(f"{e.path or 'rules'}: {e.message}" for e in errors))
        self.errors = errors


@dataclass
class Registry:
    """What a tenant's rules may name: fields, attributes, purposes, segments."""

    tenant: Tenant
    attributes: dict[str, str]  # key → value type (a key of OPS_BY_TYPE)
    attribute_labels: dict[str, str] = field(default_factory=dict)
    segment_names: dict[int, str] = field(default_factory=dict)
    segment_dependencies: dict[int, list[int]] = field(default_factory=dict)

    @classmethod
    def for_tenant(cls, tenant: Tenant) -> Registry:
        from segments.models import Segment

        definitions = AttributeDefinition.objects.filter(tenant=tenant).values_list("key", "label", "type")
        segments = Segment.objects.filter(tenant=tenant).values_list("id", "name", "depends_on")
        registry = cls(tenant=tenant, attributes={})
        for key, label, kind in definitions:
            registry.attributes[key] = ATTRIBUTE_TYPES[kind]
            registry.attribute_labels[key] = label
        for pk, name, depends_on in segments:
            registry.segment_names[pk] = name
            registry.segment_dependencies[pk] = [int(d) for d in depends_on or []]
        return registry

    @cached_property
    def purposes(self) -> tuple[str, ...]:
        return tuple(self.tenant.consent_purposes or ())

    def reaches(self, start: int, target: int) -> bool:
        """Does segment ``start`` depend (directly or not) on ``target``?"""
        seen: set[int] = set()
        stack = [start]
        while stack:
            current = stack.pop()
            if current == target:
                return True
            if current in seen:
                continue
            seen.add(current)
            stack.extend(self.segment_dependencies.get(current, ()))
        return False


# --- validation ----------------------------------------------------------------------------
class _Validator:
    def __init__(self, registry: Registry, segment_id: int | None) -> None:
        self.registry = registry
        self.segment_id = segment_id
        self.errors: list[RuleError] = []
        self.conditions = 0

    def error(self, path: str, message: str) -> None:
        self.errors.append(RuleError(path, message))

    def node(self, node: Any, path: str, depth: int) -> None:
        if not isinstance(node, dict):
            self.error(path, 'Expected a group ({"all": [...]}) or a condition ({"type": ...}).')
            return
        keys = [key for key in GROUP_KEYS if key in node]
        if keys:
            self.group(node, keys, path, depth)
        elif "type" in node:
            self.condition(node, path)
        else:
            self.error(path, "Expected a group (all, any or not) or a condition with a type.")

    def group(self, node: dict[str, Any], keys: list[str], path: str, depth: int) -> None:
        if len(keys) > 1 or len(node) > 1:
            self.error(path, "A group has exactly one key: all, any or not.")
            return
        key = keys[0]
        children = node[key]
        child_path = _join(path, key)
        if depth > MAX_DEPTH:
            self.error(path, f"Groups nest at most {MAX_DEPTH} levels deep.")
            return
        if not isinstance(children, list):
            self.error(child_path, "Expected a list of conditions and groups.")
            return
        if not children and not (path == "" and key == "all"):
            self.error(child_path, "This group is empty: add a condition or remove the group.")
        for index, child in enumerate(children):
            self.node(child, _join(child_path, index), depth + 1)

    def condition(self, node: dict[str, Any], path: str) -> None:
        self.conditions += 1
        if self.conditions == MAX_CONDITIONS + 1:
            self.error(path, f"A segment has at most {MAX_CONDITIONS} conditions.")
        if self.conditions > MAX_CONDITIONS:
            return
        kind = node.get("type")
        check = getattr(self, f"check_{kind}", None) if kind in CONDITION_TYPES else None
        if check is None:
            expected = _list(CONDITION_TYPES)
            self.error(_join(path, "type"), f"Unknown condition type {_show(kind)}; expected one of {expected}.")
            return
        check(node, path)

    # --- condition types ---
    def check_field(self, node: dict[str, Any], path: str) -> None:
        if not self.allowed(node, path, {"field", "op", "value"}):
            return
        name = node.get("field")
        spec = CONTACT_FIELD_SPECS_BY_NAME.get(name) if isinstance(name, str) else None
        if spec is None:
            self.error(_join(path, "field"), f"Unknown contact field {_show(name)}.")
            return
        self.op_and_value(node, path, spec.type, choices=spec.choices)

    def check_attribute(self, node: dict[str, Any], path: str) -> None:
        if not self.allowed(node, path, {"key", "op", "value"}):
            return
        key = node.get("key")
        kind = self.registry.attributes.get(key) if isinstance(key, str) else None
        if kind is None:
            self.error(_join(path, "key"), f"Unknown custom attribute {_show(key)}; define it under Settings first.")
            return
        self.op_and_value(node, path, kind)

    def check_lifecycle_change(self, node: dict[str, Any], path: str) -> None:
        if not self.allowed(node, path, {"stage", "within_days"}):
            return
        if node.get("stage") not in LifecycleStage.values:
            self.error(_join(path, "stage"), f"Expected a lifecycle stage: {_list(LifecycleStage.values)}.")
        self.days(node.get("within_days"), _join(path, "within_days"))

    def check_consent(self, node: dict[str, Any], path: str) -> None:
        if not self.allowed(node, path, {"channel", "purpose", "status"}):
            return
        self.channel(node.get("channel"), _join(path, "channel"))
        if node.get("purpose") not in self.registry.purposes:
            purposes = _list(self.registry.purposes)
            self.error(_join(path, "purpose"), f"Expected one of this workspace's purposes: {purposes}.")
        if node.get("status") not in CONSENT_STATES:
            self.error(_join(path, "status"), f"Expected one of {_list(CONSENT_STATES)}.")

    def check_suppression(self, node: dict[str, Any], path: str) -> None:
        if not self.allowed(node, path, {"channel", "suppressed"}):
            return
        if not isinstance(node.get("channel"), str) or node["channel"] not in SUPPRESSION_ADDRESS:
            self.error(_join(path, "channel"), f"Expected one of {_list(SUPPRESSION_ADDRESS)}.")
        if not isinstance(node.get("suppressed"), bool):
            self.error(_join(path, "suppressed"), "Expected true or false.")

    def check_event(self, node: dict[str, Any], path: str) -> None:
        if not self.allowed(node, path, {"name", "op", "count", "window", "where"}):
            return
        self.event_name(node.get("name"), _join(path, "name"))
        op = node.get("op")
        if op not in EVENT_OPS:
            self.error(_join(path, "op"), f"Expected one of {_list(EVENT_OPS)}.")
        elif op in ("at_least", "at_most", "exactly"):
            count = node.get("count")
            if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= 1_000_000:
                self.error(_join(path, "count"), "Expected a whole number of times (0 to 1,000,000).")
        elif "count" in node:
            self.error(_join(path, "count"), f"{op} takes no count.")
        self.window(node.get("window"), _join(path, "window"))
        self.where(node.get("where"), _join(path, "where"))

    def check_event_aggregate(self, node: dict[str, Any], path: str) -> None:
        if not self.allowed(node, path, {"name", "fn", "property", "op", "value", "window", "where"}):
            return
        self.event_name(node.get("name"), _join(path, "name"))
        if node.get("fn") not in AGGREGATE_FNS:
            self.error(_join(path, "fn"), f"Expected one of {_list(AGGREGATE_FNS)}.")
        prop = node.get("property")
        if not isinstance(prop, str) or not PROPERTY_KEY.fullmatch(prop):
            self.error(_join(path, "property"), "Expected revenue or a numeric event property (letters, digits, _).")
        op = node.get("op")
        if op not in AGGREGATE_OPS:
            self.error(_join(path, "op"), f"Expected one of {_list(AGGREGATE_OPS)}.")
        else:
            self.value(op, node.get("value"), _join(path, "value"), "number")
        self.window(node.get("window"), _join(path, "window"))
        self.where(node.get("where"), _join(path, "where"))

    def check_engagement(self, node: dict[str, Any], path: str) -> None:
        if not self.allowed(node, path, {"action", "op", "window"}):
            return
        if not isinstance(node.get("action"), str) or node["action"] not in ENGAGEMENT_ACTIONS:
            self.error(_join(path, "action"), f"Expected one of {_list(ENGAGEMENT_ACTIONS)}.")
        if node.get("op") not in ("performed", "not_performed"):
            self.error(_join(path, "op"), "Expected performed or not_performed.")
        self.window(node.get("window"), _join(path, "window"))

    def check_rfm(self, node: dict[str, Any], path: str) -> None:
        if not self.allowed(node, path, {"score", "op", "value"}):
            return
        if node.get("score") not in RFM_SCORES:
            self.error(_join(path, "score"), f"Expected one of {_list(RFM_SCORES)}.")
        op = node.get("op")
        if op not in NUMBER_OPS[:-2]:
            self.error(_join(path, "op"), f"Expected one of {_list(NUMBER_OPS[:-2])}.")
            return
        self.value(op, node.get("value"), _join(path, "value"), "number")
        value = node.get("value")
        values: list[Any] = value if isinstance(value, list) else [value]
        if any(_is_number(v) and not 1 <= v <= 5 for v in values):
            self.error(_join(path, "value"), "RFM scores run from 1 to 5.")

    def check_rfm_group(self, node: dict[str, Any], path: str) -> None:
        if not self.allowed(node, path, {"op", "value"}):
            return
        if node.get("op") not in SEGMENT_OPS:
            self.error(_join(path, "op"), "Expected in or not_in.")
        value = node.get("value")
        if not isinstance(value, list) or not value or any(v not in RfmGroup.values for v in value):
            self.error(_join(path, "value"), f"Expected a list of RFM groups: {_list(RfmGroup.values)}.")

    def check_segment(self, node: dict[str, Any], path: str) -> None:
        if not self.allowed(node, path, {"op", "segment"}):
            return
        if node.get("op") not in SEGMENT_OPS:
            self.error(_join(path, "op"), "Expected in or not_in.")
        target = node.get("segment")
        if not _is_int(target) or target not in self.registry.segment_names:
            self.error(_join(path, "segment"), f"No segment with id {_show(target)} in this workspace.")
        elif self.segment_id is not None and self.registry.reaches(target, self.segment_id):
            self.error(_join(path, "segment"), "A segment cannot include itself, directly or through another segment.")

    # --- parts ---
    def allowed(self, node: dict[str, Any], path: str, keys: set[str]) -> bool:
        unknown = sorted(set(node) - keys - {"type"})
        if unknown:
            self.error(_join(path, unknown[0]), f"Unknown key {_show(unknown[0])}; expected {_list(sorted(keys))}.")
            return False
        return True

    def op_and_value(
        self, node: dict[str, Any], path: str, kind: str, *, choices: tuple[tuple[str, str], ...] = ()
    ) -> None:
        op = node.get("op")
        ops = OPS_BY_TYPE[kind]
        if op not in ops:
            self.error(_join(path, "op"), f"{_show(op)} does not fit this field; expected one of {_list(ops)}.")
            return
        self.value(op, node.get("value"), _join(path, "value"), kind, choices=choices, present="value" in node)

    def value(
        self,
        op: str,
        value: Any,
        path: str,
        kind: str,
        *,
        choices: tuple[tuple[str, str], ...] = (),
        present: bool = True,
    ) -> None:
        shape = _value_shape(op)
        if shape == "none":
            if present and value is not None:
                self.error(path, f"{OP_LABELS[op]} takes no value.")
            return
        if shape == "days":
            self.days(value, path, most=366 if op == "anniversary_within" else MAX_DAYS)
            return
        if shape == "list":
            if not isinstance(value, list) or not value:
                self.error(path, "Expected a list of at least one value.")
                return
            if len(value) > MAX_LIST_VALUES:
                self.error(path, f"At most {MAX_LIST_VALUES} values.")
                return
            for index, item in enumerate(value):
                self.scalar(item, _join(path, index), kind, choices)
            return
        if shape == "pair":
            if not isinstance(value, list) or len(value) != 2:
                self.error(path, "Expected two values: [from, to].")
                return
            if all(self.scalar(item, _join(path, i), kind, choices) for i, item in enumerate(value)):
                low, high = (_comparable(v, kind) for v in value)
                if low > high:
                    self.error(path, "The first value must not be greater than the second.")
            return
        self.scalar(value, path, kind, choices)

    def scalar(self, value: Any, path: str, kind: str, choices: tuple[tuple[str, str], ...] = ()) -> bool:
        message = _scalar_error(value, kind, choices)
        if message:
            self.error(path, message)
        return not message

    def days(self, value: Any, path: str, most: int = MAX_DAYS) -> None:
        if not _is_int(value) or not 1 <= value <= most:
            self.error(path, f"Expected a whole number of days from 1 to {most}.")

    def channel(self, value: Any, path: str) -> None:
        if value not in Channel.values:
            self.error(path, f"Expected a channel: {_list(Channel.values)}.")

    def event_name(self, value: Any, path: str) -> None:
        if not isinstance(value, str) or not EVENT_NAME.fullmatch(value):
            self.error(path, "Expected an event name (letters, digits, _ . : -; 100 at most).")

    def window(self, window: Any, path: str) -> None:
        if window is None:
            return
        if not isinstance(window, dict) or len(window) != 1 or not ({"within_days", "between"} & set(window)):
            self.error(path, 'Expected {"within_days": N} or {"between": ["YYYY-MM-DD", "YYYY-MM-DD"]}, or no window.')
            return
        if "within_days" in window:
            self.days(window["within_days"], _join(path, "within_days"))
        else:
            self.value("between", window["between"], _join(path, "between"), "date")

    def where(self, filters: Any, path: str) -> None:
        if filters is None:
            return
        if not isinstance(filters, list) or len(filters) > MAX_PROPERTY_FILTERS:
            self.error(path, f"Expected a list of at most {MAX_PROPERTY_FILTERS} property filters.")
            return
        for index, item in enumerate(filters):
            item_path = _join(path, index)
            if not isinstance(item, dict) or set(item) - {"property", "op", "value"}:
                self.error(item_path, 'Expected {"property": ..., "op": ..., "value": ...}.')
                continue
            prop = item.get("property")
            if not isinstance(prop, str) or not PROPERTY_KEY.fullmatch(prop):
                self.error(_join(item_path, "property"), "Expected a property name (letters, digits, _; 64 at most).")
            op = item.get("op")
            if op not in PROPERTY_OPS:
                self.error(_join(item_path, "op"), f"Expected one of {_list(PROPERTY_OPS)}.")
                continue
            kind = "number" if op in ("gt", "gte", "lt", "lte") else "property"
            self.value(op, item.get("value"), _join(item_path, "value"), kind, present="value" in item)


def _value_shape(op: str) -> str:
    if op in ("is_set", "not_set", "is_true", "is_false"):
        return "none"
    if op in ("within_last", "more_than_days_ago", "anniversary_within"):
        return "days"
    if op in ("in", "not_in", "contains_any", "contains_all", "contains_none"):
        return "list"
    if op == "between":
        return "pair"
    return "scalar"


def _scalar_error(value: Any, kind: str, choices: tuple[tuple[str, str], ...]) -> str:
    if kind in ("number", "age"):
        if not _is_number(value) or abs(value) > 1e12:
            return "Expected a number."
        return ""
    if kind in ("date", "datetime"):
        if not isinstance(value, str) or parse_day(value) is None:
            return "Expected a date (YYYY-MM-DD)."
        return ""
    if kind == "country":
        if not isinstance(value, str) or value.upper() not in _COUNTRY_CODES:
            return f"{_show(value)} is not an ISO 3166 country code (e.g. DE)."
        return ""
    if kind == "choice":
        allowed = [code for code, _ in choices]
        return "" if value in allowed else f"Expected one of {_list(allowed)}."
    if kind == "property" and (isinstance(value, bool) or _is_number(value)):
        return ""  # an event property: text, number or yes/no
    if not isinstance(value, str) or not value.strip():
        return "Expected some text."
    if len(value) > MAX_TEXT:
        return f"At most {MAX_TEXT} characters."
    if "\x00" in value:
        return "NUL characters are not allowed."
    return ""


_COUNTRY_CODES = frozenset(code for code, _ in countries)


def _comparable(value: Any, kind: str) -> Any:
    if kind in ("date", "datetime"):
        return parse_day(value)
    return value


def parse_day(value: Any) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value) if isinstance(value, str) and len(value) == 10 else None
    except ValueError:
        return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool) and value == value


def _join(path: str, part: str | int) -> str:
    return f"{path}.{part}" if path else str(part)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _list(values: Iterable[Any]) -> str:
    return ", ".join(str(v) for v in values)


def validate(rules: Any, registry: Registry, *, segment_id: int | None = None) -> list[RuleError]:
    """Check a rule tree; return its errors (empty when it is valid)."""
    validator = _Validator(registry, segment_id)
    if not isinstance(rules, dict):
        return [RuleError("", 'Expected a rule tree: {"all": [...]}.')]
    if not any(key in rules for key in GROUP_KEYS):
        return [RuleError("", "The top of a rule tree is a group: all, any or not.")]
    validator.node(rules, "", 1)
    return validator.errors


def validate_or_raise(rules: Any, registry: Registry, *, segment_id: int | None = None) -> None:
    errors = validate(rules, registry, segment_id=segment_id)
    if errors:
        raise InvalidRules(errors)


# --- walking a valid tree ------------------------------------------------------------------
def conditions(rules: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every condition of a (valid) tree, depth first."""
    for key in GROUP_KEYS:
        if key in rules:
            for child in rules[key]:
                yield from conditions(child)
            return
    yield rules


def referenced_segments(rules: dict[str, Any]) -> list[int]:
    return sorted({c["segment"] for c in conditions(rules) if c.get("type") == "segment"})


def is_time_relative(rules: dict[str, Any]) -> bool:
    """Can the tree's result change without a write that real time sees, so that a periodic
    refresh must re-evaluate it? Relative time moves with the clock; RFM scores are recomputed
    nightly; a lifted suppression is known only by its hash."""
    for condition in conditions(rules):
        if condition.get("type") in ("lifecycle_change", "engagement", "rfm", "rfm_group", "segment", "suppression"):
            return True
        if condition.get("op") in ("within_last", "more_than_days_ago", "anniversary_within"):
            return True
        if condition.get("field") == "age":
            return True
        if (condition.get("window") or {}).get("within_days"):
            return True
    return False


# --- the catalogue the builder shows --------------------------------------------------------
PICKER_GROUPS = (
    "Demographic", "Geographic", "Behavioural", "Psychographic", "Lifecycle", "Consent", "Engagement", "RFM",
    "B2B", "Identity", "Custom", "Segments",
)  # fmt: skip


def catalogue(registry: Registry, *, event_names: list[str], event_properties: dict[str, list[str]]) -> dict[str, Any]:
    """Everything the segment builder needs to offer fields, operators and values (JSON)."""
    fields = [
        {"type": "field", "field": s.name, "label": s.label, "group": s.group, "value_type": s.type,
         "ops": list(OPS_BY_TYPE[s.type]), "choices": [list(c) for c in s.choices]}
        for s in CONTACT_FIELD_SPECS
    ]  # fmt: skip
    fields += [
        {"type": "attribute", "key": key, "label": registry.attribute_labels.get(key, key), "group": "Custom",
         "value_type": kind, "ops": list(OPS_BY_TYPE[kind]), "choices": []}
        for key, kind in sorted(registry.attributes.items())
    ]  # fmt: skip
    special = [
        ("lifecycle_change", "Lifecycle stage changed to… within N days", "Lifecycle"),
        ("consent", "Consent", "Consent"),
        ("suppression", "Suppressed", "Consent"),
        ("event", "Performed event", "Behavioural"),
        ("event_aggregate", "Event total / average", "Behavioural"),
        ("engagement", "Opened or clicked a message", "Engagement"),
        ("rfm", "RFM score", "RFM"),
        ("rfm_group", "RFM group", "RFM"),
        ("segment", "Member of segment", "Segments"),
    ]
    fields += [{"type": kind, "label": label, "group": group} for kind, label, group in special]
    return {
        "groups": list(PICKER_GROUPS),
        "fields": fields,
        "op_labels": OP_LABELS,
        "countries": [[code, str(name)] for code, name in countries],
        "lifecycle_stages": [list(c) for c in LifecycleStage.choices],
        "channels": [list(c) for c in Channel.choices],
        "suppression_channels": list(SUPPRESSION_ADDRESS),
        "purposes": list(registry.purposes),
        "consent_states": list(CONSENT_STATES),
        "event_ops": list(EVENT_OPS),
        "aggregate_fns": list(AGGREGATE_FNS),
        "aggregate_ops": list(AGGREGATE_OPS),
        "property_ops": list(PROPERTY_OPS),
        "engagement_actions": list(ENGAGEMENT_ACTIONS),
        "rfm_scores": list(RFM_SCORES),
        "rfm_groups": [list(c) for c in RfmGroup.choices],
        "segments": [{"id": pk, "name": name} for pk, name in sorted(registry.segment_names.items())],
        "event_names": event_names,
        "event_properties": event_properties,
        "limits": {"depth": MAX_DEPTH, "conditions": MAX_CONDITIONS},
    }
