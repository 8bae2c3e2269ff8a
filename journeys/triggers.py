"""What starts, wakes and ends enrollments outside the engine's tick: events, segment entries and
exits, lifecycle changes, consent changes, and dates coming round.

Each function takes what a signal announced (ids), finds the live journeys it concerns (a few per
tenant) and acts on the contacts in bulk. They run in Celery tasks (journeys/tasks.py), seconds
after the change committed.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence

from django.db.models import Max
from django.utils import timezone

from contacts.models import Contact, Event
from journeys.engine import enroll, withdrawn_contacts
from journeys.models import Enrollment, Journey
from segments.compiler import event_property_filter
from segments.models import SegmentTransition
from tenants.models import Tenant

CHUNK = 5_000


def _live(tenant: Tenant, **filters: object) -> list[Journey]:
    return list(
        Journey.objects.filter(tenant=tenant, status=Journey.Status.LIVE, live_version__isnull=False, **filters)
    )


def on_events(*, tenant: Tenant, event_ids: Sequence[int], now: dt.datetime | None = None) -> dict[str, int]:
    """Convert contacts that reached a goal, wake those waiting for these events, enter event triggers."""
    now = now or timezone.now()
    events = Event.objects.filter(tenant=tenant, pk__in=list(event_ids))
    latest: dict[tuple[int, str], dt.datetime] = {
        (contact_id, name): at
        for contact_id, name, at in events.values_list("contact_id", "name").annotate(at=Max("occurred_at")).order_by()
    }
    if not latest:
        return {"converted": 0, "woken": 0, "entered": 0}
    names = sorted({name for _, name in latest})
    converted = woken = entered = 0
    active = Enrollment.objects.filter(tenant=tenant, status=Enrollment.Status.ACTIVE)
    for journey in _live(tenant, goal_event__in=names):
        for (contact_id, name), at in latest.items():
            if name == journey.goal_event:
                converted += active.filter(journey=journey, contact_id=contact_id, entered_at__lte=at).update(
                    status=Enrollment.Status.CONVERTED, finished_at=now, next_run_at=None, waiting_for="",
                    exit_reason=f"reached the goal: {name}",
                )  # fmt: skip
    # Waiting for one of these events: due now; the engine checks the step's filters.
    by_name: dict[str, list[int]] = defaultdict(list)
    for contact_id, name in latest:
        by_name[name].append(contact_id)
    for name, contact_ids in by_name.items():
        woken += active.filter(waiting_for=name, contact_id__in=contact_ids).update(next_run_at=now, waiting_for="")
    for journey in _live(tenant, trigger=Journey.Trigger.EVENT, trigger_event__in=names):
        matching = events.filter(name=journey.trigger_event).filter(event_property_filter(journey.trigger_filters))
        first: dict[int, str] = {}
        for event_id, contact_id in matching.values_list("pk", "contact_id").order_by("pk"):
            first.setdefault(contact_id, f"event {event_id}")
        entered += len(enroll(journey=journey, contact_ids=first, now=now, details=first, occurrence=True))
    if woken:
        _kick(tenant.pk)
    return {"converted": converted, "woken": woken, "entered": entered}


def on_segment_changes(*, tenant: Tenant, segment_ids: Sequence[int], occurred_at: dt.datetime) -> dict[str, int]:
    """Enter the contacts that entered a trigger segment; end the enrollments of those who left an exit segment."""
    entered = exited = 0
    transitions = SegmentTransition.objects.filter(
        tenant=tenant, segment_id__in=list(segment_ids), occurred_at=occurred_at
    )
    for journey in _live(tenant, trigger=Journey.Trigger.SEGMENT_ENTERED, trigger_segment_id__in=list(segment_ids)):
        contact_ids = list(
            transitions.filter(segment_id=journey.trigger_segment_id, kind=SegmentTransition.Kind.ENTERED)
            .order_by("contact_id")
            .values_list("contact_id", flat=True)
        )
        for start in range(0, len(contact_ids), CHUNK):
            chunk = contact_ids[start : start + CHUNK]
            detail = f"entered segment {journey.trigger_segment_id}"
            entered += len(enroll(journey=journey, contact_ids=chunk, now=occurred_at, detail=detail))
    for journey in _live(tenant, exit_segment_id__in=list(segment_ids)):
        leavers = transitions.filter(segment_id=journey.exit_segment_id, kind=SegmentTransition.Kind.EXITED)
        exited += Enrollment.objects.filter(
            tenant=tenant, journey=journey, status=Enrollment.Status.ACTIVE,
            contact_id__in=leavers.values("contact_id"),
        ).update(
            status=Enrollment.Status.EXITED, finished_at=timezone.now(), next_run_at=None, waiting_for="",
            exit_reason="left the exit segment",
        )  # fmt: skip
    return {"entered": entered, "exited": exited}


def on_stage_changes(*, tenant: Tenant, changes: Sequence[tuple[int, str]]) -> int:
    """Enter the contacts whose lifecycle stage changed to a journey's trigger stage (or, blank, to any)."""
    if not changes:
        return 0
    entered = 0
    now = timezone.now()
    for journey in _live(tenant, trigger=Journey.Trigger.STAGE_CHANGED):
        ids = [contact_id for contact_id, stage in changes if journey.trigger_stage in ("", stage)]
        if ids:
            detail = f"stage changed to {journey.trigger_stage or 'a new stage'}"
            entered += len(enroll(journey=journey, contact_ids=ids, now=now, detail=detail))
    return entered


def on_contacts_changed(*, tenant: Tenant, contact_ids: Sequence[int]) -> int:
    """End the enrollments of contacts who withdrew the consent a journey's exit rule names."""
    exited = 0
    for journey in _live(tenant, exit_on_consent_withdrawn__gt=""):
        enrolled = list(
            Enrollment.objects.filter(
                tenant=tenant, journey=journey, status=Enrollment.Status.ACTIVE, contact_id__in=list(contact_ids)
            ).values_list("contact_id", flat=True)
        )
        gone = withdrawn_contacts(journey, enrolled) if enrolled else set()
        if gone:
            exited += Enrollment.objects.filter(
                tenant=tenant, journey=journey, status=Enrollment.Status.ACTIVE, contact_id__in=sorted(gone)
            ).update(
                status=Enrollment.Status.EXITED, finished_at=timezone.now(), next_run_at=None, waiting_for="",
                exit_reason=f"withdrew {journey.exit_on_consent_withdrawn} consent",
            )  # fmt: skip
    return exited


def enter_anniversaries(*, tenant: Tenant, now: dt.datetime | None = None) -> int:
    """Enter contacts whose date field (birthday, renewal) comes round today (UTC), once per day and journey."""
    now = now or timezone.now()
    today = now.astimezone(dt.UTC).date()
    entered = 0
    for journey in _live(tenant, trigger=Journey.Trigger.DATE_ATTRIBUTE):
        contacts = Contact.objects.filter(tenant=tenant, erased_at__isnull=True)
        field = journey.trigger_date_field
        if field.startswith("attributes."):
            key = field.removeprefix("attributes.")
            contacts = contacts.filter(**{f"attributes__{key}__endswith": f"-{today:%m-%d}"})
        else:
            contacts = contacts.filter(**{f"{field}__month": today.month, f"{field}__day": today.day})
        ids = list(contacts.order_by("pk").values_list("pk", flat=True))
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            detail = f"{field} on {today:%Y-%m-%d}"
            entered += len(enroll(journey=journey, contact_ids=chunk, now=now, detail=detail, occurrence=True))
    return entered


def _kick(tenant_id: int) -> None:
    from journeys.tasks import advance

    advance.delay(tenant_id)
