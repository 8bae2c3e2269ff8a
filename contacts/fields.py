"""The contact fields integrators and importers may write, with their types and cleaning.

One registry for the API, the CSV importer and (later) the segment builder.
"""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django_countries import countries

from contacts.models import AttributeDefinition
from contacts.normalize import normalise_email, normalise_phone
from tenants.models import Tenant

MAX_TAGS = 100
MAX_TAG_LENGTH = 100


@dataclass(frozen=True)
class ContactField:
    name: str
    label: str
    group: str
    type: str  # text, email, phone, date, country, time_zone, tags, tokens
    max_length: int = 200


def _text(value: Any, field: ContactField) -> str:
    if value is None:
        return ""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValidationError("Expected text.", code="invalid")
    text = str(value).strip()
    if len(text) > field.max_length:
        raise ValidationError(f"At most {field.max_length} characters.", code="max_length")
    if any(ch in text for ch in "\x00\r\n"):
        raise ValidationError("Line breaks and NUL characters are not allowed.", code="invalid")
    return text


def parse_date(value: Any) -> dt.date | None:
    if value in (None, ""):
        return None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        raise ValidationError(f"{value!r} is not a date (YYYY-MM-DD).", code="invalid_date") from None


def _date(value: Any, field: ContactField) -> dt.date | None:
    date = parse_date(value)
    if date is not None and not (dt.date(1900, 1, 1) <= date <= dt.date.today()):
        raise ValidationError("The date must be between 1900 and today.", code="invalid_date")
    return date


@functools.cache
def _time_zone_names() -> frozenset[str]:
    # zoneinfo.available_timezones() walks the tz database on disk at every call (~18 ms).
    return frozenset(zoneinfo.available_timezones())


@functools.cache
def _country_codes() -> frozenset[str]:
    return frozenset(code for code, _ in countries)


def _country(value: Any, field: ContactField) -> str:
    code = _text(value, field).upper()
    if not code:
        return ""
    if code not in _country_codes():
        by_name = countries.by_name(str(value).strip())
        if not by_name:
            raise ValidationError(f"{value!r} is not an ISO 3166 country code.", code="invalid_country")
        code = by_name
    return code


def _time_zone(value: Any, field: ContactField) -> str:
    name = _text(value, field)
    if name and name not in _time_zone_names():
        raise ValidationError(f"{value!r} is not an IANA time zone.", code="invalid_time_zone")
    return name


def tags(value: Any) -> list[str]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        value = [part for part in (p.strip() for p in value.replace(";", ",").split(",")) if part]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValidationError("Expected a list of text tags.", code="invalid")
    cleaned = list(dict.fromkeys(item.strip().lower() for item in value if item.strip()))
    if len(cleaned) > MAX_TAGS or any(len(item) > MAX_TAG_LENGTH for item in cleaned):
        raise ValidationError(f"At most {MAX_TAGS} tags of {MAX_TAG_LENGTH} characters.", code="invalid")
    return cleaned


def _tags(value: Any, field: ContactField) -> list[str]:
    return tags(value)


def _tokens(value: Any, field: ContactField) -> list[str]:
    if value in (None, ""):
        return []
    if not isinstance(value, list) or not all(isinstance(t, str) and 0 < len(t) <= 4096 for t in value):
        raise ValidationError("Expected a list of device tokens.", code="invalid")
    return list(dict.fromkeys(value))[:20]


def _email(value: Any, field: ContactField) -> str:
    return normalise_email(_text(value, field))


def _phone(value: Any, field: ContactField) -> str:
    return normalise_phone(_text(value, field))


CLEANERS: dict[str, Callable[[Any, ContactField], Any]] = {
    "text": _text,
    "email": _email,
    "phone": _phone,
    "date": _date,
    "country": _country,
    "time_zone": _time_zone,
    "tags": _tags,
    "tokens": _tokens,
}

CONTACT_FIELDS: tuple[ContactField, ...] = (
    ContactField("external_id", "External id", "Identity", "text"),
    ContactField("email", "Email", "Identity", "email", 254),
    ContactField("phone", "Phone", "Identity", "phone", 40),
    ContactField("push_tokens", "Push device tokens", "Identity", "tokens"),
    ContactField("first_name", "First name", "Identity", "text", 100),
    ContactField("last_name", "Last name", "Identity", "text", 100),
    ContactField("locale", "Locale", "Identity", "text", 20),
    ContactField("time_zone", "Time zone", "Identity", "time_zone", 64),
    ContactField("birth_date", "Birth date", "Demographic", "date"),
    ContactField("gender", "Gender", "Demographic", "text", 30),
    ContactField("income_band", "Income band", "Demographic", "text", 30),
    ContactField("education", "Education", "Demographic", "text", 60),
    ContactField("job_role", "Job role", "Demographic", "text", 100),
    ContactField("country", "Country", "Geographic", "country", 60),
    ContactField("region", "Region", "Geographic", "text", 100),
    ContactField("city", "City", "Geographic", "text", 100),
    ContactField("postal_code", "Postal code", "Geographic", "text", 20),
    ContactField("company", "Company", "B2B", "text"),
    ContactField("industry", "Industry", "B2B", "text", 100),
    ContactField("company_size", "Company size", "B2B", "text", 30),
    ContactField("buying_stage", "Buying stage", "B2B", "text", 30),
    ContactField("interests", "Interests", "Psychographic", "tags"),
    ContactField("values", "Values", "Psychographic", "tags"),
    ContactField("lifestyle", "Lifestyle", "Psychographic", "tags"),
    ContactField("attitudes", "Attitudes", "Psychographic", "tags"),
)
FIELDS_BY_NAME = {field.name: field for field in CONTACT_FIELDS}
IDENTITY_KEYS = ("external_id", "email")


def clean_contact_fields(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Clean the first-class fields present in ``data``; return (values, errors by field)."""
    cleaned: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for name, value in data.items():
        field = FIELDS_BY_NAME.get(name)
        if field is None:
            continue
        try:
            cleaned[name] = CLEANERS[field.type](value, field)
        except ValidationError as error:
            errors[name] = error.messages
    return cleaned, errors


# --- custom attributes ---------------------------------------------------------------
def _attr_number(value: Any) -> float | int:
    if isinstance(value, bool):
        raise ValidationError("Expected a number.")
    if isinstance(value, int | float):
        return value
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ValidationError(f"{value!r} is not a number.") from None
    return int(number) if number == number.to_integral_value() else float(number)


def _attr_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "y"):
        return True
    if text in ("false", "no", "0", "n"):
        return False
    raise ValidationError(f"{value!r} is not yes/no (true or false).")


def _attr_text(value: Any) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValidationError("Expected text.")
    text = str(value)
    if len(text) > 1000:
        raise ValidationError("At most 1000 characters.")
    return text


ATTRIBUTE_CLEANERS: dict[str, Callable[[Any], Any]] = {
    AttributeDefinition.Type.TEXT: _attr_text,
    AttributeDefinition.Type.NUMBER: _attr_number,
    AttributeDefinition.Type.BOOLEAN: _attr_boolean,
    AttributeDefinition.Type.DATE: lambda v: d.isoformat() if (d := parse_date(v)) else None,
    AttributeDefinition.Type.LIST: tags,
}


def infer_attribute_type(value: Any) -> str:
    if isinstance(value, bool):
        return AttributeDefinition.Type.BOOLEAN
    if isinstance(value, int | float):
        return AttributeDefinition.Type.NUMBER
    if isinstance(value, list):
        return AttributeDefinition.Type.LIST
    try:
        dt.date.fromisoformat(str(value))
        return AttributeDefinition.Type.DATE
    except ValueError:
        return AttributeDefinition.Type.TEXT


class AttributeSchema:
    """A tenant's attribute definitions, loaded once per request or batch."""

    def __init__(self, tenant: Tenant) -> None:
        self.tenant = tenant
        self.types = dict(AttributeDefinition.objects.filter(tenant=tenant).values_list("key", "type"))

    def clean(self, attributes: Any) -> tuple[dict[str, Any], list[str]]:
        """Return (cleaned attributes, error messages). Unknown keys: rejected or auto-defined."""
        if attributes in (None, ""):
            return {}, []
        if not isinstance(attributes, dict):
            return {}, ["Expected an object of attribute keys and values."]
        cleaned: dict[str, Any] = {}
        errors: list[str] = []
        for key, value in attributes.items():
            kind = self.types.get(key)
            if kind is None:
                if not self.tenant.auto_define_attributes:
                    errors.append(f"{key}: unknown attribute; define it first (Settings) or turn on auto-define.")
                    continue
                if not str(key).replace("_", "").isalnum() or len(str(key)) > 64:
                    errors.append(f"{key}: keys use letters, digits and underscores (64 at most).")
                    continue
                kind = infer_attribute_type(value)
                AttributeDefinition.objects.get_or_create(
                    tenant=self.tenant, key=key, defaults={"label": key.replace("_", " ").capitalize(), "type": kind}
                )
                self.types[key] = kind
            if value is None:
                cleaned[key] = None
                continue
            try:
                cleaned[key] = ATTRIBUTE_CLEANERS[kind](value)
            except ValidationError as error:
                errors.append(f"{key}: {' '.join(error.messages)} (defined as {kind})")
        return cleaned, errors
