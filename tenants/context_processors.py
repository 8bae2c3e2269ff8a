from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from tenants.roles import Permission
from tenants.selectors import memberships_for_user


def tenant_navigation(request: HttpRequest) -> dict[str, Any]:
    """The current tenant, the user's permissions in it and their other tenants (for the switcher)."""
    membership = getattr(request, "membership", None)
    user = getattr(request, "user", None)
    context: dict[str, Any] = {"current_tenant": getattr(request, "tenant", None), "current_membership": membership}
    if user is not None and user.is_authenticated:
        context["user_memberships"] = SimpleLazyObject(lambda: memberships_for_user(user))
    if membership is not None:
        context["perms_in_tenant"] = {permission.value: membership.allows(permission) for permission in Permission}
    return context
