"""Bulk SQL: write a whole batch of rows in one statement (upserts, ingest, lifecycle)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, cast

import orjson
from django.db import connection, models

from tenants.models import Tenant

# Django's bulk_update builds a CASE WHEN per row and field (the database then compares every
# row with every WHEN), bulk_create prepares every field of every model instance, and psycopg
# renders list parameters element by element in Python. On PostgreSQL these helpers send a
# whole batch as one JSON document that the server unpacks with json_to_recordset; elsewhere
# (the embedded SQLite default: demo-sized data) they fall back to multi-row VALUES.
SQLITE_CHUNK = 200  # rows per multi-row VALUES statement (SQLite allows 32,766 parameters)
# A list of strings sent as one JSON parameter, as an array for `= ANY(...)`.
JSON_TEXT_ARRAY = "ARRAY(SELECT json_array_elements_text(%s::json))"
# Join the rows of a recordset to the table by primary key, tenant included. The tenant is a join
# column rather than a constant: with a constant the planner may think the tenant small (stale
# statistics after a big load) and scan it once per record; joined, it looks each record up.
MATCH_RECORD = "{table}.id = {record}.id AND {table}.tenant_id = {record}.tenant_id"


def each_value_lookup(table: str, column: str, columns: Sequence[str]) -> str:
    """SQL that finds the tenant's rows whose text ``column`` equals one of a JSON list of values.

    Parameters: the JSON list, then the tenant id. One index probe per value (a LATERAL join), so
    the plan does not depend on statistics: ``column = ANY(array)`` with statistics that think the
    tenant small (a table that grew since the last ANALYZE) became a scan of the whole tenant with
    the array searched per row -- 1.7 s for 4,000 identities among 19,000 contacts. ``column`` must
    be unique per tenant: ``LIMIT 1`` keeps the planner from flattening the probe into a hash join
    (a scan of the tenant again). Blank values are left out: that puts the probe inside a partial
    unique index.
    """
    return (
        f"SELECT {', '.join(f't.{name}' for name in columns)} FROM json_array_elements_text(%s::json) AS v(value) "
        f"CROSS JOIN LATERAL (SELECT * FROM {table} AS t WHERE t.tenant_id = %s AND t.{column} <> '' "
        f"AND t.{column} = v.value LIMIT 1) AS t"
    )


def each_id_lookup(table: str, columns: Sequence[str]) -> str:
    """SQL that finds the tenant's rows with one of a JSON list of primary keys (another tenant's are not found).

    Parameters: the JSON list, then the tenant id. One primary-key probe per id whatever the
    statistics say: the tenant is checked on the row found, outside the probe (``LIMIT 1`` keeps the
    condition from moving in), so the planner has no tenant index to prefer. With the tenant inside
    (``t.id = … AND t.tenant_id = …``, or ``= ANY(...)``) and statistics older than the tenant's last
    big load, it read the tenant's whole index for every id. The list is cast before the probe, not
    each value inside it: a cast is not leakproof, so under row-level security ``t.id = v.value::bigint``
    is no index condition either.
    """
    return (
        f"SELECT {', '.join(f't.{name}' for name in columns)} "
        "FROM unnest(ARRAY(SELECT json_array_elements_text(%s::json))::bigint[]) AS v(value) "
        f"CROSS JOIN LATERAL (SELECT * FROM {table} AS t WHERE t.id = v.value LIMIT 1) AS t WHERE t.tenant_id = %s"
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()  # full precision (DjangoJSONEncoder cuts microseconds)
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_ROWS_JSON = json.JSONEncoder(default=_json_default, ensure_ascii=False, separators=(",", ":"))


def rows_json(rows: Any) -> str:
    """Serialise rows for json_to_recordset (and ``json_array_elements``)."""
    try:  # orjson: ~8x faster on a batch of events (datetimes natively, no isoformat per value)
        return orjson.dumps(rows, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # orjson refuses integers beyond 64 bits; the standard library writes them
        return _ROWS_JSON.encode(rows)


def json_bytes(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON (what it costs to store: properties are limited by this)."""
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":")).encode()


def _sql_type(field: models.Field[Any, Any]) -> str:
    if isinstance(field, models.JSONField):
        return "jsonb"
    return str(field.db_type(connection))  # a ForeignKey answers with its target's type


def _recordset(fields: list[models.Field[Any, Any]], *extra: str) -> str:
    """``json_to_recordset(%s::json) AS r(...)`` with a column per field (and ``extra`` definitions)."""
    quote = connection.ops.quote_name
    columns = [f"{quote(f.attname)} {_sql_type(f)}" for f in fields] + list(extra)
    return f"json_to_recordset(%s::json) AS r({', '.join(columns)})"


def _scalar(field: models.Field[Any, Any], value: Any) -> tuple[str, Any]:
    """A constant column: its SQL and its parameter."""
    if isinstance(field, models.JSONField):
        return "%s::jsonb", rows_json(value)
    return f"%s::{_sql_type(field)}", field.get_db_prep_save(value, connection)


def bulk_insert_rows(
    model: type[models.Model],
    rows: list[dict[str, Any]],
    *,
    fixed: dict[str, Any],
    ignore_conflicts: bool = False,
    returning: tuple[str, ...] = ("id",),
) -> list[tuple[Any, ...]]:
    """INSERT ``rows`` (attname → value); ``fixed`` applies to every row; other columns get their defaults.

    Returns the ``returning`` columns of the rows inserted (with ``ignore_conflicts``, rows
    that conflicted with a unique constraint are left out). Match them by content.
    """
    if not rows:
        return []
    all_fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    defaults = {f.attname: fixed[f.attname] if f.attname in fixed else f.get_default() for f in all_fields}
    quote = connection.ops.quote_name
    head = f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in all_fields)}) "
    tail = (" ON CONFLICT DO NOTHING" if ignore_conflicts else "") + (
        f" RETURNING {', '.join(quote(name) for name in returning)}" if returning else ""
    )
    if connection.vendor != "postgresql":
        return _insert_values(all_fields, rows, defaults, head, tail, bool(returning))
    names: set[str] = set().union(*rows)
    varying = [f for f in all_fields if f.attname in names]
    select: list[str] = []
    params: list[Any] = []
    for column in all_fields:
        if column.attname in names:
            select.append(f"r.{quote(column.attname)}")
        else:
            sql, param = _scalar(column, defaults[column.attname])
            select.append(sql)
            params.append(param)
    fill = {name: defaults[name] for name in names}
    records = [row if len(row) == len(names) else {**fill, **row} for row in rows]
    source = _recordset(varying) if varying else "generate_series(1, %s) AS r"
    params.append(rows_json(records) if varying else len(rows))
    with connection.cursor() as cursor:
        cursor.execute(f"{head}SELECT {', '.join(select)} FROM {source}{tail}", params)
        return [tuple(r) for r in cursor.fetchall()] if returning else []


def _insert_values(
    fields: list[models.Field[Any, Any]],
    rows: list[dict[str, Any]],
    defaults: dict[str, Any],
    head: str,
    tail: str,
    returning: bool,
) -> list[tuple[Any, ...]]:
    """bulk_insert_rows with multi-row VALUES, for databases other than PostgreSQL."""
    row_sql = f"({', '.join(['%s'] * len(fields))})"
    out: list[tuple[Any, ...]] = []
    for start in range(0, len(rows), SQLITE_CHUNK):
        chunk = rows[start : start + SQLITE_CHUNK]
        params = [
            f.get_db_prep_save(row.get(f.attname, defaults[f.attname]), connection) for row in chunk for f in fields
        ]
        with connection.cursor() as cursor:
            cursor.execute(f"{head}VALUES {', '.join([row_sql] * len(chunk))}{tail}", params)
            if returning:
                out += [tuple(r) for r in cursor.fetchall()]
    return out


def bulk_update_rows(tenant: Tenant, model: type[models.Model], rows: list[tuple[int, dict[str, Any]]]) -> None:
    """Set the given columns of each (id, {attname: value}) row of the tenant's ``model``, in one statement.

    Rows may set different columns; each keeps the columns it does not name.
    """
    if not rows:
        return
    # One lock order for every batch, so concurrent batches wait for each other instead of deadlocking.
    rows = sorted(rows, key=lambda row: row[0])
    if connection.vendor != "postgresql":  # the embedded SQLite default: small data, plain updates
        for row_id, values in rows:
            model._base_manager.filter(tenant=tenant, pk=row_id).update(**values)
        return
    names = sorted({name for _, values in rows for name in values})
    fields = [cast("models.Field[Any, Any]", model._meta.get_field(name)) for name in names]
    uniform = all(len(values) == len(names) for _, values in rows)
    quote = connection.ops.quote_name
    assignments = []
    for f in fields:
        value = f"r.{quote(f.attname)}"
        if not uniform:  # _given_columns lists the columns the row sets
            value = f"CASE WHEN r._given_columns ? '{f.attname}' THEN {value} ELSE t.{quote(f.column)} END"
        assignments.append(f"{quote(f.column)} = {value}")
    records = [{"id": row_id, "tenant_id": tenant.pk, **values} for row_id, values in rows]
    if not uniform:
        for record, (_, values) in zip(records, rows, strict=True):
            record["_given_columns"] = list(values)
    keys = [cast("models.Field[Any, Any]", model._meta.get_field(name)) for name in ("id", "tenant_id")]
    recordset = _recordset([*keys, *fields], *([] if uniform else ["_given_columns jsonb"]))
    sql = (
        f"UPDATE {quote(model._meta.db_table)} AS t SET {', '.join(assignments)} FROM {recordset} "
        f"WHERE {MATCH_RECORD.format(table='t', record='r')}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [rows_json(records)])
