"""The journey engine: enter contacts, and walk due enrollments through their steps in batches.

A batch is claimed with ``SELECT … FOR UPDATE SKIP LOCKED`` (due, active, of a live journey) and
walked in one transaction: each enrollment runs its current step and, while the step lets it go
on at once (a send, a branch, an elapsed wait), the next ones, until it must wait or its path
ends. Leaving a step writes its history row, whose (enrollment, step number) is unique, and the
enrollment's new position — all in the same commit as the step's effects (deliveries, webhook
notices), so a doubled or retried tick finds the work done and never sends twice.

Steps of a kind are run together for the whole batch: one query evaluates a branch for a
thousand contacts, one run of the step's hidden campaign holds the batch's deliveries.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import zoneinfo
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from campaigns.sending import recipient_zone, run_add_contacts
from contacts.bulk_sql import bulk_insert_rows, bulk_update_rows
from contacts.models import ConsentState, ConsentStatus, Contact, Event
from journeys.models import Enrollment, EnrollmentStep, Journey, JourneyVersion, Step, StepKind, WebhookNotice
from journeys.validation import duration
from segments.compiler import Context, event_property_filter, matching_contacts
from segments.models import SegmentMember
from segments.rules import Registry
from tenants.models import Tenant

logger = logging.getLogger(__name__)

BATCH_SIZE = 1000
HASH_MULTIPLIER = 2654435761  # Knuth's multiplicative hash: splits spread evenly over the 0-9,999 buckets


# --- entering --------------------------------------------------------------------------------------
def enroll(
    *, journey: Journey, contact_ids: Iterable[int], now: dt.datetime | None = None,
    details: Mapping[int, str] | None = None, detail: str = "", occurrence: bool = False,
) -> list[int]:  # fmt: skip
    """Enter contacts the trigger picked, as the entry rules allow; return the ids of those who entered.

    ``detail`` (or per contact ``details``) says what triggered it; with ``occurrence`` it names
    one occurrence (an event, a date) that enters a contact once at most, so a repeated trigger
    task is harmless. Locks the journey row, so concurrent triggers of one journey take turns and
    the rules (once ever, cooldown, daily cap) hold exactly.
    """
    now = now or timezone.now()
    wanted = sorted({int(pk) for pk in contact_ids})
    details = {pk: (details or {}).get(pk, detail)[:200] for pk in wanted}
    if not wanted:
        return []
    with transaction.atomic():
        journey = Journey.objects.select_for_update().get(pk=journey.pk)
        version = JourneyVersion.objects.filter(tenant=journey.tenant_id, pk=journey.live_version_id).first()
        if journey.status != Journey.Status.LIVE or version is None:
            return []
        tenant_id = journey.tenant_id
        ids = set(
            Contact.objects.filter(tenant=tenant_id, pk__in=wanted, erased_at__isnull=True).values_list("pk", flat=True)
        )
        before = Enrollment.objects.filter(tenant=tenant_id, journey=journey, contact_id__in=sorted(ids))
        if journey.entry == Journey.Entry.ONCE:
            blocked = before
        else:
            cooldown = now - dt.timedelta(days=journey.cooldown_days)
            blocked = before.filter(Q(status=Enrollment.Status.ACTIVE) | Q(entered_at__gt=cooldown))
        ids -= set(blocked.values_list("contact_id", flat=True))
        if occurrence:
            seen = before.filter(trigger_detail__in=sorted(set(details.values())))
            ids -= {pk for pk, text in seen.values_list("contact_id", "trigger_detail") if details.get(pk) == text}
        if journey.entry_segment_id is not None and ids:
            ids &= set(
                SegmentMember.objects.filter(
                    tenant=tenant_id, segment_id=journey.entry_segment_id, contact_id__in=sorted(ids)
                ).values_list("contact_id", flat=True)
            )
        chosen = sorted(ids)
        if journey.daily_cap:
            day = dt.datetime.combine(now.astimezone(dt.UTC).date(), dt.time.min, tzinfo=dt.UTC)
            today = Enrollment.objects.filter(tenant=tenant_id, journey=journey, entered_at__gte=day).count()
            chosen = chosen[: max(journey.daily_cap - today, 0)]
        start = Step.objects.filter(tenant=tenant_id, version=version, key=version.start_key).first()
        if not chosen or start is None:
            return []
        bulk_insert_rows(
            Enrollment,
            [{"contact_id": pk, "trigger_detail": details[pk]} for pk in chosen],
            fixed={
                "tenant_id": tenant_id, "journey_id": journey.pk, "version_id": version.pk, "step_id": start.pk,
                "status": Enrollment.Status.ACTIVE, "seq": 1, "step_entered_at": now, "next_run_at": now,
                "entered_at": now,
            },
            returning=(),
        )  # fmt: skip
        transaction.on_commit(lambda: _kick(tenant_id))
    logger.info("journey.enrolled", extra={"tenant_id": tenant_id, "journey_id": journey.pk, "count": len(chosen)})
    return chosen


def _kick(tenant_id: int) -> None:
    from journeys.tasks import advance

    advance.delay(tenant_id)


# --- walking ---------------------------------------------------------------------------------------
@dataclass
class Walk:
    """An enrollment being walked in this batch."""

    id: int
    journey_id: int
    contact_id: int
    step: Step
    seq: int
    step_entered_at: dt.datetime
    entered_at: dt.datetime
    # Set when the walk stops for this batch:
    next_run_at: dt.datetime | None = None
    waiting_for: str = ""
    status: str = Enrollment.Status.ACTIVE
    exit_reason: str = ""
    moved: bool = False


@dataclass(frozen=True)
class Outcome:
    """What a step decided for one enrollment: go on by ``exit``, or wait until ``until``."""

    exit: str | None = None
    until: dt.datetime | None = None
    waiting_for: str = ""
    detail: str = ""
    finish: str = ""  # a status: the walk ends here (an exit step)


@dataclass
class Batch:
    tenant: Tenant
    now: dt.datetime
    steps: dict[int, Step]
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # (step id) → walks that reached a send step, sent together at the end.
    sends: dict[int, list[Walk]] = dataclasses.field(default_factory=lambda: defaultdict(list))
    notices: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    registry: Registry | None = None
    # (version id, step key) → step: where each exit leads.
    by_key: dict[tuple[int, str], Step] = dataclasses.field(default_factory=dict)


def advance_due(*, tenant: Tenant, now: dt.datetime | None = None, max_batches: int | None = None) -> int:
    """Walk every due enrollment of the tenant, a batch at a time; return how many were walked."""
    total = batches = 0
    while max_batches is None or batches < max_batches:
        walked = advance_batch(tenant=tenant, now=now)
        if not walked:
            break
        total += walked
        batches += 1
    return total


def advance_batch(*, tenant: Tenant, now: dt.datetime | None = None, size: int = BATCH_SIZE) -> int:
    """Claim up to ``size`` due enrollments of live journeys and walk them; return how many."""
    now = now or timezone.now()
    with transaction.atomic():
        rows = list(
            Enrollment.objects.filter(
                tenant=tenant, status=Enrollment.Status.ACTIVE, next_run_at__lte=now,
                journey__status=Journey.Status.LIVE,
            )
            .order_by("next_run_at", "id")
            .select_for_update(skip_locked=True, of=("self",))
            .values_list("id", "journey_id", "contact_id", "step_id", "seq", "step_entered_at", "entered_at")[:size]
        )  # fmt: skip
        if not rows:
            return 0
        step_ids = {row[3] for row in rows}
        steps = {s.pk: s for s in Step.objects.filter(tenant=tenant, pk__in=step_ids).select_related("version")}
        batch = Batch(tenant=tenant, now=now, steps=steps)
        walks = []
        for pk, journey_id, contact_id, step_id, seq, step_entered_at, entered_at in rows:
            step = steps.get(step_id)
            walk = Walk(pk, journey_id, contact_id, step, seq, step_entered_at or now, entered_at)  # type: ignore[arg-type]
            if step is None:  # its step was deleted with its version: nothing left to do
                _finish(walk, Enrollment.Status.EXITED, "step no longer exists")
            walks.append(walk)
        journeys = {j.pk: j for j in Journey.objects.filter(tenant=tenant, pk__in={w.journey_id for w in walks})}
        _check_goal_and_exits(batch, journeys, [w for w in walks if w.status == Enrollment.Status.ACTIVE])
        _load_version_steps(batch, walks)
        active = [w for w in walks if w.status == Enrollment.Status.ACTIVE]
        for _hop in range(len(batch.steps) + 1):
            if not active:
                break
            active = _hop_once(batch, active)
        _write(batch, walks)
    return len(rows)


def _load_version_steps(batch: Batch, walks: Sequence[Walk]) -> None:
    """Every step of the versions in the batch, so walks can go on without a query per hop."""
    versions = {w.step.version_id for w in walks if w.step is not None}
    for step in Step.objects.filter(tenant=batch.tenant, version_id__in=versions):
        batch.steps.setdefault(step.pk, step)
    batch.by_key = {(s.version_id, s.key): s for s in batch.steps.values()}


def _hop_once(batch: Batch, active: list[Walk]) -> list[Walk]:
    """Run each walk's current step (a kind at a time); return the walks that moved on and go on."""
    by_kind: dict[str, list[Walk]] = defaultdict(list)
    for walk in active:
        by_kind[walk.step.kind].append(walk)
    going_on: list[Walk] = []
    for kind, group in by_kind.items():
        outcomes = RUNNERS[kind](batch, group)
        for walk in group:
            outcome = outcomes[walk.id]
            if outcome.finish:
                _leave(batch, walk, "exit", outcome.detail)
                _finish(walk, outcome.finish, "")
            elif outcome.exit is None:
                walk.next_run_at, walk.waiting_for = outcome.until, outcome.waiting_for
            else:
                _leave(batch, walk, outcome.exit, outcome.detail)
                target = walk.step.exits.get(outcome.exit)
                following = batch.by_key.get((walk.step.version_id, target)) if target else None
                if following is None:
                    _finish(walk, Enrollment.Status.COMPLETED, "")
                    continue
                walk.step, walk.seq, walk.step_entered_at = following, walk.seq + 1, batch.now
                walk.moved = True
                going_on.append(walk)
    return going_on


def _leave(batch: Batch, walk: Walk, exit: str, detail: str) -> None:
    batch.history.append(
        {
            "enrollment_id": walk.id, "step_id": walk.step.pk, "seq": walk.seq, "entered_at": walk.step_entered_at,
            "left_at": batch.now, "outcome": exit, "detail": detail[:500], "delivery_id": None,
        }
    )  # fmt: skip
    if walk.step.kind == StepKind.SEND:
        batch.sends[walk.step.pk].append(walk)
    walk.moved = True


def _finish(walk: Walk, status: str, reason: str) -> None:
    walk.status, walk.exit_reason, walk.next_run_at, walk.waiting_for = status, reason, None, ""
    walk.moved = True


def _write(batch: Batch, walks: Sequence[Walk]) -> None:
    """Send, notify and record what the batch did: a statement per table."""
    deliveries: dict[tuple[int, int], int] = {}
    for step_id, sent in batch.sends.items():
        step = batch.steps[step_id]
        if step.campaign_id is None:
            continue
        made = run_add_contacts(campaign_id=step.campaign_id, contact_ids=[w.contact_id for w in sent], now=batch.now)
        for walk in sent:
            if walk.contact_id in made:
                deliveries[(walk.id, step_id)] = made[walk.contact_id]
    for row in batch.history:
        row["delivery_id"] = deliveries.get((row["enrollment_id"], row["step_id"]))
    bulk_insert_rows(EnrollmentStep, batch.history, fixed={"tenant_id": batch.tenant.pk}, returning=())
    if batch.notices:
        bulk_insert_rows(WebhookNotice, batch.notices, fixed={"tenant_id": batch.tenant.pk}, returning=())
        tenant_id = batch.tenant.pk
        transaction.on_commit(lambda: _notify(tenant_id))
    changes = []
    for walk in walks:
        values: dict[str, Any] = {"next_run_at": walk.next_run_at, "waiting_for": walk.waiting_for}
        if walk.moved:
            values.update(
                step_id=walk.step.pk if walk.step else None, seq=walk.seq, step_entered_at=walk.step_entered_at
            )
        if walk.status != Enrollment.Status.ACTIVE:
            values.update(status=walk.status, exit_reason=walk.exit_reason[:200], finished_at=batch.now)
        changes.append((walk.id, values))
    bulk_update_rows(batch.tenant, Enrollment, changes)


def _notify(tenant_id: int) -> None:
    from journeys.tasks import post_webhook_notices

    post_webhook_notices.delay(tenant_id)


# --- goal and exit rules -------------------------------------------------------------------------
def _check_goal_and_exits(batch: Batch, journeys: dict[int, Journey], walks: Sequence[Walk]) -> None:
    """Before any step runs: who reached the goal, left the exit segment or withdrew consent."""
    if not walks:
        return
    tenant_id = batch.tenant.pk
    goals = {j.goal_event for j in journeys.values() if j.goal_event}
    if goals:
        contact_ids = sorted({w.contact_id for w in walks})
        earliest = min(w.entered_at for w in walks)
        reached: dict[tuple[int, str], dt.datetime] = {
            (contact_id, name): at
            for contact_id, name, at in Event.objects.filter(
                tenant=tenant_id, contact_id__in=contact_ids, name__in=sorted(goals), occurred_at__gte=earliest
            )
            .values_list("contact_id", "name")
            .annotate(at=Max("occurred_at"))
            .order_by()
        }
        for walk in walks:
            goal = journeys[walk.journey_id].goal_event
            at = reached.get((walk.contact_id, goal)) if goal else None
            if at is not None and at >= walk.entered_at:
                _finish(walk, Enrollment.Status.CONVERTED, f"reached the goal: {goal}")
    for journey in journeys.values():
        mine = [w for w in walks if w.journey_id == journey.pk and w.status == Enrollment.Status.ACTIVE]
        if not mine:
            continue
        ids = sorted({w.contact_id for w in mine})
        if journey.exit_segment_id is not None:
            members = set(
                SegmentMember.objects.filter(
                    tenant=tenant_id, segment_id=journey.exit_segment_id, contact_id__in=ids
                ).values_list("contact_id", flat=True)
            )
            for walk in mine:
                if walk.contact_id not in members:
                    _finish(walk, Enrollment.Status.EXITED, "left the exit segment")
        if journey.exit_on_consent_withdrawn:
            withdrawn = withdrawn_contacts(journey, ids)
            for walk in mine:
                if walk.status == Enrollment.Status.ACTIVE and walk.contact_id in withdrawn:
                    _finish(walk, Enrollment.Status.EXITED, f"withdrew {journey.exit_on_consent_withdrawn} consent")


def withdrawn_contacts(journey: Journey, contact_ids: Sequence[int]) -> set[int]:
    return set(
        ConsentState.objects.filter(
            tenant=journey.tenant_id, contact_id__in=list(contact_ids), channel=journey.exit_on_consent_withdrawn,
            purpose=journey.purpose, status=ConsentStatus.WITHDRAWN,
        ).values_list("contact_id", flat=True)
    )  # fmt: skip


# --- the steps -------------------------------------------------------------------------------------
def _run_send(batch: Batch, walks: list[Walk]) -> dict[int, Outcome]:
    # The deliveries are written at the end of the batch, one run per step (``_write``); the
    # sender checks consent, caps and quiet hours again when it sends.
    return {w.id: Outcome(exit="next") for w in walks}


def _run_wait(batch: Batch, walks: list[Walk]) -> dict[int, Outcome]:
    outcomes = {}
    for walk in walks:
        until = walk.step_entered_at + (duration(walk.step.config.get("duration")) or dt.timedelta())
        outcomes[walk.id] = Outcome(exit="next") if until <= batch.now else Outcome(until=until)
    return outcomes


def next_weekday_time(after: dt.datetime, weekdays: Iterable[int], at: dt.time, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """The first moment at or after ``after`` that is one of ``weekdays`` at ``at`` on the clock of ``zone``."""
    local = after.astimezone(zone)
    days = set(weekdays)
    for offset in range(8):
        day = local.date() + dt.timedelta(days=offset)
        if day.weekday() in days:
            moment = dt.datetime.combine(day, at, tzinfo=zone)
            if moment >= after:
                return moment.astimezone(dt.UTC)
    return after  # no weekday given (the validator prevents it)


def _run_wait_until(batch: Batch, walks: list[Walk]) -> dict[int, Outcome]:
    zones = dict(
        Contact.objects.filter(tenant=batch.tenant, pk__in=[w.contact_id for w in walks]).values_list("pk", "time_zone")
    )
    outcomes = {}
    for walk in walks:
        config = walk.step.config
        at = dt.time.fromisoformat(config.get("time", "09:00"))
        zone = recipient_zone(zones.get(walk.contact_id, ""), batch.tenant)
        until = next_weekday_time(walk.step_entered_at, config.get("weekdays") or [], at, zone)
        outcomes[walk.id] = Outcome(exit="next") if until <= batch.now else Outcome(until=until)
    return outcomes


def _by_step(walks: list[Walk]) -> list[list[Walk]]:
    """The walks grouped by their step (a batch may hold several steps of a kind)."""
    groups: dict[int, list[Walk]] = defaultdict(list)
    for walk in walks:
        groups[walk.step.pk].append(walk)
    return list(groups.values())


def _run_wait_event(batch: Batch, walks: list[Walk]) -> dict[int, Outcome]:
    outcomes: dict[int, Outcome] = {}
    for group in _by_step(walks):
        config = group[0].step.config
        name = config.get("event", "")
        events = Event.objects.filter(
            tenant=batch.tenant, contact_id__in=sorted({w.contact_id for w in group}), name=name,
            occurred_at__gte=min(w.step_entered_at for w in group), occurred_at__lte=batch.now,
        ).filter(event_property_filter(config.get("filters") or []))  # fmt: skip
        latest = dict(events.values_list("contact_id").annotate(at=Max("occurred_at")).order_by())
        timeout = duration(config.get("timeout")) or dt.timedelta()
        for walk in group:
            happened = latest.get(walk.contact_id)
            deadline = walk.step_entered_at + timeout
            if happened is not None and happened >= walk.step_entered_at:
                outcomes[walk.id] = Outcome(exit="happened", detail=f"{name} at {happened:%Y-%m-%d %H:%M:%S}")
            elif deadline <= batch.now:
                outcomes[walk.id] = Outcome(exit="timed_out")
            else:
                outcomes[walk.id] = Outcome(until=deadline, waiting_for=name)
    return outcomes


def _run_branch(batch: Batch, walks: list[Walk]) -> dict[int, Outcome]:
    outcomes: dict[int, Outcome] = {}
    if batch.registry is None:
        batch.registry = Registry.for_tenant(batch.tenant)
    for group in _by_step(walks):
        ids = tuple(sorted({w.contact_id for w in group}))
        ctx = Context(tenant_id=batch.tenant.pk, attributes=batch.registry.attributes, now=batch.now, contact_ids=ids)
        matched = set(matching_contacts(group[0].step.config["rules"], ctx).values_list("pk", flat=True))
        for walk in group:
            outcomes[walk.id] = Outcome(exit="yes" if walk.contact_id in matched else "no")
    return outcomes


def split_path(enrollment_id: int, step_id: int, paths: Sequence[dict[str, Any]]) -> str:
    """The path of an enrollment at a split: a stable bucket of 10,000, cut by the paths' weights."""
    bucket = (enrollment_id * HASH_MULTIPLIER + step_id) % 10_000
    total = sum(int(p["weight"]) for p in paths)
    upper = 0
    for path in paths:
        upper += int(path["weight"])
        if bucket * total < upper * 10_000:
            return str(path["label"])
    return str(paths[-1]["label"])


def _run_split(batch: Batch, walks: list[Walk]) -> dict[int, Outcome]:
    return {
        w.id: Outcome(exit=(label := split_path(w.id, w.step.pk, w.step.config["paths"])), detail=f"path {label}")
        for w in walks
    }


def _run_update(batch: Batch, walks: list[Walk]) -> dict[int, Outcome]:
    from contacts.lifecycle import lifecycle_set
    from contacts.services import contact_update

    outcomes: dict[int, Outcome] = {}
    contacts = {c.pk: c for c in Contact.objects.filter(tenant=batch.tenant, pk__in=[w.contact_id for w in walks])}
    staged: dict[str, list[Contact]] = defaultdict(list)
    for walk in walks:
        contact = contacts.get(walk.contact_id)
        config = walk.step.config
        if contact is None or contact.erased_at is not None:
            outcomes[walk.id] = Outcome(exit="next", detail="contact erased: nothing changed")
            continue
        attributes = dict(config.get("set_attributes") or {})
        add = config.get("add_to_list")
        if add:
            current = contact.attributes.get(add["attribute"]) or []
            current = current if isinstance(current, list) else [current]
            attributes[add["attribute"]] = current + [v for v in add["values"] if v not in current]
        changed = []
        if attributes:
            contact.tenant = batch.tenant
            try:
                contact_update(contact=contact, data={"attributes": attributes})
                changed.append("attributes " + ", ".join(sorted(attributes)))
            except ValidationError as error:  # a value the attribute's type refuses: record it, go on
                logger.warning("journey.update_refused", extra={"tenant_id": batch.tenant.pk, "error": str(error)})
                changed.append(f"refused: {error}"[:200])
        if config.get("stage"):
            staged[config["stage"]].append(contact)
            changed.append(f"stage {config['stage']}")
        outcomes[walk.id] = Outcome(exit="next", detail="; ".join(changed))
    for stage, group in staged.items():
        lifecycle_set(tenant=batch.tenant, contacts=group, stage=stage, reason="journey")
    return outcomes


def _run_webhook(batch: Batch, walks: list[Walk]) -> dict[int, Outcome]:
    for walk in walks:
        batch.notices.append(
            {
                "enrollment_id": walk.id, "step_id": walk.step.pk, "seq": walk.seq, "url": walk.step.config["url"],
                "payload": {
                    "journey_id": walk.journey_id, "step": walk.step.key, "enrollment_id": walk.id,
                    "contact_id": walk.contact_id, "occurred_at": batch.now.isoformat(),
                },
                "status": WebhookNotice.Status.PENDING, "attempts": 0, "next_attempt_at": batch.now,
            }
        )  # fmt: skip
    return {w.id: Outcome(exit="next") for w in walks}


def _run_exit(batch: Batch, walks: list[Walk]) -> dict[int, Outcome]:
    return {w.id: Outcome(finish=Enrollment.Status.COMPLETED) for w in walks}


RUNNERS: dict[str, Any] = {
    StepKind.SEND: _run_send,
    StepKind.WAIT: _run_wait,
    StepKind.WAIT_UNTIL: _run_wait_until,
    StepKind.WAIT_EVENT: _run_wait_event,
    StepKind.BRANCH: _run_branch,
    StepKind.SPLIT: _run_split,
    StepKind.UPDATE: _run_update,
    StepKind.WEBHOOK: _run_webhook,
    StepKind.EXIT: _run_exit,
}
