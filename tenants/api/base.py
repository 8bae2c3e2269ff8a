"""Bases every API endpoint is built on: the tenant is never the subclass's job."""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import models
from drf_spectacular.utils import OpenApiResponse
from rest_framework import generics, serializers, viewsets
from rest_framework.request import Request

from tenants.audit import Actor
from tenants.context import get_current_tenant_id
from tenants.models import ApiKey, Tenant

ERROR_RESPONSE = OpenApiResponse(description='The error shape: `{"error": {"code", "message", "fields"}}`.')


def request_actor(request: Request) -> Actor:
    """The API key behind a request, as the actor audit rows name."""
    assert isinstance(request.auth, ApiKey)  # HasApiKeyScope lets only keys in
    return Actor.for_api_key(request.auth)


def parse(serializer_class: type[serializers.Serializer], data: Any) -> Any:
    """Validate ``data`` (a 400 with the fields otherwise) and return the validated data."""
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class TenantScopedAPIMixin:
    """Own ``get_queryset``: subclasses name a ``model`` and may narrow with ``scope_queryset``.

    Subclasses may not override ``get_queryset`` or ``get_object`` (checked at
    class creation), so no endpoint can forget the tenant. Another tenant's
    object is then a 404, the same as a missing one.
    """

    model: ClassVar[type[models.Model]]
    request: Any
    lookup_value_regex = r"\d+"  # ids are integers: /contacts/abc/ is a 404 from the router

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("get_queryset", "get_object"):
            if name in cls.__dict__:
                raise TypeError(f"{cls.__name__} may not override {name}; use scope_queryset().")

    @property
    def tenant(self) -> Tenant:
        return self.request.tenant

    def get_queryset(self) -> models.QuerySet[Any]:
        queryset = self.model.objects.filter(tenant_id=self.tenant.pk)  # type: ignore[attr-defined]
        return self.scope_queryset(queryset)

    def scope_queryset(self, queryset: models.QuerySet[Any]) -> models.QuerySet[Any]:
        return queryset


class TenantViewSet(TenantScopedAPIMixin, viewsets.GenericViewSet):
    pass


class TenantGenericAPIView(TenantScopedAPIMixin, generics.GenericAPIView):
    pass


class TenantPrimaryKeyRelatedField(serializers.PrimaryKeyRelatedField):
    """A related field that only ever finds objects of the current tenant.

    ``TenantPrimaryKeyRelatedField(model=Segment)``: with no tenant in scope it
    finds nothing, so a forgotten scope fails safe.
    """

    def __init__(self, *, model: type[models.Model], **kwargs: Any) -> None:
        self.related_model = model
        if not kwargs.get("read_only"):
            kwargs["queryset"] = model._base_manager.none()  # the scoped default manager raises here
        super().__init__(**kwargs)

    def get_queryset(self) -> models.QuerySet[Any]:
        tenant_id = get_current_tenant_id()
        if tenant_id is None:
            return self.related_model._base_manager.none()
        return self.related_model._base_manager.filter(tenant_id=tenant_id)
