"""Row-level security for tenant-owned tables, as migration operations.

Every app adds ``EnableTenantRLS("<model>")`` to the migration that creates a
tenant-owned model. The policy lets a row through only when its ``tenant_id`` is
the transaction's ``app.tenant_id`` (or platform access is on); ``FORCE`` makes
it bind the tables' owner too, which is the role the app runs as. On SQLite the
operations do nothing and the scoped managers are the only wall.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

POLICY_NAME = "tenant_isolation"
# The functions inside scalar subqueries: PostgreSQL evaluates each once per statement (an InitPlan)
# instead of once per row, which at a million rows was ~100 ns a row of every count (bench/RESULTS.md).
POLICY_CONDITION = "(tenant_id = (SELECT app_current_tenant()) OR (SELECT app_platform_access()))"

FUNCTIONS_SQL = """
CREATE OR REPLACE FUNCTION app_current_tenant() RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('app.tenant_id', true), '')::bigint $$;
CREATE OR REPLACE FUNCTION app_platform_access() RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce(current_setting('app.platform_access', true), '') = 'on' $$;
"""
DROP_FUNCTIONS_SQL = "DROP FUNCTION IF EXISTS app_current_tenant(); DROP FUNCTION IF EXISTS app_platform_access();"


def _is_postgresql(schema_editor: Any) -> bool:
    return bool(schema_editor.connection.vendor == "postgresql")


class CreateRLSFunctions(migrations.operations.base.Operation):
    """Create the STABLE helpers the policies call (once, in tenants' first migration)."""

    reduces_to_sql = True
    reversible = True

    def state_forwards(self, app_label: str, state: Any) -> None:
        pass

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if _is_postgresql(schema_editor):
            schema_editor.execute(FUNCTIONS_SQL)

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if _is_postgresql(schema_editor):
            schema_editor.execute(DROP_FUNCTIONS_SQL)

    def describe(self) -> str:
        return "Create row-level security helper functions"


class EnableTenantRLS(migrations.operations.base.Operation):
    """Enable and force row-level security on a tenant-owned model's table."""

    reduces_to_sql = True
    reversible = True

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return (self.__class__.__name__, [self.model_name], {})

    def state_forwards(self, app_label: str, state: Any) -> None:
        pass

    def _table(self, app_label: str, state: Any) -> str:
        return str(state.apps.get_model(app_label, self.model_name)._meta.db_table)

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if not _is_postgresql(schema_editor):
            return
        table = schema_editor.quote_name(self._table(app_label, to_state))
        condition = POLICY_CONDITION
        schema_editor.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        schema_editor.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        schema_editor.execute(f"CREATE POLICY {POLICY_NAME} ON {table} USING {condition} WITH CHECK {condition}")

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if not _is_postgresql(schema_editor):
            return
        table = schema_editor.quote_name(self._table(app_label, from_state))
        schema_editor.execute(f"DROP POLICY IF EXISTS {POLICY_NAME} ON {table}")
        schema_editor.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        schema_editor.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")

    def describe(self) -> str:
        return f"Enable tenant row-level security on {self.model_name}"


class RunSQLOnPostgreSQL(migrations.RunSQL):
    """RunSQL that only runs on PostgreSQL (e.g. pattern-ops indexes); a no-op on SQLite."""

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if _is_postgresql(schema_editor):
            super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if _is_postgresql(schema_editor):
            super().database_backwards(app_label, schema_editor, from_state, to_state)
