"""The customer value page: the lifecycle funnel, the flow between stages, CLV by stage and segment.

Every figure comes from the tenant's cached value snapshot (analytics/value.py); the page and its
CSV downloads read the same snapshot, so a download matches what is on screen.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from django import forms
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from analytics.value import (
    DEFAULT_LIFESPAN_YEARS,
    DEFAULT_RANGE,
    MAX_LIFESPAN_YEARS,
    MIN_CHURN_COHORT,
    MIN_TENURE_DAYS,
    RANGES,
    SNAPSHOT_FRESH_FOR,
    ClvTable,
    FlowTable,
    Funnel,
    clv_chart,
    clv_table,
    flow_chart,
    flow_table,
    funnel,
    funnel_chart,
    segment_names,
    value_snapshot,
)
from contacts.export import escape_formula
from tenants.web import TenantView

SEGMENTS_CHARTED = 15


class RangeForm(forms.Form):
    range = forms.ChoiceField(choices=[(r.code, r.label) for r in RANGES.values()], required=False)


def chosen_range(data: Any) -> tuple[RangeForm, str]:
    """The form (with its errors, if any) and the range to show: the chosen one or the default."""
    form = RangeForm(data)
    if form.is_valid() and form.cleaned_data["range"]:
        return form, form.cleaned_data["range"]
    return form, DEFAULT_RANGE


class ValueView(TenantView):
    http_method_names = ["get"]

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form, range_code = chosen_range(request.GET)
        snapshot = value_snapshot(tenant=self.tenant)
        funnel_ = funnel(snapshot, range_code=range_code)
        flows = flow_table(snapshot, range_code=range_code)
        by_stage = clv_table(snapshot, by="stage")
        by_segment = clv_table(snapshot, by="segment", segment_names=segment_names(tenant=self.tenant))
        context = {
            "form": form,
            "range_code": range_code,
            "snapshot": snapshot,
            "funnel": funnel_,
            "flows": flows,
            "by_stage": by_stage,
            "by_segment": by_segment,
            "lifespan": by_stage.lifespan,
            "charts": {
                "funnel": funnel_chart(funnel_),
                "flow": flow_chart(flows),
                "clv_stage": clv_chart(by_stage),
                "clv_segment": clv_chart(by_segment, limit=SEGMENTS_CHARTED),
            },
            "segments_charted": SEGMENTS_CHARTED,
            "fresh_minutes": int(SNAPSHOT_FRESH_FOR.total_seconds() // 60),
            "min_tenure_days": MIN_TENURE_DAYS,
            "min_churn_cohort": MIN_CHURN_COHORT,
            "default_lifespan": DEFAULT_LIFESPAN_YEARS,
            "max_lifespan": MAX_LIFESPAN_YEARS,
        }
        return render(request, "analytics/value.html", context)


# --- CSV ----------------------------------------------------------------------------------------------
def _number(value: Any) -> str:
    """A figure as a spreadsheet reads it: blank for none, plain decimals, fractions for shares."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


CLV_HEADER = [
    "contacts", "buyers", "buyer_share", "orders", "revenue", "revenue_per_contact", "revenue_per_buyer",
    "average_order_value", "purchases_per_buyer_per_year", "predicted_clv_per_buyer",
]  # fmt: skip


def clv_lines(table: ClvTable) -> Iterable[list[str]]:
    first = ["stage", "stage_label"] if table.by == "stage" else ["segment_id", "segment"]
    yield [*first, *CLV_HEADER]
    for row in [*table.rows, table.total]:
        figures = [
            row.contacts, row.buyers, row.buyer_share, row.orders, row.revenue, row.revenue_per_contact,
            row.revenue_per_buyer, row.average_order_value, row.purchases_per_year, row.predicted_clv,
        ]  # fmt: skip
        yield [escape_formula(row.key or "all"), escape_formula(row.label), *map(_number, figures)]


def funnel_lines(funnel_: Funnel) -> Iterable[list[str]]:
    yield [
        "stage", "stage_label", "contacts_now", "reached_stage_or_later", "conversion_to_next",
        "at_range_start", "entered", "left", "moved_up", "moved_up_share",
    ]  # fmt: skip
    for s in funnel_.stages:
        figures = [s.contacts, s.reached, s.conversion_to_next, s.at_start, s.entered, s.left, s.moved_up]
        yield [s.stage, escape_formula(s.label), *map(_number, [*figures, s.range_conversion])]


def flow_lines(table: FlowTable) -> Iterable[list[str]]:
    yield ["period_start", *(escape_formula(pair.label) for pair in table.pairs), "total"]
    for row in table.rows:
        yield [row.period_start.isoformat(), *map(_number, row.counts), _number(row.total)]
    yield ["total", *map(_number, table.pair_totals), _number(table.total)]


CSV_TABLES = ("funnel", "flow", "clv-stage", "clv-segment")


class ValueCsvView(TenantView):
    """One of the page's tables as CSV (spreadsheet-safe: text cells that look like formulas are quoted).

    Aggregates only, no personal data: whoever may read the page may download its tables.
    """

    http_method_names = ["get"]

    def get(self, request: HttpRequest, tenant_slug: str, table: str) -> HttpResponse:
        if table not in CSV_TABLES:
            raise Http404("No such table.")
        form, range_code = chosen_range(request.GET)
        if not form.is_valid():
            return HttpResponse(
                "; ".join(str(error) for error in form.errors["range"]), status=400, content_type="text/plain"
            )
        snapshot = value_snapshot(tenant=self.tenant)
        lines: Iterable[list[str]]
        if table == "funnel":
            lines = funnel_lines(funnel(snapshot, range_code=range_code))
        elif table == "flow":
            lines = flow_lines(flow_table(snapshot, range_code=range_code))
        elif table == "clv-stage":
            lines = clv_lines(clv_table(snapshot, by="stage"))
        else:
            lines = clv_lines(clv_table(snapshot, by="segment", segment_names=segment_names(tenant=self.tenant)))
        buffer = io.StringIO()
        buffer.write("\ufeff")  # a byte-order mark, for Excel
        csv.writer(buffer).writerows(lines)
        suffix = f"-{range_code}" if table in ("funnel", "flow") else ""
        filename = f"{table}{suffix}-{timezone.localtime(snapshot.computed_at):%Y%m%d-%H%M}.csv"
        response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        response["Cache-Control"] = "no-store"
        return response
