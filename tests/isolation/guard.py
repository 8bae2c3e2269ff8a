"""What the isolation tests assert about the database, whatever request or task ran.

- ``tenant_fingerprint(tenant_id)``: a checksum of every row a tenant owns (every table with
  a ``tenant_id`` column, the tenant row, its members' user rows, its campaigns' schedules),
  read with platform access. Equal before and after means nothing of the tenant changed.
- ``cross_tenant_references()``: rows of one tenant that point at another tenant's rows, by
  foreign key (constrained or not) or by an id inside JSON (segment rules, journey steps,
  experiment arms). Must always be empty.
- ``database_wall_down()``: row-level security opened for the block (the policies let every row
  through), so only the application's own filters stand between tenants. A leak that RLS would
  have hidden shows up here; tests run both ways.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from functools import cache

from django.apps import apps
from django.db import connection, models

from tenants.context import TenantScope, platform_access
from tenants.db.postgresql.base import DatabaseWrapper
from tenants.models import TenantOwnedModel


@cache
def tenant_tables() -> tuple[str, ...]:
    """Every table with a tenant_id column (models or not), so a new table is covered by itself."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name FROM information_schema.columns WHERE column_name = 'tenant_id' "
            "AND table_schema = current_schema() ORDER BY table_name"
        )
        return tuple(name for (name,) in cursor.fetchall())


def _checksum(source: str) -> str:
    # Order-free: a sum of the rows' hashes changes when any row is added, removed or changed.
    return f"SELECT count(*), coalesce(sum(hashtextextended(x::text, 0)::numeric), 0)::text FROM {source}"


# Rows of a tenant outside its own tables: its tenant row, its members' user rows, its campaigns' schedules.
RELATED_SOURCES = {
    "tenants_tenant": "tenants_tenant x WHERE x.id = %(tenant)s",
    "tenants_user": "tenants_user x WHERE x.id IN "
    "(SELECT user_id FROM tenants_membership WHERE tenant_id = %(tenant)s)",
    "django_celery_beat_periodictask": "django_celery_beat_periodictask x WHERE x.id IN "
    "(SELECT periodic_task_id FROM campaigns_campaign WHERE tenant_id = %(tenant)s)",
}


def tenant_fingerprint(tenant_id: int, tables: Collection[str] | None = None) -> dict[str, tuple[int, str]]:
    """Row count and checksum of each of ``tenant_id``'s tables (or of those of ``tables``), in one query."""
    q = connection.ops.quote_name
    sources = {t: f"{q(t)} x WHERE x.tenant_id = %(tenant)s" for t in tenant_tables()} | RELATED_SOURCES
    chosen = [(t, source) for t, source in sources.items() if tables is None or t in tables]
    if not chosen:
        return {}
    sql = " UNION ALL ".join(f"(SELECT '{name}', * FROM ({_checksum(source)}) AS s)" for name, source in chosen)
    with platform_access(), connection.cursor() as cursor:
        cursor.execute(sql, {"tenant": tenant_id})
        return {name: (count, digest) for name, count, digest in cursor.fetchall()}


def table_writes() -> dict[str, int]:
    """Rows written so far in this transaction, per table (rolled-back savepoints included): which to check."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_xact_user_tables "
            "WHERE schemaname = current_schema()"
        )
        return dict(cursor.fetchall())


def written_since(before: dict[str, int]) -> set[str]:
    """The tables written since ``before`` (a ``table_writes()``)."""
    return {table for table, count in table_writes().items() if count != before.get(table, 0)}


def fingerprint_changes(before: dict[str, tuple[int, str]], after: dict[str, tuple[int, str]]) -> list[str]:
    return [
        f"{table}: {before.get(table)} -> {after.get(table)}" for table in after if before.get(table) != after[table]
    ]


def _tenant_owned(model: type[models.Model] | None) -> bool:
    return model is not None and issubclass(model, TenantOwnedModel)


@cache
def tenant_foreign_keys() -> tuple[tuple[str, str, str, str], ...]:
    """(table, column, target table, label) for every FK from a tenant-owned model to another one."""
    found = []
    for model in apps.get_models():
        if not _tenant_owned(model):
            continue
        for field in model._meta.concrete_fields:
            related = field.related_model
            if field.many_to_one and field.name != "tenant" and isinstance(related, type) and _tenant_owned(related):
                target = related._meta
                label = f"{model._meta.label}.{field.name}"
                found.append((model._meta.db_table, field.column, target.db_table, label))
    return tuple(found)


# Ids inside JSON columns: (label, table, a LATERAL subquery giving the ids as text ``ref``, target table).
RULE_SEGMENTS = 'lax $.** ? (@.type == "segment").segment'  # "in segment" conditions anywhere in a tree


def _path(column: str, path: str) -> str:
    return f"(SELECT j #>> '{{}}' AS ref FROM jsonb_path_query(c.{column}, '{path}') AS j)"


def _keys(column: str) -> str:
    an_object = f"CASE jsonb_typeof(c.{column}) WHEN 'object' THEN c.{column} ELSE '{{}}' END"
    return f"(SELECT k AS ref FROM jsonb_object_keys({an_object}) AS k)"


JSON_REFERENCES: tuple[tuple[str, str, str, str], ...] = (
    ("segments.Segment.rules", "segments_segment", _path("rules", RULE_SEGMENTS), "segments_segment"),
    ("segments.Segment.depends_on", "segments_segment", _path("depends_on", "lax $[*]"), "segments_segment"),
    ("journeys.Step.config", "journeys_step", _path("config", RULE_SEGMENTS), "segments_segment"),
    ("analytics.Experiment.arms", "analytics_experiment", _path("arms", "lax $[*] ? (@.type() == \"number\")"),
     "campaigns_variant"),
    ("analytics.Experiment.arms.variant", "analytics_experiment", _path("arms", "lax $[*].variant"),
     "campaigns_variant"),
    ("analytics.Experiment.arm_send_hours", "analytics_experiment", _keys("arm_send_hours"), "campaigns_variant"),
    ("analytics.Experiment.arm_channels", "analytics_experiment", _keys("arm_channels"), "campaigns_variant"),
    ("analytics.Experiment.arm_siblings", "analytics_experiment", _keys("arm_siblings"), "campaigns_variant"),
    *(
        (f"analytics.Experiment.arm_siblings.{key}", "analytics_experiment", _path("arm_siblings", f"lax $.*.{key}"),
         target)
        for key, target in (("campaign", "campaigns_campaign"), ("variant", "campaigns_variant"),
                            ("run", "campaigns_campaignrun"))
    ),
)  # fmt: skip


def cross_tenant_references(tables: Collection[str] | None = None) -> list[str]:
    """Every row that points at a row of another tenant (empty when tenants are sealed off), in one query.

    With ``tables``, only the references from or to those tables (those a request wrote) are checked."""
    q = connection.ops.quote_name

    def wanted(*names: str) -> bool:
        return tables is None or bool(set(names) & set(tables))

    selects = [
        f"(SELECT '{label}', count(*) FROM {q(table)} c JOIN {q(target)} p ON p.id = c.{q(column)} "
        f"WHERE p.tenant_id <> c.tenant_id)"
        for table, column, target, label in tenant_foreign_keys()
        if wanted(table, target)
    ]
    selects += [
        f"(SELECT '{label}', count(*) FROM {q(table)} c CROSS JOIN LATERAL {ids} AS r JOIN {q(target)} p "
        f"ON p.id = CASE WHEN r.ref ~ '^[0-9]{{1,18}}$' THEN r.ref::bigint END WHERE p.tenant_id <> c.tenant_id)"
        for label, table, ids, target in JSON_REFERENCES
        if wanted(table, target)
    ]
    if not selects:
        return []
    with platform_access(), connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(selects))
        return [f"{label}: {count} rows point at another tenant" for label, count in cursor.fetchall() if count]


@contextmanager
def database_wall_down() -> Iterator[None]:
    """Open row-level security for the block: only the application's own tenant filters remain."""
    original = DatabaseWrapper._set_scope

    def open_scope(self: DatabaseWrapper, scope: TenantScope) -> None:
        original(self, TenantScope(tenant_id=scope.tenant_id, platform=True))
        self.rls_scope = scope  # as if the real scope were set: no re-setting on every query

    DatabaseWrapper._set_scope = open_scope  # type: ignore[method-assign]
    connection.rls_scope = None  # type: ignore[attr-defined]
    try:
        yield
    finally:
        DatabaseWrapper._set_scope = original  # type: ignore[method-assign]
        connection.rls_scope = None  # type: ignore[attr-defined]


@contextmanager
def walls(mode: str) -> Iterator[None]:
    """``rls``: both walls as in production; ``app``: the database wall down (see database_wall_down)."""
    if mode == "app":
        with database_wall_down():
            yield
    else:
        yield


WALLS = ("rls", "app")
