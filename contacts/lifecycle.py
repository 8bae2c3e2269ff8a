"""Lifecycle stages, derived from identity, consent and purchases by per-tenant thresholds.

Defaults (Settings → General): a contact is
- a **loyal advocate** with at least 5 orders and 500 in revenue;
- a **repeat customer** with at least 2 orders;
- a **first-time buyer** with 1 order;
- a **lead** when identified (email, phone or external id) or with any granted consent;
- a **new visitor** otherwise (anonymous).
Every change is recorded as a LifecycleTransition, which journeys can start on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.utils import timezone

from contacts.bulk_sql import bulk_insert_rows, bulk_update_rows
from contacts.models import ConsentState, ConsentStatus, Contact, LifecycleStage, LifecycleTransition
from contacts.signals import stages_changed
from tenants.models import Tenant


def derive_stage(contact: Contact, tenant: Tenant, *, has_consent: bool) -> str:
    if contact.order_count >= tenant.loyal_advocate_min_orders and (
        contact.total_revenue >= tenant.loyal_advocate_min_revenue
    ):
        return LifecycleStage.LOYAL_ADVOCATE
    if contact.order_count >= tenant.repeat_customer_min_orders:
        return LifecycleStage.REPEAT_CUSTOMER
    if contact.order_count >= 1:
        return LifecycleStage.FIRST_TIME_BUYER
    if contact.email or contact.phone or contact.external_id or has_consent:
        return LifecycleStage.LEAD
    return LifecycleStage.NEW_VISITOR


# What derive_stage and lifecycle_refresh read of a contact (load with ``.only(*STAGE_INPUTS)``).
STAGE_INPUTS = (
    "id", "tenant_id", "order_count", "total_revenue", "email", "phone", "external_id",
    "lifecycle_stage", "lifecycle_changed_at", "erased_at",
)  # fmt: skip


def lifecycle_refresh(*, tenant: Tenant, contacts: Iterable[Contact], reason: str) -> int:
    """Re-derive the stage of ``contacts``; save and record every change; return how many changed.

    Writes one statement per table (contacts/bulk_sql.py), so an event batch that makes a
    few thousand buyers pays for two statements, not a Django bulk_update per row.
    """
    contacts = [c for c in contacts if c.erased_at is None]
    if not contacts:
        return 0
    consenting = set(
        ConsentState.objects.filter(
            tenant=tenant, contact_id__in=[c.pk for c in contacts], status=ConsentStatus.GRANTED
        ).values_list("contact_id", flat=True)
    )
    now = timezone.now()
    changes: list[tuple[int, dict[str, Any]]] = []
    transitions: list[dict[str, Any]] = []
    for contact in contacts:
        stage = derive_stage(contact, tenant, has_consent=contact.pk in consenting)
        if stage == contact.lifecycle_stage and contact.lifecycle_changed_at is not None:
            continue
        from_stage = "" if contact.lifecycle_changed_at is None else contact.lifecycle_stage
        transitions.append({"contact_id": contact.pk, "from_stage": from_stage, "to_stage": stage})
        changes.append((contact.pk, {"lifecycle_stage": stage, "lifecycle_changed_at": now}))
        contact.lifecycle_stage = stage
        contact.lifecycle_changed_at = now
    bulk_update_rows(tenant, Contact, changes)
    bulk_insert_rows(
        LifecycleTransition, transitions, fixed={"tenant_id": tenant.pk, "reason": reason, "occurred_at": now},
        returning=(),
    )  # fmt: skip
    stages_changed(tenant.pk, [(t["contact_id"], t["to_stage"]) for t in transitions])
    return len(changes)


def lifecycle_set(*, tenant: Tenant, contacts: Iterable[Contact], stage: str, reason: str) -> int:
    """Put ``contacts`` in ``stage`` by hand (a journey's update step); record each change.

    The stage stays until the next derivation moves it (a purchase, an identity or consent change).
    """
    now = timezone.now()
    moving = [c for c in contacts if c.erased_at is None and c.lifecycle_stage != stage]
    bulk_update_rows(tenant, Contact, [(c.pk, {"lifecycle_stage": stage, "lifecycle_changed_at": now}) for c in moving])
    bulk_insert_rows(
        LifecycleTransition,
        [{"contact_id": c.pk, "from_stage": c.lifecycle_stage, "to_stage": stage} for c in moving],
        fixed={"tenant_id": tenant.pk, "reason": reason, "occurred_at": now},
        returning=(),
    )
    for contact in moving:
        contact.lifecycle_stage, contact.lifecycle_changed_at = stage, now
    stages_changed(tenant.pk, [(c.pk, stage) for c in moving])
    return len(moving)
