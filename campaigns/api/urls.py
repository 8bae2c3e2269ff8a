from __future__ import annotations

from django.urls import URLPattern, URLResolver, path
from rest_framework.routers import SimpleRouter

from campaigns.api import views

router = SimpleRouter()
router.register("campaigns", views.CampaignViewSet, basename="campaign")
router.register("channels", views.ChannelConfigViewSet, basename="channel-config")

# Included under /api/v1/ by segmentor/urls.py.
urlpatterns: list[URLPattern | URLResolver] = [
    path("campaigns/<int:campaign_id>/runs/<int:run_id>/", views.RunView.as_view(), name="campaign-run"),
    path(
        "campaigns/<int:campaign_id>/runs/<int:run_id>/deliveries/",
        views.DeliveryView.as_view(),
        name="campaign-run-deliveries",
    ),
    *router.urls,
]
