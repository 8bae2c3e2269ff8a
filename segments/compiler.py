"""Compile a valid rule tree into one parameterised query over the tenant's contacts.

Everything goes through the ORM: conditions on the contact row are lookups, the rest
are ``Exists`` or ``IN (subquery)`` over the rollups, the consent state, the RFM scores
and other segments' members. Names of fields come from the registry (segments/rules.py),
never from the tree; values and JSON keys are always parameters.

Semantics (docs/segments.md): every condition is true or false for every contact (a
missing value makes a positive condition false, so its negation is true); days are UTC
days; "within the last N days" is today and the N-1 days before it.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from django.db.models import (
    Avg,
    BooleanField,
    Count,
    Exists,
    F,
    IntegerField,
    JSONField,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Sum,
    Value,
    lookups,
)
from django.db.models.fields.json import KeyTextTransform, KeyTransform, KeyTransformExact
from django.db.models.functions import Cast, Coalesce, Concat, ExtractDay, ExtractMonth, Substr
from django.utils import timezone

from contacts.ingest import ENGAGEMENT_EVENTS, PURCHASE
from contacts.models import (
    ConsentState,
    Contact,
    Event,
    EventDailyRollup,
    EventWindowSummary,
    LifecycleTransition,
    Suppression,
)
from contacts.summaries import EventSummaries
from segments.expressions import JsonArrayHasAny, JsonArrayLength, JsonNumber, Sha256Hex
from segments.models import RfmScore, SegmentMember
from segments.rules import (
    CONTACT_FIELD_SPECS_BY_NAME,
    ENGAGEMENT_ACTIONS,
    GROUP_KEYS,
    SUPPRESSION_ADDRESS,
    conditions,
    parse_day,
)

NOTHING = Q(pk__in=[])
AGGREGATES: dict[str, Callable[..., Any]] = {"sum": Sum, "avg": Avg, "min": Min, "max": Max}
COMPARISONS = {"eq": "exact", "gt": "gt", "gte": "gte", "lt": "lt", "lte": "lte"}
# The contact columns the contact_segments index carries (contacts/migrations/0005): a count whose
# conditions on the contact read only these never reads the contact rows themselves.
INDEXED_CONTACT_COLUMNS = frozenset({"country", "lifecycle_stage", "birth_date"})
# Contact columns that event ingest keeps at the newest event of a set of names (contacts/ingest.py;
# read-only in the API, the admin and imports): "performed within N days" is the column being in the
# window, the same answer as the rollups give.
NEWEST_EVENT_COLUMNS = {frozenset({PURCHASE}): "last_order_at", frozenset(ENGAGEMENT_EVENTS): "last_engaged_at"}


@dataclass(frozen=True)
class Context:
    """What a compilation depends on besides the tree: the tenant, the clock, (for real-time
    updates) the few contacts being evaluated, which every subquery is narrowed to, and (for
    whole-tenant counts) the event window summaries that are counted for today."""

    tenant_id: int
    attributes: dict[str, str] = field(default_factory=dict)  # custom attribute key → value type
    now: dt.datetime = field(default_factory=timezone.now)
    contact_ids: tuple[int, ...] | None = None
    summaries: EventSummaries | None = None
    # Whole-tenant counts: the tenant's event retention (days), and whether the rules read the
    # contact rows anyway (conditions on columns outside the contact_segments index).
    retention_days: int | None = None
    reads_contact_row: bool = False

    @property
    def today(self) -> dt.date:
        return self.now.astimezone(dt.UTC).date()

    def days_ago(self, days: int) -> dt.date:
        """The first day of "the last ``days`` days" (today counts as one)."""
        return self.today - dt.timedelta(days=days - 1)

    def narrow(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.contact_ids is None:
            return queryset
        return queryset.filter(contact_id__in=self.contact_ids)


def day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)


def compile_rules(rules: dict[str, Any], ctx: Context) -> Q:
    """Return the Q that selects the contacts matching a validated tree."""
    if ctx.retention_days is not None and not ctx.reads_contact_row and _reads_contact_row(rules):
        ctx = replace(ctx, reads_contact_row=True)
    return _node(rules, ctx)


def _reads_contact_row(rules: dict[str, Any]) -> bool:
    """Does a count of ``rules`` read the contact rows (not only the contact_segments index)?"""
    for node in conditions(rules):
        if node["type"] in ("attribute", "suppression"):
            return True
        if (
            node["type"] == "field"
            and CONTACT_FIELD_SPECS_BY_NAME[node["field"]].db_column not in INDEXED_CONTACT_COLUMNS
        ):
            return True
    return False


def matching_contacts(rules: dict[str, Any], ctx: Context) -> QuerySet[Contact]:
    """The tenant's contacts (not erased) that match ``rules``, as one lazy query."""
    contacts = Contact.objects.filter(tenant_id=ctx.tenant_id, erased_at__isnull=True)
    if ctx.contact_ids is not None:
        contacts = contacts.filter(pk__in=ctx.contact_ids)
    return contacts.filter(compile_rules(rules, ctx))


def _node(node: dict[str, Any], ctx: Context) -> Q:
    for key in GROUP_KEYS:
        if key in node:
            children = [_node(child, ctx) for child in node[key]]
            if key == "all":
                return _combine(children, Q.AND) if children else Q()
            if not children:
                return NOTHING if key == "any" else Q()
            any_of = _combine(children, Q.OR)
            return any_of if key == "any" else ~any_of
    return CONDITIONS[node["type"]](node, ctx)


def _combine(parts: Sequence[Q], connector: str) -> Q:
    return Q(*parts, _connector=connector) if len(parts) > 1 else parts[0]


LOOKUPS: dict[str, type[lookups.Lookup[Any]]] = {
    "exact": lookups.Exact, "in": lookups.In, "gt": lookups.GreaterThan, "gte": lookups.GreaterThanOrEqual,
    "lt": lookups.LessThan, "lte": lookups.LessThanOrEqual, "isnull": lookups.IsNull,
    "icontains": lookups.IContains, "istartswith": lookups.IStartsWith,
}  # fmt: skip


def _lookup(lhs: Any, name: str, rhs: Any) -> Q:
    """``lhs <name> rhs`` as a Q: a keyword lookup for a column, a lookup expression otherwise
    (JSON keys are never spliced into a lookup string)."""
    if isinstance(lhs, F):
        return Q(**{f"{lhs.name}__{name}": rhs})
    return Q(LOOKUPS[name](lhs, rhs))


def _negative(op: str) -> tuple[str, bool]:
    """Map a negative operator to its positive twin: ("neq" → ("eq", True))."""
    twins = {"neq": "eq", "not_in": "in", "not_contains": "contains", "contains_none": "contains_any"}
    return (twins[op], True) if op in twins else (op, False)


# --- conditions on the contact row -----------------------------------------------------------
def _field(node: dict[str, Any], ctx: Context) -> Q:
    spec = CONTACT_FIELD_SPECS_BY_NAME[node["field"]]
    op, value = node["op"], node.get("value")
    column = spec.db_column
    if spec.type == "age":
        return _age(column, op, value, ctx)
    if spec.type in ("date", "datetime"):
        return _dates(F(column), op, value, ctx, as_datetime=spec.type == "datetime", nullable=spec.nullable)
    if spec.type == "tags":
        return _tags(F(column), op, value)
    if spec.type == "number":
        return _numbers(F(column), op, value, nullable=spec.nullable)
    positive, negate = _negative(op)
    value = _normalise_text(spec.name, value)
    if positive == "is_set":
        q = ~Q(**{column: ""})
    elif positive == "not_set":
        q = Q(**{column: ""})
    elif positive == "eq":
        q = Q(**{column: value})
    elif positive == "in":
        q = Q(**{f"{column}__in": value})
    elif positive == "contains":
        q = Q(**{f"{column}__icontains": value})
    elif positive == "starts_with":
        q = Q(**{f"{column}__istartswith": value})
    else:  # pragma: no cover - the validator only lets the operators above through
        raise ValueError(op)
    return ~q if negate else q


def _normalise_text(field_name: str, value: Any) -> Any:
    if field_name == "email":
        return [v.strip().lower() for v in value] if isinstance(value, list) else (value or "").strip().lower()
    if field_name == "country":
        return [v.upper() for v in value] if isinstance(value, list) else (value or "").upper()
    return value


def _tags(lhs: Any, op: str, value: Any) -> Q:
    if op in ("is_set", "not_set"):
        q = _lookup(JsonArrayLength(lhs), "gt", 0)
        return q if op == "is_set" else ~q
    tags = [str(v).strip().lower() for v in value]
    if op == "contains_all":
        return Q(*[Q(JsonArrayHasAny(lhs, [tag])) for tag in tags])
    q = Q(JsonArrayHasAny(lhs, tags))
    return ~q if op == "contains_none" else q


def _numbers(lhs: Any, op: str, value: Any, *, nullable: bool) -> Q:
    if op in ("is_set", "not_set"):
        q = _lookup(lhs, "isnull", False)
        return q if op == "is_set" else ~q
    if op == "neq":
        return ~_numbers(lhs, "eq", value, nullable=nullable)
    if op == "between":
        q = _lookup(lhs, "gte", _exact(value[0])) & _lookup(lhs, "lte", _exact(value[1]))
    else:
        q = _lookup(lhs, COMPARISONS[op], _exact(value))
    return _lookup(lhs, "isnull", False) & q if nullable else q


def _exact(number: Any) -> Any:
    """A fraction as an expression: Django would first cast it to an integer column's type
    (order_count = 1.5 would become order_count = 1)."""
    return Value(number) if isinstance(number, float) and not number.is_integer() else number


def _dates(lhs: Any, op: str, value: Any, ctx: Context, *, as_datetime: bool, nullable: bool) -> Q:
    """Date and time conditions on a date or datetime column (or an ISO date text)."""
    if op in ("is_set", "not_set"):
        q = _lookup(lhs, "isnull", False)
        return q if op == "is_set" else ~q
    if op == "anniversary_within":
        q = _anniversary(ExtractMonth(lhs) * 100 + ExtractDay(lhs), value, ctx)
        return _lookup(lhs, "isnull", False) & q

    def bound(day: dt.date) -> Any:
        return day_start(day) if as_datetime else day

    # The day after 9999-12-31 does not exist: nothing is after it, everything is through it.
    def through(day: dt.date) -> Q:
        return Q() if day == dt.date.max else _lookup(lhs, "lt", bound(day + dt.timedelta(days=1)))

    if op == "before":
        q = _lookup(lhs, "lt", bound(_day(value)))
    elif op == "after":
        day = _day(value)
        q = NOTHING if day == dt.date.max else _lookup(lhs, "gte", bound(day + dt.timedelta(days=1)))
    elif op == "on":
        q = _lookup(lhs, "gte", bound(_day(value))) & through(_day(value))
    elif op == "between":
        low, high = _day(value[0]), _day(value[1])
        q = _lookup(lhs, "gte", bound(low)) & through(high)
    elif op == "within_last":
        q = _lookup(lhs, "gte", bound(ctx.days_ago(value)))
    elif op == "more_than_days_ago":
        q = _lookup(lhs, "lt", bound(ctx.days_ago(value)))
    else:  # pragma: no cover
        raise ValueError(op)
    return _lookup(lhs, "isnull", False) & q if nullable else q


def _anniversary(month_day: Any, days: int, ctx: Context) -> Q:
    """The month-day (``MMDD`` as a number) falls between today and ``days`` days from now."""
    if days >= 365:
        return Q()
    start, end = ctx.today, ctx.today + dt.timedelta(days=days)
    low, high = start.month * 100 + start.day, end.month * 100 + end.day
    if low <= high:
        return _lookup(month_day, "gte", low) & _lookup(month_day, "lte", high)
    return _lookup(month_day, "gte", low) | _lookup(month_day, "lte", high)


def _day(value: str) -> dt.date:
    day = parse_day(value)
    assert day is not None  # validated
    return day


def _age(column: str, op: str, value: Any, ctx: Context) -> Q:
    """Age in whole years, as a range of birth dates (so an index on birth_date could serve it)."""
    if op == "neq":
        return ~_age(column, "eq", value, ctx)
    born = F(column)
    low: float | None = None  # age at least
    high: float | None = None  # age at most
    if op == "between":
        low, high = math.ceil(value[0]), math.floor(value[1])
    elif op == "eq":
        if value != int(value):
            return NOTHING
        low = high = int(value)
    elif op == "gte":
        low = math.ceil(value)
    elif op == "gt":
        low = math.floor(value) + 1
    elif op == "lte":
        high = math.floor(value)
    elif op == "lt":
        high = math.ceil(value) - 1
    q = _lookup(born, "isnull", False)
    if low is not None:
        q &= _lookup(born, "lte", _years_before(ctx.today, int(low)))
    if high is not None:
        q &= _lookup(born, "gt", _years_before(ctx.today, int(high) + 1))
    return q


def _years_before(day: dt.date, years: int) -> dt.date:
    year = day.year - years
    if year < 1:
        return dt.date.min
    if year > dt.MAXYEAR:  # a negative age: every birth date is before it
        return dt.date.max
    try:
        return day.replace(year=year)
    except ValueError:  # 29 February in a year without one
        return day.replace(year=year, day=28)


def _attribute(node: dict[str, Any], ctx: Context) -> Q:
    key, op, value = node["key"], node["op"], node.get("value")
    kind = ctx.attributes.get(key, "text")
    text = KeyTextTransform(key, "attributes")
    if kind == "number":
        return _numbers(JsonNumber(F("attributes"), key), op, value, nullable=True)
    if kind == "boolean":
        raw = KeyTransform(key, "attributes")
        if op in ("is_set", "not_set"):
            q = _lookup(text, "isnull", False)
            return q if op == "is_set" else ~q
        return _lookup(text, "isnull", False) & Q(
            KeyTransformExact(raw, Value(op == "is_true", output_field=JSONField()))
        )
    if kind == "tags":
        return _tags(KeyTransform(key, "attributes"), op, value)
    if kind == "date":
        return _attribute_dates(text, op, value, ctx)
    positive, negate = _negative(op)
    if positive in ("is_set", "not_set"):
        q = _lookup(text, "isnull", False) & ~_lookup(text, "exact", "")
        return q if positive == "is_set" else ~q
    lookup = {"eq": "exact", "in": "in", "contains": "icontains", "starts_with": "istartswith"}[positive]
    # A missing key makes the comparison NULL: false, so that its negation is true. One lookup of the
    # key per contact (``key IS NOT NULL AND key = …`` looked it up twice: ~6 % of a count's scan).
    q = Q(Coalesce(LOOKUPS[lookup](text, value), Value(False), output_field=BooleanField()))
    return ~q if negate else q


def _attribute_dates(text: Any, op: str, value: Any, ctx: Context) -> Q:
    """Date attributes are stored as ISO text, which sorts like the dates it spells."""
    present = _lookup(text, "isnull", False)
    if op in ("is_set", "not_set"):
        return present if op == "is_set" else ~present
    if op == "anniversary_within":
        month_day = Cast(Substr(text, 6, 2), IntegerField()) * 100 + Cast(Substr(text, 9, 2), IntegerField())
        return present & _anniversary(month_day, value, ctx)
    iso = dt.date.isoformat
    if op == "before":
        q = _lookup(text, "lt", value)
    elif op == "after":
        q = _lookup(text, "gt", value)
    elif op == "on":
        q = _lookup(text, "exact", value)
    elif op == "between":
        q = _lookup(text, "gte", value[0]) & _lookup(text, "lte", value[1])
    elif op == "within_last":
        q = _lookup(text, "gte", iso(ctx.days_ago(value)))
    elif op == "more_than_days_ago":
        q = _lookup(text, "lt", iso(ctx.days_ago(value)))
    else:  # pragma: no cover
        raise ValueError(op)
    return present & q


# --- conditions on related rows --------------------------------------------------------------
def _lifecycle_change(node: dict[str, Any], ctx: Context) -> Q:
    transitions = LifecycleTransition.objects.filter(
        tenant_id=ctx.tenant_id,
        contact_id=OuterRef("pk"),
        to_stage=node["stage"],
        occurred_at__gte=day_start(ctx.days_ago(node["within_days"])),
    )
    return Q(Exists(transitions))


def _consent(node: dict[str, Any], ctx: Context) -> Q:
    states = ConsentState.objects.filter(
        tenant_id=ctx.tenant_id, contact_id=OuterRef("pk"), channel=node["channel"], purpose=node["purpose"]
    )
    if node["status"] == "never_asked":
        return ~Q(Exists(states))
    return Q(Exists(states.filter(status=node["status"])))


def _suppression(node: dict[str, Any], ctx: Context) -> Q:
    channel = node["channel"]
    column = SUPPRESSION_ADDRESS[channel]
    address_hash = Sha256Hex(Concat(Value(f"{channel}:"), OuterRef(column)))
    suppressed = Suppression.objects.filter(tenant_id=ctx.tenant_id, channel=channel, address_hash=address_hash)
    q = ~Q(**{column: ""}) & Q(Exists(suppressed))
    return q if node["suppressed"] else ~q


def _window_days(window: dict[str, Any] | None, ctx: Context) -> tuple[dt.date | None, dt.date | None]:
    if not window:
        return None, None
    if "within_days" in window:
        return ctx.days_ago(window["within_days"]), None
    return _day(window["between"][0]), _day(window["between"][1])


def _rollups(names: Sequence[str], window: dict[str, Any] | None, ctx: Context) -> QuerySet[EventDailyRollup]:
    first, last = _window_days(window, ctx)
    by_name: dict[str, Any] = {"name": names[0]} if len(names) == 1 else {"name__in": list(names)}
    rows = EventDailyRollup.objects.filter(tenant_id=ctx.tenant_id, **by_name)
    if first:
        rows = rows.filter(day__gte=first)
    if last:
        rows = rows.filter(day__lte=last)
    return ctx.narrow(rows)


def _events(node: dict[str, Any], ctx: Context) -> QuerySet[Event]:
    first, last = _window_days(node.get("window"), ctx)
    rows = Event.objects.filter(tenant_id=ctx.tenant_id, name=node["name"])
    if first:
        rows = rows.filter(occurred_at__gte=day_start(first))
    if last and last < dt.date.max:
        rows = rows.filter(occurred_at__lt=day_start(last + dt.timedelta(days=1)))
    for item in node.get("where") or ():
        rows = rows.filter(_property(item))
    return ctx.narrow(rows)


def _property(item: dict[str, Any]) -> Q:
    key, op, value = item["property"], item["op"], item.get("value")
    text = KeyTextTransform(key, "properties")
    if op in ("is_set", "not_set"):
        q = _lookup(text, "isnull", False)
        return q if op == "is_set" else ~q
    positive, negate = _negative(op)
    if positive in ("gt", "gte", "lt", "lte"):
        return _numbers(JsonNumber(F("properties"), key), positive, value, nullable=True)
    values: list[Any] = list(value or ()) if positive == "in" else [value]
    if positive == "contains":
        q = _lookup(text, "isnull", False) & _lookup(text, "icontains", value)
    else:
        q = Q(*[_property_equals(key, text, v) for v in values], _connector=Q.OR)
    return ~q if negate else q


def _property_equals(key: str, text: Any, value: Any) -> Q:
    if isinstance(value, bool):
        json_value = Value(value, output_field=JSONField())
        return _lookup(text, "isnull", False) & Q(KeyTransformExact(KeyTransform(key, "properties"), json_value))
    if isinstance(value, int | float | Decimal):
        return _numbers(JsonNumber(F("properties"), key), "eq", value, nullable=True)
    return _lookup(text, "isnull", False) & _lookup(text, "exact", value)


def _contacts_with_at_least(rows: QuerySet[Any], count: int, *, counter: Any) -> Q:
    """Contacts with at least ``count`` of ``rows`` (summing ``counter``), as ``id IN (...)``."""
    if count <= 0:
        return Q()
    if count == 1:
        return Q(Exists(rows.filter(contact_id=OuterRef("pk"))))
    grouped = rows.values("contact_id").annotate(n=counter).filter(n__gte=count).values("contact_id")
    return Q(pk__in=grouped)


def _newest_event_within(names: Sequence[str], window: dict[str, Any] | None, ctx: Context) -> Q | None:
    """ "Performed within the last N days" from the contact's newest-event column, when there is one
    for ``names`` and the count reads the contact rows anyway (it then costs nothing: no join).

    Only for windows the tenant keeps events for: retention deletes old events, not the column.
    """
    days = (window or {}).get("within_days")
    column = NEWEST_EVENT_COLUMNS.get(frozenset(names))
    if column is None or days is None or not ctx.reads_contact_row or ctx.contact_ids is not None:
        return None
    if ctx.retention_days is None or days > ctx.retention_days:
        return None
    return Q(**{f"{column}__gte": day_start(ctx.days_ago(days))})


@dataclass(frozen=True)
class _Summarised:
    """The event window summaries of a condition's events, and the days of its window."""

    rows: QuerySet[EventWindowSummary]
    days: int
    windowed: bool  # the window is a summarised one: counts and sums are read, not only the newest day


def _summary(names: Sequence[str], window: dict[str, Any] | None, ctx: Context) -> _Summarised | None:
    """The event window summaries of ``names``, when they answer the window.

    They do for "within the last N days" (N up to the horizon) of summarised events in a
    whole-tenant count whose summaries are counted for today (contacts/summaries.py); sums and
    counts need N to be one of the summarised windows, "performed" only the newest day.
    """
    summaries = ctx.summaries
    days = (window or {}).get("within_days")
    if summaries is None or ctx.contact_ids is not None or days is None or days > summaries.horizon:
        return None
    if not set(names) <= summaries.names:
        return None
    by_name: dict[str, Any] = {"name": names[0]} if len(names) == 1 else {"name__in": list(names)}
    rows = EventWindowSummary.objects.filter(tenant_id=ctx.tenant_id, **by_name)
    return _Summarised(rows, days, days in summaries.windows)


def _performed_within(summary: _Summarised, ctx: Context) -> Q:
    return Q(Exists(summary.rows.filter(contact_id=OuterRef("pk"), last_day__gte=ctx.days_ago(summary.days))))


def _event_counter(node: dict[str, Any], ctx: Context) -> Callable[[int], Q]:
    """``at_least(n)``: the contacts with at least ``n`` of the node's events (everyone for n ≤ 0)."""
    op, count = node["op"], node.get("count", 1)
    highest = 1 if op in ("performed", "not_performed") else count + (op != "at_least")
    newest = None if node.get("where") or highest > 1 else _newest_event_within([node["name"]], node.get("window"), ctx)
    if newest is not None:
        performed = newest
        return lambda n: Q() if n <= 0 else performed
    summary = None if node.get("where") else _summary([node["name"]], node.get("window"), ctx)
    if summary is not None and (highest <= 1 or summary.windowed):
        found = summary

        def from_summary(n: int) -> Q:
            if n <= 0:
                return Q()
            if n == 1:
                return _performed_within(found, ctx)
            return Q(pk__in=found.rows.filter(**{f"count_{found.days}__gte": n}).values("contact_id"))

        return from_summary
    if node.get("where"):
        rows: QuerySet[Any] = _events(node, ctx)
        counter: Any = Count("id")
    else:
        rows = _rollups([node["name"]], node.get("window"), ctx)
        counter = Sum("count")
    return lambda n: _contacts_with_at_least(rows, n, counter=counter)


def _event(node: dict[str, Any], ctx: Context) -> Q:
    at_least = _event_counter(node, ctx)
    op = node["op"]
    if op == "performed":
        return at_least(1)
    if op == "not_performed":
        return ~at_least(1)
    count = node["count"]
    if op == "at_least":
        return at_least(count)
    if op == "at_most":
        return ~at_least(count + 1)
    return at_least(count) & ~at_least(count + 1)


def _cents(value: Any, op: str) -> int | None:
    """The bound in cents that ``sum <op> value`` means for a sum of whole cents (None: no sum can
    be equal to a fraction of a cent). Exact: the value is read as the decimal it was written as."""
    cents = Decimal(str(value)) * 100
    whole = cents == cents.to_integral_value()
    if op == "eq":
        return int(cents) if whole else None
    rounded = cents.to_integral_value(rounding=ROUND_CEILING if op in ("gte", "lt") else ROUND_FLOOR)
    return int(rounded)


def _revenue_from_summary(node: dict[str, Any], ctx: Context) -> Q | None:
    """ "Revenue sum within N days" from the summaries, when they answer it."""
    if node["fn"] != "sum" or node["property"] != "revenue" or node.get("where"):
        return None
    found = _summary([node["name"]], node.get("window"), ctx)
    if found is None or not found.windowed:
        return None
    column, op, value = f"revenue_{found.days}", node["op"], node["value"]
    # Only contacts with such an event in the window have a sum (the rollups' GROUP BY).
    summary = found.rows.filter(**{f"count_{found.days}__gte": 1})
    if op == "between":
        low, high = _cents(value[0], "gte"), _cents(value[1], "lte")
        summary = summary.filter(**{f"{column}__gte": low, f"{column}__lte": high})
    else:
        bound = _cents(value, op)
        if bound is None:
            return NOTHING
        summary = summary.filter(**{f"{column}__{COMPARISONS[op]}": bound})
    return Q(pk__in=summary.values("contact_id"))


def _event_aggregate(node: dict[str, Any], ctx: Context) -> Q:
    summarised = _revenue_from_summary(node, ctx)
    if summarised is not None:
        return summarised
    fn, prop, op, value = node["fn"], node["property"], node["op"], node["value"]
    if prop == "revenue" and fn == "sum" and not node.get("where"):
        rows: QuerySet[Any] = _rollups([node["name"]], node.get("window"), ctx)
        aggregate: Any = Sum("revenue")
    else:
        rows = _events(node, ctx)
        expression: Any = F("revenue") if prop == "revenue" else JsonNumber(F("properties"), prop)
        zero = Value(Decimal(0)) if prop == "revenue" else Value(0.0)
        # A missing value adds nothing to a sum; averages and extremes skip it.
        aggregate = Coalesce(Sum(expression), zero) if fn == "sum" else AGGREGATES[fn](expression)
    grouped = rows.values("contact_id").annotate(v=aggregate)
    if op == "between":
        grouped = grouped.filter(v__gte=value[0], v__lte=value[1])
    else:
        grouped = grouped.filter(**{f"v__{COMPARISONS[op]}": value})
    return Q(pk__in=grouped.values("contact_id"))


def _engagement(node: dict[str, Any], ctx: Context) -> Q:
    names = ENGAGEMENT_ACTIONS[node["action"]]
    found = _summary(names, node.get("window"), ctx)
    newest = _newest_event_within(names, node.get("window"), ctx)
    if newest is not None:
        q = newest
    elif found is not None:
        q = _performed_within(found, ctx)
    else:
        rows = _rollups(names, node.get("window"), ctx)
        q = Q(Exists(rows.filter(contact_id=OuterRef("pk"))))
    return q if node["op"] == "performed" else ~q


def _rfm(node: dict[str, Any], ctx: Context) -> Q:
    score, op, value = node["score"], node["op"], node["value"]
    scores = RfmScore.objects.filter(tenant_id=ctx.tenant_id, contact_id=OuterRef("pk"))
    if op == "neq":
        return ~_rfm({**node, "op": "eq"}, ctx)
    if op == "between":
        scores = scores.filter(**{f"{score}__gte": _exact(value[0]), f"{score}__lte": _exact(value[1])})
    else:
        scores = scores.filter(**{f"{score}__{COMPARISONS[op]}": _exact(value)})
    return Q(Exists(scores))


def _rfm_group(node: dict[str, Any], ctx: Context) -> Q:
    scores = RfmScore.objects.filter(tenant_id=ctx.tenant_id, contact_id=OuterRef("pk"), group__in=node["value"])
    q = Q(Exists(scores))
    return q if node["op"] == "in" else ~q


def _segment(node: dict[str, Any], ctx: Context) -> Q:
    members = SegmentMember.objects.filter(
        tenant_id=ctx.tenant_id, segment_id=node["segment"], contact_id=OuterRef("pk")
    )
    q = Q(Exists(members))
    return q if node["op"] == "in" else ~q


CONDITIONS: dict[str, Callable[[dict[str, Any], Context], Q]] = {
    "field": _field,
    "attribute": _attribute,
    "lifecycle_change": _lifecycle_change,
    "consent": _consent,
    "suppression": _suppression,
    "event": _event,
    "event_aggregate": _event_aggregate,
    "engagement": _engagement,
    "rfm": _rfm,
    "rfm_group": _rfm_group,
    "segment": _segment,
}


def event_property_filter(items: Sequence[dict[str, Any]]) -> Q:
    """The Q over ``Event`` rows for a validated ``where`` list (journeys filter their trigger events)."""
    return Q(*[_property(item) for item in items])
