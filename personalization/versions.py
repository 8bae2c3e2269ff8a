"""Cache versions for decisions: what a cached decision was made from, so a change makes it stale.

A site key's cached details (personalization/public.py) are stamped with the key's own token, which
changes when the key does. A cached decision (personalization/decisions.py) is stamped with three tokens
and is used only while all three are unchanged:

- the tenant's **config** token: changes when a slot, a variant or a site key changes;
- the tenant's **membership epoch**: changes when so many contacts moved at once (a full segment
  refresh) that bumping each visitor would cost more than starting over;
- the **visitor** token: changes when the visitor is identified or linked to a contact, or when
  that contact enters or leaves a targeted segment or changes lifecycle stage.

Tokens are random, not counters: a token evicted from the cache comes back as a new one, which
only makes entries stale (never wrongly fresh). Nothing is cached across requests unless the
cache is shared by every web process (``PERSONALIZATION_CACHE``, on with Redis): with a
per-process memory cache a bump in one process would not reach the others.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

# Visitor tokens are bumped one by one up to this many contacts; beyond it the epoch moves.
MAX_VISITOR_BUMPS = 5_000
# Versions outlive the entries they stamp (entries expire by PERSONALIZATION_DECISION_TTL).
VERSION_TTL = 7 * 24 * 3600


def enabled() -> bool:
    return bool(getattr(settings, "PERSONALIZATION_CACHE", False))


@functools.cache
def _namespace() -> str:
    # Tenant ids repeat across databases that share one cache (test databases, staging and production).
    database = settings.DATABASES["default"]
    where = f"{database.get('HOST', '')}:{database.get('PORT', '')}/{database.get('NAME', '')}"
    return hashlib.sha256(where.encode()).hexdigest()[:8]


def cache_key(*parts: object) -> str:
    """A cache key of this app: ``pz:<database>:<parts>``."""
    return ":".join(["pz", _namespace(), *map(str, parts)])


def config_key(tenant_id: int) -> str:
    return cache_key("cfg", tenant_id)


def epoch_key(tenant_id: int) -> str:
    return cache_key("ep", tenant_id)


def visitor_key(tenant_id: int, anonymous_id: str) -> str:
    return cache_key("vt", tenant_id, anonymous_id)


def site_key_cache_key(public_key: str) -> str:
    return cache_key("key", public_key)


def site_key_version_key(public_key: str) -> str:
    return cache_key("kv", public_key)


def new_token() -> str:
    return secrets.token_hex(6)


def read_tokens(keys: list[str]) -> list[str]:
    """Return the token under each key, creating the missing ones (two round trips when some are missing)."""
    from personalization import cache_client

    found: dict[str, Any] = cache_client.get_many(keys)
    missing = [key for key in keys if found.get(key) is None]
    if missing:
        # Another process may create the same token at the same time: keep whichever was set first.
        found.update(cache_client.add_many({key: new_token() for key in missing}, VERSION_TTL))
    return [str(found[key]) for key in keys]


def _bump(keys: list[str]) -> None:
    if enabled() and keys:
        cache.set_many({key: new_token() for key in keys}, VERSION_TTL)


def _after_commit(keys: list[str]) -> None:
    # After commit: a request between the bump and the commit would cache the old state again.
    if enabled() and keys:
        transaction.on_commit(functools.partial(_bump, keys))


def config_changed(tenant_id: int, *, public_keys: Iterable[str] = ()) -> None:
    """Slots, variants or site keys of the tenant changed: every cached decision (and these keys' details)
    is stale."""
    _after_commit([config_key(tenant_id), *(site_key_version_key(key) for key in public_keys)])


def _visitor_keys(tenant_id: int, anonymous_ids: Iterable[str]) -> list[str]:
    ids = sorted(set(anonymous_ids))
    if len(ids) > MAX_VISITOR_BUMPS:
        return [epoch_key(tenant_id)]
    return [visitor_key(tenant_id, anonymous_id) for anonymous_id in ids]


def visitors_changed(tenant_id: int, anonymous_ids: Iterable[str]) -> None:
    """These visitors' contacts (or what their contacts are) changed (stale once the change commits)."""
    _after_commit(_visitor_keys(tenant_id, anonymous_ids))


def visitors_changed_now(tenant_id: int, anonymous_ids: Iterable[str]) -> None:
    """The same, for callers that run after the change committed (signal receivers)."""
    _bump(_visitor_keys(tenant_id, anonymous_ids))


def membership_epoch_changed(tenant_id: int) -> None:
    """Too many contacts moved to bump them one by one: every visitor of the tenant is stale."""
    _bump([epoch_key(tenant_id)])


# --- receivers: what other apps announce -----------------------------------------------------------
def _visitors_of(tenant_id: int, contact_ids: list[int]) -> list[str] | None:
    """The visitors of these contacts, or None when there are too many to bump one by one."""
    from personalization.models import Visitor

    if len(contact_ids) > MAX_VISITOR_BUMPS:
        return None
    found: list[str] = []
    for start in range(0, len(contact_ids), 1_000):
        chunk = contact_ids[start : start + 1_000]
        found += Visitor.objects.filter(tenant_id=tenant_id, contact_id__in=chunk).values_list(
            "anonymous_id", flat=True
        )
    return found


def on_membership_changed(*, tenant_id: int, segment_ids: list[int], occurred_at: Any) -> None:
    """Contacts entered or left segments (committed): stale the decisions of their visitors.

    Only segments an active variant targets matter; the contacts that moved are the segments'
    transitions at ``occurred_at``.
    """
    from personalization.models import SlotVariant
    from segments.models import SegmentTransition
    from tenants.context import tenant_context

    if not enabled():
        return
    with tenant_context(tenant_id):
        targeted = list(
            SlotVariant.objects.filter(tenant_id=tenant_id, active=True, target_segment_id__in=segment_ids)
            .values_list("target_segment_id", flat=True)
            .distinct()
        )
        if not targeted:
            return
        moved = list(
            SegmentTransition.objects.filter(
                tenant_id=tenant_id, segment_id__in=targeted, occurred_at=occurred_at
            ).values_list("contact_id", flat=True)[: MAX_VISITOR_BUMPS + 1]
        )
        visitors = _visitors_of(tenant_id, sorted(set(moved)))
    if visitors is None:
        membership_epoch_changed(tenant_id)
    else:
        visitors_changed_now(tenant_id, visitors)


def on_stages_changed(*, tenant_id: int, changes: list[list[Any]]) -> None:
    """Contacts changed lifecycle stage (committed): stale their visitors' decisions if stages are targeted."""
    from personalization.models import SlotVariant
    from tenants.context import tenant_context
    from tenants.facts import tenant_fact

    if not enabled():
        return

    def stage_variants() -> bool:
        with tenant_context(tenant_id):
            return SlotVariant.objects.filter(
                tenant_id=tenant_id, active=True, target=SlotVariant.Target.STAGE
            ).exists()

    if not tenant_fact("personalization.stage_variants", tenant_id, stage_variants):  # tenants/facts.py
        return
    with tenant_context(tenant_id):
        visitors = _visitors_of(tenant_id, sorted({int(contact_id) for contact_id, _stage in changes}))
    if visitors is None:
        membership_epoch_changed(tenant_id)
    else:
        visitors_changed_now(tenant_id, visitors)
