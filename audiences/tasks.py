"""Ad audience tasks: the destination's beat entry, pushing one export (retries come back here), and the
sweep of downloads whose web process died."""

from __future__ import annotations

from django_celery_beat.models import PeriodicTask

from audiences.models import AudienceDestination, AudienceExport
from audiences.services import destination_scheduled_run, downloads_close_abandoned, export_push
from segmentor.celery import app, fan_out, tenant_task


@tenant_task(acks_late=True, reject_on_worker_lost=True)
def run_destination(tenant_id: int, destination_id: int) -> int | None:
    """Beat: export the destination's segment and push it (skipped while its previous export is in flight)."""
    destination = AudienceDestination.objects.select_related("segment", "tenant").filter(pk=destination_id).first()
    if destination is None:
        # Deleted without its beat row (in bulk, say): remove the orphan.
        PeriodicTask.objects.filter(name=f"audience destination {tenant_id}:{destination_id}").delete()
        return None
    export = destination_scheduled_run(destination=destination)
    return export.pk if export else None


@tenant_task(acks_late=True, reject_on_worker_lost=True)
def push_export(tenant_id: int, export_id: int) -> str | None:
    """Push a queued export, or retry one that failed for a passing reason; return its status."""
    export = AudienceExport.objects.select_related("destination").filter(pk=export_id).first()
    if export is None:
        return None
    return export_push(export=export).status


@tenant_task()
def close_abandoned_downloads(tenant_id: int) -> int:
    return downloads_close_abandoned(tenant_id=tenant_id)


@app.task
def close_abandoned_downloads_all() -> int:
    """Beat tick: each tenant closes its abandoned downloads."""
    return fan_out(close_abandoned_downloads)
