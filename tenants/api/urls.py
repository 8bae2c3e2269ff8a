from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from tenants.api import views

router = SimpleRouter()
router.register("members", views.MembershipViewSet, basename="member")
router.register("api-keys", views.ApiKeyViewSet, basename="api-key")

urlpatterns = [
    path("tenant/", views.CurrentTenantView.as_view(), name="tenant"),
    *router.urls,
]
