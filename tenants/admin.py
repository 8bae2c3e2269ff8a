"""The platform admin: every tenant's data, on purpose through the unscoped manager."""

from __future__ import annotations

from typing import Any, ClassVar

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db import models
from django.http import HttpRequest

from tenants.models import ApiKey, Invitation, Membership, Tenant, User


class PlatformAdmin(admin.ModelAdmin):
    """Base for tenant-owned models: lists every tenant's rows, filters by tenant.

    The TenantMiddleware gives staff platform access in /admin/, so row-level
    security lets these queries through, and the scoped default manager (which
    Django uses for foreign-key choices) spans every tenant there.
    """

    list_filter: ClassVar[Any] = ("tenant",)
    list_select_related: ClassVar[Any] = ("tenant",)

    def get_queryset(self, request: HttpRequest) -> models.QuerySet[Any]:
        return self.model.all_tenants.all()


class StaysWithTenantAdmin(PlatformAdmin):
    """A saved row's tenant is shown, not edited: moved, an API key or a membership of tenant A's
    would open tenant B's data to A's integration or person (tests/isolation/test_admin.py)."""

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = tuple(super().get_readonly_fields(request, obj))
        return (*fields, "tenant") if obj is not None and "tenant" not in fields else fields


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    ordering = ("email",)
    list_display = ("email", "full_name", "is_staff", "is_active", "date_joined", "last_login")
    list_filter = ("is_staff", "is_superuser", "is_active")
    search_fields = ("email", "full_name")
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Profile", {"fields": ("full_name",)}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "time_zone", "default_sender_email", "created_at")
    search_fields = ("name", "slug", "default_sender_email")
    list_filter = ("time_zone",)
    readonly_fields = ("created_at",)


@admin.register(Membership)
class MembershipAdmin(StaysWithTenantAdmin):
    list_display = ("user", "tenant", "role", "created_at")
    list_filter = ("tenant", "role")
    search_fields = ("user__email", "tenant__name", "tenant__slug")
    list_select_related = ("tenant", "user")
    raw_id_fields = ("user",)


@admin.register(Invitation)
class InvitationAdmin(StaysWithTenantAdmin):
    list_display = ("email", "tenant", "role", "created_at", "accepted_at", "revoked_at")
    list_filter = ("tenant", "role")
    search_fields = ("email", "tenant__name")
    raw_id_fields = ("invited_by", "accepted_by")


@admin.register(ApiKey)
class ApiKeyAdmin(StaysWithTenantAdmin):
    list_display = ("name", "tenant", "prefix", "scope", "created_at", "last_used_at", "revoked_at")
    list_filter = ("tenant", "scope")
    search_fields = ("name", "prefix", "tenant__name")
    # The hash is never editable: keys are created in the tenant's settings, where the secret is shown once.
    readonly_fields = ("prefix", "key_hash", "created_at", "last_used_at")
    raw_id_fields = ("created_by",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
