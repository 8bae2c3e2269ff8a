"""API: customer lifetime value by stage or segment, and the lifecycle funnel with its flows.

The same figures as the value page (analytics/value.py), from the same cached snapshot.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from analytics.value import (
    CLV_BY,
    DEFAULT_RANGE,
    RANGES,
    STAGES,
    ClvTable,
    FlowTable,
    Funnel,
    Lifespan,
    ValueRow,
    clv_table,
    flow_table,
    funnel,
    segment_names,
    value_snapshot,
)
from tenants.api.base import ERROR_RESPONSE, parse
from tenants.models import Tenant


def money(**kwargs: Any) -> serializers.DecimalField:
    return serializers.DecimalField(max_digits=16, decimal_places=2, **kwargs)


def _one_of(values: list[str] | tuple[str, ...]) -> dict[str, str]:
    """A string schema that admits ``values`` only, written as a pattern rather than an enum.

    drf-spectacular names every enum after its property and warns when one set of values gets several
    names (``stage``, ``from_stage``, the contacts API's ``lifecycle_stage``); a pattern says the same
    without a named component.
    """
    return {"type": "string", "pattern": f"^({'|'.join(values)})$", "description": f"One of {', '.join(values)}."}


@extend_schema_field(_one_of(STAGES))
class StageField(serializers.CharField):
    """A lifecycle stage code."""


@extend_schema_field(_one_of(CLV_BY))
class ClvByField(serializers.CharField):
    """``stage`` or ``segment``."""


@extend_schema_field(_one_of(("day", "week")))
class BucketField(serializers.CharField):
    """``day`` or ``week``."""


def request_tenant(request: Request) -> Tenant:
    return request._request.tenant  # type: ignore[attr-defined]


# --- serializers ------------------------------------------------------------------------------------
class ClvQuerySerializer(serializers.Serializer):
    by = serializers.ChoiceField(
        choices=[(by, by) for by in CLV_BY],
        default="stage",
        help_text="Group contacts by lifecycle `stage` or `segment`.",
    )


class LifespanSerializer(serializers.Serializer):
    years = serializers.DecimalField(max_digits=6, decimal_places=2, help_text="Expected customer lifespan.")
    estimated = serializers.BooleanField(
        help_text="True: 1 / yearly churn of the tenant's buyers. False: too few buyers first seen a year ago or "
        "earlier; the default lifespan applies."
    )
    cohort = serializers.IntegerField(help_text="Buyers first seen at least a year ago.")
    churned = serializers.IntegerField(help_text="Of them, those with no order in the last year.")
    churn_rate = serializers.FloatField(allow_null=True, help_text="churned / cohort (null without an estimate).")


class ValueRowSerializer(serializers.Serializer):
    stage = StageField(allow_null=True, help_text="With `by=stage`.")
    segment_id = serializers.IntegerField(allow_null=True, help_text="With `by=segment`.")
    name = serializers.CharField(help_text="The stage's or segment's name.")
    contacts = serializers.IntegerField()
    buyers = serializers.IntegerField(help_text="Contacts with at least one order.")
    buyer_share = serializers.FloatField(allow_null=True, help_text="buyers / contacts, 0 to 1.")
    orders = serializers.IntegerField()
    revenue = money()
    revenue_per_contact = money(allow_null=True)
    revenue_per_buyer = money(allow_null=True)
    average_order_value = money(allow_null=True)
    purchases_per_year = serializers.DecimalField(
        max_digits=12, decimal_places=2, allow_null=True, help_text="Orders per buyer-year (tenure at least 30 days)."
    )
    predicted_clv = money(
        allow_null=True, help_text="Per buyer: average order value × purchases per year × lifespan years."
    )


class ClvSerializer(serializers.Serializer):
    by = ClvByField()
    as_of = serializers.DateTimeField(help_text="When the figures were computed (at most 10 minutes ago).")
    lifespan = LifespanSerializer()
    rows = ValueRowSerializer(many=True, help_text="Stages in funnel order; segments by revenue, highest first.")
    total = ValueRowSerializer(help_text="Every contact of the tenant.")


class FunnelQuerySerializer(serializers.Serializer):
    range = serializers.ChoiceField(
        choices=[(r.code, r.label) for r in RANGES.values()],
        default=DEFAULT_RANGE,
        help_text="The time range of the flows: `30d` by day, `12w` or `52w` by week (weeks start on Monday, in the "
        "tenant's time zone).",
    )


class FlowRangeSerializer(serializers.Serializer):
    code = serializers.CharField()
    name = serializers.CharField()
    bucket = BucketField()
    periods = serializers.ListField(child=serializers.DateField(), help_text="The first day of each period.")


class FunnelStageSerializer(serializers.Serializer):
    stage = StageField()
    name = serializers.CharField()
    contacts = serializers.IntegerField(help_text="At this stage now.")
    reached = serializers.IntegerField(help_text="At this stage or a later one now.")
    conversion_to_next = serializers.FloatField(
        allow_null=True, help_text="Reached the next stage / reached this one (null for the last stage)."
    )
    at_start = serializers.IntegerField(help_text="At this stage when the range began: now − entered + left.")
    entered = serializers.IntegerField(help_text="Moved into this stage within the range (new contacts included).")
    left = serializers.IntegerField(help_text="Moved out of this stage within the range.")
    moved_up = serializers.IntegerField(help_text="Moved from this stage to a later one within the range.")
    range_conversion = serializers.FloatField(
        allow_null=True, help_text="moved_up / (at_start + entered): the share of those at this stage who moved up."
    )


class FlowSerializer(serializers.Serializer):
    period_start = serializers.DateField()
    from_stage = StageField(allow_null=True, help_text="null: a new contact's first stage.")
    to_stage = StageField()
    contacts = serializers.IntegerField()


class FunnelSerializer(serializers.Serializer):
    as_of = serializers.DateTimeField(help_text="When the figures were computed (at most 10 minutes ago).")
    range = FlowRangeSerializer()
    total_contacts = serializers.IntegerField()
    stages = FunnelStageSerializer(many=True, help_text="In funnel order, first stage first.")
    flows = FlowSerializer(many=True, help_text="Every period and pair of stages with at least one move.")


# --- turning the figures into documents ---------------------------------------------------------------
def _lifespan(lifespan: Lifespan) -> dict[str, Any]:
    return {
        "years": lifespan.years,
        "estimated": lifespan.estimated,
        "cohort": lifespan.cohort,
        "churned": lifespan.churned,
        "churn_rate": lifespan.churn_rate,
    }


def _row(row: ValueRow, by: str) -> dict[str, Any]:
    return {
        "stage": row.key if by == "stage" and row.key else None,
        "segment_id": int(row.key) if by == "segment" and row.key else None,
        "name": row.label,
        "contacts": row.contacts,
        "buyers": row.buyers,
        "buyer_share": row.buyer_share,
        "orders": row.orders,
        "revenue": row.revenue,
        "revenue_per_contact": row.revenue_per_contact,
        "revenue_per_buyer": row.revenue_per_buyer,
        "average_order_value": row.average_order_value,
        "purchases_per_year": row.purchases_per_year,
        "predicted_clv": row.predicted_clv,
    }


def clv_document(table: ClvTable) -> dict[str, Any]:
    return {
        "by": table.by,
        "as_of": table.as_of,
        "lifespan": _lifespan(table.lifespan),
        "rows": [_row(row, table.by) for row in table.rows],
        "total": _row(table.total, table.by),
    }


def funnel_document(funnel_: Funnel, flows: FlowTable) -> dict[str, Any]:
    return {
        "as_of": funnel_.as_of,
        "range": {
            "code": flows.range.code,
            "name": flows.range.label,
            "bucket": flows.range.bucket,
            "periods": [row.period_start for row in flows.rows],
        },
        "total_contacts": funnel_.total_contacts,
        "stages": [
            {
                "stage": s.stage,
                "name": s.label,
                "contacts": s.contacts,
                "reached": s.reached,
                "conversion_to_next": s.conversion_to_next,
                "at_start": s.at_start,
                "entered": s.entered,
                "left": s.left,
                "moved_up": s.moved_up,
                "range_conversion": s.range_conversion,
            }
            for s in funnel_.stages
        ],
        "flows": [
            {
                "period_start": row.period_start,
                "from_stage": pair.from_stage or None,
                "to_stage": pair.to_stage,
                "contacts": n,
            }
            for row in flows.rows
            for pair, n in zip(flows.pairs, row.counts, strict=True)
            if n
        ],
    }


# --- views ------------------------------------------------------------------------------------------------
class ValueClvView(APIView):
    @extend_schema(
        operation_id="analytics_value_clv",
        tags=["analytics"],
        parameters=[ClvQuerySerializer],
        responses={200: ClvSerializer, 400: ERROR_RESPONSE},
        examples=[
            OpenApiExample(
                "By stage (one row shown)",
                response_only=True,
                value={
                    "by": "stage",
                    "as_of": "2026-12-01T10:00:00Z",
                    "lifespan": {"years": "4.00", "estimated": True, "cohort": 60, "churned": 15, "churn_rate": 0.25},
                    "rows": [
                        {
                            "stage": "repeat_customer",
                            "segment_id": None,
                            "name": "Repeat customer",
                            "contacts": 40,
                            "buyers": 40,
                            "buyer_share": 1.0,
                            "orders": 100,
                            "revenue": "5000.00",
                            "revenue_per_contact": "125.00",
                            "revenue_per_buyer": "125.00",
                            "average_order_value": "50.00",
                            "purchases_per_year": "2.50",
                            "predicted_clv": "500.00",
                        }
                    ],
                    "total": {
                        "stage": None,
                        "segment_id": None,
                        "name": "All contacts",
                        "contacts": 100,
                        "buyers": 40,
                        "buyer_share": 0.4,
                        "orders": 100,
                        "revenue": "5000.00",
                        "revenue_per_contact": "50.00",
                        "revenue_per_buyer": "125.00",
                        "average_order_value": "50.00",
                        "purchases_per_year": "2.50",
                        "predicted_clv": "500.00",
                    },
                },
            )
        ],
        description=(
            "Customer lifetime value per lifecycle stage (`by=stage`, funnel order) or per segment (`by=segment`, "
            "members now, most revenue first), and for every contact (`total`). Historic: revenue and orders so "
            "far, per contact and per buyer (a contact with at least one order). Predicted, per buyer: average "
            "order value × purchases per buyer per year × expected lifespan in years; purchases per year = orders / "
            "buyer-years (each buyer counts the time since first seen, at least 30 days); lifespan = 1 / yearly "
            "churn (the share of buyers first seen a year ago or earlier with no order in the last year), at most "
            "10 years, or 3 years while fewer than 50 buyers are that old. Computed at most 10 minutes ago "
            "(`as_of`)."
        ),
    )
    def get(self, request: Request) -> Response:
        query = parse(ClvQuerySerializer, request.query_params)
        tenant = request_tenant(request)
        snapshot = value_snapshot(tenant=tenant)
        names = segment_names(tenant=tenant) if query["by"] == "segment" else None
        table = clv_table(snapshot, by=query["by"], segment_names=names)
        return Response(ClvSerializer(clv_document(table)).data)


class ValueFunnelView(APIView):
    @extend_schema(
        operation_id="analytics_value_funnel",
        tags=["analytics"],
        parameters=[FunnelQuerySerializer],
        responses={200: FunnelSerializer, 400: ERROR_RESPONSE},
        description=(
            "The lifecycle funnel: contacts at each stage now, at that stage or a later one (`reached`) and the "
            "share reaching the next stage; within the range, each stage's contacts at the start, entries, exits "
            "and moves up, and the flows: how many contacts moved from one stage to another per day or week "
            "(`from_stage` null: a new contact's first stage). Computed at most 10 minutes ago (`as_of`)."
        ),
    )
    def get(self, request: Request) -> Response:
        query = parse(FunnelQuerySerializer, request.query_params)
        snapshot = value_snapshot(tenant=request_tenant(request))
        document = funnel_document(
            funnel(snapshot, range_code=query["range"]), flow_table(snapshot, range_code=query["range"])
        )
        return Response(FunnelSerializer(document).data)
