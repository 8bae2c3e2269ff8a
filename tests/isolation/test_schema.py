"""The schema, read from PostgreSQL's catalog: what the models do not say (indexes made by raw SQL)."""

from __future__ import annotations

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db


def test_every_unique_index_on_a_tenant_table_includes_the_tenant():
    """A value unique across tenants answers "already taken" for another tenant's row: an existence oracle."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT t.relname, i.relname
            FROM pg_index ix
            JOIN pg_class i ON i.oid = ix.indexrelid
            JOIN pg_class t ON t.oid = ix.indrelid
            JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = current_schema()
            JOIN pg_attribute a ON a.attrelid = t.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
            WHERE ix.indisunique AND NOT ix.indisprimary AND NOT (a.attnum = ANY (ix.indkey))
            """
        )
        found = cursor.fetchall()
    assert found == [], "every unique index of a tenant-owned table must include tenant_id"
