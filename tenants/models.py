from __future__ import annotations

import zoneinfo
from datetime import time
from typing import Any, ClassVar

from django.contrib.auth.models import AbstractBaseUser, PermissionsMixin
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone

from tenants.managers import TenantManager, UserManager
from tenants.roles import Permission, Role, role_allows


def validate_time_zone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not a known IANA time zone.", code="invalid_time_zone")


class User(AbstractBaseUser, PermissionsMixin):
    """A person who signs in (by email). Belongs to tenants through memberships."""

    email = models.EmailField(unique=True)
    full_name = models.CharField(max_length=150, blank=True)
    is_staff = models.BooleanField(default=False, help_text="Can sign in to the platform admin.")
    is_active = models.BooleanField(default=True)
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    class Meta:
        ordering = ["email"]

    def __str__(self) -> str:
        return self.email

    def get_full_name(self) -> str:
        return self.full_name or self.email

    def get_short_name(self) -> str:
        return self.full_name.split(" ")[0] if self.full_name else self.email


# What a tenant's admins may change about it (settings page, service, API).
TENANT_SETTINGS_FIELDS = (
    "name",
    "time_zone",
    "default_sender_name",
    "default_sender_email",
    "postal_address",
    "quiet_hours_start",
    "quiet_hours_end",
    "frequency_cap_messages",
    "frequency_cap_days",
    "auto_define_attributes",
    "repeat_customer_min_orders",
    "loyal_advocate_min_orders",
    "loyal_advocate_min_revenue",
    "event_retention_days",
    "consent_purposes",
)


def default_consent_purposes() -> list[str]:
    return ["marketing", "newsletter", "product_updates"]


class Tenant(models.Model):
    """A company using Segmentor. The root every tenant-owned row points to."""

    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=60, unique=True)
    time_zone = models.CharField(max_length=64, default="UTC", validators=[validate_time_zone])
    default_sender_name = models.CharField(max_length=120, blank=True)
    default_sender_email = models.EmailField(blank=True)
    postal_address = models.TextField(blank=True, help_text="Shown in the footer of every marketing email.")
    # Messages are held back between these local times (in the recipient's zone).
    quiet_hours_start = models.TimeField(default=time(21, 0))
    quiet_hours_end = models.TimeField(default=time(8, 0))
    # At most this many marketing messages per contact within the window.
    frequency_cap_messages = models.PositiveSmallIntegerField(default=3)
    frequency_cap_days = models.PositiveSmallIntegerField(default=7)
    # Contacts: unknown custom attribute keys are rejected unless auto-defined.
    auto_define_attributes = models.BooleanField(
        default=False, help_text="Define unknown custom attributes on first write instead of rejecting them."
    )
    consent_purposes = models.JSONField(default=default_consent_purposes, blank=True)
    # Lifecycle thresholds (see contacts/lifecycle.py for the rules).
    repeat_customer_min_orders = models.PositiveSmallIntegerField(default=2)
    loyal_advocate_min_orders = models.PositiveSmallIntegerField(default=5)
    loyal_advocate_min_revenue = models.DecimalField(max_digits=12, decimal_places=2, default=500)
    event_retention_days = models.PositiveIntegerField(
        default=730, validators=[MinValueValidator(1)], help_text="Events older than this are deleted."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("tenants:dashboard", kwargs={"tenant_slug": self.slug})


def unchecked_foreign_key(to: Any, *, on_delete: Any = models.CASCADE, db_index: bool = False, **kwargs: Any) -> Any:
    """A foreign key without a database constraint, for tables written in bulk (members, deliveries).

    Django still cascades deletes (or sets null) through the ORM. A constraint costs a trigger
    query per row written and share-locks the referenced row: most of materialising a
    300,000-member segment (22 s of 24 s) and 12 s of snapshotting 1,000,000 deliveries
    (bench/RESULTS.md).
    """
    return models.ForeignKey(
        to, on_delete=on_delete, related_name="+", db_index=db_index, db_constraint=False, **kwargs
    )


class TenantOwnedModel(models.Model):
    """Base for every tenant-owned model: a tenant column and the two managers.

    ``objects`` is scoped to the current tenant and raises without one;
    ``all_tenants`` is for platform code only (the admin, migrations).
    """

    # No index of its own: every tenant-owned table has a composite index or unique constraint
    # that leads with tenant_id, and a redundant index would slow every insert into big tables.
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", db_index=False)

    objects: ClassVar[TenantManager[Any]] = TenantManager()
    all_tenants: ClassVar[models.Manager[Any]] = models.Manager()

    class Meta:
        abstract = True
        base_manager_name = "all_tenants"


class Membership(TenantOwnedModel):
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta(TenantOwnedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "user"], name="membership_unique_user")]
        ordering = ["user__email"]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.tenant_id} as {self.role}"

    def allows(self, permission: Permission) -> bool:
        return role_allows(self.role, permission)

    def require(self, permission: Permission) -> None:
        """Raise PermissionDenied unless this member's role allows ``permission``."""
        if not self.allows(permission):
            raise PermissionDenied(f"Your role ({self.get_role_display()}) may not do this.")


class Invitation(TenantOwnedModel):
    """An invitation to join a tenant; accepted through a signed link sent by email."""

    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    invited_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantOwnedModel.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "email"],
                condition=models.Q(accepted_at__isnull=True, revoked_at__isnull=True),
                name="invitation_unique_open_email",
            )
        ]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="invitation_tenant_time")]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"invitation {self.pk} ({self.role})"

    @property
    def is_open(self) -> bool:
        return self.accepted_at is None and self.revoked_at is None


class ApiKey(TenantOwnedModel):
    """A secret for the REST API. Only its SHA-256 hash is stored; the prefix is shown."""

    class Scope(models.TextChoices):
        READ = "read", "Read"
        WRITE = "write", "Read and write"

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="The key's first characters, to tell keys apart.")
    key_hash = models.CharField(max_length=64)
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.READ)
    created_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantOwnedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "key_hash"], name="apikey_unique_hash")]
        # Authentication looks a key up by its hash before the tenant is known.
        indexes = [models.Index(fields=["key_hash"], name="apikey_hash_idx")]
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @property
    def can_write(self) -> bool:
        return self.scope == self.Scope.WRITE


class AuditLog(TenantOwnedModel):
    """Who did what: consent changes, exports, erasures, imports, API keys, members."""

    action = models.CharField(max_length=50)
    actor_user = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor_label = models.CharField(max_length=200, help_text="The user's email or the API key's name.")
    object_type = models.CharField(max_length=50, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta(TenantOwnedModel.Meta):
        indexes = [models.Index(fields=["tenant", "-created_at"], name="audit_time")]
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.action} ({self.object_type} {self.object_id})"
