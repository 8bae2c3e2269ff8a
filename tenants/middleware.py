from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse

from tenants.context import activate_tenant, fresh_scope, platform_access
from tenants.models import Tenant
from tenants.selectors import membership_for

NOT_FOUND = "No such page."


class TenantMiddleware:
    """Resolve ``/t/<tenant_slug>/`` to the current tenant, for members only.

    A non-member gets the same 404 as for a tenant that does not exist. Every
    request starts with no tenant, and none outlives it.
    Staff in the Django admin get platform access (the admin's platform view).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.tenant = None  # type: ignore[attr-defined]
        request.membership = None  # type: ignore[attr-defined]
        with fresh_scope():
            if request.path.startswith("/admin/") and request.user.is_authenticated and request.user.is_staff:
                with platform_access():
                    return self.get_response(request)
            return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view_func: Callable[..., Any], view_args: Any, view_kwargs: dict[str, Any]
    ) -> HttpResponse | None:
        slug = view_kwargs.get("tenant_slug")
        if slug is None:
            return None
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is None:
            raise Http404(NOT_FOUND)
        activate_tenant(tenant.id)
        membership = membership_for(user=request.user, tenant=tenant)
        if membership is None:
            raise Http404(NOT_FOUND)
        request.tenant = tenant  # type: ignore[attr-defined]
        request.membership = membership  # type: ignore[attr-defined]
        if request.session.get("last_tenant") != tenant.slug:
            request.session["last_tenant"] = tenant.slug
        return None
