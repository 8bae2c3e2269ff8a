"""A segment's members as CSV, streamed in keyset pages, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

from contacts.export import escape_formula
from segments.models import Segment
from segments.selectors import MEMBER_COLUMNS, members_page
from tenants.audit import Actor, audit
from tenants.context import tenant_context

PAGE_SIZE = 2_000
# "id" is also what other systems call their customer id; ours gets the name the contacts export uses.
HEADERS = tuple("segmentor_id" if column == "id" else column for column in MEMBER_COLUMNS)


class _Echo:
    """A file-like object whose write returns the line, for csv.writer in a stream."""

    def write(self, value: str) -> str:
        return value


def _cell(value: Any) -> str:
    return "" if value is None else escape_formula(str(value))


def segment_members_csv(*, segment: Segment, actor: Actor) -> Iterator[str]:
    """Record the export and return the members as CSV text chunks (a byte-order mark first, for Excel).

    Each page is read under the segment's tenant, so the stream also works after the request
    that started it has returned (a StreamingHttpResponse runs after the middleware).
    """
    audit(tenant=segment.tenant, actor=actor, action="segment.members_exported", obj=segment, data={"format": "csv"})
    writer = csv.writer(_Echo())
    tenant_id = segment.tenant_id

    def chunks() -> Iterator[str]:
        yield "\ufeff" + writer.writerow(HEADERS)
        before: int | None = None
        while True:
            with tenant_context(tenant_id):
                rows, before = members_page(segment, before=before, size=PAGE_SIZE)
            yield "".join(writer.writerow([_cell(row[column]) for column in MEMBER_COLUMNS]) for row in rows)
            if before is None:
                return

    return chunks()
