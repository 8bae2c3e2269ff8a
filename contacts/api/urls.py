from __future__ import annotations

from django.urls import URLPattern, URLResolver, path
from rest_framework.routers import SimpleRouter

from contacts.api import views

router = SimpleRouter()
router.register("contacts", views.ContactViewSet, basename="contact")
router.register("suppressions", views.SuppressionViewSet, basename="suppression")
router.register("attributes", views.AttributeViewSet, basename="attribute")

# Included under /api/v1/ by segmentor/urls.py.
urlpatterns: list[URLPattern | URLResolver] = [
    path(
        "contacts/<int:contact_id>/consent/",
        views.ContactConsentViewSet.as_view({"get": "list", "post": "create"}),
        name="contact-consent",
    ),
    path("events/", views.EventView.as_view(), name="event"),
    path("events/batch/", views.EventBatchView.as_view(), name="event-batch"),
    path("identify/", views.IdentifyView.as_view(), name="identify"),
    *router.urls,
]
