"""Small ORM expressions the compiler needs and Django lacks, for PostgreSQL and SQLite.

Every value and JSON key is a query parameter; the SQL text here is fixed.
"""

from __future__ import annotations

from typing import Any

from django.db.models import BooleanField, Expression, FloatField, IntegerField
from django.db.models.functions import SHA256
from django.db.models.sql.compiler import SQLCompiler


class _VendorExpression(Expression):
    def __init__(self, source: Any, output_field: Any) -> None:
        super().__init__(output_field=output_field)
        self.source = source

    def get_source_expressions(self) -> list[Any]:
        return [self.source]

    def set_source_expressions(self, exprs: Any) -> None:
        (self.source,) = exprs

    def as_sql(self, compiler: SQLCompiler, connection: Any) -> tuple[str, list[Any]]:
        sql, params = compiler.compile(self.source)
        method = getattr(self, f"sql_{connection.vendor}", None)
        if method is None:
            raise NotImplementedError(f"{type(self).__name__} is not available on {connection.vendor}.")
        return method(sql, list(params))


class JsonArrayHasAny(_VendorExpression):
    """True when the JSON array ``source`` holds at least one of ``values`` (text elements)."""

    conditional = True

    def __init__(self, source: Any, values: list[str]) -> None:
        super().__init__(source, BooleanField())
        self.values = list(values)

    def sql_postgresql(self, sql: str, params: list[Any]) -> tuple[str, list[Any]]:
        # The function behind ``?|``, called by name: under row-level security the planner may not
        # read a column's statistics for a non-leakproof operator and guesses 1 % of rows for
        # ``?|``, but a third for a boolean function; tag conditions usually select far more than
        # 1 %, and the low guess led to per-row nested loops (bench/RESULTS.md, 2026-11-30).
        return f"jsonb_exists_any(COALESCE({sql}, '[]'::jsonb), %s::text[])", [*params, self.values]

    def sql_sqlite(self, sql: str, params: list[Any]) -> tuple[str, list[Any]]:
        marks = ", ".join(["%s"] * len(self.values))
        return (
            f"EXISTS (SELECT 1 FROM json_each(COALESCE({sql}, '[]')) AS j WHERE j.value IN ({marks}))",
            [*params, *self.values],
        )


class JsonArrayLength(_VendorExpression):
    """The length of the JSON array ``source`` (0 when it is missing or not an array)."""

    def __init__(self, source: Any) -> None:
        super().__init__(source, IntegerField())

    def sql_postgresql(self, sql: str, params: list[Any]) -> tuple[str, list[Any]]:
        return f"(CASE WHEN jsonb_typeof({sql}) = 'array' THEN jsonb_array_length({sql}) ELSE 0 END)", params * 2

    def sql_sqlite(self, sql: str, params: list[Any]) -> tuple[str, list[Any]]:
        return f"(CASE WHEN json_type({sql}) = 'array' THEN json_array_length({sql}) ELSE 0 END)", params * 2


class JsonNumber(_VendorExpression):
    """A JSON object's member ``key`` as a number, or NULL when it is missing or not a number."""

    def __init__(self, source: Any, key: str) -> None:
        super().__init__(source, FloatField())
        self.key = key

    def sql_postgresql(self, sql: str, params: list[Any]) -> tuple[str, list[Any]]:
        return (
            f"(CASE WHEN jsonb_typeof({sql} -> %s) = 'number' THEN ({sql} ->> %s)::double precision END)",
            [*params, self.key, *params, self.key],
        )

    def sql_sqlite(self, sql: str, params: list[Any]) -> tuple[str, list[Any]]:
        path = '$."' + self.key + '"'
        return (
            f"(CASE WHEN json_type({sql}, %s) IN ('integer', 'real') THEN json_extract({sql}, %s) END)",
            [*params, path, *params, path],
        )


class Sha256Hex(SHA256):
    """SHA-256 as lower-case hex. Django's SHA256 needs pgcrypto on PostgreSQL; the built-in
    ``sha256(bytea)`` (PostgreSQL 11+) does not."""

    def as_postgresql(self, compiler: SQLCompiler, connection: Any, **extra_context: Any) -> tuple[str, Any]:
        return self.as_sql(
            compiler, connection, template="encode(sha256(convert_to(%(expressions)s, 'UTF8')), 'hex')", **extra_context
        )
