"""Message KPIs under /api/v1/analytics/ (segmentor/urls.py includes this in api_v1_patterns)."""

from __future__ import annotations

from django.urls import URLPattern, path

from analytics.api import views

urlpatterns: list[URLPattern] = [
    path("analytics/summary/", views.SummaryView.as_view(), name="analytics-summary"),
    path("analytics/series/", views.SeriesView.as_view(), name="analytics-series"),
    path("analytics/segments/", views.SegmentsView.as_view(), name="analytics-segments"),
    path("analytics/campaigns/<int:campaign_id>/", views.CampaignKpisView.as_view(), name="analytics-campaign"),
    path("analytics/journeys/<int:journey_id>/", views.JourneyKpisView.as_view(), name="analytics-journey"),
]
