"""Bulk SQL helpers: plans that must not depend on statistics."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.utils import timezone

from contacts.bulk_sql import each_id_lookup, each_value_lookup, rows_json
from contacts.models import Contact
from tenants.context import tenant_context
from tests.conftest import World

pytestmark = pytest.mark.django_db


def test_identity_lookups_probe_the_index_even_with_stale_statistics(world: World):
    """Statistics taken when the tenant was small must not turn a batch's lookups into a scan of the tenant
    (with `= ANY(array)` they did: the array was then searched once per contact, 1.7 s a batch)."""
    tenant = world.tenant_a
    with tenant_context(tenant.id), transaction.atomic():
        Contact.objects.bulk_create(Contact(tenant=tenant, external_id=f"e-{i}") for i in range(5))
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE contacts_contact")  # the statistics say: five contacts
        Contact.objects.bulk_create(Contact(tenant=tenant, external_id=f"e-{i}") for i in range(5, 3000))
        wanted = [f"e-{i}" for i in range(0, 3000, 3)] + ["e-unknown"]
        sql = each_value_lookup(Contact._meta.db_table, "external_id", ("external_id", "id"))
        with connection.cursor() as cursor:
            cursor.execute(sql, [rows_json(wanted), tenant.pk])
            found = dict(cursor.fetchall())
            cursor.execute(f"EXPLAIN {sql}", [rows_json(wanted), tenant.pk])
            plan = "\n".join(row[0] for row in cursor.fetchall())
    assert set(found) == set(wanted) - {"e-unknown"}
    # A probe per value (a nested loop over the values, never a hash of the tenant's contacts). Which
    # tenant index serves a probe is the planner's choice among equals when the statistics say "five
    # contacts" (it follows index sizes, so it differs between databases); with fresh statistics it is
    # the unique index.
    assert "Nested Loop" in plan and "Function Scan on json_array_elements_text" in plan, plan
    assert "Hash" not in plan and "Seq Scan on contacts_contact" not in plan, plan


def test_id_lookups_are_confined_to_the_tenant(world: World):
    with tenant_context(world.tenant_b.id):
        other = Contact.objects.create(tenant=world.tenant_b, external_id="b-1")
    with tenant_context(world.tenant_a.id):
        mine = Contact.objects.create(tenant=world.tenant_a, external_id="a-1")
        sql = each_id_lookup(Contact._meta.db_table, ("id",))
        with connection.cursor() as cursor:
            cursor.execute(sql, [rows_json([str(mine.pk), str(other.pk)]), world.tenant_a.pk])
            assert [row[0] for row in cursor.fetchall()] == [mine.pk]


def test_id_lookups_probe_the_primary_key_under_row_level_security(world: World):
    """A cast inside the probe (`t.id = v.value::bigint`) is not leakproof, so row-level security kept it
    out of the index: every id was looked for in a scan of the whole tenant (minutes for a batch on a
    big one). The list is cast before the probe, and the probe is an index condition."""
    tenant = world.tenant_a
    with tenant_context(tenant.id), transaction.atomic():
        Contact.objects.bulk_create(Contact(tenant=tenant, external_id=f"e-{i}") for i in range(3000))
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE contacts_contact")
            ids = [str(pk) for pk in Contact.objects.values_list("pk", flat=True)[:50]]
            sql = each_id_lookup(Contact._meta.db_table, ("id",))
            cursor.execute(f"EXPLAIN {sql}", [rows_json(ids), tenant.pk])
            plan = "\n".join(row[0] for row in cursor.fetchall())
            cursor.execute(sql, [rows_json(ids), tenant.pk])
            assert sorted(str(row[0]) for row in cursor.fetchall()) == sorted(ids)
    assert "Seq Scan on contacts_contact" not in plan, plan
    assert "id = v.value" in plan, plan


def test_applying_events_reads_them_by_primary_key_even_with_stale_statistics(world: World):
    """The batch's events were read with ``e.id = ANY(...) AND e.tenant_id = ...``: with statistics taken
    before the tenant's events arrived (no ANALYZE since a big import), the planner also read the tenant's
    whole index for every batch, a single event included. Each id is now one primary-key probe."""
    from contacts.ingest import BATCH_EVENTS
    from contacts.models import Event

    tenant = world.tenant_a
    with tenant_context(tenant.id), transaction.atomic():
        contact = Contact.objects.create(tenant=tenant, external_id="stale")
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE contacts_event")  # statistics of an (almost) empty table
        Event.objects.bulk_create(
            Event(tenant=tenant, contact=contact, name="page_view", occurred_at=timezone.now()) for _ in range(5000)
        )
        newest = Event.objects.order_by("-pk").values_list("pk", flat=True)[:3]
        sql = f"SELECT e.contact_id, e.name {BATCH_EVENTS}"
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN {sql}", [rows_json(list(newest)), tenant.pk])
            plan = "\n".join(row[0] for row in cursor.fetchall())
            cursor.execute(sql, [rows_json(list(newest)), tenant.pk])
            assert cursor.fetchall() == [(contact.pk, "page_view")] * 3
    assert "contacts_event_pkey" in plan, plan
    assert "event_contact_time" not in plan and "Seq Scan" not in plan, plan
