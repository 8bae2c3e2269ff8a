"""CSV export of a tenant's contacts, streamed page by page, safe to open in a spreadsheet.

Column names are the importer's field names (``email``, ``attributes.plan``), so an export
imports back with every column mapped automatically.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from django.core.exceptions import PermissionDenied

from contacts.fields import CONTACT_FIELDS
from contacts.models import AttributeDefinition, Contact
from tenants.audit import Actor, audit
from tenants.context import tenant_context
from tenants.models import Membership, Tenant
from tenants.roles import Permission

EXPORT_BATCH = 2000
# OWASP CSV injection: a spreadsheet runs a cell starting with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
SUMMARY_FIELDS = (
    "lifecycle_stage",
    "first_seen_at",
    "last_seen_at",
    "last_engaged_at",
    "order_count",
    "total_revenue",
    "last_order_at",
    "created_at",
    "updated_at",
)
FIELDS = ("id", *(f.name for f in CONTACT_FIELDS), *SUMMARY_FIELDS)
# "id" is also what other systems call their customer id; ours gets a name no import guesses.
HEADERS = ("segmentor_id", *FIELDS[1:])
LINES_PER_CHUNK = 500


def escape_formula(value: str) -> str:
    """Put an apostrophe before a cell a spreadsheet would read as a formula (``=cmd|...``)."""
    return f"'{value}" if value.startswith(FORMULA_STARTS) else value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(_cell(item) for item in value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    return str(value)


class _Echo:
    """A file-like object whose write returns the line, for csv.writer in a stream."""

    def write(self, value: str) -> str:
        return value


def contact_rows(*, tenant_id: int, attribute_keys: list[str], batch_size: int = EXPORT_BATCH) -> Iterator[list[str]]:
    """Yield every (non-erased) contact as escaped cells, in id order, one keyset page at a time.

    Each page is read under its own tenant context, so the stream also works after the
    request that started it has returned (a StreamingHttpResponse runs after the middleware).
    """
    last_id = 0
    while True:
        with tenant_context(tenant_id):
            page = list(
                Contact.objects.filter(tenant_id=tenant_id, pk__gt=last_id, erased_at__isnull=True)
                .order_by("pk")
                .values_list(*FIELDS, "attributes")[:batch_size]
            )
        if not page:
            return
        for row in page:
            attributes = row[-1] or {}
            values = [*row[:-1], *(attributes.get(key) for key in attribute_keys)]
            yield [escape_formula(_cell(value)) for value in values]
        last_id = page[-1][0]


def contacts_export_csv(*, tenant: Tenant, acting: Membership) -> Iterator[str]:
    """Record the export and return the CSV as a stream of text chunks (a byte-order mark first, for Excel)."""
    if not acting.allows(Permission.EXPORT):
        raise PermissionDenied(f"Your role ({acting.get_role_display()}) may not export contacts.")
    keys = list(AttributeDefinition.objects.filter(tenant=tenant).order_by("key").values_list("key", flat=True))
    audit(tenant=tenant, actor=Actor.for_user(acting.user), action="contacts.exported", data={"format": "csv"})
    header = [escape_formula(name) for name in (*HEADERS, *(f"attributes.{key}" for key in keys))]
    writer = csv.writer(_Echo())

    def chunks() -> Iterator[str]:
        yield "\ufeff" + writer.writerow(header)
        lines: list[str] = []
        for row in contact_rows(tenant_id=tenant.pk, attribute_keys=keys):
            lines.append(writer.writerow(row))
            if len(lines) == LINES_PER_CHUNK:
                yield "".join(lines)
                lines.clear()
        if lines:
            yield "".join(lines)

    return chunks()
