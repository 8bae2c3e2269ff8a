"""Chart.js configurations for the message KPI pages (drawn by static/js/charts.js from json_script data)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from analytics.selectors import DayPoint, Kpis, Row, TargetingComparison

RATES = (("open_rate", "Open rate"), ("ctr", "CTR"), ("conversion_rate", "Conversion rate"))


def _percent(value: float | None) -> float | None:
    return round(value * 100, 2) if value is not None else None


def _percent_options(*, horizontal: bool = False) -> dict[str, Any]:
    value_axis = "x" if horizontal else "y"
    return {
        **({"indexAxis": "y"} if horizontal else {}),
        "scales": {value_axis: {"beginAtZero": True, "title": {"display": True, "text": "%"}}},
        "plugins": {"legend": {"position": "bottom"}},
    }


def _day_labels(points: Sequence[DayPoint]) -> list[str]:
    return [p.day.isoformat() for p in points]


def messages_chart(points: Sequence[DayPoint]) -> dict[str, Any]:
    """Messages sent and delivered per day."""
    return {
        "type": "bar",
        "data": {
            "labels": _day_labels(points),
            "datasets": [
                {"label": "Sent", "data": [p.kpis.sent for p in points]},
                {"label": "Delivered", "data": [p.kpis.delivered for p in points]},
            ],
        },
        "options": {"scales": {"y": {"beginAtZero": True}}, "plugins": {"legend": {"position": "bottom"}}},
    }


def engagement_chart(points: Sequence[DayPoint]) -> dict[str, Any]:
    """Unique human opens and clicks per day (each message counted on the day of its first)."""
    return {
        "type": "line",
        "data": {
            "labels": _day_labels(points),
            "datasets": [
                {"label": "Opened (people)", "data": [p.kpis.opened for p in points], "fill": False},
                {"label": "Clicked (people)", "data": [p.kpis.clicked for p in points], "fill": False},
                {"label": "Opened incl. machines", "data": [p.kpis.opened_any for p in points], "fill": False,
                 "borderDash": [4, 4]},
            ],
        },
        "options": {"scales": {"y": {"beginAtZero": True}}, "plugins": {"legend": {"position": "bottom"}}},
    }  # fmt: skip


def conversions_chart(points: Sequence[DayPoint]) -> dict[str, Any]:
    """Conversions (bars, left axis) and revenue (line, right axis) per day."""
    return {
        "type": "bar",
        "data": {
            "labels": _day_labels(points),
            "datasets": [
                {"label": "Conversions", "data": [p.kpis.conversions for p in points], "yAxisID": "y"},
                {"label": "Revenue", "type": "line", "data": [float(p.kpis.revenue) for p in points],
                 "yAxisID": "revenue", "fill": False},
            ],
        },
        "options": {
            "scales": {
                "y": {"beginAtZero": True, "position": "left", "title": {"display": True, "text": "Conversions"}},
                "revenue": {"beginAtZero": True, "position": "right", "grid": {"drawOnChartArea": False},
                            "title": {"display": True, "text": "Revenue"}},
            },
            "plugins": {"legend": {"position": "bottom"}},
        },
    }  # fmt: skip


def rates_chart(rows: Sequence[Row], *, rates: Sequence[tuple[str, str]] = RATES) -> dict[str, Any]:
    """Grouped bars: each row's open rate, CTR and conversion rate, in percent."""
    return {
        "type": "bar",
        "data": {
            "labels": [r.label for r in rows],
            "datasets": [
                {"label": label, "data": [_percent(getattr(r.kpis, name)) for r in rows]} for name, label in rates
            ],
        },
        "options": _percent_options(),
    }


def top_segments_chart(rows: Sequence[Row]) -> dict[str, Any]:
    """Horizontal bars: conversion rate per segment, best first."""
    return {
        "type": "bar",
        "data": {
            "labels": [r.label.removeprefix("Segment: ") for r in rows],
            "datasets": [{"label": "Conversion rate", "data": [_percent(r.kpis.conversion_rate) for r in rows]}],
        },
        "options": _percent_options(horizontal=True),
    }


def comparison_chart(comparison: TargetingComparison) -> dict[str, Any]:
    """Targeted variants against the default: conversion rate, CTR and engagement rate, in percent."""
    groups: list[tuple[str, Kpis]] = [
        ("Targeted (segment or stage)", comparison.targeted),
        ("Default", comparison.default),
    ]
    measures = (("conversion_rate", "Conversion rate"), ("ctr", "CTR"), ("engagement_rate", "Engagement rate"))
    return {
        "type": "bar",
        "data": {
            "labels": [label for _, label in measures],
            "datasets": [
                {"label": name, "data": [_percent(getattr(kpis, measure)) for measure, _ in measures]}
                for name, kpis in groups
            ],
        },
        "options": _percent_options(),
    }
