"""A URLconf with two deliberately unguarded routes, to prove the walk catches them."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from segmentor.urls import urlpatterns as real_patterns
from tenants.context import platform_access
from tenants.models import Membership


def export_tenant(request: HttpRequest, tenant_id: int) -> JsonResponse:
    with platform_access():
        emails = list(Membership.all_tenants.filter(tenant_id=tenant_id).values_list("user__email", flat=True))
    return JsonResponse({"emails": emails})


class EveryMemberView(APIView):
    def get(self, request: Request) -> Response:
        with platform_access():
            return Response(list(Membership.all_tenants.values_list("user__email", flat=True)))


urlpatterns = [
    *real_patterns,
    path("export/<int:tenant_id>/", export_tenant, name="leaky_export"),
    path("api/v1/everyone/", EveryMemberView.as_view(), name="leaky_api"),
]
