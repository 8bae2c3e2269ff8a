"""The A/B test settings form: parses what a person chose into ``ExperimentSettings``.

The rules (arms, metric for the channel, hours of a send-time test) are the service's
(``analytics.experiments.experiment_configure``); its errors come back onto these fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, cast

from django import forms

from analytics.experiments import MAX_DURATION_HOURS, ExperimentSettings
from analytics.models import Experiment
from campaigns.models import CampaignChannel, Variant

LEVELS = [("0.900", "90 %"), ("0.950", "95 % (usual)"), ("0.990", "99 %")]


def target_label(variant: Variant) -> str:
    if variant.target == Variant.Target.SEGMENT:
        return f"members of “{variant.target_segment.name}”" if variant.target_segment else "a segment"
    if variant.target == Variant.Target.STAGE:
        return f"lifecycle stage {variant.get_target_stage_display()}"
    return "everyone else (the default)"


def hour_field(variant_id: int) -> str:
    return f"hour_{variant_id}"


def channel_field(variant_id: int) -> str:
    return f"channel_{variant_id}"


class ExperimentForm(forms.Form):
    control = forms.TypedChoiceField(
        coerce=int, label="Control",
        help_text="The first variant; the others with its target are the challengers.",
    )  # fmt: skip
    tested = forms.ChoiceField(choices=Experiment.Tested.choices, label="What the variants differ in")
    test_share = forms.IntegerField(
        min_value=1, max_value=100, initial=20, label="Test share (%)",
        help_text="Of the variants' contacts; the rest waits for the winner.",
    )  # fmt: skip
    metric = forms.ChoiceField(choices=Experiment.Metric.choices, initial=Experiment.Metric.CLICK, label="Metric")
    duration_hours = forms.IntegerField(
        min_value=1, max_value=MAX_DURATION_HOURS, initial=24, label="Duration (hours)",
        help_text="How long the test share has to respond before the decision.",
    )  # fmt: skip
    significance_level = forms.TypedChoiceField(
        choices=LEVELS, coerce=Decimal, initial="0.950", label="Significance level"
    )
    method = forms.ChoiceField(
        choices=Experiment.Method.choices, initial=Experiment.Method.Z_TEST, widget=forms.RadioSelect, label="Test"
    )
    fallback = forms.ChoiceField(
        choices=Experiment.Fallback.choices, initial=Experiment.Fallback.CONTROL, widget=forms.RadioSelect,
        label="When no variant wins",
    )  # fmt: skip

    def __init__(self, *args: Any, candidates: Sequence[Variant], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.candidates = list(candidates)
        cast(forms.TypedChoiceField, self.fields["control"]).choices = [
            (v.pk, f"{v.name} — {target_label(v)}") for v in self.candidates
        ]
        for variant in self.candidates:
            self.fields[hour_field(variant.pk)] = forms.IntegerField(
                min_value=0, max_value=23, required=False, label=f"“{variant.name}” at (hour, 0-23)"
            )
            self.fields[channel_field(variant.pk)] = forms.ChoiceField(
                choices=[("", "The campaign's channel"), *CampaignChannel.choices], required=False,
                label=f"“{variant.name}” by",
            )  # fmt: skip

    @classmethod
    def initial_for(cls, experiment: Experiment | None) -> dict[str, Any]:
        if experiment is None:
            return {}
        initial: dict[str, Any] = {
            "control": experiment.control_id, "tested": experiment.tested, "test_share": experiment.test_share,
            "metric": experiment.metric, "duration_hours": experiment.duration_hours,
            "significance_level": f"{experiment.significance_level:.3f}", "method": experiment.method,
            "fallback": experiment.fallback,
        }  # fmt: skip
        for variant_id, hour in (experiment.arm_send_hours or {}).items():
            initial[hour_field(int(variant_id))] = hour
        for variant_id, channel in (experiment.arm_channels or {}).items():
            initial[channel_field(int(variant_id))] = channel
        return initial

    def hour_fields(self) -> list[forms.BoundField]:
        return [self[hour_field(v.pk)] for v in self.candidates]

    def channel_fields(self) -> list[forms.BoundField]:
        return [self[channel_field(v.pk)] for v in self.candidates]

    def settings(self) -> ExperimentSettings:
        data = self.cleaned_data
        hours = {
            v.pk: data[hour_field(v.pk)] for v in self.candidates if data.get(hour_field(v.pk)) is not None
        }  # fmt: skip
        channels = {v.pk: data[channel_field(v.pk)] for v in self.candidates if data.get(channel_field(v.pk))}
        return ExperimentSettings(
            control_id=data["control"], tested=data["tested"], test_share=data["test_share"], metric=data["metric"],
            duration_hours=data["duration_hours"], significance_level=data["significance_level"],
            method=data["method"], fallback=data["fallback"], arm_send_hours=hours,
            arm_channels=channels,
        )  # fmt: skip
