"""Analytics tasks: credit conversions seconds after goal events arrive."""

from __future__ import annotations

from analytics.services import conversions_attribute
from segmentor.celery import app, fan_out, tenant_task
from tenants.models import Tenant


@tenant_task()
def attribute(tenant_id: int, event_ids: list[int]) -> int:
    from personalization.attribution import slot_conversions_attribute

    tenant = Tenant.objects.get(pk=tenant_id)
    credited = conversions_attribute(tenant=tenant, event_ids=event_ids)
    # Website slots credit the same events to their own last click (personalization/attribution.py),
    # after the messages' credit is stored.
    slot_conversions_attribute(tenant=tenant, event_ids=event_ids)
    return credited


@tenant_task()
def send_time_recompute(tenant_id: int) -> int:
    """Recompute the tenant's send-time profiles; return how many contacts have one."""
    from analytics.send_time import send_time_profiles_compute

    return send_time_profiles_compute(tenant=Tenant.objects.get(pk=tenant_id)).contacts


@app.task
def send_time_recompute_all() -> int:
    """Beat tick (daily): one send-time recompute per tenant."""
    return fan_out(send_time_recompute)


@tenant_task()
def channel_profiles_recompute(tenant_id: int) -> int:
    """Recompute the tenant's preferred-channel profiles; return how many contacts have one."""
    from analytics.preferred_channel import channel_profiles_compute

    return channel_profiles_compute(tenant=Tenant.objects.get(pk=tenant_id)).contacts


@app.task
def channel_profiles_recompute_all() -> int:
    """Beat tick (daily): one preferred-channel recompute per tenant."""
    return fan_out(channel_profiles_recompute)


# Message figures (analytics/rollup.py): a pass hands over after this long and queues the next.
STATS_PASS_SECONDS = 50


@tenant_task(acks_late=True)
def stats_refresh(tenant_id: int) -> bool:
    """Bring the tenant's message figures up to date; True when the pass finished."""
    from analytics.rollup import stats_refresh as refresh

    result = refresh(tenant=Tenant.objects.get(pk=tenant_id), budget_seconds=STATS_PASS_SECONDS)
    return result.finished


@app.task
def stats_refresh_all() -> int:
    """Beat tick (every minute): one refresh per tenant with something new to count."""
    from analytics.rollup import tenants_to_refresh

    ids = tenants_to_refresh()
    for tenant_id in ids:
        stats_refresh.delay(tenant_id)
    return len(ids)


@tenant_task()
def value_refresh(tenant_id: int) -> None:
    """Recompute a tenant's customer-value figures into the cache (about 1 s at a million contacts)."""
    from analytics.value import value_snapshot_refresh

    value_snapshot_refresh(tenant=Tenant.objects.get(pk=tenant_id))


@app.task
def value_refresh_viewed() -> int:
    """Beat tick (every 5 minutes): keep warm the value figures of tenants someone looked at lately, so
    their pages read the cache instead of paying the computation."""
    from analytics.value import tenants_viewed_lately

    ids = tenants_viewed_lately(list(Tenant.objects.values_list("pk", flat=True)))
    for tenant_id in ids:
        value_refresh.delay(tenant_id)
    return len(ids)
