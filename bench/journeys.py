"""Benchmark: the journey engine with real Celery workers on PostgreSQL and Redis.

    .venv/bin/python bench/journeys.py                  # prints a Markdown table for bench/RESULTS.md
    BENCH_ENROLLMENTS=20000 .venv/bin/python bench/journeys.py

1. **A tick**: 100,000 enrollments are due at once at a wait that has passed; behind it a branch on
   a segment rule (country = DE) leads to one of two further waits. Two Celery workers (solo pool,
   processes of their own) walk them: each enrollment leaves the wait, is evaluated by the branch,
   and lands at the next wait. Measured from the first task queued until none is due.
2. **An event moves a waiting contact on**: contacts wait at a "wait for an event" step; an event is
   ingested (as the API does, rollups applied in the request) and the clock runs until the
   enrollment has left the step — through the event signal, the worker's trigger task and the
   engine's walk. 20 contacts, one at a time.

Runs on a fresh database of its own, `segmentor_bench_journeys` (BENCH_DB to change it), through
bench/run.py's prepare().
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import run as base

DB_NAME = os.environ.get("BENCH_DB", "segmentor_bench_journeys")
ENROLLMENTS = int(os.environ.get("BENCH_ENROLLMENTS", "100000"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
EVENT_TRIALS = int(os.environ.get("BENCH_EVENT_TRIALS", "20"))


def start_workers() -> list[subprocess.Popen[bytes]]:
    command = [base.PYTHON, "-m", "celery", "-A", "segmentor", "worker", "--pool", "solo", "--loglevel", "WARNING"]
    return [
        subprocess.Popen([*command, "-n", f"bench-journeys-{n}@%h"], cwd=base.ROOT, env=base.env())
        for n in range(WORKERS)
    ]


def main() -> None:
    base.use_database(DB_NAME)
    base.prepare()
    os.environ.update(base.env())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "segmentor.settings")
    import django

    django.setup()
    from django.db import connection, transaction

    from contacts.bulk_sql import bulk_insert_rows
    from contacts.ingest import events_ingest
    from contacts.models import Contact
    from journeys.models import Enrollment, Step
    from journeys.services import journey_create, journey_start
    from journeys.tasks import advance
    from tenants.audit import Actor
    from tenants.context import tenant_context
    from tenants.models import Tenant

    actor = Actor.system("bench")
    tenant = Tenant.objects.get(name="Bench Tenant")
    workers = start_workers()
    try:
        with tenant_context(tenant.pk):
            now = dt.datetime.now(dt.UTC)
            with transaction.atomic():
                rows = [
                    {"email": f"c{n}@bench.example", "country": "DE" if n % 3 == 0 else "FR"}
                    for n in range(ENROLLMENTS)
                ]
                bulk_insert_rows(
                    Contact, rows, fixed={"tenant_id": tenant.pk, "created_at": now, "updated_at": now}, returning=()
                )
            contact_ids = list(Contact.objects.filter(tenant=tenant).order_by("pk").values_list("pk", flat=True))

            def wait(key: str, days: int, following: str | None = None) -> dict:
                return {"key": key, "kind": "wait", "config": {"duration": {"amount": days, "unit": "days"}},
                        "exits": {"next": following}}  # fmt: skip

            rules = {"all": [{"type": "field", "field": "country", "op": "eq", "value": "DE"}]}
            branch = {"key": "s2", "kind": "branch", "config": {"rules": rules}, "exits": {"yes": "s3", "no": "s4"}}
            steps = [wait("s1", 1, "s2"), branch, wait("s3", 2), wait("s4", 3)]
            data = {"name": "Bench tick", "trigger": "event", "trigger_event": "bench", "steps": steps}
            journey = journey_create(tenant=tenant, actor=actor, data=data)
            journey = journey_start(journey=journey, actor=actor)
            first = Step.objects.get(version=journey.live_version, key="s1")
            long_ago = now - dt.timedelta(days=2)
            with transaction.atomic():
                bulk_insert_rows(
                    Enrollment, [{"contact_id": pk} for pk in contact_ids],
                    fixed={"tenant_id": tenant.pk, "journey_id": journey.pk, "version_id": journey.live_version_id,
                           "step_id": first.pk, "status": "active", "seq": 1, "step_entered_at": long_ago,
                           "next_run_at": long_ago, "entered_at": long_ago},
                    returning=(),
                )  # fmt: skip
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE journeys_enrollment; ANALYZE contacts_contact")
            due = Enrollment.objects.filter(tenant=tenant, status="active", next_run_at__lte=dt.datetime.now(dt.UTC))
            time.sleep(3)  # the workers are up
            started = time.monotonic()
            for _ in range(WORKERS):
                advance.delay(tenant.pk)
            while due.exists():
                time.sleep(0.05)
            tick_seconds = time.monotonic() - started
            landed = dict(
                Enrollment.objects.filter(tenant=tenant, journey=journey)
                .values_list("step__key")
                .annotate(n=django.db.models.Count("id"))
            )

            # 2. an event moves a waiting contact on
            config = {"event": "activated", "timeout": {"amount": 7, "unit": "days"}}
            steps = [
                {"key": "s1", "kind": "wait_event", "config": config, "exits": {"happened": "s2", "timed_out": None}},
                wait("s2", 1),
            ]
            data = {"name": "Bench wait", "trigger": "event", "trigger_event": "signup", "steps": steps}
            waiting = journey_create(tenant=tenant, actor=actor, data=data)
            journey_start(journey=waiting, actor=actor)
            latencies = []
            for n in range(EVENT_TRIALS):
                email = f"c{n}@bench.example"
                events_ingest(tenant=tenant, events=[{"event": "signup", "email": email}])
                enrollment = Enrollment.objects.filter(journey=waiting, contact__email=email)
                while not enrollment.filter(waiting_for="activated").exists():
                    time.sleep(0.01)
                sent = time.monotonic()
                events_ingest(tenant=tenant, events=[{"event": "activated", "email": email}])
                while not enrollment.filter(step__key="s2").exists():
                    time.sleep(0.01)
                latencies.append(time.monotonic() - sent)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)

    print(f"Journeys on {platform.node()} ({os.cpu_count()} cores), {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; "
          f"{WORKERS} Celery workers (solo pool), PostgreSQL and Redis.\n")  # fmt: skip
    print("| scenario | figure | goal | met |")
    print("|---|---:|---:|:---:|")
    rate = ENROLLMENTS / tick_seconds
    print(f"| {ENROLLMENTS:,} due enrollments leave a wait, pass a branch, land at the next wait | "
          f"{tick_seconds:.1f} s ({rate:,.0f}/s) | < 20 s | {'yes' if tick_seconds < 20 else 'no'} |")  # fmt: skip
    median, worst = statistics.median(latencies), max(latencies)
    print(f"| an event moves its waiting contact on (median / max of {EVENT_TRIALS}) | "
          f"{median:.2f} / {worst:.2f} s | < 5 s | {'yes' if worst < 5 else 'no'} |")  # fmt: skip
    print(f"\nWhere the tick left them: {landed}")


if __name__ == "__main__":
    main()
