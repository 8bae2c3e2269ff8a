"""Analytics tasks: credit conversions seconds after goal events arrive."""

from __future__ import annotations

from analytics.services import conversions_attribute
from segmentor.celery import tenant_task
from tenants.models import Tenant


@tenant_task()
def attribute(tenant_id: int, event_ids: list[int]) -> int:
    return conversions_attribute(tenant=Tenant.objects.get(pk=tenant_id), event_ids=event_ids)
