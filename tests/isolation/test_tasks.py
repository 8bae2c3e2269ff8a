"""Every Celery task of the project, run for tenant A: tenant B's rows stay as they were.

``TASKS`` says how to call each task the app registers: with A's own objects (the task does its
work, so a missing tenant filter would reach B's rows too) and, for tasks that take object ids,
with B's ids under A's tenant (the task must find nothing and do nothing). A beat tick that takes
no tenant is called as the beat calls it, and the tasks it queues must each name a tenant first.
Each call runs in a savepoint, in-process, with its on-commit callbacks, while the tasks it queues
are recorded instead of sent. A task the table does not know fails the test: a new task is
covered from the day it lands.

Both ways: with row-level security as in production (the app's role is no superuser), and with
the database wall down, where only the tasks' own tenant filters keep B out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from celery.app.task import Task
from django.db import transaction
from django.utils import timezone

from analytics.models import Experiment
from audiences.models import AudienceDestination
from campaigns.models import Campaign, CampaignRun, Delivery
from contacts.models import ConsentRecord, ConsentSource, ConsentStatus, Contact, Event
from journeys.models import Journey
from journeys.services import journey_create, journey_start
from segmentor.celery import app
from segments.models import SegmentTransition
from tenants.audit import Actor
from tenants.context import tenant_context
from tests.conftest import World
from tests.isolation.guard import (
    WALLS,
    cross_tenant_references,
    fingerprint_changes,
    table_writes,
    tenant_fingerprint,
    walls,
    written_since,
)
from tests.isolation.references import project_modules
from tests.isolation.scene import Scene, build_scene, queue_import

pytestmark = pytest.mark.django_db

Args = Callable[[Scene], tuple[Any, ...]]


@dataclass(frozen=True)
class TaskCall:
    """How to call a tenant task: ``args(scene)`` after the tenant id, naming the scene's objects.

    ``own`` runs it on A's objects; with ``names_objects`` it also runs with B's objects (and A's id).
    """

    args: Args = lambda s: ()
    names_objects: bool = False


FAN_OUT = "fan out"  # a beat tick: no tenant; queues one task per tenant
PLATFORM = "platform"  # no tenant, acts on every tenant by design (with the reason below)


def ids(key: str) -> Args:
    return lambda s: (s[key],)


def id_list(key: str) -> Args:
    return lambda s: ([s[key]],)


TENANT_ONLY = TaskCall()
TASKS: dict[str, TaskCall | str] = {
    "analytics.experiments.decide_due_experiments": FAN_OUT,
    "analytics.experiments.decide_experiment": TaskCall(ids("experiment_id"), names_objects=True),
    "analytics.tasks.channel_profiles_recompute": TENANT_ONLY,
    "analytics.tasks.channel_profiles_recompute_all": FAN_OUT,
    "analytics.tasks.attribute": TaskCall(id_list("event_id"), names_objects=True),
    "analytics.tasks.send_time_recompute": TENANT_ONLY,
    "analytics.tasks.send_time_recompute_all": FAN_OUT,
    "analytics.tasks.stats_refresh": TENANT_ONLY,
    "analytics.tasks.stats_refresh_all": FAN_OUT,
    "analytics.tasks.value_refresh": TENANT_ONLY,
    "analytics.tasks.value_refresh_viewed": FAN_OUT,
    "audiences.tasks.close_abandoned_downloads": TENANT_ONLY,
    "audiences.tasks.close_abandoned_downloads_all": FAN_OUT,
    "audiences.tasks.push_export": TaskCall(ids("export_id"), names_objects=True),
    "audiences.tasks.run_destination": TaskCall(ids("destination_id"), names_objects=True),
    "campaigns.scheduling.resume_stalled_runs": TENANT_ONLY,
    "campaigns.scheduling.resume_stalled_runs_all": FAN_OUT,
    "campaigns.scheduling.start_scheduled_run": TaskCall(ids("campaign_id"), names_objects=True),
    "campaigns.tasks.send_run": TaskCall(ids("run_id"), names_objects=True),
    "contacts.importer.run_import": TaskCall(ids("queued_import_id"), names_objects=True),
    "contacts.tasks.apply_event_backlog": TENANT_ONLY,
    "contacts.tasks.apply_event_backlog_all": FAN_OUT,
    "contacts.tasks.apply_retention": TENANT_ONLY,
    "contacts.tasks.apply_retention_all": FAN_OUT,
    "contacts.tasks.retry_announcements": TENANT_ONLY,
    "contacts.tasks.retry_announcements_all": FAN_OUT,
    "contacts.tasks.send_consent_confirmation": TaskCall(ids("consent_record_id"), names_objects=True),
    "journeys.tasks.advance": TENANT_ONLY,
    "journeys.tasks.anniversaries": TENANT_ONLY,
    "journeys.tasks.anniversaries_all": FAN_OUT,
    "journeys.tasks.on_contacts_changed": TaskCall(id_list("contact_id"), names_objects=True),
    "journeys.tasks.on_events": TaskCall(id_list("event_id"), names_objects=True),
    "journeys.tasks.on_segment_changes": TaskCall(
        lambda s: ([s["segment_id"]], s["transition_at"]), names_objects=True
    ),
    "journeys.tasks.on_stage_changes": TaskCall(lambda s: ([[s["contact_id"], "lead"]],), names_objects=True),
    "journeys.tasks.post_webhook_notices": TENANT_ONLY,
    "journeys.tasks.tick_all": FAN_OUT,
    "personalization.tasks.flush_impressions": TENANT_ONLY,
    "personalization.tasks.flush_impressions_all": FAN_OUT,
    "personalization.tasks.forget_stale_visitors": TENANT_ONLY,
    "personalization.tasks.forget_stale_visitors_all": FAN_OUT,
    "segments.tasks.evaluate_contacts": TaskCall(id_list("contact_id"), names_objects=True),
    "segments.tasks.recompute_rfm": TENANT_ONLY,
    "segments.tasks.recompute_rfm_all": FAN_OUT,
    "segments.tasks.record_sizes": TENANT_ONLY,
    "segments.tasks.record_sizes_all": FAN_OUT,
    "segments.tasks.refresh_due_segments": TENANT_ONLY,
    "segments.tasks.refresh_due_segments_all": FAN_OUT,
    "segments.tasks.refresh_event_summaries": TENANT_ONLY,
    "segments.tasks.refresh_event_summaries_all": FAN_OUT,
    "segments.tasks.refresh_segment": TaskCall(ids("segment_id"), names_objects=True),
    "tenants.tasks.expire_invitations": PLATFORM,
    "tenants.tasks.send_invitation": TaskCall(ids("invitation_id"), names_objects=True),
}
PLATFORM_REASONS = {
    "tenants.tasks.expire_invitations": "expires every tenant's stale invitations in one statement (reads none)",
}


def project_tasks() -> list[str]:
    app.loader.import_default_modules()  # autodiscovery registers the apps' tasks lazily
    roots = project_modules()
    return sorted(name for name in app.tasks if name.split(".")[0] in roots)


def unknown_tasks(names: list[str]) -> list[str]:
    return [name for name in names if name not in TASKS]


# --- the scene: work waiting for every task, in both tenants --------------------------------------
def task_scene(world: World, which: str) -> Scene:
    scene = build_scene(world, which)
    tenant, owner = scene.tenant, world.alice if which == "a" else world.charlie
    actor = Actor.for_user(owner)
    now = timezone.now()
    with tenant_context(tenant.pk):
        contact = Contact.objects.get(pk=scene["contact_id"])
        record = ConsentRecord.objects.create(
            tenant=tenant, contact=contact, channel="email", purpose="newsletter", status=ConsentStatus.PENDING,
            source=ConsentSource.FORM, occurred_at=now,
        )  # fmt: skip
        event = Event.objects.filter(contact=contact).first()
        assert event is not None
        experiment = Experiment.objects.create(
            tenant=tenant, campaign_id=scene["campaign_id"], control_id=scene["variant_id"], run_id=scene["run_id"],
            status=Experiment.Status.TESTING, arms=[scene["variant_id"], scene["second_variant_id"]],
            started_at=now - dt.timedelta(days=2), decide_at=now - dt.timedelta(hours=1),
        )  # fmt: skip
        # A run that is sending, with a delivery due and nobody working on it.
        CampaignRun.objects.filter(pk=scene["run_id"]).update(
            status=CampaignRun.Status.SENDING, started_at=now - dt.timedelta(hours=2)
        )
        Campaign.objects.filter(pk=scene["campaign_id"]).update(status=Campaign.Status.SENDING)
        Delivery.objects.create(
            tenant=tenant, run_id=scene["run_id"], contact_id=scene["shared_contact_id"], variant_id=scene["variant_id"]
        )
        # Live journeys for every trigger, so a trigger task has somewhere to enter contacts.
        wait = [{"key": "w", "kind": "wait", "config": {"duration": {"amount": 1, "unit": "days"}}}]
        for name, settings in {
            "stage": {"trigger": "stage_changed"},
            "event": {"trigger": "event", "trigger_event": "purchase"},
            "segment": {"trigger": "segment_entered", "trigger_segment_id": scene["segment_id"]},
            "consent": {"trigger": "event", "trigger_event": "signed_up", "exit_on_consent_withdrawn": "email"},
        }.items():
            journey = journey_create(
                tenant=tenant, actor=actor, data={"name": f"Live {name} {which}", **settings, "steps": wait}
            )
            journey_start(journey=journey, actor=actor)
        transition_at = now - dt.timedelta(minutes=5)
        SegmentTransition.objects.create(
            tenant=tenant, segment_id=scene["segment_id"], contact=contact, kind=SegmentTransition.Kind.ENTERED,
            occurred_at=transition_at,
        )  # fmt: skip
        assert Journey.objects.filter(status=Journey.Status.LIVE).count() >= 4
    # Audience pushes go nowhere: loopback is refused by the outbound guard before any connection.
    AudienceDestination.all_tenants.filter(pk=scene["destination_id"]).update(url="https://127.0.0.1:9/hook")
    queued = queue_import(world, which, [["email", "first_name"], [f"imported-{which}@example.com", "Imp"]])
    return Scene(tenant, {
        **scene.ids, "consent_record_id": record.pk, "event_id": event.pk, "experiment_id": experiment.pk,
        "queued_import_id": queued.pk, "transition_at": transition_at.isoformat(),
    })  # fmt: skip


# --- running a task ------------------------------------------------------------------------------
@dataclass
class Queued:
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]]


@pytest.fixture
def queued(monkeypatch) -> Queued:
    """Record the tasks a task queues instead of sending them to the broker."""
    record = Queued([])

    def apply_async(self: Task, args: Any = None, kwargs: Any = None, **options: Any) -> None:
        record.calls.append((self.name, tuple(args or ()), dict(kwargs or {})))

    monkeypatch.setattr(Task, "apply_async", apply_async)
    return record


def run_task(name: str, args: tuple[Any, ...], capture: Any) -> str:
    """Run a task's body in-process with its on-commit callbacks; return the error it raised, if any."""
    try:
        with capture(execute=True):
            app.tasks[name].run(*args)
    except Exception as error:  # noqa: BLE001 - what a task raises is the finding, reported by name
        return type(error).__name__
    return ""


@dataclass(frozen=True)
class Run:
    """One run of the table: the scenes, the rows before (every call is rolled back), the helpers."""

    a: Scene
    b: Scene
    before_a: dict[str, tuple[int, str]]
    before_b: dict[str, tuple[int, str]]
    queued: Queued
    capture: Any

    @classmethod
    def of(cls, a: Scene, b: Scene, queued: Queued, capture: Any) -> Run:
        return cls(a, b, tenant_fingerprint(a.tenant.pk), tenant_fingerprint(b.tenant.pk), queued, capture)


def call_problems(name: str, args: tuple[Any, ...], run: Run, *, foreign: bool) -> tuple[list[str], bool]:
    """Run ``name(*args)`` in a rolled-back savepoint; return what went wrong and whether A's rows changed."""
    a, b, queued, capture = run.a, run.b, run.queued, run.capture
    problems: list[str] = []
    queued.calls.clear()
    writes = table_writes()
    with transaction.atomic():
        error = run_task(name, args, capture)
        written = written_since(writes)  # only the tables the task wrote can hold a change
        changed_b = fingerprint_changes(run.before_b, tenant_fingerprint(b.tenant.pk, written))
        changed_a = fingerprint_changes(run.before_a, tenant_fingerprint(a.tenant.pk, written))
        crossed = cross_tenant_references(written)
        transaction.set_rollback(True)
    if changed_b:
        problems.append(f"changed tenant B's rows: {changed_b}")
    if crossed:
        problems.append(f"left rows pointing across tenants: {crossed}")
    others = [call for call in queued.calls if not call[1] or call[1][0] != a.tenant.pk]
    if others:
        problems.append(f"queued tasks for another tenant: {others}")
    if foreign and changed_a:
        problems.append(f"given B's ids, it still changed A's rows: {changed_a}")
    if error and not (foreign and error == "DoesNotExist"):
        problems.append(f"raised {error}")
    return problems, bool(changed_a)


def fan_out_problems(name: str, queued: Queued, capture: Any, tenant_ids: set[int]) -> list[str]:
    queued.calls.clear()
    with transaction.atomic():
        error = run_task(name, (), capture)
        transaction.set_rollback(True)
    problems = [f"raised {error}"] if error else []
    for task, args, _ in queued.calls:
        if not isinstance(TASKS.get(task), TaskCall) or not args or args[0] not in tenant_ids:
            problems.append(f"queued {task}{args}: not a tenant task with a tenant id first")
    return problems


# --- the tests -----------------------------------------------------------------------------------
def test_every_task_is_known():
    tasks = project_tasks()
    assert unknown_tasks(tasks) == [], "add these to TASKS (test_tasks.py): how to call them for tenant A"
    assert sorted(set(TASKS) - set(tasks)) == [], "these tasks are gone: remove them from TASKS"
    assert sorted(n for n, spec in TASKS.items() if spec == PLATFORM) == sorted(PLATFORM_REASONS)


def test_a_new_task_fails_the_table():
    assert "contacts.tasks.export_everything" in unknown_tasks([*project_tasks(), "contacts.tasks.export_everything"])


@pytest.mark.parametrize("wall", WALLS)
def test_tasks_for_tenant_a_leave_tenant_b_alone(
    world: World, wall: str, queued: Queued, django_capture_on_commit_callbacks: Any
):
    a, b = task_scene(world, "a"), task_scene(world, "b")
    tenant_ids = {a.tenant.pk, b.tenant.pk}
    problems: dict[str, list[str]] = {}
    worked = []
    run = Run.of(a, b, queued, django_capture_on_commit_callbacks)
    with walls(wall):
        for name in project_tasks():
            spec = TASKS.get(name)
            if spec is None:
                found = ["unknown: say in TASKS how to call it"]
            elif spec == FAN_OUT:
                found = fan_out_problems(name, queued, django_capture_on_commit_callbacks, tenant_ids)
            elif spec == PLATFORM:
                continue
            else:
                assert isinstance(spec, TaskCall)
                found, changed = call_problems(name, (a.tenant.pk, *spec.args(a)), run, foreign=False)
                worked += [name] if changed else []
                if spec.names_objects:
                    with_b, _ = call_problems(name, (a.tenant.pk, *spec.args(b)), run, foreign=True)
                    found += [f"with B's ids: {problem}" for problem in with_b]
            if found:
                problems[name] = found
    assert not problems, "\n".join(f"{name}: {found}" for name, found in problems.items())
    # The tasks did their work on A (so a missing filter would have reached B's rows too).
    assert len(worked) >= 10, worked


def test_a_task_that_writes_across_tenants_is_caught(
    world: World, queued: Queued, django_capture_on_commit_callbacks: Any
):
    """The checks mean something: a task body that forgets its tenant changes B's rows and is reported."""
    a, b = task_scene(world, "a"), task_scene(world, "b")

    @app.task(name="tests.isolation.leaky_rename")
    def leaky_rename(tenant_id: int) -> None:
        with tenant_context(tenant_id):
            Contact.all_tenants.update(city="Renamed")  # all_tenants: no tenant filter

    try:
        with walls("app"):
            run = Run.of(a, b, queued, django_capture_on_commit_callbacks)
            problems, _ = call_problems(leaky_rename.name, (a.tenant.pk,), run, foreign=False)
    finally:
        app.tasks.pop(leaky_rename.name)
    assert any("changed tenant B's rows" in p and "contacts_contact" in p for p in problems), problems
