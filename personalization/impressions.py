"""Impressions: counted in Redis on the decision path, written to SlotDailyStats by a worker.

Every decision shows slots, and counting them in the database would cost each decision a transaction
and make every concurrent decision of a slot wait for the same row. So with Redis (and
``PERSONALIZATION_BUFFER_IMPRESSIONS``, on with the decision cache) a decision adds one to a field per
(day, slot, variant) of its tenant's hash, in one round trip; the beat's minute tick queues a flush per
tenant with impressions waiting, which adds them to the day's rows with the figures' upsert and, before
that transaction commits, takes exactly the amounts it wrote off the hash (a Lua script, atomic against
new increments). A flush that fails leaves the hash as it was; only a crash between taking them off and
the commit loses that minute's count. Impressions of a slot or variant deleted since are dropped.

Without Redis (the embedded default) each decision upserts its impressions at once.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable

from django.conf import settings
from django.db import transaction

from personalization import cache_client, versions
from personalization.models import Slot, SlotVariant
from personalization.services import SlotFigures, slot_impressions_record, slot_stats_add

TENANTS = "imp-tenants"


def _hash_key(tenant_id: int) -> str:
    return versions.cache_key("imp", tenant_id)


def buffered() -> bool:
    return bool(getattr(settings, "PERSONALIZATION_BUFFER_IMPRESSIONS", False))


def impressions_count(*, tenant_id: int, shown: Iterable[tuple[int, int | None]], day: dt.date) -> None:
    """Count one impression for each (slot id, variant id or None) shown: in Redis, else in the database."""
    shown = list(shown)
    fields = [f"{day.isoformat()}:{slot_id}:{variant_id or 0}" for slot_id, variant_id in shown]
    if not (
        buffered() and cache_client.hash_add(_hash_key(tenant_id), fields, versions.cache_key(TENANTS), str(tenant_id))
    ):
        slot_impressions_record(tenant_id=tenant_id, shown=shown, day=day)


def tenants_with_impressions() -> list[int]:
    return [int(member) for member in cache_client.set_members(versions.cache_key(TENANTS))]


@transaction.atomic
def impressions_flush(*, tenant_id: int) -> int:
    """Write the tenant's waiting impressions to SlotDailyStats; return how many were written."""
    waiting = cache_client.hash_read(_hash_key(tenant_id))
    parsed: list[tuple[dt.date, int, int | None, int]] = []
    for field, count in waiting.items():
        try:
            raw_day, raw_slot, raw_variant = field.split(":")
            parsed.append((dt.date.fromisoformat(raw_day), int(raw_slot), int(raw_variant) or None, count))
        except ValueError:
            continue  # not ours: taken off below all the same
    slot_ids = {slot_id for _, slot_id, _, _ in parsed}
    slots = set(Slot.objects.filter(tenant_id=tenant_id, pk__in=slot_ids).values_list("pk", flat=True))
    variants = set(SlotVariant.objects.filter(tenant_id=tenant_id, slot_id__in=slots).values_list("slot_id", "pk"))
    by_day: dict[dt.date, list[SlotFigures]] = defaultdict(list)
    written = 0
    for day, slot_id, variant_id, count in parsed:
        if count > 0 and slot_id in slots and (variant_id is None or (slot_id, variant_id) in variants):
            by_day[day].append(SlotFigures(slot_id, variant_id, impressions=count))
            written += count
    for day, figures in sorted(by_day.items()):
        slot_stats_add(tenant_id=tenant_id, day=day, figures=figures)
    if waiting:
        cache_client.hash_subtract(_hash_key(tenant_id), waiting, versions.cache_key(TENANTS), str(tenant_id))
    return written
