"""Build (or reuse) the benchmark tenant in the benchmark database, by COPY.

    .venv/bin/python bench/build_tenant.py                                  # bench-1m: 1M contacts, 10M events
    .venv/bin/python bench/build_tenant.py --contacts 20000 --events 200000  # bench-20k, in seconds
    .venv/bin/python bench/build_tenant.py --rebuild                        # recreate the database first

Creates the database (as bench/run.py does) when it is missing and migrates it, then loads the
tenant with contacts.generator.load_with_copy unless it already has exactly the planned rows.
Prints the COPY rows/s for contacts and events, the total time and the table sizes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import ADMIN_URL, DB_NAME, PYTHON, ROOT, env

OWNER_EMAIL = "bench-owner@example.com"


def size_label(contacts: int) -> str:
    """1000000 → "1m", 20000 → "20k", 1500 → "1500"."""
    for suffix, unit in (("m", 1_000_000), ("k", 1_000)):
        if contacts >= unit and contacts % unit == 0:
            return f"{contacts // unit}{suffix}"
    return str(contacts)


def ensure_database(rebuild: bool) -> None:
    exists = subprocess.run(
        ["psql", ADMIN_URL, "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if exists and rebuild:
        subprocess.run(["psql", ADMIN_URL, "-qc", f"DROP DATABASE {DB_NAME}"], check=True)
    if not exists or rebuild:
        subprocess.run(["psql", ADMIN_URL, "-qc", f"CREATE DATABASE {DB_NAME} OWNER segmentor"], check=True)
    subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env(), check=True)


def setup_django() -> None:
    os.environ.update(env())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "segmentor.settings")
    import django

    django.setup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--slug", help="Tenant slug (default: bench-1m, bench-20k, ... from --contacts).")
    parser.add_argument("--workers", type=int, default=1, help="Generator processes feeding COPY (default 1).")
    parser.add_argument(
        "--connections",
        type=int,
        default=1,
        help="Load over this many connections, each generating and committing its share (default 1: one "
        "transaction, fed by --workers).",
    )
    parser.add_argument("--rebuild", action="store_true", help=f"Drop and recreate {DB_NAME} first.")
    args = parser.parse_args()
    slug = args.slug or f"bench-{size_label(args.contacts)}"

    started = time.perf_counter()
    ensure_database(args.rebuild)
    setup_django()

    from django.db import connection

    from contacts.generator import COPY_TABLES, LifecycleRules, TenantDataGenerator, load_with_copy
    from contacts.models import Contact, Event
    from tenants.context import tenant_context
    from tenants.models import Tenant, User
    from tenants.services import tenant_create

    tenant = Tenant.objects.filter(slug=slug).first()
    if tenant is None:
        owner = User.objects.filter(email=OWNER_EMAIL).first() or User.objects.create_user(OWNER_EMAIL, None)
        tenant = tenant_create(name=slug.replace("-", " ").title(), owner=owner)
        if tenant.slug != slug:  # the name slugifies to the slug we asked for
            Tenant.objects.filter(pk=tenant.pk).update(slug=slug)
            tenant.refresh_from_db()
    planned_events = TenantDataGenerator(
        contacts=args.contacts, events=args.events, seed=args.seed, rules=LifecycleRules.for_tenant(tenant)
    ).events_total
    with tenant_context(tenant.id):
        have_contacts = Contact.objects.filter(tenant=tenant).count()
        have_events = Event.objects.filter(tenant=tenant).count() if have_contacts else 0
    print(f"{DB_NAME} · tenant {slug} (id {tenant.id}) · {os.cpu_count()} cores")

    if (have_contacts, have_events) == (args.contacts, planned_events):
        print(f"Reused: {have_contacts:,} contacts and {have_events:,} events are already there.")
    elif have_contacts:
        sys.exit(
            f"{slug} has {have_contacts:,} contacts and {have_events:,} events, not {args.contacts:,} and "
            f"{planned_events:,}: run with --rebuild (or another --slug)."
        )
    else:
        how = f"{args.connections} connections" if args.connections > 1 else f"1 connection, {args.workers} worker(s)"
        print(f"Loading {args.contacts:,} contacts and {planned_events:,} events with COPY ({how})")

        def progress(done: int, total: int) -> None:
            if done == total or done % 100_000 < 5_000:
                elapsed = time.perf_counter() - load_started
                print(f"  {done:>10,} / {total:,} contacts  {elapsed:6.1f} s", flush=True)

        load_started = time.perf_counter()
        report = load_with_copy(
            tenant,
            contacts=args.contacts,
            events=args.events,
            seed=args.seed,
            workers=args.workers,
            connections=args.connections,
            analyze=False,
            progress=progress,
        )
        load_seconds = time.perf_counter() - load_started
        vacuum_started = time.perf_counter()
        tables = [model._meta.db_table for _, model, _ in COPY_TABLES]
        with connection.cursor() as cursor:  # autocommit: VACUUM cannot run in a transaction
            cursor.execute("VACUUM (ANALYZE) " + ", ".join(tables))
        vacuum_seconds = time.perf_counter() - vacuum_started
        total_rows = sum(report.rows.values())
        print(f"\nLoaded in {load_seconds:.1f} s ({total_rows / load_seconds:,.0f} rows/s over all tables), "
              f"VACUUM ANALYZE {vacuum_seconds:.1f} s")  # fmt: skip
        print("| table | rows | time in COPY s | COPY rows/s |")
        print("|---|---:|---:|---:|")
        for table, rows in report.rows.items():
            seconds = report.copy_seconds.get(table, 0.0)
            print(f"| {table} | {rows:,} | {seconds:.1f} | {report.rate(table):,.0f} |")
        print(
            f"\ncontacts COPY: {report.rate('contacts'):,.0f} rows/s; events COPY: {report.rate('events'):,.0f} rows/s"
        )

    print("\n| table | rows (all tenants) | total size | table | indexes |")
    print("|---|---:|---:|---:|---:|")
    with connection.cursor() as cursor:
        for _, model, _ in COPY_TABLES:
            table = model._meta.db_table
            cursor.execute(
                "SELECT c.reltuples::bigint, pg_size_pretty(pg_total_relation_size(c.oid)), "
                "pg_size_pretty(pg_table_size(c.oid)), pg_size_pretty(pg_indexes_size(c.oid)) "
                "FROM pg_class c WHERE c.oid = %s::regclass",
                [table],
            )
            estimate, total, heap, indexes = cursor.fetchone()
            print(f"| {table} | ~{estimate:,} | {total} | {heap} | {indexes} |")
    print(f"\nTotal time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
