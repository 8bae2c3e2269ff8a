"""Template tags of send-time optimisation: a contact's best time, a run's scheduled hours."""

from __future__ import annotations

from typing import Any

from django import template

from analytics import send_time
from analytics.send_time import contact_best_send_time
from campaigns.models import CampaignRun
from contacts.models import Contact
from tenants.models import Tenant

register = template.Library()


@register.inclusion_tag("analytics/_best_send_time.html")
def best_send_time(contact: Contact, tenant: Tenant) -> dict[str, Any]:
    """The contact's best hour of the week on their clock, and what it is based on."""
    return {"best": contact_best_send_time(tenant=tenant, contact=contact)}


@register.inclusion_tag("analytics/_scheduled_send_hours.html")
def scheduled_send_hours(run: CampaignRun, tenant: Tenant) -> dict[str, Any]:
    """A best-time run's deliveries by the hour they go out, on the workspace's clock."""
    from campaigns.sending import recipient_zone

    zone = recipient_zone("", tenant)
    hours = send_time.scheduled_send_hours(run=run, zone=zone)
    most = max((count for _hour, count in hours), default=0)
    return {"hours": hours, "most": most, "zone": zone.key}
