"""Facts about a tenant's set-up that the write path asks after every commit and that change rarely.

After each write the listeners of contacts.signals ask "does this tenant have a live journey? a
campaign with a goal?": a query each, about a millisecond of the request apiece. A fact is computed
once and cached per tenant (``tenant_fact``); saving or deleting a row of a model the facts watch
(``watch``) makes every fact of that row's tenant stale (``facts_changed``).

Staleness without races: a tenant's facts are stored with the tenant's current token, and a change
replaces the token twice -- at once (this transaction's own later reads recompute) and after the
commit (a reader that recomputed in between saw the state before the commit and stored its answer
under the first new token, which the second one replaces). Tokens are random, not counters: an
evicted token comes back as a new one, which only makes entries stale, never wrongly fresh.

Cached only where the cache is shared by every process (``TENANT_FACTS_CACHE``, on with Redis): with
a per-process memory cache a change seen by one process would not reach the others. The cache keys
carry the database's identity (its oid and name), so databases that share one Redis (test runs,
staging and production) and a database dropped and created again never read each other's facts.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models.signals import post_delete, post_save

FACT_TTL = 24 * 3600  # a fact nobody asks for goes; the token lives as long


def enabled() -> bool:
    return bool(getattr(settings, "TENANT_FACTS_CACHE", False))


@functools.cache
def _namespace() -> str:
    name = str(settings.DATABASES["default"].get("NAME", ""))
    if connection.vendor != "postgresql":
        return name
    with connection.cursor() as cursor:
        cursor.execute("SELECT oid FROM pg_database WHERE datname = current_database()")
        (oid,) = cursor.fetchone()
    return f"{name}:{oid}"


def _token_key(tenant_id: int) -> str:
    return f"facts:{_namespace()}:{tenant_id}"


def _fact_key(tenant_id: int, name: str) -> str:
    return f"fact:{_namespace()}:{tenant_id}:{name}"


def tenant_fact(name: str, tenant_id: int, compute: Callable[[], bool]) -> bool:
    """The fact ``name`` of the tenant: from the cache while no watched row changed, else ``compute()``."""
    if not enabled():
        return compute()
    token_key, fact_key = _token_key(tenant_id), _fact_key(tenant_id, name)
    found: dict[str, Any] = cache.get_many([token_key, fact_key])
    token = found.get(token_key)
    if token is None:
        # Another process may create the token at the same time: keep whichever was set first.
        cache.add(token_key, secrets.token_hex(6), FACT_TTL)
        token = cache.get(token_key)
    cached = found.get(fact_key)
    if isinstance(cached, tuple) and cached[0] == token:
        return bool(cached[1])
    value = bool(compute())
    cache.set(fact_key, (token, value), FACT_TTL)
    return value


def facts_changed(tenant_id: int) -> None:
    """Something a fact is computed from changed in the tenant (in the current transaction, if any)."""
    if not enabled():
        return
    _replace_token(tenant_id)
    transaction.on_commit(functools.partial(_replace_token, tenant_id))


def _replace_token(tenant_id: int) -> None:
    cache.set(_token_key(tenant_id), secrets.token_hex(6), FACT_TTL)


def watch(model: type[Any]) -> None:
    """Make the tenant's facts stale whenever a row of ``model`` is saved or deleted (the admin and
    shells included)."""
    uid = f"tenants.facts.{model._meta.label}"
    post_save.connect(_row_changed, sender=model, dispatch_uid=f"{uid}.saved")
    post_delete.connect(_row_changed, sender=model, dispatch_uid=f"{uid}.deleted")


def _row_changed(sender: Any, *, instance: Any, **kwargs: Any) -> None:
    if instance.tenant_id is not None:
        facts_changed(instance.tenant_id)
