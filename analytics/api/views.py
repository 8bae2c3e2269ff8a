"""Message KPIs over the API: the same figures as the results pages (analytics/selectors.py).

GETs only; any key may read. Another tenant's campaign or journey answers 404; a bad period or
segment list answers 400 with the field and the reason.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from analytics.api import serializers as s
from analytics.selectors import (
    DEFAULT_PERIOD_DAYS,
    Period,
    campaign_results,
    dashboard,
    journey_results,
    segment_comparison,
    tenant_series,
)
from campaigns.models import Campaign
from journeys.models import Journey
from journeys.selectors import journey_version_shown
from tenants.api.base import ERROR_RESPONSE, TenantGenericAPIView, parse
from tenants.models import Tenant

WITH_STAGES = OpenApiParameter(
    "stages", bool, description="Include the figures by lifecycle stage (read live: the slowest part). Default true."
)


def _with_stages(request: Request) -> bool:
    value = str(request.query_params.get("stages", "")).lower()
    if value in ("false", "0", "no"):
        return False
    if value not in ("", "true", "1", "yes"):
        raise ValidationError({"stages": ["true or false."]})
    return True


class TenantAPIView(APIView):
    @property
    def tenant(self) -> Tenant:
        tenant: Tenant = self.request.tenant  # set by ApiKeyAuthentication
        return tenant

    def period(self, request: Request, serializer_class: type[s.PeriodSerializer] = s.PeriodSerializer) -> Any:
        data: dict[str, Any] = {key: value for key, value in request.query_params.items() if key != "segment"}
        if serializer_class is s.SegmentsQuerySerializer:
            data["segment"] = request.query_params.getlist("segment")
        query = parse(serializer_class, data)
        if query.get("start"):
            return Period(query["start"], query["end"]), query
        return Period.last_days(query.get("days") or DEFAULT_PERIOD_DAYS, tenant=self.tenant), query


class CampaignKpisView(TenantGenericAPIView):
    model = Campaign
    lookup_url_kwarg = "campaign_id"
    serializer_class = s.CampaignKpisSerializer

    def scope_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        # Journey steps' hidden campaigns are reported per step under /analytics/journeys/.
        return queryset.filter(kind=Campaign.Kind.CAMPAIGN).select_related("tenant")

    @extend_schema(
        operation_id="analytics_campaign_retrieve",
        parameters=[WITH_STAGES],
        responses={200: s.CampaignKpisSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description=(
            "A campaign's figures over every run: totals; per variant; per segment (who each variant was written "
            "for: a segment, a lifecycle stage, or the default); per recipients' current lifecycle stage; targeted "
            "variants against the default; and per day (the workspace's days). Counts are unique per message (a "
            "message opened twice is one open); machine opens (privacy proxies, scanners) are only in "
            "`opened_any`. Rates are fractions of delivered messages; click_to_open is clicked / opened."
        ),
    )
    def get(self, request: Request, campaign_id: str) -> Response:
        results = campaign_results(campaign=self.get_object(), with_stages=_with_stages(request))
        return Response(s.CampaignKpisSerializer(results).data)


class JourneyKpisView(TenantGenericAPIView):
    model = Journey
    lookup_url_kwarg = "journey_id"
    serializer_class = s.JourneyKpisSerializer

    def scope_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.select_related("tenant")

    @extend_schema(
        operation_id="analytics_journey_retrieve",
        parameters=[WITH_STAGES],
        responses={200: s.JourneyKpisSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description=(
            "A journey's message figures: in all and per send step. A step's figures add up the messages of the "
            "steps with its key in every version (`versions` lists them)."
        ),
    )
    def get(self, request: Request, journey_id: str) -> Response:
        journey = self.get_object()
        results = journey_results(
            journey=journey, shown=journey_version_shown(journey=journey), with_stages=_with_stages(request)
        )
        return Response(s.JourneyKpisSerializer(results).data)


class SeriesView(TenantAPIView):
    @extend_schema(
        operation_id="analytics_series_retrieve",
        parameters=[s.PeriodSerializer],
        responses={200: s.SeriesSerializer, 400: ERROR_RESPONSE},
        description=(
            "The workspace's messages per day of the period: sent, delivered, unique human opens and clicks, "
            "conversions, revenue and every other figure. A message counts on the day of its first open, click, "
            "bounce…; a conversion on the day it happened."
        ),
    )
    def get(self, request: Request) -> Response:
        period, _ = self.period(request)
        points = tenant_series(tenant=self.tenant, period=period)
        return Response(s.SeriesSerializer({"period": period, "days": points}).data)


class SummaryView(TenantAPIView):
    @extend_schema(
        operation_id="analytics_summary_retrieve",
        parameters=[s.PeriodSerializer],
        responses={200: s.SummarySerializer, 400: ERROR_RESPONSE},
        description=(
            "The dashboard's figures for the period: totals, per channel, per campaign and journey, the top segments "
            "by conversion rate (with at least 50 delivered messages) and targeted variants against the default."
        ),
    )
    def get(self, request: Request) -> Response:
        period, _ = self.period(request)
        return Response(s.SummarySerializer(dashboard(tenant=self.tenant, period=period)).data)


class SegmentsView(TenantAPIView):
    @extend_schema(
        operation_id="analytics_segments_retrieve",
        parameters=[s.SegmentsQuerySerializer],
        responses={200: s.SegmentsSerializer, 400: ERROR_RESPONSE},
        description=(
            "Segments side by side: for each, the messages of every variant written for it in the period, next to "
            "the default (generic) variants. Without `segment`, every segment with messages in the period."
        ),
    )
    def get(self, request: Request) -> Response:
        period, query = self.period(request, s.SegmentsQuerySerializer)
        ids = query.get("segment") or []
        comparison = segment_comparison(tenant=self.tenant, period=period, segment_ids=ids)
        data = {
            "period": period, "as_of": comparison.as_of, "default": comparison.default,
            "segments": comparison.rows if ids else comparison.every,
        }  # fmt: skip
        return Response(s.SegmentsSerializer(data).data)
