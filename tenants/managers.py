"""Managers for tenant-owned models: scoped by default, unscoped by name."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from django.contrib.auth.base_user import BaseUserManager
from django.db import models

from tenants.context import current_scope, current_tenant_id

if TYPE_CHECKING:
    from tenants.models import User

M = TypeVar("M", bound=models.Model)


class TenantManager(models.Manager[M]):
    """Default manager: only the current tenant's rows; raises ``TenantNotSet`` without one.

    Inside ``platform_access()`` with no tenant (the Django admin's platform view)
    it spans every tenant, so Django's own uses of the default manager (foreign-key
    choices in admin forms) work there too.
    """

    def get_queryset(self) -> models.QuerySet[M]:
        scope = current_scope()
        if scope.platform and scope.tenant_id is None:
            return super().get_queryset()
        return super().get_queryset().filter(tenant_id=current_tenant_id())

    def create(self, **kwargs: Any) -> M:
        if "tenant" not in kwargs and "tenant_id" not in kwargs:
            kwargs["tenant_id"] = current_tenant_id()
        return super().create(**kwargs)


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def _create_user(self, email: str, password: str | None, **extra: Any) -> User:
        if not email:
            raise ValueError("An email address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self._create_user(email, password, **extra)
