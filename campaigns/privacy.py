"""Campaigns' part of a contact's erasure: provider payloads and errors can hold the address."""

from __future__ import annotations

from typing import Any

from campaigns.models import ContactPause, Delivery, DeliveryFeedback


def contact_erasing_received(sender: Any, *, tenant_id: int, contact_id: int, **kwargs: Any) -> None:
    """Blank what campaigns keep about an erased contact (inside the erasure's transaction).

    Deliveries stay (the campaign's figures keep adding up) without their provider error text;
    feedback rows stay (the suppression they caused stays too) with the address hash only.
    """
    feedback = DeliveryFeedback.objects.filter(tenant_id=tenant_id, contact_id=contact_id)
    for row in feedback.only("pk", "payload"):
        kept = {"address_hash": row.payload["address_hash"]} if "address_hash" in (row.payload or {}) else {}
        DeliveryFeedback.objects.filter(pk=row.pk).update(payload=kept, detail="")
    Delivery.objects.filter(tenant_id=tenant_id, contact_id=contact_id).exclude(error="").update(error="")
    ContactPause.objects.filter(tenant_id=tenant_id, contact_id=contact_id).delete()
