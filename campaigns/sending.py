"""Sending a campaign run: snapshot the audience, claim batches, check again, send once, record.

- **Snapshot**: one ``INSERT … SELECT`` creates a ``Delivery`` per contact of the included
  segments minus the excluded ones, each with its variant chosen in SQL (first matching
  target wins; variants sharing a target split it by weight on a hash of contact and run).
  For a campaign sent "at 09:00 in each recipient's time zone" the same statement sets each
  delivery's ``not_before`` (PostgreSQL ``AT TIME ZONE``). One run per occurrence: a second
  ``run_start`` for the same ``scheduled_for`` returns the run that exists.
- **Claim**: a worker takes a batch with ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP
  LOCKED)`` and commits the claim before sending, so two workers never hold the same
  delivery. Only a run whose status is ``sending`` gives out deliveries (a pause stops at the
  next batch), and a throttled campaign gets at most what is left of its per-minute allowance.
  A claim older than ``STALE_CLAIM`` (its worker died) goes back to pending and is sent again
  with the same deterministic Message-ID, which lets the provider drop the duplicate of the one
  message that may have been in flight.
- **Check again at the moment of sending**: erased, no address, consent for the channel and
  purpose, suppression, a pause the contact asked for, the tenant's frequency cap (marketing
  only), a variant to send. A skipped delivery records why. SMS and push in the recipient's
  quiet hours go back to pending until the quiet hours end.
- **Send and record**: one backend session per batch; each message's result is committed the
  moment the provider answers, before the next message goes out (``ResultLog``), so a worker
  killed at any point can repeat at most the message in flight. Transient failures go back to
  pending with exponential backoff until ``MAX_ATTEMPTS``; permanent ones are recorded.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import html as html_lib
import logging
import re
import time
import uuid
import weakref
import zoneinfo
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import quote

import orjson
from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Case, Count, Exists, F, IntegerField, Max, Min, OuterRef, Q, Value, When
from django.db.models.functions import Mod
from django.utils import timezone

from analytics.experiments import experiment_hold
from analytics.preferred_channel import CHANNELS as PREFERRED_CHANNELS
from analytics.preferred_channel import choice_sql, routes_prepare, routes_settle, run_counts
from analytics.send_time import apply_best_times
from analytics.tracking import with_tracking
from campaigns.channels.base import (
    OutgoingEmail,
    OutgoingMessage,
    OutgoingPush,
    OutgoingSms,
    OutgoingWebhook,
    SendResult,
    SendStatus,
)
from campaigns.channels.email import ESP_NAME, DjangoEmailBackend
from campaigns.channels.local import ConsoleBackend, FileBackend
from campaigns.channels.push import FcmPushBackend, PushConfig
from campaigns.channels.sms import SmsConfig, TwilioSmsBackend
from campaigns.channels.webhook import WebhookBackend
from campaigns.models import (
    Campaign,
    CampaignChannel,
    CampaignRun,
    ChannelConfig,
    ContactPause,
    Delivery,
    Variant,
)
from campaigns.optout import preferences_url, unsubscribe_token, unsubscribe_url
from campaigns.rendering import RenderError, contact_context, message_context, render, render_text_from_html
from contacts.bulk_sql import bulk_insert_rows
from contacts.models import ConsentState, ConsentStatus, Contact, Suppression
from contacts.normalize import address_hash
from segmentor.unavailable import database_unreachable
from segments.models import SegmentMember
from tenants.context import current_scope
from tenants.models import Tenant

logger = logging.getLogger(__name__)

BATCH_SIZE = 500
MAX_ATTEMPTS = 5
STALE_CLAIM = dt.timedelta(minutes=10)
# Transient failures wait RETRY_DELAY, then twice as long each time (2, 4, 8, 16 min), at most MAX_RETRY_DELAY.
RETRY_DELAY = dt.timedelta(minutes=2)
MAX_RETRY_DELAY = dt.timedelta(hours=1)
THROTTLE_WINDOW = dt.timedelta(seconds=60)
# How long a worker waits for a lost database to come back before it leaves its broken batch to the
# stale-claim sweep (deliveries_recover).
DATABASE_RECOVERY_WAIT = dt.timedelta(minutes=2)
# Advisory lock keys of throttled claims: this prefix plus the run's id (one bigint key space).
THROTTLE_LOCK_NAMESPACE = 0x5E6D_0001 << 32
# The contact column that holds a channel's address.
ADDRESS_COLUMN = {CampaignChannel.EMAIL: "email", CampaignChannel.SMS: "phone"}
HASH_MULTIPLIER = 2654435761  # Knuth's multiplicative hash: spreads consecutive ids over the buckets
# The frequency cap counts and limits these only.
MARKETING_PURPOSE = "marketing"
# Every other purpose is a commercial message: footer, unsubscribe link and List-Unsubscribe.
TRANSACTIONAL_PURPOSES = frozenset({"transactional"})
QUIET_HOURS_CHANNELS = frozenset({CampaignChannel.SMS, CampaignChannel.PUSH})
SMS_STOP_FOOTER = "Reply STOP to opt out"
DEFAULT_TWILIO_URL = "https://api.twilio.com/2010-04-01"
MAX_ERROR_CHARS = 2000
LINK_TOKEN = "--token--"  # noqa: S105 (a placeholder, replaced by each contact's signed token)


class ChannelNotConfigured(Exception):
    """The tenant has no usable provider for a channel: every delivery of the batch fails with this text."""


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


def audience(campaign: Campaign, *, include: Sequence[int] | None = None, exclude: Sequence[int] | None = None) -> Any:
    """The campaign's contacts: in any included segment, in no excluded one, not erased.

    ``include`` and ``exclude`` (segment ids) stand in for the saved audience: the composer counts
    a selection before it is saved.
    """
    members = SegmentMember.objects.filter(tenant_id=campaign.tenant_id, contact_id=OuterRef("pk"))
    if include is None or exclude is None:
        links = list(campaign.audience.all())
        include = [link.segment_id for link in links if not link.exclude] if include is None else include
        exclude = [link.segment_id for link in links if link.exclude] if exclude is None else exclude
    included, excluded = list(include), list(exclude)
    contacts = Contact.objects.filter(tenant_id=campaign.tenant_id, erased_at__isnull=True)
    contacts = contacts.filter(Exists(members.filter(segment_id__in=included))) if included else contacts.none()
    if excluded:
        contacts = contacts.exclude(Exists(members.filter(segment_id__in=excluded)))
    return contacts


@functools.lru_cache(maxsize=1024)
def _zone(name: str) -> zoneinfo.ZoneInfo | None:
    if not name:
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


def recipient_zone(contact_zone: str, tenant: Tenant) -> zoneinfo.ZoneInfo:
    """The contact's time zone, else the tenant's, else UTC (an unknown name counts as blank)."""
    return _zone(contact_zone) or _zone(tenant.time_zone) or zoneinfo.ZoneInfo("UTC")


def next_local_time(at: dt.time, zone: zoneinfo.ZoneInfo, after: dt.datetime) -> dt.datetime:
    """The first moment after ``after`` when the clock in ``zone`` shows ``at`` (in UTC)."""
    local = after.astimezone(zone)
    candidate = dt.datetime.combine(local.date(), at, tzinfo=zone)
    if candidate <= after:
        candidate = dt.datetime.combine(local.date() + dt.timedelta(days=1), at, tzinfo=zone)
    return candidate.astimezone(dt.UTC)


# The next ``%(time)s`` strictly after ``%(after)s`` on the recipient's clock: the local date of
# (after − time), plus one day, plus the time. Parameters: after, zone, time, time + 1 day, zone;
# ``z.name`` is the contact's zone when PostgreSQL knows it, the tenant's (a parameter) otherwise.
LOCAL_TIME_SQL = (
    "((date_trunc('day', (%s::timestamptz AT TIME ZONE COALESCE(z.name, %s)) - %s::interval) + %s::interval) "
    "AT TIME ZONE COALESCE(z.name, %s))"
)


def run_start(*, campaign: Campaign, scheduled_for: dt.datetime | None = None) -> CampaignRun:
    """Create the run of a campaign for ``scheduled_for`` (now when None) and snapshot its audience.

    One statement inserts every delivery. A run already started for the same ``scheduled_for``
    (a second beat instance, a redelivered task) is returned as it is.
    """
    now = timezone.now()
    when = scheduled_for or now
    try:
        with transaction.atomic():
            locked = Campaign.objects.select_for_update().select_related("tenant").get(pk=campaign.pk)
            existing = CampaignRun.objects.filter(tenant_id=locked.tenant_id, campaign=locked, scheduled_for=when)
            if scheduled_for is not None and (run := existing.first()) is not None:
                return run
            return _run_create(locked, when, now)
    except IntegrityError:
        # The same occurrence was started between our check and insert (another database session).
        run = CampaignRun.objects.filter(tenant_id=campaign.tenant_id, campaign=campaign, scheduled_for=when).first()
        if run is None:
            raise
        return run


def _run_create(campaign: Campaign, when: dt.datetime, now: dt.datetime) -> CampaignRun:
    number = CampaignRun.objects.filter(tenant_id=campaign.tenant_id, campaign=campaign).count() + 1
    run = CampaignRun.objects.create(
        tenant_id=campaign.tenant_id, campaign=campaign, number=number, scheduled_for=when,
        status=CampaignRun.Status.SENDING, started_at=now,
    )  # fmt: skip
    contacts = audience(campaign).annotate(
        _bucket=Mod(F("id") * HASH_MULTIPLIER + run.pk, 10_000), _variant=variant_expression(campaign)
    )
    preferred = campaign.preferred_channel
    columns = ("id", "_variant", "time_zone", *(PREFERRED_COLUMNS if preferred else ()))
    select_sql, params = contacts.values(*columns).query.sql_with_params()
    table = Delivery._meta.db_table
    local_time = campaign.local_time if campaign.schedule == Campaign.Schedule.LOCAL_TIME else None
    # Local times count from the later of now and the occurrence.
    after = max(now, when)
    not_before, join = "NULL", ""
    extra: list[Any] = []
    if local_time is not None and connection.vendor == "postgresql":
        tenant_zone = str(recipient_zone("", campaign.tenant))
        at = dt.timedelta(hours=local_time.hour, minutes=local_time.minute, seconds=local_time.second)
        not_before = LOCAL_TIME_SQL
        # Names PostgreSQL does not know fall back to the tenant's zone instead of failing the statement.
        join = " LEFT JOIN (SELECT name FROM pg_timezone_names) AS z ON z.name = NULLIF(a.time_zone, '')"
        extra = [after, tenant_zone, at, at + dt.timedelta(days=1), tenant_zone]
    routes = routes_prepare(campaign=campaign, run=run) if preferred else None
    source, source_params = f"({select_sql}) AS a", list(params)
    run_id, variant_id, chosen_columns, chosen_values = "%s", "a._variant", "", ""
    if routes is not None:
        # Each contact's channel, chosen in the same statement; another channel's go to its sibling's run.
        source, source_params = _preferred_source(campaign, select_sql, source_params)
        run_id, variant_id = routes.run_sql(), routes.variant_sql()
        chosen_columns, chosen_values = _chosen_columns(campaign)
    sql = (
        f"INSERT INTO {table} (tenant_id, run_id, contact_id, variant_id, status, skip_reason, attempts, "
        f"provider_message_id, error, not_before{chosen_columns}) "
        # No ON CONFLICT: the run is new in this transaction and the audience lists each contact once.
        f"SELECT %s, {run_id}, a.id, {variant_id}, 'pending', '', 0, '', '', {not_before}{chosen_values} "
        f"FROM {source}{join}"
    )
    counts: dict[int, int] = {}
    with connection.cursor() as cursor:
        if routes is not None and connection.vendor == "postgresql":
            # Counted as inserted: each sibling run's size without reading the rows again.
            counted = f"WITH inserted AS ({sql} RETURNING run_id) SELECT run_id, COUNT(*) FROM inserted GROUP BY 1"
            cursor.execute(counted, [campaign.tenant_id, run.pk, *extra, *source_params])
            counts = {run_pk: int(n) for run_pk, n in cursor.fetchall()}
            run.audience_size = sum(counts.values())
        else:
            cursor.execute(sql, [campaign.tenant_id, run.pk, *extra, *source_params])
            run.audience_size = cursor.rowcount
    siblings: list[CampaignRun] = []
    if routes is not None:
        if connection.vendor != "postgresql":
            counts = run_counts([run.pk, *(r.pk for r in routes.runs.values())], campaign.tenant_id)
        siblings = routes_settle(routes, counts)
    for each in (run, *siblings):
        apply_best_times(each)  # a best-time campaign: each delivery waits for its contact's best hour
        if local_time is not None and connection.vendor != "postgresql":
            _local_times_by_zone(each, campaign, local_time, after)
    experiment_hold(run)  # an A/B test: all but the test share wait for the winner (after the times above)
    run.save(update_fields=["audience_size"])
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.SENDING)
    return run


# What the preferred-channel choice reads of each contact of the audience.
PREFERRED_COLUMNS = ("email", "phone", "push_tokens")


def _preferred_source(campaign: Campaign, select_sql: str, params: list[Any]) -> tuple[str, list[Any]]:
    """The audience rows ``a`` with each one's ``_channel``, ``_reason`` and ``_score_<channel>``
    (analytics/preferred_channel.py)."""
    choice = choice_sql(tenant_id=campaign.tenant_id, channels=campaign.preferred_channels, purpose=campaign.purpose)
    scores = "".join(f", {sql} AS _score_{channel}" for channel, sql in choice.scores.items())
    # OFFSET 0 (PostgreSQL): the choice is computed once per row, not again wherever the insert names it.
    fence = " OFFSET 0" if connection.vendor == "postgresql" else ""
    source = (
        f"(SELECT a.*, {choice.channel} AS _channel, {choice.reason} AS _reason{scores} "
        f"FROM ({select_sql}) AS a {choice.joins}{fence}) AS a"
    )
    return source, [*params, *choice.params]


def _chosen_columns(campaign: Campaign) -> tuple[str, str]:
    """The delivery columns of the choice and the source's values for them (a score per channel it may choose)."""
    channels = [c for c in dict.fromkeys(campaign.preferred_channels) if c in PREFERRED_CHANNELS]
    columns = ", chosen_channel, channel_reason" + "".join(f", score_{c}" for c in channels)
    values = ", a._channel, a._reason" + "".join(f", a._score_{c}" for c in channels)
    return columns, values


def run_add_contacts(*, campaign_id: int, contact_ids: Sequence[int], now: dt.datetime) -> dict[int, int]:
    """Queue messages of a journey step's campaign to ``contact_ids``; return contact id → delivery id.

    The batch is one run (the run for ``now`` when a batch of the same moment made one already),
    sent by ``send_run`` after commit like any campaign run: consent, caps and quiet hours are
    checked at the moment of sending.
    """
    if not contact_ids:
        return {}
    campaign = Campaign.objects.select_for_update().select_related("tenant").get(pk=campaign_id)
    run = CampaignRun.objects.filter(tenant_id=campaign.tenant_id, campaign=campaign, scheduled_for=now).first()
    if run is None:
        number = (
            CampaignRun.objects.filter(tenant_id=campaign.tenant_id, campaign=campaign).aggregate(n=Max("number"))["n"]
            or 0
        ) + 1
        run = CampaignRun.objects.create(
            tenant_id=campaign.tenant_id, campaign=campaign, number=number, scheduled_for=now,
            status=CampaignRun.Status.SENDING, started_at=now,
        )  # fmt: skip
    chosen = Contact.objects.filter(
        tenant_id=campaign.tenant_id, pk__in=sorted(set(contact_ids)), erased_at__isnull=True
    ).annotate(_bucket=Mod(F("id") * HASH_MULTIPLIER + run.pk, 10_000), _variant=variant_expression(campaign))
    if campaign.preferred_channel:
        made = _preferred_add(campaign, run, chosen)
    else:
        rows = [{"contact_id": pk, "variant_id": variant} for pk, variant in chosen.values_list("id", "_variant")]
        made = bulk_insert_rows(
            Delivery, rows,
            fixed={"tenant_id": campaign.tenant_id, "run_id": run.pk, "status": Delivery.Status.PENDING},
            ignore_conflicts=True, returning=("contact_id", "id"),
        )  # fmt: skip
    CampaignRun.objects.filter(pk=run.pk).update(
        audience_size=F("audience_size") + len(made), status=CampaignRun.Status.SENDING, finished_at=None
    )
    tenant_id, run_id = campaign.tenant_id, run.pk
    transaction.on_commit(lambda: _send_later(tenant_id, run_id))
    return dict(made)


def _preferred_add(campaign: Campaign, run: CampaignRun, chosen: Any) -> list[tuple[int, int]]:
    """Insert a journey batch's deliveries, each on its contact's preferred channel (a sibling's run for another
    channel, made once per batch moment); return (contact id, delivery id) of those inserted."""
    routes = routes_prepare(campaign=campaign, run=run, reuse=True)
    select_sql, params = chosen.values("id", "_variant", *PREFERRED_COLUMNS).query.sql_with_params()
    source, source_params = _preferred_source(campaign, select_sql, list(params))
    columns, values = _chosen_columns(campaign)
    sql = (
        f"INSERT INTO {Delivery._meta.db_table} (tenant_id, run_id, contact_id, variant_id, status, skip_reason, "
        f"attempts, provider_message_id, error{columns}) "
        f"SELECT %s, {routes.run_sql()}, a.id, {routes.variant_sql()}, 'pending', '', 0, '', ''{values} "
        # WHERE TRUE: SQLite reads the ON CONFLICT of an INSERT … SELECT only after a WHERE.
        f"FROM {source} WHERE TRUE ON CONFLICT DO NOTHING RETURNING contact_id, id, run_id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [campaign.tenant_id, run.pk, *source_params])
        inserted = cursor.fetchall()
    counts: dict[int, int] = {}
    for _contact, _delivery, run_pk in inserted:
        counts[run_pk] = counts.get(run_pk, 0) + 1
    routes_settle(routes, counts, added=True)
    return [(contact_pk, delivery_pk) for contact_pk, delivery_pk, _run in inserted]


def _send_later(tenant_id: int, run_id: int) -> None:
    from campaigns.tasks import send_run

    send_run.delay(tenant_id, run_id)


def _local_times_by_zone(run: CampaignRun, campaign: Campaign, at: dt.time, after: dt.datetime) -> None:
    """SQLite: one UPDATE per time zone present in the run (a few hundred at most)."""
    members = Delivery.objects.filter(tenant_id=run.tenant_id, run=run)
    zones = set(
        Contact.objects.filter(tenant_id=run.tenant_id, pk__in=members.values("contact_id"))
        .values_list("time_zone", flat=True)
        .distinct()
    )
    for name in zones:
        moment = next_local_time(at, recipient_zone(name, campaign.tenant), after)
        in_zone = Contact.objects.filter(tenant_id=run.tenant_id, time_zone=name).values("pk")
        members.filter(contact_id__in=in_zone).update(not_before=moment)


def run_cancel(*, run: CampaignRun) -> int:
    """Cancel a run: its pending deliveries become skipped (cancelled); return how many.

    Messages of a batch already being sent finish; nothing new is claimed.
    """
    with transaction.atomic():
        CampaignRun.objects.filter(
            pk=run.pk, status__in=[CampaignRun.Status.PENDING, CampaignRun.Status.SENDING, CampaignRun.Status.PAUSED]
        ).update(status=CampaignRun.Status.CANCELLED, finished_at=timezone.now())
        skipped = Delivery.objects.filter(tenant_id=run.tenant_id, run=run, status=Delivery.Status.PENDING).update(
            status=Delivery.Status.SKIPPED, skip_reason=Delivery.SkipReason.CANCELLED
        )
    run.status = CampaignRun.Status.CANCELLED
    logger.info("campaign.run_cancelled", extra={"tenant_id": run.tenant_id, "run_id": run.pk, "skipped": skipped})
    return skipped


# --- claim -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    """A claimed batch; when empty, why: the run stopped, or the throttle wants ``wait`` seconds."""

    ids: list[int]
    run_open: bool = True
    wait: float | None = None


def deliveries_claim(*, run: CampaignRun, size: int = BATCH_SIZE, now: dt.datetime | None = None) -> list[int]:
    """Take up to ``size`` due pending deliveries of a sending run (committed before anything is sent)."""
    return deliveries_claim_batch(run=run, size=size, now=now).ids


def deliveries_claim_batch(*, run: CampaignRun, size: int = BATCH_SIZE, now: dt.datetime | None = None) -> Claim:
    """Claim a batch, within the campaign's per-minute throttle, only while the run is sending."""
    now = now or timezone.now()
    table = Delivery._meta.db_table
    runs = CampaignRun._meta.db_table
    postgres = connection.vendor == "postgresql"
    with transaction.atomic():
        state = CampaignRun.objects.filter(pk=run.pk).values_list("status", "campaign__throttle_per_minute").first()
        if state is None or state[0] != CampaignRun.Status.SENDING:
            return Claim([], run_open=False)
        throttle = state[1] or 0
        if throttle:
            if postgres:
                # Claims of a throttled run queue up, so two workers cannot both spend the same allowance.
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [THROTTLE_LOCK_NAMESPACE + run.pk])
            used = _claimed_in_window(run, now)
            size = min(size, throttle - used["n"])
            if size <= 0:
                oldest = used["oldest"] or now
                return Claim([], wait=max(1.0, (oldest + THROTTLE_WINDOW - now).total_seconds()))
        lock = " FOR UPDATE OF d SKIP LOCKED" if postgres else ""
        sql = (
            f"UPDATE {table} SET status = 'sending', claimed_at = %s, attempts = attempts + 1 "
            f"WHERE id IN (SELECT d.id FROM {table} d JOIN {runs} r ON r.id = d.run_id AND r.tenant_id = d.tenant_id "
            "WHERE d.tenant_id = %s AND d.run_id = %s AND d.status = 'pending' AND r.status = 'sending' "
            f"AND (d.not_before IS NULL OR d.not_before <= %s) ORDER BY d.id LIMIT %s{lock}) RETURNING id"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [now, run.tenant_id, run.pk, now, size])
            return Claim(sorted(row[0] for row in cursor.fetchall()))


def _claimed_in_window(run: CampaignRun, now: dt.datetime) -> dict[str, Any]:
    """Messages of the run claimed for sending in the last minute (skips do not use the allowance)."""
    return Delivery.objects.filter(
        tenant_id=run.tenant_id, run=run, claimed_at__gt=now - THROTTLE_WINDOW,
        status__in=[Delivery.Status.SENDING, Delivery.Status.SENT, Delivery.Status.FAILED],
    ).aggregate(n=Count("id"), oldest=Min("claimed_at"))  # fmt: skip


def deliveries_reclaim_stale(*, run: CampaignRun, now: dt.datetime | None = None) -> int:
    """Claims whose worker died go back to pending (and are sent again with the same Message-ID)."""
    now = now or timezone.now()
    stale = Delivery.objects.filter(
        tenant_id=run.tenant_id, run=run, status=Delivery.Status.SENDING, claimed_at__lt=now - STALE_CLAIM
    )
    return stale.update(status=Delivery.Status.PENDING)


def run_next_due(*, run: CampaignRun, now: dt.datetime | None = None) -> dt.datetime | None:
    """The earliest time a held-back pending delivery of the run becomes due (now if one is due)."""
    now = now or timezone.now()
    pending = Delivery.objects.filter(tenant_id=run.tenant_id, run=run, status=Delivery.Status.PENDING)
    if pending.filter(Q(not_before__isnull=True) | Q(not_before__lte=now)).exists():
        return now
    return pending.aggregate(at=Min("not_before"))["at"]


def run_in_flight(*, run: CampaignRun) -> bool:
    """Whether some deliveries of the run are claimed (being sent, or left by a worker that died)."""
    return Delivery.objects.filter(tenant_id=run.tenant_id, run=run, status=Delivery.Status.SENDING).exists()


# --- checks ----------------------------------------------------------------------------------------
CONTACT_COLUMNS = tuple(field.attname for field in Contact._meta.concrete_fields)


class ContactRow:
    """A contact as the plain values of its row: a batch reads hundreds, and model instances
    (signals, field descriptors, datetime parsing for every one) cost more than the rendering."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def pk(self) -> int:
        return int(self._values["id"])


AnyContact = Contact | ContactRow


@dataclass
class Outcome:
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    retried: int = 0
    deferred: int = 0


def message_id(delivery_id: int, tenant: Tenant) -> str:
    """The same for every attempt of a delivery, so a provider can drop a duplicate."""
    domain = (tenant.default_sender_email or "segmentor.local").rsplit("@", 1)[-1]
    digest = hashlib.sha256(f"{settings.SECRET_KEY}:{delivery_id}".encode()).hexdigest()[:16]
    return f"<d{delivery_id}.{digest}@{domain}>"


def _has_address(campaign: Campaign, contact: AnyContact) -> bool:
    if campaign.channel == CampaignChannel.PUSH:
        return any(isinstance(token, str) and token for token in contact.push_tokens or [])
    column = ADDRESS_COLUMN.get(CampaignChannel(campaign.channel))
    return not column or bool(getattr(contact, column))


def _skip_reasons(campaign: Campaign, contacts: dict[int, AnyContact], now: dt.datetime) -> dict[int, str]:
    """Why a contact must not get this message now (checked at the moment of sending)."""
    tenant = campaign.tenant
    reasons: dict[int, str] = {}
    ids = list(contacts)
    column = ADDRESS_COLUMN.get(CampaignChannel(campaign.channel))
    consent_channel = campaign.channel if campaign.channel != CampaignChannel.WEBHOOK else None
    granted: set[int] = set()
    if consent_channel:
        granted = set(
            ConsentState.objects.filter(
                tenant=tenant, contact_id__in=ids, channel=consent_channel, purpose=campaign.purpose,
                status=ConsentStatus.GRANTED,
            ).values_list("contact_id", flat=True)
        )  # fmt: skip
    hashes = {
        pk: address_hash(campaign.channel, getattr(c, column))
        for pk, c in contacts.items()
        if column and getattr(c, column)
    }
    suppressed: set[str] = set()
    if hashes:
        suppressed = set(
            Suppression.objects.filter(
                tenant=tenant, channel=campaign.channel, address_hash__in=list(hashes.values())
            ).values_list("address_hash", flat=True)
        )
    capped: set[int] = set()
    if tenant.frequency_cap_messages and campaign.purpose == MARKETING_PURPOSE:
        # Only marketing messages count, and only marketing campaigns are held back by the cap.
        since = now - dt.timedelta(days=tenant.frequency_cap_days)
        capped = {
            row["contact_id"]
            for row in Delivery.objects.filter(
                tenant=tenant, contact_id__in=ids, status=Delivery.Status.SENT, sent_at__gte=since,
                run__campaign__purpose=MARKETING_PURPOSE,
            ).values("contact_id").annotate(n=Count("id")).filter(n__gte=tenant.frequency_cap_messages)
        }  # fmt: skip
    paused = set(
        ContactPause.objects.filter(tenant=tenant, contact_id__in=ids, until__gt=now).values_list(
            "contact_id", flat=True
        )
    )
    for pk, contact in contacts.items():
        if contact.erased_at is not None:
            reasons[pk] = Delivery.SkipReason.ERASED
        elif not _has_address(campaign, contact):
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


def quiet_hours_end(tenant: Tenant, zone: zoneinfo.ZoneInfo, now: dt.datetime) -> dt.datetime | None:
    """The end of the quiet hours on the recipient's clock if ``now`` falls inside them, else None."""
    start, end = tenant.quiet_hours_start, tenant.quiet_hours_end
    if start is None or end is None or start == end:
        return None
    local = now.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    if start > end:  # across midnight, e.g. 21:00-08:00
        if clock >= start:
            day = local.date() + dt.timedelta(days=1)
        elif clock < end:
            day = local.date()
        else:
            return None
    elif start <= clock < end:
        day = local.date()
    else:
        return None
    return dt.datetime.combine(day, end, tzinfo=zone).astimezone(dt.UTC)


# --- messages --------------------------------------------------------------------------------------
_BODY_OPEN = re.compile(r"<body\b[^>]*>", re.IGNORECASE)
_BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)
_STOP_WORD = re.compile(r"\bSTOP\b")
PREHEADER_STYLE = (
    "display:none!important;visibility:hidden;opacity:0;color:transparent;height:0;width:0;max-height:0;"
    "max-width:0;overflow:hidden;mso-hide:all;font-size:1px;line-height:1px"
)
FOOTER_STYLE = "margin:32px 0 0;padding:16px 0 0;border-top:1px solid #ddd;font-size:12px;line-height:1.5;color:#666"


def _with_preheader(markup: str, preheader: str) -> str:
    """Put the preheader, hidden, first in the body: inboxes show it beside the subject."""
    if not preheader:
        return markup
    span = f'<span style="{PREHEADER_STYLE}">{html_lib.escape(preheader)}</span>'
    match = _BODY_OPEN.search(markup)
    return markup[: match.end()] + span + markup[match.end() :] if match else span + markup


def _with_footer(markup: str, footer: str) -> str:
    matches = list(_BODY_CLOSE.finditer(markup))
    if not matches:
        return markup + footer
    at = matches[-1].start()
    return markup[:at] + footer + markup[at:]


_ADDRESS_SPECIALS = re.compile(r'[][\\()<>@,:;".]')


def mailbox(name: str, address: str) -> str:
    """``Name <address>`` with the name on one line and quoted where RFC 5322 needs it.

    A sender name is a tenant's free text: ``Shop, Inc.`` or ``"Best" <ceo@bank.example>`` must
    stay a display name (one mailbox, the configured address), and a line break must not start
    a header of its own.
    """
    name = " ".join(name.split())
    if not name:
        return address
    if _ADDRESS_SPECIALS.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>"


@dataclass(frozen=True)
class OptOutLinks:
    unsubscribe: str
    preferences: str
    token: str


class Composer:
    """Renders one campaign's messages for many contacts (templates parsed once, settings read once)."""

    def __init__(self, campaign: Campaign, *, config: ChannelConfig | None = None, config_loaded: bool = False) -> None:
        self.campaign = campaign
        self.tenant = campaign.tenant
        self.channel = CampaignChannel(campaign.channel)
        if not config_loaded:
            config = ChannelConfig.objects.filter(tenant_id=campaign.tenant_id, channel=campaign.channel).first()
        self.config = config
        self.optout = campaign.purpose not in TRANSACTIONAL_PURPOSES
        tenant = self.tenant
        sender_name = campaign.sender_name or tenant.default_sender_name or tenant.name
        sender = campaign.sender_email or tenant.default_sender_email or settings.DEFAULT_FROM_EMAIL
        self.from_email = sender if "<" in sender else mailbox(sender_name, sender)
        self.sender_domain = (sender.rsplit("@", 1)[-1].strip(" >") if "@" in sender else "") or "segmentor.local"
        self.postal_address = tenant.postal_address.strip()
        self._link_patterns: tuple[str, str] | None = None

    # -- shared
    def links(self, contact: AnyContact) -> OptOutLinks | None:
        if not self.optout:
            return None
        token = unsubscribe_token(
            tenant_id=self.tenant.pk, contact_id=contact.pk, channel=self.channel, purpose=self.campaign.purpose,
            campaign_id=self.campaign.pk,
        )  # fmt: skip
        if self._link_patterns is None:  # reversed once per batch, not per message
            self._link_patterns = (unsubscribe_url(LINK_TOKEN), preferences_url(LINK_TOKEN))
        unsubscribe, preferences = (pattern.replace(LINK_TOKEN, token) for pattern in self._link_patterns)
        return OptOutLinks(unsubscribe, preferences, token)

    def context(self, variant: Variant, contact: AnyContact, links: OptOutLinks | None) -> dict[str, Any]:
        base = message_context(contact=contact, tenant=self.tenant, campaign_name=self.campaign.name)
        cta_url = render(variant.cta_url, base).strip()
        cta = {"label": render(variant.cta_label, base).strip(), "url": cta_url}
        base["cta"] = cta
        base["links"] = {
            "unsubscribe": links.unsubscribe if links else "",
            "preferences": links.preferences if links else "",
            "cta": cta_url,
            "view_in_browser": "",
        }
        return base

    def build(self, variant: Variant, contact: AnyContact, delivery_id: int | None) -> OutgoingMessage:
        links = self.links(contact)
        ctx = self.context(variant, contact, links)
        if self.channel == CampaignChannel.EMAIL:
            return self.email(variant, contact, ctx, links, delivery_id)
        if self.channel == CampaignChannel.SMS:
            return self.sms(variant, contact, ctx)
        if self.channel == CampaignChannel.PUSH:
            return self.push(variant, contact, ctx, delivery_id)
        return self.webhook(variant, contact, ctx, delivery_id)

    # -- channels
    def email(
        self, variant: Variant, contact: AnyContact, ctx: dict[str, Any], links: OptOutLinks | None,
        delivery_id: int | None,
    ) -> OutgoingEmail:  # fmt: skip
        subject = " ".join(render(variant.subject, ctx).split())
        preheader = " ".join(render(variant.preheader, ctx).split())
        markup = render(variant.html_body, ctx, html_output=True)
        if variant.text_body.strip():
            text = render(variant.text_body, ctx).strip()
        else:
            text = render_text_from_html(variant.html_body, ctx, markup)
        if links is not None:
            if markup:
                markup = _with_footer(markup, self.footer_html(links))
            text = f"{text}\n\n{self.footer_text(links)}" if text else self.footer_text(links)
        markup = _with_preheader(markup, preheader) if markup else ""
        if markup and delivery_id is not None and (self.campaign.track_clicks or self.campaign.track_opens):
            markup = with_tracking(
                markup, tenant_id=self.tenant.pk, delivery_id=delivery_id, base_url=settings.SITE_URL,
                cta_url=ctx["cta"]["url"], skip=self.optout_prefixes(), clicks=self.campaign.track_clicks,
                opens=self.campaign.track_opens,
            )  # fmt: skip
        if delivery_id is not None:
            mid = message_id(delivery_id, self.tenant)
        else:
            mid = f"<preview.{uuid.uuid4().hex}@{self.sender_domain}>"
        metadata = {"campaign": str(self.campaign.pk), "tenant": str(self.tenant.pk)}
        if delivery_id is not None:
            metadata["delivery"] = str(delivery_id)
        return OutgoingEmail(
            to=contact.email, from_email=self.from_email, subject=subject, message_id=mid, html=markup, text=text,
            reply_to=self.campaign.reply_to, preheader=preheader,
            unsubscribe_url=links.unsubscribe if links else "",
            unsubscribe_mailto=self.mailto(links.token) if links else "", metadata=metadata,
        )  # fmt: skip

    def optout_prefixes(self) -> tuple[str, str]:
        """The opt-out links' common starts: never wrapped by click tracking (one-click must reach us as is)."""
        if self._link_patterns is None:
            self._link_patterns = (unsubscribe_url(LINK_TOKEN), preferences_url(LINK_TOKEN))
        return tuple(pattern.split(LINK_TOKEN)[0] for pattern in self._link_patterns)  # type: ignore[return-value]

    def mailto(self, token: str) -> str:
        """RFC 2369's mail form: the token rides in the subject (too long for a local part).

        The mailbox is ``unsubscribe@`` the ``CAMPAIGN_UNSUBSCRIBE_MAILTO_DOMAIN`` setting (where the
        platform receives mail), else the sender's domain.
        """
        domain = getattr(settings, "CAMPAIGN_UNSUBSCRIBE_MAILTO_DOMAIN", "") or self.sender_domain
        return f"mailto:unsubscribe@{domain}?subject={quote('unsubscribe ' + token)}"

    def footer_html(self, links: OptOutLinks) -> str:
        address = "<br>".join(
            html_lib.escape(line.strip()) for line in self.postal_address.splitlines() if line.strip()
        )
        name = html_lib.escape(self.tenant.name)
        return (
            f'<div style="{FOOTER_STYLE}"><p style="margin:0 0 8px">{name}'
            + (f"<br>{address}" if address else "")
            + f'</p><p style="margin:0"><a href="{html_lib.escape(links.unsubscribe)}">Unsubscribe</a> &middot; '
            f'<a href="{html_lib.escape(links.preferences)}">Manage your preferences</a></p></div>'
        )

    def footer_text(self, links: OptOutLinks) -> str:
        lines = ["--", self.tenant.name]
        lines += [line.strip() for line in self.postal_address.splitlines() if line.strip()]
        lines += [f"Unsubscribe: {links.unsubscribe}", f"Manage your preferences: {links.preferences}"]
        return "\n".join(lines)

    def sms(self, variant: Variant, contact: AnyContact, ctx: dict[str, Any]) -> OutgoingSms:
        text = render(variant.sms_body, ctx).strip()
        if self.optout and not _STOP_WORD.search(text):
            text = f"{text}\n{SMS_STOP_FOOTER}" if text else SMS_STOP_FOOTER
        configured = str((self.config.settings or {}).get("sender", "")) if self.config else ""
        return OutgoingSms(to=contact.phone, text=text, sender=self.campaign.sms_sender or configured)

    def push(self, variant: Variant, contact: AnyContact, ctx: dict[str, Any], delivery_id: int | None) -> OutgoingPush:
        tokens = tuple(dict.fromkeys(t for t in contact.push_tokens or [] if isinstance(t, str) and t))
        data = {"campaign": str(self.campaign.pk)}
        if delivery_id is not None:
            data["delivery"] = str(delivery_id)
        return OutgoingPush(
            tokens=tokens, title=" ".join(render(variant.push_title, ctx).split()),
            body=render(variant.push_body, ctx).strip(), deep_link=render(variant.push_deep_link, ctx).strip(),
            data=data,
        )  # fmt: skip

    def webhook(
        self, variant: Variant, contact: AnyContact, ctx: dict[str, Any], delivery_id: int | None
    ) -> OutgoingWebhook:
        if variant.webhook_payload.strip():
            raw = render(variant.webhook_payload, ctx)
            try:
                payload = orjson.loads(raw)
            except orjson.JSONDecodeError as error:
                raise RenderError(f"The webhook payload is not valid JSON once rendered: {error}") from error
            if not isinstance(payload, dict | list):
                raise RenderError("The webhook payload must be a JSON object or array.")
        else:
            payload = {
                "event": "campaign.message",
                "delivery_id": delivery_id,
                "campaign": {"id": self.campaign.pk, "name": self.campaign.name},
                "variant": {"id": variant.pk, "name": variant.name},
                "contact": contact_context(contact),
                "cta": ctx["cta"],
            }
        return OutgoingWebhook(
            url=self.campaign.webhook_url, payload=payload, secret=self.config.secret if self.config else "",
            delivery_id=str(delivery_id) if delivery_id is not None else "",
        )  # fmt: skip


def message_build(
    *, campaign: Campaign, variant: Variant, contact: Contact, delivery_id: int | None = None
) -> OutgoingMessage:
    """Render ``variant`` for ``contact`` on the campaign's channel, with footer and opt-out links.

    ``delivery_id`` None is a preview or a test send (a random Message-ID). Raise RenderError when
    a template fails for this contact.
    """
    return Composer(campaign).build(variant, contact, delivery_id)


# --- backends --------------------------------------------------------------------------------------
def _required(config: ChannelConfig, *names: str) -> dict[str, str]:
    options = config.settings or {}
    values = {name: str(options.get(name) or "").strip() for name in names}
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise ChannelNotConfigured(
            f"The {config.channel} provider settings lack {', '.join(missing)}: "
            "complete them under Settings → Channels."
        )
    return values


def _email_backend(config: ChannelConfig) -> DjangoEmailBackend:
    options = config.settings or {}
    if options.get("esp"):
        esp = str(options["esp"])
        if not ESP_NAME.match(esp):
            raise ChannelNotConfigured(f"Unknown email service {esp!r}.")
        return DjangoEmailBackend(backend=f"anymail.backends.{esp}.EmailBackend", api_key=config.secret)
    if options.get("host"):
        return DjangoEmailBackend(
            backend="campaigns.channels.email.TenantSmtpBackend", host=str(options["host"]),
            port=int(options.get("port") or 587), username=str(options.get("username") or ""),
            password=config.secret, use_tls=bool(options.get("use_tls", True)), use_ssl=bool(options.get("use_ssl")),
        )  # fmt: skip
    return DjangoEmailBackend()


def channel_backend(*, tenant: Tenant, channel: str, config: ChannelConfig | None = None) -> Any:
    """The backend for a tenant's channel from its ``ChannelConfig`` (email: the project's when absent).

    Raise ChannelNotConfigured when SMS, push or webhook have no usable configuration.
    """
    if config is None:
        config = ChannelConfig.objects.filter(tenant_id=tenant.pk, channel=channel).first()
    backend = config.backend if config else None
    if backend == ChannelConfig.Backend.CONSOLE:
        return ConsoleBackend()
    if backend == ChannelConfig.Backend.FILE:
        return FileBackend(settings.VAR_DIR / "outbox" / tenant.slug / channel)
    if channel == CampaignChannel.EMAIL:
        return DjangoEmailBackend() if config is None or backend != "django_email" else _email_backend(config)
    label = CampaignChannel(channel).label
    if config is None:
        raise ChannelNotConfigured(
            f"No {label} provider is set up for this workspace: add one under Settings → Channels."
        )
    if channel == CampaignChannel.SMS and backend == ChannelConfig.Backend.TWILIO:
        values = _required(config, "account_sid")
        if not config.secret:
            raise ChannelNotConfigured("The SMS provider has no auth token: add it under Settings → Channels.")
        options = config.settings or {}
        return TwilioSmsBackend(
            SmsConfig(
                base_url=str(options.get("base_url") or DEFAULT_TWILIO_URL), account_sid=values["account_sid"],
                auth_token=config.secret, sender=str(options.get("sender") or ""),
                status_callback=str(options.get("status_callback") or ""),
            )
        )  # fmt: skip
    if channel == CampaignChannel.PUSH and backend == ChannelConfig.Backend.FCM:
        values = _required(config, "base_url")
        if not config.secret:
            raise ChannelNotConfigured("The push provider has no server key: add it under Settings → Channels.")
        return FcmPushBackend(PushConfig(base_url=values["base_url"], server_key=config.secret))
    if channel == CampaignChannel.WEBHOOK and backend == ChannelConfig.Backend.WEBHOOK:
        if not config.secret:
            raise ChannelNotConfigured("Webhooks have no signing secret: add one under Settings → Channels.")
        return WebhookBackend()
    raise ChannelNotConfigured(
        f"The {label} channel is set up with the {config.get_backend_display()} backend, which cannot send {label}."
    )


def _results(backend: Any, messages: Iterator[OutgoingMessage]) -> Iterator[SendResult]:
    """Each result as soon as its message is handed over (at the end of the batch for older backends)."""
    send_each = getattr(backend, "send_each", None)
    if send_each is not None:
        yield from send_each(messages)
    else:
        yield from backend.send_many(list(messages))


# --- recording -------------------------------------------------------------------------------------
def _param(value: Any) -> bytes | None:
    """A text-format parameter of the result statement (NUL cannot travel in text; broken UTF-8 is replaced)."""
    if value is None:
        return None
    text = value.isoformat() if isinstance(value, dt.datetime) else str(value)
    return text.replace("\x00", "").encode("utf-8", "replace")


# The result statement, prepared once per database connection (RESULT_PREPARED), run after the
# scope settings in the same implicit transaction.
RESULT_STATEMENT = b"segmentor_delivery_result"
RESULT_SQL = (
    b"UPDATE campaigns_delivery SET status = $1, sent_at = $2::timestamptz, provider_message_id = $3, error = $4, "
    b"not_before = $5::timestamptz WHERE tenant_id = $6::bigint AND id = $7::bigint AND status = 'sending'"
)
RESULT_PREPARED: weakref.WeakSet[Any] = weakref.WeakSet()


class ResultLog:
    """Writes each send's result the moment the provider answered, committed before the next send.

    On PostgreSQL, outside a transaction, each result is one round trip: in libpq's pipeline mode,
    ``SELECT set_config(…)`` (the tenant for row-level security, and ``synchronous_commit`` off for
    this transaction only) and the prepared ``UPDATE`` (planned once per connection), then a Sync,
    which PostgreSQL runs as one implicit transaction and commits. ``submit`` sends it and returns; ``drain`` waits for
    the commit, and the sender drains before handing over the next message, so the next message
    is rendered while the database commits the last result, and at most the message in flight
    has no result if the worker is killed. The commit is visible to every other session and
    survives the worker being killed at once; ``synchronous_commit = off`` only skips waiting for
    the WAL flush, so a crash of the database server itself (not of a worker) could forget the
    last few hundred milliseconds of results, whose deliveries would then be sent again with their
    Message-ID. ``CAMPAIGN_RESULTS_SYNCHRONOUS_COMMIT = True`` waits for the flush as well.
    Inside a transaction (tests, callers that manage their own) or on SQLite each result is a
    plain UPDATE, done at once.
    """

    def __init__(self, tenant_id: int, results: dict[int, dict[str, Any]] | None = None) -> None:
        self.tenant_id = tenant_id
        # Every result submitted, by delivery: what deliveries_recover writes again if the database goes away.
        self.results: dict[int, dict[str, Any]] = {} if results is None else results
        self.fast = False
        self.pending = False
        self.preparing = False
        if connection.vendor == "postgresql" and not connection.in_atomic_block and connection.get_autocommit():
            connection.ensure_connection()
            info = connection.connection.info
            self.fast = info.parameter_status("standard_conforming_strings") == "on"
        self.durable_flush = bool(getattr(settings, "CAMPAIGN_RESULTS_SYNCHRONOUS_COMMIT", False))
        self._guard: Any = None

    def __enter__(self) -> ResultLog:
        # Any other query on this connection first collects the result in flight.
        self._guard = connection.execute_wrapper(self._drain_before)
        self._guard.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.drain()
        finally:
            self._guard.__exit__(*exc)

    def _drain_before(self, execute: Any, sql: Any, params: Any, many: bool, context: Any) -> Any:
        self.drain()
        return execute(sql, params, many, context)

    def submit(
        self, delivery_id: int, status: str, *, sent_at: dt.datetime | None = None, provider: str = "",
        error: str = "", not_before: dt.datetime | None = None,
    ) -> None:  # fmt: skip
        """Record a result: sent to the database now, committed by the next ``drain``."""
        values = {
            "status": status, "sent_at": sent_at, "provider_message_id": provider[:200],
            "error": error[:MAX_ERROR_CHARS], "not_before": not_before,
        }  # fmt: skip
        self.results[delivery_id] = values
        self.drain()
        if not self.fast:
            Delivery.objects.filter(tenant_id=self.tenant_id, pk=delivery_id, status=Delivery.Status.SENDING).update(
                **values
            )
            return
        from psycopg import generators

        raw = connection.connection
        pgconn = raw.pgconn
        scope = current_scope()
        # A lost connection raises Django's OperationalError, as from the ORM (deliveries_send recovers).
        with connection.wrap_database_errors:
            pgconn.enter_pipeline_mode()
            self.pending = True
            self.preparing = raw not in RESULT_PREPARED
            if self.preparing:
                pgconn.send_prepare(RESULT_STATEMENT, RESULT_SQL)
            setup = "SELECT set_config('app.tenant_id', $1, true), set_config('app.platform_access', $2, true)"
            if not self.durable_flush:
                setup += ", set_config('synchronous_commit', 'off', true)"
            tenant = "" if scope.tenant_id is None else str(scope.tenant_id)
            pgconn.send_query_params(setup.encode(), [_param(tenant), _param("on" if scope.platform else "")])
            pgconn.send_query_prepared(
                RESULT_STATEMENT,
                [_param(values[name]) for name in ("status", "sent_at", "provider_message_id", "error", "not_before")]
                + [_param(self.tenant_id), _param(delivery_id)],
            )
            pgconn.pipeline_sync()
            raw.wait(generators.send(pgconn))

    def write(self, delivery_id: int, status: str, **values: Any) -> None:
        """Record a result and wait for its commit."""
        self.submit(delivery_id, status, **values)
        self.drain()

    def drain(self) -> None:
        """Wait until the result in flight is committed (raise if the database refused it)."""
        if not self.pending:
            return
        from psycopg import errors, generators, pq

        self.pending = False
        raw = connection.connection
        pgconn = raw.pgconn
        failed = None
        with connection.wrap_database_errors:  # a lost connection: Django's OperationalError
            while True:
                result = raw.wait(generators.fetch(pgconn))
                if result is None:
                    continue  # the end of one statement's results
                if result.status == pq.ExecStatus.PIPELINE_SYNC:
                    break
                if self.preparing:  # the first result answers the prepare (which no rollback undoes)
                    self.preparing = False
                    if result.status == pq.ExecStatus.COMMAND_OK:
                        RESULT_PREPARED.add(raw)
                if result.status in (pq.ExecStatus.FATAL_ERROR, pq.ExecStatus.PIPELINE_ABORTED) and failed is None:
                    failed = result
            pgconn.exit_pipeline_mode()
        if failed is not None:
            with connection.wrap_database_errors:  # as Django's own cursors raise them
                if failed.status == pq.ExecStatus.FATAL_ERROR:
                    raise errors.error_from_result(failed, encoding=raw.info.encoding)
                raise errors.OperationalError("the result statement was aborted")


def _retry_at(now: dt.datetime, attempts: int, retry_after: float | None) -> dt.datetime:
    """Exponential backoff (2, 4, 8… minutes, at most an hour), never sooner than the provider asked."""
    delay = min(RETRY_DELAY * 2 ** max(0, attempts - 1), MAX_RETRY_DELAY)
    if retry_after:
        delay = max(delay, dt.timedelta(seconds=retry_after))
    return now + delay


def _settle(ids: Iterable[int], tenant_id: int, **values: Any) -> int:
    """Record one result for many claimed deliveries in one statement."""
    ids = list(ids)
    if not ids:
        return 0
    return Delivery.objects.filter(tenant_id=tenant_id, pk__in=ids, status=Delivery.Status.SENDING).update(**values)


# --- sending ---------------------------------------------------------------------------------------
class Claimed(NamedTuple):
    """What the send path needs of a claimed delivery (a tuple: a batch reads hundreds)."""

    pk: int
    contact_id: int
    variant_id: int | None
    attempts: int


def deliveries_send(*, run: CampaignRun, ids: Sequence[int], backend: Any = None) -> Outcome:
    """Check, render and send claimed deliveries through one backend session; record each result.

    Skips and quiet-hour deferrals are recorded together before anything is sent; each message's
    result is committed before the next message goes out. When the database goes away in the
    middle (a restart, a failover), the batch is put right once it is back (``deliveries_recover``)
    and the error goes on to the task, which retries.
    """
    outcome = Outcome()
    results: dict[int, dict[str, Any]] = {}
    try:
        return _deliveries_send(run, ids, backend, outcome, results)
    except (OperationalError, InterfaceError) as error:
        if database_unreachable(error):
            deliveries_recover(run=run, ids=ids, results=results)
        raise


def deliveries_recover(
    *, run: CampaignRun, ids: Sequence[int], results: dict[int, dict[str, Any]],
    wait: dt.timedelta = DATABASE_RECOVERY_WAIT,
) -> bool:  # fmt: skip
    """Put a claimed batch right after the database went away in the middle of it.

    ``results`` holds the result of every message this worker handed over, committed or not (with
    ``synchronous_commit`` off a server crash may also forget the last committed ones): each is
    written again where its delivery is still claimed. The claimed deliveries it never handed over
    go back to pending (not an attempt). So nothing is sent twice, and nothing waits for
    ``STALE_CLAIM``. Return False when the database did not come back within ``wait``: the claims
    then stay until the stale-claim sweep, which sends the unrecorded ones again (same Message-ID).
    """
    deadline = time.monotonic() + wait.total_seconds()
    unsent = [pk for pk in ids if pk not in results]
    pause = 0.5
    while True:
        connection.close()
        try:
            with transaction.atomic():
                for pk, values in results.items():
                    _settle([pk], run.tenant_id, **values)
                released = _settle(unsent, run.tenant_id, status=Delivery.Status.PENDING, attempts=F("attempts") - 1)
        except (OperationalError, InterfaceError) as error:
            if not database_unreachable(error) or time.monotonic() + pause > deadline:
                logger.error(
                    "campaign.batch_not_recovered",
                    extra={"tenant_id": run.tenant_id, "run_id": run.pk, "claimed": len(ids)},
                )
                return False
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
            continue
        logger.warning(
            "campaign.batch_recovered",
            extra={"tenant_id": run.tenant_id, "run_id": run.pk, "results": len(results), "released": released},
        )
        return True


def _deliveries_send(
    run: CampaignRun, ids: Sequence[int], backend: Any, outcome: Outcome, results: dict[int, dict[str, Any]]
) -> Outcome:
    now = timezone.now()
    campaign = Campaign.objects.select_related("tenant").get(pk=run.campaign_id)
    tenant = campaign.tenant
    deliveries = [
        Claimed(*row)
        for row in Delivery.objects.filter(tenant_id=run.tenant_id, pk__in=list(ids), status=Delivery.Status.SENDING)
        .order_by("id")
        .values_list("id", "contact_id", "variant_id", "attempts")
    ]
    if not deliveries:
        return outcome
    rows = Contact.objects.filter(tenant_id=run.tenant_id, pk__in=[d.contact_id for d in deliveries])
    contacts: dict[int, AnyContact] = {row["id"]: ContactRow(row) for row in rows.values(*CONTACT_COLUMNS)}
    variants = {v.pk: v for v in Variant.objects.filter(tenant_id=run.tenant_id, campaign=campaign)}
    reasons = _skip_reasons(campaign, contacts, now)
    skips: dict[str, list[int]] = {}
    deferrals: dict[dt.datetime, list[int]] = {}
    ready: list[Claimed] = []
    quiet = campaign.channel in QUIET_HOURS_CHANNELS
    for delivery in deliveries:
        contact = contacts.get(delivery.contact_id)
        reason = Delivery.SkipReason.ERASED if contact is None else reasons.get(delivery.contact_id, "")
        if not reason and (delivery.variant_id or 0) not in variants:
            reason = Delivery.SkipReason.NO_VARIANT
        if reason:
            skips.setdefault(reason, []).append(delivery.pk)
            continue
        assert contact is not None
        if quiet and (until := quiet_hours_end(tenant, recipient_zone(contact.time_zone, tenant), now)):
            deferrals.setdefault(until, []).append(delivery.pk)
            continue
        ready.append(delivery)
    for reason, skipped in skips.items():
        outcome.skipped += _settle(skipped, run.tenant_id, status=Delivery.Status.SKIPPED, skip_reason=reason)
    for until, held in deferrals.items():
        # Not an attempt: the claim's count is given back.
        outcome.deferred += _settle(
            held, run.tenant_id, status=Delivery.Status.PENDING, not_before=until, attempts=F("attempts") - 1
        )
    if not ready:
        return outcome
    _send_ready(campaign, ready, contacts, variants, backend, outcome, now, results)
    return outcome


def _send_ready(
    campaign: Campaign, ready: list[Claimed], contacts: dict[int, AnyContact], variants: dict[int, Variant],
    backend: Any, outcome: Outcome, now: dt.datetime, results: dict[int, dict[str, Any]],
) -> None:  # fmt: skip
    tenant_id = campaign.tenant_id
    if campaign.channel == CampaignChannel.WEBHOOK and not campaign.webhook_url:
        outcome.failed += _settle(
            [d.pk for d in ready], tenant_id, status=Delivery.Status.FAILED, error="The campaign has no webhook URL."
        )
        return
    config = ChannelConfig.objects.filter(tenant_id=tenant_id, channel=campaign.channel).first()
    own_backend = backend is None
    if own_backend:
        try:
            backend = channel_backend(tenant=campaign.tenant, channel=campaign.channel, config=config)
        except ChannelNotConfigured as problem:
            outcome.failed += _settle(
                [d.pk for d in ready], tenant_id, status=Delivery.Status.FAILED, error=str(problem)[:MAX_ERROR_CHARS]
            )
            logger.warning(
                "campaign.channel_not_configured",
                extra={"tenant_id": tenant_id, "campaign_id": campaign.pk, "channel": campaign.channel},
            )
            return
    composer = Composer(campaign, config=config, config_loaded=True)
    log = ResultLog(tenant_id, results)
    in_flight: deque[Claimed] = deque()
    failed: dict[str, list[int]] = {}
    gone_tokens: dict[int, tuple[str, ...]] = {}

    def outgoing() -> Iterator[OutgoingMessage]:
        # Rendering the next message overlaps with the previous result's commit; the commit is
        # awaited before the message is handed over.
        for delivery in ready:
            try:
                message = composer.build(variants[delivery.variant_id or 0], contacts[delivery.contact_id], delivery.pk)
            except RenderError as error:
                failed.setdefault(f"Template: {error}"[:MAX_ERROR_CHARS], []).append(delivery.pk)
                continue
            log.drain()
            in_flight.append(delivery)
            yield message

    try:
        with log:
            for result in _results(backend, outgoing()):
                delivery = in_flight.popleft()
                if result.invalid_tokens:
                    gone_tokens[delivery.contact_id] = result.invalid_tokens
                if result.status == SendStatus.SENT:
                    log.submit(
                        delivery.pk, Delivery.Status.SENT, sent_at=timezone.now(), provider=result.provider_message_id
                    )
                    outcome.sent += 1
                elif result.status == SendStatus.FAILED_TRANSIENT and delivery.attempts < MAX_ATTEMPTS:
                    # From the failure, not the batch's start: a slow batch must not shorten the backoff.
                    not_before = _retry_at(timezone.now(), delivery.attempts, result.retry_after)
                    log.submit(delivery.pk, Delivery.Status.PENDING, error=result.error, not_before=not_before)
                    outcome.retried += 1
                else:
                    log.submit(delivery.pk, Delivery.Status.FAILED, error=result.error)
                    outcome.failed += 1
    finally:
        if own_backend:
            backend.close()
    for text, pks in failed.items():
        outcome.failed += _settle(pks, tenant_id, status=Delivery.Status.FAILED, error=text)
    if gone_tokens:
        _forget_tokens(contacts, gone_tokens)


def _forget_tokens(contacts: dict[int, AnyContact], gone: dict[int, tuple[str, ...]]) -> None:
    """Drop device tokens the push provider no longer knows, so the next send skips them."""
    from contacts.services import contact_update

    for contact_id, tokens in gone.items():
        contact = Contact.objects.filter(tenant_id=contacts[contact_id].tenant_id, pk=contact_id).first()
        if contact is None:
            continue
        remaining = [t for t in contact.push_tokens or [] if t not in tokens]
        try:
            contact_update(contact=contact, data={"push_tokens": remaining})
        except Exception:  # the sends stand; a token left behind fails again next time
            logger.warning("campaign.push_tokens_not_updated", extra={"contact_id": contact_id}, exc_info=True)


def run_finish_if_done(*, run: CampaignRun) -> bool:
    """A run is done when every delivery is sent, skipped or failed; the campaign is then "sent" (a recurring
    one "scheduled" again) once none of its runs, nor of its siblings' (campaigns/siblings.py), is sending."""
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
            if campaign.sibling_of_id is not None:
                campaign = Campaign.objects.get(pk=campaign.sibling_of_id)
            if campaign.kind == Campaign.Kind.JOURNEY:
                return True  # a journey step sends a run per batch; its status is the journey's
            sending = CampaignRun.objects.filter(
                Q(campaign_id=campaign.pk) | Q(campaign__sibling_of_id=campaign.pk),
                tenant_id=run.tenant_id, status=CampaignRun.Status.SENDING,
            )  # fmt: skip
            if sending.exists():
                return True  # another run, or its messages on other channels, still going out
            recurring = campaign.schedule == Campaign.Schedule.RECURRING
            # A recurring campaign waits for its next occurrence.
            finished = Campaign.Status.SCHEDULED if recurring else Campaign.Status.SENT
            Campaign.objects.filter(pk=campaign.pk, status=Campaign.Status.SENDING).update(status=finished)
    return True


def run_family(run: CampaignRun) -> Any:
    """The ids of the run and of the runs of its siblings that send its contacts on other channels
    (campaigns/siblings.py): a subquery, so that filtering deliveries by it stays one query."""
    return CampaignRun.objects.filter(Q(pk=run.pk) | Q(parent_id=run.pk), tenant_id=run.tenant_id).values("pk")


def run_progress(run: CampaignRun) -> dict[str, int]:
    """Deliveries by status, the siblings' runs' included."""
    rows = (
        Delivery.objects.filter(tenant_id=run.tenant_id, run_id__in=run_family(run))
        .values("status")
        .annotate(n=Count("id"))
        .order_by()
    )
    return {row["status"]: row["n"] for row in rows}
