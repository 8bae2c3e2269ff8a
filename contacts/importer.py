"""CSV import of contacts: read the file, map its columns, preview, and run it as a Celery job.

The flow, one service per step (views only parse and render):

1. ``import_upload`` checks the size, detects the encoding and the delimiter, reads the header
   row and counts the rows in one streaming pass, then stores the file (``ImportJob.file``).
2. ``import_mapping_initial`` proposes a mapping: the tenant's most recent import with the same
   headers, else guesses from the header names; ``import_set_mapping`` validates and saves it,
   with the consent a consent column grants (channel, purpose, wording shown to people).
3. ``import_preview`` shows the first rows exactly as they will be imported: the real upsert
   runs inside a savepoint that is rolled back.
4. ``import_start`` queues the job; the task ``run_import(tenant_id, import_id)`` claims it with
   a conditional update (queued → running) and streams the file through
   ``contacts_bulk_upsert`` in chunks. Each chunk — its contacts, its consent records and the
   job's counters — is one transaction, so progress is visible and a failure never leaves a
   half-applied chunk. Rejected rows go to a CSV report with their reasons.

The claim's ``started_at`` doubles as the run's token: every chunk commits only while the job
is still running under that token, so a restarted job's old runner (if it is still alive)
stops at its next chunk instead of racing the new one. Upserts are keyed by external id or
email, and consent is only recorded where the contact has no decision yet, so running a job
again gives the same result.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import datetime as dt
import io
import itertools
import logging
import re
import tempfile
import uuid
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePath
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from contacts.consent import ConsentEvidence, channel_address, consents_grant_new
from contacts.export import escape_formula
from contacts.fields import CONTACT_FIELDS, FIELDS_BY_NAME, IDENTITY_KEYS, AttributeSchema, clean_contact_fields
from contacts.models import (
    Channel,
    ConsentSource,
    ConsentState,
    Contact,
    ImportJob,
    LegalBasis,
    Suppression,
)
from contacts.normalize import address_hash
from contacts.services import RowResult, contacts_bulk_upsert
from segmentor.celery import tenant_task
from tenants.audit import Actor, audit
from tenants.models import AuditLog, Membership, Tenant
from tenants.roles import Permission

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 200 * 1024 * 1024
CHUNK_ROWS = 1000
PREVIEW_ROWS = 10
SAMPLE_BYTES = 64 * 1024
DECODE_CHUNK_BYTES = 1024 * 1024
MAX_COLUMNS = 300
DELIMITERS = ",;\t|"
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
# A running job may be restarted from the UI once it has run this long (a worker may have died).
RESTART_RUNNING_AFTER = dt.timedelta(minutes=15)

SKIP = "skip"
CONSENT = "consent"
ATTRIBUTE_PREFIX = "attributes."
AUDIT_ACTION = "contacts.imported"
REPORT_ENCODING = "utf-8-sig"

CONSENT_YES = frozenset({"yes", "y", "true", "1", "x", "granted", "opt-in", "optin", "opted in", "subscribed", "on"})
CONSENT_NO = frozenset({"no", "n", "false", "0", "-", "opt-out", "optout", "opted out", "unsubscribed", "off"})

# Files people upload by mistake, recognised by their first bytes.
SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "an Excel workbook or another ZIP archive"),
    (b"\xd0\xcf\x11\xe0", "an old Excel (.xls) or Office document"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
)
SAVE_AS_CSV = "Save it as CSV (in Excel: File → Save as → “CSV UTF-8”) and upload that file."
ENCODING_NOTES = {
    "cp1252": (
        "The file is not UTF-8, so it was read as Windows-1252 (Western European). "
        "If accented letters look wrong in the preview, save the file as “CSV UTF-8” and upload it again."
    ),
    "latin-1": (
        "The file is not UTF-8, so it was read as Latin-1 (ISO-8859-1). "
        "If accented letters look wrong in the preview, save the file as “CSV UTF-8” and upload it again."
    ),
}
EMAIL_LIKE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def max_upload_bytes() -> int:
    return int(getattr(settings, "CONTACT_IMPORT_MAX_BYTES", DEFAULT_MAX_BYTES))


def describe_size(size: int) -> str:
    """Return a size for people: ``200 MB``, ``1.5 KB``."""
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "bytes" or value >= 10 else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def too_large_message(size: int, limit: int, *, approximate: bool = False) -> str:
    about = "about " if approximate else ""
    return (
        f"The file is too large: {about}{describe_size(size)}, and imports take at most {describe_size(limit)}. "
        "Split it into smaller files and import them one after another."
    )


# --- reading the file ---------------------------------------------------------------------
@dataclass(frozen=True)
class CsvLayout:
    """What the upload pass learnt about a file."""

    encoding: str
    delimiter: str
    headers: tuple[str, ...]
    total_rows: int
    ragged_rows: int

    @property
    def notes(self) -> list[str]:
        notes = [ENCODING_NOTES[self.encoding]] if self.encoding in ENCODING_NOTES else []
        if self.ragged_rows:
            notes.append(
                f"{self.ragged_rows:,} row(s) have a different number of fields than the header row; "
                "they will be rejected and listed in the report."
            )
        return notes


def _raw(stream: Any) -> IO[bytes]:
    """Unwrap Django's File objects down to the real binary file."""
    while isinstance(stream, File):
        stream = stream.file
    return stream


def _looks_binary(head: bytes) -> bool:
    if b"\x00" in head:
        return True
    controls = sum(1 for byte in head if byte < 32 and byte not in (9, 10, 11, 12, 13))
    return controls * 100 > len(head)


def _first_undecodable_byte(stream: IO[bytes], encoding: str) -> int | None:
    """Decode the whole file in chunks (constant memory); return the offset of the first bad byte."""
    stream.seek(0)
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = 0
    while True:
        chunk = stream.read(DECODE_CHUNK_BYTES)
        try:
            decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as error:
            return offset + max(error.start, 0)
        if not chunk:
            return None
        offset += len(chunk)


def detect_encoding(stream: IO[bytes]) -> str:
    """Return the encoding of a CSV file, or raise ValidationError for empty or binary files.

    UTF-8 (with or without a byte-order mark) and UTF-16 with one are read as they are;
    anything else that is text falls back to Windows-1252, then Latin-1.
    """
    stream.seek(0)
    head = stream.read(SAMPLE_BYTES)
    if not head.strip():
        raise ValidationError("The file is empty.", code="empty")
    for signature, what in SIGNATURES:
        if head.startswith(signature):
            raise ValidationError(f"This is {what}, not a CSV file. {SAVE_AS_CSV}", code="binary")
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        candidates = ["utf-16"]
    elif head.startswith(codecs.BOM_UTF8):
        candidates = ["utf-8-sig"]
    elif _looks_binary(head):
        raise ValidationError(f"This file is not text (it looks like a binary file). {SAVE_AS_CSV}", code="binary")
    else:
        candidates = ["utf-8", "cp1252", "latin-1"]
    for encoding in candidates:
        bad_byte = _first_undecodable_byte(stream, encoding)
        if bad_byte is None:
            stream.seek(0)
            return encoding
    name = "UTF-16" if candidates[0] == "utf-16" else "UTF-8"
    raise ValidationError(
        f"The file starts with a {name} marker but is not valid {name} "
        f"(at byte {bad_byte:,}). Save it again as “CSV UTF-8” and upload it.",
        code="encoding",
    )


def _text(stream: IO[bytes], encoding: str) -> io.TextIOWrapper:
    stream.seek(0)
    return io.TextIOWrapper(stream, encoding=encoding, newline="")


def detect_delimiter(stream: IO[bytes], encoding: str) -> str:
    """Guess the delimiter (comma, semicolon, tab or pipe) with csv.Sniffer over a sample."""
    stream.seek(0)
    raw = stream.read(SAMPLE_BYTES)
    stream.seek(0)
    sample = codecs.getincrementaldecoder(encoding)(errors="replace").decode(raw, final=False)
    if len(raw) == SAMPLE_BYTES and "\n" in sample:
        sample = sample[: sample.rindex("\n") + 1]  # whole lines only
    first_line = sample.lstrip("\ufeff").splitlines()[0] if sample.strip() else ""

    def width(delimiter: str) -> int:
        return len(next(csv.reader([first_line], delimiter=delimiter), []))

    try:
        sniffed = csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        sniffed = ""
    # The Sniffer can be fooled by commas inside values; the header row must agree.
    if sniffed and width(sniffed) > 1:
        return sniffed
    best = max(DELIMITERS, key=width)
    return best if width(best) > 1 else ","


def _csv_error(error: csv.Error, line: int) -> ValidationError:
    text = str(error)
    if "unexpected end of data" in text or "newline inside string" in text:
        reason = 'a quoted field is never closed (a missing closing quote mark “"”)'
    elif "expected after" in text:
        reason = (
            "a quoted field has text after its closing quote mark; "
            'a quote mark inside a quoted field must be doubled (“""”)'
        )
    elif "field larger than field limit" in text:
        reason = f"a field is longer than {csv.field_size_limit():,} characters (is a quote mark missing?)"
    else:
        reason = text
    return ValidationError(f"The file is not valid CSV at line {line:,}: {reason}.", code="malformed")


@dataclass(frozen=True)
class Record:
    """One data row of the file: the line it starts on and its cells."""

    line: int
    cells: list[str]


def iter_records(text: Iterable[str], delimiter: str) -> Iterator[Record]:
    """Yield the file's non-blank rows, header included; raise ValidationError on broken CSV."""
    reader = csv.reader(text, delimiter=delimiter, strict=True)
    start = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise _csv_error(error, start) from None
        line, start = start, reader.line_num + 1
        if any(cell.strip() for cell in cells):
            yield Record(line, cells)


def shape_problem(cells: list[str], width: int) -> str:
    """Why a row cannot be read against a header of ``width`` columns ('' when it can).

    Extra cells are tolerated when empty (spreadsheets often add trailing separators).
    """
    if len(cells) == width or (len(cells) > width and not any(c.strip() for c in cells[width:])):
        return ""
    return f"This row has {len(cells)} field(s); the header row has {width}."


def clean_headers(cells: list[str]) -> tuple[str, ...]:
    """Validate the header row and return its column names (trimmed)."""
    headers = tuple(cell.strip().lstrip("\ufeff").strip() for cell in cells)
    if len(headers) > MAX_COLUMNS:
        raise ValidationError(f"The file has {len(headers)} columns; at most {MAX_COLUMNS} are supported.")
    empty = [str(n) for n, name in enumerate(headers, 1) if not name]
    if empty:
        raise ValidationError(
            f"Column {', '.join(empty)} of the header row has no name. Give every column a name "
            "(or delete empty columns) and upload the file again.",
            code="header",
        )
    seen: dict[str, int] = {}
    for n, name in enumerate(headers, 1):
        key = name.casefold()
        if key in seen:
            raise ValidationError(
                f"Column names must be unique: “{name}” is both column {seen[key]} and column {n}.", code="header"
            )
        seen[key] = n
    data_like = next((h for h in headers if EMAIL_LIKE.match(h)), None) or (
        headers[0] if all(h.replace(".", "").replace("-", "").isdigit() for h in headers) else None
    )
    if data_like is not None:
        raise ValidationError(
            f"The first row looks like data (“{data_like}”), not column names. "
            "Add a header row that names the columns, e.g. “email,first_name,last_name”.",
            code="header",
        )
    return headers


def analyse_csv(stream: IO[bytes]) -> CsvLayout:
    """Read the whole file once (streaming): encoding, delimiter, header, row counts."""
    encoding = detect_encoding(stream)
    delimiter = detect_delimiter(stream, encoding)
    text = _text(stream, encoding)
    try:
        records = iter_records(text, delimiter)
        header = next(records, None)
        if header is None:
            raise ValidationError("The file is empty.", code="empty")
        headers = clean_headers(header.cells)
        total = ragged = 0
        for record in records:
            total += 1
            ragged += bool(shape_problem(record.cells, len(headers)))
    finally:
        text.detach()
    if total == 0:
        raise ValidationError("The file has a header row but no data rows.", code="no_rows")
    return CsvLayout(encoding, delimiter, headers, total, ragged)


def _open_records(job: ImportJob) -> Generator[Record, None, None]:
    """Stream the stored file's rows, header first."""
    with job.file.open("rb") as stored:
        text = _text(_raw(stored), job.encoding)
        try:
            yield from iter_records(text, job.delimiter)
        finally:
            text.detach()


# --- mapping ------------------------------------------------------------------------------
def _key(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "", text.casefold())


SYNONYMS: dict[str, tuple[str, ...]] = {
    "external_id": ("id", "customerid", "userid", "contactid", "clientid", "memberid", "customernumber", "crmid"),
    "email": ("emailaddress", "mail", "emailadresse", "courriel", "correo"),
    "phone": ("phonenumber", "mobile", "mobilephone", "mobilenumber", "cell", "cellphone", "tel", "telephone"),
    "first_name": ("firstname", "first", "givenname", "forename", "vorname", "prenom"),
    "last_name": ("lastname", "last", "surname", "familyname", "nachname", "nom"),
    "locale": ("language", "lang"),
    "time_zone": ("timezone", "tz"),
    "birth_date": ("dateofbirth", "dob", "birthday", "born"),
    "gender": ("sex",),
    "income_band": ("income",),
    "job_role": ("jobtitle", "title", "position", "role"),
    "country": ("countrycode", "land", "pays"),
    "region": ("state", "province", "county"),
    "city": ("town", "ort", "ville"),
    "postal_code": ("postcode", "zip", "zipcode", "plz"),
    "company": ("companyname", "organisation", "organization", "employer", "account"),
    "company_size": ("employees", "size"),
    "interests": ("tags",),
}
CONSENT_HEADERS = frozenset(
    {"consent", "optin", "optedin", "subscribed", "newsletter", "marketingconsent", "emailoptin", "acceptsmarketing",
     "emailconsent", "gdprconsent", "marketingoptin", "subscribe"}
)  # fmt: skip


def mapping_targets(schema: AttributeSchema) -> dict[str, str]:
    """Every column target with its label: contact fields, defined attributes, consent, skip."""
    targets = {SKIP: "Don't import", CONSENT: "Consent (yes/no column)"}
    targets.update({f.name: f.label for f in CONTACT_FIELDS})
    targets.update({f"{ATTRIBUTE_PREFIX}{key}": f"{key} (custom {kind})" for key, kind in sorted(schema.types.items())})
    return targets


def mapping_choices(schema: AttributeSchema) -> list[tuple[str, Any]]:
    """The targets grouped for a <select> with <optgroup>s."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for f in CONTACT_FIELDS:
        groups.setdefault(f.group, []).append((f.name, f.label))
    choices: list[tuple[str, Any]] = [(SKIP, "Don't import"), (CONSENT, "Consent (yes/no column)")]
    choices += list(groups.items())
    if schema.types:
        attributes = [(f"{ATTRIBUTE_PREFIX}{key}", key) for key in sorted(schema.types)]
        choices.append(("Custom attributes", attributes))
    return choices


def guess_mapping(headers: Iterable[str], schema: AttributeSchema) -> dict[str, str]:
    """Propose a target for each header from its name; each target is used once at most."""
    lookup: dict[str, str] = {}
    for f in CONTACT_FIELDS:
        for word in (f.name, f.label, *SYNONYMS.get(f.name, ())):
            lookup.setdefault(_key(word), f.name)
    for key in schema.types:
        target = f"{ATTRIBUTE_PREFIX}{key}"
        for word in (key, f"attributes.{key}", f"attribute {key}"):
            lookup.setdefault(_key(word), target)
    for word in CONSENT_HEADERS:
        lookup.setdefault(word, CONSENT)
    mapping: dict[str, str] = {}
    used: set[str] = set()
    for header in headers:
        target = lookup.get(_key(header), SKIP)
        if target != SKIP and target in used:
            target = SKIP
        used.add(target)
        mapping[header] = target
    return mapping


@dataclass(frozen=True)
class MappingProposal:
    mapping: dict[str, str]
    consent_channel: str = ""
    consent_purpose: str = ""
    consent_wording: str = ""
    remembered_from: ImportJob | None = None


def import_mapping_initial(*, job: ImportJob) -> MappingProposal:
    """The mapping to show: the job's own, else the last one used for the same headers, else guesses."""
    schema = AttributeSchema(job.tenant)
    targets = mapping_targets(schema)
    if job.mapping:
        return MappingProposal(job.mapping, job.consent_channel, job.consent_purpose, job.consent_wording)
    previous = (
        ImportJob.objects.filter(tenant_id=job.tenant_id, headers=job.headers)
        .exclude(pk=job.pk)
        .exclude(mapping={})
        .order_by("-created_at", "-pk")
        .first()
    )
    guesses = guess_mapping(job.headers, schema)
    if previous is None:
        return MappingProposal(guesses)
    # A target that no longer exists (a deleted attribute) falls back to the guess.
    mapping = {h: (t if (t := previous.mapping.get(h)) in targets else guesses[h]) for h in job.headers}
    return MappingProposal(
        mapping, previous.consent_channel, previous.consent_purpose, previous.consent_wording, previous
    )


def import_set_mapping(
    *,
    job: ImportJob,
    mapping: dict[str, str],
    consent_channel: str,
    consent_purpose: str,
    consent_wording: str,
    acting: Membership,
) -> ImportJob:
    """Validate and save the column mapping and the consent a consent column grants."""
    acting.require(Permission.EDIT_CONTENT)
    if job.status != ImportJob.Status.UPLOADED:
        raise ValidationError("This import has already started; its mapping can no longer change.")
    targets = mapping_targets(AttributeSchema(job.tenant))
    errors: dict[str, list[str]] = {}
    if set(mapping) != set(job.headers):
        raise ValidationError("Choose a target for every column of the file.")
    by_target: dict[str, list[str]] = {}
    for header in job.headers:
        target = mapping[header]
        if target not in targets:
            errors.setdefault("mapping", []).append(f"“{header}”: {target!r} is not a contact field.")
        elif target != SKIP:
            by_target.setdefault(target, []).append(header)
    for target, headers in by_target.items():
        if len(headers) > 1:
            names = " and ".join(f"“{h}”" for h in headers)
            errors.setdefault("mapping", []).append(f"{targets[target]} is chosen for more than one column: {names}.")
    if not by_target:
        errors.setdefault("mapping", []).append("Choose at least one column to import.")
    elif not any(key in by_target for key in IDENTITY_KEYS):
        errors.setdefault("mapping", []).append(
            "Map a column to External id or Email: they identify each contact, so a second import updates "
            "the same people instead of creating new ones."
        )
    consent_wording = consent_wording.strip()
    if CONSENT in by_target:
        if consent_channel not in Channel.values:
            errors["consent_channel"] = ["Choose the channel the consent column grants."]
        if consent_purpose not in job.tenant.consent_purposes:
            errors["consent_purpose"] = ["Choose the purpose the consent column grants."]
        if not consent_wording:
            errors["consent_wording"] = ["Give the wording people agreed to: it is kept as evidence of their consent."]
    else:
        consent_channel = consent_purpose = consent_wording = ""
    if errors:
        raise ValidationError(errors)
    changed = ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.UPLOADED).update(
        mapping={h: mapping[h] for h in job.headers},
        consent_channel=consent_channel,
        consent_purpose=consent_purpose,
        consent_wording=consent_wording,
    )
    if not changed:
        raise ValidationError("This import has already started; its mapping can no longer change.")
    job.refresh_from_db()
    return job


def _unescape(value: str) -> str:
    """Drop the apostrophe our own exports put before formula-like cells, so exports import back."""
    if len(value) > 1 and value[0] == "'" and value[1] in "=+-@\t\r":
        return value[1:]
    return value


@dataclass(frozen=True)
class ImportPlan:
    """A job's mapping, resolved to column positions, turning cells into upsert rows."""

    headers: tuple[str, ...]
    columns: tuple[tuple[int, str], ...]  # (column index, target), skipped columns left out
    consent_column: int | None

    @classmethod
    def of(cls, job: ImportJob) -> ImportPlan:
        columns = tuple(
            (index, target)
            for index, header in enumerate(job.headers)
            if (target := job.mapping.get(header, SKIP)) not in (SKIP, CONSENT)
        )
        consent = next((i for i, h in enumerate(job.headers) if job.mapping.get(h) == CONSENT), None)
        return cls(tuple(job.headers), columns, consent)

    def header_of(self, target: str) -> str:
        return next((self.headers[i] for i, t in self.columns if t == target), target)

    def row(self, cells: list[str]) -> tuple[dict[str, Any], bool, list[str]]:
        """Return (upsert data, grants consent, errors). Empty cells leave stored values alone."""
        data: dict[str, Any] = {}
        attributes: dict[str, Any] = {}
        for index, target in self.columns:
            value = _unescape(cells[index].strip())
            if not value:
                continue
            if target.startswith(ATTRIBUTE_PREFIX):
                attributes[target.removeprefix(ATTRIBUTE_PREFIX)] = value
            elif FIELDS_BY_NAME[target].type == "tokens":
                data[target] = [token for token in re.split(r"[\s,;]+", value) if token]
            else:
                data[target] = value
        if attributes:
            data["attributes"] = attributes
        if self.consent_column is None:
            return data, False, []
        answer = cells[self.consent_column].strip().casefold()
        if answer in CONSENT_YES:
            return data, True, []
        if answer in CONSENT_NO or not answer:
            return data, False, []
        header = self.headers[self.consent_column]
        return data, False, [f"{header}: {cells[self.consent_column].strip()!r} is not yes or no."]

    def reasons(self, result: RowResult) -> str:
        """Turn a row's field errors into one sentence naming the columns."""
        parts = []
        for name, messages in result.errors.items():
            text = " ".join(messages)
            if name in FIELDS_BY_NAME:
                parts.append(f"{self.header_of(name)}: {text}")
            else:
                parts.append(text)
        return " ".join(parts)


# --- preview ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PreviewRow:
    line: int
    values: list[str]
    status: str  # created, updated, error
    errors: str = ""
    consent: bool = False


@dataclass(frozen=True)
class ImportPreview:
    columns: list[str]  # labels of the mapped targets, in file order
    rows: list[PreviewRow]
    problem: str = ""


class _DryRun(Exception):
    """Raised to roll back the preview's trial upsert."""


def _display(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def import_preview(*, job: ImportJob, limit: int = PREVIEW_ROWS) -> ImportPreview:
    """The first rows as they will be imported, each with its outcome or its errors.

    The real upsert runs inside a savepoint that is rolled back, so "created", "updated"
    and conflicts (an email that belongs to another contact) are exactly what the run does.
    """
    if not job.mapping:
        return ImportPreview([], [], "Map the columns first.")
    plan = ImportPlan.of(job)
    schema = AttributeSchema(job.tenant)
    targets = mapping_targets(schema)
    columns = [f"{targets[t]} ← {plan.headers[i]}" for i, t in plan.columns]
    try:
        records = list(itertools.islice(_open_records(job), limit + 1))[1:]
    except FileNotFoundError:
        return ImportPreview(columns, [], "The uploaded file is no longer available; upload it again.")
    except ValidationError as error:
        return ImportPreview(columns, [], " ".join(error.messages))

    shaped: list[tuple[Record, str, dict[str, Any], bool]] = []
    for record in records:
        problem = shape_problem(record.cells, len(plan.headers))
        data, consent, errors = ({}, False, []) if problem else plan.row(record.cells)
        shaped.append((record, problem or " ".join(errors), data, consent))
    trial = [data for _, problem, data, _ in shaped if not problem]
    outcomes: list[RowResult] = []
    try:
        with transaction.atomic():
            outcomes = contacts_bulk_upsert(tenant=job.tenant, rows=trial)
            raise _DryRun
    except _DryRun:
        pass
    results = iter(outcomes)

    rows = []
    for record, problem, data, consent in shaped:
        if problem:
            rows.append(PreviewRow(record.line, [], "error", problem))
            continue
        result = next(results)
        values, _ = clean_contact_fields(data)
        attributes, _ = schema.clean(data.get("attributes"))
        shown = []
        for _, target in plan.columns:
            if target.startswith(ATTRIBUTE_PREFIX):
                key = target.removeprefix(ATTRIBUTE_PREFIX)
                shown.append(_display(attributes.get(key, (data.get("attributes") or {}).get(key))))
            else:
                shown.append(_display(values.get(target, data.get(target))))
        reasons = plan.reasons(result) if result.status == "error" else ""
        rows.append(PreviewRow(record.line, shown, result.status, reasons, consent))
    return ImportPreview(columns, rows)


def import_sample(*, job: ImportJob, limit: int = 3) -> dict[str, list[str]]:
    """A few example values per column, for the mapping page."""
    samples: dict[str, list[str]] = {h: [] for h in job.headers}
    try:
        records = list(itertools.islice(_open_records(job), limit + 1))[1:]
    except (FileNotFoundError, ValidationError):
        return samples
    for record in records:
        for header, cell in zip(job.headers, record.cells, strict=False):
            if cell.strip():
                samples[header].append(cell.strip()[:60])
    return samples


# --- upload, start, restart -----------------------------------------------------------------
def import_upload(*, tenant: Tenant, upload: UploadedFile, acting: Membership) -> tuple[ImportJob, CsvLayout]:
    """Check and store an uploaded CSV file; raise ValidationError with a clear message."""
    acting.require(Permission.EDIT_CONTENT)
    limit = max_upload_bytes()
    if upload.size is not None and upload.size > limit:
        raise ValidationError(too_large_message(upload.size, limit), code="too_large")
    layout = analyse_csv(_raw(upload))
    _raw(upload).seek(0)
    original_name = PurePath(upload.name or "contacts.csv").name[:255]
    job = ImportJob(
        tenant=tenant,
        original_name=original_name,
        encoding=layout.encoding,
        delimiter=layout.delimiter,
        headers=list(layout.headers),
        total_rows=layout.total_rows,
        created_by=acting.user,
    )
    # The stored name is ours, never the uploader's.
    job.file.save(f"{uuid.uuid4().hex}.csv", upload, save=False)
    job.save()
    logger.info("contacts import uploaded", extra={"tenant_id": tenant.pk, "import_id": job.pk})
    return job, layout


def _enqueue(job: ImportJob) -> None:
    tenant_id, job_id = job.tenant_id, job.pk
    transaction.on_commit(lambda: run_import.delay(tenant_id, job_id))


def import_start(*, job: ImportJob, acting: Membership) -> ImportJob:
    """Queue a mapped import; the task starts after the transaction commits."""
    acting.require(Permission.EDIT_CONTENT)
    if not job.mapping:
        raise ValidationError("Map the columns before starting the import.")
    if not ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.UPLOADED).update(status=ImportJob.Status.QUEUED):
        raise ValidationError("This import has already started.")
    _enqueue(job)
    job.refresh_from_db()
    return job


def can_restart(job: ImportJob, now: dt.datetime | None = None) -> bool:
    """Whether "run again" is offered: finished or failed jobs, and long-running ones (a dead worker)."""
    if job.status in (ImportJob.Status.DONE, ImportJob.Status.FAILED):
        return True
    now = now or timezone.now()
    return (
        job.status == ImportJob.Status.RUNNING
        and job.started_at is not None
        and job.started_at < now - RESTART_RUNNING_AFTER
    )


def import_restart(*, job: ImportJob, acting: Membership) -> ImportJob:
    """Run a finished, failed or stalled import again from the start (upserts make this safe)."""
    acting.require(Permission.EDIT_CONTENT)
    now = timezone.now()
    restartable = Q(status__in=[ImportJob.Status.DONE, ImportJob.Status.FAILED]) | Q(
        status=ImportJob.Status.RUNNING, started_at__lt=now - RESTART_RUNNING_AFTER
    )
    old_report = job.errors_file.name
    changed = (
        ImportJob.objects.filter(restartable, pk=job.pk)
        .update(status=ImportJob.Status.QUEUED, started_at=None, finished_at=None, processed_rows=0,
                created_count=0, updated_count=0, error_count=0, errors_file="", failure_reason="")
    )  # fmt: skip
    if not changed:
        raise ValidationError("This import is still running.")
    if old_report:
        storage = job.errors_file.storage
        transaction.on_commit(lambda: storage.delete(old_report))
    _enqueue(job)
    job.refresh_from_db()
    return job


# --- the run --------------------------------------------------------------------------------
class _ClaimLost(Exception):
    """The job was restarted or changed under this run: stop without committing more."""


@dataclass
class ImportTally:
    processed: int = 0
    created: int = 0
    updated: int = 0
    rejected: int = 0
    consent_recorded: int = 0
    consent_unchanged: int = 0
    consent_suppressed: int = 0

    def as_audit(self) -> dict[str, int]:
        return {
            "rows": self.processed,
            "created": self.created,
            "updated": self.updated,
            "rejected": self.rejected,
            "consent_recorded": self.consent_recorded,
            "consent_unchanged": self.consent_unchanged,
            "consent_suppressed": self.consent_suppressed,
        }


def _actor(job: ImportJob) -> Actor:
    who = job.created_by.email if job.created_by else "system"
    return Actor(label=f"{who} (import #{job.pk})", user=job.created_by)


def _record_consent(job: ImportJob, contact_ids: list[int], tally: ImportTally) -> None:
    """Grant the job's consent to contacts with no decision yet on that channel and purpose.

    A contact who already decided (granted, withdrew or awaits double opt-in) keeps that
    decision, and a suppressed address (unsubscribed, complained, erased) gets no consent
    from an import: re-importing a list never re-subscribes anyone.
    """
    tenant, channel, purpose = job.tenant, job.consent_channel, job.consent_purpose
    ids = list(dict.fromkeys(contact_ids))
    if not ids:
        return
    decided = set(
        ConsentState.objects.filter(tenant=tenant, contact_id__in=ids, channel=channel, purpose=purpose).values_list(
            "contact_id", flat=True
        )
    )
    contacts = Contact.objects.filter(tenant=tenant, pk__in=[i for i in ids if i not in decided]).in_bulk()
    hashes = {
        pk: address_hash(channel, address)
        for pk, contact in contacts.items()
        if (address := channel_address(contact, channel))
    }
    suppressed = set(
        Suppression.objects.filter(tenant=tenant, channel=channel, address_hash__in=hashes.values()).values_list(
            "address_hash", flat=True
        )
    )
    evidence = ConsentEvidence(
        source=ConsentSource.IMPORT, legal_basis=LegalBasis.CONSENT, wording=job.consent_wording,
        wording_version=f"import #{job.pk}",
    )  # fmt: skip
    granted = []
    for pk in ids:
        if pk in decided:
            tally.consent_unchanged += 1
        elif hashes.get(pk) in suppressed:
            tally.consent_suppressed += 1
        else:
            contacts[pk].tenant = tenant
            granted.append(contacts[pk])
    records = consents_grant_new(
        tenant=tenant, contacts=granted, channel=channel, purpose=purpose, evidence=evidence, actor=_actor(job)
    )
    tally.consent_recorded += len(records)
    tally.consent_unchanged += len(granted) - len(records)


def _import_chunk(
    job: ImportJob, plan: ImportPlan, records: list[Record], tally: ImportTally, token: dt.datetime
) -> tuple[ImportTally, list[tuple[Record, str]]]:
    """Apply one chunk in one transaction; return the new tally and the rejected rows."""
    rejected: list[tuple[Record, str]] = []
    rows: list[dict[str, Any]] = []
    accepted: list[tuple[Record, bool]] = []
    for record in records:
        problem = shape_problem(record.cells, len(plan.headers))
        data, consent, errors = ({}, False, []) if problem else plan.row(record.cells)
        if problem or errors:
            rejected.append((record, problem or " ".join(errors)))
        else:
            rows.append(data)
            accepted.append((record, consent))
    new = dataclasses.replace(tally)
    with transaction.atomic():
        results = contacts_bulk_upsert(tenant=job.tenant, rows=rows)
        granted: list[int] = []
        for result, (record, consent) in zip(results, accepted, strict=True):
            if result.status == "error":
                rejected.append((record, plan.reasons(result)))
                continue
            if result.status == "created":
                new.created += 1
            else:
                new.updated += 1
            if consent and result.id is not None:
                granted.append(result.id)
        if plan.consent_column is not None:
            _record_consent(job, granted, new)
        new.processed += len(records)
        new.rejected += len(rejected)
        owned = ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.RUNNING, started_at=token).update(
            processed_rows=new.processed,
            created_count=new.created,
            updated_count=new.updated,
            error_count=new.rejected,
        )
        if not owned:
            raise _ClaimLost
    rejected.sort(key=lambda item: item[0].line)
    return new, rejected


def _chunks(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    while chunk := list(itertools.islice(records, size)):
        yield chunk


def _save_report(job: ImportJob, report: IO[bytes]) -> str:
    report.seek(0)
    field_file = job.errors_file
    name = field_file.field.generate_filename(job, f"import-{job.pk}-rejected-rows.csv")
    return field_file.storage.save(name, File(report))


def import_run(*, job_id: int, chunk_rows: int = CHUNK_ROWS) -> ImportJob | None:
    """Claim a queued import and run it; return None when another run owns it."""
    token = timezone.now()
    claimed = ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.QUEUED).update(
        status=ImportJob.Status.RUNNING, started_at=token, finished_at=None, processed_rows=0, created_count=0,
        updated_count=0, error_count=0, failure_reason="",
    )  # fmt: skip
    if not claimed:
        logger.info("contacts import not queued; nothing to do", extra={"import_id": job_id})
        return None
    job = ImportJob.objects.select_related("tenant", "created_by").get(pk=job_id)
    log = {"tenant_id": job.tenant_id, "import_id": job.pk}
    logger.info("contacts import started", extra=log)
    try:
        tally = _run(job, token, chunk_rows)
    except _ClaimLost:
        logger.warning("contacts import restarted elsewhere; this run stops", extra=log)
        return None
    except Exception as error:
        logger.exception("contacts import failed", extra=log)
        if isinstance(error, ValidationError):
            reason = " ".join(error.messages)
        else:
            reason = f"an unexpected error ({type(error).__name__}); the details are in the worker's log"
        job.refresh_from_db(fields=["processed_rows", "total_rows"])
        ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.RUNNING, started_at=token).update(
            status=ImportJob.Status.FAILED,
            finished_at=timezone.now(),
            failure_reason=(
                f"The import stopped after {job.processed_rows:,} of {job.total_rows:,} rows: {reason}. "
                "Those rows were imported or rejected; the rest were not read. Run it again: rows "
                "already imported are matched by external id or email, not duplicated."
            ),
        )
        job.refresh_from_db()
        return job
    logger.info("contacts import done", extra={**log, "counts": tally.as_audit()})
    job.refresh_from_db()
    return job


def _run(job: ImportJob, token: dt.datetime, chunk_rows: int) -> ImportTally:
    plan = ImportPlan.of(job)
    tally = ImportTally()
    # The report is written in UTF-8 with a byte-order mark (so Excel shows accents), whatever the locale.
    with tempfile.TemporaryFile() as raw:
        report = io.TextIOWrapper(raw, encoding=REPORT_ENCODING, newline="")
        writer = csv.writer(report)
        writer.writerow(rejected_header(job))
        records = _open_records(job)
        try:
            next(records, None)  # the header row
            for chunk in _chunks(records, chunk_rows):
                tally, rejected = _import_chunk(job, plan, chunk, tally, token)
                for record, reason in rejected:
                    writer.writerow([record.line, escape_formula(reason), *map(escape_formula, record.cells)])
        finally:
            records.close()
        report.flush()
        report.detach()
        report_name = _save_report(job, raw) if tally.rejected else ""
    with transaction.atomic():
        finished = ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.RUNNING, started_at=token).update(
            status=ImportJob.Status.DONE,
            finished_at=timezone.now(),
            total_rows=tally.processed,
            errors_file=report_name,
        )
        if not finished:
            if report_name:
                job.errors_file.storage.delete(report_name)
            raise _ClaimLost
        audit(tenant=job.tenant, actor=_actor(job), action=AUDIT_ACTION, obj=job, data=tally.as_audit())
    return tally


@tenant_task()
def run_import(tenant_id: int, import_id: int) -> None:
    """Run a queued contacts import (a doubled or late delivery finds nothing to claim)."""
    import_run(job_id=import_id)


# --- reading for the pages ----------------------------------------------------------------
def imports_of(tenant: Tenant, limit: int = 50) -> list[ImportJob]:
    return list(ImportJob.objects.filter(tenant=tenant).select_related("created_by")[:limit])


def import_outcome(job: ImportJob) -> dict[str, int]:
    """The counts recorded in the audit log when the run finished (consent included)."""
    entry = (
        AuditLog.objects.filter(tenant_id=job.tenant_id, action=AUDIT_ACTION, object_type="importjob")
        .filter(object_id=str(job.pk))
        .order_by("-created_at", "-pk")
        .first()
    )
    return dict(entry.data) if entry is not None else {}


def rejected_header(job: ImportJob) -> list[str]:
    return ["line", "reason", *(escape_formula(h) for h in job.headers)]


def rejected_rows_empty(job: ImportJob) -> str:
    """The report's content when no row was rejected: the header alone."""
    buffer = io.StringIO()
    csv.writer(buffer).writerow(rejected_header(job))
    return "\ufeff" + buffer.getvalue()
