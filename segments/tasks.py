"""Segment tasks: refresh one, refresh the due ones, real-time evaluation, RFM, daily sizes."""

from __future__ import annotations

from django.utils import timezone

from contacts.summaries import event_summaries_refresh, tenants_with_stale_summaries
from segmentor.celery import app, fan_out, hand_over, tenant_task
from segments.models import Segment, SegmentSize
from segments.services import rfm_recompute, segment_refresh, segments_evaluate_contacts, segments_refresh_due
from tenants.models import Tenant

REALTIME_BATCH = 1_000


@tenant_task()
def refresh_segment(tenant_id: int, segment_id: int) -> int | None:
    segment = Segment.objects.filter(pk=segment_id).first()
    if segment is None:
        return None
    result = segment_refresh(segment=segment)
    return result.size if result else None


@tenant_task()
def evaluate_contacts(tenant_id: int, contact_ids: list[int]) -> dict[str, int]:
    """Real time: re-evaluate the contacts a write touched against the tenant's dynamic segments."""
    tenant = Tenant.objects.get(pk=tenant_id)
    return segments_evaluate_contacts(tenant=tenant, contact_ids=contact_ids)


@tenant_task()
def refresh_due_segments(tenant_id: int) -> list[int]:
    return segments_refresh_due(tenant=Tenant.objects.get(pk=tenant_id))


@tenant_task()
def recompute_rfm(tenant_id: int) -> int:
    return rfm_recompute(tenant=Tenant.objects.get(pk=tenant_id))


@tenant_task()
def record_sizes(tenant_id: int) -> int:
    """Daily point for every segment's size chart (refreshes add points of their own)."""
    now = timezone.now()
    sizes = [
        SegmentSize(tenant_id=tenant_id, segment_id=pk, measured_at=now, size=size)
        for pk, size in Segment.objects.filter(tenant_id=tenant_id).values_list("pk", "size")
    ]
    SegmentSize.objects.bulk_create(sizes)
    return len(sizes)


@tenant_task()
def refresh_event_summaries(tenant_id: int) -> int | None:
    """Move the tenant's event window summaries on to today (or rebuild them); None: nothing done."""
    result = event_summaries_refresh(tenant=Tenant.objects.get(pk=tenant_id))
    return result.rows if result else None


@app.task
def refresh_due_segments_all() -> int:
    """Beat tick (every few minutes): each tenant refreshes its due segments."""
    return fan_out(refresh_due_segments)


@app.task
def recompute_rfm_all() -> int:
    """Beat tick (nightly): RFM quintiles for every tenant, then a refresh picks up RFM rules."""
    return fan_out(recompute_rfm)


@app.task
def refresh_event_summaries_all() -> int:
    """Beat tick (every few minutes): the tenants whose event window summaries are not counted for
    today (after midnight UTC, or a refresh that skipped) move them on; segments count the rollups
    themselves until they have."""
    ids = tenants_with_stale_summaries()
    for tenant_id in ids:
        refresh_event_summaries.delay(tenant_id)
    return len(ids)


@app.task
def record_sizes_all() -> int:
    return fan_out(record_sizes)


def queue_evaluation(tenant_id: int, contact_ids: list[int]) -> None:
    """Queue real-time evaluation in batches (called after the write commits)."""
    ids = sorted(set(contact_ids))
    for start in range(0, len(ids), REALTIME_BATCH):
        hand_over(evaluate_contacts, tenant_id, ids[start : start + REALTIME_BATCH])
