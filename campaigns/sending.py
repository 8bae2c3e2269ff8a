"""Sending a campaign run: snapshot the audience, claim batches, check again, send once, record.

- **Snapshot**: one ``INSERT … SELECT`` creates a ``Delivery`` per contact of the included
  segments minus the excluded ones, each with its variant chosen in SQL (first matching
  target wins; variants sharing a target split it by weight on a hash of contact and run).
- **Claim**: a worker takes a batch with ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP
  LOCKED)`` and commits the claim before sending, so two workers never hold the same
  delivery. A claim older than ``STALE_CLAIM`` (its worker died) goes back to pending and is
  sent again with the same deterministic Message-ID, which lets the provider drop the
  duplicate of the one message that may have been in flight.
- **Check again at the moment of sending**: erased, no address, consent for the channel and
  purpose, suppression, a pause the contact asked for, the tenant's frequency cap. A skipped delivery records why.
- **Record**: sent, skipped with a reason, or failed (transient failures go back to pending
  with a later ``not_before`` until ``MAX_ATTEMPTS``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, Count, Exists, F, IntegerField, OuterRef, Q, Value, When
from django.db.models.functions import Mod
from django.utils import timezone

from campaigns.channels.base import OutgoingEmail, SendResult, SendStatus
from campaigns.channels.email import DjangoEmailBackend
from campaigns.models import Campaign, CampaignChannel, CampaignRun, ContactPause, Delivery, Variant
from campaigns.rendering import RenderError, html_to_text, message_context, render
from contacts.models import ConsentState, ConsentStatus, Contact, Suppression
from contacts.normalize import address_hash
from segments.models import SegmentMember
from tenants.models import Tenant

BATCH_SIZE = 200
MAX_ATTEMPTS = 5
STALE_CLAIM = dt.timedelta(minutes=10)
RETRY_DELAY = dt.timedelta(minutes=2)
# The contact column that holds a channel's address.
ADDRESS_COLUMN = {CampaignChannel.EMAIL: "email", CampaignChannel.SMS: "phone"}
HASH_MULTIPLIER = 2654435761  # Knuth's multiplicative hash: spreads consecutive ids over the buckets


# --- snapshot --------------------------------------------------------------------------------------
def variant_expression(campaign: Campaign) -> Any:
    """The variant of each contact as a SQL CASE: first matching target wins, weights split a target."""
    variants = list(Variant.objects.filter(tenant_id=campaign.tenant_id, campaign=campaign).order_by("position", "id"))
    targets: dict[tuple[str, Any], list[Variant]] = {}
    for variant in variants:
        key = (variant.target, variant.target_segment_id or variant.target_stage or None)
        targets.setdefault(key, []).append(variant)
    whens: list[When] = []
    default: Any = Value(None, output_field=IntegerField())
    for (target, value), group in targets.items():
        chosen = _split(group)
        if target == Variant.Target.DEFAULT:
            default = chosen
            continue
        if target == Variant.Target.SEGMENT:
            condition: Any = Exists(
                SegmentMember.objects.filter(tenant_id=campaign.tenant_id, segment_id=value, contact_id=OuterRef("pk"))
            )
        else:
            condition = Q(lifecycle_stage=value)
        whens.append(When(condition, then=chosen))
    return Case(*whens, default=default, output_field=IntegerField()) if whens else default


def _split(group: list[Variant]) -> Any:
    """One variant, or an A/B split by weight over the contact's 0-9,999 bucket (``_bucket``,
    annotated beside this expression by run_start)."""
    if len(group) == 1:
        return Value(group[0].pk, output_field=IntegerField())
    total = sum(v.weight for v in group) or len(group)
    whens, upper = [], 0
    for variant in group[:-1]:
        upper += round(10_000 * (variant.weight or 1) / total)
        whens.append(When(Q(_bucket__lt=upper), then=Value(variant.pk)))
    return Case(*whens, default=Value(group[-1].pk), output_field=IntegerField())


def audience(campaign: Campaign) -> Any:
    """The campaign's contacts: in any included segment, in no excluded one, not erased."""
    links = list(campaign.audience.all())
    members = SegmentMember.objects.filter(tenant_id=campaign.tenant_id, contact_id=OuterRef("pk"))
    included = [link.segment_id for link in links if not link.exclude]
    excluded = [link.segment_id for link in links if link.exclude]
    contacts = Contact.objects.filter(tenant_id=campaign.tenant_id, erased_at__isnull=True)
    contacts = contacts.filter(Exists(members.filter(segment_id__in=included))) if included else contacts.none()
    if excluded:
        contacts = contacts.exclude(Exists(members.filter(segment_id__in=excluded)))
    return contacts


def run_start(*, campaign: Campaign, scheduled_for: dt.datetime | None = None) -> CampaignRun:
    """Create the next run of a campaign and snapshot its audience into deliveries (one statement)."""
    now = timezone.now()
    with transaction.atomic():
        locked = Campaign.objects.select_for_update().get(pk=campaign.pk)
        number = (CampaignRun.objects.filter(tenant_id=locked.tenant_id, campaign=locked).count()) + 1
        run = CampaignRun.objects.create(
            tenant_id=locked.tenant_id, campaign=locked, number=number, scheduled_for=scheduled_for or now,
            status=CampaignRun.Status.SENDING, started_at=now,
        )  # fmt: skip
        contacts = audience(locked).annotate(
            _bucket=Mod(F("id") * HASH_MULTIPLIER + run.pk, 10_000), _variant=variant_expression(locked)
        )
        select_sql, params = contacts.values("id", "_variant").query.sql_with_params()
        table = Delivery._meta.db_table
        sql = (
            f"INSERT INTO {table} (tenant_id, run_id, contact_id, variant_id, status, skip_reason, attempts, "
            "provider_message_id, error) "
            f"SELECT %s, %s, a.id, a._variant, 'pending', '', 0, '', '' FROM ({select_sql}) AS a WHERE true "
            "ON CONFLICT DO NOTHING"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [locked.tenant_id, run.pk, *params])
            run.audience_size = cursor.rowcount
        run.save(update_fields=["audience_size"])
        Campaign.objects.filter(pk=locked.pk).update(status=Campaign.Status.SENDING)
    return run


# --- claim -----------------------------------------------------------------------------------------
def deliveries_claim(*, run: CampaignRun, size: int = BATCH_SIZE, now: dt.datetime | None = None) -> list[int]:
    """Take up to ``size`` pending deliveries of a run (committed before anything is sent)."""
    now = now or timezone.now()
    table = Delivery._meta.db_table
    lock = " FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
    sql = (
        f"UPDATE {table} SET status = 'sending', claimed_at = %s, attempts = attempts + 1 "
        f"WHERE id IN (SELECT id FROM {table} WHERE tenant_id = %s AND run_id = %s AND status = 'pending' "
        f"AND (not_before IS NULL OR not_before <= %s) ORDER BY id LIMIT %s{lock}) RETURNING id"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, [now, run.tenant_id, run.pk, now, size])
        return sorted(row[0] for row in cursor.fetchall())


def deliveries_reclaim_stale(*, run: CampaignRun, now: dt.datetime | None = None) -> int:
    """Claims whose worker died go back to pending (and are sent again with the same Message-ID)."""
    now = now or timezone.now()
    stale = Delivery.objects.filter(
        tenant_id=run.tenant_id, run=run, status=Delivery.Status.SENDING, claimed_at__lt=now - STALE_CLAIM
    )
    return stale.update(status=Delivery.Status.PENDING)


# --- checks and sending ----------------------------------------------------------------------------
@dataclass
class Outcome:
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    retried: int = 0


def message_id(delivery_id: int, tenant: Tenant) -> str:
    """The same for every attempt of a delivery, so a provider can drop a duplicate."""
    domain = (tenant.default_sender_email or "segmentor.local").rsplit("@", 1)[-1]
    digest = hashlib.sha256(f"{settings.SECRET_KEY}:{delivery_id}".encode()).hexdigest()[:16]
    return f"<d{delivery_id}.{digest}@{domain}>"


def _skip_reasons(campaign: Campaign, contacts: dict[int, Contact], now: dt.datetime) -> dict[int, str]:
    """Why a contact must not get this message now (checked at the moment of sending)."""
    tenant = campaign.tenant
    reasons: dict[int, str] = {}
    column = ADDRESS_COLUMN.get(CampaignChannel(campaign.channel))
    consent_channel = campaign.channel if campaign.channel != CampaignChannel.WEBHOOK else None
    granted: set[int] = set()
    if consent_channel:
        granted = set(
            ConsentState.objects.filter(
                tenant=tenant, contact_id__in=list(contacts), channel=consent_channel, purpose=campaign.purpose,
                status=ConsentStatus.GRANTED,
            ).values_list("contact_id", flat=True)
        )  # fmt: skip
    hashes = {
        pk: address_hash(campaign.channel, getattr(c, column))
        for pk, c in contacts.items()
        if column and getattr(c, column)
    }
    suppressed = set(
        Suppression.objects.filter(
            tenant=tenant, channel=campaign.channel, address_hash__in=list(hashes.values())
        ).values_list("address_hash", flat=True)
    )
    capped: set[int] = set()
    if tenant.frequency_cap_messages:
        since = now - dt.timedelta(days=tenant.frequency_cap_days)
        capped = {
            row["contact_id"]
            for row in Delivery.objects.filter(
                tenant=tenant, contact_id__in=list(contacts), status=Delivery.Status.SENT, sent_at__gte=since
            ).values("contact_id").annotate(n=Count("id")).filter(n__gte=tenant.frequency_cap_messages)
        }  # fmt: skip
    paused = set(
        ContactPause.objects.filter(tenant=tenant, contact_id__in=list(contacts), until__gt=now).values_list(
            "contact_id", flat=True
        )
    )
    for pk, contact in contacts.items():
        if contact.erased_at is not None:
            reasons[pk] = Delivery.SkipReason.ERASED
        elif column and not getattr(contact, column):
            reasons[pk] = Delivery.SkipReason.NO_ADDRESS
        elif consent_channel and pk not in granted:
            reasons[pk] = Delivery.SkipReason.NO_CONSENT
        elif pk in hashes and hashes[pk] in suppressed:
            reasons[pk] = Delivery.SkipReason.SUPPRESSED
        elif pk in paused:
            reasons[pk] = Delivery.SkipReason.PAUSED
        elif pk in capped:
            reasons[pk] = Delivery.SkipReason.FREQUENCY_CAP
    return reasons


def _email(campaign: Campaign, delivery: Delivery, contact: Contact, variant: Variant) -> OutgoingEmail:
    tenant = campaign.tenant
    ctx = message_context(
        contact=contact, tenant=tenant, campaign_name=campaign.name,
        cta={"label": variant.cta_label, "url": variant.cta_url},
    )  # fmt: skip
    html = render(variant.html_body, ctx, html_output=True)
    text = render(variant.text_body, ctx) if variant.text_body else html_to_text(html)
    sender_name = campaign.sender_name or tenant.default_sender_name or tenant.name
    sender = campaign.sender_email or tenant.default_sender_email or settings.DEFAULT_FROM_EMAIL
    return OutgoingEmail(
        to=contact.email, from_email=f"{sender_name} <{sender}>" if "<" not in sender else sender,
        subject=render(variant.subject, ctx).strip(), message_id=message_id(delivery.pk, tenant), html=html,
        text=text, reply_to=campaign.reply_to, metadata={"delivery": str(delivery.pk)},
    )  # fmt: skip


def deliveries_send(*, run: CampaignRun, ids: Sequence[int], backend: Any = None) -> Outcome:
    """Check, render and send claimed deliveries through one backend session; record each result."""
    now = timezone.now()
    campaign = Campaign.objects.select_related("tenant").get(pk=run.campaign_id)
    deliveries = {d.pk: d for d in Delivery.objects.filter(tenant_id=run.tenant_id, pk__in=list(ids), status="sending")}
    contacts = Contact.objects.filter(tenant_id=run.tenant_id, pk__in=[d.contact_id for d in deliveries.values()])
    by_contact = {c.pk: c for c in contacts}
    variants = {v.pk: v for v in Variant.objects.filter(tenant_id=run.tenant_id, campaign=campaign)}
    reasons = _skip_reasons(campaign, by_contact, now)
    outcome = Outcome()
    to_send: list[tuple[Delivery, OutgoingEmail]] = []
    for delivery in deliveries.values():
        reason = reasons.get(delivery.contact_id, "")
        if reason:
            _record(delivery, Delivery.Status.SKIPPED, skip_reason=reason)
            outcome.skipped += 1
            continue
        variant = variants.get(delivery.variant_id or 0)
        if variant is None:
            _record(delivery, Delivery.Status.FAILED, error="No variant targets this contact and there is no default.")
            outcome.failed += 1
            continue
        try:
            to_send.append((delivery, _email(campaign, delivery, by_contact[delivery.contact_id], variant)))
        except RenderError as error:
            _record(delivery, Delivery.Status.FAILED, error=f"Template: {error}")
            outcome.failed += 1
    if to_send:
        backend = backend or DjangoEmailBackend()
        results: list[SendResult] = backend.send_many([message for _, message in to_send])
        for (delivery, _), result in zip(to_send, results, strict=True):
            if result.status == SendStatus.SENT:
                _record(delivery, Delivery.Status.SENT, sent_at=timezone.now(), provider=result.provider_message_id)
                outcome.sent += 1
            elif result.status == SendStatus.FAILED_TRANSIENT and delivery.attempts < MAX_ATTEMPTS:
                delay = (
                    dt.timedelta(seconds=result.retry_after) if result.retry_after else RETRY_DELAY * delivery.attempts
                )
                _record(delivery, Delivery.Status.PENDING, error=result.error, not_before=now + delay)
                outcome.retried += 1
            else:
                _record(delivery, Delivery.Status.FAILED, error=result.error)
                outcome.failed += 1
    return outcome


def _record(
    delivery: Delivery, status: str, *, skip_reason: str = "", error: str = "", sent_at: dt.datetime | None = None,
    provider: str = "", not_before: dt.datetime | None = None,
) -> None:  # fmt: skip
    """Write one delivery's result, only if it is still this worker's claim (status 'sending')."""
    Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.SENDING).update(
        status=status, skip_reason=skip_reason, error=error[:2000], sent_at=sent_at, provider_message_id=provider[:200],
        not_before=not_before,
    )  # fmt: skip


def run_finish_if_done(*, run: CampaignRun) -> bool:
    """A run is done when every delivery is sent, skipped or failed; the campaign is then "sent"."""
    open_ = Delivery.objects.filter(
        tenant_id=run.tenant_id, run=run, status__in=[Delivery.Status.PENDING, Delivery.Status.SENDING]
    )
    if open_.exists():
        return False
    with transaction.atomic():
        updated = CampaignRun.objects.filter(pk=run.pk, status=CampaignRun.Status.SENDING).update(
            status=CampaignRun.Status.DONE, finished_at=timezone.now()
        )
        if updated:
            campaign = Campaign.objects.get(pk=run.campaign_id)
            if campaign.schedule != Campaign.Schedule.RECURRING:
                Campaign.objects.filter(pk=campaign.pk, status=Campaign.Status.SENDING).update(
                    status=Campaign.Status.SENT
                )
    return True


def run_progress(run: CampaignRun) -> dict[str, int]:
    rows = Delivery.objects.filter(tenant_id=run.tenant_id, run=run).values("status").annotate(n=Count("id"))
    return {row["status"]: row["n"] for row in rows}
