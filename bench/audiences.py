"""Benchmark: exporting a big segment as an ad audience (audiences/).

    .venv/bin/python bench/audiences.py                # bench-1m in segmentor_bench when it exists, else 200k generated
    BENCH_AUDIENCE_CONTACTS=500000 .venv/bin/python bench/audiences.py   # size of the generated tenant

Where the 1M-contact tenant exists (bench/build_tenant.py, database segmentor_bench, tenant bench-1m) it exports
a segment of every contact with an email ("bench: audience", materialised once and kept); its contacts consented
for marketing, not advertising, so the export reads the marketing consent (a bench-only switch on the export
record) to hash as many rows as a real audience would. Otherwise a fresh database of its own
(segmentor_bench_audiences, BENCH_DB to change it) gets BENCH_AUDIENCE_CONTACTS contacts with email, phone,
names and a postal address (200 first names, 997 last names, 5,000 postal codes: real lists repeat them),
advertising consent for 80 % of them (email and SMS), 2 % of the emails suppressed,
and a static segment of all of them.

Timed in process, as the app role with row-level security on and DEBUG off:

1. **Download**: ``audiences.services.download_stream`` consumed to the end, as a StreamingHttpResponse does
   (one set-based statement through a server-side cursor, the decisions and SHA-256 in Python, CSV text
   chunks). Both formats. Also the time to the first rows and the growth of the process's peak memory.
2. **The push's file**: ``export_build_file`` (the same rows written to storage once per push).
3. **Lookalike summary**: ``lookalike_summary_compute`` (countries, stages, four tag fields, value figures).
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import run as base

CONTACTS = int(os.environ.get("BENCH_AUDIENCE_CONTACTS", "200000"))
OWN_DB = os.environ.get("BENCH_DB", "segmentor_bench_audiences")
BATCH = 10_000
SEGMENT_NAME = "bench: audience"


def big_tenant_exists() -> bool:
    import subprocess

    found = subprocess.run(
        ["psql", f"postgres://segmentor@127.0.0.1:5432/{base.DB_NAME}", "-Atc",
         "SELECT count(*) FROM tenants_tenant WHERE slug = 'bench-1m'"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return found.returncode == 0 and found.stdout.strip() == "1"


def setup_django() -> None:
    os.environ.update(base.env())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "segmentor.settings")
    import django

    django.setup()


def generate(tenant_id: int, contacts: int) -> int:
    """Contacts with identifiers and an address, advertising consent for 80 %, 2 % suppressed; a static segment."""
    import datetime as dt

    from django.db import connection, transaction

    from contacts.bulk_sql import bulk_insert_rows
    from contacts.models import ConsentRecord, ConsentState, Contact, Suppression
    from contacts.normalize import address_hash
    from segments.models import Segment, SegmentMember
    from tenants.models import Tenant

    tenant = Tenant.objects.get(pk=tenant_id)
    tenant.consent_purposes = [*tenant.consent_purposes, "advertising"]
    tenant.save(update_fields=["consent_purposes"])
    now = dt.datetime.now(dt.UTC)
    countries = ["DE", "FR", "US", "GB", "ES", "IT", "NL"]
    interests = [["running"], ["wine", "cooking"], ["golf"], [], ["travel", "photography"]]
    started = time.monotonic()
    for start in range(0, contacts, BATCH):
        rows = [
            {"email": f"shopper{n}@{'gmail.com' if n % 4 == 0 else 'example.com'}",
             "phone": f"+49151{n:08d}" if n % 2 == 0 else "", "first_name": f"First{n % 200}",
             "last_name": f"Last {n % 997}",
             "country": countries[n % len(countries)], "city": "Berlin" if n % 7 == 0 else "Springfield",
             "region": "California" if n % 7 == 2 else "", "postal_code": f"{10000 + n % 5000}",
             "interests": interests[n % len(interests)], "lifecycle_stage": "lead" if n % 3 else "first_time_buyer"}
            for n in range(start, min(start + BATCH, contacts))
        ]  # fmt: skip
        with transaction.atomic():
            created = bulk_insert_rows(
                Contact, rows, fixed={"tenant_id": tenant_id, "created_at": now, "updated_at": now},
                returning=("id", "email", "phone"),
            )  # fmt: skip
            consenting = [(pk, email, phone) for pk, email, phone in created if pk % 5]
            for channel in ("email", "sms"):
                records = bulk_insert_rows(
                    ConsentRecord,
                    [{"contact_id": pk} for pk, _email, phone in consenting if channel == "email" or phone],
                    fixed={"tenant_id": tenant_id, "channel": channel, "purpose": "advertising", "status": "granted",
                           "source": "import", "occurred_at": now},
                    returning=("id", "contact_id"),
                )  # fmt: skip
                bulk_insert_rows(
                    ConsentState, [{"contact_id": contact_id, "record_id": pk} for pk, contact_id in records],
                    fixed={"tenant_id": tenant_id, "channel": channel, "purpose": "advertising", "status": "granted",
                           "updated_at": now},
                    returning=(),
                )  # fmt: skip
            suppressed = [{"address_hash": address_hash("email", email)} for pk, email, _ in created if pk % 50 == 1]
            bulk_insert_rows(
                Suppression, suppressed,
                fixed={"tenant_id": tenant_id, "channel": "email", "reason": "unsubscribe", "created_at": now},
                returning=(),
            )  # fmt: skip
    segment = Segment.objects.create(tenant_id=tenant_id, name=SEGMENT_NAME, kind=Segment.Kind.STATIC)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {SegmentMember._meta.db_table} (tenant_id, segment_id, contact_id, entered_at) "
            f"SELECT tenant_id, %s, id, now() FROM {Contact._meta.db_table} WHERE tenant_id = %s",
            [segment.pk, tenant_id],
        )
        cursor.execute("ANALYZE")
    Segment.objects.filter(pk=segment.pk).update(size=contacts, refreshed_at=now)
    print(f"generated {contacts:,} contacts in {time.monotonic() - started:.0f} s")
    return segment.pk


def big_segment(tenant_id: int) -> int:
    """The bench-1m tenant's audience segment: every contact with an email, materialised once."""
    from segments.models import Segment
    from segments.services import segment_create, segment_refresh
    from tenants.audit import Actor
    from tenants.models import Tenant

    existing = Segment.objects.filter(tenant_id=tenant_id, name=SEGMENT_NAME).first()
    if existing is not None:
        return existing.pk
    tenant = Tenant.objects.get(pk=tenant_id)
    rules = {"all": [{"type": "field", "field": "email", "op": "is_set"}]}
    segment = segment_create(tenant=tenant, actor=Actor.system("bench"), name=SEGMENT_NAME, rules=rules)
    started = time.monotonic()
    segment_refresh(segment=segment)
    print(f"materialised {SEGMENT_NAME!r} in {time.monotonic() - started:.0f} s")
    return segment.pk


def main() -> None:
    use_big = big_tenant_exists()
    if not use_big:
        base.use_database(OWN_DB)
        base.prepare()
    setup_django()
    from django.conf import settings

    from audiences.models import AudienceExport
    from audiences.selectors import lookalike_summary_compute
    from audiences.services import download_stream, export_build_file, export_start
    from segments.models import Segment
    from tenants.audit import Actor
    from tenants.context import tenant_context
    from tenants.models import Tenant

    tenant = Tenant.objects.get(slug="bench-1m") if use_big else Tenant.objects.get(name="Bench Tenant")
    purpose = "marketing" if use_big else "advertising"
    settings.MEDIA_ROOT = tempfile.mkdtemp(prefix="bench-audiences-")
    actor = Actor.system("bench")
    lines = [
        f"Machine: {platform.node()} · {os.cpu_count()} cores · database {base.DB_NAME} · tenant {tenant.slug}",
        "",
        "| step | rows read | rows written | seconds | rows/s read | first rows | file MB | peak RSS growth |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    with tenant_context(tenant.pk):
        segment_id = big_segment(tenant.pk) if use_big else generate(tenant.pk, CONTACTS)
        segment = Segment.objects.get(pk=segment_id)
        for fmt in ("google", "meta"):
            export = export_start(segment=segment, format=fmt, kind="audience", actor=actor, trigger="download")
            AudienceExport.objects.filter(pk=export.pk).update(consent_purpose=purpose)
            export.consent_purpose = purpose
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            started = time.monotonic()
            first = None
            for chunk_number, _chunk in enumerate(download_stream(export=export)):
                if chunk_number == 1:
                    first = time.monotonic() - started
            seconds = time.monotonic() - started
            growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
            export.refresh_from_db()
            assert export.status == "succeeded", export.error
            lines.append(
                f"| download ({fmt}) | {export.member_count:,} | {export.row_count:,} | {seconds:.1f} | "
                f"{export.member_count / seconds:,.0f} | {first or 0:.2f} s | {export.file_bytes / 1e6:.0f} | "
                f"{growth:.0f} MB |"
            )
            print(lines[-1], flush=True)
        export = export_start(segment=segment, format="google", kind="audience", actor=actor, trigger="download")
        AudienceExport.objects.filter(pk=export.pk).update(consent_purpose=purpose, status="pending")
        export.refresh_from_db()
        started = time.monotonic()
        export = export_build_file(export=export)
        seconds = time.monotonic() - started
        lines.append(
            f"| push file (google, to storage) | {export.member_count:,} | {export.row_count:,} | {seconds:.1f} | "
            f"{export.member_count / seconds:,.0f} | — | {export.file_bytes / 1e6:.0f} | — |"
        )
        print(lines[-1], flush=True)
        started = time.monotonic()
        summary = lookalike_summary_compute(segment=segment)
        lines.append(f"\nLookalike summary of {summary.seed_size:,} against {summary.audience_size:,}: "
                     f"{time.monotonic() - started:.1f} s")  # fmt: skip
        excluded = export.excluded
    print("\n".join(lines))
    print(f"\nleft out (push file): {excluded}")


if __name__ == "__main__":
    main()
