"""The two file formats: Google Customer Match and Meta Custom Audiences customer lists.

Both start from the project's own normalisation (``contacts.normalize``: trimmed, lower-cased and
validated emails; phones in E.164) and add each platform's rules before SHA-256 (lower-case hex).
docs/audiences.md lists the specifications followed, with their links; a value that normalises to
nothing is left empty, never hashed (the hash of "" would match nobody and only add noise).

- Google (customer data file, hashed): headers ``Email, Phone, First Name, Last Name, Country, Zip``.
  Email: lower-cased, trimmed; for gmail.com and googlemail.com also without dots in the local part
  and without a ``+suffix``. Phone: E.164 with the ``+``. Names: lower-case, trimmed, inner spaces
  collapsed. Those four hashed; Country (ISO 3166-1 alpha-2) and Zip are *not* hashed.
- Meta (customer list, hashed): headers ``email, phone, fn, ln, ct, st, zip, country``, every value
  hashed. Email: lower-cased, trimmed. Phone: digits only with the country code, no ``+``. Names and
  city: lower-case letters only (no punctuation, digits or spaces; accented letters kept, UTF-8). State:
  the 2-letter code for the US, else letters only. Zip: lower-case without spaces; US the first 5
  digits, UK the area/district/sector (outward code and the inward code's digit). Country: 2-letter,
  lower-case.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from django.core.exceptions import ValidationError

from audiences.models import AudienceFormat
from contacts.normalize import normalise_email, normalise_phone

GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
# What contacts.normalize.normalise_phone writes: a stored phone in this form needs no second parse
# (phonenumbers takes ~20 µs a number, most of a large export's time).
E164 = re.compile(r"\+[1-9]\d{1,14}")
ZIP_CHARACTERS = re.compile(r"[^0-9A-Za-z \-]")

US_STATES = {
    "alabama": "al", "alaska": "ak", "arizona": "az", "arkansas": "ar", "california": "ca", "colorado": "co",
    "connecticut": "ct", "delaware": "de", "districtofcolumbia": "dc", "florida": "fl", "georgia": "ga",
    "hawaii": "hi", "idaho": "id", "illinois": "il", "indiana": "in", "iowa": "ia", "kansas": "ks",
    "kentucky": "ky", "louisiana": "la", "maine": "me", "maryland": "md", "massachusetts": "ma",
    "michigan": "mi", "minnesota": "mn", "mississippi": "ms", "missouri": "mo", "montana": "mt",
    "nebraska": "ne", "nevada": "nv", "newhampshire": "nh", "newjersey": "nj", "newmexico": "nm",
    "newyork": "ny", "northcarolina": "nc", "northdakota": "nd", "ohio": "oh", "oklahoma": "ok",
    "oregon": "or", "pennsylvania": "pa", "rhodeisland": "ri", "southcarolina": "sc", "southdakota": "sd",
    "tennessee": "tn", "texas": "tx", "utah": "ut", "vermont": "vt", "virginia": "va", "washington": "wa",
    "westvirginia": "wv", "wisconsin": "wi", "wyoming": "wy", "puertorico": "pr", "guam": "gu",
    "americansamoa": "as", "virginislands": "vi", "northernmarianaislands": "mp",
}  # fmt: skip
US_STATE_CODES = frozenset(US_STATES.values())


def sha256_hex(value: str) -> str:
    """SHA-256 of the UTF-8 text as lower-case hex; empty stays empty."""
    return hashlib.sha256(value.encode()).hexdigest() if value else ""


# Names and places repeat across a list (first names, cities, zips, countries): normalised and hashed once
# each per process. Identifiers (emails, phones) are unique, so they are not cached.
@functools.lru_cache(maxsize=65_536)
def _google_name_hash(value: str) -> str:
    return sha256_hex(google_name(value))


@functools.lru_cache(maxsize=65_536)
def _letters_hash(value: str) -> str:
    return sha256_hex(letters_only(value))


@functools.lru_cache(maxsize=65_536)
def _meta_place(city: str, region: str, postal_code: str, country: str) -> tuple[str, str, str, str]:
    return (
        _letters_hash(city),
        sha256_hex(meta_state(region, country)),
        sha256_hex(meta_zip(postal_code, country)),
        sha256_hex(country.lower()),
    )


# --- identifiers: the project's normalisation first -------------------------------------------------
def contact_email(value: str) -> str:
    """The stored email as ``normalise_email`` wrote it (trimmed, lower-cased, valid), or "" when it is not one.

    A stored value already in that form (lower-case, no whitespace, one ``@`` between two parts) was
    validated on its way in and is taken as it is: re-validating costs ~60 µs an address, most of a large
    export's time. Anything else goes through ``normalise_email`` again.
    """
    value = value or ""
    local, at, domain = value.partition("@")
    if local and at and domain and "@" not in domain and value == value.lower() and value.split() == [value]:
        return value
    try:
        return normalise_email(value)
    except ValidationError:
        return ""


def contact_phone(value: str) -> str:
    """The stored phone in E.164 (``normalise_phone`` for anything not already in that form), or ""."""
    value = (value or "").strip()
    if not value or E164.fullmatch(value):
        return value
    try:
        return normalise_phone(value)
    except ValidationError:
        return ""


def google_email(email: str) -> str:
    """Google's rule on top of ours: gmail.com and googlemail.com ignore dots and a ``+suffix``."""
    local, at, domain = email.rpartition("@")
    if at and domain in GMAIL_DOMAINS:
        local = local.split("+", 1)[0].replace(".", "")
        return f"{local}@{domain}" if local else ""
    return email


# --- names and places ---------------------------------------------------------------------------------
def google_name(value: str) -> str:
    """Lower-case, trimmed, inner whitespace collapsed to one space."""
    return " ".join((value or "").split()).lower()


def letters_only(value: str) -> str:
    """Lower-case letters only (NFC, so accented letters stay one letter): Meta's fn, ln and ct."""
    text = unicodedata.normalize("NFC", (value or "").lower())
    return "".join(ch for ch in text if ch.isalpha())


def meta_state(region: str, country: str) -> str:
    """The US 2-letter state code (from a code or a name); elsewhere the region as letters only."""
    letters = letters_only(region)
    if country.upper() == "US":
        if letters in US_STATE_CODES:
            return letters
        return US_STATES.get(letters, "")
    return letters


def _zip_clean(value: str) -> str:
    return " ".join(ZIP_CHARACTERS.sub("", value or "").split()).strip(" -")


def google_zip(postal_code: str, country: str) -> str:
    """US: 5 digits, or ZIP+4 as ``12345-6789``; elsewhere the code as written (no odd characters)."""
    cleaned = _zip_clean(postal_code)
    if country.upper() == "US":
        digits = re.sub(r"\D", "", cleaned)
        if len(digits) == 9:
            return f"{digits[:5]}-{digits[5:]}"
        return digits[:5] if len(digits) >= 5 else ""
    return cleaned


_google_zip = functools.lru_cache(maxsize=65_536)(google_zip)


def meta_zip(postal_code: str, country: str) -> str:
    """Lower-case without spaces; US the first 5 digits; UK the area, district and sector."""
    compact = _zip_clean(postal_code).replace(" ", "").lower()
    if country.upper() == "US":
        digits = re.sub(r"\D", "", compact)
        return digits[:5] if len(digits) >= 5 else ""
    if country.upper() == "GB" and len(compact) >= 5:
        return compact[:-2]  # the inward code is a digit and two letters: keep the digit (the sector)
    return compact


# --- rows ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Identity:
    """What one exported contact is matched by: only identifiers with consent that are not suppressed."""

    email: str  # normalised (contact_email), or ""
    phone: str  # E.164, or ""
    first_name: str
    last_name: str
    country: str  # ISO 3166-1 alpha-2, upper-case, or ""
    region: str
    city: str
    postal_code: str


def google_row(who: Identity) -> list[str]:
    return [
        sha256_hex(google_email(who.email)) if who.email else "",
        sha256_hex(who.phone),
        _google_name_hash(who.first_name),
        _google_name_hash(who.last_name),
        who.country.upper(),
        _google_zip(who.postal_code, who.country),
    ]


def meta_row(who: Identity) -> list[str]:
    return [
        sha256_hex(who.email),
        sha256_hex(who.phone.lstrip("+")),
        _letters_hash(who.first_name),
        _letters_hash(who.last_name),
        *_meta_place(who.city, who.region, who.postal_code, who.country),
    ]


@dataclass(frozen=True)
class FileFormat:
    key: str
    label: str
    headers: tuple[str, ...]
    row: Callable[[Identity], list[str]]


FORMATS: dict[str, FileFormat] = {
    AudienceFormat.GOOGLE: FileFormat(
        AudienceFormat.GOOGLE,
        AudienceFormat.GOOGLE.label,
        ("Email", "Phone", "First Name", "Last Name", "Country", "Zip"),
        google_row,
    ),
    AudienceFormat.META: FileFormat(
        AudienceFormat.META,
        AudienceFormat.META.label,
        ("email", "phone", "fn", "ln", "ct", "st", "zip", "country"),
        meta_row,
    ),
}
