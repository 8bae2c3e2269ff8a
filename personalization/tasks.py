"""Personalisation tasks: write the impressions counted in Redis to the daily figures; forget stale visitors."""

from __future__ import annotations

from personalization.impressions import impressions_flush, tenants_with_impressions
from personalization.services import visitors_forget_stale
from segmentor.celery import app, fan_out, tenant_task
from tenants.models import Tenant


@tenant_task()
def flush_impressions(tenant_id: int) -> int:
    return impressions_flush(tenant_id=tenant_id)


@app.task
def flush_impressions_all() -> int:
    """Beat tick (every minute): one flush per tenant with impressions waiting.

    The counters live in the cache, which can outlive a tenant (deleted since): only existing tenants
    get a flush."""
    ids = list(Tenant.objects.filter(pk__in=tenants_with_impressions()).values_list("pk", flat=True))
    for tenant_id in ids:
        flush_impressions.delay(tenant_id)
    return len(ids)


@tenant_task()
def forget_stale_visitors(tenant_id: int) -> int:
    return visitors_forget_stale(tenant_id=tenant_id)


@app.task
def forget_stale_visitors_all() -> int:
    """Beat tick (daily): each tenant deletes the visitors not seen for the retention period."""
    return fan_out(forget_stale_visitors)
