"""Message results pages: the tenant dashboard, a campaign's and a journey's results, segments side by side.

Every figure comes from analytics/selectors.py; each table has a CSV download (``export.csv?table=…``)
read from the same selector, so a download matches the page. Members of every role may read.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from analytics import kpi_charts
from analytics.selectors import (
    DEFAULT_PERIOD_DAYS,
    KPI_COLUMNS,
    PERIODS,
    TABLE_COLUMNS,
    TOP_SEGMENT_MIN_DELIVERED,
    DayPoint,
    Period,
    Row,
    SegmentComparison,
    TargetingComparison,
    campaign_results,
    dashboard,
    journey_results,
    segment_comparison,
)
from analytics.value import value_summary
from campaigns.models import Campaign
from contacts.export import escape_formula
from journeys.models import Journey
from journeys.selectors import journey_summary, journey_version_shown
from segments.models import Segment
from tenants.web import TenantView

MAX_PERIOD_DAYS = 731
MAX_COMPARED_SEGMENTS = 8


# --- forms ----------------------------------------------------------------------------------------------
class PeriodForm(forms.Form):
    """Last 7, 30, 90 or 365 days, or two dates (the tenant's days, both included)."""

    days = forms.TypedChoiceField(
        choices=[(d, f"Last {d} days") for d in PERIODS], coerce=int, required=False, empty_value=None
    )
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("start"), data.get("end")
        if (start is None) != (end is None) and not self.errors:
            self.add_error("start" if start is None else "end", "Give both dates, or neither.")
        elif start and end:
            if end < start:
                self.add_error("end", "The end comes before the start.")
            elif (end - start).days + 1 > MAX_PERIOD_DAYS:
                self.add_error("end", f"At most {MAX_PERIOD_DAYS} days at a time.")
        return data

    def period(self, view: TenantView) -> Period:
        """The chosen period; the last 30 days when nothing (or nothing valid) was chosen."""
        if self.is_valid():
            if self.cleaned_data.get("start") and self.cleaned_data.get("end"):
                return Period(self.cleaned_data["start"], self.cleaned_data["end"])
            if self.cleaned_data.get("days"):
                return Period.last_days(self.cleaned_data["days"], tenant=view.tenant)
        return Period.last_days(DEFAULT_PERIOD_DAYS, tenant=view.tenant)


class SegmentCompareForm(PeriodForm):
    segment = forms.ModelMultipleChoiceField(queryset=Segment.all_tenants.none(), required=False)

    def __init__(self, *args: Any, tenant: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["segment"]
        assert isinstance(field, forms.ModelMultipleChoiceField)
        field.queryset = Segment.objects.filter(tenant=tenant).order_by("name")

    def clean_segment(self) -> Any:
        chosen = self.cleaned_data["segment"]
        if len(chosen) > MAX_COMPARED_SEGMENTS:
            raise forms.ValidationError(f"Compare at most {MAX_COMPARED_SEGMENTS} segments at a time.")
        return chosen


def period_query(period: Period) -> str:
    return f"start={period.start.isoformat()}&end={period.end.isoformat()}"


# --- CSV ------------------------------------------------------------------------------------------------
def csv_cell(value: Any) -> str:
    """A figure as text: rates as fractions (0.123457), money with two decimals, nothing as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6f}"
    if isinstance(value, Decimal):
        return f"{value.quantize(Decimal('0.01')):.2f}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return escape_formula(str(value))  # names come from users: never a formula in a spreadsheet


def csv_response(filename: str, header: Sequence[str], lines: Sequence[Sequence[Any]]) -> HttpResponse:
    buffer = io.StringIO()
    buffer.write("\ufeff")  # a byte-order mark: spreadsheets then read the file as UTF-8
    writer = csv.writer(buffer)
    writer.writerow([escape_formula(h) for h in header])
    for line in lines:
        writer.writerow([csv_cell(value) for value in line])
    response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


KPI_HEADER = [c.name for c in KPI_COLUMNS]


def row_lines(rows: Sequence[Row], extra: Sequence[tuple[str, Callable[[Row], Any]]] = ()) -> tuple[list[str], list]:
    header = ["key", "name", *(name for name, _ in extra), *KPI_HEADER]
    lines = [[r.key, r.label, *(get(r) for _, get in extra), *(getattr(r.kpis, n) for n in KPI_HEADER)] for r in rows]
    return header, lines


def series_lines(points: Sequence[DayPoint]) -> tuple[list[str], list]:
    return ["day", *KPI_HEADER], [[p.day, *(getattr(p.kpis, n) for n in KPI_HEADER)] for p in points]


def comparison_lines(comparison: TargetingComparison) -> tuple[list[str], list]:
    header, lines = row_lines(comparison.rows)
    estimates = {"targeted": comparison.targeted_estimate, "default": comparison.default_estimate}
    header += ["conversion_rate_low_95", "conversion_rate_high_95"]
    for line, row in zip(lines, comparison.rows, strict=True):
        estimate = estimates.get(row.key)
        line += [estimate.low, estimate.high] if estimate else [None, None]
    return header, lines


def _table(
    request: HttpRequest, tables: dict[str, Callable[[], tuple[list[str], list]]], filename: str
) -> HttpResponse:
    name = request.GET.get("table") or next(iter(tables))  # the first table when none is named
    if name not in tables:
        choices = ", ".join(sorted(tables))
        return HttpResponse(f"table: choose one of {choices}.", status=400, content_type="text/plain; charset=utf-8")
    header, lines = tables[name]()
    return csv_response(f"{filename}-{name}.csv", header, lines)


# --- pages ----------------------------------------------------------------------------------------------
class AnalyticsView(TenantView):
    http_method_names = ["get", "head", "options"]

    def render(self, request: HttpRequest, template: str, context: dict[str, Any]) -> HttpResponse:
        context.setdefault("columns", TABLE_COLUMNS)
        context.setdefault("all_columns", KPI_COLUMNS)
        return render(request, template, context)


class DashboardView(AnalyticsView):
    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form = PeriodForm(request.GET)
        period = form.period(self)
        board = dashboard(tenant=self.tenant, period=period)
        context = {
            "form": form, "period": period, "period_query": period_query(period), "board": board,
            "min_delivered": TOP_SEGMENT_MIN_DELIVERED, "periods": PERIODS,
            "charts": {
                "messages": kpi_charts.messages_chart(board.series),
                "engagement": kpi_charts.engagement_chart(board.series),
                "conversions": kpi_charts.conversions_chart(board.series),
                "segments": kpi_charts.top_segments_chart(board.top_segments),
                "comparison": kpi_charts.comparison_chart(board.comparison),
            },
        }  # fmt: skip
        # The lifecycle funnel and CLV by stage (analytics/value.py): from the cache, or left to a worker.
        context.update(value_summary(self.tenant, compute=False))
        return self.render(request, "analytics/dashboard.html", context)


class DashboardCsvView(AnalyticsView):
    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        period = PeriodForm(request.GET).period(self)
        board = dashboard(tenant=self.tenant, period=period)
        tables = {
            "series": lambda: series_lines(board.series),
            "channels": lambda: row_lines(board.channels),
            "campaigns": lambda: row_lines(board.campaigns),
            "journeys": lambda: row_lines(board.journeys),
            "segments": lambda: row_lines(board.top_segments),
            "targeting": lambda: comparison_lines(board.comparison),
        }
        return _table(request, tables, f"analytics-{period.start}-{period.end}")


class CampaignResultsView(AnalyticsView):
    def campaign(self, campaign_id: int) -> Campaign:
        # Journey steps' hidden campaigns have their figures on the journey's page.
        return get_object_or_404(
            Campaign.objects.filter(tenant=self.tenant, kind=Campaign.Kind.CAMPAIGN).select_related("tenant"),
            pk=campaign_id,
        )

    def get(self, request: HttpRequest, tenant_slug: str, campaign_id: int) -> HttpResponse:
        results = campaign_results(campaign=self.campaign(campaign_id))
        charts = {
            "variants": kpi_charts.rates_chart(results.variants),
            "engagement": kpi_charts.engagement_chart(results.series),
            "conversions": kpi_charts.conversions_chart(results.series),
            "comparison": kpi_charts.comparison_chart(results.comparison),
            "stages": kpi_charts.rates_chart(results.stages),
        }
        return self.render(
            request, "analytics/campaign.html", {"campaign": results.campaign, "results": results, "charts": charts}
        )


class CampaignResultsCsvView(CampaignResultsView):
    def get(self, request: HttpRequest, tenant_slug: str, campaign_id: int) -> HttpResponse:
        campaign = self.campaign(campaign_id)
        results = campaign_results(campaign=campaign, with_stages=request.GET.get("table") == "stages")
        tables = {
            "totals": lambda: row_lines([Row("total", campaign.name, results.totals)]),
            "variants": lambda: row_lines(
                results.variants, [("target", lambda r: r.detail.get("target", "")), ("weight", _weight)]
            ),
            "segments": lambda: row_lines(results.targets),
            "stages": lambda: row_lines(results.stages),
            "targeting": lambda: comparison_lines(results.comparison),
            "series": lambda: series_lines(results.series),
            "channels": lambda: row_lines(results.channels),
        }
        return _table(request, tables, f"campaign-{campaign.pk}")


def _weight(row: Row) -> Any:
    return row.detail.get("weight")


def _versions(row: Row) -> str:
    return " ".join(map(str, row.detail["versions"]))


class JourneyResultsView(AnalyticsView):
    def journey(self, journey_id: int) -> Journey:
        return get_object_or_404(Journey.objects.filter(tenant=self.tenant).select_related("tenant"), pk=journey_id)

    def get(self, request: HttpRequest, tenant_slug: str, journey_id: int) -> HttpResponse:
        journey = self.journey(journey_id)
        results = journey_results(journey=journey, shown=journey_version_shown(journey=journey))
        charts = {"steps": kpi_charts.rates_chart(results.steps), "stages": kpi_charts.rates_chart(results.stages)}
        context = {
            "journey": journey,
            "results": results,
            "summary": journey_summary(journey=journey),
            "charts": charts,
        }
        return self.render(request, "analytics/journey.html", context)


class JourneyResultsCsvView(JourneyResultsView):
    def get(self, request: HttpRequest, tenant_slug: str, journey_id: int) -> HttpResponse:
        journey = self.journey(journey_id)
        results = journey_results(
            journey=journey,
            shown=journey_version_shown(journey=journey),
            with_stages=request.GET.get("table") == "stages",
        )
        tables = {
            "steps": lambda: row_lines(
                results.steps, [("versions", lambda r: " ".join(map(str, r.detail["versions"])))]
            ),
            "stages": lambda: row_lines(results.stages),
        }
        return _table(request, tables, f"journey-{journey.pk}")


class SegmentCompareView(AnalyticsView):
    def chosen(self, request: HttpRequest) -> tuple[SegmentCompareForm, SegmentComparison]:
        form = SegmentCompareForm(request.GET, tenant=self.tenant)
        period = form.period(self)
        chosen = [s.pk for s in form.cleaned_data["segment"]] if form.is_valid() else []
        return form, segment_comparison(tenant=self.tenant, period=period, segment_ids=chosen)

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form, comparison = self.chosen(request)
        rows = comparison.rows
        shown = [*rows, Row("default", "Default variants (generic)", comparison.default)] if rows else []
        context = {
            "form": form, "period": comparison.period, "period_query": period_query(comparison.period),
            "comparison": comparison, "shown": shown, "periods": PERIODS, "max_segments": MAX_COMPARED_SEGMENTS,
            "chosen_query": "&".join(f"segment={r.detail['segment_id']}" for r in rows),
            "chosen_ids": request.GET.getlist("segment"),
            "charts": {"segments": kpi_charts.rates_chart(shown)} if shown else {},
        }  # fmt: skip
        return self.render(request, "analytics/segments.html", context)


class SegmentCompareCsvView(SegmentCompareView):
    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        _, comparison = self.chosen(request)
        shown = [*comparison.rows, Row("default", "Default variants (generic)", comparison.default)]
        tables = {"compared": lambda: row_lines(shown), "all": lambda: row_lines(comparison.every)}
        period = comparison.period
        return _table(request, tables, f"segments-{period.start}-{period.end}")
