"""Preferred channel: each contact's most engaged channel, among those they consented to.

**The profile** (``ChannelProfile``, docs/preferred_channel.md). For each of email, SMS and push, a
contact's score is their recency-weighted engagement per message received on it:

    score(c) = Σ w·v / (Σ w + PRIOR_MESSAGES)

over the messages they received on ``c`` in the last ``LOOKBACK``, where ``w = ½ ^ (age / HALF_LIFE)``
(the message's age) and ``v`` is what they did with it, counted once per message: 1 for a click, a
push open (a tap) or a reply, ½ for an email open without a click, 0 for nothing. Messages are every
delivery a campaign or journey sent on ``c`` (its opens and clicks: human ``MessageEvent`` rows, machine
ones left out), plus each engagement the tenant's other systems recorded as a contact event
(``IMPORTED``: ``email_open``, ``email_click``, ``email_reply``, ``sms_click``, ``sms_reply``,
``push_open``; not our own tracking's copies, source "tracking"), which counts as a message received
and engaged with. ``PRIOR_MESSAGES`` is one message received and ignored: it shrinks short histories
towards 0 (one message opened: ½; ten of ten clicked: 0.91). Scores are kept to three decimals.

**The recompute** (``channel_profiles_compute``, daily per tenant from the beat) is set-based on
PostgreSQL: messages and engagements grouped by contact and channel into a temporary table, one
``INSERT … ON CONFLICT`` of every profile (unchanged rows are left alone) and one ``DELETE`` of the
profiles with nothing left in the window. Other databases run the same rules in Python
(``profile_scores``, the reference the tests hold the SQL to).

**The choice** (``choice_sql``, inside the snapshot's ``INSERT … SELECT``: one join of the profile, one
of each channel's consent state): among the campaign's channels, those the contact can get it on are
those with consent granted for the campaign's purpose and an address (email, phone, a device token)
that is not suppressed (on PostgreSQL: one join of the suppression per email and SMS; elsewhere the
sender skips a suppressed address).
None: the first channel (``no_consent``: the sender skips it for no consent). One: that one
(``only_consented``). All scores 0: the first of them in the campaign's order (``no_engagement``).
Otherwise the highest score, a tie going to the earlier channel (``most_engaged``). The delivery keeps
the channel, the reason and the scores of the channels it could go by (in thousandths); the deliveries on another
channel than the campaign's belong to a run of a hidden sibling campaign on that channel
(campaigns/siblings.py), sent like any run: consent and the rest are checked again when it goes out.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, F
from django.utils import timezone

from analytics.models import ChannelProfile, MessageEvent
from campaigns.models import Campaign, CampaignChannel, CampaignRun, Delivery, Variant
from campaigns.siblings import send_after_commit, sibling_create, sibling_run_create, variant_copy
from contacts.models import ConsentState, ConsentStatus, Contact, Event, Suppression
from tenants.models import Tenant

logger = logging.getLogger(__name__)

# The channels a person engages with (a webhook reaches a system, not a person).
CHANNELS: tuple[str, ...] = (CampaignChannel.EMAIL, CampaignChannel.SMS, CampaignChannel.PUSH)
LOOKBACK = dt.timedelta(days=180)
HALF_LIFE = dt.timedelta(days=30)
PRIOR_MESSAGES = 1.0
CLICK_VALUE = 1.0
EMAIL_OPEN_VALUE = 0.5  # an open is a weaker sign than a click, and privacy proxies blur it
# Engagements recorded by the tenant's other systems (contact events): channel and value.
IMPORTED: dict[str, tuple[str, float]] = {
    "email_open": (CampaignChannel.EMAIL, EMAIL_OPEN_VALUE),
    "email_click": (CampaignChannel.EMAIL, CLICK_VALUE),
    "email_reply": (CampaignChannel.EMAIL, CLICK_VALUE),
    "sms_click": (CampaignChannel.SMS, CLICK_VALUE),
    "sms_reply": (CampaignChannel.SMS, CLICK_VALUE),
    "push_open": (CampaignChannel.PUSH, CLICK_VALUE),
}
TRACKING_SOURCE = "tracking"  # analytics.services writes our own opens and clicks as contact events too
SCORE_PLACES = Decimal("0.001")
# Advisory lock keys of recomputes: this prefix plus the tenant's id (one bigint key space).
RECOMPUTE_LOCK_NAMESPACE = 0x5E6D_0008 << 32
Reason = Delivery.ChannelReason


# --- the rule (the reference the SQL mirrors) ---------------------------------------------------------
@dataclass(frozen=True)
class Touch:
    """A message a contact received on ``channel`` at ``at``, and what they did with it (0, ½ or 1)."""

    channel: str
    at: dt.datetime
    value: float


def recency_weight(at: dt.datetime, now: dt.datetime) -> float:
    age = max((now - at).total_seconds(), 0.0)
    return float(0.5 ** (age / HALF_LIFE.total_seconds()))


def rounded(score: float) -> float:
    """Three decimals, half away from zero, as PostgreSQL rounds a float8 cast to numeric."""
    return float(Decimal(f"{score:.15g}").quantize(SCORE_PLACES, rounding=ROUND_HALF_UP))


def profile_scores(touches: Iterable[Touch], now: dt.datetime) -> dict[str, float]:
    """Each channel's score from the contact's messages (every channel, 0 without messages)."""
    received: dict[str, float] = defaultdict(float)
    engaged: dict[str, float] = defaultdict(float)
    for touch in touches:
        weight = recency_weight(touch.at, now)
        received[touch.channel] += weight
        engaged[touch.channel] += weight * touch.value
    return {c: rounded(engaged[c] / (received[c] + PRIOR_MESSAGES)) for c in CHANNELS}


def best_channel(scores: Mapping[str, float]) -> str:
    """The highest-scoring channel (earlier in CHANNELS on a tie), "" when every score is 0."""
    top = max((scores.get(c, 0.0) for c in CHANNELS), default=0.0)
    return next((c for c in CHANNELS if scores.get(c, 0.0) == top), "") if top > 0 else ""


@dataclass(frozen=True)
class ChannelChoice:
    channel: str
    reason: str
    scores: dict[str, float]


def choose_channel(*, order: Sequence[str], available: Iterable[str], scores: Mapping[str, float]) -> ChannelChoice:
    """The channel of ``order`` a contact gets a message on, given those available and their scores."""
    reachable = [c for c in order if c in set(available)]
    shown = {c: float(scores.get(c, 0.0)) for c in reachable}
    if not reachable:
        return ChannelChoice(order[0], Reason.NO_CONSENT, shown)
    if len(reachable) == 1:
        return ChannelChoice(reachable[0], Reason.ONLY_CONSENTED, shown)
    top = max(shown.values())
    chosen = next(c for c in reachable if shown[c] == top)
    return ChannelChoice(chosen, Reason.MOST_ENGAGED if top > 0 else Reason.NO_ENGAGEMENT, shown)


def reason_text(channel: str, reason: str, scores: Mapping[str, float] | None) -> str:
    """The choice in words: "most engaged: email 0.800 vs SMS 0.100"."""
    labels = dict(CampaignChannel.choices)
    others = " vs ".join(f"{labels.get(c, c)} {s:.3f}" for c, s in (scores or {}).items() if c != channel)
    mine = f"{labels.get(channel, channel)} {(scores or {}).get(channel, 0.0):.3f}"
    if reason == Reason.MOST_ENGAGED:
        return f"most engaged: {mine}" + (f" vs {others}" if others else "")
    if reason == Reason.ONLY_CONSENTED:
        return f"only consented channel: {labels.get(channel, channel)}"
    if reason == Reason.NO_ENGAGEMENT:
        return f"no engagement yet: {labels.get(channel, channel)}, the first in the campaign's order"
    if reason == Reason.NO_CONSENT:
        return f"no consented channel: {labels.get(channel, channel)}, skipped when sent"
    return ""


# --- the recompute --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChannelRecompute:
    contacts: int  # contacts with a message or an engagement in the window (each has a profile)
    written: int  # profiles created or changed
    removed: int  # profiles of contacts with nothing left in the window
    elapsed_ms: float


def channel_profiles_compute(*, tenant: Tenant, now: dt.datetime | None = None) -> ChannelRecompute:
    """Recompute every channel profile of the tenant from the messages and engagements of the last LOOKBACK."""
    started = time.perf_counter()
    now = now or timezone.now()
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                # One recompute per tenant at a time: a second waits, then finds the same figures.
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [RECOMPUTE_LOCK_NAMESPACE + tenant.pk])
            contacts, written, removed = _compute_sql(tenant, now)
        else:
            contacts, written, removed = _compute_python(tenant, now)
    result = ChannelRecompute(contacts, written, removed, (time.perf_counter() - started) * 1000)
    logger.info(
        "analytics.channel_profiles_recomputed",
        extra={"tenant_id": tenant.pk, "contacts": contacts, "written": written, "removed": removed,
               "elapsed_ms": round(result.elapsed_ms)},
    )  # fmt: skip
    return result


def _weight_sql(column: str) -> str:
    """The recency weight of ``column`` (one parameter: now), in float8: EXTRACT gives a numeric, whose
    power is computed in arbitrary precision (50 µs a row: a minute at a million messages)."""
    age = f"GREATEST(EXTRACT(EPOCH FROM (%s::timestamptz - {column}))::float8, 0)"
    return f"power(0.5::float8, {age} / {HALF_LIFE.total_seconds()}::float8)"


def _listed(values: Iterable[str]) -> str:
    """A list of fixed words (our constants, never input) as SQL literals."""
    return ", ".join(f"'{value}'" for value in values)


def _cells_sql() -> str:
    deliveries, runs, campaigns = Delivery._meta.db_table, CampaignRun._meta.db_table, Campaign._meta.db_table
    imported = ", ".join(f"('{name}', '{channel}', {value})" for name, (channel, value) in IMPORTED.items())
    return f"""
CREATE TEMPORARY TABLE channel_cells ON COMMIT DROP AS
SELECT x.contact_id, x.channel, SUM(x.w)::float8 AS received, SUM(x.w * x.v)::float8 AS engaged,
       COUNT(*)::int AS n, (COUNT(*) FILTER (WHERE x.v > 0))::int AS k
FROM (
    SELECT d.contact_id, c.channel, {_weight_sql("d.sent_at")} AS w,
           CASE e.best WHEN 2 THEN {CLICK_VALUE}
                WHEN 1 THEN CASE WHEN c.channel = 'email' THEN {EMAIL_OPEN_VALUE} ELSE {CLICK_VALUE} END
                ELSE 0.0 END AS v
    FROM {deliveries} AS d
    JOIN {runs} AS r ON r.id = d.run_id AND r.tenant_id = d.tenant_id
    JOIN {campaigns} AS c ON c.id = r.campaign_id AND c.tenant_id = r.tenant_id
    LEFT JOIN (
        SELECT m.delivery_id, MAX(CASE WHEN m.kind = 'click' THEN 2 ELSE 1 END) AS best
        FROM {MessageEvent._meta.db_table} AS m
        WHERE m.tenant_id = %s AND m.machine = '' AND m.kind IN ('open', 'click')
            AND m.occurred_at >= %s AND m.occurred_at <= %s
        GROUP BY m.delivery_id
    ) AS e ON e.delivery_id = d.id
    WHERE d.tenant_id = %s AND d.status = 'sent' AND d.sent_at >= %s AND d.sent_at <= %s
        AND c.channel IN ({_listed(CHANNELS)})
    UNION ALL
    SELECT ev.contact_id, i.channel, {_weight_sql("ev.occurred_at")} AS w, i.value AS v
    FROM {Event._meta.db_table} AS ev
    JOIN (VALUES {imported}) AS i (name, channel, value) ON i.name = ev.name
    WHERE ev.tenant_id = %s AND ev.name IN ({_listed(IMPORTED)}) AND ev.source <> '{TRACKING_SOURCE}'
        AND ev.occurred_at >= %s AND ev.occurred_at <= %s
) AS x
JOIN {Contact._meta.db_table} AS ct ON ct.id = x.contact_id AND ct.tenant_id = %s
WHERE ct.erased_at IS NULL
GROUP BY x.contact_id, x.channel
"""


def _score_sql(channel: str) -> str:
    engaged = f"COALESCE(SUM(cell.engaged) FILTER (WHERE cell.channel = '{channel}'), 0)"
    received = f"COALESCE(SUM(cell.received) FILTER (WHERE cell.channel = '{channel}'), 0)"
    return f"round(({engaged} / ({received} + {PRIOR_MESSAGES}))::numeric, 3)::float8"


def _best_sql(email: str, sms: str, push: str) -> str:
    return (
        f"CASE WHEN GREATEST({email}, {sms}, {push}) <= 0 THEN '' WHEN {email} >= {sms} AND {email} >= {push} "
        f"THEN 'email' WHEN {sms} >= {push} THEN 'sms' ELSE 'push' END"
    )


def _upsert_sql() -> str:
    columns = ("email_score", "sms_score", "push_score", "best_channel", "messages_counted", "engagements_counted")
    return f"""
INSERT INTO {ChannelProfile._meta.db_table} AS p
    (tenant_id, contact_id, {", ".join(columns)}, computed_at)
SELECT %s, s.contact_id, s.email, s.sms, s.push, {_best_sql("s.email", "s.sms", "s.push")}, s.n, s.k, %s
FROM (
    SELECT cell.contact_id, {_score_sql("email")} AS email, {_score_sql("sms")} AS sms, {_score_sql("push")} AS push,
           SUM(cell.n)::int AS n, SUM(cell.k)::int AS k
    FROM channel_cells AS cell
    GROUP BY cell.contact_id
) AS s
ON CONFLICT (tenant_id, contact_id) DO UPDATE SET
    {", ".join(f"{name} = EXCLUDED.{name}" for name in columns)}, computed_at = EXCLUDED.computed_at
WHERE ({", ".join(f"p.{name}" for name in columns)}) IS DISTINCT FROM ({", ".join(f"EXCLUDED.{n}" for n in columns)})
"""


def _compute_sql(tenant: Tenant, now: dt.datetime) -> tuple[int, int, int]:
    from segments.services import SET_BASED, query_settings

    since = now - LOOKBACK
    profiles = ChannelProfile._meta.db_table
    params: list[Any] = [now, tenant.pk, since, now, tenant.pk, since, now, now, tenant.pk, since, now, tenant.pk]
    # Whole-tenant sets: hash joins, no JIT (segments.services.query_settings).
    with query_settings(**SET_BASED), connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS channel_cells")
        cursor.execute(_cells_sql(), params)
        cursor.execute("ANALYZE channel_cells")
        cursor.execute(_upsert_sql(), [tenant.pk, now])
        written = cursor.rowcount
        cursor.execute(
            f"DELETE FROM {profiles} AS p WHERE p.tenant_id = %s "
            "AND NOT EXISTS (SELECT 1 FROM channel_cells AS cell WHERE cell.contact_id = p.contact_id)",
            [tenant.pk],
        )
        removed = cursor.rowcount
        cursor.execute("SELECT COUNT(DISTINCT contact_id) FROM channel_cells")
        contacts = int(cursor.fetchone()[0])
        cursor.execute("DROP TABLE channel_cells")
    return contacts, written, removed


def contact_touches(tenant: Tenant, now: dt.datetime) -> dict[int, list[Touch]]:
    """Contact id → the messages of the window and what they did with them (Python: the SQL's rules)."""
    since = now - LOOKBACK
    sent = Delivery.objects.filter(
        tenant_id=tenant.pk, status=Delivery.Status.SENT, sent_at__gte=since, sent_at__lte=now,
        run__campaign__channel__in=CHANNELS,
    ).values_list("id", "contact_id", "sent_at", "run__campaign__channel")  # fmt: skip
    best: dict[int, int] = {}
    for delivery_id, kind in MessageEvent.objects.filter(
        tenant_id=tenant.pk, machine="", kind__in=(MessageEvent.Kind.OPEN, MessageEvent.Kind.CLICK),
        occurred_at__gte=since, occurred_at__lte=now,
    ).values_list("delivery_id", "kind"):  # fmt: skip
        best[delivery_id] = max(best.get(delivery_id, 0), 2 if kind == MessageEvent.Kind.CLICK else 1)
    touches: dict[int, list[Touch]] = defaultdict(list)
    for delivery_id, contact_id, sent_at, channel in sent.iterator(chunk_size=5_000):
        level = best.get(delivery_id, 0)
        value = CLICK_VALUE if level == 2 else (0.0 if level == 0 else _open_value(channel))
        touches[contact_id].append(Touch(channel, sent_at, value))
    imported = (
        Event.objects.filter(tenant_id=tenant.pk, name__in=list(IMPORTED), occurred_at__gte=since, occurred_at__lte=now)
        .exclude(source=TRACKING_SOURCE)
        .values_list("contact_id", "name", "occurred_at")
    )
    for contact_id, name, occurred_at in imported.iterator(chunk_size=5_000):
        channel, value = IMPORTED[name]
        touches[contact_id].append(Touch(channel, occurred_at, value))
    live = set(
        Contact.objects.filter(tenant_id=tenant.pk, pk__in=list(touches), erased_at__isnull=True).values_list(
            "pk", flat=True
        )
    )
    return {pk: found for pk, found in touches.items() if pk in live}


def _open_value(channel: str) -> float:
    return EMAIL_OPEN_VALUE if channel == CampaignChannel.EMAIL else CLICK_VALUE


def _compute_python(tenant: Tenant, now: dt.datetime) -> tuple[int, int, int]:
    touches = contact_touches(tenant, now)
    existing = {p.contact_id: p for p in ChannelProfile.objects.filter(tenant_id=tenant.pk)}
    created, changed = [], []
    for contact_id, found in touches.items():
        scores = profile_scores(found, now)
        figures = {
            "email_score": scores[CampaignChannel.EMAIL], "sms_score": scores[CampaignChannel.SMS],
            "push_score": scores[CampaignChannel.PUSH], "best_channel": best_channel(scores),
            "messages_counted": len(found), "engagements_counted": sum(1 for t in found if t.value > 0),
        }  # fmt: skip
        profile = existing.get(contact_id)
        if profile is None:
            created.append(ChannelProfile(tenant_id=tenant.pk, contact_id=contact_id, computed_at=now, **figures))
        elif any(getattr(profile, name) != value for name, value in figures.items()):
            for name, value in figures.items():
                setattr(profile, name, value)
            profile.computed_at = now
            changed.append(profile)
    removed = [p.pk for contact_id, p in existing.items() if contact_id not in touches]
    ChannelProfile.objects.filter(tenant_id=tenant.pk, pk__in=removed).delete()
    ChannelProfile.objects.bulk_create(created, batch_size=1_000)
    fields = [
        "email_score", "sms_score", "push_score", "best_channel", "messages_counted", "engagements_counted",
        "computed_at",
    ]  # fmt: skip
    ChannelProfile.objects.bulk_update(changed, fields, batch_size=1_000)
    return len(touches), len(created) + len(changed), len(removed)


# --- the choice, in SQL ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ChoiceSql:
    """Expressions on the audience row ``a`` (columns id, email, phone, push_tokens) and the joins they need."""

    joins: str
    params: list[Any]
    channel: str
    reason: str
    # Channel → its score in thousandths when the contact could get it on that channel (NULL otherwise).
    scores: dict[str, str]
    reachable: str  # true when the contact can get it on one of the channels at least


# The audience column each suppressible channel's address is in (a push token is suppressed token by
# token at sending).
SUPPRESSIBLE: dict[str, str] = {CampaignChannel.EMAIL: "email", CampaignChannel.SMS: "phone"}


def _suppression_join(channel: str) -> str:
    """PostgreSQL: the channel's suppression of the row's address, if any (parameter: the tenant id). The
    address hash is contacts.normalize.address_hash, computed in SQL; (tenant, channel, hash) is unique."""
    column, alias = SUPPRESSIBLE[channel], f"ps_{channel}"
    hashed = f"encode(sha256(convert_to('{channel}:' || a.{column}, 'UTF8')), 'hex')"
    return (
        f"LEFT JOIN {Suppression._meta.db_table} AS {alias} ON {alias}.tenant_id = %s "
        f"AND {alias}.channel = '{channel}' AND a.{column} <> '' AND {alias}.address_hash = {hashed}"
    )


def _available_sql(channel: str, postgres: bool) -> str:
    consent = f"pc_{channel}.contact_id IS NOT NULL"
    if postgres and channel in SUPPRESSIBLE:
        consent += f" AND ps_{channel}.id IS NULL"
    if channel == CampaignChannel.EMAIL:
        return f"({consent} AND a.email <> '')"
    if channel == CampaignChannel.SMS:
        return f"({consent} AND a.phone <> '')"
    empty = "'[]'::jsonb, 'null'::jsonb" if postgres else "'[]', 'null'"
    return f"({consent} AND a.push_tokens IS NOT NULL AND a.push_tokens NOT IN ({empty}))"


def choice_sql(*, tenant_id: int, channels: Sequence[str], purpose: str, with_scores: bool = True) -> ChoiceSql:
    """Each audience row's channel of ``channels`` (in order), the reason and the scores (see the module).

    Without ``with_scores`` only ``reachable`` and the consent joins are usable (the audience estimate).
    """
    postgres = connection.vendor == "postgresql"
    order = [c for c in dict.fromkeys(channels) if c in CHANNELS]
    if not order:
        raise ValueError("A preferred-channel choice needs one of email, SMS or push.")
    joins: list[str] = []
    params: list[Any] = []
    if with_scores:
        profiles = ChannelProfile._meta.db_table
        joins.append(f"LEFT JOIN {profiles} AS pcp ON pcp.tenant_id = %s AND pcp.contact_id = a.id")
        params.append(tenant_id)
    for channel in order:
        # One row at most: (tenant, contact, channel, purpose) is unique.
        joins.append(
            f"LEFT JOIN {ConsentState._meta.db_table} AS pc_{channel} ON pc_{channel}.tenant_id = %s "
            f"AND pc_{channel}.contact_id = a.id AND pc_{channel}.channel = '{channel}' "
            f"AND pc_{channel}.purpose = %s AND pc_{channel}.status = '{ConsentStatus.GRANTED}'"
        )
        params += [tenant_id, purpose]
        if postgres and channel in SUPPRESSIBLE:  # elsewhere (SQLite, demo-sized) the sender skips it
            joins.append(_suppression_join(channel))
            params.append(tenant_id)
    available = {c: _available_sql(c, postgres) for c in order}
    score = {c: f"COALESCE(pcp.{c}_score, 0)" for c in order}
    effective = {c: f"(CASE WHEN {available[c]} THEN {score[c]} ELSE -1 END)" for c in order}
    whens = [
        f"WHEN {' AND '.join(f'{effective[c]} >= {effective[later]}' for later in order[i + 1 :])} THEN '{c}'"
        for i, c in enumerate(order[:-1])
    ]
    channel = f"CASE {' '.join(whens)} ELSE '{order[-1]}' END" if whens else f"'{order[0]}'"
    count = " + ".join(f"(CASE WHEN {available[c]} THEN 1 ELSE 0 END)" for c in order)
    engaged = " OR ".join(f"{effective[c]} > 0" for c in order)
    reason = (
        f"CASE WHEN ({count}) = 0 THEN '{Reason.NO_CONSENT}' WHEN ({count}) = 1 THEN '{Reason.ONLY_CONSENTED}' "
        f"WHEN NOT ({engaged}) THEN '{Reason.NO_ENGAGEMENT}' ELSE '{Reason.MOST_ENGAGED}' END"
    )
    scores = {c: f"CASE WHEN {available[c]} THEN CAST(ROUND({score[c]} * 1000) AS integer) END" for c in order}
    reachable = "(" + " OR ".join(available[c] for c in order) + ")"
    return ChoiceSql(" ".join(joins), params, channel, reason, scores, reachable)


# --- routes: the sibling campaign and run of each other channel -------------------------------------
# What a preferred channel's sibling keeps in step with its campaign.
SYNCED_FIELDS = (
    "purpose", "goal_event", "attribution_window_hours", "attribution_touch", "track_opens", "track_clicks",
    "throttle_per_minute", "sender_name", "sender_email", "reply_to", "sms_sender", "webhook_url", "best_time",
)  # fmt: skip


@dataclass
class Routes:
    """Where a preferred-channel campaign's deliveries go: the run of the campaign for its own channel,
    a run of a sibling for each other channel, each variant to its copy there."""

    run: CampaignRun
    runs: dict[str, CampaignRun] = field(default_factory=dict)
    copies: dict[str, dict[int, int]] = field(default_factory=dict)

    def run_sql(self) -> str:
        """The delivery's run id by the row's ``_channel`` (the campaign's run: one parameter)."""
        whens = " ".join(f"WHEN '{c}' THEN {int(run.pk)}" for c, run in self.runs.items())
        return f"CASE a._channel {whens} ELSE %s END" if whens else "%s"

    def variant_sql(self) -> str:
        """The delivery's variant id by the row's ``_channel`` and ``_variant`` (the copy on a sibling)."""
        whens = []
        for channel, copies in self.copies.items():
            inner = " ".join(f"WHEN {int(pk)} THEN {int(copy)}" for pk, copy in copies.items())
            whens.append(f"WHEN '{channel}' THEN {f'CASE a._variant {inner} END' if inner else 'NULL'}")
        return f"CASE a._channel {' '.join(whens)} ELSE a._variant END" if whens else "a._variant"


def preferred_sibling(campaign: Campaign, channel: str) -> Campaign:
    """The hidden campaign sending ``campaign``'s messages by ``channel`` (made on first use, kept in step)."""
    sibling = (
        Campaign.objects.filter(tenant_id=campaign.tenant_id, sibling_of=campaign, channel=channel)
        .order_by("pk")
        .first()
    )
    if sibling is None:
        label = CampaignChannel(channel).label
        sibling = sibling_create(
            parent=campaign, channel=channel, name=f"{campaign.name} · preferred channel: {label}",
            description=f"Sends campaign {campaign.pk} to the contacts whose preferred channel is {label}.",
            owned=True,
        )  # fmt: skip
        sibling.cost = 0  # the campaign's cost is counted once, on the campaign
        sibling.save(update_fields=["cost"])
    changed = [name for name in SYNCED_FIELDS if getattr(sibling, name) != getattr(campaign, name)]
    for name in changed:
        setattr(sibling, name, getattr(campaign, name))
    if changed:
        sibling.save(update_fields=changed)
    return sibling


def routes_prepare(*, campaign: Campaign, run: CampaignRun, reuse: bool = False) -> Routes:
    """A sibling run for each of the campaign's other channels, and its copies of the variants.

    ``reuse``: a journey step's batch of the same moment goes to the sibling runs made for ``run`` already.
    """
    routes = Routes(run)
    variants = list(Variant.objects.filter(tenant_id=campaign.tenant_id, campaign=campaign).order_by("position", "id"))
    for channel in campaign.preferred_channels:
        if channel == campaign.channel or channel not in CHANNELS or channel in routes.runs:
            continue
        sibling = preferred_sibling(campaign, channel)
        copies = {v.copy_of_id: v for v in Variant.objects.filter(tenant_id=campaign.tenant_id, campaign=sibling)}
        routes.copies[channel] = {
            v.pk: variant_copy(variant=v, sibling=sibling, copy=copies.get(v.pk)).pk for v in variants
        }
        existing = (
            CampaignRun.objects.filter(tenant_id=campaign.tenant_id, campaign=sibling, parent=run).first()
            if reuse
            else None
        )
        routes.runs[channel] = existing or sibling_run_create(
            sibling=sibling, scheduled_for=run.scheduled_for, parent=run
        )
    return routes


def routes_settle(routes: Routes, counts: Mapping[int, int], *, added: bool = False) -> list[CampaignRun]:
    """Record each sibling run's deliveries (``counts``: run id → inserted), drop the empty new ones and
    send the others after commit; return the sibling runs that have deliveries."""
    used = []
    for run in routes.runs.values():
        inserted = counts.get(run.pk, 0)
        if not inserted:
            if not Delivery.objects.filter(tenant_id=run.tenant_id, run_id=run.pk).exists():
                run.delete()
            continue
        if added:
            CampaignRun.objects.filter(pk=run.pk).update(
                audience_size=F("audience_size") + inserted, status=CampaignRun.Status.SENDING,
                finished_at=None,
            )  # fmt: skip
        else:
            CampaignRun.objects.filter(pk=run.pk).update(audience_size=inserted)
        run.audience_size = inserted
        send_after_commit(run)
        used.append(run)
    return used


def run_counts(run_ids: Sequence[int], tenant_id: int) -> dict[int, int]:
    """Deliveries per run (the SQLite path of the snapshot, which cannot count what it inserted)."""
    rows = (
        Delivery.objects.filter(tenant_id=tenant_id, run_id__in=list(run_ids))
        .values("run_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    return {row["run_id"]: row["n"] for row in rows}


# --- reads -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChannelAffinity:
    """A contact's scores per channel as the last recompute saw them, and their consent."""

    scores: dict[str, float]
    best: str
    messages: int
    engagements: int
    computed_at: dt.datetime | None


def contact_channel_affinity(*, tenant: Tenant, contact: Contact) -> ChannelAffinity:
    profile = ChannelProfile.objects.filter(tenant_id=tenant.pk, contact_id=contact.pk).first()
    if profile is None:
        return ChannelAffinity(dict.fromkeys(CHANNELS, 0.0), "", 0, 0, None)
    scores = {c: float(getattr(profile, f"{c}_score")) for c in CHANNELS}
    return ChannelAffinity(
        scores, profile.best_channel, profile.messages_counted, profile.engagements_counted, profile.computed_at
    )
