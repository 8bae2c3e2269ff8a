"""Which content each slot shows a visitor, fast and cached safely.

The rule: of a slot's active variants, in priority order, the first whose segment the visitor's
contact is a member of (the materialised membership) or whose lifecycle stage is the contact's
stage; else the slot's default content. A visitor without a contact gets the default.

With a shared cache (``PERSONALIZATION_CACHE``) a decision is cached per tenant, visitor and set
of slots, stamped with the versions it was made from (versions.py) and used only while they are
current; the tenant's slot rules are cached per config version. The versions are read before the
database, so a change that commits while a decision is being made leaves that decision stale.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from contacts.models import Contact
from personalization import cache_client, versions
from personalization.models import CONTENT_FIELDS, Slot, SlotVariant, Visitor
from segments.models import SegmentMember

MAX_SLOTS_PER_DECISION = 20
SLOTS_TTL = 3600


@dataclass(frozen=True)
class Content:
    headline: str
    body: str
    cta_label: str
    cta_url: str
    image_url: str

    def as_dict(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in CONTENT_FIELDS}


@dataclass(frozen=True)
class VariantRule:
    id: int
    segment_id: int | None
    stage: str
    content: Content


@dataclass(frozen=True)
class SlotRules:
    id: int
    key: str
    default: Content
    variants: tuple[VariantRule, ...]

    def choose(self, stage: str, segment_ids: frozenset[int]) -> tuple[int | None, Content]:
        """Return (variant id or None for the default, content) for a contact in ``segment_ids`` at ``stage``."""
        for variant in self.variants:
            if variant.segment_id is not None and variant.segment_id in segment_ids:
                return variant.id, variant.content
            if variant.stage and variant.stage == stage:
                return variant.id, variant.content
        return None, self.default


@dataclass(frozen=True)
class TenantSlots:
    """A tenant's active slots and the active variants of each, in priority order."""

    slots: dict[str, SlotRules]
    segment_ids: frozenset[int]  # segments some active variant targets

    @property
    def uses_stages(self) -> bool:
        return any(v.stage for slot in self.slots.values() for v in slot.variants)


@dataclass(frozen=True)
class Decision:
    slot_key: str
    slot_id: int
    variant_id: int | None
    content: Content

    def as_dict(self) -> dict[str, Any]:
        return {"slot": self.slot_key, "variant": self.variant_id, **self.content.as_dict()}


def _content(row: dict[str, Any]) -> Content:
    return Content(**{name: row[name] for name in CONTENT_FIELDS})


def load_tenant_slots(tenant_id: int) -> TenantSlots:
    """Read the tenant's active slots and variants from the database (two queries)."""
    slots = list(Slot.objects.filter(tenant_id=tenant_id, active=True).values("id", "key", *CONTENT_FIELDS))
    variants: dict[int, list[VariantRule]] = {}
    rows = (
        SlotVariant.objects.filter(tenant_id=tenant_id, active=True, slot__active=True)
        .order_by("slot_id", "priority", "id")
        .values("id", "slot_id", "target", "target_segment_id", "target_stage", *CONTENT_FIELDS)
    )
    for row in rows:
        segment_id = row["target_segment_id"] if row["target"] == SlotVariant.Target.SEGMENT else None
        stage = row["target_stage"] if row["target"] == SlotVariant.Target.STAGE else ""
        variants.setdefault(row["slot_id"], []).append(VariantRule(row["id"], segment_id, stage, _content(row)))
    by_key = {
        slot["key"]: SlotRules(slot["id"], slot["key"], _content(slot), tuple(variants.get(slot["id"], ())))
        for slot in slots
    }
    targeted = frozenset(v.segment_id for s in by_key.values() for v in s.variants if v.segment_id is not None)
    return TenantSlots(by_key, targeted)


def tenant_slots(tenant_id: int, config_token: str | None = None) -> TenantSlots:
    """The tenant's slot rules: from the cache for this config version, else from the database."""
    if config_token is None:
        return load_tenant_slots(tenant_id)
    key = versions.cache_key("slots", tenant_id, config_token)
    found = cache_client.get_many([key]).get(key)
    if isinstance(found, TenantSlots):
        return found
    loaded = load_tenant_slots(tenant_id)
    cache_client.set_value(key, loaded, SLOTS_TTL)
    return loaded


def contact_facts(tenant_id: int, contact_id: int | None, rules: TenantSlots) -> tuple[str, frozenset[int]]:
    """The contact's lifecycle stage and its memberships among the targeted segments."""
    if contact_id is None:
        return "", frozenset()
    stage = ""
    if rules.uses_stages:
        stage = (
            Contact.objects.filter(tenant_id=tenant_id, pk=contact_id, erased_at__isnull=True)
            .values_list("lifecycle_stage", flat=True)
            .first()
        ) or ""
    segments: frozenset[int] = frozenset()
    if rules.segment_ids:
        segments = frozenset(
            SegmentMember.objects.filter(
                tenant_id=tenant_id, contact_id=contact_id, segment_id__in=sorted(rules.segment_ids)
            ).values_list("segment_id", flat=True)
        )
    return stage, segments


def _decide(rules: TenantSlots, slot_keys: Sequence[str], stage: str, segments: frozenset[int]) -> list[Decision]:
    decisions = []
    for key in slot_keys:
        slot = rules.slots.get(key)
        if slot is not None:
            variant_id, content = slot.choose(stage, segments)
            decisions.append(Decision(slot.key, slot.id, variant_id, content))
    return decisions


def decide_for_contact(*, tenant_id: int, contact_id: int | None, slot_keys: Sequence[str]) -> list[Decision]:
    """What ``contact_id`` would see in these slots (the UI's preview); never cached."""
    rules = load_tenant_slots(tenant_id)
    stage, segments = contact_facts(tenant_id, contact_id, rules)
    return _decide(rules, slot_keys, stage, segments)


def _decision_key(tenant_id: int, anonymous_id: str, slot_keys: Sequence[str]) -> str:
    slot_set = ",".join(slot_keys)
    if len(slot_set) > 64:
        slot_set = hashlib.sha256(slot_set.encode()).hexdigest()[:32]
    return versions.cache_key("d", tenant_id, anonymous_id, slot_set)


def visitor_facts(tenant_id: int, anonymous_id: str, rules: TenantSlots) -> tuple[str, frozenset[int]]:
    """``contact_facts`` of the visitor's contact: on PostgreSQL in one query (visitor, stage, memberships).

    Written out rather than built by the ORM: building and compiling the same query cost more CPU than
    running it (the cold decision's largest part).
    """
    if connection.vendor != "postgresql":
        visitors = Visitor.objects.filter(tenant_id=tenant_id, anonymous_id=anonymous_id)
        return contact_facts(tenant_id, visitors.values_list("contact_id", flat=True).first(), rules)
    with connection.cursor() as cursor:
        cursor.execute(_visitor_facts_sql(), [sorted(rules.segment_ids), tenant_id, anonymous_id])
        row = cursor.fetchone()
    if row is None:
        return "", frozenset()
    return row[0] or "", frozenset(row[1] or ())


@functools.cache
def _visitor_facts_sql() -> str:
    quote = connection.ops.quote_name
    visitor, contact = quote(Visitor._meta.db_table), quote(Contact._meta.db_table)
    member = quote(SegmentMember._meta.db_table)
    # The explicit tenant filters stay (row-level security hides other tenants' rows too; the indexes need them).
    return f"""
        SELECT c.lifecycle_stage,
               ARRAY(SELECT m.segment_id FROM {member} m
                     WHERE m.tenant_id = v.tenant_id AND m.contact_id = v.contact_id AND m.segment_id = ANY(%s))
        FROM {visitor} v
        LEFT JOIN {contact} c ON c.tenant_id = v.tenant_id AND c.id = v.contact_id AND c.erased_at IS NULL
        WHERE v.tenant_id = %s AND v.anonymous_id = %s
    """


def decision_cache_keys(*, tenant_id: int, anonymous_id: str, slot_keys: Sequence[str]) -> list[str]:
    """The cache entries a decision reads (its three versions, then the entry): to fetch with other calls."""
    if not versions.enabled():
        return []
    return [
        versions.config_key(tenant_id),
        versions.epoch_key(tenant_id),
        versions.visitor_key(tenant_id, anonymous_id),
        _decision_key(tenant_id, anonymous_id, sorted(set(slot_keys))),
    ]


def decide_for_visitor(
    *, tenant_id: int, anonymous_id: str, slot_keys: Sequence[str], prefetched: dict[str, Any] | None = None
) -> list[Decision]:
    """What this visitor sees in these slots (the public decide endpoint); cached when the cache is shared.

    ``prefetched``: what the caller already read of ``decision_cache_keys`` (in its own round trip).
    """
    slot_keys = sorted(set(slot_keys))
    if not versions.enabled():
        with transaction.atomic():  # one transaction (one tenant setting) for the reads
            rules = load_tenant_slots(tenant_id)
            stage, segments = visitor_facts(tenant_id, anonymous_id, rules)
        return _decide(rules, slot_keys, stage, segments)
    *stamp_keys, entry_key = decision_cache_keys(tenant_id=tenant_id, anonymous_id=anonymous_id, slot_keys=slot_keys)
    found = cache_client.get_many([*stamp_keys, entry_key]) if prefetched is None else prefetched
    if all(key in found for key in stamp_keys):
        stamp = tuple(str(found[key]) for key in stamp_keys)
        entry = found.get(entry_key)
        if isinstance(entry, tuple) and len(entry) == 2 and entry[0] == stamp:
            return list(entry[1])
    else:
        stamp = tuple(versions.read_tokens(stamp_keys))
    with transaction.atomic():
        rules = tenant_slots(tenant_id, stamp[0])
        stage, segments = visitor_facts(tenant_id, anonymous_id, rules)
    decisions = _decide(rules, slot_keys, stage, segments)
    cache_client.set_value(entry_key, (stamp, tuple(decisions)), getattr(settings, "PERSONALIZATION_DECISION_TTL", 300))
    return decisions
