"""The current tenant, held in a context variable.

The web middleware sets it from the URL after checking membership, the API from
the API key, a Celery task from its ``tenant_id`` argument and a management
command from ``--tenant``. Scoped managers read it and raise when it is missing;
the PostgreSQL backend copies it into ``app.tenant_id`` for row-level security.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


class TenantNotSet(RuntimeError):
    """Tenant-owned data was touched with no current tenant: fail closed."""


@dataclass(frozen=True)
class TenantScope:
    """What the database may show: one tenant's rows, or (platform code only) all."""

    tenant_id: int | None = None
    platform: bool = False


NO_TENANT = TenantScope()
# TenantScope is frozen, so sharing one default instance is safe.
_scope: contextvars.ContextVar[TenantScope] = contextvars.ContextVar("tenant_scope", default=NO_TENANT)


def current_scope() -> TenantScope:
    return _scope.get()


def current_tenant_id() -> int:
    """Return the current tenant's id, or raise ``TenantNotSet``."""
    tenant_id = _scope.get().tenant_id
    if tenant_id is None:
        raise TenantNotSet("No current tenant: set one with tenants.context.tenant_context().")
    return tenant_id


def get_current_tenant_id() -> int | None:
    return _scope.get().tenant_id


def activate_tenant(tenant_id: int) -> contextvars.Token[TenantScope]:
    """Make ``tenant_id`` current until the token is reset (middleware, API auth)."""
    return _scope.set(TenantScope(tenant_id=int(tenant_id)))


def reset(token: contextvars.Token[TenantScope]) -> None:
    _scope.reset(token)


@contextmanager
def tenant_context(tenant_id: int) -> Iterator[None]:
    """Run a block as tenant ``tenant_id``."""
    token = activate_tenant(tenant_id)
    try:
        yield
    finally:
        _scope.reset(token)


@contextmanager
def fresh_scope() -> Iterator[None]:
    """Start a block (a request, a task) with no tenant, and restore the outer scope after it.

    Whatever the block activates dies with it. (Not ``copy_context().run``: that would
    also throw away other context-local state, such as Django's cache connections.)
    """
    token = _scope.set(NO_TENANT)
    try:
        yield
    finally:
        _scope.reset(token)


@contextmanager
def platform_access() -> Iterator[None]:
    """Let a block read and write every tenant's rows past row-level security.

    Only for platform code: resolving an API key or a user's memberships before a
    tenant is known, the Django admin's platform view, and maintenance commands.
    """
    token = _scope.set(TenantScope(tenant_id=_scope.get().tenant_id, platform=True))
    try:
        yield
    finally:
        _scope.reset(token)
