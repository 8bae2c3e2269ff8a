from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class AnalyticsConfig(AppConfig):
    name = "analytics"

    def ready(self) -> None:
        from campaigns.signals import contact_unsubscribed
        from contacts.signals import events_recorded

        events_recorded.connect(_events, dispatch_uid="analytics.attribution")
        contact_unsubscribed.connect(_unsubscribed, dispatch_uid="analytics.unsubscribes")
        from campaigns.models import Campaign
        from tenants.facts import watch

        watch(Campaign)  # the "campaign goals" fact below


def _events(sender: Any, *, tenant_id: int, event_ids: list[int], **kwargs: Any) -> None:
    """Queue attribution when the tenant measures a goal or has slot clicks."""
    from analytics.tasks import attribute
    from campaigns.models import Campaign
    from personalization.attribution import has_slot_clicks
    from segmentor.celery import hand_over
    from tenants.context import tenant_context
    from tenants.facts import tenant_fact

    def goals() -> bool:
        with tenant_context(tenant_id):
            return Campaign.objects.filter(tenant_id=tenant_id).exclude(goal_event="").exists()

    # Facts of the tenant (tenants/facts.py); website slots credit conversions too (personalization).
    if not tenant_fact("analytics.campaign_goals", tenant_id, goals) and not has_slot_clicks(tenant_id):
        return
    for start in range(0, len(event_ids), 5_000):
        hand_over(attribute, tenant_id, event_ids[start : start + 5_000])


def _unsubscribed(sender: Any, *, tenant_id: int, contact_id: int, campaign_id: int, **kwargs: Any) -> None:
    from analytics.services import unsubscribe_record
    from tenants.context import tenant_context
    from tenants.models import Tenant

    with tenant_context(tenant_id):
        unsubscribe_record(tenant=Tenant.objects.get(pk=tenant_id), contact_id=contact_id, campaign_id=campaign_id)
