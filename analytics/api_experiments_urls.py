"""The A/B test endpoints; segmentor/urls.py includes them under /api/v1/."""

from __future__ import annotations

from django.urls import URLPattern, path

from analytics import api_experiments as views

urlpatterns: list[URLPattern] = [
    path("campaigns/<int:campaign_id>/experiment/", views.CampaignExperimentView.as_view(), name="campaign-experiment"),
    path(
        "campaigns/<int:campaign_id>/experiment/decide/",
        views.CampaignExperimentDecideView.as_view(),
        name="campaign-experiment-decide",
    ),
]
