"""Benchmark: the website snippet's decision endpoint under gunicorn, with a real HTTP client.

    .venv/bin/python bench/personalization.py          # prints a Markdown section for bench/RESULTS.md
    BENCH_CONTACTS=20000 .venv/bin/python bench/personalization.py

Builds a fresh database (`segmentor_bench_personalization`, BENCH_DB to change it) with one tenant of
100,000 contacts (countries, lifecycle stages, revenue), four dynamic segments materialised, three
slots with five variants each (segments and stages), a site key, and 2,000 identified visitors plus
500 anonymous ones. Then gunicorn (2 sync workers, Redis cache) answers
`POST /p/v1/decide/?key=…` for three slots with the site's Origin, and a keep-alive HTTP client
measures, one request at a time:

- **cold**: each visitor's first decision (nothing of the visitor cached: visitor row, memberships and
  stage read from PostgreSQL);
- **warm**: the same visitors again (the decision from the cache, checked against its versions);
- **after a membership change**: a segment refresh moved contacts; their visitors are decided again;
- **no cache**: the same, on a server started with PERSONALIZATION_CACHE=0 (every decision from the database);

and then concurrency (BENCH_CONNECTIONS clients for BENCH_SECONDS) on warm decisions. Every request
also counts its impressions (an upsert into SlotDailyStats) and passes the rate limits (Redis).
"""

from __future__ import annotations

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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import run as base

DB_NAME = os.environ.get("BENCH_DB", "segmentor_bench_personalization")
CONTACTS = int(os.environ.get("BENCH_CONTACTS", "100000"))
VISITORS = int(os.environ.get("BENCH_VISITORS", "2000"))
ANONYMOUS = int(os.environ.get("BENCH_ANONYMOUS", "500"))
SAMPLE = int(os.environ.get("BENCH_SAMPLE", "1000"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "4"))
ORIGIN = "https://shop.bench.example"
SLOTS = ["hero", "banner", "footer"]


BASE_ENV = base.env


def bench_env(**extra: str) -> dict[str, str]:
    return {
        **BASE_ENV(),
        "PERSONALIZATION_KEY_RATE": "100000000/min",
        "PERSONALIZATION_VISITOR_RATE": "100000/min",
        **extra,
    }


def build() -> tuple[str, list[str], list[str]]:
    """The tenant, its segments, slots and visitors; return (public key, identified ids, anonymous ids)."""
    os.environ.update(bench_env())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "segmentor.settings")
    import django

    django.setup()
    import datetime as dt

    from segmentor.celery import app

    app.conf.task_always_eager = True  # refreshes queued by segment services run here, after commit
    from decimal import Decimal

    from django.db import transaction

    from contacts.bulk_sql import bulk_insert_rows
    from contacts.models import Contact, LifecycleStage
    from personalization.models import Visitor
    from personalization.services import site_key_create, slot_create, variant_add
    from segments.services import segment_create, segment_refresh
    from tenants.audit import Actor
    from tenants.context import tenant_context
    from tenants.models import Tenant

    actor = Actor.system("bench")
    tenant = Tenant.objects.get(name="Bench Tenant")
    rand = random.Random(5)  # benchmark data
    stages = [s for s, _ in LifecycleStage.choices]
    countries = ["DE", "FR", "GB", "US", "ES", "IT", "NL", "PL"]
    now = dt.datetime.now(dt.UTC)
    with tenant_context(tenant.pk):
        started = time.perf_counter()
        with transaction.atomic():
            rows = []
            for n in range(CONTACTS):
                orders = rand.choice([0, 0, 0, 1, 2, 3, 6])
                rows.append({
                    "email": f"c{n}@bench.example", "country": rand.choice(countries),
                    "lifecycle_stage": rand.choice(stages), "order_count": orders,
                    "total_revenue": Decimal(orders * rand.randint(20, 200)),
                })  # fmt: skip
            for start in range(0, len(rows), 10_000):
                bulk_insert_rows(
                    Contact, rows[start : start + 10_000], returning=(),
                    fixed={"tenant_id": tenant.pk, "created_at": now, "updated_at": now, "first_seen_at": now},
                )  # fmt: skip
        print(f"  {CONTACTS:,} contacts in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        rules = {
            "Germany": {"all": [{"type": "field", "field": "country", "op": "eq", "value": "DE"}]},
            "High value": {"all": [{"type": "field", "field": "total_revenue", "op": "gte", "value": 500}]},
            "Leads in France": {"all": [
                {"type": "field", "field": "lifecycle_stage", "op": "eq", "value": "lead"},
                {"type": "field", "field": "country", "op": "eq", "value": "FR"},
            ]},
            "Frequent buyers": {"all": [{"type": "field", "field": "order_count", "op": "gte", "value": 3}]},
        }  # fmt: skip
        segments = []
        started = time.perf_counter()
        for name, tree in rules.items():
            segment = segment_create(tenant=tenant, actor=actor, name=name, rules=tree)
            segment_refresh(segment=segment)
            segment.refresh_from_db()
            segments.append(segment)
        sizes = ", ".join(f"{s.name} {s.size:,}" for s in segments)
        print(f"  segments materialised in {time.perf_counter() - started:.1f} s: {sizes}", file=sys.stderr)
        key = site_key_create(tenant=tenant, name="Bench shop", allowed_origins=[ORIGIN], actor=actor)
        for slot_key in SLOTS:
            slot = slot_create(tenant=tenant, actor=actor, data={
                "key": slot_key, "name": slot_key.title(), "headline": f"Default {slot_key}", "body": "For everyone",
                "cta_label": "Shop", "cta_url": "/shop",
            })  # fmt: skip
            for segment in segments[:3]:
                variant_add(slot=slot, actor=actor, data={
                    "name": segment.name, "target": "segment", "target_segment": segment,
                    "headline": f"{segment.name} {slot_key}", "cta_label": "Go", "cta_url": "https://shop.bench.example/x",
                })  # fmt: skip
            for stage in ("lead", "repeat_customer"):
                variant_add(slot=slot, actor=actor, data={
                    "name": stage, "target": "stage", "target_stage": stage, "headline": f"{stage} {slot_key}",
                })  # fmt: skip
        contact_ids = list(Contact.objects.filter(tenant=tenant).values_list("pk", flat=True))
        chosen = rand.sample(contact_ids, VISITORS)
        identified = [f"bench-visitor-{n:06d}" for n in range(VISITORS)]
        anonymous = [f"bench-anon-{n:06d}" for n in range(ANONYMOUS)]
        Visitor.objects.bulk_create(
            [Visitor(tenant=tenant, anonymous_id=vid, site_key=key, contact_id=cid, identified_at=now,
                     first_seen_at=now, last_seen_at=now) for vid, cid in zip(identified, chosen, strict=True)]
            + [Visitor(tenant=tenant, anonymous_id=vid, site_key=key, first_seen_at=now, last_seen_at=now)
               for vid in anonymous],
            batch_size=2_000,
        )  # fmt: skip
    return key.public_key, identified, anonymous


def move_members() -> int:
    """Refresh 'High value' with a lower bar, so contacts enter it (the membership-changed path)."""
    from segments.models import Segment
    from segments.services import segment_refresh, segment_update
    from tenants.audit import Actor
    from tenants.context import tenant_context
    from tenants.models import Tenant

    tenant = Tenant.objects.get(name="Bench Tenant")
    with tenant_context(tenant.pk):
        segment = Segment.objects.get(tenant=tenant, name="High value")
        before = segment.size
        rules = {"all": [{"type": "field", "field": "total_revenue", "op": "gte", "value": 450}]}
        segment_update(segment=segment, actor=Actor.system("bench"), rules=rules)  # refreshes (eager task)
        segment_refresh(segment=segment)  # a no-op if the task did it
        segment.refresh_from_db()
        return segment.size - before


class Decider:
    """One keep-alive connection asking for decisions."""

    def __init__(self, key: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", base.PORT, timeout=10)
        self.path = f"/p/v1/decide/?key={key}"
        self.headers = {"Origin": ORIGIN, "Content-Type": "text/plain;charset=UTF-8"}

    def decide(self, visitor_id: str) -> float:
        body = json.dumps({"visitor_id": visitor_id, "slots": SLOTS})
        started = time.perf_counter()
        self.conn.request("POST", self.path, body=body, headers=self.headers)
        response = self.conn.getresponse()
        data = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        if response.status != 200:
            raise RuntimeError(f"decide answered {response.status}: {data[:200]!r}")
        return elapsed


def worker_cpu_seconds(server: Any) -> float:
    """User + system CPU of the server's worker processes so far (from /proc; Linux)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == server.pid:  # ppid
            total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def percentiles(latencies: list[float]) -> dict[str, float]:
    q = statistics.quantiles(latencies, n=100)
    return {"n": len(latencies), "p50": q[49], "p95": q[94], "p99": q[98], "max": max(latencies)}


def sequential(key: str, visitors: list[str], server: Any) -> dict[str, float]:
    decider = Decider(key)
    cpu = worker_cpu_seconds(server)
    result = percentiles([decider.decide(v) for v in visitors])
    result["cpu"] = (worker_cpu_seconds(server) - cpu) * 1000 / len(visitors)
    return result


def refused(server: Any, n: int) -> dict[str, float]:
    """The floor: a request the gate refuses at once (no key): Django and gunicorn, no database or cache."""
    conn = http.client.HTTPConnection("127.0.0.1", base.PORT, timeout=10)
    latencies = []
    cpu = worker_cpu_seconds(server)
    for _ in range(n):
        started = time.perf_counter()
        conn.request("POST", "/p/v1/decide/", body="{}", headers={"Origin": ORIGIN})
        conn.getresponse().read()
        latencies.append((time.perf_counter() - started) * 1000)
    result = percentiles(latencies)
    result["cpu"] = (worker_cpu_seconds(server) - cpu) * 1000 / n
    return result


def concurrent(key: str, visitors: list[str]) -> dict[str, float]:
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + SECONDS

    def client(offset: int) -> None:
        decider = Decider(key)
        mine: list[float] = []
        n = offset
        while time.monotonic() < deadline:
            mine.append(decider.decide(visitors[n % len(visitors)]))
            n += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(i * 97,)) for i in range(CONNECTIONS)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = percentiles(latencies)
    result["rps"] = len(latencies) / (time.monotonic() - started)
    return result


def stop(server: Any) -> None:
    server.terminate()
    try:
        server.wait(60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(10)


def serve(**extra: str) -> Any:
    """Start gunicorn (bench/run.py's) with this benchmark's environment."""
    base.env = lambda: bench_env(**extra)
    try:
        return base.start_server()
    finally:
        base.env = BASE_ENV


def main() -> None:
    base.use_database(DB_NAME)
    base.prepare()
    started = time.perf_counter()
    key, identified, anonymous = build()
    print(f"  built in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    rand = random.Random(9)  # benchmark order
    sample = rand.sample(identified, min(SAMPLE, len(identified)))
    sample += anonymous[: max(0, SAMPLE // 5)]
    rand.shuffle(sample)
    rows: list[tuple[str, dict[str, float]]] = []
    server = serve()
    try:
        Decider(key).decide("bench-warmup-0001")  # the workers' first request: imports, connections
        Decider(key).decide("bench-warmup-0002")
        rows.append(("floor: a request refused at once (no key; no database, no cache)", refused(server, len(sample))))
        rows.append(("cold: each visitor's first decision", sequential(key, sample, server)))
        rows.append(("warm: the same visitors again (cached)", sequential(key, sample, server)))
        rows.append(("warm, again", sequential(key, sample, server)))
        moved = move_members()
        label = f"after a refresh moved {moved:,} contacts into a targeted segment"
        rows.append((label, sequential(key, sample, server)))
        rows.append((f"warm, {CONNECTIONS} concurrent clients for {SECONDS} s", concurrent(key, sample)))
    finally:
        stop(server)
    server = serve(PERSONALIZATION_CACHE="0")
    try:
        Decider(key).decide("bench-warmup-0001")
        Decider(key).decide("bench-warmup-0002")
        label = "no cache (PERSONALIZATION_CACHE=0): every decision from PostgreSQL"
        rows.append((label, sequential(key, sample, server)))
        rows.append((f"no cache, {CONNECTIONS} concurrent clients for {SECONDS} s", concurrent(key, sample)))
    finally:
        stop(server)
    load = os.getloadavg()[0]
    print(f"\n### {time.strftime('%Y-%m-%d %H:%M')} UTC · {platform.node()} · {os.cpu_count()} cores · load {load:.1f}")
    print(
        f"{CONTACTS:,} contacts, 4 materialised segments, {len(SLOTS)} slots × 5 variants, {VISITORS:,} identified + "
        f"{ANONYMOUS:,} anonymous visitors; gunicorn {base.WORKERS} sync workers, PostgreSQL, Redis cache; "
        f"`POST /p/v1/decide/` for {len(SLOTS)} slots, keep-alive HTTP client, one request at a time unless said\n"
    )
    print("| decisions | n | p50 ms | p95 ms | p99 ms | max ms | req/s | worker CPU ms/request |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        rps = f"{r['rps']:,.0f}" if "rps" in r else ""
        cpu = f"{r['cpu']:.1f}" if "cpu" in r else ""
        figures = f"{r['n']:,.0f} | {r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} | {r['max']:.1f}"
        print(f"| {name} | {figures} | {rps} | {cpu} |")


if __name__ == "__main__":
    main()
