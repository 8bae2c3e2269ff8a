"""The data generator and its two loaders: realistic, consistent, tenant-scoped and deterministic."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import Counter, defaultdict
from decimal import Decimal
from itertools import pairwise
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import Count, DecimalField, Max, Min, Sum, Value
from django.db.models.functions import Coalesce, TruncDate

from contacts.fields import CONTACT_FIELDS, AttributeSchema, clean_contact_fields
from contacts.generator import (
    BLOCK,
    HISTORY_DAYS,
    LoadReport,
    TenantDataGenerator,
    load_with_copy,
    load_with_orm,
)
from contacts.ingest import ENGAGEMENT_EVENTS
from contacts.lifecycle import derive_stage
from contacts.models import (
    AttributeDefinition,
    ConsentRecord,
    ConsentState,
    ConsentStatus,
    Contact,
    Event,
    EventDailyRollup,
    LifecycleStage,
    LifecycleTransition,
)
from tenants.context import platform_access, tenant_context
from tenants.models import Tenant

NOW = dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC)
MODELS = (Contact, Event, EventDailyRollup, ConsentRecord, ConsentState, LifecycleTransition, AttributeDefinition)
EVENT_NAMES = {"page_view", "add_to_cart", "cart_abandoned", "purchase", "email_open", "email_click"}


def load(kind: str, tenant: Tenant, *, contacts: int = 300, events: int = 3_000, seed: int = 7) -> LoadReport:
    if kind == "orm":
        return load_with_orm(tenant, contacts=contacts, events=events, seed=seed, now=NOW)
    return load_with_copy(tenant, contacts=contacts, events=events, seed=seed, now=NOW, workers=1)


def assert_consistent(tenant: Tenant) -> None:
    """Everything derived (rollups, summaries, consent state, stages) matches what it derives from."""
    with tenant_context(tenant.id):
        # Rollups are exactly the events per contact, name and UTC day.
        zero = Value(Decimal(0), output_field=DecimalField(max_digits=14, decimal_places=2))
        by_day = (
            Event.objects.annotate(day=TruncDate("occurred_at", tzinfo=dt.UTC))
            .values("contact_id", "name", "day")
            .annotate(count=Count("id"), revenue=Coalesce(Sum("revenue"), zero))
            .order_by()
        )
        expected = {(e["contact_id"], e["name"], e["day"]): (e["count"], e["revenue"]) for e in by_day}
        rollups = {(r.contact_id, r.name, r.day): (r.count, r.revenue) for r in EventDailyRollup.objects.all()}
        assert rollups == expected

        # Contact summaries are exactly their events.
        orders = {
            row["contact_id"]: row
            for row in Event.objects.filter(name="purchase")
            .values("contact_id")
            .annotate(n=Count("id"), revenue=Sum("revenue"), last=Max("occurred_at"))
            .order_by()
        }
        spans = {
            row["contact_id"]: (row["first"], row["last"])
            for row in Event.objects.values("contact_id")
            .annotate(first=Min("occurred_at"), last=Max("occurred_at"))
            .order_by()
        }
        engaged = dict(
            Event.objects.filter(name__in=ENGAGEMENT_EVENTS)
            .values("contact_id")
            .annotate(last=Max("occurred_at"))
            .values_list("contact_id", "last")
            .order_by()
        )
        contacts = list(Contact.objects.all())
        for c in contacts:
            o = orders.get(c.pk)
            assert (c.order_count, c.total_revenue, c.last_order_at) == (
                (o["n"], o["revenue"], o["last"]) if o else (0, 0, None)
            )
            assert (c.first_seen_at, c.last_seen_at) == spans[c.pk]
            assert c.last_engaged_at == engaged.get(c.pk)
            assert c.created_at == c.first_seen_at
            assert c.updated_at >= c.last_seen_at

        # The consent state is the latest ledger row per contact, channel and purpose.
        latest: dict[tuple[int, str, str], ConsentRecord] = {}
        for record in ConsentRecord.objects.order_by("occurred_at", "id"):
            latest[(record.contact_id, record.channel, record.purpose)] = record
            assert (record.source, record.legal_basis, record.purpose) == ("import", "consent", "marketing")
        states = {(s.contact_id, s.channel, s.purpose): s for s in ConsentState.objects.all()}
        assert states.keys() == latest.keys()
        for key, state in states.items():
            record = latest[key]
            assert (state.record_id, state.status, state.updated_at) == (record.pk, record.status, record.occurred_at)

        # Stages follow the tenant's rules, and the history ends in the current stage.
        granted = set(ConsentState.objects.filter(status=ConsentStatus.GRANTED).values_list("contact_id", flat=True))
        history: dict[int, list[LifecycleTransition]] = defaultdict(list)
        for transition in LifecycleTransition.objects.order_by("occurred_at", "id"):
            history[transition.contact_id].append(transition)
        for c in contacts:
            assert c.lifecycle_stage == derive_stage(c, tenant, has_consent=c.pk in granted)
            steps = history[c.pk]
            assert steps[0].from_stage == ""
            assert all(a.to_stage == b.from_stage for a, b in pairwise(steps))
            assert (steps[-1].to_stage, steps[-1].occurred_at) == (c.lifecycle_stage, c.lifecycle_changed_at)

        # Identities are unique and normalised; every field passes the API's own cleaning.
        emails = [c.email for c in contacts if c.email]
        assert len(set(emails)) == len(emails)
        assert all(email == email.strip().lower() for email in emails)
        external_ids = [c.external_id for c in contacts if c.external_id]
        assert len(set(external_ids)) == len(external_ids)
        assert len({c.anonymous_id for c in contacts}) == len(contacts)
        schema = AttributeSchema(tenant)
        zones = zoneinfo.available_timezones()  # once: contacts.fields looks them up per value (~10 ms)
        for c in contacts:
            data: dict[str, Any] = {f.name: getattr(c, f.name) for f in CONTACT_FIELDS if f.name != "time_zone"}
            data["country"] = c.country.code
            assert c.time_zone in zones
            cleaned, errors = clean_contact_fields(data)
            assert errors == {}, (c.pk, errors)
            assert cleaned == data
            attributes, attribute_errors = schema.clean(c.attributes)
            assert (attributes, attribute_errors) == (c.attributes, [])


def snapshot(tenant: Tenant) -> dict[str, Any]:
    """The tenant's generated data without database ids, keyed by the contacts' anonymous ids."""
    with tenant_context(tenant.id):
        key = dict(Contact.objects.values_list("pk", "anonymous_id"))
        skip = {"id", "tenant", "created_at", "updated_at"}
        contacts = {
            c.anonymous_id: {f.name: getattr(c, f.name) for f in Contact._meta.concrete_fields if f.name not in skip}
            for c in Contact.objects.all()
        }
        return {
            "contacts": contacts,
            "events": sorted(
                (key[e.contact_id], e.name, e.occurred_at, str(e.revenue), e.currency, e.source, str(e.properties))
                for e in Event.objects.all()
            ),
            "rollups": sorted(
                (key[r.contact_id], r.name, r.day, r.count, str(r.revenue)) for r in EventDailyRollup.objects.all()
            ),
            "consent": sorted(
                (key[r.contact_id], r.channel, r.status, r.occurred_at) for r in ConsentRecord.objects.all()
            ),
            "states": sorted((key[s.contact_id], s.channel, s.status) for s in ConsentState.objects.all()),
            "transitions": sorted(
                (key[t.contact_id], t.occurred_at, t.from_stage, t.to_stage) for t in LifecycleTransition.objects.all()
            ),
        }


@pytest.mark.parametrize("kind", ["orm", "copy"])
def test_a_load_is_consistent(world, kind):
    report = load(kind, world.tenant_a)

    assert report.rows["contacts"] == 300
    assert report.rows["events"] == 3_000
    with tenant_context(world.tenant_a.id):
        assert Contact.objects.count() == 300
        assert Event.objects.count() == 3_000
        assert set(AttributeDefinition.objects.values_list("key", flat=True)) >= {"plan", "signup_source"}
        tables = {"rollups": EventDailyRollup, "consent_records": ConsentRecord, "consent_states": ConsentState}
        tables["lifecycle_transitions"] = LifecycleTransition
        for table, model in tables.items():
            assert model.objects.count() == report.rows[table] > 0
    assert_consistent(world.tenant_a)


@pytest.mark.parametrize("kind", ["orm", "copy"])
def test_the_rows_belong_to_the_tenant_only(world, kind):
    load(kind, world.tenant_a, contacts=100, events=800)

    with tenant_context(world.tenant_b.id):
        assert [model.objects.count() for model in MODELS] == [0] * len(MODELS)
        with connection.cursor() as cursor:  # row-level security: no tenant filter in the SQL
            cursor.execute("SELECT count(*) FROM contacts_contact")
            assert cursor.fetchone() == (0,)
            cursor.execute("SELECT count(*) FROM contacts_event")
            assert cursor.fetchone() == (0,)
    with platform_access():
        for model in MODELS:
            assert set(model.all_tenants.values_list("tenant_id", flat=True).distinct()) == {world.tenant_a.id}


def test_orm_and_copy_load_the_same_data_for_a_seed(world):
    load("orm", world.tenant_a, contacts=150, events=1_500)
    load("copy", world.tenant_b, contacts=150, events=1_500)

    assert snapshot(world.tenant_a) == snapshot(world.tenant_b)


def test_copy_with_several_chunks_and_workers_matches_the_generator(world):
    contacts = 2 * BLOCK + 100
    report = load_with_copy(
        world.tenant_a, contacts=contacts, events=12_000, seed=3, now=NOW, workers=2, chunk_blocks=1
    )

    generated = list(TenantDataGenerator(contacts=contacts, events=12_000, seed=3, now=NOW))
    assert report.rows["events"] == sum(len(c.events) for c in generated) == 12_000
    with tenant_context(world.tenant_a.id):
        loaded = Counter(Event.objects.values_list("contact__anonymous_id", flat=True))
        assert loaded == {c.anonymous_id: len(c.events) for c in generated}
        assert Contact.objects.filter(tenant=world.tenant_a).count() == contacts
    assert_consistent(world.tenant_a)


@pytest.mark.django_db(transaction=True)
def test_parallel_connections_commit_together(world):
    report = load_with_copy(
        world.tenant_a, contacts=2_500, events=15_000, seed=2, now=NOW, connections=2, chunk_blocks=1
    )

    assert (report.rows["contacts"], report.rows["events"]) == (2_500, 15_000)
    generated = list(TenantDataGenerator(contacts=2_500, events=15_000, seed=2, now=NOW))
    with tenant_context(world.tenant_a.id):
        assert set(Contact.objects.values_list("anonymous_id", flat=True)) == {c.anonymous_id for c in generated}
        assert Event.objects.count() == 15_000
    with tenant_context(world.tenant_b.id):
        assert Contact.objects.count() == 0
    assert_consistent(world.tenant_a)


def fail_on_block(monkeypatch: pytest.MonkeyPatch, failing: int) -> None:
    """Make the generator raise on one block, in the forked workers too."""
    block = TenantDataGenerator.block

    def broken(self: TenantDataGenerator, index: int) -> list[Any]:
        if index == failing:
            raise ValueError("generator broke")
        return block(self, index)

    monkeypatch.setattr(TenantDataGenerator, "block", broken)


def test_a_failed_load_leaves_nothing_behind(world, monkeypatch):
    fail_on_block(monkeypatch, 2)

    with pytest.raises(RuntimeError, match="generator broke"):
        load_with_copy(world.tenant_a, contacts=3 * BLOCK, events=6_000, now=NOW, chunk_blocks=1)
    with tenant_context(world.tenant_a.id):
        assert Contact.objects.count() == Event.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_failed_parallel_load_rolls_every_connection_back(world, monkeypatch):
    fail_on_block(monkeypatch, 2)

    with pytest.raises(RuntimeError, match="generator broke"):
        load_with_copy(world.tenant_a, contacts=4 * BLOCK, events=8_000, now=NOW, chunk_blocks=1, connections=2)
    with tenant_context(world.tenant_a.id):
        assert Contact.objects.count() == Event.objects.count() == 0


def test_parallel_connections_refuse_to_run_inside_a_transaction(world):
    with pytest.raises(RuntimeError, match="outside a transaction"):
        load_with_copy(world.tenant_a, contacts=10, events=100, connections=2)


def test_loading_twice_into_one_tenant_never_collides(world):
    load("orm", world.tenant_a, contacts=60, events=400)
    load("orm", world.tenant_a, contacts=60, events=400)
    load("copy", world.tenant_a, contacts=60, events=400)

    with tenant_context(world.tenant_a.id):
        assert Contact.objects.count() == 180
    assert_consistent(world.tenant_a)


def test_the_command_loads_through_either_loader(world):
    call_command("generate_contacts", "--tenant", world.tenant_a.slug, "--contacts", "40", "--events", "300")
    call_command("generate_contacts", "--tenant", world.tenant_b.slug, "--contacts", "40", "--copy", "--workers", "0")

    with tenant_context(world.tenant_a.id):
        assert (Contact.objects.count(), Event.objects.count()) == (40, 300)
    with tenant_context(world.tenant_b.id):
        assert (Contact.objects.count(), Event.objects.count()) == (40, 400)


# --- the generator alone (no database writes) ----------------------------------------------------
def generate(contacts: int = 5_000, events: int = 50_000, seed: int = 11, **kwargs: Any) -> list[Any]:
    return list(TenantDataGenerator(contacts=contacts, events=events, seed=seed, now=NOW, **kwargs))


def test_the_generator_is_deterministic_for_a_seed():
    assert generate(1_200, 9_000, seed=5) == generate(1_200, 9_000, seed=5)
    assert generate(1_200, 9_000, seed=5) != generate(1_200, 9_000, seed=6)


def test_the_mix_is_realistic():
    contacts = generate(20_000, 200_000)

    stages = Counter(c.lifecycle_stage for c in contacts)
    for stage, share in [(LifecycleStage.NEW_VISITOR, 0.30), (LifecycleStage.LEAD, 0.35),
                         (LifecycleStage.FIRST_TIME_BUYER, 0.15), (LifecycleStage.REPEAT_CUSTOMER, 0.15),
                         (LifecycleStage.LOYAL_ADVOCATE, 0.05)]:  # fmt: skip
        assert stages[stage] / len(contacts) == pytest.approx(share, abs=0.02)
    countries = [code for code, _ in Counter(c.country for c in contacts).most_common()]
    assert countries[:4] == ["DE", "FR", "US", "GB"]
    assert len(countries) >= 12
    # A heavy tail: the busiest 1 % of contacts do far more than the median one.
    per_contact = sorted(len(c.events) for c in contacts)
    assert per_contact[int(len(per_contact) * 0.99)] >= 5 * per_contact[len(per_contact) // 2]
    assert sum(per_contact) == 200_000
    names = Counter(e[1] for c in contacts for e in c.events)
    assert set(names) == EVENT_NAMES
    assert names.most_common(1)[0][0] == "page_view"
    assert names["cart_abandoned"] > 0.1 * names["add_to_cart"]
    # First-class fields are filled, at realistic rates.
    known = [c for c in contacts if c.lifecycle_stage != LifecycleStage.NEW_VISITOR]
    assert all(c.email and c.first_name and c.last_name for c in known)
    assert 0.3 < sum(bool(c.phone) for c in known) / len(known) < 0.6
    assert 0.5 < sum(c.birth_date is not None for c in known) / len(known) < 0.9
    assert 0.05 < sum(bool(c.company) for c in known) / len(known) < 0.2
    assert all(c.country and c.city and c.time_zone and c.locale for c in contacts)
    assert {c.attributes["plan"] for c in known} == {"free", "pro", "enterprise"}
    consent = Counter((ch, c.consents[i][2]) for c in contacts for ch, i in c.consent_states().items())
    assert consent[("email", "granted")] > consent[("email", "withdrawn")] > consent[("email", "pending")] > 0
    assert consent[("sms", "granted")] > 0
    assert consent[("push", "granted")] > 0


def test_every_event_is_in_the_last_180_days_and_well_formed():
    earliest = NOW.timestamp() - HISTORY_DAYS * 86_400
    for c in generate(2_000, 20_000):
        assert [e[0] for e in c.events] == sorted(e[0] for e in c.events)
        assert earliest <= c.events[0][0] == c.first_seen_at
        assert c.events[-1][0] < NOW.timestamp()
        for _, name, cents, props, _ in c.events:
            assert (cents is not None) == (name == "purchase")
            if name == "purchase":
                assert cents > 0 and '"order_id": "ORD-' in props and '"category": ' in props
        # Nothing that COPY's text format would need escaped.
        texts = [v for v in (c.email, c.first_name, c.last_name, c.city, c.region, c.company, c.postal_code) if v]
        assert not any(ch in text for text in texts for ch in "\t\n\r\\")


def test_too_few_events_are_rounded_up_to_what_each_contact_needs():
    generator = TenantDataGenerator(contacts=500, events=10, seed=1, now=NOW)
    contacts = list(generator)

    assert generator.events_total == sum(len(c.events) for c in contacts) > 10
    assert all(len(c.events) >= 1 + 3 * c.order_count for c in contacts)
