from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tenants.api.base import TenantViewSet
from tenants.api.serializers import ApiKeySerializer, MembershipSerializer, TenantSerializer
from tenants.audit import Actor
from tenants.models import ApiKey, Membership
from tenants.services import api_key_revoke


class CurrentTenantView(APIView):
    """The tenant the API key belongs to, with its sending settings."""

    @extend_schema(responses=TenantSerializer, operation_id="tenant_retrieve")
    def get(self, request: Request) -> Response:
        return Response(TenantSerializer(request._request.tenant).data)  # type: ignore[attr-defined]


class MembershipViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """The people who can sign in to this tenant, with their roles."""

    model = Membership
    serializer_class = MembershipSerializer
    lookup_url_kwarg = "member_id"

    def scope_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.select_related("user")


class ApiKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, TenantViewSet):
    """This tenant's API keys (never their secrets). DELETE revokes a key at once."""

    model = ApiKey
    serializer_class = ApiKeySerializer
    lookup_url_kwarg = "api_key_id"

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        assert isinstance(request.auth, ApiKey)  # HasApiKeyScope let only keys in
        api_key_revoke(api_key=self.get_object(), actor=Actor.for_api_key(request.auth))
        return Response(status=status.HTTP_204_NO_CONTENT)
