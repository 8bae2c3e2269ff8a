"""Reads of the slots' figures: impressions, clicks, attributed conversions and revenue per variant.

Every figure comes from ``SlotDailyStats`` (days in UTC), summed over a period; the web UI, its CSV
and the REST API read the same functions, so a download matches the page.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from django.db.models import Sum
from django.utils import timezone

from personalization.models import Slot, SlotDailyStats, SlotVariant
from tenants.models import Tenant

DEFAULT_LABEL = "Default content"


@dataclass(frozen=True)
class FigurePeriod:
    """Days ``start`` to ``end`` (both included), UTC days as ``SlotDailyStats`` counts them."""

    start: dt.date
    end: dt.date

    @classmethod
    def last_days(cls, days: int, *, today: dt.date | None = None) -> FigurePeriod:
        today = today or timezone.now().astimezone(dt.UTC).date()
        return cls(today - dt.timedelta(days=days - 1), today)


@dataclass(frozen=True)
class Figures:
    impressions: int = 0
    clicks: int = 0
    conversions: int = 0
    revenue: Decimal = Decimal(0)

    @property
    def ctr(self) -> float | None:
        """Clicks per impression; None with no impression."""
        return self.clicks / self.impressions if self.impressions else None

    @property
    def conversion_rate(self) -> float | None:
        """Attributed conversions per click; None with no click."""
        return self.conversions / self.clicks if self.clicks else None

    def __add__(self, other: Figures) -> Figures:
        return Figures(
            self.impressions + other.impressions,
            self.clicks + other.clicks,
            self.conversions + other.conversions,
            self.revenue + other.revenue,
        )


@dataclass(frozen=True)
class VariantFigures:
    """One row of a slot's table: a variant (``variant`` None: the slot's default content)."""

    slot: Slot
    variant: SlotVariant | None
    figures: Figures

    @property
    def key(self) -> str:
        return "default" if self.variant is None else f"variant-{self.variant.pk}"

    @property
    def label(self) -> str:
        return DEFAULT_LABEL if self.variant is None else self.variant.name


@dataclass(frozen=True)
class SlotReport:
    slot: Slot
    rows: list[VariantFigures] = field(default_factory=list)  # the variants by priority, then the default

    @property
    def totals(self) -> Figures:
        total = Figures()
        for row in self.rows:
            total += row.figures
        return total


def _sums(tenant: Tenant, period: FigurePeriod, slot_ids: Sequence[int]) -> dict[tuple[int, int | None], Figures]:
    rows = (
        SlotDailyStats.objects.filter(
            tenant=tenant, slot_id__in=list(slot_ids), day__gte=period.start, day__lte=period.end
        )
        .values("slot_id", "variant_id")
        .annotate(
            impressions=Sum("impressions"), clicks=Sum("clicks"), conversions=Sum("conversions"), revenue=Sum("revenue")
        )
        .order_by()
    )
    return {
        (row["slot_id"], row["variant_id"]): Figures(
            row["impressions"] or 0, row["clicks"] or 0, row["conversions"] or 0, row["revenue"] or Decimal(0)
        )
        for row in rows
    }


def slot_reports(*, tenant: Tenant, period: FigurePeriod, slots: Sequence[Slot] | None = None) -> list[SlotReport]:
    """Each slot (all of the tenant's by key, or ``slots``) with its variants' and default's figures (three queries)."""
    chosen = list(slots) if slots is not None else list(Slot.objects.filter(tenant=tenant).order_by("key"))
    ids = [slot.pk for slot in chosen]
    variants: dict[int, list[SlotVariant]] = {}
    rows = SlotVariant.objects.filter(tenant=tenant, slot_id__in=ids).select_related("target_segment")
    for variant in rows.order_by("slot_id", "priority", "id"):
        variants.setdefault(variant.slot_id, []).append(variant)
    sums = _sums(tenant, period, ids) if ids else {}
    reports = []
    for slot in chosen:
        report = SlotReport(slot)
        for variant in variants.get(slot.pk, []):
            report.rows.append(VariantFigures(slot, variant, sums.get((slot.pk, variant.pk), Figures())))
        report.rows.append(VariantFigures(slot, None, sums.get((slot.pk, None), Figures())))
        reports.append(report)
    return reports


def slot_report(*, slot: Slot, period: FigurePeriod) -> SlotReport:
    return slot_reports(tenant=slot.tenant, period=period, slots=[slot])[0]
