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
A listener that fails for a passing reason (it could not queue its task) is kept as a
``PendingAnnouncement`` and run again by a beat sweep each minute until it succeeds
(``announcements_retry``), so an outage of the broker delays real-time work instead of losing it.

``contact_erasing`` is sent inside the erasure's transaction, with ``tenant_id`` and
``contact_id``, so apps that keep personal data about a contact (campaigns' delivery
feedback, which holds provider payloads with the address) remove it in the same commit.

``contact_merging`` is sent inside a merge's transaction (an anonymous visitor identified), with
``tenant_id``, ``source_id`` and ``target_id``, before the source contact is deleted, so apps that
point at contacts without a database constraint (website visitors) move their rows to the target.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.db import DatabaseError, transaction
from django.db.models import F
from django.dispatch import Signal
from django.utils import timezone
from django.utils.module_loading import import_string

from segmentor.celery import BROKER_ERRORS
from tenants.context import platform_access, tenant_context

logger = logging.getLogger(__name__)

contacts_changed = Signal()
events_recorded = Signal()
lifecycle_changed = Signal()
contact_erasing = Signal()
contact_merging = Signal()

# The after-commit signals, by the name a kept announcement records.
AFTER_COMMIT = {"contacts_changed": contacts_changed, "events_recorded": events_recorded,
                "lifecycle_changed": lifecycle_changed}  # fmt: skip
# Failures worth running a listener again for: it could not hand its work over for now.
PASSING = (*BROKER_ERRORS, DatabaseError)


def contacts_touched(tenant_id: int, contact_ids: Iterable[int]) -> None:
    """Announce, once the current transaction commits, that these contacts changed."""
    ids = sorted({int(pk) for pk in contact_ids if pk is not None})
    if ids:
        transaction.on_commit(lambda: _send("contacts_changed", tenant_id, contact_ids=ids))


def events_applied(tenant_id: int, event_ids: Iterable[int]) -> None:
    """Announce, once the current transaction commits, that these events were recorded and applied."""
    ids = sorted(int(pk) for pk in event_ids)
    if ids:
        transaction.on_commit(lambda: _send("events_recorded", tenant_id, event_ids=ids))


def stages_changed(tenant_id: int, changes: Iterable[tuple[int, str]]) -> None:
    """Announce, once the current transaction commits, contacts' new lifecycle stages."""
    pairs = [[int(contact_id), stage] for contact_id, stage in changes]
    if pairs:
        transaction.on_commit(lambda: _send("lifecycle_changed", tenant_id, changes=pairs))


def _send(name: str, tenant_id: int, **kwargs: Any) -> None:
    signal = AFTER_COMMIT[name]
    failed: list[tuple[Any, BaseException]] = []
    try:
        with tenant_context(tenant_id), transaction.atomic():
            results = signal.send_robust(sender=None, tenant_id=tenant_id, **kwargs)
            failed = [(receiver, error) for receiver, error in results if isinstance(error, PASSING)]
    except DatabaseError:  # the database went away after the commit: nothing was queued, as if each had failed
        logger.exception("Could not announce %s for tenant %s", name, tenant_id)
        return
    if failed:
        _keep_for_later(name, tenant_id, kwargs, failed)


def _path(receiver: Callable[..., Any]) -> str | None:
    """The listener's dotted path, when importing it gives it back (module-level functions)."""
    path = f"{getattr(receiver, '__module__', '')}.{getattr(receiver, '__qualname__', '')}"
    try:
        return path if import_string(path) is receiver else None
    except ImportError:
        return None


def _keep_for_later(
    name: str, tenant_id: int, payload: dict[str, Any], failed: list[tuple[Any, BaseException]]
) -> None:
    from contacts.models import PendingAnnouncement

    rows = []
    for receiver, error in failed:
        path = _path(receiver)
        logger.warning(
            "announcement.kept" if path else "announcement.lost",
            extra={"tenant_id": tenant_id, "signal": name, "receiver": path or repr(receiver), "error": repr(error)},
        )
        if path:
            rows.append(PendingAnnouncement(
                tenant_id=tenant_id, signal=name, receiver=path, payload=payload,
                error=f"{type(error).__name__}: {error}"[:500], created_at=timezone.now(),
            ))  # fmt: skip
    try:
        with tenant_context(tenant_id), transaction.atomic():
            PendingAnnouncement.objects.bulk_create(rows)
    except DatabaseError:
        logger.exception("Could not keep %s for tenant %s for later", name, tenant_id)


def announcements_retry(*, tenant_id: int, limit: int = 500) -> int:
    """Run the tenant's kept listeners again, oldest first; delete each that succeeds; return how many did.

    A listener that fails again keeps its row (attempts counted, the error noted) and the round stops:
    what it needs is still away, and the order of the tenant's announcements is kept."""
    from contacts.models import PendingAnnouncement

    done = 0
    for row in PendingAnnouncement.objects.filter(tenant_id=tenant_id).order_by("pk")[:limit]:
        try:
            receiver = import_string(row.receiver)
            with transaction.atomic():
                receiver(sender=None, tenant_id=tenant_id, **row.payload)
        except Exception as error:
            logger.warning("announcement.retry_failed", exc_info=True, extra={"tenant_id": tenant_id, "row": row.pk})
            PendingAnnouncement.objects.filter(pk=row.pk).update(
                attempts=F("attempts") + 1, error=f"{type(error).__name__}: {error}"[:500]
            )
            break
        PendingAnnouncement.objects.filter(pk=row.pk).delete()
        done += 1
    return done


def tenants_with_pending_announcements() -> list[int]:
    """The tenants with kept listeners (platform code: the sweep)."""
    from contacts.models import PendingAnnouncement

    with platform_access(), transaction.atomic():
        return sorted(set(PendingAnnouncement.all_tenants.values_list("tenant_id", flat=True)))
