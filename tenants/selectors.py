"""Reads about tenants, members and keys that are more than one line."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from tenants.context import platform_access
from tenants.models import ApiKey, Invitation, Membership, Tenant, User
from tenants.services import api_key_hash


def memberships_for_user(user: User) -> list[Membership]:
    """Return every membership of ``user``, across tenants (for the tenant switcher)."""
    # Platform access: the tenants are what we are finding out.
    with platform_access():
        return list(Membership.all_tenants.filter(user=user).select_related("tenant").order_by("tenant__name"))


def membership_for(*, user: User, tenant: Tenant) -> Membership | None:
    """Return the user's membership of ``tenant`` (the current tenant), or None."""
    return Membership.objects.filter(tenant=tenant, user=user).select_related("tenant").first()


def api_key_for_secret(raw_key: str) -> ApiKey | None:
    """Return the active key with this secret, from any tenant, or None."""
    with platform_access():
        try:
            return ApiKey.all_tenants.select_related("tenant").get(
                key_hash=api_key_hash(raw_key), revoked_at__isnull=True
            )
        except ApiKey.DoesNotExist:
            return None


def members_of(tenant: Tenant) -> QuerySet[Membership]:
    return Membership.objects.filter(tenant=tenant).select_related("user").order_by("user__email")


def open_invitations_of(tenant: Tenant) -> QuerySet[Invitation]:
    fresh_since = timezone.now() - timedelta(days=settings.INVITATION_MAX_AGE_DAYS)
    return Invitation.objects.filter(
        tenant=tenant, accepted_at=None, revoked_at=None, created_at__gte=fresh_since
    ).select_related("invited_by")


def api_keys_of(tenant: Tenant) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(tenant=tenant).select_related("created_by")


@dataclass(frozen=True)
class TenantOverview:
    """What the dashboard shows about the workspace itself."""

    members: int
    open_invitations: int
    active_api_keys: int
    has_postal_address: bool
    has_sender: bool


def tenant_overview(tenant: Tenant) -> TenantOverview:
    return TenantOverview(
        members=Membership.objects.filter(tenant=tenant).count(),
        open_invitations=open_invitations_of(tenant).count(),
        active_api_keys=ApiKey.objects.filter(tenant=tenant, revoked_at=None).count(),
        has_postal_address=bool(tenant.postal_address.strip()),
        has_sender=bool(tenant.default_sender_email),
    )
