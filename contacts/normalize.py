"""Normalising identities: email, phone (E.164) and the suppression hash."""

from __future__ import annotations

import hashlib

import phonenumbers
from django.core.exceptions import ValidationError
from django.core.validators import validate_email


def normalise_email(value: str) -> str:
    """Return the trimmed, lower-cased address, or raise ValidationError."""
    email = (value or "").strip().lower()
    if not email:
        return ""
    try:
        validate_email(email)
    except ValidationError:
        raise ValidationError(f"{value!r} is not a valid email address.", code="invalid_email") from None
    return email


def normalise_phone(value: str, default_region: str | None = None) -> str:
    """Return the number in E.164 (``+4915112345678``), or raise ValidationError."""
    raw = (value or "").strip()
    if not raw:
        return ""
    try:
        number = phonenumbers.parse(raw, default_region or None)
    except phonenumbers.NumberParseException:
        raise ValidationError(
            f"{value!r} is not a phone number; use the international form, e.g. +4915112345678.",
            code="invalid_phone",
        ) from None
    if not phonenumbers.is_valid_number(number):
        raise ValidationError(f"{value!r} is not a valid phone number.", code="invalid_phone")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def address_hash(channel: str, address: str) -> str:
    """Hash a normalised address so a suppression outlives the contact's personal data."""
    return hashlib.sha256(f"{channel}:{address}".encode()).hexdigest()
