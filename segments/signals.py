"""What segments tell the rest of the system.

``membership_changed`` is sent after contacts entered or left segments and the change committed,
with ``tenant_id``, ``segment_ids`` and ``occurred_at``: the ``SegmentTransition`` rows of those
segments at that moment say who entered and who left. Journeys listen, to start on "enters a
segment" and to end enrollments whose contact left an exit segment.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from django.db import transaction
from django.dispatch import Signal

membership_changed = Signal()


def membership_moved(tenant_id: int, segment_ids: Iterable[int], occurred_at: dt.datetime) -> None:
    """Announce, once the current transaction commits, that members of these segments changed."""
    ids = sorted({int(pk) for pk in segment_ids})
    if ids:
        transaction.on_commit(
            lambda: membership_changed.send(sender=None, tenant_id=tenant_id, segment_ids=ids, occurred_at=occurred_at)
        )
