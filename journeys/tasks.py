"""Journey tasks: walk due enrollments, react to what contacts did, post webhook notices."""

from __future__ import annotations

import datetime as dt
import logging
import time

from django.db import transaction
from django.utils import timezone

from journeys import triggers
from journeys.engine import advance_batch
from journeys.models import Enrollment, Journey, WebhookNotice
from segmentor.celery import app, tenant_task
from tenants.context import platform_access
from tenants.models import Tenant

logger = logging.getLogger(__name__)

# A task hands over after this long, so one tenant's backlog does not hold a worker from the others.
MAX_TASK_SECONDS = 60
NOTICE_BATCH = 100


@tenant_task(acks_late=True, reject_on_worker_lost=True)
def advance(tenant_id: int) -> int:
    """Walk the tenant's due enrollments batch by batch (concurrent tasks share the work: SKIP LOCKED)."""
    tenant = Tenant.objects.get(pk=tenant_id)
    started, walked = time.monotonic(), 0
    while n := advance_batch(tenant=tenant):
        walked += n
        if time.monotonic() - started > MAX_TASK_SECONDS:
            advance.delay(tenant_id)
            break
    return walked


@app.task
def tick_all() -> int:
    """Every minute: a task per tenant with enrollments due or webhook notices to post."""
    now = timezone.now()
    with platform_access(), transaction.atomic():
        due = set(
            Enrollment.all_tenants.filter(status=Enrollment.Status.ACTIVE, next_run_at__lte=now)
            .values_list("tenant_id", flat=True)
            .distinct()
        )
        notices = set(
            WebhookNotice.all_tenants.filter(status=WebhookNotice.Status.PENDING, next_attempt_at__lte=now)
            .values_list("tenant_id", flat=True)
            .distinct()
        )
    for tenant_id in sorted(due):
        advance.delay(tenant_id)
    for tenant_id in sorted(notices):
        post_webhook_notices.delay(tenant_id)
    return len(due)


@app.task
def anniversaries_all() -> int:
    """Every hour: tenants with a live date-triggered journey enter today's anniversaries."""
    with platform_access(), transaction.atomic():
        tenants = set(
            Journey.all_tenants.filter(status=Journey.Status.LIVE, trigger=Journey.Trigger.DATE_ATTRIBUTE)
            .values_list("tenant_id", flat=True)
            .distinct()
        )
    for tenant_id in sorted(tenants):
        anniversaries.delay(tenant_id)
    return len(tenants)


@tenant_task()
def anniversaries(tenant_id: int) -> int:
    return triggers.enter_anniversaries(tenant=Tenant.objects.get(pk=tenant_id))


@tenant_task()
def on_events(tenant_id: int, event_ids: list[int]) -> dict[str, int]:
    return triggers.on_events(tenant=Tenant.objects.get(pk=tenant_id), event_ids=event_ids)


@tenant_task()
def on_segment_changes(tenant_id: int, segment_ids: list[int], occurred_at: str) -> dict[str, int]:
    return triggers.on_segment_changes(
        tenant=Tenant.objects.get(pk=tenant_id), segment_ids=segment_ids,
        occurred_at=dt.datetime.fromisoformat(occurred_at),
    )  # fmt: skip


@tenant_task()
def on_stage_changes(tenant_id: int, changes: list[list[object]]) -> int:
    pairs = [(int(str(contact_id)), str(stage)) for contact_id, stage in changes]
    return triggers.on_stage_changes(tenant=Tenant.objects.get(pk=tenant_id), changes=pairs)


@tenant_task()
def on_contacts_changed(tenant_id: int, contact_ids: list[int]) -> int:
    return triggers.on_contacts_changed(tenant=Tenant.objects.get(pk=tenant_id), contact_ids=contact_ids)


@tenant_task(acks_late=True, reject_on_worker_lost=True)
def post_webhook_notices(tenant_id: int) -> int:
    from journeys.notices import notices_post

    return notices_post(tenant=Tenant.objects.get(pk=tenant_id), limit=NOTICE_BATCH)
