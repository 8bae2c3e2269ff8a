"""Load test: 200 concurrent clients for 60 s against gunicorn on PostgreSQL and Redis (``make loadtest``).

The mix (bench/locustfile.py): integrations posting event batches, single events and contact
upserts and previewing segments by API key, and people clicking through the web UI's pages with a
session. Every request must succeed: the run fails on any error, and afterwards every event that
was answered 2xx must be in the database exactly once (counted by its idempotency keys' total).

    make loadtest                                    # prints a Markdown table for bench/RESULTS.md
    LOAD_USERS=200 LOAD_SECONDS=60 LOAD_WEB_WORKERS=4 .venv/bin/python bench/loadtest.py

It prepares a database of its own (``segmentor_bench_load``: dropped and recreated) with a tenant of
``LOAD_POOL`` contacts (20,000) and their events, three segments, and starts gunicorn, a Celery
worker (the real-time segment updates and rollups that ingest hands over) and locust, headless.
"""

from __future__ import annotations

import csv
import http.client
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("BENCH_PORT", "8771")
os.environ.setdefault("BENCH_WORKERS", os.environ.get("LOAD_WEB_WORKERS", "4"))

from bench import run as base
from bench.api_ingest import manage_shell, write_key

USERS = int(os.environ.get("LOAD_USERS", "200"))
SECONDS = int(os.environ.get("LOAD_SECONDS", "60"))
POOL = int(os.environ.get("LOAD_POOL", "20000"))
SPAWN_RATE = int(os.environ.get("LOAD_SPAWN_RATE", "50"))
SEGMENT_RULES = [
    {"all": [{"type": "field", "field": "country", "op": "in", "value": ["DE", "FR"]}]},
    {"all": [{"type": "event", "name": "purchase", "op": "at_least", "count": 1, "window": {"within_days": 30}}]},
    {"any": [{"type": "field", "field": "lifecycle_stage", "op": "eq", "value": "lead"},
             {"type": "field", "field": "city", "op": "eq", "value": "Berlin"}]},
]  # fmt: skip


def api(method: str, path: str, key: str, body: object | None = None) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", base.PORT, timeout=120)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    response = conn.getresponse()
    data = response.read()
    if response.status >= 300:
        raise RuntimeError(f"{method} {path}: {response.status} {data[:500]!r}")
    return json.loads(data) if data else {}


def seed(key: str) -> list[int]:
    """The contact pool and a month of events by API, then the segments; returns the segment ids."""
    rng = random.Random(20261201)
    countries = ["DE", "FR", "GB", "ES", "NL", "IT"]
    for start in range(0, POOL, 5000):
        rows = [
            {
                "external_id": f"load-{i}",
                "email": f"load-{i}@example.com",
                "country": rng.choice(countries),
                "city": rng.choice(["Berlin", "Paris", "Leeds", "Madrid"]),
            }
            for i in range(start, min(POOL, start + 5000))
        ]
        api("POST", "/api/v1/contacts/bulk/", key, {"contacts": rows})
    now = datetime.now(UTC)
    events = []
    for n in range(POOL * 2):
        name = rng.choice(["page_view", "page_view", "add_to_cart", "purchase"])
        row = {
            "event": name,
            "external_id": f"load-{rng.randrange(POOL)}",
            "occurred_at": (now - timedelta(minutes=rng.randrange(60 * 24 * 30))).isoformat(),
            "idempotency_key": f"seed-{n}",
        }
        if name == "purchase":
            row.update(revenue="42.00", currency="EUR")
        events.append(row)
    for start in range(0, len(events), 5000):
        api("POST", "/api/v1/events/batch/", key, {"events": events[start : start + 5000]})
    return [
        api("POST", "/api/v1/segments/", key, {"name": f"Load segment {n}", "rules": rules})["id"]
        for n, rules in enumerate(SEGMENT_RULES)
    ]


def session_and_slug() -> tuple[str, str]:
    """A logged-in session of the bench user (as the login form would leave it) and its workspace slug."""
    script = (
        "from django.test import Client\n"
        "from tenants.models import User, Tenant\n"
        "client = Client()\n"
        "client.force_login(User.objects.get(email='bench@example.com'))\n"
        "print(client.cookies['sessionid'].value, Tenant.objects.get(name='Bench Tenant').slug)\n"
    )
    session, slug = manage_shell(script).splitlines()[-1].split()
    return session, slug


def stored_keys() -> tuple[set[str], int]:
    """The idempotency keys of the tenant's events, and how many events carry a key that another one has."""
    script = (
        "from django.db.models import Count\n"
        "from contacts.models import Event\n"
        "from tenants.context import tenant_context\n"
        "from tenants.models import Tenant\n"
        "with tenant_context(Tenant.objects.get(name='Bench Tenant').id):\n"
        "    keys = Event.objects.values('idempotency_key').annotate(n=Count('id'))\n"
        "    print('\\n'.join('K ' + k['idempotency_key'] for k in keys))\n"
        "    print('D', sum(k['n'] - 1 for k in keys))\n"
    )
    lines = manage_shell(script).splitlines()
    return {line[2:] for line in lines if line.startswith("K ")}, int(lines[-1].split()[1])


def start_worker() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(Path(base.PYTHON).parent / "celery"), "-A", "segmentor", "worker", "-c", "1", "-l", "WARNING"],
        cwd=base.ROOT, env=base.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


CPU_GROUPS = {"gunicorn": "web (gunicorn)", "postgres": "PostgreSQL", "celery": "Celery worker",
              "locust": "load generator (locust)", "redis-server": "Redis"}  # fmt: skip


class CpuMeter(threading.Thread):
    """CPU seconds each kind of process spent while it runs: where the two cores went.

    Samples /proc every half second and keeps each process's last reading, so processes that end
    during the run (locust, a database connection) still count."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.first: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self.stop = threading.Event()
        self.baseline = True

    def sample(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            group = next((label for name, label in CPU_GROUPS.items() if name in command), "")
            if group:
                pid, cpu = int(entry.name), (int(fields[11]) + int(fields[12])) / tick
                self.first.setdefault(pid, cpu if self.baseline else 0.0)
                self.last[pid] = (group, cpu)
        self.baseline = False

    def run(self) -> None:
        while not self.stop.wait(0.5):
            self.sample()

    def totals(self) -> dict[str, float]:
        self.stop.set()
        self.join()
        by_group: dict[str, float] = dict.fromkeys(CPU_GROUPS.values(), 0.0)
        for pid, (group, cpu) in self.last.items():
            by_group[group] += cpu - self.first[pid]
        return by_group


def wait_for_idle_worker(timeout: float = 300) -> None:
    """Let the worker finish what the seeding queued (real-time segments, rollups) before the load."""
    import redis

    queue = redis.Redis.from_url(base.env()["CELERY_BROKER_URL"])
    deadline = time.monotonic() + timeout
    while queue.llen("celery") and time.monotonic() < deadline:
        time.sleep(1)
    time.sleep(2)  # the last task taken


def run_locust(env: dict[str, str], prefix: str) -> None:
    subprocess.run(
        [
            str(Path(base.PYTHON).parent / "locust"), "-f", str(base.ROOT / "bench" / "locustfile.py"),
            "--headless", "-u", str(USERS), "-r", str(SPAWN_RATE), "-t", f"{SECONDS}s",
            "--host", f"http://127.0.0.1:{base.PORT}", "--csv", prefix, "--only-summary", "--loglevel", "WARNING",
            "--stop-timeout", "10",
        ],
        cwd=base.ROOT, env=env, check=False,
    )  # fmt: skip


def main() -> None:
    base.use_database(os.environ.get("BENCH_DB", "segmentor_bench_load"))
    base.prepare()
    key = write_key()
    session, slug = session_and_slug()
    server = base.start_server()
    worker = start_worker()
    try:
        segments = seed(key)
        # What autovacuum would have done after the seeding (it is off on this machine's PostgreSQL).
        quiet = {**os.environ, "PGOPTIONS": "-c client_min_messages=error"}  # not the catalogs' "only superuser"
        subprocess.run(["psql", base.DATABASE_URL, "-qc", "VACUUM (ANALYZE)"], check=True, env=quiet)
        with tempfile.TemporaryDirectory() as tmp:
            prefix = str(Path(tmp) / "load")
            env = {
                **os.environ,
                "LOAD_API_KEY": key,
                "LOAD_SESSION": session,
                "LOAD_SLUG": slug,
                "LOAD_SEGMENTS": ",".join(map(str, segments)),
                "LOAD_POOL": str(POOL),
                "LOAD_ACCEPTED_FILE": f"{prefix}_accepted",
            }
            wait_for_idle_worker()
            meter = CpuMeter()
            meter.sample()
            meter.start()
            started = time.monotonic()
            run_locust(env, prefix)
            elapsed = time.monotonic() - started
            cpu = meter.totals()
            rows = list(csv.DictReader(Path(f"{prefix}_stats.csv").read_text().splitlines()))
            failures = Path(f"{prefix}_failures.csv").read_text()
            accepted = set(Path(f"{prefix}_accepted").read_text().split())
        stored, doubled = stored_keys()
        lost = accepted - stored
    finally:
        for process in (worker, server):
            process.terminate()
        for process in (worker, server):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:  # a worker still busy with the seed's backlog
                process.kill()
                process.wait()
    print(f"\n### {time.strftime('%Y-%m-%d')} · {platform.node()} · {os.cpu_count()} cores · locust")
    print(
        f"gunicorn {base.WORKERS} sync workers, 1 Celery worker, PostgreSQL + Redis; {USERS} clients "
        f"(3:1 API:web, 0.5-1.5 s think time) for {SECONDS} s ({elapsed:.0f} s with ramp-up); {POOL:,} contacts\n"
    )
    print("| request | count | req/s | p50 ms | p95 ms | p99 ms | max ms | failures |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    total_failures = 0
    for row in rows:
        total_failures += int(row["Failure Count"])
        name = "**all**" if row["Name"] == "Aggregated" else f"`{row['Name']}`"
        print(
            f"| {name} | {int(row['Request Count']):,} | {float(row['Requests/s']):,.1f} | {row['50%']} | "
            f"{row['95%']} | {row['99%']} | {float(row['Max Response Time']):.0f} | {row['Failure Count']} |"
        )
    print(f"\nevents answered 2xx: {len(accepted):,}; of those not stored: {len(lost):,}; stored twice: {doubled:,}")
    total = sum(cpu.values())
    offered = (os.cpu_count() or 1) * elapsed
    print(f"\nCPU over the {elapsed:.0f} s ({total:.0f} s of the {offered:.0f} s the cores offer):\n")
    print("| process | CPU s | share |\n|---|---:|---:|")
    for group, seconds in sorted(cpu.items(), key=lambda item: -item[1]):
        print(f"| {group} | {seconds:.1f} | {seconds / max(total, 1e-9):.0%} |")
    if total_failures:
        print("\nFAILURES:\n" + failures)
    if total_failures or lost or doubled:
        sys.exit(1)


if __name__ == "__main__":
    main()
