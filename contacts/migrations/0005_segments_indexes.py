"""Indexes for segment counts and refreshes (issue 4), measured on bench-1m (bench/RESULTS.md).

- ``rollup_segments``: event rollups by (tenant, name, contact, day), carrying count and revenue.
  "Did X at least N times / sum of revenue in the last D days" becomes an index-only scan that
  arrives in contact order: a streaming GroupAggregate, merge joins with contacts, and one-contact
  probes for real time, instead of a heap fetch per rollup row and a hash of every buyer.
- ``contact_segments``: the tenant's contacts that are not erased, in id order, with the small
  columns segments filter on most (country, stage, birth date for age). Index-only scans keep a
  count that needs only these (or only the events) out of the 400 MB contact heap.

Write cost: each new rollup row and each new contact writes one more index entry; a rollup
update changes an indexed column now (count, revenue), so it is never a HOT update.

PostgreSQL only, built CONCURRENTLY (no write lock on the big tables), hence not atomic.
"""

from django.db import migrations

from tenants.rls import RunSQLOnPostgreSQL

ROLLUP = (
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS rollup_segments ON contacts_eventdailyrollup "
    "(tenant_id, name, contact_id, day) INCLUDE (count, revenue)"
)
CONTACT = (
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS contact_segments ON contacts_contact "
    "(tenant_id, id) INCLUDE (country, lifecycle_stage, birth_date) WHERE erased_at IS NULL"
)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("contacts", "0004_event_backlog_and_fillfactor")]

    operations = [
        RunSQLOnPostgreSQL(ROLLUP, "DROP INDEX CONCURRENTLY IF EXISTS rollup_segments"),
        RunSQLOnPostgreSQL(CONTACT, "DROP INDEX CONCURRENTLY IF EXISTS contact_segments"),
    ]
