from __future__ import annotations

from django.urls import URLPattern, URLResolver, path
from rest_framework.routers import SimpleRouter

from audiences.api import views

router = SimpleRouter()
router.register("audiences/destinations", views.DestinationViewSet, basename="audience-destination")
router.register("audiences/exports", views.ExportViewSet, basename="audience-export")

# Included under /api/v1/ by segmentor/urls.py.
urlpatterns: list[URLPattern | URLResolver] = [
    path(
        "audiences/segments/<int:segment_id>/download.csv",
        views.SegmentAudienceDownloadView.as_view(),
        name="audience-segment-download",
    ),
    path("audiences/segments/<int:segment_id>/lookalike/", views.LookalikeView.as_view(), name="audience-lookalike"),
    *router.urls,
]
