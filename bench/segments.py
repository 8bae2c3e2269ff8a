"""Benchmark: segments on the big benchmark tenant — live preview, full refresh, real time.

    .venv/bin/python bench/segments.py                   # tenant bench-1m in segmentor_bench
    .venv/bin/python bench/segments.py --explain         # also print the plans of the counts
    .venv/bin/python bench/segments.py --only preview    # preview | refresh | realtime
    .venv/bin/python bench/segments.py --summaries off   # counts add up the rollups (as before them)

Runs in process on the benchmark database (bench/build_tenant.py), as the app role with row-level
security on and the tenant set, DEBUG off, one transaction per call as in a request or a task.
First the event window summaries (contacts/summaries.py) are brought to today as the beat tick
would: a full rebuild from the rollups is timed (it writes only rows that differ), then moving
them on by one day (rolled back).

- **Preview**: ``segments.selectors.segment_preview`` (validate, count, sample of 10) for the four
  rule trees of issue 4, warmed up, then timed ``--runs`` times; the count and the sample query are
  also timed on their own (from inside the same calls). Each is compared with the best SQL we could
  write by hand over the raw tables (contacts, events, consent state — not the rollups), run the
  same way in the same process: ratio = compiled count / hand-written count.
- **Refresh**: ``segment_refresh`` of a new segment of ~300,000 members (from empty; the previous
  run's segment is deleted and its rows vacuumed first), then again after 1,000 members drifted
  (500 removed, 500 wrong ones added), then with nothing to change.
- **Real time**: ``segments_evaluate_contacts`` for one contact across 50 materialised dynamic
  segments of varied rules (created and materialised once, then reused), a different contact each
  run.

Goals (issue 4): preview < 300 ms median each and ≤ 1.0 × hand-written; refresh < 5 s; real time
< 50 ms median.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import DB_NAME, env

PREVIEW_GOAL_MS = 300.0
REFRESH_GOAL_S = 5.0
REALTIME_GOAL_MS = 50.0
PREFIX = "bench: "
# The generator's "sports" shop category is predicted by these interests (contacts/generator.py).
SPORTS = ["fitness", "football", "tennis", "yoga", "running"]
CONSENT = {"type": "consent", "channel": "email", "purpose": "marketing", "status": "granted"}
PREVIEWS: dict[str, tuple[str, dict[str, Any]]] = {
    "a": (
        "country in DE, FR ∧ stage lead ∧ email consent (marketing) granted",
        {
            "all": [
                {"type": "field", "field": "country", "op": "in", "value": ["DE", "FR"]},
                {"type": "field", "field": "lifecycle_stage", "op": "eq", "value": "lead"},
                CONSENT,
            ]
        },
    ),
    "b": (
        "purchase ≥ 2 times in the last 30 days ∧ attribute plan = pro",
        {
            "all": [
                {"type": "event", "name": "purchase", "op": "at_least", "count": 2, "window": {"within_days": 30}},
                {"type": "attribute", "key": "plan", "op": "eq", "value": "pro"},
            ]
        },
    ),
    "c": (
        "(age 25-34 ∨ interests ∋ sports) ∧ no purchase in 90 days ∧ email consent granted",
        {
            "all": [
                {
                    "any": [
                        {"type": "field", "field": "age", "op": "between", "value": [25, 34]},
                        {"type": "field", "field": "interests", "op": "contains_any", "value": SPORTS},
                    ]
                },
                {"type": "event", "name": "purchase", "op": "not_performed", "window": {"within_days": 90}},
                CONSENT,
            ]
        },
    ),
    "d": (
        "revenue sum (purchase) in the last 180 days ≥ 500",
        {
            "all": [
                {
                    "type": "event_aggregate",
                    "name": "purchase",
                    "fn": "sum",
                    "property": "revenue",
                    "op": "gte",
                    "value": 500,
                    "window": {"within_days": 180},
                }
            ]
        },
    ),
}
REFRESH_RULES: dict[str, Any] = {
    "all": [{"type": "field", "field": "country", "op": "in", "value": ["DE", "FR", "GB", "US"]}, CONSENT]
}
CONSENT_SQL = """EXISTS (SELECT 1 FROM contacts_consentstate s WHERE s.tenant_id = %(t)s AND s.contact_id = c.id
           AND s.channel = 'email' AND s.purpose = 'marketing' AND s.status = 'granted')"""


def handwritten(today: dt.date) -> dict[str, tuple[str, dict[str, Any]]]:
    """The best counts we could write by hand over the raw tables (same windows as the compiler:
    "the last N days" is today and the N-1 days before, in UTC)."""

    def since(days: int) -> dt.datetime:
        return dt.datetime.combine(today - dt.timedelta(days=days - 1), dt.time.min, tzinfo=dt.UTC)

    def years_before(years: int) -> dt.date:
        return today.replace(year=today.year - years)  # the bench never runs on 29 February

    return {
        "a": (
            f"""SELECT count(*) FROM contacts_contact c
        WHERE c.tenant_id = %(t)s AND c.erased_at IS NULL AND c.country IN ('DE', 'FR')
          AND c.lifecycle_stage = 'lead' AND {CONSENT_SQL}""",
            {},
        ),
        "b": (
            """SELECT count(*) FROM contacts_contact c
        WHERE c.tenant_id = %(t)s AND c.erased_at IS NULL AND c.attributes ->> 'plan' = 'pro'
          AND c.id IN (SELECT e.contact_id FROM contacts_event e
                       WHERE e.tenant_id = %(t)s AND e.name = 'purchase' AND e.occurred_at >= %(since)s
                       GROUP BY e.contact_id HAVING count(*) >= 2)""",
            {"since": since(30)},
        ),
        "c": (
            f"""SELECT count(*) FROM contacts_contact c
        WHERE c.tenant_id = %(t)s AND c.erased_at IS NULL
          AND ((c.birth_date <= %(oldest)s AND c.birth_date > %(youngest)s) OR c.interests ?| %(sports)s)
          AND NOT EXISTS (SELECT 1 FROM contacts_event e WHERE e.tenant_id = %(t)s AND e.contact_id = c.id
                          AND e.name = 'purchase' AND e.occurred_at >= %(since)s)
          AND {CONSENT_SQL}""",
            {"since": since(90), "oldest": years_before(25), "youngest": years_before(35), "sports": SPORTS},
        ),
        "d": (
            """SELECT count(*) FROM contacts_contact c
        WHERE c.tenant_id = %(t)s AND c.erased_at IS NULL
          AND c.id IN (SELECT e.contact_id FROM contacts_event e
                       WHERE e.tenant_id = %(t)s AND e.name = 'purchase' AND e.occurred_at >= %(since)s
                       GROUP BY e.contact_id HAVING sum(e.revenue) >= 500)""",
            {"since": since(180)},
        ),
    }


def realtime_rules(base: dict[str, int]) -> list[tuple[str, dict[str, Any]]]:
    """50 dynamic segments of varied rules; ``base`` maps a few names to segment ids they refer to."""

    def field(name: str, op: str, value: Any = None) -> dict[str, Any]:
        return {"type": "field", "field": name, "op": op, **({} if value is None else {"value": value})}

    def attribute(key: str, op: str, value: Any = None) -> dict[str, Any]:
        return {"type": "attribute", "key": key, "op": op, **({} if value is None else {"value": value})}

    def event(name: str, op: str, count: int | None = None, days: int | None = None, **extra: Any) -> dict[str, Any]:
        node: dict[str, Any] = {"type": "event", "name": name, "op": op, **extra}
        if count is not None:
            node["count"] = count
        if days is not None:
            node["window"] = {"within_days": days}
        return node

    def consent(channel: str, status: str) -> dict[str, Any]:
        return {"type": "consent", "channel": channel, "purpose": "marketing", "status": status}

    def all_(*nodes: dict[str, Any]) -> dict[str, Any]:
        return {"all": list(nodes)}

    def engagement(action: str, op: str, days: int) -> dict[str, Any]:
        return {"type": "engagement", "action": action, "op": op, "window": {"within_days": days}}

    def member(op: str, name: str) -> dict[str, Any]:
        return {"type": "segment", "op": op, "segment": base[name]}

    revenue = {"type": "event_aggregate", "name": "purchase", "fn": "sum", "property": "revenue", "op": "gte"}
    shoes = [{"property": "category", "op": "eq", "value": "shoes"}]
    nested = {
        "any": [
            all_(field("country", "eq", "NL"), field("lifecycle_stage", "eq", "lead")),
            {"not": [field("order_count", "lte", 1), event("email_open", "performed", days=30)]},
        ]
    }
    rules = [
        ("Germany", all_(field("country", "eq", "DE"))),
        ("Southern Europe", all_(field("country", "in", ["ES", "IT", "FR"]))),
        ("Leads", all_(field("lifecycle_stage", "eq", "lead"))),
        ("Repeat and loyal", all_(field("lifecycle_stage", "in", ["repeat_customer", "loyal_advocate"]))),
        ("Young adults", all_(field("age", "between", [18, 24]))),
        ("55 plus", all_(field("age", "gte", 55))),
        ("Women", all_(field("gender", "eq", "female"))),
        ("Berlin", all_(field("city", "eq", "Berlin"))),
        ("Email starts with a", all_(field("email", "starts_with", "a"))),
        ("Gmail", all_(field("email", "contains", "gmail"))),
        ("Travel or hiking", all_(field("interests", "contains_any", ["travel", "hiking"]))),
        ("Sustainability", all_(field("values", "contains_any", ["sustainability"]))),
        ("Plan pro", all_(attribute("plan", "eq", "pro"))),
        ("Loyalty 500+", all_(attribute("loyalty_points", "gte", 500))),
        ("App users", all_(attribute("app_user", "is_true"))),
        ("Social or referral", all_(attribute("signup_source", "in", ["social", "referral"]))),
        ("Signed up this year", all_(attribute("signup_date", "after", "2025-12-31"))),
        ("Email consent", all_(consent("email", "granted"))),
        ("SMS consent", all_(consent("sms", "granted"))),
        ("Push withdrawn", all_(consent("push", "withdrawn"))),
        ("Never asked (email)", all_(consent("email", "never_asked"))),
        ("Not suppressed (email)", all_({"type": "suppression", "channel": "email", "suppressed": False})),
        ("Buyers", all_(event("purchase", "performed"))),
        ("Lapsed 90 days", all_(event("purchase", "performed"), event("purchase", "not_performed", days=90))),
        ("Two orders in 30 days", all_(event("purchase", "at_least", 2, 30))),
        ("Ready to buy", all_(event("add_to_cart", "at_least", 2, 7), event("purchase", "not_performed", days=7))),
        ("Browsers", all_(event("page_view", "at_least", 10, 30))),
        ("Opened in 14 days", all_(event("email_open", "performed", days=14))),
        ("Abandoned a cart", all_(event("cart_abandoned", "performed", days=30))),
        ("Shoe buyers", all_(event("purchase", "performed", days=90, where=shoes))),
        ("Spent 500 in 180 days", all_({**revenue, "value": 500, "window": {"within_days": 180}})),
        ("Average order 100+", all_({**revenue, "fn": "avg", "value": 100})),
        ("Engaged 30 days", all_(engagement("opened", "performed", 30))),
        ("No clicks 90 days", all_(engagement("clicked", "not_performed", 90))),
        ("New repeat customers", all_({"type": "lifecycle_change", "stage": "repeat_customer", "within_days": 30})),
        ("5+ orders", all_(field("order_count", "gte", 5))),
        ("Revenue 1000+", all_(field("total_revenue", "gte", 1000))),
        ("Seen this week", all_(field("last_seen_at", "within_last", 7))),
        ("No order for 60 days", all_(field("last_order_at", "more_than_days_ago", 60))),
        ("New this month", all_(field("created_at", "within_last", 30))),
        ("Birthday this week", all_(field("birth_date", "anniversary_within", 7))),
        ("Champions and loyal", all_({"type": "rfm_group", "op": "in", "value": ["champions", "loyal"]})),
        ("Recent buyers (RFM)", all_({"type": "rfm", "score": "recency", "op": "gte", "value": 4})),
        ("Germans with email consent", all_(member("in", "Germany"), consent("email", "granted"))),
        ("Buyers outside Germany", all_(member("in", "Buyers"), member("not_in", "Germany"))),
        ("Nested", nested),
        ("Refresh ~300k", REFRESH_RULES),
    ]
    rules += [(f"Preview {key}", PREVIEWS[key][1]) for key in ("a", "b", "c")]
    assert len(rules) == 50, len(rules)
    return rules


# --- measuring --------------------------------------------------------------------------------
def setup_django() -> None:
    os.environ.update(env())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "segmentor.settings")
    import django

    django.setup()


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


@dataclass
class Timings:
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def p95(self) -> float:
        return percentile(self.values, 95)


@contextmanager
def statements() -> Iterator[list[tuple[str, Any, float]]]:
    """Record (sql, params, ms) of every statement run through Django inside the block."""
    from django.db import connection

    seen: list[tuple[str, Any, float]] = []

    def timer(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            seen.append((sql, params, (time.perf_counter() - started) * 1000))

    with connection.execute_wrapper(timer):
        yield seen


def timed(call: Callable[[], Any], *, warmup: int, runs: int) -> Timings:
    for _ in range(warmup):
        call()
    timings = Timings()
    for _ in range(runs):
        started = time.perf_counter()
        call()
        timings.values.append((time.perf_counter() - started) * 1000)
    return timings


def run_sql(sql: str, params: Any, *, explain: bool = False, set_based: bool = True) -> Any:
    """One statement in its own transaction, with the settings segment counts run with (or with
    only JIT off, the planner otherwise free: ``set_based=False``)."""
    from django.db import connection, transaction

    from segments.services import SET_BASED, query_settings

    overrides = SET_BASED if set_based else {}
    with transaction.atomic(), query_settings(**overrides), connection.cursor() as cursor:
        cursor.execute(("EXPLAIN (ANALYZE, BUFFERS) " if explain else "") + sql, params)
        rows = cursor.fetchall()
    return "\n".join(row[0] for row in rows) if explain else rows[0][0]


def interleaved(calls: dict[str, Callable[[], Any]], *, warmup: int, runs: int) -> dict[str, Timings]:
    """Time each call ``runs`` times, one of each in turn (after ``warmup`` rounds)."""
    taken = {name: Timings() for name in calls}
    for round_ in range(warmup + runs):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            if round_ >= warmup:
                taken[name].values.append((time.perf_counter() - started) * 1000)
    return taken


def compiled_count(tenant: Any, rules: dict[str, Any]) -> int:
    """The compiled count alone, as the preview would run it without the newest ids."""
    from django.db import transaction

    from segments.compiler import matching_contacts
    from segments.services import SET_BASED, context_for, query_settings

    with transaction.atomic(), query_settings(**SET_BASED):
        return matching_contacts(rules, context_for(tenant)).count()


def median(timings: Timings) -> float:
    return timings.median


def explain_compiled(sql: str, params: Any) -> str:
    from django.db import connection, transaction

    from segments.services import SET_BASED, query_settings

    with transaction.atomic(), query_settings(**SET_BASED), connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


@dataclass
class SummaryFigures:
    rows: int
    rebuild_s: float
    move_on_s: float
    read: bool


def prepare_summaries(tenant: Any, *, read: bool) -> SummaryFigures:
    """The event window summaries as the beat tick leaves them (counted for today), timing a full
    rebuild and moving them on by one day (rolled back). ``read=False``: counts add up the rollups
    themselves (the figures before the summaries)."""
    from django.db import transaction
    from django.utils import timezone

    import segments.services
    from contacts.models import EventWindowSummary
    from contacts.summaries import event_summaries_refresh

    started = time.perf_counter()
    rebuilt = event_summaries_refresh(tenant=tenant, rebuild=True)
    rebuild_s = time.perf_counter() - started
    assert rebuilt is not None, "a count holds the summary lock"
    with transaction.atomic():
        started = time.perf_counter()
        moved = event_summaries_refresh(tenant=tenant, now=timezone.now() + dt.timedelta(days=1))
        move_on_s = time.perf_counter() - started
        assert moved is not None and not moved.rebuilt
        transaction.set_rollback(True)
    if not read:
        segments.services.summaries_for_counting = lambda **_: None
    rows = EventWindowSummary.objects.filter(tenant=tenant).count()
    print(
        f"  event window summaries: {rows:,} rows rebuilt in {rebuild_s:.1f} s, moved on by a day in "
        f"{move_on_s:.2f} s; counts {'read them' if read else 'add up the rollups'}",
        file=sys.stderr,
        flush=True,
    )
    return SummaryFigures(rows, rebuild_s, move_on_s, read)


@dataclass
class PreviewRow:
    key: str
    label: str
    count: int
    preview: Timings
    count_query: Timings
    sample_query: Timings
    compiled: Timings
    hand: Timings
    hand_count: int


def bench_previews(tenant: Any, *, warmup: int, runs: int, explain: bool) -> list[PreviewRow]:
    from django.db import transaction
    from django.utils import timezone

    from segments.selectors import segment_preview

    today = timezone.now().astimezone(dt.UTC).date()
    by_hand = handwritten(today)
    rows = []
    for key, (label, rules) in PREVIEWS.items():
        count_times: list[float] = []
        sample_times: list[float] = []
        result: list[Any] = []

        def preview(
            rules: dict[str, Any] = rules,
            record: bool = False,
            result: list[Any] = result,
            count_times: list[float] = count_times,
            sample_times: list[float] = sample_times,
        ) -> None:
            with statements() as seen, transaction.atomic():
                found = segment_preview(tenant=tenant, rules=rules)
            assert not found.errors, found.as_dict()
            result[:] = [found, seen]
            if record:
                # The count (with the newest ids, in one statement on PostgreSQL), then the sample rows.
                counts = [ms for sql, _, ms in seen if sql.startswith(("WITH matching", "SELECT COUNT(*)"))]
                samples = [ms for sql, _, ms in seen if sql.startswith("SELECT") and "contacts_contact" in sql][-1:]
                count_times.extend(counts[-1:])
                sample_times.extend(samples[-1:])

        for _ in range(warmup):
            preview()
        timings = Timings()
        for _ in range(runs):
            started = time.perf_counter()
            preview(record=True)
            timings.values.append((time.perf_counter() - started) * 1000)
        found, seen = result
        sql, params = by_hand[key]
        params = {**params, "t": tenant.pk}
        hand_count = run_sql(sql, params)
        # The compiled count alone (as the preview runs it) against the hand-written count, taken in
        # turns so that the load of the machine weighs on both alike; the hand-written count runs
        # both ways (with the compiled counts' settings, or the planner left alone) and keeps the better.
        with statements() as counted:
            compiled_count(tenant, rules)
        count_sql, count_params, _ = next(s for s in counted if s[0].startswith("SELECT COUNT(*)"))
        taken = interleaved(
            {
                "compiled": partial(run_sql, count_sql, count_params),
                "hand, set-based": partial(run_sql, sql, params),
                "hand, planner free": partial(run_sql, sql, params, set_based=False),
            },
            warmup=warmup,
            runs=runs,
        )
        compiled = taken["compiled"]
        hand = min(taken["hand, set-based"], taken["hand, planner free"], key=median)
        rows.append(
            PreviewRow(
                key,
                label,
                -1 if found.count is None else found.count,
                timings,
                Timings(count_times),
                Timings(sample_times),
                compiled,
                hand,
                hand_count,
            )
        )
        print(
            f"  ({key}) {rows[-1].count:,} contacts: preview {timings.median:.0f} ms, compiled count "
            f"{compiled.median:.0f} ms, hand-written {hand.median:.0f} ms ({hand_count:,})",
            file=sys.stderr,
            flush=True,
        )
        if explain:
            count_sql, count_params, _ = next(s for s in seen if s[0].startswith(("WITH matching", "SELECT COUNT(*)")))
            print(f"\n-- ({key}) compiled count\n{explain_compiled(count_sql, count_params)}")
            print(f"\n-- ({key}) hand-written\n{sql}\n{run_sql(sql, params, explain=True)}")
    return rows


# --- refresh ----------------------------------------------------------------------------------
def ensure_segment(tenant: Any, name: str, rules: dict[str, Any]) -> Any:
    """The bench's segment named ``name`` with ``rules`` (created without queueing a refresh)."""
    from unittest import mock

    from segments.models import Segment
    from segments.services import segment_create, segment_update
    from tenants.audit import Actor

    actor = Actor.system("bench")
    segment = Segment.objects.filter(tenant=tenant, name=PREFIX + name).first()
    with mock.patch("segments.services._queue_refresh"):
        if segment is None:
            return segment_create(tenant=tenant, actor=actor, name=PREFIX + name, rules=rules)
        if segment.rules != rules:
            return segment_update(segment=segment, actor=actor, rules=rules)
    return segment


def renew(tenant: Any, name: str, rules: dict[str, Any]) -> Any:
    """A new, never materialised segment in place of the bench's old one (deleted, then vacuumed)."""
    from django.db import connection, transaction

    from segments.models import Segment, SegmentMember, SegmentSize, SegmentTransition
    from tenants.context import fresh_scope

    old = Segment.objects.filter(tenant=tenant, name=PREFIX + name).first()
    models = (SegmentMember, SegmentTransition, SegmentSize)
    if old is not None:  # by hand: other apps' tables that refer to segments may not exist here
        with transaction.atomic():
            for model in models:
                model.objects.filter(tenant=tenant, segment=old).delete()
            Segment.objects.filter(pk=old.pk)._raw_delete(Segment.objects.db)
    tables = ", ".join(model._meta.db_table for model in models)
    with fresh_scope(), connection.cursor() as cursor:  # VACUUM runs outside a transaction
        cursor.execute(f"VACUUM (ANALYZE) {tables}")
    return ensure_segment(tenant, name, rules)


def drift(segment: Any, count: int) -> None:
    """Make ``count`` members wrong: remove count/2 members, add count/2 contacts that do not match."""
    from django.db import transaction
    from django.db.models import Exists, OuterRef
    from django.utils import timezone

    from contacts.models import Contact
    from segments.compiler import matching_contacts
    from segments.models import SegmentMember
    from segments.services import context_for

    half = count // 2
    members = SegmentMember.objects.filter(tenant_id=segment.tenant_id, segment=segment)
    matching = matching_contacts(segment.rules, context_for(segment.tenant))
    with transaction.atomic():
        gone = list(members.order_by("contact_id").values_list("pk", flat=True)[1000 : 1000 + half])
        SegmentMember.objects.filter(pk__in=gone).delete()
        strangers = list(
            Contact.objects.filter(tenant_id=segment.tenant_id)
            .exclude(Exists(matching.filter(pk=OuterRef("pk"))))
            .order_by("id")
            .values_list("id", flat=True)[:half]
        )
        now = timezone.now()
        SegmentMember.objects.bulk_create(
            SegmentMember(tenant_id=segment.tenant_id, segment=segment, contact_id=pk, entered_at=now)
            for pk in strangers
        )


@dataclass
class RefreshRow:
    label: str
    seconds: list[float]
    entered: int
    exited: int
    size: int


def bench_refresh(tenant: Any, *, repeat: int, explain: bool) -> list[RefreshRow]:
    from segments.services import segment_refresh

    rows: dict[str, RefreshRow] = {}
    segment: Any = None

    def run(label: str) -> None:
        started = time.perf_counter()
        result = segment_refresh(segment=segment)
        seconds = time.perf_counter() - started
        assert result is not None
        row = rows.setdefault(label, RefreshRow(label, [], result.entered, result.exited, result.size))
        row.seconds.append(seconds)
        print(f"  {label}: {seconds:.2f} s, +{result.entered:,} -{result.exited:,}", file=sys.stderr, flush=True)

    for _ in range(repeat):
        segment = renew(tenant, "Refresh ~300k", REFRESH_RULES)
        with statements() as seen:
            run("from empty")
        if explain:
            print("\n-- refresh statement\n" + explain_refresh(seen))
        drift(segment, 1000)
        run("1,000 members drifted (500 in, 500 out)")
        run("nothing changed")
    return list(rows.values())


def explain_refresh(seen: list[tuple[str, Any, float]]) -> str:
    from django.db import connection, transaction

    from segments.services import SET_BASED, query_settings

    sql, params, _ = max(seen, key=lambda s: s[2])
    with transaction.atomic(), query_settings(**SET_BASED), connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        transaction.set_rollback(True)
    return plan


# --- real time --------------------------------------------------------------------------------
def ensure_realtime_segments(tenant: Any) -> list[Any]:
    """The 50 segments (materialised), and no other materialised dynamic segment in the tenant."""
    from segments.models import RfmScore, Segment
    from segments.services import rfm_recompute, segment_refresh

    if not RfmScore.objects.filter(tenant=tenant).exists():
        started = time.perf_counter()
        rfm_recompute(tenant=tenant)
        print(f"  RFM scores computed in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    # The segments others refer to first (their rules do not refer to any).
    first = realtime_rules({"Germany": 0, "Buyers": 0})
    base = {name: ensure_segment(tenant, name, rules).pk for name, rules in first if name in {"Germany", "Buyers"}}
    segments = [ensure_segment(tenant, name, rules) for name, rules in realtime_rules(base)]
    wanted = {segment.pk for segment in segments}
    others = Segment.objects.filter(tenant=tenant, kind=Segment.Kind.DYNAMIC, materialized_version__gt=0)
    others.exclude(pk__in=wanted).update(materialized_version=0)  # out of the real-time set
    from segments.services import _dependency_order

    for segment in _dependency_order(segments):
        segment.refresh_from_db()
        if segment.materialized_version != segment.version:
            started = time.perf_counter()
            result = segment_refresh(segment=segment)
            assert result is not None
            print(
                f"  materialised {segment.name!r}: {result.size:,} members in {time.perf_counter() - started:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    return segments


def bench_realtime(tenant: Any, *, warmup: int, runs: int, explain: bool) -> tuple[Timings, list[int], int]:
    from django.db.models import Max, Min

    from contacts.models import Contact
    from segments.services import segments_evaluate_contacts

    segments = ensure_realtime_segments(tenant)
    bounds = Contact.objects.filter(tenant=tenant).aggregate(low=Min("id"), high=Max("id"))
    picker = random.Random(4)  # a reproducible choice of contacts
    contacts = [picker.randint(bounds["low"], bounds["high"]) for _ in range(warmup + runs)]
    changes: list[int] = []
    queue = iter(contacts)

    def evaluate() -> None:
        result = segments_evaluate_contacts(tenant=tenant, contact_ids=[next(queue)])
        changes.append(result["entered"] + result["exited"])

    timings = timed(evaluate, warmup=warmup, runs=runs)
    if explain:
        with statements() as seen:
            segments_evaluate_contacts(tenant=tenant, contact_ids=[contacts[0]])
        print("\n-- real time: statements")
        for sql, _, ms in seen:
            print(f"{ms:8.1f} ms  {sql[:160]}")
    return timings, contacts[warmup:], len(segments)


# --- report -----------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slug", default="bench-1m")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--refresh-repeat", type=int, default=2)
    parser.add_argument("--only", choices=("preview", "refresh", "realtime"))
    parser.add_argument("--explain", action="store_true", help="Print the plans of the counts and the refresh.")
    parser.add_argument(
        "--summaries",
        choices=("on", "off"),
        default="on",
        help="off: counts add up the rollups themselves, as before the event window summaries.",
    )
    args = parser.parse_args()
    setup_django()

    from contacts.models import Contact
    from tenants.context import tenant_context
    from tenants.models import Tenant

    tenant = Tenant.objects.filter(slug=args.slug).first()
    if tenant is None:
        sys.exit(f"No tenant {args.slug!r} in {DB_NAME}. Build it with bench/build_tenant.py.")
    load_before = os.getloadavg()
    with tenant_context(tenant.id):
        size = Contact.objects.filter(tenant=tenant).count()
        previews = refreshes = None
        realtime = None
        summaries = prepare_summaries(tenant, read=args.summaries == "on")
        if args.only in (None, "preview"):
            previews = bench_previews(tenant, warmup=args.warmup, runs=args.runs, explain=args.explain)
        if args.only in (None, "refresh"):
            refreshes = bench_refresh(tenant, repeat=args.refresh_repeat, explain=args.explain)
        if args.only in (None, "realtime"):
            realtime = bench_realtime(tenant, warmup=args.warmup, runs=args.runs, explain=args.explain)
    load_after = os.getloadavg()

    print(f"\n### {time.strftime('%Y-%m-%d')} · {platform.node()} · {os.cpu_count()} cores · segments")
    print(
        f"Tenant `{tenant.slug}` ({size:,} contacts) in `{DB_NAME}`; in process, app role with RLS, DEBUG off; "
        f"{args.warmup} warm-up + {args.runs} timed runs. Load average (1 min) {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after. Event window summaries: {summaries.rows:,} rows, rebuilt in "
        f"{summaries.rebuild_s:.1f} s, moved on by a day in {summaries.move_on_s:.2f} s; counts "
        f"{'read them' if summaries.read else 'add up the rollups (--summaries off)'}.\n"
    )
    if previews:
        print(
            f"| preview (goal < {PREVIEW_GOAL_MS:.0f} ms median, ≤ 1.0 × hand-written) | contacts "
            "| preview median / p95 ms | in it: count ms (+ newest ids for aggregates) | in it: sample ms "
            "| compiled count alone median / p95 ms | hand-written (raw tables) median / p95 ms "
            "| ratio | < 300 ms | ≤ 1.0 × |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|:---:|:---:|")
        for row in previews:
            ratio = row.compiled.median / row.hand.median
            fast = "yes" if row.preview.median < PREVIEW_GOAL_MS else "**no**"
            # Within 5 %: the same work (medians of noisy runs cannot tell them apart).
            beats = "yes" if ratio <= 1.0 else "parity" if ratio <= 1.05 else "**no**"
            same = "" if row.hand_count == row.count else f" (counts {row.hand_count:,})"
            print(
                f"| ({row.key}) {row.label} | {row.count:,} | {row.preview.median:.0f} / {row.preview.p95:.0f} "
                f"| {row.count_query.median:.0f} | {row.sample_query.median:.1f} "
                f"| {row.compiled.median:.0f} / {row.compiled.p95:.0f} | {row.hand.median:.0f} / "
                f"{row.hand.p95:.0f}{same} | {ratio:.2f} | {fast} | {beats} |"
            )
    if refreshes:
        print(
            f"\n| refresh of a ~300k segment (goal < {REFRESH_GOAL_S:.0f} s) | members | entered | exited | seconds |"
        )
        print("|---|---:|---:|---:|---:|")
        for r in refreshes:
            seconds = " / ".join(f"{s:.2f}" for s in r.seconds)
            print(f"| {r.label} | {r.size:,} | {r.entered:,} | {r.exited:,} | {seconds} |")
    if realtime:
        timings, _, count = realtime
        mark = "yes" if timings.median < REALTIME_GOAL_MS else "**no**"
        print(f"\n| real time (goal < {REALTIME_GOAL_MS:.0f} ms median) | segments | median ms | p95 ms | goal |")
        print("|---|---:|---:|---:|:---:|")
        print(
            f"| one contact across the dynamic segments | {count} | {timings.median:.1f} | {timings.p95:.1f} | {mark} |"
        )


if __name__ == "__main__":
    main()
