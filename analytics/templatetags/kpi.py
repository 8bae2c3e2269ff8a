"""Template filters for message KPIs: a figure by its column, percentages, money, lifts."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import template

from analytics.selectors import KpiColumn, Kpis

register = template.Library()
DASH = "—"


@register.filter
def pct(value: float | None, digits: int = 1) -> str:
    """0.1234 → "12.3%"; None → "—"."""
    if value is None:
        return DASH
    return f"{value * 100:.{digits}f}%"


@register.filter
def money(value: Decimal | None) -> str:
    if value is None:
        return DASH
    return f"{Decimal(value).quantize(Decimal('0.01')):,.2f}"


@register.filter
def lift(value: float | None) -> str:
    """+50.0 % / −25.0 % (relative change); "—" when there is nothing to compare with."""
    if value is None:
        return DASH
    sign = "+" if value >= 0 else "−"
    return f"{sign}{abs(value) * 100:.1f}%"


@register.filter
def kpi(kpis: Kpis, column: KpiColumn) -> str:
    """The figure of ``column`` in ``kpis``, formatted by its kind."""
    value: Any = getattr(kpis, column.name)
    if column.kind == "rate":
        return pct(value)
    if column.kind == "money":
        return money(value)
    return f"{value:,}"


@register.filter
def kpi_count(value: int | None) -> str:
    return DASH if value is None else f"{value:,}"


@register.filter
def detail(values: dict[str, Any], key: str) -> Any:
    """A row's detail by key ("" when it has none)."""
    value = values.get(key, "")
    return "" if value is None else value
