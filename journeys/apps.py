from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class JourneysConfig(AppConfig):
    name = "journeys"

    def ready(self) -> None:
        from contacts.signals import contact_erasing, contacts_changed, events_recorded, lifecycle_changed
        from journeys.usage import journey_usages
        from segments.selectors import USAGE_FINDERS
        from segments.signals import membership_changed

        USAGE_FINDERS.append(journey_usages)
        contact_erasing.connect(_erasing, dispatch_uid="journeys.privacy.contact_erasing")

        events_recorded.connect(_events, dispatch_uid="journeys.events")
        lifecycle_changed.connect(_stages, dispatch_uid="journeys.stages")
        membership_changed.connect(_segments, dispatch_uid="journeys.segments")
        contacts_changed.connect(_contacts, dispatch_uid="journeys.consent_exits")
        from tenants.facts import watch

        watch(self.get_model("Journey"))


# The receivers run after the change committed; each queues a task only when a live journey of the
# tenant could care. The questions without arguments are facts of the tenant (tenants/facts.py):
# cached until a journey of the tenant is saved or deleted.
def _live(tenant_id: int, *conditions: Any, **filters: Any) -> bool:
    from journeys.models import Journey
    from tenants.context import tenant_context

    with tenant_context(tenant_id):
        live = Journey.objects.filter(*conditions, tenant_id=tenant_id, status=Journey.Status.LIVE, **filters)
        return live.exists()


def _has_live(tenant_id: int, fact: str, **filters: Any) -> bool:
    from tenants.facts import tenant_fact

    return tenant_fact(f"journeys.{fact}", tenant_id, lambda: _live(tenant_id, **filters))


def _events(sender: Any, *, tenant_id: int, event_ids: list[int], **kwargs: Any) -> None:
    from journeys.tasks import on_events
    from segmentor.celery import hand_over

    if _has_live(tenant_id, "live"):  # a goal, an event trigger or a wait for an event: any live journey may
        for start in range(0, len(event_ids), 5_000):
            hand_over(on_events, tenant_id, event_ids[start : start + 5_000])


def _stages(sender: Any, *, tenant_id: int, changes: list[list[Any]], **kwargs: Any) -> None:
    from journeys.models import Journey
    from journeys.tasks import on_stage_changes
    from segmentor.celery import hand_over

    if _has_live(tenant_id, "live_stage_trigger", trigger=Journey.Trigger.STAGE_CHANGED):
        for start in range(0, len(changes), 5_000):
            hand_over(on_stage_changes, tenant_id, changes[start : start + 5_000])


def _segments(sender: Any, *, tenant_id: int, segment_ids: list[int], occurred_at: Any, **kwargs: Any) -> None:
    from django.db.models import Q

    from journeys.tasks import on_segment_changes
    from segmentor.celery import hand_over

    if _live(tenant_id, Q(trigger_segment_id__in=segment_ids) | Q(exit_segment_id__in=segment_ids)):
        hand_over(on_segment_changes, tenant_id, segment_ids, occurred_at.isoformat())


def _contacts(sender: Any, *, tenant_id: int, contact_ids: list[int], **kwargs: Any) -> None:
    from journeys.tasks import on_contacts_changed
    from segmentor.celery import hand_over

    if _has_live(tenant_id, "live_consent_exit", exit_on_consent_withdrawn__gt=""):
        hand_over(on_contacts_changed, tenant_id, contact_ids)


def _erasing(sender: Any, *, tenant_id: int, contact_id: int, **kwargs: Any) -> None:
    """An erased contact leaves every journey at once (inside the erasure's transaction)."""
    from django.utils import timezone

    from journeys.models import Enrollment

    Enrollment.objects.filter(tenant_id=tenant_id, contact_id=contact_id, status=Enrollment.Status.ACTIVE).update(
        status=Enrollment.Status.EXITED, finished_at=timezone.now(), next_run_at=None, waiting_for="",
        exit_reason="contact erased",
    )  # fmt: skip
