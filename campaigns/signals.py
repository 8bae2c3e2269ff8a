"""What campaigns tell the rest of the system.

``contact_unsubscribed`` is sent after an unsubscribe through a message's link committed, with
``tenant_id``, ``contact_id`` and ``campaign_id``: analytics counts it against the campaign.
"""

from __future__ import annotations

from django.db import transaction
from django.dispatch import Signal

contact_unsubscribed = Signal()


def unsubscribed(tenant_id: int, contact_id: int, campaign_id: int) -> None:
    transaction.on_commit(
        lambda: contact_unsubscribed.send(
            sender=None, tenant_id=tenant_id, contact_id=contact_id, campaign_id=campaign_id
        )
    )
