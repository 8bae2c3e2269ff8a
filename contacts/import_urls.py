from __future__ import annotations

from django.urls import URLPattern, path

from contacts import import_views as views

# Included under /t/<tenant_slug>/contacts/imports/ by contacts/urls.py (namespace "contacts").
urlpatterns: list[URLPattern] = [
    path("", views.ImportListView.as_view(), name="import_list"),
    path("export.csv", views.ContactsExportView.as_view(), name="contacts_export_csv"),
    path("<int:import_id>/", views.ImportDetailView.as_view(), name="import_detail"),
    path("<int:import_id>/map/", views.ImportMapView.as_view(), name="import_map"),
    path("<int:import_id>/preview/", views.ImportPreviewView.as_view(), name="import_preview"),
    path("<int:import_id>/progress/", views.ImportProgressView.as_view(), name="import_progress"),
    path("<int:import_id>/restart/", views.ImportRestartView.as_view(), name="import_restart"),
    path("<int:import_id>/rejected-rows.csv", views.ImportRejectedRowsView.as_view(), name="import_rejected_rows"),
]
