"""Shapes of the message KPI endpoints: every figure of a set of messages, and the tables built of them."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from analytics.selectors import KPI_COLUMNS, PERIODS, KpiColumn

MAX_PERIOD_DAYS = 731
MAX_SEGMENTS = 20


def _kpi_field(column: KpiColumn) -> serializers.Field:
    if column.kind == "rate":
        return serializers.FloatField(
            allow_null=True, help_text=f"{column.help} A fraction (0.25 is 25 %); null: nothing to divide by."
        )
    if column.kind == "money":
        return serializers.DecimalField(
            max_digits=16, decimal_places=2, allow_null=column.name == "cost_per_conversion", help_text=column.help
        )
    return serializers.IntegerField(help_text=column.help)


KpisSerializer: type[serializers.Serializer] = type(
    "KpisSerializer",
    (serializers.Serializer,),
    {
        "__doc__": "Every figure of a set of messages (docs/analytics.md defines each one).",
        **{column.name: _kpi_field(column) for column in KPI_COLUMNS},
    },
)


class RowSerializer(serializers.Serializer):
    key = serializers.CharField()
    name = serializers.CharField(source="label")
    kpis = KpisSerializer()


class VariantRowSerializer(RowSerializer):
    key = serializers.CharField(help_text="The variant's id (0: deliveries whose variant was deleted).")
    target = serializers.CharField(source="detail.target", default="", help_text="Who the variant was written for.")
    weight = serializers.IntegerField(source="detail.weight", default=None, allow_null=True)


class TargetRowSerializer(RowSerializer):
    key = serializers.CharField(help_text="`segment:<id>`, `stage:<stage>`, `default`, or `none` (deleted variants).")
    kind = serializers.CharField(source="detail.kind", help_text="segment, stage, default or none.")
    segment_id = serializers.IntegerField(source="detail.segment_id", allow_null=True)
    stage = serializers.CharField(source="detail.stage", allow_blank=True)


class StepRowSerializer(RowSerializer):
    key = serializers.CharField(help_text="The step's key; the same key in every version counts together.")
    versions = serializers.ListField(child=serializers.IntegerField(), source="detail.versions")
    channel = serializers.CharField(source="detail.channel", allow_blank=True)


class DayPointSerializer(serializers.Serializer):
    day = serializers.DateField(help_text="A day in the workspace's time zone.")
    kpis = KpisSerializer()


class IntervalSerializer(serializers.Serializer):
    rate = serializers.FloatField(allow_null=True)
    low = serializers.FloatField(allow_null=True, help_text="95 % Wilson interval, low end.")
    high = serializers.FloatField(allow_null=True, help_text="95 % Wilson interval, high end.")


class TargetingSerializer(serializers.Serializer):
    """Segment- and stage-targeted variants against the default variant."""

    rows = RowSerializer(many=True, help_text="segment, stage, targeted (both) and default.")
    targeted_conversion = IntervalSerializer(source="targeted_estimate")
    default_conversion = IntervalSerializer(source="default_estimate")
    conversion_lift = serializers.FloatField(allow_null=True, help_text="Targeted rate / default rate − 1.")
    ctr_lift = serializers.FloatField(allow_null=True)
    engagement_lift = serializers.FloatField(allow_null=True)
    p_value = serializers.FloatField(
        allow_null=True,
        help_text="Two-proportion z-test of the conversion rates (the audiences differ: not a controlled test).",
    )


class CampaignRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    channel = serializers.CharField()


class CampaignKpisSerializer(serializers.Serializer):
    campaign = CampaignRefSerializer()
    as_of = serializers.DateTimeField(allow_null=True, help_text="When the figures were last counted.")
    totals = KpisSerializer()
    variants = VariantRowSerializer(many=True)
    segments = TargetRowSerializer(many=True, source="targets", help_text="By who each variant was written for.")
    stages = RowSerializer(many=True, help_text="By the recipients' current lifecycle stage.")
    stages_as_of = serializers.DateTimeField(
        allow_null=True, help_text="When the stages were counted (they are counted again as contacts move)."
    )
    targeting = TargetingSerializer(source="comparison")
    series = DayPointSerializer(many=True, help_text="Per day, from the first day with figures to the last.")
    channels = RowSerializer(
        many=True, help_text="Sent on each contact's preferred channel: the figures by the channel chosen."
    )


class JourneyRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    status = serializers.CharField()


class JourneyKpisSerializer(serializers.Serializer):
    journey = JourneyRefSerializer()
    as_of = serializers.DateTimeField(allow_null=True)
    totals = KpisSerializer()
    steps = StepRowSerializer(many=True)
    stages = RowSerializer(many=True, help_text="By the recipients' current lifecycle stage.")
    stages_as_of = serializers.DateTimeField(allow_null=True)


class PeriodSerializer(serializers.Serializer):
    days = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_PERIOD_DAYS,
        help_text="The last N days including today (workspace time zone); default 30. "
        f"Common: {', '.join(map(str, PERIODS))}.",
    )  # fmt: skip
    start = serializers.DateField(required=False, help_text="First day (with `end`; wins over `days`).")
    end = serializers.DateField(required=False, help_text="Last day, included.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        start, end = attrs.get("start"), attrs.get("end")
        if (start is None) != (end is None):
            raise serializers.ValidationError({"start" if start is None else "end": ["Give both dates, or neither."]})
        if start and end:
            if end < start:
                raise serializers.ValidationError({"end": ["The end comes before the start."]})
            if (end - start).days + 1 > MAX_PERIOD_DAYS:
                raise serializers.ValidationError({"end": [f"At most {MAX_PERIOD_DAYS} days at a time."]})
        return attrs


class PeriodOutSerializer(serializers.Serializer):
    start = serializers.DateField()
    end = serializers.DateField()


class SeriesSerializer(serializers.Serializer):
    period = PeriodOutSerializer()
    days = DayPointSerializer(many=True)


class SummarySerializer(serializers.Serializer):
    period = PeriodOutSerializer()
    as_of = serializers.DateTimeField(allow_null=True)
    totals = KpisSerializer()
    channels = RowSerializer(many=True)
    campaigns = RowSerializer(many=True, help_text="Campaigns with messages in the period; `key` is the campaign id.")
    journeys = RowSerializer(many=True, help_text="Journeys with messages in the period; `key` is the journey id.")
    top_segments = TargetRowSerializer(many=True, help_text="By conversion rate, segments with enough messages.")
    targeting = TargetingSerializer(source="comparison")


class SegmentsQuerySerializer(PeriodSerializer):
    segment = serializers.ListField(
        child=serializers.IntegerField(min_value=1), required=False, max_length=MAX_SEGMENTS,
        help_text="Segment ids to compare (repeat the parameter); none: every segment with messages in the period.",
    )  # fmt: skip


class SegmentsSerializer(serializers.Serializer):
    period = PeriodOutSerializer()
    as_of = serializers.DateTimeField(allow_null=True)
    segments = TargetRowSerializer(
        many=True, help_text="The segments asked for, in that order; unknown ids are left out."
    )
    default = KpisSerializer(help_text="Every default (generic) variant in the period, for comparison.")
