"""Where campaigns use a segment (audience or variant target): shown on the segment, and it blocks deletion."""

from __future__ import annotations

from typing import Any

from django.urls import reverse

from campaigns.models import Campaign, CampaignAudience, Variant
from segments.models import Segment


def campaign_usages(segment: Segment) -> list[dict[str, Any]]:
    tenant_id = segment.tenant_id
    audiences = CampaignAudience.objects.filter(tenant_id=tenant_id, segment=segment)
    targets = Variant.objects.filter(tenant_id=tenant_id, target_segment=segment)
    ids = set(audiences.values_list("campaign_id", flat=True)) | set(targets.values_list("campaign_id", flat=True))
    campaigns = Campaign.objects.filter(tenant_id=tenant_id, pk__in=ids, kind=Campaign.Kind.CAMPAIGN)
    return [
        {"kind": "campaign", "id": c.pk, "name": c.name, "url": _url(c)}
        for c in campaigns.select_related("tenant").order_by("name")
    ]


def _url(campaign: Campaign) -> str:
    return reverse("campaigns:detail", kwargs={"tenant_slug": campaign.tenant.slug, "campaign_id": campaign.pk})
