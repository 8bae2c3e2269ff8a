"""Generated contacts, purchases, segments and lifecycle transitions with hand-computed figures.

The shop, as of AT (Wednesday 17 June 2026, 12:00 UTC; the tenant lives in Europe/Berlin):

| contact | stage            | orders | revenue | first seen       |
|---------|------------------|-------:|--------:|------------------|
| v1…v4   | new visitor      |      0 |       0 | —                |
| l1…l3   | lead             |      0 |       0 | 100 days ago     |
| f1      | first-time buyer |      1 |   40.00 | half a year ago  |
| f2      | first-time buyer |      1 |   60.00 | 10 days ago (30) |
| r1      | repeat customer  |      2 |  100.00 | two years ago    |
| r2      | repeat customer  |      3 |  150.00 | one year ago     |
| a1      | loyal advocate   |      6 |  600.00 | two years ago    |

(A year is 365.25 days.) Segments: "VIPs" = r1, a1, l1; "=Empty" (a formula-looking name) has no
members. Lifecycle transitions are listed in TRANSITIONS; the other tenant gets its own.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from contacts.models import Contact, LifecycleTransition
from segments.models import Segment, SegmentMember
from tenants.context import tenant_context
from tenants.models import Tenant

AT = dt.datetime(2026, 6, 17, 12, 0, tzinfo=dt.UTC)
YEAR = dt.timedelta(days=365.25)
ZONE = "Europe/Berlin"

CONTACTS: list[tuple[str, str, int, str, dt.timedelta | None]] = [
    *((f"v{n}", "new_visitor", 0, "0", None) for n in range(1, 5)),
    *((f"l{n}", "lead", 0, "0", dt.timedelta(days=100)) for n in range(1, 4)),
    ("f1", "first_time_buyer", 1, "40.00", YEAR / 2),
    ("f2", "first_time_buyer", 1, "60.00", dt.timedelta(days=10)),
    ("r1", "repeat_customer", 2, "100.00", 2 * YEAR),
    ("r2", "repeat_customer", 3, "150.00", YEAR),
    ("a1", "loyal_advocate", 6, "600.00", 2 * YEAR),
]

UTC = dt.UTC
# (contact, from stage, to stage, when in UTC)
TRANSITIONS: list[tuple[str, str, str, dt.datetime]] = [
    ("v1", "", "new_visitor", dt.datetime(2026, 6, 16, 9, 0, tzinfo=UTC)),  # week of Mon 15 June
    ("l1", "", "lead", dt.datetime(2026, 6, 14, 22, 30, tzinfo=UTC)),  # 00:30 on Mon 15 June in Berlin
    ("l2", "new_visitor", "lead", dt.datetime(2026, 6, 14, 21, 30, tzinfo=UTC)),  # 23:30 on Sun 14 June in Berlin
    ("f1", "lead", "first_time_buyer", dt.datetime(2026, 6, 10, 12, 0, tzinfo=UTC)),  # week of 8 June
    ("r1", "first_time_buyer", "repeat_customer", dt.datetime(2026, 6, 1, 8, 0, tzinfo=UTC)),  # week of 1 June
    ("r2", "first_time_buyer", "repeat_customer", dt.datetime(2026, 6, 1, 9, 0, tzinfo=UTC)),
    ("r2", "repeat_customer", "loyal_advocate", dt.datetime(2026, 6, 3, 9, 0, tzinfo=UTC)),
    ("a1", "repeat_customer", "loyal_advocate", dt.datetime(2026, 5, 10, 12, 0, tzinfo=UTC)),  # week of 4 May
    ("f2", "lead", "first_time_buyer", dt.datetime(2026, 3, 29, 12, 0, tzinfo=UTC)),  # Sun before the 12 weeks
    ("r2", "loyal_advocate", "repeat_customer", dt.datetime(2026, 6, 16, 10, 0, tzinfo=UTC)),  # back down (set by hand)
    ("v2", "", "new_visitor", dt.datetime(2026, 6, 18, 9, 0, tzinfo=UTC)),  # after AT: not counted
]


@dataclass
class Shop:
    tenant: Tenant
    contacts: dict[str, Contact]
    vips: Segment
    empty: Segment


def build_shop(tenant: Tenant) -> Shop:
    """Create the table above in ``tenant`` (as of AT)."""
    tenant.time_zone = ZONE
    tenant.save(update_fields=["time_zone"])
    with tenant_context(tenant.pk):
        contacts = {}
        for key, stage, orders, revenue, seen in CONTACTS:
            contacts[key] = Contact.objects.create(
                tenant=tenant,
                email=f"{key}@shop.example" if stage != "new_visitor" else "",
                anonymous_id=key,
                lifecycle_stage=stage,
                order_count=orders,
                total_revenue=Decimal(revenue),
                first_seen_at=AT - seen if seen else None,
                last_order_at=AT - dt.timedelta(days=5) if orders else None,
            )
        LifecycleTransition.objects.bulk_create(
            LifecycleTransition(
                tenant=tenant, contact=contacts[key], from_stage=from_stage, to_stage=to_stage, occurred_at=when
            )
            for key, from_stage, to_stage, when in TRANSITIONS
        )
        vips = Segment.objects.create(tenant=tenant, name="VIPs", kind=Segment.Kind.STATIC)
        empty = Segment.objects.create(tenant=tenant, name="=Empty", kind=Segment.Kind.STATIC)
        SegmentMember.objects.bulk_create(
            SegmentMember(tenant=tenant, segment=vips, contact=contacts[key], entered_at=AT)
            for key in ("r1", "a1", "l1")
        )
    return Shop(tenant, contacts, vips, empty)


def build_other(tenant: Tenant) -> None:
    """Another tenant's buyer, segment and transitions: none of it may show in the shop's figures."""
    with tenant_context(tenant.pk):
        buyer = Contact.objects.create(
            tenant=tenant, email="other@b.example", lifecycle_stage="loyal_advocate", order_count=50,
            total_revenue=Decimal("99999.00"), first_seen_at=AT - YEAR, last_order_at=AT,
        )  # fmt: skip
        LifecycleTransition.objects.create(
            tenant=tenant, contact=buyer, from_stage="repeat_customer", to_stage="loyal_advocate", occurred_at=AT
        )
        secret = Segment.objects.create(tenant=tenant, name="Tenant B secret segment", kind=Segment.Kind.STATIC)
        SegmentMember.objects.create(tenant=tenant, segment=secret, contact=buyer, entered_at=AT)
