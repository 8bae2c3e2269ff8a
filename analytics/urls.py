from __future__ import annotations

from django.urls import URLPattern, path

from analytics import views, views_experiments, views_value

app_name = "analytics"

# Included under /t/<slug:tenant_slug>/analytics/ by segmentor/urls.py; pages arrive with their issue.
urlpatterns: list[URLPattern] = []

# Message results: the dashboard, a campaign's and a journey's results, segments side by side (analytics/views.py).
urlpatterns += [
    path("", views.DashboardView.as_view(), name="home"),
    path("export.csv", views.DashboardCsvView.as_view(), name="home_csv"),
    path("campaigns/<int:campaign_id>/", views.CampaignResultsView.as_view(), name="campaign"),
    path("campaigns/<int:campaign_id>/export.csv", views.CampaignResultsCsvView.as_view(), name="campaign_csv"),
    path("journeys/<int:journey_id>/", views.JourneyResultsView.as_view(), name="journey"),
    path("journeys/<int:journey_id>/export.csv", views.JourneyResultsCsvView.as_view(), name="journey_csv"),
    path("segments/", views.SegmentCompareView.as_view(), name="segments"),
    path("segments/export.csv", views.SegmentCompareCsvView.as_view(), name="segments_csv"),
]

# Customer value and the lifecycle funnel (analytics/views_value.py).
urlpatterns += [
    path("value/", views_value.ValueView.as_view(), name="value"),
    path("value/funnel.csv", views_value.ValueCsvView.as_view(), {"table": "funnel"}, name="value_funnel_csv"),
    path("value/flow.csv", views_value.ValueCsvView.as_view(), {"table": "flow"}, name="value_flow_csv"),
    path("value/clv-stage.csv", views_value.ValueCsvView.as_view(), {"table": "clv-stage"}, name="value_clv_stage_csv"),
    path(
        "value/clv-segment.csv",
        views_value.ValueCsvView.as_view(),
        {"table": "clv-segment"},
        name="value_clv_segment_csv",
    ),
]

# A campaign's A/B test: result, settings, decide now, figures as CSV (analytics/views_experiments.py).
urlpatterns += [
    path("campaigns/<int:campaign_id>/experiment/", views_experiments.ExperimentView.as_view(), name="experiment"),
    path(
        "campaigns/<int:campaign_id>/experiment/settings/",
        views_experiments.ExperimentSettingsView.as_view(),
        name="experiment_settings",
    ),
    path(
        "campaigns/<int:campaign_id>/experiment/decide/",
        views_experiments.ExperimentDecideView.as_view(),
        name="experiment_decide",
    ),
    path(
        "campaigns/<int:campaign_id>/experiment/delete/",
        views_experiments.ExperimentDeleteView.as_view(),
        name="experiment_delete",
    ),
    path(
        "campaigns/<int:campaign_id>/experiment.csv",
        views_experiments.ExperimentCsvView.as_view(),
        name="experiment_csv",
    ),
]
