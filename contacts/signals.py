"""What contacts tell the rest of the system, without knowing who listens.

``contacts_changed`` is sent after a write that changed contacts (fields, events,
consent, suppression, lifecycle) has committed, with ``tenant_id`` and ``contact_ids``.
Segments listen, to keep real-time membership current.

``events_recorded`` is sent after events were applied (rollups and summaries current) and
committed, with ``tenant_id`` and ``event_ids``; ``lifecycle_changed`` after lifecycle stages
changed, with ``tenant_id`` and ``changes`` ([contact id, new stage] pairs). Journeys listen, to
start on events and stages, wake contacts waiting for an event and convert those reaching a goal.

These three are sent robustly (``send_robust``): the write has committed, so a listener that fails
(the broker away for longer than Celery waits to publish, about 4 s) is logged and the others still
run, and the request that wrote does not turn into a 500. Listeners only read (whether the tenant
has anything that cares) and queue tasks; they share one short read transaction in the tenant's
scope, instead of each small query opening its own (four round trips each under row-level security).

``contact_erasing`` is sent inside the erasure's transaction, with ``tenant_id`` and
``contact_id``, so apps that keep personal data about a contact (campaigns' delivery
feedback, which holds provider payloads with the address) remove it in the same commit.

``contact_merging`` is sent inside a merge's transaction (an anonymous visitor identified), with
``tenant_id``, ``source_id`` and ``target_id``, before the source contact is deleted, so apps that
point at contacts without a database constraint (website visitors) move their rows to the target.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.db import DatabaseError, transaction
from django.dispatch import Signal

from tenants.context import tenant_context

logger = logging.getLogger(__name__)

contacts_changed = Signal()
events_recorded = Signal()
lifecycle_changed = Signal()
contact_erasing = Signal()
contact_merging = Signal()


def contacts_touched(tenant_id: int, contact_ids: Iterable[int]) -> None:
    """Announce, once the current transaction commits, that these contacts changed."""
    ids = sorted({int(pk) for pk in contact_ids if pk is not None})
    if ids:
        transaction.on_commit(lambda: _send(contacts_changed, tenant_id, contact_ids=ids))


def events_applied(tenant_id: int, event_ids: Iterable[int]) -> None:
    """Announce, once the current transaction commits, that these events were recorded and applied."""
    ids = sorted(int(pk) for pk in event_ids)
    if ids:
        transaction.on_commit(lambda: _send(events_recorded, tenant_id, event_ids=ids))


def stages_changed(tenant_id: int, changes: Iterable[tuple[int, str]]) -> None:
    """Announce, once the current transaction commits, contacts' new lifecycle stages."""
    pairs = [[int(contact_id), stage] for contact_id, stage in changes]
    if pairs:
        transaction.on_commit(lambda: _send(lifecycle_changed, tenant_id, changes=pairs))


def _send(signal: Signal, tenant_id: int, **kwargs: Any) -> None:
    try:
        with tenant_context(tenant_id), transaction.atomic():
            signal.send_robust(sender=None, tenant_id=tenant_id, **kwargs)
    except DatabaseError:  # the database went away after the commit: nothing was queued, as if each had failed
        logger.exception("Could not announce %s for tenant %s", signal, tenant_id)
