from __future__ import annotations

from django.urls import URLPattern, URLResolver, include, path

from contacts import views

app_name = "contacts"

# Included under /t/<slug:tenant_slug>/contacts/ by segmentor/urls.py.
urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.ContactListView.as_view(), name="list"),
    path("new/", views.ContactCreateView.as_view(), name="create"),
    path("<int:contact_id>/", views.ContactDetailView.as_view(), name="detail"),
    path("<int:contact_id>/edit/", views.ContactEditView.as_view(), name="edit"),
    path("<int:contact_id>/consent/", views.ContactConsentView.as_view(), name="consent"),
    path("<int:contact_id>/export/", views.ContactExportView.as_view(), name="export"),
    path("<int:contact_id>/erase/", views.ContactEraseView.as_view(), name="erase"),
    path("attributes/", views.AttributeListView.as_view(), name="attributes"),
    path("attributes/<int:attribute_id>/delete/", views.AttributeDeleteView.as_view(), name="attribute_delete"),
    path("suppressions/", views.SuppressionListView.as_view(), name="suppressions"),
    path("suppressions/<int:suppression_id>/delete/", views.SuppressionDeleteView.as_view(), name="suppression_delete"),
    path("audit-log/", views.AuditLogView.as_view(), name="audit_log"),
    path("imports/", include("contacts.import_urls")),
]
