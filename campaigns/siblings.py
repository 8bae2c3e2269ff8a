"""Hidden sibling campaigns: a campaign's messages on another channel, sent by a copy of the campaign.

The sender sends a run on its campaign's one channel (campaigns/sending.py). When some contacts of a
run are to get the message on another channel -- an arm of a channel A/B test
(analytics/experiments.py), or each contact's preferred channel (analytics/preferred_channel.py) --
their deliveries belong to a run of a hidden **sibling**: a copy of the campaign on that channel, of
kind "journey" (no campaign page, API list or plan count shows it, and its runs finish without
touching a campaign status), with copies of the variants (``Variant.copy_of``). The sibling's run is
sent like any run: consent, suppression, pauses, caps and quiet hours are checked for its channel at
the moment of sending, and its opens, clicks and conversions carry the sibling's ids.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from django.db import transaction
from django.db.models import Case, F, IntegerField, Max, Value, When
from django.utils import timezone

from campaigns.models import Campaign, CampaignRun, Variant

# What a copy takes from its variant: the content, not where the variant sits in its campaign.
_NOT_COPIED = {
    "id", "tenant", "campaign", "position", "target", "target_segment", "target_stage", "weight", "copy_of",
}  # fmt: skip
CONTENT_FIELDS = tuple(f.name for f in Variant._meta.concrete_fields if f.name not in _NOT_COPIED)


def sibling_create(
    *, parent: Campaign, channel: str, name: str, description: str, owned: bool = False
) -> Campaign:  # fmt: skip
    """A hidden copy of ``parent`` that sends on ``channel``, sent at once when given a run.

    ``owned``: recorded as the parent's (``sibling_of``), so the parent's pause, resume and cancel
    reach its runs and the parent counts as sent only when they are done.
    """
    sibling = Campaign.objects.get(tenant_id=parent.tenant_id, pk=parent.pk)
    sibling.pk = None
    sibling._state.adding = True
    sibling.kind = Campaign.Kind.JOURNEY
    sibling.channel = channel
    sibling.status = Campaign.Status.DRAFT
    sibling.name = name[:200]
    sibling.description = description
    sibling.periodic_task = None
    # Times are set on the deliveries before the sibling gets them.
    sibling.schedule, sibling.send_at, sibling.crontab, sibling.local_time = Campaign.Schedule.NOW, None, "", None
    sibling.best_time = False
    sibling.preferred_channel, sibling.preferred_channels = False, []
    sibling.sibling_of = parent if owned else None
    sibling.save()
    return sibling


def variant_copy(*, variant: Variant, sibling: Campaign, copy: Variant | None = None) -> Variant:
    """The sibling's copy of ``variant`` with its current content (created, or updated when it differs)."""
    if copy is None:
        copy = Variant(
            tenant_id=sibling.tenant_id, campaign=sibling, position=variant.position, target=Variant.Target.DEFAULT,
            weight=100, copy_of=variant,
        )  # fmt: skip
    changed = [name for name in CONTENT_FIELDS if getattr(copy, name) != getattr(variant, name)]
    for name in changed:
        setattr(copy, name, getattr(variant, name))
    if copy.pk is None:
        copy.save()
    elif changed:
        copy.save(update_fields=changed)
    return copy


def sibling_run_create(
    *, sibling: Campaign, scheduled_for: dt.datetime, parent: CampaignRun | None = None
) -> CampaignRun:  # fmt: skip
    """A new sending run of ``sibling`` for ``scheduled_for`` (the next free microsecond: one run per occurrence)."""
    runs = CampaignRun.objects.filter(tenant_id=sibling.tenant_id, campaign=sibling)
    while runs.filter(scheduled_for=scheduled_for).exists():
        scheduled_for += dt.timedelta(microseconds=1)
    number = (runs.aggregate(n=Max("number"))["n"] or 0) + 1
    return CampaignRun.objects.create(
        tenant_id=sibling.tenant_id, campaign=sibling, number=number, scheduled_for=scheduled_for,
        status=CampaignRun.Status.SENDING, started_at=timezone.now(), parent=parent,
    )  # fmt: skip


def deliveries_move(
    *, deliveries: Any, sibling: Campaign, variants: Mapping[int, int], scheduled_for: dt.datetime
) -> CampaignRun:  # fmt: skip
    """Move ``deliveries`` (their times kept) to a new run of ``sibling``, each variant to its copy
    (``variants``: variant id → copy id). The caller sends the run after commit."""
    run = sibling_run_create(sibling=sibling, scheduled_for=scheduled_for)
    moved = deliveries.update(run_id=run.pk, variant_id=_copies(variants))
    CampaignRun.objects.filter(pk=run.pk).update(audience_size=moved)
    return run


def _copies(variants: Mapping[int, int]) -> Any:
    if len(variants) == 1:
        return Value(next(iter(variants.values())))
    whens = [When(variant_id=pk, then=Value(copy)) for pk, copy in variants.items()]
    return Case(*whens, default=F("variant_id"), output_field=IntegerField())


def send_after_commit(run: CampaignRun) -> None:
    tenant_id, run_id = run.tenant_id, run.pk

    def send() -> None:
        from campaigns.tasks import send_run

        send_run.delay(tenant_id, run_id)

    transaction.on_commit(send)
