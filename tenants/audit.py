"""Who did what, for tenant admins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import models

from tenants.models import ApiKey, AuditLog, Tenant, User


@dataclass(frozen=True)
class Actor:
    """Who performs an action: a signed-in user, an API key, the contact, or the system."""

    label: str
    user: User | None = None

    @classmethod
    def for_user(cls, user: User) -> Actor:
        return cls(label=user.email, user=user)

    @classmethod
    def for_api_key(cls, api_key: ApiKey) -> Actor:
        return cls(label=f"api key {api_key.name} ({api_key.prefix}…)")

    @classmethod
    def system(cls, what: str = "system") -> Actor:
        return cls(label=what)


def audit(
    *, tenant: Tenant, actor: Actor, action: str, obj: models.Model | None = None, data: dict[str, Any] | None = None
) -> AuditLog:
    """Record an action. Never put personal data in ``data``: ids and counts only."""
    return AuditLog.objects.create(
        tenant=tenant,
        action=action,
        actor_user=actor.user,
        actor_label=actor.label,
        object_type=obj._meta.model_name if obj is not None else "",
        object_id=str(obj.pk) if obj is not None else "",
        data=data or {},
    )
