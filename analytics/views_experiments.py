"""The A/B test pages of a campaign: the result (rates with intervals, the decision and its reason),
the settings, "decide now", and the figures as CSV.

Under /t/<workspace>/analytics/campaigns/<campaign_id>/experiment/. Everyone in the workspace reads;
editors change the settings and decide. A journey step's hidden campaign, and another workspace's
campaign, answer 404.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from analytics.experiments import (
    METRIC_WORDS,
    SYSTEM,
    ab_groups,
    arm_channel,
    arm_variants,
    campaign_variants,
    decision_actor,
    experiment_configure,
    experiment_decide,
    experiment_delete,
    experiment_for,
    experiment_interim,
    result_rows,
)
from analytics.forms_experiments import ExperimentForm, channel_field, hour_field, target_label
from analytics.models import Experiment
from analytics.views import csv_cell
from campaigns.models import Campaign, CampaignChannel, Variant
from tenants.audit import Actor
from tenants.roles import Permission
from tenants.web import TenantView, add_service_errors

CONFIGURABLE = frozenset({Campaign.Status.DRAFT, Campaign.Status.SCHEDULED, Campaign.Status.PAUSED})
DECIDED = frozenset({Experiment.Status.DECIDED, Experiment.Status.SENT})
METRIC_COLUMN = {"open": "Human opens", "click": "Human clicks", "conversion": "Conversions"}
CSV_HEADER = ["variant_id", "name", "sent", "successes", "rate", "ci_low", "ci_high", "p_value", "probability_best",
              "winner"]  # fmt: skip


class ExperimentPageView(TenantView):
    """Base: the campaign in the URL (a campaign of this workspace, not a journey step) and its test."""

    def campaign(self, campaign_id: int) -> Campaign:
        campaign = self.get_tenant_object(Campaign, campaign_id)
        if campaign.kind != Campaign.Kind.CAMPAIGN:
            raise Http404("No such campaign.")
        campaign.tenant = self.tenant
        return campaign

    def actor(self) -> Actor:
        return Actor.for_user(self.membership.user)

    def url(self, name: str, campaign: Campaign) -> str:
        return reverse(f"analytics:{name}", kwargs={"tenant_slug": self.tenant.slug, "campaign_id": campaign.pk})

    def can_configure(self, campaign: Campaign, experiment: Experiment | None) -> bool:
        return (
            self.can(Permission.EDIT_CONTENT)
            and campaign.status in CONFIGURABLE
            and (experiment is None or experiment.status == Experiment.Status.DRAFT)
        )


def chart_config(rows: list[dict[str, Any]], level: float, metric_label: str) -> dict[str, Any]:
    """A Chart.js bar per arm (its rate, %) with its confidence interval drawn over it as a floating bar."""
    interval = f"{level * 100:g} % interval"
    return {
        "type": "bar",
        "data": {
            "labels": [row["name"] for row in rows],
            "datasets": [
                {"label": f"{metric_label} (%)", "data": [round(row["rate"] * 100, 2) for row in rows], "order": 2},
                {
                    "label": interval,
                    "data": [[round(row["ci_low"] * 100, 2), round(row["ci_high"] * 100, 2)] for row in rows],
                    "grouped": False, "barPercentage": 0.12, "backgroundColor": "#111827", "order": 1,
                },
            ],
        },
        "options": {
            "scales": {"y": {"beginAtZero": True, "title": {"display": True, "text": f"{metric_label} (%)"}}},
            "plugins": {"legend": {"position": "bottom"}},
        },
    }  # fmt: skip


class ExperimentView(ExperimentPageView):
    """The test's page: its settings in words, each variant's rate with its interval, the decision."""

    http_method_names = ["get", "head", "options"]

    def get(self, request: HttpRequest, tenant_slug: str, campaign_id: int) -> HttpResponse:
        campaign = self.campaign(campaign_id)
        experiment = experiment_for(campaign)
        variants = campaign_variants(campaign)
        arms = arm_variants(experiment) if experiment else []
        rows = result_rows(experiment) if experiment else []
        interim = experiment_interim(experiment) if experiment else None
        level = float(experiment.significance_level) if experiment else 0.95
        metric_label = METRIC_WORDS.get(experiment.metric, "rate").capitalize() if experiment else ""
        winner_id = experiment.winner_id if experiment and experiment.status in DECIDED else None
        context = {
            "campaign": campaign,
            "experiment": experiment,
            "arms": [
                {"variant": v, "target": target_label(v), "control": i == 0, "channel": _channel_of(experiment, v)}
                for i, v in enumerate(arms)
            ],
            "rows": [_display(row, winner_id, experiment) for row in rows] if experiment else [],
            "interim": interim,
            "decided": experiment is not None and experiment.status in DECIDED,
            "decided_by": decision_actor(experiment) if experiment and experiment.status in DECIDED else "",
            "automatic": SYSTEM.label,
            "level_percent": f"{level * 100:g}",
            "metric_column": METRIC_COLUMN.get(experiment.metric, "") if experiment else "",
            "chart": chart_config(rows, level, metric_label) if rows else None,
            "has_groups": bool(ab_groups(variants)),
            "can_configure": self.can_configure(campaign, experiment),
            "can_decide": self.can(Permission.EDIT_CONTENT)
            and experiment is not None
            and experiment.status == Experiment.Status.TESTING,
        }
        return render(request, "analytics/experiment.html", context)


def _channel_of(experiment: Experiment | None, variant: Variant) -> str:
    """A channel test's arm: the channel it goes by, in words ("" for the other tests)."""
    if experiment is None or experiment.tested != Experiment.Tested.CHANNEL:
        return ""
    return str(CampaignChannel(arm_channel(experiment.arm_channels, experiment.campaign, variant.pk)).label)


def _display(row: dict[str, Any], winner_id: int | None, experiment: Experiment) -> dict[str, Any]:
    """A result row with its figures written for the table: percentages, the interval, the statistic."""
    statistic = row["probability_best"] if experiment.method == Experiment.Method.BAYESIAN else row["p_value"]
    return {
        **row,
        "winner": row["variant_id"] == winner_id,
        "rate_text": f"{row['rate'] * 100:.1f} %",
        "interval_text": f"{row['ci_low'] * 100:.1f} – {row['ci_high'] * 100:.1f} %",
        "statistic_text": "—" if statistic is None else "< 0.0001" if statistic < 0.0001 else f"{statistic:.4f}",
    }


class ExperimentSettingsView(ExperimentPageView):
    """Set up or change the test before the campaign's run starts (read-only for viewers and after the start)."""

    def get(self, request: HttpRequest, tenant_slug: str, campaign_id: int) -> HttpResponse:
        campaign = self.campaign(campaign_id)
        experiment = experiment_for(campaign)
        form = self.form(campaign, initial=ExperimentForm.initial_for(experiment))
        return self.page(campaign, experiment, form)

    def post(self, request: HttpRequest, tenant_slug: str, campaign_id: int) -> HttpResponse:
        campaign = self.campaign(campaign_id)
        experiment = experiment_for(campaign)
        form = self.form(campaign, data=request.POST)
        if not form.is_valid():
            return self.page(campaign, experiment, form, status=400)
        try:
            experiment_configure(campaign=campaign, settings=form.settings(), actor=self.actor())
        except ValidationError as error:
            add_service_errors(form, error, lambda name, _message: _form_field(form, name))
            return self.page(campaign, experiment, form, status=400)
        messages.success(request, "A/B test saved: it starts with the campaign's next send.")
        return redirect(self.url("experiment", campaign))

    def form(self, campaign: Campaign, **kwargs: Any) -> ExperimentForm:
        candidates = [v for group in ab_groups(campaign_variants(campaign)) for v in group]
        return ExperimentForm(candidates=candidates, **kwargs)

    def page(
        self, campaign: Campaign, experiment: Experiment | None, form: ExperimentForm, status: int = 200
    ) -> HttpResponse:
        context = {
            "campaign": campaign,
            "experiment": experiment,
            "form": form,
            "can_configure": self.can_configure(campaign, experiment),
            "has_groups": bool(form.candidates),
        }
        return render(self.request, "analytics/experiment_settings.html", context, status=status)


def _form_field(form: ExperimentForm, name: str) -> str | None:
    """Where a service error goes: its field, the first hour (channel) field for the hours (channels), else
    above the form."""
    if name == "arm_send_hours" and form.candidates:
        return hour_field(form.candidates[0].pk)
    if name == "arm_channels" and form.candidates:
        return channel_field(form.candidates[0].pk)
    return name if name in form.fields else None


class ExperimentDecideView(ExperimentPageView):
    """Decide a test under way now, with the stated test on the figures so far."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str, campaign_id: int) -> HttpResponse:
        campaign = self.campaign(campaign_id)
        experiment = experiment_for(campaign)
        if experiment is None:
            raise Http404("This campaign has no A/B test.")
        try:
            decided = experiment_decide(experiment=experiment, actor=self.actor())
        except ValidationError as error:
            for message in error.messages:
                messages.error(request, message)
        else:
            messages.success(request, decided.reason)
        return redirect(self.url("experiment", campaign))


class ExperimentDeleteView(ExperimentPageView):
    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str, campaign_id: int) -> HttpResponse:
        campaign = self.campaign(campaign_id)
        experiment = experiment_for(campaign)
        if experiment is None:
            raise Http404("This campaign has no A/B test.")
        try:
            experiment_delete(experiment=experiment, actor=self.actor())
        except ValidationError as error:
            for message in error.messages:
                messages.error(request, message)
        else:
            messages.success(request, "A/B test removed: the variants split their target by weight.")
        return redirect(self.url("experiment", campaign))


class ExperimentCsvView(ExperimentPageView):
    """Each variant's figures as CSV (cells a spreadsheet would run as formulas are escaped)."""

    http_method_names = ["get", "head", "options"]

    def get(self, request: HttpRequest, tenant_slug: str, campaign_id: int) -> HttpResponse:
        campaign = self.campaign(campaign_id)
        experiment = experiment_for(campaign)
        rows = result_rows(experiment) if experiment else []
        winner_id = experiment.winner_id if experiment and experiment.status in DECIDED else None
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_HEADER)
        for row in rows:
            values = [*(row[key] for key in CSV_HEADER[:-1]), row["variant_id"] == winner_id]
            writer.writerow([csv_cell(value) for value in values])
        response = HttpResponse("\ufeff" + buffer.getvalue(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="campaign-{campaign.pk}-ab-test.csv"'
        return response
