"""Reads for campaigns: the list, a run's delivery log, a campaign's runs (progress: ``sending.run_progress``),
the contact a preview renders as."""

from __future__ import annotations

from typing import Any, cast

from django.db.models import Count, ExpressionWrapper, IntegerField, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce

from campaigns import sending
from campaigns.models import Campaign, CampaignAudience, CampaignRun, Delivery
from contacts.models import Contact
from tenants.models import Tenant

LIST_PAGE_SIZE = 50


def campaign_list(
    *, tenant: Tenant, status: str | None = None, channel: str | None = None, search: str | None = None
) -> QuerySet[Campaign]:
    """The tenant's campaigns, newest first, with ``run_count``; filtered by status, channel and name."""
    campaigns = Campaign.objects.filter(tenant=tenant, kind=Campaign.Kind.CAMPAIGN).select_related(
        "periodic_task", "created_by"
    )
    if status:
        campaigns = campaigns.filter(status=status)
    if channel:
        campaigns = campaigns.filter(channel=channel)
    if search and search.strip():
        term = search.strip()
        campaigns = campaigns.filter(Q(name__icontains=term) | Q(description__icontains=term))
    return campaigns.annotate(run_count=Count("runs", distinct=True)).order_by("-created_at", "-id")


def delivery_list(*, run: CampaignRun, status: str | None = None, skip_reason: str | None = None) -> QuerySet[Delivery]:
    """A run's deliveries in id order (its siblings' runs' too: campaigns/siblings.py), with the contact's email and
    phone and the variant's name (the log)."""
    deliveries = Delivery.objects.filter(tenant_id=run.tenant_id, run_id__in=sending.run_family(run))
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
            "chosen_channel",
            "channel_reason",
            "score_email",
            "score_sms",
            "score_push",
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


def _delivery_count(tenant_id: int, status: str) -> Any:
    """Deliveries of the outer run in one status, its siblings' runs' included (campaigns/siblings.py).

    (Delivery has no reverse accessor on CampaignRun.) Two subqueries, not an OR: each one is an index
    lookup by run."""
    own = Delivery.objects.filter(tenant_id=tenant_id, run_id=OuterRef("pk"), status=status)
    split = Delivery.objects.filter(
        tenant_id=tenant_id, run__tenant_id=tenant_id, run__parent_id=OuterRef("pk"), status=status
    )
    counts = [
        Coalesce(Subquery(rows.order_by().values("tenant_id").annotate(n=Count("pk")).values("n")), 0)
        for rows in (own, split)
    ]
    return ExpressionWrapper(counts[0] + counts[1], output_field=IntegerField())


def campaign_rows(tenant: Tenant, *, q: str = "", status: str = "", channel: str = "") -> list[dict[str, Any]]:
    """The list's rows: each campaign with its latest run and that run's sent count."""
    campaigns = campaign_list(tenant=tenant, status=status or None, channel=channel or None, search=q)
    latest = CampaignRun.objects.filter(tenant=tenant, campaign=OuterRef("pk")).order_by("-number")
    campaigns = campaigns.annotate(last_run_id=Subquery(latest.values("pk")[:1])).order_by("-created_at")
    page = list(campaigns[:LIST_PAGE_SIZE])
    runs = {
        run.pk: run
        for run in CampaignRun.objects.filter(tenant=tenant, pk__in=[c.last_run_id for c in page if c.last_run_id])
    }
    sent = _sent_counts(tenant, list(runs))
    included = _included_sizes(tenant, [c.pk for c in page])
    rows = []
    for campaign in page:
        run = runs.get(campaign.last_run_id)
        rows.append(
            {
                "campaign": campaign,
                "run": run,
                "audience_size": run.audience_size if run else included.get(campaign.pk),
                "audience_estimated": run is None,
                "sent": sent.get(run.pk, 0) if run else None,
            }
        )
    return rows


def _sent_counts(tenant: Tenant, run_ids: list[int]) -> dict[int, int]:
    if not run_ids:
        return {}
    # A sibling's run counts for the run it was split from (campaigns/siblings.py).
    split = dict(CampaignRun.objects.filter(tenant=tenant, parent_id__in=run_ids).values_list("pk", "parent_id"))
    rows = (
        Delivery.objects.filter(tenant=tenant, run_id__in=[*run_ids, *split], status=Delivery.Status.SENT)
        .values("run_id")
        .annotate(n=Count("id"))
    )
    counts: dict[int, int] = {}
    for row in rows:
        owner = split.get(row["run_id"], row["run_id"])
        counts[owner] = counts.get(owner, 0) + row["n"]
    return counts


def _included_sizes(tenant: Tenant, campaign_ids: list[int]) -> dict[int, int]:
    """Before a first run: the included segments' sizes added up (an upper bound of the audience)."""
    rows = (
        CampaignAudience.objects.filter(tenant=tenant, campaign_id__in=campaign_ids, exclude=False)
        .values("campaign_id")
        .annotate(n=Sum("segment__size"))
    )
    return {row["campaign_id"]: row["n"] or 0 for row in rows}


def preview_contact(campaign: Campaign, chosen: Contact | None) -> Contact | None:
    """The contact a preview or test renders as: the chosen one, else the audience's first, else anyone's."""
    if chosen is not None:
        return chosen
    first = sending.audience(campaign).order_by("pk").first()
    if first is not None:
        return cast(Contact, first)
    return Contact.objects.filter(tenant=campaign.tenant, erased_at__isnull=True).order_by("pk").first()
