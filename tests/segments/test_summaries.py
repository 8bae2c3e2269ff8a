"""Event window summaries (contacts/summaries.py) and the compiler's use of them.

The compiled rules must select exactly what the oracle (tests/segments/oracle.py, raw events)
selects whether or not the summaries answer a condition; and the summaries must equal the raw
events added up as events arrive, as the clock moves, after a merge, whichever way they got there.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import time_machine
from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings

from contacts.ingest import contact_merge, events_ingest
from contacts.models import Contact, Event, EventSummaryState, EventWindowSummary
from contacts.summaries import (
    HORIZON,
    MAX_GAP_DAYS,
    SUMMARY_LOCK,
    WINDOWS,
    event_summaries_rebuild_contacts,
    event_summaries_refresh,
    summaries_for_counting,
    tenants_with_stale_summaries,
)
from segments.compiler import matching_contacts
from segments.rules import Registry, validate
from segments.services import context_for
from tenants.audit import Actor
from tenants.context import tenant_context
from tests.segments.oracle import World
from tests.segments.test_compiler import NOW, leaves, trees
from tests.segments.test_compiler import data as compiler_data  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db
SUMMARY = EventWindowSummary._meta.db_table
ROLLUP = "contacts_eventdailyrollup"
SUMMARISED = ("add_to_cart", "email_click", "email_open", "link_click", "purchase", "push_open", "sms_click")
ACTOR = Actor.system("test")


@pytest.fixture(autouse=True)
def summarised_events(settings):
    settings.SEGMENT_SUMMARY_EVENTS = SUMMARISED


@pytest.fixture
def data(compiler_data):  # noqa: F811 (the imported fixture, by name)
    """Tenant A with test_compiler's generated contacts and every kind of row a condition reads."""
    return compiler_data


def compiled(tenant, rules: dict[str, Any], now: dt.datetime) -> tuple[set[int], str]:
    """The contacts the rules select at ``now`` (as a preview compiles them) and the SQL."""
    assert not validate(rules, Registry.for_tenant(tenant))
    with transaction.atomic():
        query = matching_contacts(rules, context_for(tenant, now=now))
        try:
            sql = str(query.query)
        except EmptyResultSet:  # rules that can match nobody (a sum of cents equal to 10.001)
            sql = ""
        return set(query.values_list("pk", flat=True)), sql


def check(tenant, rules: dict[str, Any], now: dt.datetime, world: World | None = None) -> str:
    found, sql = compiled(tenant, rules, now)
    expected = (world or World.load(tenant, now)).matching(rules)
    assert found == expected, f"{rules}: compiled {len(found)}, expected {len(expected)}"
    return sql


def window_leaves() -> list[dict[str, Any]]:
    """Event conditions with windows in and out of the summarised ones, and values that need care."""

    def event(name: str, op: str, days: int | None, count: int | None = None) -> dict[str, Any]:
        node: dict[str, Any] = {"type": "event", "name": name, "op": op}
        if count is not None:
            node["count"] = count
        if days is not None:
            node["window"] = {"within_days": days}
        return node

    def revenue(op: str, value: Any, days: int, fn: str = "sum") -> dict[str, Any]:
        return {"type": "event_aggregate", "name": "purchase", "fn": fn, "property": "revenue", "op": op,
                "value": value, "window": {"within_days": days}}  # fmt: skip

    return [
        event("purchase", "performed", 30), event("purchase", "not_performed", 90),
        event("purchase", "performed", 45), event("purchase", "not_performed", 1), event("purchase", "performed", 365),
        event("purchase", "at_least", 30, 2), event("purchase", "at_least", 180, 3),
        event("purchase", "at_least", 45, 2), event("purchase", "at_least", 7, 1), event("purchase", "at_least", 14, 0),
        event("purchase", "at_most", 90, 1), event("purchase", "at_most", 60, 0), event("purchase", "exactly", 180, 2),
        event("purchase", "exactly", 30, 0), event("purchase", "exactly", 100, 1),
        event("add_to_cart", "at_least", 7, 2), event("add_to_cart", "at_least", 14, 1),
        event("add_to_cart", "performed", 2), event("page_view", "at_least", 30, 3),
        event("purchase", "performed", None),
        revenue("gte", 500, 180), revenue("gte", 100, 30), revenue("lt", 50.5, 90), revenue("gt", 99.995, 365),
        revenue("lte", 120.004, 60), revenue("eq", 0, 14), revenue("between", [20.5, 200], 180),
        revenue("eq", 10.001, 30), revenue("gte", 100, 45), revenue("gte", 100, 30, fn="max"),
        {"type": "engagement", "action": "opened", "op": "performed", "window": {"within_days": 30}},
        {"type": "engagement", "action": "clicked", "op": "not_performed", "window": {"within_days": 90}},
        {"type": "engagement", "action": "any", "op": "performed", "window": {"within_days": 500}},
    ]  # fmt: skip


def uses_summaries(node: dict[str, Any], windows: frozenset[int] = frozenset(WINDOWS)) -> bool:
    """Whether the compiler should answer ``node`` from the summaries (all names summarised)."""
    days = (node.get("window") or {}).get("within_days")
    if days is None or days > HORIZON or node.get("name", "purchase") not in SUMMARISED:
        return False
    if node["type"] == "event_aggregate":
        return node["fn"] == "sum" and days in windows
    if node["type"] == "event" and node["op"] in ("at_least", "at_most", "exactly"):
        highest = node["count"] + (node["op"] != "at_least")
        return highest >= 1 and (highest == 1 or days in windows)  # at least 0: everyone, no table
    return True


def expected_summaries(tenant, day: dt.date) -> dict[tuple[int, str], tuple[Any, ...]]:
    """The summaries as they should be on ``day``, added up from the raw events."""
    found: dict[tuple[int, str], list[Any]] = defaultdict(lambda: [None] + [0] * (2 * len(WINDOWS)))
    for contact_id, name, occurred_at, revenue in Event.objects.filter(tenant=tenant, name__in=SUMMARISED).values_list(
        "contact_id", "name", "occurred_at", "revenue"
    ):
        event_day = occurred_at.astimezone(dt.UTC).date()
        row = found[(contact_id, name)]
        row[0] = max(filter(None, (row[0], event_day)))
        for index, days in enumerate(WINDOWS):
            if event_day >= day - dt.timedelta(days=days - 1):
                row[1 + index] += 1
                row[1 + len(WINDOWS) + index] += int((revenue or Decimal(0)) * 100)
    oldest = day - dt.timedelta(days=HORIZON - 1)
    return {key: tuple(row) for key, row in found.items() if row[0] >= oldest}


def stored_summaries(tenant, day: dt.date) -> dict[tuple[int, str], tuple[Any, ...]]:
    """The stored summaries, without rows that say nothing (all zero, newest day out of every window)."""
    columns = [f"count_{days}" for days in WINDOWS] + [f"revenue_{days}" for days in WINDOWS]
    oldest = day - dt.timedelta(days=HORIZON - 1)
    rows = EventWindowSummary.objects.filter(tenant=tenant).values_list("contact_id", "name", "last_day", *columns)
    return {(row[0], row[1]): tuple(row[2:]) for row in rows if any(row[3:]) or row[2] >= oldest}


def assert_exact(tenant, now: dt.datetime) -> None:
    day = now.astimezone(dt.UTC).date()
    assert EventSummaryState.objects.get(tenant=tenant).day == day
    expected = expected_summaries(tenant, day)
    assert expected  # the data exercises the summaries
    assert stored_summaries(tenant, day) == expected


def ingest(tenant, contacts: list[Contact], now: dt.datetime, salt: str) -> None:
    """Events of summarised and other names, today, in the past, before every window and tomorrow."""
    offsets = [0, 0, -1, -6, -7, -13, -29, -30, -59, -89, -90, -179, -200, -364, -365, -400, 1]
    events = []
    for index, contact in enumerate(contacts):
        for step, offset in enumerate(offsets[index % 5 :: 2]):
            name = ("purchase", "add_to_cart", "email_open", "page_view")[(index + step) % 4]
            occurred = now + dt.timedelta(days=offset, minutes=-((index * 7 + step) % 600))
            revenue = f"{(index * 13 + step * 7) % 90 + 0.5:.2f}" if name == "purchase" else None
            events.append({"event": name, "contact_id": contact.pk, "occurred_at": occurred.isoformat(),
                           "revenue": revenue, "idempotency_key": f"{salt}-{index}-{step}"})  # fmt: skip
    with time_machine.travel(now, tick=False):  # ingest refuses events more than a day ahead of its clock
        results = events_ingest(tenant=tenant, events=events)
    assert {result.status for result in results} == {"accepted"}, [r for r in results if r.status != "accepted"]


def test_summarised_conditions_match_the_oracle_and_read_the_summaries(data):
    tenant = data["tenant"]
    with tenant_context(tenant.id):
        refreshed = event_summaries_refresh(tenant=tenant, now=NOW)
        assert refreshed is not None and refreshed.rebuilt and refreshed.rows > 0
        assert_exact(tenant, NOW)
        world = World.load(tenant, NOW)
        selected = 0
        for leaf in window_leaves():
            sql = check(tenant, {"all": [leaf]}, NOW, world)
            assert (SUMMARY in sql) == uses_summaries(leaf) or (sql == "" and leaf.get("value") == 10.001), (leaf, sql)
            selected += bool(world.matching({"all": [leaf]}))
        assert selected > len(window_leaves()) * 0.7


def test_nested_trees_with_summaries_match_the_oracle(data):
    tenant = data["tenant"]
    pool = window_leaves() + leaves(data)
    with tenant_context(tenant.id):
        event_summaries_refresh(tenant=tenant, now=NOW)
        world = World.load(tenant, NOW)

        @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        @given(trees(pool))
        def run(tree):
            check(tenant, tree, NOW, world)

        run()


def test_summaries_follow_events_as_they_arrive(data):
    tenant = data["tenant"]
    with tenant_context(tenant.id):
        contacts = list(Contact.objects.filter(tenant=tenant).order_by("pk")[:40])
        ingest(tenant, contacts[:10], NOW, "before")  # no summaries yet: nothing to add to
        assert not EventWindowSummary.objects.filter(tenant=tenant).exists()
        event_summaries_refresh(tenant=tenant, now=NOW)
        ingest(tenant, contacts, NOW, "after")
        ingest(tenant, contacts[::3], NOW, "again")  # contacts that already have rows, and new ones
        assert_exact(tenant, NOW)
        world = World.load(tenant, NOW)
        for leaf in window_leaves():
            check(tenant, {"all": [leaf]}, NOW, world)


def test_summaries_move_with_the_clock(data):
    tenant = data["tenant"]
    with tenant_context(tenant.id):
        contacts = list(Contact.objects.filter(tenant=tenant).order_by("pk")[:30])
        event_summaries_refresh(tenant=tenant, now=NOW)
        day_leaves = [leaf for leaf in window_leaves() if uses_summaries(leaf) and leaf.get("value") != 10.001]
        steps = ((1, False), (3, False), (6, False), (6 + MAX_GAP_DAYS + 1, True), (6 + MAX_GAP_DAYS + 2, False))
        for offset, rebuilt in steps:  # a gap of more than MAX_GAP_DAYS: rebuilt
            now = NOW + dt.timedelta(days=offset)
            # Yesterday's summaries are not read today: the rollups answer (and agree).
            stale_sql = check(tenant, {"all": day_leaves[:3]}, now)
            assert SUMMARY not in stale_sql
            refreshed = event_summaries_refresh(tenant=tenant, now=now)
            assert refreshed is not None and refreshed.rebuilt is rebuilt
            assert event_summaries_refresh(tenant=tenant, now=now) is None  # already counted for today
            assert_exact(tenant, now)
            ingest(tenant, contacts[offset % 7 :: 4], now, f"day-{offset}")
            assert_exact(tenant, now)
            world = World.load(tenant, now)
            for leaf in day_leaves:
                assert SUMMARY in check(tenant, {"all": [leaf]}, now, world)


def test_a_weekly_rebuild_repairs_what_ingest_did_not_see(data):
    tenant = data["tenant"]
    with tenant_context(tenant.id):
        event_summaries_refresh(tenant=tenant, now=NOW)
        EventWindowSummary.objects.filter(tenant=tenant, name="purchase").update(count_30=999)
        for offset in range(1, 8):
            refreshed = event_summaries_refresh(tenant=tenant, now=NOW + dt.timedelta(days=offset))
            assert refreshed is not None and refreshed.rebuilt is (offset == 7)
        assert_exact(tenant, NOW + dt.timedelta(days=7))


def test_merged_contacts_are_rebuilt_from_their_rollups(data):
    tenant = data["tenant"]
    with tenant_context(tenant.id):
        event_summaries_refresh(tenant=tenant, now=NOW)
        buyers = list(
            EventWindowSummary.objects.filter(tenant=tenant, name="purchase", count_180__gte=1)
            .order_by("contact_id")
            .values_list("contact_id", flat=True)[:2]
        )
        source, target = (Contact.objects.get(pk=pk) for pk in buyers)
        contact_merge(tenant=tenant, source=source, target=target, actor=ACTOR)  # rebuilds the target's
        assert_exact(tenant, NOW)
        assert event_summaries_rebuild_contacts(tenant=tenant, contact_ids=[target.pk]) == 0, "nothing left to fix"
        check(tenant, {"all": [window_leaves()[5]]}, NOW)


def test_windows_longer_than_the_retention_are_not_read(data):
    tenant = data["tenant"]
    tenant.event_retention_days = 60
    tenant.save(update_fields=["event_retention_days"])
    with tenant_context(tenant.id):
        event_summaries_refresh(tenant=tenant, now=NOW)
        short = {"type": "event", "name": "purchase", "op": "at_least", "count": 2, "window": {"within_days": 60}}
        long = {**short, "window": {"within_days": 90}}
        assert SUMMARY in check(tenant, {"all": [short]}, NOW)
        assert SUMMARY not in check(tenant, {"all": [long]}, NOW)
        performed = {"type": "event", "name": "purchase", "op": "performed", "window": {"within_days": 90}}
        assert SUMMARY not in check(tenant, {"all": [performed]}, NOW)
        # Retention may delete the days leaving the 60-day window before a late move-on subtracts them.
        moved = event_summaries_refresh(tenant=tenant, now=NOW + dt.timedelta(days=1))
        assert moved is not None and not moved.rebuilt
        rebuilt = event_summaries_refresh(tenant=tenant, now=NOW + dt.timedelta(days=3))
        assert rebuilt is not None and rebuilt.rebuilt


def test_a_refresh_never_moves_the_summaries_under_a_running_count(data, world):
    tenant = data["tenant"]
    with tenant_context(tenant.id):
        # (Not refreshed here: a refresh holds the lock until the test's transaction ends.)
        EventSummaryState.objects.create(
            tenant=tenant, day=NOW.date(), names=list(SUMMARISED), rebuilt_at=NOW, refreshed_at=NOW
        )
        # Another session counting holds the summary lock shared: the refresh skips, to try again.
        db = connection.settings_dict
        params = {"dbname": db["NAME"], "user": db["USER"], "host": db["HOST"], "port": db["PORT"]}
        with psycopg.connect(**params, password=db["PASSWORD"] or None, autocommit=True) as other:
            other.execute("SELECT pg_advisory_lock_shared(%s, %s)", [SUMMARY_LOCK, tenant.pk])
            assert event_summaries_refresh(tenant=tenant, now=NOW + dt.timedelta(days=1)) is None
            other.execute("SELECT pg_advisory_unlock_shared(%s, %s)", [SUMMARY_LOCK, tenant.pk])
            # A refresh running elsewhere: a count does not wait for it, it adds up the rollups. (In
            # tenant B: here the fixture's counts hold tenant A's lock shared until the test ends.)
            other_tenant = world.tenant_b
            with tenant_context(other_tenant.id):
                EventSummaryState.objects.create(
                    tenant=other_tenant, day=NOW.date(), names=list(SUMMARISED), rebuilt_at=NOW, refreshed_at=NOW
                )
                other.execute("SELECT pg_advisory_lock(%s, %s)", [SUMMARY_LOCK, other_tenant.pk])
                with transaction.atomic():
                    assert summaries_for_counting(tenant=other_tenant, today=NOW.date()) is None
                other.execute("SELECT pg_advisory_unlock(%s, %s)", [SUMMARY_LOCK, other_tenant.pk])
                with transaction.atomic():
                    assert summaries_for_counting(tenant=other_tenant, today=NOW.date()) is not None
        assert EventSummaryState.objects.get(tenant=tenant).day == NOW.date()
        assert tenant.pk in tenants_with_stale_summaries(now=NOW + dt.timedelta(days=1))
        assert tenant.pk not in tenants_with_stale_summaries(now=NOW)
        with transaction.atomic():
            assert summaries_for_counting(tenant=tenant, today=NOW.date()) is not None
            assert summaries_for_counting(tenant=tenant, today=(NOW + dt.timedelta(days=1)).date()) is None


def test_other_tenants_summaries_are_out_of_reach(data, world):
    tenant = data["tenant"]
    with tenant_context(tenant.id):
        event_summaries_refresh(tenant=tenant, now=NOW)
        assert EventWindowSummary.objects.filter(tenant=tenant).exists()
    with tenant_context(world.tenant_b.id), connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {SUMMARY}")
        assert cursor.fetchone() == (0,)
        cursor.execute("SELECT count(*) FROM contacts_eventsummarystate")
        assert cursor.fetchone() == (0,)


def test_sums_in_cents_meet_every_bound_exactly(world):
    tenant = world.tenant_a
    now = dt.datetime.now(dt.UTC)
    with tenant_context(tenant.id):
        spent = ["100.00", "50.50", "0.01", "-20.00", "120.00"]
        contacts = [Contact.objects.create(tenant=tenant, email=f"c{index}@example.com") for index in range(len(spent))]
        event_summaries_refresh(tenant=tenant, now=now)
        events = [
            {"event": "purchase", "contact_id": contact.pk, "revenue": amount, "idempotency_key": f"p{contact.pk}"}
            for contact, amount in zip(contacts, spent, strict=True)
        ]
        events.append({"event": "purchase", "contact_id": contacts[4].pk, "revenue": "-19.99", "idempotency_key": "r"})
        assert {r.status for r in events_ingest(tenant=tenant, events=events)} == {"accepted"}
        world_now = World.load(tenant, now)
        bounds = [
            ("gte", 100), ("gte", 100.001), ("gt", 99.995), ("gt", 100), ("lte", 100.004), ("lte", 99.999),
            ("lt", 100.001), ("lt", 100), ("eq", 100), ("eq", 100.0), ("eq", 50.5), ("eq", 0.01), ("eq", 100.001),
            ("lt", 0), ("lte", -20), ("gt", -20.001), ("eq", 100.01), ("between", [0.005, 50.5]),
            ("between", [50.501, 100]), ("between", [-20, -20]),
        ]  # fmt: skip
        for op, value in bounds:
            leaf = {"type": "event_aggregate", "name": "purchase", "fn": "sum", "property": "revenue", "op": op,
                    "value": value, "window": {"within_days": 7}}  # fmt: skip
            check(tenant, {"all": [leaf]}, now, world_now)
        assert world_now.matching({"all": [{**leaf, "op": "gte", "value": 100}]}) == {contacts[0].pk, contacts[4].pk}


def test_counts_that_read_the_contact_rows_take_the_newest_event_from_them(data):
    tenant = data["tenant"]
    tenant.event_retention_days = 120
    tenant.save(update_fields=["event_retention_days"])
    with tenant_context(tenant.id):
        event_summaries_refresh(tenant=tenant, now=NOW)
        world = World.load(tenant, NOW)
        on_the_row = {"type": "field", "field": "email", "op": "is_set"}  # not in the contact_segments index
        for leaf in window_leaves():
            days = (leaf.get("window") or {}).get("within_days")
            op = leaf.get("op")
            single = op in ("performed", "not_performed") or leaf.get("count", 0) + (op != "at_least") == 1
            names = leaf.get("name") or leaf.get("action") or ""
            newest = {"purchase": "last_order_at", "any": "last_engaged_at"}.get(names)
            column = (
                newest if single and days is not None and days <= 120 and leaf["type"] != "event_aggregate" else None
            )
            sql = check(tenant, {"all": [on_the_row, leaf]}, NOW, world)
            filters = [f'"contacts_contact"."{name}" >=' for name in ("last_order_at", "last_engaged_at")]
            assert [f for f in filters if f in sql] == [f for f in filters if column and column in f], (leaf, sql)
            # Without a condition on the contact row the column would cost a read of every row: not used.
            alone = check(tenant, {"all": [leaf]}, NOW, world)
            assert not [f for f in filters if f in alone]
        engaged = {"type": "engagement", "action": "any", "op": "not_performed", "window": {"within_days": 30}}
        assert '"contacts_contact"."last_engaged_at" >=' in check(tenant, {"any": [on_the_row, engaged]}, NOW, world)


def test_the_beat_tick_moves_on_the_tenants_whose_summaries_are_stale(data, world, monkeypatch):
    from segments import tasks

    tenant = data["tenant"]
    queued: list[int] = []
    monkeypatch.setattr(tasks.refresh_event_summaries, "delay", queued.append)
    assert tasks.refresh_event_summaries_all() >= 2
    assert {tenant.pk, world.tenant_b.pk} <= set(queued)
    assert tasks.refresh_event_summaries(tenant.pk) > 0  # first time: built from the rollups
    with tenant_context(tenant.id):
        assert EventSummaryState.objects.get(tenant=tenant).day == dt.datetime.now(dt.UTC).date()
    queued.clear()
    tasks.refresh_event_summaries_all()
    assert tenant.pk not in queued and world.tenant_b.pk in queued
    assert tasks.refresh_event_summaries(tenant.pk) is None  # already counted for today
