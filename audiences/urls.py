from __future__ import annotations

from django.urls import URLPattern, path

from audiences import views

app_name = "audiences"

# Included under /t/<slug:tenant_slug>/audiences/ by segmentor/urls.py.
urlpatterns: list[URLPattern] = [
    path("", views.AudienceHomeView.as_view(), name="home"),
    path("destinations/new/", views.DestinationCreateView.as_view(), name="destination_create"),
    path("destinations/<int:destination_id>/", views.DestinationEditView.as_view(), name="destination_edit"),
    path("destinations/<int:destination_id>/run/", views.DestinationRunView.as_view(), name="destination_run"),
    path("destinations/<int:destination_id>/delete/", views.DestinationDeleteView.as_view(), name="destination_delete"),
    path("exports/<int:export_id>/", views.ExportDetailView.as_view(), name="export_detail"),
    path("segments/<int:segment_id>/download.csv", views.DownloadView.as_view(), name="download"),
    path("segments/<int:segment_id>/lookalike/", views.LookalikeView.as_view(), name="lookalike"),
]
