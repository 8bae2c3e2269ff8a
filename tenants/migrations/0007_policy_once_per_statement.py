"""Row-level security policies evaluate the tenant setting once per statement, not once per row.

Tables created by later migrations get the new policy from ``EnableTenantRLS``; this rewrites the
policies that exist when it runs.
"""

from django.db import migrations

from tenants.rls import POLICY_CONDITION, POLICY_NAME, RunSQLOnPostgreSQL

OLD_CONDITION = "(tenant_id = app_current_tenant() OR app_platform_access())"


def _alter_all(condition: str) -> str:
    return f"""
DO $$
DECLARE policy record;
BEGIN
    FOR policy IN SELECT schemaname, tablename FROM pg_policies WHERE policyname = '{POLICY_NAME}' LOOP
        EXECUTE format('ALTER POLICY {POLICY_NAME} ON %I.%I USING {condition} WITH CHECK {condition}',
                       policy.schemaname, policy.tablename);
    END LOOP;
END $$;
"""


class Migration(migrations.Migration):
    dependencies = [("tenants", "0006_tenant_index_from_composites")]

    operations = [RunSQLOnPostgreSQL(_alter_all(POLICY_CONDITION), _alter_all(OLD_CONDITION))]
