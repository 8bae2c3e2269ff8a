from __future__ import annotations

from django.urls import URLPattern, URLResolver, path
from rest_framework.routers import SimpleRouter

from segments.api import views

router = SimpleRouter()
router.register("segments", views.SegmentViewSet, basename="segment")

# Included under /api/v1/ by segmentor/urls.py.
urlpatterns: list[URLPattern | URLResolver] = [
    path("segments/<int:segment_id>/members.csv", views.SegmentMembersCsvView.as_view(), name="segment-members-csv"),
    *router.urls,
]
