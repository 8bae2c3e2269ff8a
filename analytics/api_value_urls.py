"""API routes for customer value and the lifecycle funnel, included under /api/v1/ by segmentor/urls.py:

path("", include("analytics.api_value_urls")),
"""

from __future__ import annotations

from django.urls import URLPattern, path

from analytics import api_value

urlpatterns: list[URLPattern] = [
    path("analytics/value/clv/", api_value.ValueClvView.as_view(), name="analytics-value-clv"),
    path("analytics/value/funnel/", api_value.ValueFunnelView.as_view(), name="analytics-value-funnel"),
]
