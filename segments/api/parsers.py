"""JSON bodies for the segments API, with a cap on nesting.

A rule tree nests at most MAX_DEPTH groups, about twenty JSON levels with its conditions; a
body nested far deeper is junk or an attack. Python's decoder raises RecursionError (not a
ValueError, so DRF would answer 500) when the nesting exhausts the stack, and a deep value
would do the same later to anything that walks it.
"""

from __future__ import annotations

from typing import IO, Any

from rest_framework.exceptions import ParseError

from tenants.api.parsers import SafeJSONParser

MAX_JSON_DEPTH = 40


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Does ``value`` (parsed JSON) nest more than ``limit`` levels of objects and arrays? (No recursion.)"""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def too_deep_message() -> str:
    return f"JSON parse error - nested more than {MAX_JSON_DEPTH} levels deep."


class BoundedJSONParser(SafeJSONParser):
    too_deep = too_deep_message()

    def parse(self, stream: IO[Any], media_type: str | None = None, parser_context: Any = None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        if nested_deeper_than(data, MAX_JSON_DEPTH):
            raise ParseError(too_deep_message())
        return data
