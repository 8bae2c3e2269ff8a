"""Every write to contacts: upserts (single and bulk), edits and attribute definitions.

The bulk paths write through ``contacts.bulk_sql`` (one statement per batch), as event ingest
and lifecycle refreshes do.

Events live in contacts/ingest.py, consent and suppression in contacts/consent.py,
export, erasure and retention in contacts/privacy.py.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from contacts.bulk_sql import bulk_insert_rows, bulk_update_rows, each_value_lookup, rows_json
from contacts.fields import FIELDS_BY_NAME, IDENTITY_KEYS, AttributeSchema, clean_contact_fields
from contacts.lifecycle import derive_stage, lifecycle_refresh
from contacts.models import AttributeDefinition, Contact, LifecycleTransition
from contacts.signals import contacts_touched
from tenants.audit import Actor, audit
from tenants.models import Tenant

MAX_BULK_CONTACTS = 10_000


@dataclass
class RowResult:
    """The outcome of one row of a bulk write: created, updated, duplicate or error."""

    index: int
    status: str
    id: int | None = None
    errors: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"index": self.index, "status": self.status, "id": self.id}
        if self.errors:
            data["errors"] = self.errors
        return data


class _Target:
    """One contact a bulk upsert writes: an existing one (a few of its columns) or a new one."""

    __slots__ = ("changes", "current", "rows")

    def __init__(self, current: dict[str, Any] | None = None) -> None:
        self.current = current
        self.changes: dict[str, Any] = {}
        self.rows: list[int] = []

    def get(self, name: str) -> Any:
        if name in self.changes:
            return self.changes[name]
        return (self.current or NEW_CONTACT_DEFAULTS)[name]

    def apply(self, values: dict[str, Any], attributes: dict[str, Any]) -> None:
        for name, value in values.items():
            if name == "external_id" and not value:
                continue
            self.changes[name] = value
        if attributes:
            merged = {**self.get("attributes"), **attributes}
            self.changes["attributes"] = {k: v for k, v in merged.items() if v is not None}


NEW_CONTACT_DEFAULTS: dict[str, Any] = {"external_id": "", "email": "", "attributes": {}}
# What matching and the merge of attributes read from an existing contact.
EXISTING_COLUMNS = ("id", "external_id", "email", "attributes", "lifecycle_changed_at")
# Cleaning is a pure function of field and value, and most values repeat across contacts (countries,
# cities, names, job roles, tag lists), so a bulk upsert cleans each distinct value once per process.
# The identities rarely repeat: they are cleaned every time.
# Dates are checked against today, so their result must not outlive the day.
UNCACHED_FIELDS = frozenset(
    {"external_id", "email", "phone", *(f.name for f in FIELDS_BY_NAME.values() if f.type == "date")}
)


@functools.lru_cache(maxsize=16_384)
def _clean_value(name: str, value: str | tuple[str, ...]) -> tuple[Any, tuple[str, ...]]:
    values, errors = clean_contact_fields({name: list(value) if isinstance(value, tuple) else value})
    return values.get(name), tuple(errors.get(name, ()))


def _clean_fields(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    values: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    uncached: dict[str, Any] = {}
    for name, raw in data.items():
        key: str | tuple[str, ...] | None = None
        if name in UNCACHED_FIELDS or name not in FIELDS_BY_NAME:
            pass
        elif isinstance(raw, str):
            key = raw
        elif isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            key = tuple(raw)
        if key is None:
            uncached[name] = raw
            continue
        value, problems = _clean_value(name, key)
        if problems:
            errors[name] = list(problems)
        else:
            values[name] = list(value) if isinstance(value, list) else value  # a list of its own
    if uncached:
        more_values, more_errors = clean_contact_fields(uncached)
        values.update(more_values)
        errors.update(more_errors)
    return values, errors


NUL_MESSAGE = "NUL characters (U+0000) cannot be stored."


def contains_nul(value: Any) -> bool:
    """Whether a JSON value holds U+0000 anywhere: PostgreSQL's text and jsonb cannot store it."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(contains_nul(item) for item in value)
    return False


def _refuse_nul(
    values: dict[str, Any], attributes: dict[str, Any], errors: dict[str, list[str]], attribute_errors: list[str]
) -> None:
    """Add the errors of cleaned values PostgreSQL could not store, and the attributes' errors."""
    for name, value in values.items():  # text fields refuse NUL when cleaned; lists of tags do not
        if isinstance(value, list) and contains_nul(value):
            errors[name] = [NUL_MESSAGE]
    if contains_nul(attributes):
        attribute_errors = [*attribute_errors, NUL_MESSAGE]
    if attribute_errors:
        errors["attributes"] = attribute_errors


def _clean_row(data: Any, schema: AttributeSchema) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[str]]]:
    if not isinstance(data, dict):
        return {}, {}, {"non_field_errors": ["Each contact must be a JSON object."]}
    values, errors = _clean_fields(data)
    attributes, attribute_errors = schema.clean(data.get("attributes"))
    _refuse_nul(values, attributes, errors, attribute_errors)
    unknown = sorted(set(data) - {*values, *errors, "attributes"})
    if unknown:
        errors["non_field_errors"] = [f"Unknown field(s): {', '.join(map(str, unknown))}."]
    if not errors and not any(values.get(key) for key in IDENTITY_KEYS):
        errors["non_field_errors"] = ["Give an external_id or an email to identify the contact."]
    return values, attributes, errors


def contacts_bulk_upsert(*, tenant: Tenant, rows: list[Any]) -> list[RowResult]:
    """Create or update contacts keyed by external id, else normalised email.

    Valid rows are saved even when others are rejected; each row gets its own
    result. Rows that name the same contact are applied in order.
    """
    if len(rows) > MAX_BULK_CONTACTS:
        raise ValidationError(f"At most {MAX_BULK_CONTACTS} contacts per request.")
    for attempt in range(2):
        try:
            with transaction.atomic():
                return _bulk_upsert(tenant, rows)
        except IntegrityError:
            # A concurrent request created one of these contacts: match again.
            if attempt:
                raise
    raise AssertionError("unreachable")


def _bulk_upsert(tenant: Tenant, rows: list[Any]) -> list[RowResult]:
    schema = AttributeSchema(tenant)
    results: list[RowResult] = []
    cleaned: list[tuple[int, dict[str, Any], dict[str, Any]]] = []
    for index, data in enumerate(rows):
        values, attributes, errors = _clean_row(data, schema)
        if errors:
            results.append(RowResult(index, "error", errors=errors))
        else:
            cleaned.append((index, values, attributes))

    external_ids = {v["external_id"] for _, v, _ in cleaned if v.get("external_id")}
    emails = {v["email"] for _, v, _ in cleaned if v.get("email")}
    by_external: dict[str, _Target] = {}
    by_email: dict[str, _Target] = {}
    for current in _existing_contacts(tenant, external_ids, emails):
        target = _Target(current)
        if current["external_id"]:
            by_external[current["external_id"]] = target
        if current["email"]:
            by_email[current["email"]] = target

    targets: list[_Target] = []
    for index, values, attributes in cleaned:
        external_id, email = values.get("external_id", ""), values.get("email", "")
        by_id = by_external.get(external_id) if external_id else None
        by_address = by_email.get(email) if email else None
        if by_id is not None and by_address is not None and by_id is not by_address:
            results.append(RowResult(index, "error", errors={"email": ["This email belongs to another contact."]}))
            continue
        found = by_id or by_address
        if found is not None and external_id and found.get("external_id") not in ("", external_id):
            results.append(
                RowResult(
                    index,
                    "error",
                    errors={"external_id": ["This email belongs to a contact with another external_id."]},
                )
            )
            continue
        target = found or _Target()
        if not target.rows:
            targets.append(target)
        target.apply(values, attributes)
        target.rows.append(index)
        if target.get("external_id"):
            by_external[target.get("external_id")] = target
        if target.get("email"):
            by_email[target.get("email")] = target

    now = timezone.now()
    new = [t for t in targets if t.current is None]
    if new:
        _insert_new_contacts(tenant, new, now)
    updated = [t for t in targets if t.current is not None and t.changes]
    bulk_update_rows(tenant, Contact, [(t.get("id"), {**t.changes, "updated_at": now}) for t in updated])
    # A matched contact keeps its identity (its external id or email matched) and an upsert touches
    # neither orders nor consent, so its stage cannot change: only never-derived stages need work.
    underived = [t.get("id") for t in updated if t.get("lifecycle_changed_at") is None]
    if underived:
        stale = Contact.objects.filter(tenant=tenant, pk__in=underived)
        lifecycle_refresh(tenant=tenant, contacts=stale, reason="profile updated")
    contacts_touched(tenant.pk, [t.get("id") for t in new + updated])

    for target in targets:
        created = target.current is None
        for position, index in enumerate(target.rows):
            status = "created" if created and position == 0 else "updated"
            results.append(RowResult(index, status, id=target.get("id")))
    results.sort(key=lambda r: r.index)
    return results


def _existing_contacts(tenant: Tenant, external_ids: set[str], emails: set[str]) -> list[dict[str, Any]]:
    """The contacts these identities name, with the columns a bulk upsert reads."""
    if not external_ids and not emails:
        return []
    if connection.vendor != "postgresql":
        matched = Contact.objects.filter(tenant=tenant).filter(Q(external_id__in=external_ids) | Q(email__in=emails))
        return list(matched.values(*EXISTING_COLUMNS))
    # One lookup per identity, each inside its partial unique index; an OR of the two would not use them.
    table = Contact._meta.db_table
    sql = (
        f"{each_value_lookup(table, 'external_id', EXISTING_COLUMNS)} UNION ALL "
        f"{each_value_lookup(table, 'email', EXISTING_COLUMNS)}"
    )
    params: list[Any] = [rows_json(sorted(external_ids)), tenant.pk, rows_json(sorted(emails)), tenant.pk]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        by_id = {row[0]: dict(zip(EXISTING_COLUMNS, row, strict=True)) for row in cursor.fetchall()}
    rows = list(by_id.values())
    for row in rows:  # Django's connection reads JSON as text; JSONField parses it
        if isinstance(row["attributes"], str):
            row["attributes"] = json.loads(row["attributes"])
    return rows


def _insert_new_contacts(tenant: Tenant, new: list[_Target], now: dt.datetime) -> None:
    """Insert the new contacts with their first lifecycle stage, and record it."""
    # Every new row has an identity and no orders or consent yet, so one stage fits them all.
    stage = derive_stage(Contact(external_id="-"), tenant, has_consent=False)
    fixed = {"tenant_id": tenant.pk, "first_seen_at": now, "last_seen_at": now, "created_at": now,
             "updated_at": now, "lifecycle_stage": stage, "lifecycle_changed_at": now}  # fmt: skip
    inserted = bulk_insert_rows(
        Contact, [t.changes for t in new], fixed=fixed, returning=("id", "external_id", "email")
    )
    ids_by_identity = {}
    for contact_id, external_id, email in inserted:
        ids_by_identity[("external_id", external_id)] = contact_id
        ids_by_identity[("email", email)] = contact_id
    for target in new:
        external_id = target.get("external_id")
        key = ("external_id", external_id) if external_id else ("email", target.get("email"))
        target.changes["id"] = ids_by_identity[key]
    bulk_insert_rows(
        LifecycleTransition,
        [{"contact_id": contact_id} for contact_id, _, _ in inserted],
        fixed={"tenant_id": tenant.pk, "from_stage": "", "to_stage": stage, "reason": "profile updated",
               "occurred_at": now},
        returning=(),
    )  # fmt: skip


def contact_upsert(*, tenant: Tenant, data: dict[str, Any]) -> tuple[Contact, bool]:
    """Create or update one contact; raise ValidationError with field errors."""
    [result] = contacts_bulk_upsert(tenant=tenant, rows=[data])
    if result.status == "error":
        raise ValidationError(result.errors)
    return Contact.objects.get(tenant=tenant, pk=result.id), result.status == "created"


@transaction.atomic
def contact_update(*, contact: Contact, data: dict[str, Any]) -> Contact:
    """Edit a contact's fields (a partial update); raise ValidationError with field errors."""
    if contact.erased_at is not None:
        raise ValidationError("This contact was erased; its profile cannot be changed.")
    tenant = contact.tenant
    values, errors = clean_contact_fields(data)
    attributes, attribute_errors = AttributeSchema(tenant).clean(data.get("attributes"))
    _refuse_nul(values, attributes, errors, attribute_errors)
    for key in IDENTITY_KEYS:
        value = values.get(key)
        if value and Contact.objects.filter(tenant=tenant, **{key: value}).exclude(pk=contact.pk).exists():
            errors.setdefault(key, []).append("Another contact already has this value.")
    if errors:
        raise ValidationError(errors)
    for name, value in values.items():
        setattr(contact, name, value)
    if "attributes" in data:
        merged = {**contact.attributes, **attributes}
        contact.attributes = {k: v for k, v in merged.items() if v is not None}
    contact.save()
    lifecycle_refresh(tenant=tenant, contacts=[contact], reason="profile updated")
    contacts_touched(tenant.pk, [contact.pk])
    return contact


# --- custom attribute definitions -----------------------------------------------------
ATTRIBUTE_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")


@transaction.atomic
def attribute_define(*, tenant: Tenant, key: str, label: str, type: str, actor: Actor) -> AttributeDefinition:
    """Define a custom attribute for the tenant's contacts; raise ValidationError with field errors."""
    errors: dict[str, str] = {}
    if not ATTRIBUTE_KEY.fullmatch(key):
        errors["key"] = "Use lower-case letters, digits and underscores, starting with a letter (64 at most)."
    elif AttributeDefinition.objects.filter(tenant=tenant, key=key).exists():
        errors["key"] = "An attribute with this key already exists."
    if not label.strip():
        errors["label"] = "Give the attribute a label."
    if type not in AttributeDefinition.Type.values:
        errors["type"] = f"{type!r} is not an attribute type."
    if errors:
        raise ValidationError(errors)
    definition = AttributeDefinition.objects.create(tenant=tenant, key=key, label=label.strip()[:100], type=type)
    audit(tenant=tenant, actor=actor, action="attribute.defined", obj=definition, data={"key": key, "type": type})
    return definition


@transaction.atomic
def attribute_delete(*, definition: AttributeDefinition, actor: Actor) -> None:
    """Delete a definition. Values already on contacts stay but cannot be written until it is defined again."""
    audit(
        tenant=definition.tenant, actor=actor, action="attribute.deleted", obj=definition,
        data={"key": definition.key, "type": definition.type},
    )  # fmt: skip
    definition.delete()


@transaction.atomic
def attribute_update(
    *,
    definition: AttributeDefinition,
    actor: Actor,
    label: str | None = None,
    key: str | None = None,
    type: str | None = None,
) -> AttributeDefinition:
    """Relabel a definition. Its key and type are fixed once defined (values and segments rely on them)."""
    errors: dict[str, str] = {}
    if key is not None and key != definition.key:
        errors["key"] = "The key cannot change once defined; define a new attribute instead."
    if type is not None and type != definition.type:
        errors["type"] = f"The type cannot change once defined (it is {definition.type})."
    if label is not None and not label.strip():
        errors["label"] = "Give the attribute a label."
    if errors:
        raise ValidationError(errors)
    if label is not None and label.strip() != definition.label:
        definition.label = label.strip()[:100]
        definition.save(update_fields=["label"])
        audit(tenant=definition.tenant, actor=actor, action="attribute.relabelled", obj=definition)
    return definition
