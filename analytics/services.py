"""Recording what recipients did (opens, clicks, unsubscribes) and crediting conversions.

Opens and clicks become ``MessageEvent`` rows and, when a person (not a machine) made them,
contact events (``email_open``, ``email_click``…) so segments and journeys see engagement. The
contact event is stored at once and applied by a worker (``defer_apply``): the pixel and the
redirect answer in a few milliseconds.

Attribution is last touch: a goal event is credited to the latest message, among the campaigns
and journey steps with that goal, that touched the contact within its attribution window — by a
human click, or (``attribution_touch`` "delivery") by being sent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import F
from django.utils import timezone

from analytics.models import Conversion, MessageEvent
from analytics.tracking import Clicked, Opened, machine_reason
from campaigns.models import Campaign, Delivery
from contacts.bulk_sql import bulk_insert_rows
from contacts.ingest import events_ingest
from contacts.models import Event
from tenants.models import Tenant

logger = logging.getLogger(__name__)

ENGAGEMENT_NAMES = {
    ("email", "open"): "email_open", ("email", "click"): "email_click", ("sms", "click"): "sms_click",
    ("push", "open"): "push_open",
}  # fmt: skip


@dataclass(frozen=True)
class Recorded:
    event: MessageEvent
    human: bool


def _delivery(tenant_id: int, delivery_id: int) -> dict[str, Any] | None:
    return (
        Delivery.objects.filter(tenant_id=tenant_id, pk=delivery_id)
        .values(
            "contact_id",
            "variant_id",
            "sent_at",
            campaign_id=F("run__campaign_id"),
            channel=F("run__campaign__channel"),
        )
        .first()
    )


def message_event_record(
    *, tenant: Tenant, seen: Opened | Clicked, user_agent: str, method: str = "GET", now: dt.datetime | None = None
) -> Recorded | None:
    """Record an open or a click of a delivery; None when the delivery is gone (erased, deleted)."""
    now = now or timezone.now()
    delivery = _delivery(tenant.pk, seen.delivery_id)
    if delivery is None:
        return None
    kind = MessageEvent.Kind.CLICK if isinstance(seen, Clicked) else MessageEvent.Kind.OPEN
    sent_at = delivery["sent_at"]
    after = (now - sent_at).total_seconds() if sent_at else None
    machine = machine_reason(user_agent=user_agent, method=method, seconds_after_send=after, kind=kind)
    event = MessageEvent.objects.create(
        tenant=tenant, delivery_id=seen.delivery_id, campaign_id=delivery["campaign_id"],
        variant_id=delivery["variant_id"], contact_id=delivery["contact_id"], kind=kind,
        url=seen.url[:2000] if isinstance(seen, Clicked) else "", is_cta=isinstance(seen, Clicked) and seen.is_cta,
        machine=machine, user_agent=user_agent[:300], occurred_at=now,
    )  # fmt: skip
    name = ENGAGEMENT_NAMES.get((delivery["channel"], kind), "link_click" if kind == "click" else "")
    if not machine and name:
        # One contact event per delivery (opens) or per delivery and link (clicks): the idempotency
        # key makes the tenth open of a message a no-op.
        key = f"{kind}:{seen.delivery_id}" + (f":{_digest(seen.url)}" if isinstance(seen, Clicked) else "")
        properties: dict[str, Any] = {"campaign_id": delivery["campaign_id"], "delivery_id": seen.delivery_id}
        if isinstance(seen, Clicked):
            properties.update(url=seen.url[:500], cta=seen.is_cta)
        events_ingest(
            tenant=tenant, source="tracking", defer_apply=True,
            events=[{"event": name, "contact_id": delivery["contact_id"], "occurred_at": now.isoformat(),
                     "properties": properties, "idempotency_key": key}],
        )  # fmt: skip
    return Recorded(event, not machine)


def _digest(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def unsubscribe_record(*, tenant: Tenant, contact_id: int, campaign_id: int, now: dt.datetime | None = None) -> bool:
    """Count an unsubscribe against the campaign's latest delivery to the contact (for its rate)."""
    delivery = (
        Delivery.objects.filter(tenant_id=tenant.pk, run__campaign_id=campaign_id, contact_id=contact_id)
        .order_by("-id")
        .values("pk", "variant_id")
        .first()
    )
    if delivery is None:
        return False
    MessageEvent.objects.create(
        tenant=tenant, delivery_id=delivery["pk"], campaign_id=campaign_id, variant_id=delivery["variant_id"],
        contact_id=contact_id, kind=MessageEvent.Kind.UNSUBSCRIBE, occurred_at=now or timezone.now(),
    )  # fmt: skip
    return True


# --- attribution -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Touch:
    at: dt.datetime
    delivery_id: int
    campaign_id: int
    variant_id: int | None
    kind: str


def conversions_attribute(*, tenant: Tenant, event_ids: Sequence[int]) -> int:
    """Credit the goal events among ``event_ids`` to the last message that touched each contact; return
    how many were credited (an event already credited is left as it is)."""
    campaigns = {
        c["pk"]: c
        for c in Campaign.objects.filter(tenant=tenant)
        .exclude(goal_event="")
        .values("pk", "goal_event", "attribution_window_hours", "attribution_touch")
    }
    goals = {c["goal_event"] for c in campaigns.values()}
    if not goals:
        return 0
    events = list(
        Event.objects.filter(tenant=tenant, pk__in=list(event_ids), name__in=sorted(goals)).values(
            "pk", "name", "contact_id", "occurred_at", "revenue"
        )
    )
    if not events:
        return 0
    widest = dt.timedelta(hours=max(c["attribution_window_hours"] for c in campaigns.values()))
    contacts = sorted({e["contact_id"] for e in events})
    earliest = min(e["occurred_at"] for e in events) - widest
    latest = max(e["occurred_at"] for e in events)
    touches: dict[int, list[Touch]] = {}
    clicks = MessageEvent.objects.filter(
        tenant=tenant, kind=MessageEvent.Kind.CLICK, machine="", contact_id__in=contacts,
        campaign_id__in=list(campaigns), occurred_at__gte=earliest, occurred_at__lte=latest,
    ).values_list("contact_id", "occurred_at", "delivery_id", "campaign_id", "variant_id")  # fmt: skip
    for contact_id, at, delivery_id, campaign_id, variant_id in clicks:
        if campaigns[campaign_id]["attribution_touch"] == Campaign.AttributionTouch.CLICK:
            touches.setdefault(contact_id, []).append(Touch(at, delivery_id, campaign_id, variant_id, "click"))
    by_delivery = [pk for pk, c in campaigns.items() if c["attribution_touch"] == Campaign.AttributionTouch.DELIVERY]
    if by_delivery:
        sent = Delivery.objects.filter(
            tenant_id=tenant.pk, status=Delivery.Status.SENT, contact_id__in=contacts, run__campaign_id__in=by_delivery,
            sent_at__gte=earliest, sent_at__lte=latest,
        ).values_list("contact_id", "sent_at", "pk", "run__campaign_id", "variant_id")  # fmt: skip
        for contact_id, at, delivery_id, campaign_id, variant_id in sent:
            touches.setdefault(contact_id, []).append(Touch(at, delivery_id, campaign_id, variant_id, "delivery"))
    rows = []
    for event in events:
        eligible = [
            t for t in touches.get(event["contact_id"], ())
            if campaigns[t.campaign_id]["goal_event"] == event["name"] and t.at <= event["occurred_at"]
            and event["occurred_at"] - t.at <= dt.timedelta(hours=campaigns[t.campaign_id]["attribution_window_hours"])
        ]  # fmt: skip
        if not eligible:
            continue
        last = max(eligible, key=lambda t: (t.at, t.delivery_id))
        rows.append(
            {
                "event_id": event["pk"], "event_name": event["name"], "contact_id": event["contact_id"],
                "delivery_id": last.delivery_id, "campaign_id": last.campaign_id, "variant_id": last.variant_id,
                "touch": last.kind, "touched_at": last.at, "revenue": event["revenue"] or Decimal(0),
                "occurred_at": event["occurred_at"],
            }
        )  # fmt: skip
    credited = bulk_insert_rows(Conversion, rows, fixed={"tenant_id": tenant.pk}, ignore_conflicts=True)
    return len(credited)
