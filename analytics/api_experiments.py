"""The A/B test of a campaign in the REST API: read it, set it up (PUT), remove it, decide it now.

``/api/v1/campaigns/{campaign_id}/experiment/``: GET answers 200 for any campaign of the key's
workspace (``configured`` false when it has no test, with the variants that could be tested);
PUT replaces the settings before the campaign's run starts; DELETE removes a test that has not
started; ``decide/`` (POST) decides a test under way on the figures so far. Another workspace's
campaign, or a journey step's, is a 404. Bad settings answer 400 with the field and the reason.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import QuerySet
from django.http import Http404
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from analytics.experiments import (
    MAX_DURATION_HOURS,
    MAX_LEVEL,
    MIN_LEVEL,
    SYSTEM,
    ExperimentSettings,
    ab_groups,
    arm_channel,
    arm_variants,
    campaign_variants,
    decision_actor,
    experiment_configure,
    experiment_decide,
    experiment_delete,
    experiment_for,
    result_rows,
)
from analytics.models import Experiment
from campaigns.api.serializers import NamedChoiceField
from campaigns.models import Campaign, CampaignChannel, Variant
from tenants.api.base import ERROR_RESPONSE, TenantGenericAPIView, parse, request_actor

DECIDED = (Experiment.Status.DECIDED, Experiment.Status.SENT)


# --- serializers ---------------------------------------------------------------------------------------
class ExperimentArmSerializer(serializers.Serializer):
    variant = serializers.IntegerField()
    name = serializers.CharField()
    target = serializers.CharField()
    weight = serializers.IntegerField()
    send_hour = serializers.IntegerField(allow_null=True, help_text="Send-time tests: the hour (workspace time).")
    channel = NamedChoiceField(
        choices=CampaignChannel.choices, allow_null=True,
        help_text="Channel tests: the channel this variant goes by (null for the other tests).",
    )  # fmt: skip


class ExperimentArmFiguresSerializer(serializers.Serializer):
    variant = serializers.IntegerField(source="variant_id")
    name = serializers.CharField()
    sent = serializers.IntegerField(help_text="Messages of the test share sent with this variant.")
    successes = serializers.IntegerField(help_text="Of those, how many had a human open / click, or a conversion.")
    rate = serializers.FloatField()
    ci_low = serializers.FloatField(help_text="Wilson score interval at the test's level.")
    ci_high = serializers.FloatField()
    p_value = serializers.FloatField(allow_null=True, help_text="z-test against the leader (Bonferroni-corrected).")
    probability_best = serializers.FloatField(allow_null=True, help_text="Bayesian probability to be best.")


class ExperimentDecisionSerializer(serializers.Serializer):
    winner = serializers.IntegerField(allow_null=True, help_text="The variant sent to the rest (null: none).")
    winner_name = serializers.CharField()
    significant = serializers.BooleanField()
    p_value = serializers.FloatField(allow_null=True)
    probability = serializers.FloatField(allow_null=True)
    reason = serializers.CharField()
    decided_at = serializers.DateTimeField()
    automatic = serializers.BooleanField(help_text="Decided when the test ended (false: a person decided early).")
    released = serializers.IntegerField(help_text="Held messages released with the winner.")


class ExperimentSerializer(serializers.Serializer):
    campaign = serializers.IntegerField()
    configured = serializers.BooleanField()
    status = serializers.ChoiceField(choices=Experiment.Status.choices, allow_null=True)
    tested = serializers.ChoiceField(choices=Experiment.Tested.choices, allow_null=True)
    control = serializers.IntegerField(allow_null=True)
    arms = ExperimentArmSerializer(many=True)
    candidates = serializers.ListField(
        child=serializers.IntegerField(), help_text="Variants that share a target with another: possible controls."
    )
    test_share = serializers.IntegerField(allow_null=True)
    metric = serializers.ChoiceField(choices=Experiment.Metric.choices, allow_null=True)
    duration_hours = serializers.IntegerField(allow_null=True)
    significance_level = serializers.DecimalField(max_digits=4, decimal_places=3, allow_null=True)
    method = serializers.ChoiceField(choices=Experiment.Method.choices, allow_null=True)
    fallback = serializers.ChoiceField(choices=Experiment.Fallback.choices, allow_null=True)
    run = serializers.IntegerField(allow_null=True)
    held = serializers.IntegerField(help_text="Messages waiting for the winner.")
    started_at = serializers.DateTimeField(allow_null=True)
    decide_at = serializers.DateTimeField(allow_null=True)
    results = ExperimentArmFiguresSerializer(
        many=True, help_text="Each variant's figures: at the decision once decided, so far while testing."
    )
    decision = ExperimentDecisionSerializer(allow_null=True)


class ExperimentWriteSerializer(serializers.Serializer):
    control = serializers.IntegerField(help_text="A variant of the campaign; the others with its target are the arms.")
    tested = serializers.ChoiceField(choices=Experiment.Tested.choices, default=Experiment.Tested.SUBJECT)
    test_share = serializers.IntegerField(min_value=1, max_value=100, default=20)
    metric = serializers.ChoiceField(choices=Experiment.Metric.choices, default=Experiment.Metric.CLICK)
    duration_hours = serializers.IntegerField(min_value=1, max_value=MAX_DURATION_HOURS, default=24)
    significance_level = serializers.DecimalField(
        max_digits=4, decimal_places=3, min_value=MIN_LEVEL, max_value=MAX_LEVEL, default=Decimal("0.950")
    )
    method = serializers.ChoiceField(choices=Experiment.Method.choices, default=Experiment.Method.Z_TEST)
    fallback = serializers.ChoiceField(choices=Experiment.Fallback.choices, default=Experiment.Fallback.CONTROL)
    arm_send_hours = serializers.DictField(
        child=serializers.IntegerField(min_value=0, max_value=23), required=False,
        help_text="Send-time tests: variant id → hour of the day (0-23) in the workspace's time zone.",
    )  # fmt: skip

    arm_channels = serializers.DictField(
        child=serializers.ChoiceField(choices=CampaignChannel.choices), required=False,
        help_text="Channel tests: variant id → channel (an arm left out goes by the campaign's channel); two "
        "channels at least.",
    )  # fmt: skip

    def validate_arm_send_hours(self, value: dict[str, int]) -> dict[int, int]:
        if not all(str(key).isdigit() for key in value):
            raise serializers.ValidationError("Keys are variant ids.")
        return {int(key): hour for key, hour in value.items()}

    def validate_arm_channels(self, value: dict[str, str]) -> dict[int, str]:
        if not all(str(key).isdigit() for key in value):
            raise serializers.ValidationError("Keys are variant ids.")
        return {int(key): channel for key, channel in value.items()}


def _target(variant: Variant) -> str:
    if variant.target == Variant.Target.SEGMENT:
        return f"segment:{variant.target_segment_id}"
    if variant.target == Variant.Target.STAGE:
        return f"stage:{variant.target_stage}"
    return "default"


def experiment_document(campaign: Campaign, experiment: Experiment | None) -> dict[str, Any]:
    """The experiment as the API shows it (a campaign without one: ``configured`` false)."""
    variants = campaign_variants(campaign)
    candidates = [v.pk for group in ab_groups(variants) for v in group]
    if experiment is None:
        return {
            "campaign": campaign.pk, "configured": False, "status": None, "tested": None, "control": None,
            "arms": [], "candidates": candidates, "test_share": None, "metric": None, "duration_hours": None,
            "significance_level": None, "method": None, "fallback": None, "run": None, "held": 0,
            "started_at": None, "decide_at": None, "results": [], "decision": None,
        }  # fmt: skip
    hours = experiment.arm_send_hours or {}
    by_channel = experiment.tested == Experiment.Tested.CHANNEL
    arms = [
        {
            "variant": v.pk, "name": v.name, "target": _target(v), "weight": v.weight,
            "send_hour": hours.get(str(v.pk)),
            "channel": arm_channel(experiment.arm_channels, campaign, v.pk) if by_channel else None,
        }
        for v in arm_variants(experiment)
    ]  # fmt: skip
    decision = None
    if experiment.status in DECIDED:
        decision = {
            "winner": experiment.winner_id, "winner_name": experiment.winner_name,
            "significant": bool(experiment.significant), "p_value": experiment.p_value,
            "probability": experiment.probability, "reason": experiment.reason, "decided_at": experiment.decided_at,
            "automatic": decision_actor(experiment) == SYSTEM.label, "released": experiment.released_count,
        }  # fmt: skip
    return {
        "campaign": campaign.pk, "configured": True, "status": experiment.status, "tested": experiment.tested,
        "control": experiment.control_id, "arms": arms, "candidates": candidates,
        "test_share": experiment.test_share, "metric": experiment.metric, "duration_hours": experiment.duration_hours,
        "significance_level": experiment.significance_level, "method": experiment.method,
        "fallback": experiment.fallback, "run": experiment.run_id,
        "held": experiment.held_count if experiment.status == Experiment.Status.TESTING else 0,
        "started_at": experiment.started_at, "decide_at": experiment.decide_at,
        "results": result_rows(experiment), "decision": decision,
    }  # fmt: skip


# --- views ---------------------------------------------------------------------------------------------
class CampaignExperimentAPIView(TenantGenericAPIView):
    """Under /campaigns/{campaign_id}/experiment/: another workspace's campaign is a 404."""

    model = Campaign
    lookup_url_kwarg = "campaign_id"
    serializer_class = ExperimentSerializer

    def scope_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(kind=Campaign.Kind.CAMPAIGN).select_related("tenant")

    def respond(self, campaign: Campaign, code: int = status.HTTP_200_OK) -> Response:
        document = experiment_document(campaign, experiment_for(campaign))
        return Response(ExperimentSerializer(document).data, status=code)


class CampaignExperimentView(CampaignExperimentAPIView):
    @extend_schema(
        operation_id="campaigns_experiment_retrieve",
        responses={200: ExperimentSerializer, 404: ERROR_RESPONSE},
        description=(
            "The campaign's A/B test: settings, arms, each variant's rate with its confidence interval (at the "
            "decision, or so far while testing) and the decision with its reason. `configured` is false when the "
            "campaign has none; `candidates` lists the variants that could be its control."
        ),
    )
    def get(self, request: Request, campaign_id: str) -> Response:
        return self.respond(self.get_object())

    @extend_schema(
        operation_id="campaigns_experiment_update",
        request=ExperimentWriteSerializer,
        responses={200: ExperimentSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        examples=[
            OpenApiExample(
                "Subject test on 20 %, clicks, 24 hours, z-test at 95 %",
                request_only=True,
                value={
                    "control": 12,
                    "tested": "subject",
                    "test_share": 20,
                    "metric": "click",
                    "duration_hours": 24,
                    "significance_level": "0.950",
                    "method": "z_test",
                    "fallback": "control",
                },
            )
        ],
        description=(
            "Set up or replace the test before the campaign's run starts (omitted fields take their defaults). "
            "The arms are the campaign's variants with the control's target; when the run starts, `test_share` % "
            "of their contacts get them and the rest waits `duration_hours` for the winner."
        ),
    )
    def put(self, request: Request, campaign_id: str) -> Response:
        campaign = self.get_object()
        data = parse(ExperimentWriteSerializer, request.data)
        chosen = ExperimentSettings(
            control_id=data["control"], tested=data["tested"], test_share=data["test_share"], metric=data["metric"],
            duration_hours=data["duration_hours"], significance_level=data["significance_level"],
            method=data["method"], fallback=data["fallback"], arm_send_hours=data.get("arm_send_hours"),
            arm_channels=data.get("arm_channels"),
        )  # fmt: skip
        experiment_configure(campaign=campaign, settings=chosen, actor=request_actor(request))
        return self.respond(campaign)

    @extend_schema(
        operation_id="campaigns_experiment_destroy",
        responses={204: None, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description="Remove a test that has not started (400 once it has: it stays with its results).",
    )
    def delete(self, request: Request, campaign_id: str) -> Response:
        campaign = self.get_object()
        experiment = experiment_for(campaign)
        if experiment is None:
            raise Http404
        experiment_delete(experiment=experiment, actor=request_actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class CampaignExperimentDecideView(CampaignExperimentAPIView):
    @extend_schema(
        operation_id="campaigns_experiment_decide",
        request=None,
        responses={200: ExperimentSerializer, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE},
        description=(
            "Decide a test under way now, with its stated test on the figures so far; the rest of the audience "
            "gets the winner (or the fallback). 400 on `status` when the test is not under way."
        ),
    )
    def post(self, request: Request, campaign_id: str) -> Response:
        campaign = self.get_object()
        experiment = experiment_for(campaign)
        if experiment is None:
            raise Http404
        experiment_decide(experiment=experiment, actor=request_actor(request))
        return self.respond(campaign)
