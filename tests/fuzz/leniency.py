"""Input the API accepts on purpose although the schema's constraints refuse it.

schemathesis's ``negative_data_rejection`` check fails when a request that violates the schema is
answered 2xx. Three kinds of such input are DRF's documented readings, kept because clients rely
on them (docs/hardening.md, Fuzzing); any other accepted violation stays a failure.

1. An empty value in the query string or in a form body means "not given" (an HTML form's empty
   field), so an empty ``?range=`` gets the default instead of failing the enum; a query parameter
   given twice (or as an "object") is read as its last value (Django's QueryDict).
2. A form body (urlencoded or multipart) carries only text and lists only as ``name[0]key`` fields,
   so the schema's types and nested shapes cannot be told on it; they are checked on JSON bodies.
3. In a JSON body a number is read as text where text is expected (``"name": 0`` is "0") and 0 or 1
   as a boolean: DRF's CharField and BooleanField.
"""

from __future__ import annotations

from typing import Any

from schemathesis import Case
from schemathesis.core.failures import AcceptedNegativeData, Failure
from schemathesis.core.parameters import ParameterLocation

QUERY, BODY = ParameterLocation.QUERY, ParameterLocation.BODY
FORM_MEDIA_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
MISSING = object()


def accepted_on_purpose(failure: Failure, case: Case) -> bool:
    """Whether ``failure`` is the API accepting one of the three kinds of input above."""
    if not isinstance(failure, AcceptedNegativeData) or case.meta is None:
        return False
    data = case.meta.phase.data
    mutations = getattr(data, "mutations", ())
    negated = [(m.path or (m.parameter,), m.parameter_location, m.keywords) for m in mutations]
    if not negated:  # a coverage case: one parameter, or one place in the body named by a schema pointer
        location = getattr(data, "parameter_location", None)
        if location is None:
            return False
        if location is BODY:
            negated = [_from_pointer(getattr(data, "location", None) or "")]
        else:
            parameter = getattr(data, "parameter", None)
            negated = [((parameter,) if parameter else (), location, ())]
    form = (case.media_type or "").startswith(FORM_MEDIA_TYPES)
    return all(_lenient(case, path, location, keywords, form) for path, location, keywords in negated)


def _lenient(
    case: Case, path: tuple[Any, ...], location: ParameterLocation, keywords: tuple[str, ...], form: bool
) -> bool:
    if location is BODY and form:
        return True  # 2
    container = case.query if location is QUERY else case.body if location is BODY else None
    if not path:  # the whole query string: lenient when every value in it is empty
        return location is QUERY and all(value in ("", [""]) for value in (case.query or {}).values())
    value = _at(container, path)
    if location is QUERY:
        # 1; or a value the query string cannot carry as such (an object, a list): Django reads its last text
        return value in ("", [""]) or isinstance(value, dict | list)
    if location is BODY:
        return keywords == ("type",) and isinstance(value, int | float) and not isinstance(value, bool)  # 3
    return False


def _from_pointer(pointer: str) -> tuple[tuple[Any, ...], ParameterLocation, tuple[str, ...]]:
    """``/properties/name/type`` → (("name",), BODY, ("type",)); a place inside an array item stays unresolved."""
    parts = pointer.strip("/").split("/")
    path = tuple(parts[i + 1] for i, part in enumerate(parts[:-1]) if part == "properties")
    if "items" in parts or not path:
        return (), BODY, ()
    return path, BODY, (parts[-1],)


def _at(container: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        in_dict = isinstance(container, dict) and step in container
        in_list = isinstance(container, list) and isinstance(step, int) and 0 <= step < len(container)
        if not (in_dict or in_list):
            return MISSING
        container = container[step]
    return container
