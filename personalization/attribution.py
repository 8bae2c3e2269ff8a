"""Crediting conversions to website slots: last slot click within the attribution window.

A conversion event (one analytics counts as a conversion: a goal event of the workspace's campaigns
and journeys, and always ``purchase``) by a contact is credited to the slot variant (or the slot's
default content) of that contact's **last** slot click at or before the event and no longer ago than
``ATTRIBUTION_WINDOW`` — once, with its revenue, on the event's day (UTC) in ``SlotDailyStats``.

A click belongs to the contact its visitor had then, or, when that contact has since been merged
away (an anonymous visitor who signed in), to the visitor's contact now.

Exactly once without a ledger: a day's conversions are **recounted** from the events and clicks
(not added to), under a per-tenant lock, and the difference is written with the figures' upsert.
Running attribution twice for an event, or for a day whose clicks changed, gives the same figures.
Called from the analytics attribution task (``analytics.tasks.attribute``) for every batch of new events.
"""

from __future__ import annotations

import bisect
import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import F
from django.db.models.functions import Coalesce

from campaigns.models import Campaign
from contacts.ingest import PURCHASE
from contacts.models import Event
from journeys.models import Journey
from personalization.models import SlotClick, SlotDailyStats
from personalization.services import SlotFigures, slot_stats_add
from tenants.facts import tenant_fact
from tenants.models import Tenant

logger = logging.getLogger(__name__)
SLOT_CLICKS_FACT = "personalization.slot_clicks"

# The campaigns' default attribution window (Campaign.attribution_window_hours).
ATTRIBUTION_WINDOW = dt.timedelta(hours=120)
# pg_advisory_xact_lock(ATTRIBUTION_LOCK, tenant): one recount of a tenant's slot conversions at a time.
ATTRIBUTION_LOCK = 0x50_5A_41  # "PZA"
CONTACT_CHUNK = 5_000  # contact ids per events query (well under the driver's parameter limit)

Credit = tuple[int, int | None]  # (slot id, variant id or None for the default content)


@dataclass(frozen=True)
class Click:
    at: dt.datetime
    id: int
    slot_id: int
    variant_id: int | None


def conversion_event_names(*, tenant: Tenant) -> list[str]:
    """The events analytics counts as conversions in this workspace: campaigns' and journeys' goals, and purchase."""
    names = {PURCHASE}
    names.update(Campaign.objects.filter(tenant=tenant).exclude(goal_event="").values_list("goal_event", flat=True))
    names.update(Journey.objects.filter(tenant=tenant).exclude(goal_event="").values_list("goal_event", flat=True))
    return sorted(names)


def has_slot_clicks(tenant_id: int) -> bool:
    """Whether attribution has anything to credit to slots: a fact of the tenant (tenants/facts.py), made
    stale by the tenant's first click (slot_click_record)."""
    from tenants.context import tenant_context

    def query() -> bool:
        with tenant_context(tenant_id):
            return SlotClick.objects.filter(tenant_id=tenant_id).exists()

    return tenant_fact(SLOT_CLICKS_FACT, tenant_id, query)


def _day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def _clicks_by_contact(tenant: Tenant, start: dt.datetime, end: dt.datetime) -> dict[int, list[Click]]:
    """Clicks in [start, end), by the contact each belongs to, oldest first."""
    rows = (
        SlotClick.objects.filter(tenant=tenant, clicked_at__gte=start, clicked_at__lt=end)
        .annotate(who=Coalesce(F("contact_id"), F("visitor__contact_id")))
        .exclude(who=None)
        .values_list("who", "clicked_at", "id", "slot_id", "variant_id")
        .order_by("clicked_at", "id")
    )
    clicks: dict[int, list[Click]] = {}
    for who, at, pk, slot_id, variant_id in rows:
        clicks.setdefault(who, []).append(Click(at, pk, slot_id, variant_id))
    return clicks


def _last_click(clicks: Sequence[Click], at: dt.datetime) -> Click | None:
    """The latest click at or before ``at``, if it is within the window."""
    index = bisect.bisect_right([c.at for c in clicks], at)
    if index == 0:
        return None
    click = clicks[index - 1]
    return click if at - click.at <= ATTRIBUTION_WINDOW else None


def _lock(tenant: Tenant) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [ATTRIBUTION_LOCK, tenant.pk % 2**31])


@transaction.atomic
def slot_conversions_recount(*, tenant: Tenant, day: dt.date, names: Sequence[str] | None = None) -> dict[int, Credit]:
    """Recount the day's slot conversions and revenue into ``SlotDailyStats``; return {event id: credit}."""
    _lock(tenant)
    names = list(names) if names is not None else conversion_event_names(tenant=tenant)
    start, end = _day_bounds(day)
    clicks = _clicks_by_contact(tenant, start - ATTRIBUTION_WINDOW, end)
    credits: dict[int, Credit] = {}
    wanted: dict[Credit, list] = {}
    contact_ids = sorted(clicks)
    for chunk in range(0, len(contact_ids), CONTACT_CHUNK):
        events = Event.objects.filter(
            tenant=tenant, name__in=names, occurred_at__gte=start, occurred_at__lt=end,
            contact_id__in=contact_ids[chunk : chunk + CONTACT_CHUNK],
        ).values_list("id", "contact_id", "occurred_at", "revenue")  # fmt: skip
        for event_id, contact_id, at, revenue in events:
            click = _last_click(clicks[contact_id], at)
            if click is None:
                continue
            credit = (click.slot_id, click.variant_id)
            credits[event_id] = credit
            tally = wanted.setdefault(credit, [0, Decimal(0)])
            tally[0] += 1
            tally[1] += revenue or Decimal(0)
    stored = {
        (slot_id, variant_id): (conversions, revenue)
        for slot_id, variant_id, conversions, revenue in SlotDailyStats.objects.filter(tenant=tenant, day=day)
        .values_list("slot_id", "variant_id", "conversions", "revenue")
        .order_by()
    }
    changes = []
    for credit in sorted(set(wanted) | set(stored), key=lambda c: (c[0], c[1] or 0)):
        conversions, revenue = wanted.get(credit, (0, Decimal(0)))
        had_conversions, had_revenue = stored.get(credit, (0, Decimal(0)))
        if (conversions, revenue) != (had_conversions, had_revenue):
            changes.append(
                SlotFigures(
                    credit[0], credit[1], conversions=conversions - had_conversions, revenue=revenue - had_revenue
                )
            )
    if changes:
        slot_stats_add(tenant_id=tenant.pk, day=day, figures=changes)
    return credits


def slot_conversions_attribute(*, tenant: Tenant, event_ids: Iterable[int]) -> int:
    """Credit the conversion events among ``event_ids`` to the slot clicks before them; return how many were.

    Recounts the days the events fall on (a no-op for a workspace without slot clicks: one query).
    """
    ids = sorted(set(event_ids))
    if not ids or not has_slot_clicks(tenant.pk):
        return 0
    names = conversion_event_names(tenant=tenant)
    days = sorted(
        {
            at.astimezone(dt.UTC).date()
            for at in Event.objects.filter(tenant=tenant, pk__in=ids, name__in=names).values_list(
                "occurred_at", flat=True
            )
        }
    )
    wanted = set(ids)
    credited = 0
    for day in days:
        credits = slot_conversions_recount(tenant=tenant, day=day, names=names)
        credited += len(wanted & credits.keys())
    if credited:
        logger.info("slot conversions credited", extra={"tenant_id": tenant.pk, "events": credited})
    return credited
