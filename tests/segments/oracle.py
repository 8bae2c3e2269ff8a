"""An independent evaluation of segment rules in Python, over the raw rows.

It reads events (not the rollups), the consent ledger (not the derived state) and the
contact columns, and applies the documented semantics (docs/segments.md) one contact
at a time — nothing is shared with segments/compiler.py but the rule format.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from contacts.models import (
    AttributeDefinition,
    ConsentRecord,
    Contact,
    Event,
    LifecycleTransition,
    Suppression,
)
from segments.models import RfmScore, SegmentMember
from tenants.models import Tenant

ENGAGEMENT = {
    "opened": {"email_open", "push_open"},
    "clicked": {"email_click", "sms_click", "link_click"},
    "any": {"email_open", "push_open", "email_click", "sms_click", "link_click"},
}
ATTRIBUTE_KINDS = {"text": "text", "number": "number", "boolean": "boolean", "date": "date", "list": "tags"}
DATETIME_FIELDS = {
    "lifecycle_changed_at",
    "created_at",
    "first_seen_at",
    "last_seen_at",
    "last_order_at",
    "last_engaged_at",
}
TAG_FIELDS = {"interests", "values", "lifestyle", "attitudes", "push_tokens"}
NUMBER_FIELDS = {"order_count", "total_revenue"}


@dataclass
class World:
    today: dt.date
    contacts: list[dict[str, Any]]
    events: dict[int, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    consent: dict[tuple[int, str, str], str] = field(default_factory=dict)
    transitions: dict[int, list[tuple[str, dt.datetime]]] = field(default_factory=lambda: defaultdict(list))
    suppressed: set[tuple[str, str]] = field(default_factory=set)
    rfm: dict[int, dict[str, Any]] = field(default_factory=dict)
    members: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))
    attribute_kinds: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, tenant: Tenant, now: dt.datetime) -> World:
        world = cls(today=now.astimezone(dt.UTC).date(), contacts=list(Contact.objects.filter(tenant=tenant).values()))
        for event in Event.objects.filter(tenant=tenant).values(
            "contact_id", "name", "occurred_at", "properties", "revenue"
        ):
            world.events[event["contact_id"]].append(event)
        for record in ConsentRecord.objects.filter(tenant=tenant).order_by("occurred_at", "id"):
            world.consent[(record.contact_id, record.channel, record.purpose)] = record.status
        for t in LifecycleTransition.objects.filter(tenant=tenant):
            world.transitions[t.contact_id].append((t.to_stage, t.occurred_at))
        world.suppressed = set(Suppression.objects.filter(tenant=tenant).values_list("channel", "address_hash"))
        world.rfm = {r["contact_id"]: r for r in RfmScore.objects.filter(tenant=tenant).values()}
        for segment_id, contact_id in SegmentMember.objects.filter(tenant=tenant).values_list(
            "segment_id", "contact_id"
        ):
            world.members[segment_id].add(contact_id)
        world.attribute_kinds = {
            key: ATTRIBUTE_KINDS[kind]
            for key, kind in AttributeDefinition.objects.filter(tenant=tenant).values_list("key", "type")
        }
        return world

    def matching(self, rules: dict[str, Any]) -> set[int]:
        return {c["id"] for c in self.contacts if c["erased_at"] is None and self.node(rules, c)}

    # --- the tree ---
    def node(self, node: dict[str, Any], c: dict[str, Any]) -> bool:
        if "all" in node:
            return all(self.node(child, c) for child in node["all"])
        if "any" in node:
            return any(self.node(child, c) for child in node["any"])
        if "not" in node:
            return not any(self.node(child, c) for child in node["not"])
        return bool(getattr(self, "c_" + node["type"])(node, c))

    # --- conditions ---
    def c_field(self, n: dict[str, Any], c: dict[str, Any]) -> bool:
        name, op, value = n["field"], n["op"], n.get("value")
        if name == "age":
            return _number_op(_age(c["birth_date"], self.today), op, value)
        raw = c[name]
        if name in TAG_FIELDS:
            return _tags_op(raw or [], op, value)
        if name in NUMBER_FIELDS:
            return _number_op(raw, op, value)
        if name == "birth_date":
            return _date_op(raw, op, value, self.today)
        if name in DATETIME_FIELDS:
            return _date_op(raw.astimezone(dt.UTC).date() if raw else None, op, value, self.today)
        if name == "email":
            value = [v.lower() for v in value] if isinstance(value, list) else (value.lower() if value else value)
        if name == "country":
            value = [v.upper() for v in value] if isinstance(value, list) else (value.upper() if value else value)
        return _text_op(raw or "", op, value, empty_is_missing=True)

    def c_attribute(self, n: dict[str, Any], c: dict[str, Any]) -> bool:
        kind = self.attribute_kinds[n["key"]]
        raw = (c["attributes"] or {}).get(n["key"])
        op, value = n["op"], n.get("value")
        if kind == "number":
            return _number_op(raw if _is_number(raw) else None, op, value)
        if kind == "boolean":
            if op == "is_set":
                return raw is not None
            if op == "not_set":
                return raw is None
            return raw is (op == "is_true")
        if kind == "tags":
            return _tags_op(raw if isinstance(raw, list) else [], op, value)
        if kind == "date":
            day = dt.date.fromisoformat(raw) if isinstance(raw, str) else None
            return _date_op(day, op, value, self.today)
        return _text_op(raw if isinstance(raw, str) else None, op, value, empty_is_missing=True)

    def c_lifecycle_change(self, n: dict[str, Any], c: dict[str, Any]) -> bool:
        first = self.today - dt.timedelta(days=n["within_days"] - 1)
        return any(
            stage == n["stage"] and when.astimezone(dt.UTC).date() >= first for stage, when in self.transitions[c["id"]]
        )

    def c_consent(self, n: dict[str, Any], c: dict[str, Any]) -> bool:
        status = self.consent.get((c["id"], n["channel"], n["purpose"]), "never_asked")
        return status == n["status"]

    def c_suppression(self, n: dict[str, Any], c: dict[str, Any]) -> bool:
        address = c["email"] if n["channel"] == "email" else c["phone"]
        hashed = hashlib.sha256(f"{n['channel']}:{address}".encode()).hexdigest()
        suppressed = bool(address) and (n["channel"], hashed) in self.suppressed
        return suppressed == n["suppressed"]

    def _events(self, n: dict[str, Any], c: dict[str, Any], names: set[str]) -> list[dict[str, Any]]:
        first, last = _window(n.get("window"), self.today)
        found = []
        for event in self.events[c["id"]]:
            day = event["occurred_at"].astimezone(dt.UTC).date()
            if event["name"] not in names or (first and day < first) or (last and day > last):
                continue
            if all(_property_ok(event["properties"] or {}, item) for item in n.get("where") or ()):
                found.append(event)
        return found

    def c_event(self, n: dict[str, Any], c: dict[str, Any]) -> bool:
        count = len(self._events(n, c, {n["name"]}))
        op = n["op"]
        if op == "performed":
            return count >= 1
        if op == "not_performed":
            return count == 0
        return {"at_least": count >= n["count"], "at_most": count <= n["count"], "exactly": count == n["count"]}[op]

    def c_event_aggregate(self, n: dict[str, Any], c: dict[str, Any]) -> bool:
        events = self._events(n, c, {n["name"]})
        if not events:
            return False
        if n["property"] == "revenue":
            values = [e["revenue"] for e in events]
        else:
            values = [(e["properties"] or {}).get(n["property"]) for e in events]
        numbers = [Decimal(str(v)) for v in values if _is_number(v)]
        if n["fn"] == "sum":
            result: Decimal | None = sum(numbers, Decimal(0))
        elif not numbers:
            result = None
        else:
            result = {
                "avg": lambda: sum(numbers) / len(numbers),
                "min": lambda: min(numbers),
                "max": lambda: max(numbers),
            }[n["fn"]]()
        return _number_op(result, n["op"], n["value"])

    def c_engagement(self, n: dict[str, Any], c: dict[str, Any]) -> bool:
        performed = bool(self._events(n, c, ENGAGEMENT[n["action"]]))
        return performed == (n["op"] == "performed")

    def c_rfm(self, n: dict[str, Any], c: dict[str, Any]) -> bool:
        score = self.rfm.get(c["id"])
        return _number_op(score[n["score"]] if score else None, n["op"], n["value"])

    def c_rfm_group(self, n: dict[str, Any], c: dict[str, Any]) -> bool:
        score = self.rfm.get(c["id"])
        inside = score is not None and score["group"] in n["value"]
        return inside == (n["op"] == "in")

    def c_segment(self, n: dict[str, Any], c: dict[str, Any]) -> bool:
        return (c["id"] in self.members[n["segment"]]) == (n["op"] == "in")


# --- operators ---
def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _number_op(x: Any, op: str, value: Any) -> bool:
    if op == "is_set":
        return x is not None
    if op == "not_set":
        return x is None
    if op == "neq":
        return not _number_op(x, "eq", value)
    if x is None:
        return False
    x = Decimal(str(x))
    if op == "between":
        return Decimal(str(value[0])) <= x <= Decimal(str(value[1]))
    v = Decimal(str(value))
    return {"eq": x == v, "gt": x > v, "gte": x >= v, "lt": x < v, "lte": x <= v}[op]


def _text_op(x: str | None, op: str, value: Any, *, empty_is_missing: bool) -> bool:
    negatives = {"neq": "eq", "not_in": "in", "not_contains": "contains"}
    if op in negatives:
        return not _text_op(x, negatives[op], value, empty_is_missing=empty_is_missing)
    present = x is not None and (x != "" or not empty_is_missing)
    if op == "is_set":
        return present
    if op == "not_set":
        return not present
    if x is None:
        return False
    if op == "eq":
        return x == value
    if op == "in":
        return x in value
    if op == "contains":
        return value.lower() in x.lower()
    if op == "starts_with":
        return x.lower().startswith(value.lower())
    raise AssertionError(op)


def _tags_op(tags: list[str], op: str, value: Any) -> bool:
    if op == "is_set":
        return len(tags) > 0
    if op == "not_set":
        return len(tags) == 0
    wanted = [v.strip().lower() for v in value]
    if op == "contains_any":
        return any(t in tags for t in wanted)
    if op == "contains_all":
        return all(t in tags for t in wanted)
    return not any(t in tags for t in wanted)


def _date_op(x: dt.date | None, op: str, value: Any, today: dt.date) -> bool:
    if op == "is_set":
        return x is not None
    if op == "not_set":
        return x is None
    if x is None:
        return False
    if op == "anniversary_within":
        if value >= 365:
            return True
        end = today + dt.timedelta(days=value)
        md, low, high = x.month * 100 + x.day, today.month * 100 + today.day, end.month * 100 + end.day
        return low <= md <= high if low <= high else md >= low or md <= high
    if op in ("within_last", "more_than_days_ago"):
        first = today - dt.timedelta(days=value - 1)
        return x >= first if op == "within_last" else x < first
    if op == "between":
        return dt.date.fromisoformat(value[0]) <= x <= dt.date.fromisoformat(value[1])
    day = dt.date.fromisoformat(value)
    return {"before": x < day, "after": x > day, "on": x == day}[op]


def _age(born: dt.date | None, today: dt.date) -> int | None:
    if born is None:
        return None
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def _window(window: dict[str, Any] | None, today: dt.date) -> tuple[dt.date | None, dt.date | None]:
    if not window:
        return None, None
    if "within_days" in window:
        return today - dt.timedelta(days=window["within_days"] - 1), None
    return dt.date.fromisoformat(window["between"][0]), dt.date.fromisoformat(window["between"][1])


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _property_ok(props: dict[str, Any], item: dict[str, Any]) -> bool:
    raw = props.get(item["property"])
    op, value = item["op"], item.get("value")
    if op == "is_set":
        return raw is not None
    if op == "not_set":
        return raw is None
    if op in ("neq", "not_in"):
        return not _property_ok(props, {**item, "op": "eq" if op == "neq" else "in"})
    if op in ("gt", "gte", "lt", "lte"):
        return _number_op(raw if _is_number(raw) else None, op, value)
    if op == "contains":
        text = _as_text(raw)
        return text is not None and value.lower() in text.lower()
    values = value if op == "in" else [value]
    return any(_property_equals(raw, v) for v in values)


def _property_equals(raw: Any, value: Any) -> bool:
    if isinstance(value, bool):
        return raw is value
    if _is_number(value):
        return _is_number(raw) and Decimal(str(raw)) == Decimal(str(value))
    return _as_text(raw) == value
