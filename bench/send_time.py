"""Benchmark: send-time optimisation — the bulk recompute of profiles, and the best-time snapshot.

    .venv/bin/python bench/send_time.py                                  # 200,000 contacts, 1,000,000 events
    .venv/bin/python bench/send_time.py --contacts 1000000 --events 5000000 --rebuild

Builds (once, or again with ``--rebuild``) a tenant in its own database (``--database``, default
``bench_send_time``): ``--contacts`` contacts (half without a time zone, the rest over eight zones
and one PostgreSQL does not know) written with ``bulk_create``, and ``--events`` opens and clicks
generated in one SQL statement — each contact has a habitual weekday and hour that 60 % of its
engagements fall near, 15 % are machine opens, spread over the last 170 days. Then, in process,
as the app role under row-level security, DEBUG off:

- **recompute** (``send_time_profiles_compute``): from no profiles; again with nothing changed;
  again after 1 % more engagement;
- **snapshot** (``run_start``) of a campaign to every contact, without and with ``best_time``
  (the difference is ``apply_best_times``' UPDATE), each repeat on an emptied, vacuumed table.

Prints Markdown for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PYTHON = str(ROOT / ".venv" / "bin" / "python")
ADMIN_URL = "postgres://segmentor@127.0.0.1:5432/postgres"
SLUG = "bench-send-time"
ZONES = ["Europe/Berlin", "America/New_York", "Asia/Tokyo", "Asia/Kolkata", "Europe/London",
         "America/Los_Angeles", "Australia/Sydney", "America/Sao_Paulo"]  # fmt: skip


def env(database: str) -> dict[str, str]:
    values = dict(os.environ)
    values.update(
        DATABASE_URL=f"postgres://segmentor@127.0.0.1:5432/{database}", DEBUG="0", SECRET_KEY="bench-secret-key",  # noqa: S106
        CELERY_BROKER_URL="redis://127.0.0.1:6379/14", ALLOWED_HOSTS="127.0.0.1,localhost", LOG_LEVEL="WARNING",
        SECURE_SSL_REDIRECT="0", STATIC_MANIFEST="0",
    )  # fmt: skip
    return values


def psql(sql: str) -> str:
    out = subprocess.run(["psql", ADMIN_URL, "-qtAc", sql], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def machine() -> str:
    return f"{platform.node()} · {os.cpu_count()} cores · load average (1 min) {os.getloadavg()[0]:.2f}"


def vacuum(table: str, *, full: bool = False) -> None:
    from django.db import connection

    from tenants.context import fresh_scope

    with fresh_scope(), connection.cursor() as cursor:
        cursor.execute(f"VACUUM ({'FULL, ' if full else ''}ANALYZE) {table}")


def build(args: argparse.Namespace) -> Any:
    """The tenant with its contacts and engagement (made once per database)."""
    from django.db import connection, transaction

    from contacts.models import Contact
    from tenants.context import platform_access, tenant_context
    from tenants.models import Tenant

    with platform_access():
        tenant = Tenant.objects.filter(slug=SLUG).first()
        if tenant is None:
            tenant = Tenant.objects.create(name="Bench send time", slug=SLUG, time_zone="Europe/Berlin")
    with tenant_context(tenant.id):
        if Contact.objects.filter(tenant=tenant).exists():
            return tenant
        started = time.perf_counter()
        for start in range(0, args.contacts, 10_000):
            batch = []
            for i in range(start, min(start + 10_000, args.contacts)):
                zone = "" if i % 2 == 0 else ("Mars/Olympus_Mons" if i % 97 == 1 else ZONES[(i // 2) % len(ZONES)])
                batch.append(Contact(tenant=tenant, email=f"c{i}@bench.example", first_name=f"C{i}", time_zone=zone))
            Contact.objects.bulk_create(batch, batch_size=2_000)
        print(f"{args.contacts:,} contacts in {time.perf_counter() - started:.1f} s", flush=True)
        started = time.perf_counter()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(EVENTS_SQL, [tenant.id, args.events, tenant.id])
        print(f"{args.events:,} events in {time.perf_counter() - started:.1f} s", flush=True)
    vacuum("contacts_contact")
    vacuum("analytics_messageevent")
    return tenant


# Each contact k has a habit: weekday k % 7 at hour (7k) % 24 (± 1 h, 60 % of its engagements);
# the rest fall anywhere in the week. Weeks back: 0-24. 15 % machine opens, 20 % clicks.
EVENTS_SQL = """
WITH ids AS (SELECT array_agg(id ORDER BY id) AS a, count(*) AS n FROM contacts_contact WHERE tenant_id = %s),
picks AS (
    SELECT g, (floor(random() * ids.n))::int AS k, random() AS habitual, random() AS r
    FROM ids, generate_series(1, %s) AS g
)
INSERT INTO analytics_messageevent
    (tenant_id, delivery_id, campaign_id, variant_id, contact_id, kind, url, is_cta, machine, user_agent, occurred_at)
SELECT %s, p.g, 1 + p.g %% 40, NULL, ids.a[p.k + 1],
       CASE WHEN p.r < 0.2 THEN 'click' ELSE 'open' END, '', false,
       CASE WHEN p.r > 0.85 THEN 'apple privacy proxy' ELSE '' END, '',
       date_trunc('week', now()) - make_interval(weeks => 1 + (random() * 23)::int)
       + CASE WHEN p.habitual < 0.6
              THEN make_interval(days => p.k %% 7, hours => (7 * p.k) %% 24 + (random() * 2)::int - 1)
              ELSE make_interval(hours => (random() * 167)::int) END
       + make_interval(mins => (random() * 59)::int)
FROM picks p, ids
"""


def recompute(tenant: Any, args: argparse.Namespace) -> list[tuple[str, Any, float]]:
    from django.db import connection, transaction

    from analytics.models import SendTimeProfile
    from analytics.send_time import send_time_profiles_compute
    from tenants.context import tenant_context

    results = []
    with tenant_context(tenant.id):
        SendTimeProfile.objects.filter(tenant=tenant)._raw_delete("default")
    vacuum("analytics_sendtimeprofile", full=True)
    for label in ("from no profiles", "nothing changed", "after 1 % more engagement"):
        if label.startswith("after"):
            with tenant_context(tenant.id), transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(EVENTS_SQL.replace("weeks => 1 +", "weeks => 1 + 0 *"),
                               [tenant.id, args.events // 100, tenant.id])  # fmt: skip
        with tenant_context(tenant.id):
            started = time.perf_counter()
            result = send_time_profiles_compute(tenant=tenant)
            elapsed = time.perf_counter() - started
        print(f"  recompute {label}: {elapsed:.2f} s — {result}", flush=True)
        results.append((label, result, elapsed))
    return results


def snapshot(tenant: Any, args: argparse.Namespace) -> dict[bool, list[float]]:
    from django.db import connection, transaction
    from django.utils import timezone

    from campaigns.models import Campaign, CampaignAudience, CampaignRun, Delivery, Variant
    from campaigns.sending import run_start
    from segments.models import Segment
    from tenants.context import tenant_context

    timings: dict[bool, list[float]] = {False: [], True: []}
    with tenant_context(tenant.id):
        segment, made = Segment.objects.get_or_create(
            tenant=tenant, name="bench everyone", defaults={"kind": Segment.Kind.STATIC, "rules": {}}
        )
        if made:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO segments_segmentmember (tenant_id, segment_id, contact_id, entered_at) "
                    "SELECT tenant_id, %s, id, %s FROM contacts_contact WHERE tenant_id = %s",
                    [segment.id, timezone.now(), tenant.id],
                )
            vacuum("segments_segmentmember")
        campaign = Campaign.objects.filter(tenant=tenant, name="bench best time").first()
        if campaign is None:
            campaign = Campaign.objects.create(tenant=tenant, name="bench best time")
            CampaignAudience.objects.create(tenant=tenant, campaign=campaign, segment=segment)
            Variant.objects.create(
                tenant=tenant, campaign=campaign, name="Everyone", subject="Hi", html_body="<p>Hi</p>"
            )
        for repeat in range(args.repeats):
            for best in (False, True):
                Campaign.objects.filter(pk=campaign.pk).update(best_time=best)
                campaign.refresh_from_db()
                with transaction.atomic():
                    runs = list(
                        CampaignRun.objects.filter(tenant=tenant, campaign=campaign).values_list("id", flat=True)
                    )
                    Delivery.objects.filter(tenant=tenant, run_id__in=runs)._raw_delete("default")
                    CampaignRun.objects.filter(pk__in=runs).delete()
                vacuum("campaigns_delivery", full=True)
                started = time.perf_counter()
                run = run_start(campaign=campaign)
                elapsed = time.perf_counter() - started
                timings[best].append(elapsed)
                print(f"  snapshot repeat {repeat + 1}, best_time={best}: {run.audience_size:,} deliveries in "
                      f"{elapsed:.2f} s", flush=True)  # fmt: skip
        with transaction.atomic():
            runs = list(CampaignRun.objects.filter(tenant=tenant, campaign=campaign).values_list("id", flat=True))
            Delivery.objects.filter(tenant=tenant, run_id__in=runs)._raw_delete("default")
            CampaignRun.objects.filter(pk__in=runs).delete()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="bench_send_time")
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    exists = psql(f"SELECT 1 FROM pg_database WHERE datname = '{args.database}'")
    if exists and args.rebuild:
        psql(f"DROP DATABASE {args.database}")
    if not exists or args.rebuild:
        psql(f"CREATE DATABASE {args.database} OWNER segmentor")
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "-v0", "--skip-checks"], cwd=ROOT, env=env(args.database), check=True
    )
    os.environ.update(env(args.database))
    os.environ["DJANGO_SETTINGS_MODULE"] = "segmentor.settings"
    import django

    django.setup()
    print(f"send time · {args.database} · {machine()}", flush=True)
    tenant = build(args)
    recomputed = recompute(tenant, args)
    timings = snapshot(tenant, args)
    print(f"\n### Send-time optimisation · {time.strftime('%Y-%m-%d %H:%M')} UTC · {machine()}\n")
    print(f"Tenant: {args.contacts:,} contacts, {args.events:,} opens and clicks (15 % machine) over 170 days.\n")
    print("| recompute | seconds | contacts profiled | engagements | profiles written | removed |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, result, elapsed in recomputed:
        print(f"| {label} | {elapsed:.2f} | {result.contacts:,} | {result.engagements:,} | {result.written:,} | "
              f"{result.removed:,} |")  # fmt: skip
    plain, best = statistics.median(timings[False]), statistics.median(timings[True])
    print(f"\n| snapshot of {args.contacts:,} deliveries | runs (s) | median s |")
    print("|---|---|---:|")
    print(f"| without best time | {' / '.join(f'{s:.2f}' for s in timings[False])} | {plain:.2f} |")
    print(f"| with best time | {' / '.join(f'{s:.2f}' for s in timings[True])} | {best:.2f} |")
    print(
        f"\n`apply_best_times` costs {best - plain:.2f} s ({(best - plain) / args.contacts * 1e6:.1f} µs per delivery)."
    )


if __name__ == "__main__":
    main()
