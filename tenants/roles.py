"""Roles and the permission matrix, written down once and enforced everywhere.

| permission        | viewer | analyst | marketer | admin | owner |
|-------------------|:------:|:-------:|:--------:|:-----:|:-----:|
| view              |   ✓    |    ✓    |    ✓     |   ✓   |   ✓   |
| export            |        |    ✓    |    ✓     |   ✓   |   ✓   |
| edit_content      |        |         |    ✓     |   ✓   |   ✓   |
| manage_tenant     |        |         |          |   ✓   |   ✓   |
| delete_tenant     |        |         |          |       |   ✓   |

``edit_content`` covers contacts, segments, campaigns and journeys;
``manage_tenant`` covers members, invitations, API keys and tenant settings.
Only an owner may grant or take away the owner role.
"""

from __future__ import annotations

from enum import StrEnum

from django.db import models


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MARKETER = "marketer", "Marketer"
    ANALYST = "analyst", "Analyst"
    VIEWER = "viewer", "Viewer"


class Permission(StrEnum):
    VIEW = "view"
    EXPORT = "export"
    EDIT_CONTENT = "edit_content"
    MANAGE_TENANT = "manage_tenant"
    DELETE_TENANT = "delete_tenant"


_VIEWER = frozenset({Permission.VIEW})
_ANALYST = _VIEWER | {Permission.EXPORT}
_MARKETER = _ANALYST | {Permission.EDIT_CONTENT}
_ADMIN = _MARKETER | {Permission.MANAGE_TENANT}
_OWNER = _ADMIN | {Permission.DELETE_TENANT}

ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    Role.VIEWER: _VIEWER,
    Role.ANALYST: _ANALYST,
    Role.MARKETER: _MARKETER,
    Role.ADMIN: _ADMIN,
    Role.OWNER: _OWNER,
}


def role_allows(role: str, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS.get(role, frozenset())
