from __future__ import annotations

from rest_framework.pagination import CursorPagination


class IdCursorPagination(CursorPagination):
    """Stable, fast pages at any depth: a cursor on the primary key."""

    ordering = "-id"
    page_size_query_param = "page_size"
    max_page_size = 1000
