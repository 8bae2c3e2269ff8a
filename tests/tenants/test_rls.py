"""Row-level security, proven with raw SQL on PostgreSQL: the second wall holds on its own."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.db.utils import ProgrammingError

from tenants.context import platform_access, tenant_context
from tenants.models import Membership, Tenant
from tests.conftest import World

pytestmark = pytest.mark.django_db


def raw(sql: str, params: list | None = None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.fetchall() if cursor.description else []


def rowcount(sql: str, params: list | None = None) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.rowcount


def test_the_app_role_cannot_bypass_rls(db):
    [(is_super, bypasses)] = raw("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
    assert not is_super and not bypasses


def test_raw_sql_without_a_tenant_sees_no_tenant_rows(world: World):
    assert raw("SELECT count(*) FROM tenants_membership") == [(0,)]
    assert raw("SELECT count(*) FROM tenants_apikey") == [(0,)]
    assert rowcount("UPDATE tenants_membership SET role = 'owner'") == 0
    assert rowcount("DELETE FROM tenants_apikey") == 0


def test_raw_sql_as_tenant_a_cannot_read_or_change_tenant_b(world: World):
    b = world.tenant_b.id
    with tenant_context(world.tenant_a.id):
        tenant_ids = {row[0] for row in raw("SELECT tenant_id FROM tenants_membership")}
        assert tenant_ids == {world.tenant_a.id}
        assert raw("SELECT count(*) FROM tenants_apikey WHERE tenant_id = %s", [b]) == [(0,)]
        assert rowcount("UPDATE tenants_apikey SET name = 'pwned' WHERE tenant_id = %s", [b]) == 0
        assert rowcount("DELETE FROM tenants_membership WHERE tenant_id = %s", [b]) == 0
    with tenant_context(b):
        assert raw("SELECT name FROM tenants_apikey") == [("B write",)]
        assert raw("SELECT count(*) FROM tenants_membership") == [(1,)]


def test_raw_sql_as_tenant_a_cannot_insert_or_move_rows_into_tenant_b(world: World):
    with tenant_context(world.tenant_a.id):
        with pytest.raises(ProgrammingError, match="row-level security"), transaction.atomic():
            raw(
                "INSERT INTO tenants_membership (tenant_id, user_id, role, created_at) VALUES (%s, %s, 'owner', now())",
                [world.tenant_b.id, world.alice.id],
            )
        with pytest.raises(ProgrammingError, match="row-level security"), transaction.atomic():
            raw("UPDATE tenants_apikey SET tenant_id = %s", [world.tenant_b.id])


def test_platform_access_sees_every_tenant(world: World):
    with platform_access():
        tenants = {row[0] for row in raw("SELECT DISTINCT tenant_id FROM tenants_membership")}
    assert tenants == {world.tenant_a.id, world.tenant_b.id}


def test_every_table_with_a_tenant_column_has_forced_rls_and_the_policy(db):
    rows = raw(
        """
        SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
               EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'tenant_isolation')
        FROM pg_class c
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
        JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema()
        WHERE c.relkind = 'r'
        """
    )
    assert rows, "expected tenant-owned tables"
    unprotected = [name for name, enabled, forced, policy in rows if not (enabled and forced and policy)]
    assert unprotected == []


@pytest.mark.django_db(transaction=True)
def test_the_tenant_setting_dies_with_its_transaction(world: World):
    """A persistent connection must never carry a tenant into the next transaction."""
    with tenant_context(world.tenant_a.id), transaction.atomic():
        assert raw("SELECT current_setting('app.tenant_id', true)") == [(str(world.tenant_a.id),)]
    # Same connection, no tenant, new transaction: nothing set, nothing visible.
    with transaction.atomic():
        assert raw("SELECT coalesce(current_setting('app.tenant_id', true), '')") == [("",)]
        assert raw("SELECT count(*) FROM tenants_membership") == [(0,)]
    # Autocommit queries with a tenant run in their own short transaction.
    with tenant_context(world.tenant_b.id):
        assert raw("SELECT count(*) FROM tenants_membership") == [(1,)]
    assert raw("SELECT count(*) FROM tenants_membership") == [(0,)]


def test_a_rolled_back_savepoint_does_not_lose_the_tenant(world: World):
    with tenant_context(world.tenant_a.id):
        try:
            with transaction.atomic():
                assert Membership.objects.count() == 2
                raise RuntimeError
        except RuntimeError:
            pass
        assert Membership.objects.count() == 2
    assert Tenant.objects.count() == 2


def test_leaving_a_tenant_inside_a_failed_savepoint_still_rolls_back_cleanly(world: World):
    with pytest.raises(ProgrammingError), transaction.atomic(), tenant_context(world.tenant_a.id):
        raw("SELECT no_such_column FROM tenants_membership")
    with tenant_context(world.tenant_a.id):
        assert Membership.objects.count() == 2
