"""What contacts tell the rest of the system, without knowing who listens.

``contacts_changed`` is sent after a write that changed contacts (fields, events,
consent, suppression, lifecycle) has committed, with ``tenant_id`` and ``contact_ids``.
Segments listen, to keep real-time membership current.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.dispatch import Signal

contacts_changed = Signal()


def contacts_touched(tenant_id: int, contact_ids: Iterable[int]) -> None:
    """Announce, once the current transaction commits, that these contacts changed."""
    ids = sorted({int(pk) for pk in contact_ids if pk is not None})
    if ids:
        transaction.on_commit(lambda: contacts_changed.send(sender=None, tenant_id=tenant_id, contact_ids=ids))
