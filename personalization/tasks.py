"""Personalisation tasks: write the impressions counted in Redis to the daily figures."""

from __future__ import annotations

from personalization.impressions import impressions_flush, tenants_with_impressions
from segmentor.celery import app, tenant_task


@tenant_task()
def flush_impressions(tenant_id: int) -> int:
    return impressions_flush(tenant_id=tenant_id)


@app.task
def flush_impressions_all() -> int:
    """Beat tick (every minute): one flush per tenant with impressions waiting."""
    ids = tenants_with_impressions()
    for tenant_id in ids:
        flush_impressions.delay(tenant_id)
    return len(ids)
