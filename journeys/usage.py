"""Where journeys use a segment (trigger, entry, exit, a branch's rules, a send step's variant target)."""

from __future__ import annotations

from typing import Any

from django.db.models import Q
from django.urls import NoReverseMatch, reverse

from campaigns.models import Variant
from journeys.models import Journey, Step, StepKind
from segments.models import Segment
from segments.rules import referenced_segments


def journey_usages(segment: Segment) -> list[dict[str, Any]]:
    tenant_id = segment.tenant_id
    ids = set(
        Journey.objects.filter(
            Q(trigger_segment=segment) | Q(entry_segment=segment) | Q(exit_segment=segment), tenant_id=tenant_id
        ).values_list("pk", flat=True)
    )
    targeted = Variant.objects.filter(tenant_id=tenant_id, target_segment=segment).values("campaign_id")
    ids |= set(
        Step.objects.filter(tenant_id=tenant_id, campaign_id__in=targeted).values_list("version__journey_id", flat=True)
    )
    for journey_id, rules in Step.objects.filter(tenant_id=tenant_id, kind=StepKind.BRANCH).values_list(
        "version__journey_id", "config__rules"
    ):
        if isinstance(rules, dict) and segment.pk in referenced_segments(rules):
            ids.add(journey_id)
    journeys = Journey.objects.filter(tenant_id=tenant_id, pk__in=ids).select_related("tenant").order_by("name")
    return [{"kind": "journey", "id": j.pk, "name": j.name, "url": _url(j)} for j in journeys]


def _url(journey: Journey) -> str:
    try:
        return reverse("journeys:detail", kwargs={"tenant_slug": journey.tenant.slug, "journey_id": journey.pk})
    except NoReverseMatch:
        return ""
