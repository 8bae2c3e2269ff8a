"""Find every place a request names another object by id: API bodies, query strings and web forms.

Found from the URLConf (drf-spectacular's endpoint list and each operation's request
serializer, nested serializers and annotated custom fields included; the OpenAPI query
parameters) and from every form class of the project's apps. A field counts as a reference
when it is a relation (``RelatedField``, ``ModelChoiceField``), when an integer field is
named like one (``…_id``, ``…_ids``, or a tenant-owned model's name or foreign key, e.g.
``target_segment``), or when its help text speaks of ids. Ids inside JSON (segment rules,
journey step configs) have no field of their own: the probes list them by hand.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from django import forms
from django.apps import apps
from django.conf import settings
from drf_spectacular.generators import EndpointEnumerator, SchemaGenerator
from rest_framework import serializers

from tenants.models import TenantOwnedModel

ID_TOKENS = {"id", "ids"}
HELP_MENTIONS_IDS = re.compile(r"\bids?\b", re.IGNORECASE)
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


@cache
def reference_names() -> frozenset[str]:
    """Names that mean "an object" here: each tenant-owned model and each of their foreign keys."""
    names: set[str] = set()
    for model in apps.get_models():
        if not issubclass(model, TenantOwnedModel):
            continue
        names.add(re.sub(r"(?<!^)(?=[A-Z])", "_", model.__name__).lower())
        names |= {f.name for f in model._meta.concrete_fields if f.many_to_one and f.name != "tenant"}
    return frozenset(names)


def _names_an_object(name: str) -> bool:
    singular = name.removesuffix("s")
    return bool(ID_TOKENS & set(name.split("_"))) or name in reference_names() or singular in reference_names()


# --- API bodies ------------------------------------------------------------------------------
def _integer_like(field: Any) -> bool:
    if isinstance(field, (serializers.ListField, serializers.DictField)):
        return _integer_like(field.child)
    return isinstance(field, serializers.IntegerField)


def _is_api_reference(name: str, field: Any) -> bool:
    if isinstance(field, (serializers.RelatedField, serializers.ManyRelatedField)):
        return True
    source = field.source if isinstance(getattr(field, "source", None), str) else ""
    if _integer_like(field) and (_names_an_object(name) or _names_an_object(source)):
        return True
    return bool(HELP_MENTIONS_IDS.search(str(field.help_text or "")))


def _annotation(field: Any) -> Any:
    """The serializer a custom field is documented as (``@extend_schema_field``), if any."""
    return (getattr(type(field), "_spectacular_annotation", None) or {}).get("field")


def _walk(serializer: Any, prefix: str) -> Iterator[str]:
    if isinstance(serializer, type):
        serializer = serializer()
    if isinstance(serializer, serializers.ListSerializer):
        serializer = serializer.child
    for name, field in serializer.fields.items():
        if field.read_only:
            continue
        path = f"{prefix}{name}"
        if isinstance(field, serializers.ListSerializer):
            yield from _walk(field.child, f"{path}[].")
        elif isinstance(field, serializers.BaseSerializer):
            yield from _walk(field, f"{path}.")
        elif isinstance(getattr(field, "child", None), serializers.BaseSerializer):
            yield from _walk(field.child, f"{path}[].")
        elif isinstance(_annotation(field), serializers.BaseSerializer):
            yield from _walk(_annotation(field), f"{path}[]." if getattr(_annotation(field), "many", False) else ".")
        elif _is_api_reference(name, field):
            yield path


@cache
def api_body_references() -> frozenset[str]:
    """``"POST /api/v1/campaigns/ audience.include"`` for every reference field of every request body."""
    generator = SchemaGenerator()
    found: set[str] = set()
    for path, _regex, method, callback in EndpointEnumerator().get_api_endpoints():
        if method not in WRITE_METHODS:
            continue
        view = generator.create_view(callback, method)
        request = view.schema.get_request_serializer()
        if request is None or isinstance(request, dict) or method == "DELETE":
            continue
        found |= {f"{method} {path} {field}" for field in _walk(request, "")}
    return frozenset(found)


@cache
def api_query_references() -> frozenset[str]:
    """``"GET /api/v1/segments/overlap/ ids"`` for every query parameter that names objects."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    found: set[str] = set()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                name = parameter["name"]
                integer = parameter.get("schema", {}).get("type") in ("integer", "array")
                described = HELP_MENTIONS_IDS.search(parameter.get("description", ""))
                if parameter["in"] == "query" and (described or (integer and _names_an_object(name))):
                    found.add(f"{method.upper()} {path} {name}")
    return frozenset(found)


# --- web forms -------------------------------------------------------------------------------
def project_modules() -> tuple[str, ...]:
    base = Path(settings.BASE_DIR).resolve()
    return tuple(
        config.name
        for config in apps.get_app_configs()
        if Path(config.path).resolve().is_relative_to(base) and "site-packages" not in config.path
    )


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def project_forms() -> list[type[forms.BaseForm]]:
    roots = project_modules()
    return sorted(
        {
            c
            for c in _subclasses(forms.BaseForm)
            # The admin's forms are walked by test_admin.py, the tests' own forms are not the app's.
            if c.__module__.split(".")[0] in roots and c.__module__.rsplit(".", 1)[-1] != "admin"
        },
        key=lambda c: f"{c.__module__}.{c.__qualname__}",
    )


DYNAMIC_FIELD = re.compile(r"self\.fields\[\s*(?:f?[\"'])(?P<name>[\w{}]+)[\"']\s*\]\s*=\s*forms\.(?P<kind>\w+)")


def _form_fields(form_class: type[forms.BaseForm]) -> Iterator[tuple[str, Any]]:
    yield from form_class.base_fields.items()  # type: ignore[attr-defined]
    # Fields a form adds in __init__ (e.g. a hidden variant_id), read from its source.
    try:
        source = inspect.getsource(form_class)
    except (OSError, TypeError):
        return
    for match in DYNAMIC_FIELD.finditer(source):
        yield match["name"], getattr(forms, match["kind"], forms.Field)


def _is_form_reference(name: str, field: Any) -> bool:
    kind = field if isinstance(field, type) else type(field)
    if issubclass(kind, forms.ModelChoiceField):  # ModelMultipleChoiceField too
        return True
    if issubclass(kind, forms.IntegerField) and _names_an_object(name):
        return True
    if isinstance(field, forms.TypedChoiceField) and field.coerce is int and _names_an_object(name):
        return True  # a choice of the tenant's objects by id, e.g. an experiment's control variant
    return not isinstance(field, type) and bool(HELP_MENTIONS_IDS.search(str(field.help_text or "")))


@cache
def form_references() -> frozenset[str]:
    """``"campaigns.forms.AudienceForm.include"`` for every reference field of every project form."""
    return frozenset(
        f"{form_class.__module__}.{form_class.__qualname__}.{name}"
        for form_class in project_forms()
        for name, field in _form_fields(form_class)
        if _is_form_reference(name, field)
    )


# --- parameters read straight from the request --------------------------------------------------
RAW_PARAMETER = re.compile(
    r"request\.(?P<where>POST|GET|data|query_params)(?:\.get\(|\.getlist\(|\[)\s*[\"'](?P<name>\w+)[\"']"
)


@cache
def raw_parameter_references() -> frozenset[str]:
    """``"campaigns.views POST variant_id"``: ids a view reads from the request without a form or serializer."""
    found: set[str] = set()
    for root in project_modules():
        base = Path(apps.get_app_config(root.rsplit(".", 1)[-1]).path)
        for path in sorted(base.rglob("*.py")):
            if "migrations" in path.parts or "tests" in path.parts:
                continue
            module = ".".join((root, *path.relative_to(base).with_suffix("").parts))
            for match in RAW_PARAMETER.finditer(path.read_text()):
                if _names_an_object(match["name"]):
                    where = {"data": "POST", "query_params": "GET"}.get(match["where"], match["where"])
                    found.add(f"{module} {where} {match['name']}")
    return frozenset(found)


def discovered_references() -> frozenset[str]:
    return api_body_references() | api_query_references() | form_references() | raw_parameter_references()
