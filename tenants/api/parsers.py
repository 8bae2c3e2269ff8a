"""The API's JSON parser: a body nested too deep for Python's decoder is a 400, not a 500.

``json.loads`` raises RecursionError (not a ValueError, which DRF turns into a 400) when the
nesting exhausts the stack.
"""

from __future__ import annotations

from typing import IO, Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class SafeJSONParser(JSONParser):
    too_deep = "JSON parse error - nested too deep."

    def parse(self, stream: IO[Any], media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(self.too_deep) from None
