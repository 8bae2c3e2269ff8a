from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View

from tenants import selectors, services
from tenants.audit import Actor
from tenants.context import activate_tenant
from tenants.forms import (
    ApiKeyForm,
    InvitationForm,
    MemberRoleForm,
    TenantCreateForm,
    TenantDeleteForm,
    TenantSettingsForm,
)
from tenants.models import ApiKey, Invitation, Membership
from tenants.roles import ROLE_PERMISSIONS, Permission, Role
from tenants.web import TenantView, add_service_errors


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """Send a signed-in user to their last workspace, or to create one."""
    memberships = selectors.memberships_for_user(request.user)  # type: ignore[arg-type]
    if not memberships:
        return redirect("tenant_create")
    slugs = [m.tenant.slug for m in memberships]
    last = request.session.get("last_tenant")
    return redirect("tenants:dashboard", tenant_slug=last if last in slugs else slugs[0])


@method_decorator(login_required, name="dispatch")
class TenantCreateView(View):
    def get(self, request: HttpRequest) -> HttpResponse:
        return render(request, "tenants/tenant_create.html", {"form": TenantCreateForm()})

    def post(self, request: HttpRequest) -> HttpResponse:
        form = TenantCreateForm(request.POST)
        if form.is_valid():
            try:
                tenant = services.tenant_create(
                    name=form.cleaned_data["name"],
                    owner=request.user,  # type: ignore[arg-type]
                    time_zone=form.cleaned_data["time_zone"],
                )
            except ValidationError as error:
                add_service_errors(form, error)
            else:
                messages.success(request, f"Workspace “{tenant.name}” created.")
                return redirect(tenant.get_absolute_url())
        return render(request, "tenants/tenant_create.html", {"form": form}, status=400)


class DashboardView(TenantView):
    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        overview = selectors.tenant_overview(self.tenant)
        return render(request, "tenants/dashboard.html", {"overview": overview})


class SettingsView(TenantView):
    write_permission = Permission.MANAGE_TENANT

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        return self._render(TenantSettingsForm(instance=self.tenant))

    def post(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form = TenantSettingsForm(request.POST, instance=self.tenant)
        if form.is_valid():
            try:
                services.tenant_update(tenant=self.tenant, acting=self.membership, data=form.cleaned_data)
            except ValidationError as error:
                add_service_errors(form, error)
            else:
                messages.success(request, "Settings saved.")
                return redirect("tenants:settings", tenant_slug=self.tenant.slug)
        return self._render(form, status=400)

    def _render(self, form: TenantSettingsForm, status: int = 200) -> HttpResponse:
        return render(
            self.request,
            "tenants/settings.html",
            {"form": form, "can_manage": self.can(Permission.MANAGE_TENANT), "section": "general"},
            status=status,
        )


class MembersView(TenantView):
    write_permission = Permission.MANAGE_TENANT

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        return self._render(InvitationForm())

    def post(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form = InvitationForm(request.POST)
        if form.is_valid():
            try:
                invitation = services.invitation_create(
                    tenant=self.tenant,
                    email=form.cleaned_data["email"],
                    role=form.cleaned_data["role"],
                    acting=self.membership,
                )
            except ValidationError as error:
                add_service_errors(form, error)
            else:
                messages.success(request, f"Invitation sent to {invitation.email}.")
                return redirect("tenants:members", tenant_slug=self.tenant.slug)
        return self._render(form, status=400)

    def _render(self, form: InvitationForm, status: int = 200) -> HttpResponse:
        context = {
            "members": selectors.members_of(self.tenant),
            "invitations": selectors.open_invitations_of(self.tenant),
            "form": form,
            "roles": Role.choices,
            "role_permissions": [(label, ROLE_PERMISSIONS[value]) for value, label in Role.choices],
            "permissions": list(Permission),
            "can_manage": self.can(Permission.MANAGE_TENANT),
            "section": "members",
        }
        return render(self.request, "tenants/members.html", context, status=status)


class MemberRoleView(TenantView):
    write_permission = Permission.MANAGE_TENANT
    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str, member_id: int) -> HttpResponse:
        membership = self.get_tenant_object(Membership, member_id)
        form = MemberRoleForm(request.POST)
        if not form.is_valid():
            messages.error(request, "Choose one of the roles.")
        else:
            try:
                services.membership_change_role(
                    membership=membership, role=form.cleaned_data["role"], acting=self.membership
                )
            except (ValidationError, PermissionDenied) as error:
                messages.error(request, "; ".join(getattr(error, "messages", [str(error)])))
            else:
                messages.success(request, f"{membership.user.email} is now {membership.get_role_display()}.")
        return redirect("tenants:members", tenant_slug=self.tenant.slug)


class MemberRemoveView(TenantView):
    # Anyone may leave; removing someone else needs manage_tenant (checked by the service).
    write_permission = Permission.VIEW
    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str, member_id: int) -> HttpResponse:
        membership = self.get_tenant_object(Membership, member_id)
        leaving = membership.pk == self.membership.pk
        try:
            services.membership_remove(membership=membership, acting=self.membership)
        except ValidationError as error:
            messages.error(request, "; ".join(error.messages))
        else:
            if leaving:
                messages.success(request, f"You left {self.tenant.name}.")
                return redirect("home")
            messages.success(request, f"{membership.user.email} was removed.")
        return redirect("tenants:members", tenant_slug=self.tenant.slug)


class InvitationRevokeView(TenantView):
    write_permission = Permission.MANAGE_TENANT
    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str, invitation_id: int) -> HttpResponse:
        invitation = self.get_tenant_object(Invitation, invitation_id)
        services.invitation_revoke(invitation=invitation, acting=self.membership)
        messages.success(request, f"Invitation to {invitation.email} withdrawn.")
        return redirect("tenants:members", tenant_slug=self.tenant.slug)


class ApiKeysView(TenantView):
    read_permission = Permission.MANAGE_TENANT
    write_permission = Permission.MANAGE_TENANT
    # The new secret waits in the session for exactly one page view (post/redirect/get),
    # so a reload neither creates a second key nor shows the secret again.
    NEW_KEY_SESSION = "new_api_key"

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        new_key, secret = None, ""
        pending = request.session.pop(self.NEW_KEY_SESSION, None)
        if pending and pending.get("tenant_id") == self.tenant.pk:
            new_key = selectors.api_keys_of(self.tenant).filter(pk=pending["api_key_id"]).first()
            secret = pending["secret"] if new_key else ""
        response = self._render(ApiKeyForm(), new_key=new_key, secret=secret)
        response["Cache-Control"] = "no-store"
        return response

    def post(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form = ApiKeyForm(request.POST)
        if form.is_valid():
            try:
                api_key, secret = services.api_key_create(
                    tenant=self.tenant,
                    name=form.cleaned_data["name"],
                    scope=form.cleaned_data["scope"],
                    acting=self.membership,
                )
            except ValidationError as error:
                add_service_errors(form, error)
            else:
                request.session[self.NEW_KEY_SESSION] = {
                    "tenant_id": self.tenant.pk,
                    "api_key_id": api_key.pk,
                    "secret": secret,
                }
                return redirect("tenants:api_keys", tenant_slug=self.tenant.slug)
        return self._render(form, status=400)

    def _render(
        self, form: ApiKeyForm, new_key: ApiKey | None = None, secret: str = "", status: int = 200
    ) -> HttpResponse:
        context = {
            "api_keys": selectors.api_keys_of(self.tenant),
            "form": form,
            "new_key": new_key,
            "secret": secret,
            "section": "api_keys",
        }
        return render(self.request, "tenants/api_keys.html", context, status=status)


class ApiKeyRevokeView(TenantView):
    write_permission = Permission.MANAGE_TENANT
    http_method_names = ["post"]

    def post(self, request: HttpRequest, tenant_slug: str, api_key_id: int) -> HttpResponse:
        api_key = self.get_tenant_object(ApiKey, api_key_id)
        services.api_key_revoke(api_key=api_key, actor=Actor.for_user(self.membership.user), acting=self.membership)
        messages.success(request, f"API key “{api_key.name}” revoked.")
        return redirect("tenants:api_keys", tenant_slug=self.tenant.slug)


class TenantDeleteView(TenantView):
    read_permission = Permission.DELETE_TENANT
    write_permission = Permission.DELETE_TENANT

    def get(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        return self._render(TenantDeleteForm())

    def post(self, request: HttpRequest, tenant_slug: str) -> HttpResponse:
        form = TenantDeleteForm(request.POST)
        if form.is_valid():
            name = self.tenant.name
            try:
                services.tenant_delete(
                    tenant=self.tenant, acting=self.membership, confirm_slug=form.cleaned_data["confirm_slug"]
                )
            except ValidationError as error:
                add_service_errors(form, error)
            else:
                request.session.pop("last_tenant", None)
                messages.success(request, f"Workspace “{name}” and all its data were deleted.")
                return redirect("home")
        return self._render(form, status=400)

    def _render(self, form: TenantDeleteForm, status: int = 200) -> HttpResponse:
        return render(self.request, "tenants/tenant_delete.html", {"form": form, "section": "delete"}, status=status)


@method_decorator(login_required, name="dispatch")
class InvitationAcceptView(View):
    """Join a tenant from the link in an invitation email."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        payload = services.invitation_token_payload(kwargs["token"])
        self.invitation = None
        if payload is not None:
            # The signed token names the tenant; the rest of the request runs as it.
            activate_tenant(payload[0])
            self.invitation = Invitation.objects.filter(pk=payload[1]).select_related("tenant").first()
        if self.invitation is None or not self.invitation.is_open:
            return render(request, "tenants/invitation_invalid.html", status=404)
        return super().dispatch(request, *args, **kwargs)

    def get(self, request: HttpRequest, token: str) -> HttpResponse:
        return render(request, "tenants/invitation_accept.html", {"invitation": self.invitation})

    def post(self, request: HttpRequest, token: str) -> HttpResponse:
        assert self.invitation is not None
        try:
            membership = services.invitation_accept(invitation=self.invitation, user=request.user)  # type: ignore[arg-type]
        except ValidationError as error:
            return render(
                request,
                "tenants/invitation_accept.html",
                {"invitation": self.invitation, "errors": error.messages},
                status=400,
            )
        messages.success(request, f"Welcome to {membership.tenant.name}.")
        return redirect(reverse("tenants:dashboard", kwargs={"tenant_slug": membership.tenant.slug}))
