"""Segment services: definitions, full refresh, real-time evaluation, static lists, RFM, due refreshes."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, connections

from contacts.consent import ConsentEvidence, consent_change
from contacts.models import Contact
from segments.models import RfmGroup, RfmScore, Segment, SegmentMember, SegmentSize, SegmentTransition
from segments.services import (
    SegmentTimeout,
    rfm_group,
    rfm_recompute,
    segment_create,
    segment_delete,
    segment_refresh,
    segment_update,
    segments_evaluate_contacts,
    segments_refresh_due,
    statement_timeout,
    static_members_add,
    static_members_remove,
)
from tenants.audit import Actor
from tenants.context import tenant_context

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("test")
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
GERMANS = {"all": [{"type": "field", "field": "country", "op": "eq", "value": "DE"}]}


@pytest.fixture
def in_a(world):
    with tenant_context(world.tenant_a.id):
        yield world.tenant_a


def contacts(tenant, *countries: str) -> list[Contact]:
    return [
        Contact.objects.create(tenant=tenant, email=f"c{i}-{country.lower()}@example.com", country=country)
        for i, country in enumerate(countries)
    ]


def members(segment: Segment) -> set[int]:
    return set(SegmentMember.objects.filter(segment=segment).values_list("contact_id", flat=True))


def transitions(segment: Segment) -> list[tuple[int, str]]:
    rows = SegmentTransition.objects.filter(segment=segment).order_by("id")
    return [(row.contact_id, row.kind) for row in rows]


def test_create_validates_the_name_and_rules(in_a):
    with pytest.raises(ValidationError) as error:
        segment_create(tenant=in_a, actor=ACTOR, name=" ", rules={"all": [{"type": "field", "field": "nope"}]})
    assert error.value.message_dict["name"] == ["Give the segment a name."]
    assert error.value.message_dict["rules"] == ["all.0.field: Unknown contact field 'nope'."]
    [rule_error] = error.value.rule_errors
    assert rule_error.as_dict() == {"path": "all.0.field", "message": "Unknown contact field 'nope'."}
    segment_create(tenant=in_a, actor=ACTOR, name="Germans", rules=GERMANS)
    with pytest.raises(ValidationError, match="Another segment has this name"):
        segment_create(tenant=in_a, actor=ACTOR, name="Germans", rules=GERMANS)


def test_refresh_materialises_and_records_entries_and_exits(in_a):
    de, fr, de2 = contacts(in_a, "DE", "FR", "DE")
    segment = segment_create(tenant=in_a, actor=ACTOR, name="Germans", rules=GERMANS)
    result = segment_refresh(segment=segment, now=NOW)
    assert (result.entered, result.exited, result.size) == (2, 0, 2)
    assert members(segment) == {de.pk, de2.pk}
    segment.refresh_from_db()
    assert (segment.size, segment.materialized_version, segment.refreshed_at) == (2, 1, NOW)

    de.country = "AT"
    de.save()
    fr.country = "DE"
    fr.save()
    result = segment_refresh(segment=segment, now=NOW + dt.timedelta(hours=1))
    assert (result.entered, result.exited, result.size) == (1, 1, 2)
    assert members(segment) == {fr.pk, de2.pk}
    assert sorted(transitions(segment)) == sorted(
        [(de.pk, "entered"), (de2.pk, "entered"), (fr.pk, "entered"), (de.pk, "exited")]
    )
    assert list(SegmentSize.objects.filter(segment=segment).values_list("size", flat=True)) == [2, 2]


def test_erased_contacts_leave(in_a):
    de, de2 = contacts(in_a, "DE", "DE")
    segment = segment_create(tenant=in_a, actor=ACTOR, name="Germans", rules=GERMANS)
    segment_refresh(segment=segment)
    de.erased_at = NOW
    de.save()
    segment_refresh(segment=segment)
    assert members(segment) == {de2.pk}


def test_a_rule_change_bumps_the_version_and_makes_the_segment_due(in_a):
    contacts(in_a, "DE", "FR")
    segment = segment_create(tenant=in_a, actor=ACTOR, name="Germans", rules=GERMANS)
    assert segments_refresh_due(tenant=in_a, now=NOW) == [segment.pk]
    assert segments_refresh_due(tenant=in_a, now=NOW) == []  # fresh and not time-relative
    segment_update(
        segment=segment, actor=ACTOR, rules={"all": [{"type": "field", "field": "country", "op": "eq", "value": "FR"}]}
    )
    assert segment.version == 2
    assert segments_refresh_due(tenant=in_a, now=NOW) == [segment.pk]
    segment.refresh_from_db()
    assert segment.materialized_version == 2
    # Renaming alone keeps the version.
    segment_update(segment=segment, actor=ACTOR, name="French")
    assert segment.version == 2


def test_time_relative_segments_are_refreshed_periodically(in_a, settings):
    settings.SEGMENT_REFRESH_INTERVAL = 60
    recent = {"all": [{"type": "field", "field": "last_seen_at", "op": "within_last", "value": 7}]}
    segment = segment_create(tenant=in_a, actor=ACTOR, name="Recent", rules=recent)
    assert segment.time_relative
    assert segments_refresh_due(tenant=in_a, now=NOW) == [segment.pk]
    assert segments_refresh_due(tenant=in_a, now=NOW + dt.timedelta(minutes=30)) == []
    assert segments_refresh_due(tenant=in_a, now=NOW + dt.timedelta(minutes=61)) == [segment.pk]


def test_dependencies_refresh_first_and_cycles_are_rejected(in_a):
    contacts(in_a, "DE", "FR")
    base = segment_create(tenant=in_a, actor=ACTOR, name="Germans", rules=GERMANS)
    uses = segment_create(
        tenant=in_a, actor=ACTOR, name="Not German",
        rules={"all": [{"type": "segment", "op": "not_in", "segment": base.pk}]},
    )  # fmt: skip
    assert uses.depends_on == [base.pk]
    assert segments_refresh_due(tenant=in_a, now=NOW) == [base.pk, uses.pk]
    uses.refresh_from_db()
    assert uses.size == 1
    with pytest.raises(ValidationError, match="cannot include itself"):
        segment_update(segment=base, actor=ACTOR, rules={"all": [{"type": "segment", "op": "in", "segment": uses.pk}]})
    with pytest.raises(ValidationError, match="Used by other segments: Not German"):
        segment_delete(segment=base, actor=ACTOR)
    segment_delete(segment=uses, actor=ACTOR)
    segment_delete(segment=base, actor=ACTOR)
    assert not Segment.objects.exists()


def test_real_time_evaluation_updates_only_the_touched_contacts(in_a):
    de, fr = contacts(in_a, "DE", "FR")
    germans = segment_create(tenant=in_a, actor=ACTOR, name="Germans", rules=GERMANS)
    consenting = segment_create(
        tenant=in_a, actor=ACTOR, name="Email OK",
        rules={"all": [{"type": "consent", "channel": "email", "purpose": "marketing", "status": "granted"}]},
    )  # fmt: skip
    both = segment_create(
        tenant=in_a, actor=ACTOR, name="German and OK",
        rules={"all": [{"type": "segment", "op": "in", "segment": germans.pk},
                       {"type": "segment", "op": "in", "segment": consenting.pk}]},
    )  # fmt: skip
    segments_refresh_due(tenant=in_a, now=NOW)
    assert members(germans) == {de.pk} and members(consenting) == set() and members(both) == set()

    # fr moves to Germany and de grants consent: only these contacts are evaluated, in dependency order.
    fr.country = "DE"
    fr.save()
    consent_change(
        contact=de, channel="email", purpose="marketing", status="granted",
        evidence=ConsentEvidence(source="api"), actor=ACTOR,
    )  # fmt: skip
    result = segments_evaluate_contacts(tenant=in_a, contact_ids=[fr.pk, de.pk], now=NOW)
    assert result == {"entered": 3, "exited": 0}
    assert members(germans) == {de.pk, fr.pk}
    assert members(consenting) == {de.pk}
    assert members(both) == {de.pk}  # read the membership written one level earlier
    germans.refresh_from_db()
    assert germans.size == 2
    # Evaluating again changes nothing and records nothing.
    assert segments_evaluate_contacts(tenant=in_a, contact_ids=[fr.pk, de.pk], now=NOW) == {"entered": 0, "exited": 0}
    assert len(transitions(germans)) == 2


def test_real_time_evaluation_agrees_with_a_full_refresh(in_a):
    people = contacts(in_a, "DE", "FR", "DE", "IT", "DE")
    rules = {"any": [GERMANS, {"all": [{"type": "field", "field": "email", "op": "starts_with", "value": "c1"}]}]}
    segment = segment_create(tenant=in_a, actor=ACTOR, name="Mixed", rules=rules)
    segment_refresh(segment=segment)
    for person in people:
        person.country = "FR" if person.country == "DE" else "DE"
        person.save()
    segments_evaluate_contacts(tenant=in_a, contact_ids=[p.pk for p in people])
    live = members(segment)
    assert segment_refresh(segment=segment).entered == 0
    assert members(segment) == live


def test_unrefreshed_segments_are_left_to_their_first_refresh(in_a):
    (de,) = contacts(in_a, "DE")
    segment = segment_create(tenant=in_a, actor=ACTOR, name="Germans", rules=GERMANS)
    assert segments_evaluate_contacts(tenant=in_a, contact_ids=[de.pk]) == {"entered": 0, "exited": 0}
    assert members(segment) == set()


def test_static_segments(in_a, world):
    a, b = contacts(in_a, "DE", "FR")
    with tenant_context(world.tenant_b.id):
        (other,) = contacts(world.tenant_b, "DE")
    segment = segment_create(tenant=in_a, actor=ACTOR, name="VIP list", kind=Segment.Kind.STATIC, rules=GERMANS)
    assert segment.rules == {}
    assert static_members_add(segment=segment, actor=ACTOR, contact_ids=[a.pk, b.pk, other.pk]) == 2
    assert static_members_add(segment=segment, actor=ACTOR, contact_ids=[a.pk]) == 0
    assert members(segment) == {a.pk, b.pk}  # the other tenant's contact is not even seen
    assert static_members_remove(segment=segment, actor=ACTOR, contact_ids=[a.pk]) == 1
    assert members(segment) == {b.pk} and segment.size == 1
    assert segment_refresh(segment=segment) is None  # static segments are not refreshed
    dynamic = segment_create(tenant=in_a, actor=ACTOR, name="Dynamic", rules=GERMANS)
    with pytest.raises(ValidationError, match="follow its rules"):
        static_members_add(segment=dynamic, actor=ACTOR, contact_ids=[a.pk])


def test_rfm_quintiles_and_groups(in_a):
    for i in range(10):
        Contact.objects.create(
            tenant=in_a, email=f"buyer{i}@example.com", order_count=i + 1, total_revenue=100 * (i + 1),
            last_order_at=NOW - dt.timedelta(days=10 * (10 - i)),
        )  # fmt: skip
    Contact.objects.create(tenant=in_a, email="never@example.com")
    assert rfm_recompute(tenant=in_a, now=NOW) == 10
    scores = {s.contact.email: s for s in RfmScore.objects.select_related("contact")}
    assert "never@example.com" not in scores
    best, worst = scores["buyer9@example.com"], scores["buyer0@example.com"]
    assert (best.recency, best.frequency, best.monetary, best.group) == (5, 5, 5, RfmGroup.CHAMPIONS)
    assert (worst.recency, worst.frequency, worst.monetary, worst.group) == (1, 1, 1, RfmGroup.LOST)
    assert rfm_recompute(tenant=in_a, now=NOW) == 10  # recomputing replaces, never duplicates
    assert RfmScore.objects.count() == 10


@pytest.mark.parametrize(
    ("scores", "group"),
    [((5, 5, 5), "champions"), ((1, 5, 5), "cannot_lose"), ((3, 4, 1), "loyal"), ((4, 2, 1), "potential_loyalists"),
     ((5, 1, 1), "new_customers"), ((3, 3, 3), "need_attention"), ((3, 1, 5), "promising"), ((2, 3, 2), "at_risk"),
     ((2, 1, 1), "hibernating"), ((1, 2, 2), "lost")],
)  # fmt: skip
def test_rfm_group_names(scores, group):
    assert rfm_group(*scores) == group


def test_a_slow_query_is_cancelled_by_the_statement_timeout(in_a):
    with pytest.raises(SegmentTimeout), statement_timeout(50), connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(1)")
    # The cap is lifted afterwards and the transaction is usable.
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('statement_timeout')")
        assert cursor.fetchone()[0] == "0"


@pytest.mark.django_db(transaction=True)
def test_two_refreshes_never_fight(world):
    """A second refresh of a segment whose refresh is running skips instead of racing it."""
    tenant = world.tenant_a
    with tenant_context(tenant.id):
        contacts(tenant, "DE", "DE")
        segment = segment_create(tenant=tenant, actor=ACTOR, name="Germans", rules=GERMANS)
    from django.db import transaction

    locked = threading.Event()
    release = threading.Event()

    def hold_the_lock() -> None:
        with tenant_context(tenant.id), transaction.atomic():
            Segment.objects.select_for_update().get(pk=segment.pk)
            locked.set()
            release.wait(10)
        connections.close_all()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    try:
        assert locked.wait(10)
        with tenant_context(tenant.id):
            assert segment_refresh(segment=segment) is None
    finally:
        release.set()
        holder.join()
    with tenant_context(tenant.id):
        assert segment_refresh(segment=segment).size == 2
