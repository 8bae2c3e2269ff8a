from __future__ import annotations

from django.urls import URLPattern, URLResolver, path
from rest_framework.routers import SimpleRouter

from personalization.api import views

router = SimpleRouter()
router.register("slots", views.SlotViewSet, basename="slot")
router.register("site-keys", views.SiteKeyViewSet, basename="site-key")

# Included under /api/v1/ by segmentor/urls.py.
urlpatterns: list[URLPattern | URLResolver] = [
    path("slots/<int:slot_id>/variants/", views.SlotVariantsView.as_view(), name="slot-variants"),
    path("slots/<int:slot_id>/variants/<int:slot_variant_id>/", views.SlotVariantView.as_view(), name="slot-variant"),
    path(
        "slots/<int:slot_id>/variants/<int:slot_variant_id>/move/",
        views.SlotVariantMoveView.as_view(),
        name="slot-variant-move",
    ),
    *router.urls,
]
