from __future__ import annotations

from django.urls import URLPattern, path

from segments import views

app_name = "segments"

# Included under /t/<slug:tenant_slug>/segments/ by segmentor/urls.py.
urlpatterns: list[URLPattern] = [
    path("", views.SegmentListView.as_view(), name="list"),
    path("new/", views.SegmentCreateView.as_view(), name="create"),
    path("preview/", views.SegmentPreviewView.as_view(), name="preview"),
    path("<int:segment_id>/", views.SegmentDetailView.as_view(), name="detail"),
    path("<int:segment_id>/edit/", views.SegmentEditView.as_view(), name="edit"),
    path("<int:segment_id>/preview/", views.SegmentPreviewView.as_view(), name="preview_segment"),
    path("<int:segment_id>/overlap/", views.SegmentOverlapView.as_view(), name="overlap"),
    path("<int:segment_id>/members/", views.SegmentMembersView.as_view(), name="members"),
    path("<int:segment_id>/refresh/", views.SegmentRefreshView.as_view(), name="refresh"),
    path("<int:segment_id>/delete/", views.SegmentDeleteView.as_view(), name="delete"),
    path("<int:segment_id>/export.csv", views.SegmentExportView.as_view(), name="export"),
]
