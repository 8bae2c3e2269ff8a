"""The base every tenant-scoped page is built on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.core.exceptions import ValidationError
from django.db import models
from django.forms import BaseForm
from django.http import Http404, HttpRequest, HttpResponseBase
from django.shortcuts import get_object_or_404
from django.views import View

from tenants.models import Membership, Tenant
from tenants.roles import Permission


def add_service_errors(
    form: BaseForm, error: ValidationError, field_for: Callable[[str, str], str | None] | None = None
) -> None:
    """Show a service's ValidationError on ``form``: by field where it names one of the form's fields."""
    if not hasattr(error, "error_dict"):
        form.add_error(None, error)
        return
    for name, errors in error.error_dict.items():
        for message in ValidationError(errors).messages:
            field = field_for(name, message) if field_for else name
            form.add_error(field if field in form.fields else None, message)


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
M = TypeVar("M", bound=models.Model)


class TenantView(View):
    """A page under ``/t/<tenant_slug>/``: members only, with a permission per kind of request.

    ``read_permission`` guards GET; ``write_permission`` guards every other method.
    Objects are fetched through ``get_tenant_object`` so another tenant's id is a 404.
    """

    read_permission: Permission = Permission.VIEW
    write_permission: Permission = Permission.EDIT_CONTENT
    tenant: Tenant
    membership: Membership

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        membership: Membership | None = getattr(request, "membership", None)
        if membership is None:
            # The URL has no tenant_slug, so the middleware never checked membership.
            raise Http404("No such page.")
        needed = self.read_permission if request.method in SAFE_METHODS else self.write_permission
        membership.require(needed)
        self.tenant = membership.tenant
        self.membership = membership
        return super().dispatch(request, *args, **kwargs)

    def get_tenant_object(self, model: type[M], pk: Any) -> M:
        return get_object_or_404(model.objects.filter(tenant=self.tenant), pk=pk)  # type: ignore[attr-defined]

    def can(self, permission: Permission) -> bool:
        return self.membership.allows(permission)
