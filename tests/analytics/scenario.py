"""A small tenant whose message figures are worked out by hand (tests/analytics/test_kpis.py says how).

Tenant A, time zone Europe/Berlin (UTC+1 in January). Three campaigns and a journey:

- "Winter sale" (email, cost 90.00): variants VIP (segment), Leads (stage lead), A and B (default,
  50/50). Run 1 sent 2026-01-10 09:00 UTC to c1…c7 and c9; c8 was skipped and c10 failed.
- "SMS flash" (sms, no cost): one default variant, sent 2026-01-20 to c1, c2, c3.
- Journey "Welcome": version 1 has send step s1; version 2 has s1 (a new campaign) and send step s3.

Every raw row is written here directly (deliveries, opens and clicks with machine ones, provider
feedback, conversions), as the sender, the pixel, the redirect and attribution would write them.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from itertools import count
from types import SimpleNamespace
from typing import Any

from analytics.models import Conversion, MessageEvent
from campaigns.models import Campaign, CampaignRun, Delivery, DeliveryFeedback, Variant
from contacts.models import Contact
from journeys.models import Journey, JourneyVersion, Step
from segments.models import Segment
from tenants.context import tenant_context
from tenants.models import Tenant

UTC = dt.UTC
SENT_AT = dt.datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
D1, D2, D3 = dt.date(2026, 1, 10), dt.date(2026, 1, 11), dt.date(2026, 1, 12)
SMS_AT = dt.datetime(2026, 1, 20, 8, 0, tzinfo=UTC)
JOURNEY_AT = dt.datetime(2026, 1, 15, 8, 0, tzinfo=UTC)
# After everything above happened.
NOW = dt.datetime(2026, 1, 25, 12, 0, tzinfo=UTC)
APPLE = "apple privacy proxy"
SCANNER = "security scanner"

_ids = count(1)


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime(2026, 1, day, hour, minute, second, tzinfo=UTC)


def open_(delivery: Delivery, when: dt.datetime, machine: str = "") -> MessageEvent:
    return _event(delivery, MessageEvent.Kind.OPEN, when, machine)


def click(delivery: Delivery, when: dt.datetime, machine: str = "", url: str = "https://shop.example/sale") -> Any:
    return _event(delivery, MessageEvent.Kind.CLICK, when, machine, url=url)


def unsubscribe(delivery: Delivery, when: dt.datetime) -> MessageEvent:
    return _event(delivery, MessageEvent.Kind.UNSUBSCRIBE, when, "")


def _event(delivery: Delivery, kind: str, when: dt.datetime, machine: str, url: str = "") -> MessageEvent:
    return MessageEvent.objects.create(
        tenant_id=delivery.tenant_id, delivery_id=delivery.pk, campaign_id=delivery.run.campaign_id,
        variant_id=delivery.variant_id, contact_id=delivery.contact_id, kind=kind, url=url, machine=machine,
        occurred_at=when,
    )  # fmt: skip


def feedback(delivery: Delivery, kind: str, when: dt.datetime) -> DeliveryFeedback:
    return DeliveryFeedback.objects.create(
        tenant_id=delivery.tenant_id, delivery=delivery, contact_id=delivery.contact_id, channel="email", kind=kind,
        provider="test", provider_event_id=f"fb-{next(_ids)}", occurred_at=when,
    )  # fmt: skip


def convert(delivery: Delivery, revenue: str, when: dt.datetime) -> Conversion:
    return Conversion.objects.create(
        tenant_id=delivery.tenant_id, event_id=next(_ids) + 10_000_000, event_name="purchase",
        contact_id=delivery.contact_id, delivery_id=delivery.pk, campaign_id=delivery.run.campaign_id,
        variant_id=delivery.variant_id, touch="click", touched_at=when, revenue=Decimal(revenue), occurred_at=when,
    )  # fmt: skip


def run_of(campaign: Campaign, when: dt.datetime, *, done: bool = True, number: int = 1) -> CampaignRun:
    return CampaignRun.objects.create(
        tenant_id=campaign.tenant_id, campaign=campaign, number=number, scheduled_for=when,
        status=CampaignRun.Status.DONE if done else CampaignRun.Status.SENDING, started_at=when,
        finished_at=when + dt.timedelta(minutes=5) if done else None,
    )  # fmt: skip


def deliver(
    run: CampaignRun, contact: Contact, variant: Variant | None, status: str = "sent", when: dt.datetime | None = None
) -> Delivery:
    return Delivery.objects.create(
        tenant_id=run.tenant_id, run=run, contact=contact, variant=variant, status=status,
        sent_at=(when or run.scheduled_for) if status == "sent" else None,
        skip_reason="no_consent" if status == "skipped" else "",
    )  # fmt: skip


def build(tenant: Tenant) -> SimpleNamespace:
    """Write the scenario into ``tenant`` (which becomes Europe/Berlin); return its objects by name."""
    with tenant_context(tenant.pk):
        tenant.time_zone = "Europe/Berlin"
        tenant.save(update_fields=["time_zone"])
        stages = {
            1: "lead", 2: "lead", 3: "first_time_buyer", 4: "repeat_customer", 5: "repeat_customer",
            6: "new_visitor", 7: "loyal_advocate", 8: "lead", 9: "first_time_buyer", 10: "new_visitor",
        }  # fmt: skip
        c = {
            n: Contact.objects.create(tenant=tenant, email=f"c{n}@example.com", lifecycle_stage=stage)
            for n, stage in stages.items()
        }
        vip = Segment.objects.create(tenant=tenant, name="VIP", kind=Segment.Kind.STATIC)
        Segment.objects.create(tenant=tenant, name="Lapsed", kind=Segment.Kind.STATIC)
        sale = Campaign.objects.create(
            tenant=tenant, name="Winter sale", channel="email", cost=Decimal("90.00"), status="sent"
        )
        v = {
            "vip": Variant.objects.create(
                tenant=tenant, campaign=sale, name="VIP", position=0, target="segment", target_segment=vip
            ),
            "lead": Variant.objects.create(
                tenant=tenant, campaign=sale, name="Leads", position=1, target="stage", target_stage="lead"
            ),
            "a": Variant.objects.create(tenant=tenant, campaign=sale, name="A", position=2, weight=50),
            "b": Variant.objects.create(tenant=tenant, campaign=sale, name="B", position=3, weight=50),
        }
        run = run_of(sale, SENT_AT)
        d = {
            1: deliver(run, c[1], v["lead"]), 2: deliver(run, c[2], v["lead"]), 3: deliver(run, c[3], v["vip"]),
            4: deliver(run, c[4], v["vip"]), 5: deliver(run, c[5], v["a"]), 6: deliver(run, c[6], v["a"]),
            7: deliver(run, c[7], v["b"]), 8: deliver(run, c[8], v["b"], "skipped"), 9: deliver(run, c[9], v["b"]),
            10: deliver(run, c[10], v["a"], "failed"),
        }  # fmt: skip
        # d1: two human opens, two human clicks.
        open_(d[1], at(10, 10)), open_(d[1], at(10, 11)), click(d[1], at(10, 10, 5)), click(d[1], at(10, 12))
        # d2: only Apple's proxy opened it.
        open_(d[2], at(10, 9, 1), APPLE)
        # d3: the proxy at once, the person at 23:30 UTC — 00:30 on the 11th in Berlin.
        open_(d[3], at(10, 9, 1), APPLE), open_(d[3], at(10, 23, 30))
        # d4: a scanner clicked within seconds; the person clicked later without loading images.
        click(d[4], at(10, 9, 0, 5), SCANNER), click(d[4], at(10, 13))
        # d5: hard bounce.
        feedback(d[5], "bounce_hard", at(10, 9, 5))
        # d6: opened, then unsubscribed by the link and the provider's list-unsubscribe (once).
        open_(d[6], at(10, 14)), unsubscribe(d[6], at(10, 14, 1)), feedback(d[6], "unsubscribe", at(10, 14, 2))
        # d7: two soft bounces (one bounced message).
        feedback(d[7], "bounce_soft", at(10, 9, 10)), feedback(d[7], "bounce_soft", at(10, 9, 20))
        # d9: opened, then marked as spam.
        open_(d[9], at(10, 15)), feedback(d[9], "complaint", at(10, 15, 5))
        convert(d[1], "100.00", at(11, 10)), convert(d[1], "50.00", at(12, 12))
        convert(d[4], "30.00", at(10, 16)), convert(d[9], "20.00", at(10, 18))

        sms = Campaign.objects.create(tenant=tenant, name="SMS flash", channel="sms", status="sent")
        sms_variant = Variant.objects.create(tenant=tenant, campaign=sms, name="Everyone", sms_body="Sale!")
        sms_run = run_of(sms, SMS_AT)
        sd = {n: deliver(sms_run, c[n], sms_variant) for n in (1, 2, 3)}
        click(sd[1], at(20, 9), url="https://shop.example/s")

        welcome = Journey.objects.create(tenant=tenant, name="Welcome", trigger_event="signed_up", status="live")
        v1 = JourneyVersion.objects.create(tenant=tenant, journey=welcome, number=1, start_key="s1")
        v2 = JourneyVersion.objects.create(tenant=tenant, journey=welcome, number=2, start_key="s1")
        j = {}
        for name, version, key, position in (("j1", v1, "s1", 0), ("j2", v2, "s1", 0), ("j3", v2, "s3", 2)):
            campaign = Campaign.objects.create(tenant=tenant, name=f"Welcome {key}", kind="journey", channel="email")
            variant = Variant.objects.create(tenant=tenant, campaign=campaign, name="Everyone", subject="Hi")
            Step.objects.create(
                tenant=tenant, version=version, key=key, kind="send", name=f"Email {key}", campaign=campaign,
                position=position, exits={"next": None},
            )  # fmt: skip
            j[name] = (campaign, variant, run_of(campaign, JOURNEY_AT))
        Step.objects.create(
            tenant=tenant, version=v2, key="s2", kind="wait", position=1, exits={"next": "s3"},
            config={"duration": {"amount": 1, "unit": "days"}},
        )  # fmt: skip
        welcome.live_version = v2
        welcome.save(update_fields=["live_version"])
        jd = {
            4: deliver(j["j1"][2], c[4], j["j1"][1]), 5: deliver(j["j1"][2], c[5], j["j1"][1]),
            6: deliver(j["j2"][2], c[6], j["j2"][1]), 7: deliver(j["j3"][2], c[7], j["j3"][1]),
        }  # fmt: skip
        open_(jd[4], at(15, 10)), open_(jd[6], at(15, 11)), click(jd[6], at(15, 11, 5))
        convert(jd[6], "10.00", at(15, 12))
    return SimpleNamespace(
        tenant=tenant, contacts=c, vip=vip, sale=sale, variants=v, run=run, deliveries=d, sms=sms, sms_run=sms_run,
        welcome=welcome, v1=v1, v2=v2, journey_campaigns={k: val[0] for k, val in j.items()},
    )  # fmt: skip
