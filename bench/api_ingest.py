"""Benchmark: event ingest and bulk contact upsert through the REST API, under gunicorn on PostgreSQL.

    .venv/bin/python bench/api_ingest.py                       # prints a Markdown table
    BENCH_EVENTS=100000 BENCH_CLIENTS=2 .venv/bin/python bench/api_ingest.py

Scenarios (each request is one batch of 1,000-5,000 rows; a few clients post at once):
1. `POST /api/v1/contacts/bulk/` of new contacts (loads about half of the pool);
2. `POST /api/v1/contacts/bulk/`, half new and half existing contacts (changed fields) → contacts/s;
3. `POST /api/v1/events/batch/`, events of the pool's ~50,000 external ids (and some anonymous
   visitors), each with a unique idempotency key → events/s;
4. the same event batches again: every row a duplicate (the idempotency check alone);
5. the same events with new keys, sent with `Prefer: respond-async`: the API stores them and answers
   202, a real Celery worker (solo pool, its own process) applies rollups, summaries and lifecycle.
   Two figures: the accept rate (until the last 202) and the end-to-end rate (until the worker has
   applied every batch, i.e. `EventBacklog` is empty).

Data comes from contacts.generator (the one generator of the demo and the benchmarks): every
first-class field, custom attributes, and events with realistic names, properties and revenue.
All request bodies are built before the clock starts, so the figures are the server's.

Uses bench/run.py's use_database(), env(), prepare() and start_server() on a fresh database of
its own, `segmentor_bench_api` (BENCH_DB to change it): prepare() drops the database it prepares,
and `segmentor_bench` holds the 1M-contact tenant of bench/build_tenant.py.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("BENCH_PORT", "8767")  # not run.py's port: another benchmark may be running
# Keep each process's database connection for the whole run, so the CPU meter sees every backend
# (a backend that exits takes its CPU time with it; the default recycles connections after 60 s).
os.environ.setdefault("CONN_MAX_AGE", "3600")

from bench import run as base

DB_NAME = os.environ.get("BENCH_DB", "segmentor_bench_api")
POOL = int(os.environ.get("BENCH_POOL", "50000"))  # contacts (external ids) in the pool
EVENTS = int(os.environ.get("BENCH_EVENTS", "300000"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "4"))
ASYNC = os.environ.get("BENCH_ASYNC", "1") == "1"  # 0: skip scenario 5 (e.g. to measure older code)
MIN_BATCH, MAX_BATCH = 1_000, 5_000
SEED = 20261128


def manage_shell(script: str) -> str:
    out = subprocess.run(
        [base.PYTHON, "manage.py", "shell", "-c", script],
        cwd=base.ROOT, env=base.env(), check=True, capture_output=True, text=True,
    )  # fmt: skip
    return out.stdout.strip()


def write_key() -> str:
    """prepare() gives a read key; the ingest endpoints need a write key of the same tenant."""
    script = (
        "from tenants.models import ApiKey, Membership, Tenant\n"
        "from tenants.services import api_key_create\n"
        "from tenants.context import tenant_context\n"
        "tenant = Tenant.objects.get(name='Bench Tenant')\n"
        "with tenant_context(tenant.id):\n"
        "    owner = Membership.objects.get(tenant=tenant, user__email='bench@example.com')\n"
        "    _, secret = api_key_create(tenant=tenant, name='bench write', scope=ApiKey.Scope.WRITE, acting=owner)\n"
        "print(secret)\n"
    )
    return manage_shell(script).splitlines()[-1]


CONTACT_TABLES = (
    "contacts_contact", "contacts_event", "contacts_eventdailyrollup", "contacts_lifecycletransition",
    "contacts_attributedefinition",
)  # fmt: skip


def vacuum_analyze() -> None:
    """What autovacuum does on a production database between bursts: statistics and free space.

    Here autovacuum lags behind (the machine is shared and each scenario rewrites much of the
    tables in seconds), and with statistics that still say "empty" the planner scans a whole
    tenant for lookups by id.
    """
    subprocess.run(["psql", base.DATABASE_URL, "-qc", f"VACUUM (ANALYZE) {', '.join(CONTACT_TABLES)}"], check=True)


def database_counts() -> dict[str, int]:
    script = (
        "import json\n"
        "from django.db.models import Sum\n"
        "from contacts.models import Contact, Event, EventDailyRollup\n"
        "from tenants.context import tenant_context\n"
        "from tenants.models import Tenant\n"
        "tenant = Tenant.objects.get(name='Bench Tenant')\n"
        "with tenant_context(tenant.id):\n"
        "    print(json.dumps({'contacts': Contact.objects.count(), 'events': Event.objects.count(),\n"
        "        'rollup_count': EventDailyRollup.objects.aggregate(n=Sum('count'))['n'] or 0}))\n"
    )
    return json.loads(manage_shell(script).splitlines()[-1])


# --- the data -------------------------------------------------------------------------------------
def generated_pool() -> list[Any]:
    os.environ.update(base.env())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "segmentor.settings")
    import django

    django.setup()
    from contacts.generator import TenantDataGenerator

    generator = TenantDataGenerator(contacts=POOL, events=max(EVENTS, POOL * 4), seed=SEED)
    return list(generator)


PROFILE_FIELDS = (
    "external_id", "email", "phone", "first_name", "last_name", "locale", "time_zone", "birth_date", "gender",
    "income_band", "education", "job_role", "country", "region", "city", "postal_code", "company", "industry",
    "company_size", "buying_stage", "interests", "values", "lifestyle", "attitudes",
)  # fmt: skip


def contact_row(contact: Any, *, changed: bool = False) -> dict[str, Any]:
    """The contact as an integration would send it: only the fields it knows."""
    row: dict[str, Any] = {}
    for name in PROFILE_FIELDS:
        value = getattr(contact, name)
        if value not in ("", None, []):
            row[name] = value.isoformat() if isinstance(value, dt.date) else value
    if contact.attributes:
        row["attributes"] = contact.attributes
    if changed:  # an update: the CRM learned something new
        row["city"] = random.choice(["Berlin", "Hamburg", "Paris", "Lyon", "Madrid", "Leeds", "Utrecht"])
        row["attributes"] = {**contact.attributes, "loyalty_points": random.randrange(5000)}
    return row


def event_rows(pool: list[Any]) -> list[dict[str, Any]]:
    """Every generated event of the pool, shuffled, each with a unique idempotency key."""
    rows: list[dict[str, Any]] = []
    for contact in pool:
        who = {"external_id": contact.external_id} if contact.external_id else {"anonymous_id": contact.anonymous_id}
        for seconds, name, revenue_cents, properties, source in contact.events:
            row = {
                "event": name,
                "occurred_at": dt.datetime.fromtimestamp(seconds, tz=dt.UTC).isoformat(),
                "properties": json.loads(properties) if properties else {},
                "source": source,
                **who,
            }
            if revenue_cents is not None:
                row["revenue"] = f"{revenue_cents / 100:.2f}"
                row["currency"] = "EUR"
            rows.append(row)
    random.shuffle(rows)
    rows = rows[:EVENTS]
    for index, row in enumerate(rows):
        row["idempotency_key"] = f"bench-{SEED}-{index:09d}"
    return rows


def batched(rows: list[Any], key: str, size: int = 0) -> list[tuple[int, bytes]]:
    """Split into batches of ``size`` rows (by default MIN_BATCH..MAX_BATCH), rendered to request bodies."""
    bodies, start = [], 0
    while start < len(rows):
        count = size or random.randint(MIN_BATCH, MAX_BATCH)
        chunk = rows[start : start + count]
        bodies.append((len(chunk), json.dumps({key: chunk}).encode()))
        start += count
    return bodies


def contact_batches(pool: list[Any]) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
    """(batches of new contacts, batches half new and half existing); no contact is in two batches of one."""
    identified = [c for c in pool if c.external_id or c.email]
    first, second = identified[: len(identified) // 2], identified[len(identified) // 2 :]
    mixed: list[dict[str, Any]] = []
    updates = random.sample(first, min(len(first), len(second)))
    for new, old in zip(second, updates, strict=False):
        mixed += [contact_row(new), contact_row(old, changed=True)]
    return batched([contact_row(c) for c in first], "contacts"), batched(mixed, "contacts")


# --- the load -------------------------------------------------------------------------------------
@dataclass
class Outcome:
    rows: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds: app (gunicorn, worker), database


# --- CPU accounting: the machine is shared, so wall-clock rates move with the load; CPU time spent
# per row by our own processes does not (much), and 2 cores / (CPU per row) is the idle-machine ceiling.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def app_pids(*parents: subprocess.Popen[bytes]) -> list[int]:
    """The server and worker processes and their children (gunicorn's workers)."""
    pids = [p.pid for p in parents]
    for parent in parents:
        children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children")
        if children.exists():
            pids += [int(pid) for pid in children.read_text().split()]
    return pids


def database_pids() -> list[int]:
    import psycopg

    with psycopg.connect(base.DATABASE_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return [int(pid) for (pid,) in rows]


class CpuMeter:
    """CPU seconds used between start() and stop() by the app's processes and their database backends."""

    def __init__(self, *processes: subprocess.Popen[bytes]) -> None:
        self.processes = processes

    def snapshot(self) -> dict[int, float]:
        return {pid: process_cpu(pid) for pid in {*app_pids(*self.processes), *database_pids()}}

    def start(self) -> None:
        self.before = self.snapshot()
        self.app_before = set(app_pids(*self.processes))

    def stop(self) -> dict[str, float]:
        after = self.snapshot()
        app = set(app_pids(*self.processes)) | self.app_before
        used = {pid: cpu - self.before.get(pid, 0.0) for pid, cpu in after.items()}
        return {
            "app": sum(v for pid, v in used.items() if pid in app),
            "database": sum(v for pid, v in used.items() if pid not in app),
        }


def post_all(path: str, secret: str, bodies: list[tuple[int, bytes]], extra: dict[str, str] | None = None) -> Outcome:
    """Post the bodies from CLIENTS keep-alive connections at once; each client takes the next body."""
    outcome = Outcome()
    lock = threading.Lock()
    work: Iterator[tuple[int, bytes]] = iter(bodies)
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json", **(extra or {})}

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", base.PORT, timeout=300)
        while True:
            with lock:
                item = next(work, None)
            if item is None:
                return
            rows, body = item
            started = time.perf_counter()
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                outcome.latencies.append(elapsed)
                if response.status not in (200, 202):
                    outcome.errors.append(f"{response.status}: {payload[:300]!r}")
                    continue
                outcome.rows += rows
                for name, count in json.loads(payload)["counts"].items():
                    outcome.counts[name] = outcome.counts.get(name, 0) + count

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outcome.seconds = time.perf_counter() - started
    return outcome


def start_worker() -> subprocess.Popen[bytes]:
    """A real Celery worker on the benchmark's broker and database, as production runs it (own process)."""
    celery = str(Path(base.PYTHON).parent / "celery")
    subprocess.run([celery, "-A", "segmentor", "purge", "-f"], cwd=base.ROOT, env=base.env(), check=True,
                   capture_output=True)  # fmt: skip
    return subprocess.Popen(
        [celery, "-A", "segmentor", "worker", "--pool=solo", "-l", "warning", "--without-heartbeat",
         "--without-gossip", "--without-mingle"],
        cwd=base.ROOT, env=base.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def backlog_size() -> int:
    """Event batches stored but not yet applied (all tenants: the platform flag passes row-level security)."""
    import psycopg

    with psycopg.connect(base.DATABASE_URL, autocommit=True) as conn:
        conn.execute("SELECT set_config('app.platform_access', 'on', false)")
        row = conn.execute("SELECT count(*) FROM contacts_eventbacklog").fetchone()
    return int(row[0]) if row else 0


def post_async(path: str, secret: str, bodies: list[tuple[int, bytes]], meter: CpuMeter) -> tuple[Outcome, Outcome]:
    """Post with `Prefer: respond-async`; return the outcome until accepted and until applied."""
    started = time.perf_counter()
    meter.start()
    accepted = post_all(path, secret, bodies, {"Prefer": "respond-async"})
    while backlog_size():
        time.sleep(0.05)
    applied = Outcome(accepted.rows, time.perf_counter() - started, accepted.latencies, accepted.counts)
    applied.cpu = meter.stop()
    return accepted, applied


def main() -> None:
    random.seed(SEED)
    base.use_database(DB_NAME)
    started = time.perf_counter()
    pool = generated_pool()
    new_batches, mixed_batches = contact_batches(pool)
    events = event_rows(pool)
    event_batches = batched(events, "events")
    for row in events:  # the same events once more, under new keys, for the asynchronous scenario
        row["idempotency_key"] = "async-" + row["idempotency_key"]
    async_batches = batched(events, "events")
    del pool, events
    print(f"generated the requests in {time.perf_counter() - started:.0f} s", file=sys.stderr)

    load_start = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    base.prepare()
    secret = write_key()
    server = base.start_server()
    worker = start_worker() if ASYNC else server  # the server stands in: one process list for the meter
    try:
        from contacts.generator import ATTRIBUTE_DEFINITIONS  # Django is set up by generated_pool()

        for key, label, kind in ATTRIBUTE_DEFINITIONS:  # defined through the API
            conn = http.client.HTTPConnection("127.0.0.1", base.PORT, timeout=30)
            body = json.dumps({"key": key, "label": label, "type": kind}).encode()
            conn.request("POST", "/api/v1/attributes/", body=body, headers={
                "Authorization": f"Bearer {secret}", "Content-Type": "application/json"})  # fmt: skip
            assert conn.getresponse().status == 201
        # Warm both workers up (imports, connections, caches) with requests that are not timed.
        warmup = [{"external_id": f"warmup-{i}", "email": f"warmup-{i}@example.com"} for i in range(400)]
        post_all("/api/v1/contacts/bulk/", secret, batched(warmup, "contacts", 100))
        events = [{"event": "page_view", "external_id": f"warmup-{i % 400}"} for i in range(4000)]
        post_all("/api/v1/events/batch/", secret, batched(events, "events", 1000))
        scenarios = [
            ("`POST /contacts/bulk/`: new contacts", "contacts", "/api/v1/contacts/bulk/", new_batches),
            ("`POST /contacts/bulk/`: half new, half existing", "contacts", "/api/v1/contacts/bulk/", mixed_batches),
            ("`POST /events/batch/`: new events, unique keys", "events", "/api/v1/events/batch/", event_batches),
            ("`POST /events/batch/`: the same batches again (duplicates)", "events", "/api/v1/events/batch/",
             event_batches),
        ]  # fmt: skip
        rows = []
        meter = CpuMeter(server, worker)
        for name, unit, path, bodies in scenarios:
            vacuum_analyze()
            meter.start()
            outcome = post_all(path, secret, bodies)
            outcome.cpu = meter.stop()
            rows.append((name, unit, len(bodies), outcome))
            print(f"{name}: {outcome.rows / outcome.seconds:,.0f} {unit}/s {outcome.counts}", file=sys.stderr)
        vacuum_analyze()
        if ASYNC:
            accepted, end_to_end = post_async("/api/v1/events/batch/", secret, async_batches, meter)
            rows.append(("`POST /events/batch/` + `Prefer: respond-async`: accepted (202)", "events",
                         len(async_batches), accepted))  # fmt: skip
            rows.append(("… and applied by the worker (end to end)", "events", len(async_batches), end_to_end))
            print(f"async: accepted {accepted.rows / accepted.seconds:,.0f}/s, applied end to end "
                  f"{end_to_end.rows / end_to_end.seconds:,.0f}/s {accepted.counts}", file=sys.stderr)  # fmt: skip
    finally:
        for process in (server, worker):
            process.terminate()
        for process in (server, worker):
            process.wait(30)
    load_end = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    counts = database_counts()

    print(f"\n### {time.strftime('%Y-%m-%d')} · {platform.node()} · {os.cpu_count()} cores · API ingest")
    print(
        f"gunicorn {base.WORKERS} sync workers, {CLIENTS} concurrent clients, batches of {MIN_BATCH:,}-"
        f"{MAX_BATCH:,} rows, pool of {POOL:,} contacts, PostgreSQL database `{DB_NAME}`, "
        "`VACUUM (ANALYZE)` before each scenario; a Celery worker (solo pool) for the asynchronous one; "
        f"load average (1/5/15 min) at the start {load_start}, at the end {load_end}\n"
    )
    print(
        "| scenario | batches | rows | rows/s | p50 ms/batch | p99 ms/batch | CPU µs/row app + db | "
        "rows/s ceiling (2 idle cores) | results | errors |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for name, unit, batches, o in rows:
        q = statistics.quantiles(o.latencies, n=100) if len(o.latencies) > 1 else o.latencies * 99
        results = ", ".join(f"{k} {v:,}" for k, v in sorted(o.counts.items()) if v)
        app, db = (o.cpu.get(k, 0.0) * 1e6 / max(o.rows, 1) for k in ("app", "database"))
        cpu, ceiling = (f"{app:,.0f} + {db:,.0f}", f"{2e6 / (app + db):,.0f}") if o.cpu else ("–", "–")
        print(
            f"| {name} | {batches} | {o.rows:,} | **{o.rows / o.seconds:,.0f} {unit}/s** | {q[49]:,.0f} | "
            f"{q[98]:,.0f} | {cpu} | {ceiling} | {results} | {len(o.errors)} |"
        )
    print(f"\nDatabase afterwards: {counts['contacts']:,} contacts, {counts['events']:,} events, "
          f"rollups counting {counts['rollup_count']:,} events.")  # fmt: skip
    for _, _, _, o in rows:
        for error in o.errors[:3]:
            print(f"- error: {error}")
    if counts["events"] != counts["rollup_count"]:
        print("- **the rollups do not add up to the events**")


if __name__ == "__main__":
    main()
