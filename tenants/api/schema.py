"""Make the OpenAPI schema tell the whole truth (checked by the fuzzer in tests/test_api_fuzz.py).

- Errors (a postprocessing hook): endpoints document the errors of their own making (400 with the
  fields, 404 for an object); ``document_errors`` adds what every endpoint can answer because of the
  layers in front of it, and gives every error response the one body shape (``tenants.api.errors``).
- Blank values: a ModelSerializer's read-only field loses ``allow_blank`` (DRF drops it), so the
  schema would not say that "" comes back for a blank model field; ``blank_allowed`` asks the model,
  and the extensions below document an email or URL that may be blank ("" or the format).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import FieldDoesNotExist
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from rest_framework import serializers

ERROR_COMPONENT = "Error"
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": 'Every error: `{"error": {"code", "message", "fields"}}`.',
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "e.g. invalid, not_found, permission_denied, throttled"},
                "message": {"type": "string"},
                "fields": {
                    "type": "object",
                    "description": "What is wrong with each field (or path in the body), when the input is.",
                    "additionalProperties": {"anyOf": [{"type": "array", "items": {}}, {"type": "object"}]},
                },
            },
            "required": ["code", "message"],
            "additionalProperties": False,
        }
    },
    "required": ["error"],
    "additionalProperties": False,
}
RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying."}}
WALL_CLOCK_TIME = r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d+)?)?$"
UNSAFE_METHODS = frozenset({"post", "put", "patch", "delete"})
METHODS = frozenset({"get", *UNSAFE_METHODS})


def _always(method: str, operation: dict[str, Any]) -> bool:
    return True


def _has_body(method: str, operation: dict[str, Any]) -> bool:
    return "requestBody" in operation


def _has_parameter(where: str, name: str | None = None) -> Any:
    def applies(method: str, operation: dict[str, Any]) -> bool:
        return any(p.get("in") == where and name in (None, p.get("name")) for p in operation.get("parameters", []))

    return applies


# (status, description, applies to the operation?, response headers)
COMMON_ERRORS: tuple[tuple[str, str, Any, dict[str, Any]], ...] = (
    ("401", "No API key, or an invalid or revoked one.", _always, {"WWW-Authenticate": {"schema": {"type": "string"}}}),
    ("403", "The API key is read-only.", lambda method, op: method in UNSAFE_METHODS, {}),
    ("404", "No such object in this workspace (another workspace's is the same 404).", _has_parameter("path"), {}),
    ("404", "The page cursor is not one this list gave out.", _has_parameter("query", "cursor"), {}),
    ("400", "The body is not valid JSON, or not what this operation takes.", _has_body, {}),
    ("400", "page_size is not a whole number of at least 1.", _has_parameter("query", "page_size"), {}),
    ("429", "Too many requests with this API key.", _always, RETRY_AFTER),
    ("503", "The database cannot be reached right now.", _always, RETRY_AFTER),
)  # fmt: skip


def document_errors(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Add the errors any API operation can answer, and the error shape to every error response."""
    result.setdefault("components", {}).setdefault("schemas", {})[ERROR_COMPONENT] = ERROR_SCHEMA
    error_content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}}}
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            if method not in METHODS:
                continue
            responses = operation.setdefault("responses", {})
            for status, description, applies, headers in COMMON_ERRORS:
                if status not in responses and applies(method, operation):
                    responses[status] = {"description": description}
                    if headers:
                        responses[status]["headers"] = headers
            for status, response in responses.items():
                if status.startswith(("4", "5")) and "content" not in response:
                    response["content"] = error_content
    return result


def blank_allowed(field: serializers.Field) -> bool:
    """Whether ``field`` may render or take "": its own ``allow_blank``, or the model field's ``blank``."""
    if getattr(field, "allow_blank", False):
        return True
    model = getattr(getattr(field.parent, "Meta", None), "model", None)
    source = field.source if isinstance(field.source, str) else ""
    if model is None or not source or "." in source or source == "*":
        return False
    try:
        return bool(model._meta.get_field(source).blank)
    except FieldDoesNotExist:
        return False


def or_blank(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema``, or an empty string."""
    return {"oneOf": [schema, {"type": "string", "enum": [""]}]}


class BlankableEmailFieldExtension(OpenApiSerializerFieldExtension):
    target_class = "rest_framework.fields.EmailField"

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> Any:
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        return or_blank(schema) if blank_allowed(self.target) else schema


class BlankableUrlFieldExtension(BlankableEmailFieldExtension):
    target_class = "rest_framework.fields.URLField"


class WallClockTimeFieldExtension(OpenApiSerializerFieldExtension):
    """A time of day is a wall-clock time without an offset ("09:00:00", read in a time zone the field names).

    spectacular's ``format: time`` is RFC 3339's full-time, which requires an offset and so
    describes neither what the API renders nor what it accepts ("09:00" too).
    """

    target_class = "rest_framework.fields.TimeField"

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> Any:
        schema: dict[str, Any] = {"type": "string", "format": "partial-time", "pattern": WALL_CLOCK_TIME}
        if getattr(self.target, "allow_null", False):
            schema["nullable"] = True
        return schema
