"""Every write to contacts: upserts (single and bulk) and edits.

Events live in contacts/ingest.py, consent and suppression in contacts/consent.py,
export, erasure and retention in contacts/privacy.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from contacts.fields import IDENTITY_KEYS, AttributeSchema, clean_contact_fields
from contacts.lifecycle import lifecycle_refresh
from contacts.models import Contact
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


@dataclass
class _Pending:
    contact: Contact
    created: bool
    fields: set[str]
    rows: list[int]


def _clean_row(data: Any, schema: AttributeSchema) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[str]]]:
    if not isinstance(data, dict):
        return {}, {}, {"non_field_errors": ["Each contact must be a JSON object."]}
    values, errors = clean_contact_fields(data)
    attributes, attribute_errors = schema.clean(data.get("attributes"))
    if attribute_errors:
        errors["attributes"] = attribute_errors
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
    by_external: dict[str, Contact] = {}
    by_email: dict[str, Contact] = {}
    if external_ids or emails:
        existing = Contact.objects.filter(tenant=tenant).filter(Q(external_id__in=external_ids) | Q(email__in=emails))
        for contact in existing:
            if contact.external_id:
                by_external[contact.external_id] = contact
            if contact.email:
                by_email[contact.email] = contact

    now = timezone.now()
    pending: dict[int, _Pending] = {}  # keyed by id(contact)
    for index, values, attributes in cleaned:
        external_id, email = values.get("external_id", ""), values.get("email", "")
        by_id = by_external.get(external_id) if external_id else None
        by_address = by_email.get(email) if email else None
        if by_id is not None and by_address is not None and by_id is not by_address:
            results.append(RowResult(index, "error", errors={"email": ["This email belongs to another contact."]}))
            continue
        contact = by_id or by_address
        if contact is not None and external_id and contact.external_id not in ("", external_id):
            results.append(
                RowResult(
                    index,
                    "error",
                    errors={"external_id": ["This email belongs to a contact with another external_id."]},
                )
            )
            continue
        created = contact is None
        if contact is None:
            contact = Contact(tenant=tenant, first_seen_at=now, last_seen_at=now)
        entry = pending.setdefault(id(contact), _Pending(contact, created, set(), []))
        for name, value in values.items():
            if name == "external_id" and not value:
                continue
            setattr(contact, name, value)
            entry.fields.add(name)
        if attributes:
            merged = {**contact.attributes, **attributes}
            contact.attributes = {k: v for k, v in merged.items() if v is not None}
            entry.fields.add("attributes")
        entry.rows.append(index)
        if contact.external_id:
            by_external[contact.external_id] = contact
        if contact.email:
            by_email[contact.email] = contact

    new = [p.contact for p in pending.values() if p.created]
    Contact.objects.bulk_create(new, batch_size=1000)
    updates = [p for p in pending.values() if not p.created and p.fields]
    if updates:
        update_fields = sorted(set().union(*(p.fields for p in updates)) | {"updated_at"})
        for p in updates:
            p.contact.updated_at = now
        Contact.objects.bulk_update([p.contact for p in updates], update_fields, batch_size=500)
    lifecycle_refresh(tenant=tenant, contacts=[p.contact for p in pending.values()], reason="profile updated")

    for p in pending.values():
        for position, index in enumerate(p.rows):
            status = "created" if p.created and position == 0 else "updated"
            results.append(RowResult(index, status, id=p.contact.pk))
    results.sort(key=lambda r: r.index)
    return results


def contact_upsert(*, tenant: Tenant, data: dict[str, Any]) -> tuple[Contact, bool]:
    """Create or update one contact; raise ValidationError with field errors."""
    [result] = contacts_bulk_upsert(tenant=tenant, rows=[data])
    if result.status == "error":
        raise ValidationError(result.errors)
    return Contact.objects.get(tenant=tenant, pk=result.id), result.status == "created"


@transaction.atomic
def contact_update(*, contact: Contact, data: dict[str, Any]) -> Contact:
    """Edit a contact's fields (a partial update); raise ValidationError with field errors."""
    tenant = contact.tenant
    values, errors = clean_contact_fields(data)
    attributes, attribute_errors = AttributeSchema(tenant).clean(data.get("attributes"))
    if attribute_errors:
        errors["attributes"] = attribute_errors
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
    return contact
