"""Reads for campaigns: the list, a run's delivery log, a campaign's runs (progress: ``sending.run_progress``)."""

from __future__ import annotations

from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from campaigns.models import Campaign, CampaignRun, Delivery
from tenants.models import Tenant


def campaign_list(
    *, tenant: Tenant, status: str | None = None, channel: str | None = None, search: str | None = None
) -> QuerySet[Campaign]:
    """The tenant's campaigns, newest first, with ``run_count``; filtered by status, channel and name."""
    campaigns = Campaign.objects.filter(tenant=tenant).select_related("periodic_task", "created_by")
    if status:
        campaigns = campaigns.filter(status=status)
    if channel:
        campaigns = campaigns.filter(channel=channel)
    if search and search.strip():
        term = search.strip()
        campaigns = campaigns.filter(Q(name__icontains=term) | Q(description__icontains=term))
    return campaigns.annotate(run_count=Count("runs", distinct=True)).order_by("-created_at", "-id")


def delivery_list(*, run: CampaignRun, status: str | None = None, skip_reason: str | None = None) -> QuerySet[Delivery]:
    """A run's deliveries in id order, with the contact's email and phone and the variant's name (the log)."""
    deliveries = Delivery.objects.filter(tenant_id=run.tenant_id, run=run)
    if status:
        deliveries = deliveries.filter(status=status)
    if skip_reason:
        deliveries = deliveries.filter(skip_reason=skip_reason)
    return (
        deliveries.select_related("contact", "variant")
        .only(
            "id",
            "run_id",
            "contact_id",
            "variant_id",
            "status",
            "skip_reason",
            "not_before",
            "claimed_at",
            "attempts",
            "sent_at",
            "provider_message_id",
            "error",
            "tenant_id",
            "contact__id",
            "contact__email",
            "contact__phone",
            "contact__first_name",
            "contact__last_name",
            "contact__tenant_id",
            "variant__id",
            "variant__name",
            "variant__tenant_id",
        )
        .order_by("id")
    )


def campaign_runs(*, campaign: Campaign) -> QuerySet[CampaignRun]:
    """A campaign's runs, newest first, with delivery counts: ``pending_count``, ``sending_count``,
    ``sent_count``, ``skipped_count``, ``failed_count``."""
    runs = CampaignRun.objects.filter(tenant_id=campaign.tenant_id, campaign=campaign).order_by("-number")
    return runs.annotate(
        **{f"{status}_count": _delivery_count(campaign.tenant_id, status) for status in Delivery.Status.values}
    )


def _delivery_count(tenant_id: int, status: str) -> Coalesce:
    """Deliveries of the outer run in one status (Delivery has no reverse accessor on CampaignRun)."""
    rows = (
        Delivery.objects.filter(tenant_id=tenant_id, run_id=OuterRef("pk"), status=status)
        .order_by()
        .values("run_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(rows, output_field=IntegerField()), 0)
