"""Benchmark: CSV import of contacts through the importer's services and its Celery task, on PostgreSQL.

    .venv/bin/python bench/import_csv.py                       # 100,000 rows; prints a Markdown table
    BENCH_IMPORT_ROWS=20000 .venv/bin/python bench/import_csv.py

Scenarios, each on one realistic CSV written before the clock starts (a CRM export: identity,
profile, geography, tags, custom attributes and a newsletter column, from contacts.generator):
1. upload check: `import_upload` reads the whole file once (encoding scan, delimiter, header,
   row count) and stores it;
2. run, all new contacts: `import_start`, then the `run_import` task runs (eagerly, in this
   process) through `contacts_bulk_upsert` in chunks of 1,000 rows, each chunk committed;
3. the same job run again (`import_restart`): every row updates an existing contact;
4. a second file of new contacts with its consent column mapped: a consent record (through
   `consent_change`, one ledger row, state, lifecycle and audit per contact) for every "yes".

Uses bench/run.py's env() and prepare() on a fresh database of its own, `segmentor_bench_import`
(BENCH_DB to change it): prepare() drops the database it prepares, and run.py's `segmentor_bench`
holds the 1M-contact tenant of bench/build_tenant.py. Peak RSS shows the file is streamed.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import run as base

DB_NAME = os.environ.get("BENCH_DB", "segmentor_bench_import")
ROWS = int(os.environ.get("BENCH_IMPORT_ROWS", "100000"))
SEED = 20261128
COLUMNS = (
    "customer_id", "email", "phone", "first_name", "last_name", "language", "time_zone", "birth_date", "gender",
    "country", "region", "city", "zip", "company", "job_title", "interests",
    "plan", "signup_source", "signup_date", "loyalty_points", "app_user", "newsletter",
)  # fmt: skip


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def generated_rows(count: int, first_number: int) -> Iterator[list[str]]:
    """``count`` identified contacts of the generator as CSV rows (anonymous visitors left out)."""
    from contacts.generator import TenantDataGenerator

    generator = TenantDataGenerator(contacts=int(count * 1.5), events=0, seed=SEED, first_number=first_number)
    written = 0
    for c in generator:
        if not (c.external_id or c.email):
            continue
        a = c.attributes
        yield [
            c.external_id or f"crm-{c.number}", c.email, c.phone, c.first_name, c.last_name, c.locale, c.time_zone,
            cell(c.birth_date), c.gender, c.country, c.region, c.city, c.postal_code, c.company, c.job_role,
            cell(c.interests), cell(a.get("plan")), cell(a.get("signup_source")), cell(a.get("signup_date")),
            cell(a.get("loyalty_points")), cell(a.get("app_user")), "yes" if c.number % 5 < 3 else "no",
        ]  # fmt: skip
        written += 1
        if written == count:
            return
    raise RuntimeError(f"the generator made only {written} identified contacts")


def write_csv(path: Path, count: int, first_number: int) -> int:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        writer.writerows(generated_rows(count, first_number))
    return path.stat().st_size


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(action: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def main() -> None:
    base.use_database(DB_NAME)
    base.prepare()
    os.environ.update(base.env())
    os.environ["DJANGO_SETTINGS_MODULE"] = "segmentor.settings"
    import django

    django.setup()
    from django.core.files import File
    from django.test.utils import override_settings

    from contacts import importer
    from contacts.generator import define_attributes
    from contacts.models import ConsentRecord, Contact, ImportJob
    from segmentor.celery import app
    from tenants.context import tenant_context
    from tenants.models import Membership, Tenant

    app.conf.task_always_eager = True  # run_import.delay() runs the task here, after commit
    workdir = Path(tempfile.mkdtemp(prefix="bench-import-"))
    first_file, second_file = workdir / "customers.csv", workdir / "more-customers.csv"
    sizes = (write_csv(first_file, ROWS, 1), write_csv(second_file, ROWS, 10_000_000))
    rss_before = peak_rss_mb()

    tenant = Tenant.objects.get(name="Bench Tenant")
    results: list[tuple[str, int, float, str]] = []
    with override_settings(MEDIA_ROOT=workdir / "media"), tenant_context(tenant.id):
        owner = Membership.objects.select_related("user").get(tenant=tenant, user__email="bench@example.com")
        define_attributes(tenant)

        def upload(path: Path) -> ImportJob:
            with path.open("rb") as handle:
                upload_file = File(handle, name=path.name)
                job, _ = importer.import_upload(tenant=tenant, upload=upload_file, acting=owner)  # type: ignore[arg-type]
            return job

        def start(job: ImportJob, consent: bool) -> ImportJob:
            # The second file has the first one's columns: its mapping is remembered, consent column skipped.
            mapping = importer.import_mapping_initial(job=job).mapping
            mapping["newsletter"] = importer.CONSENT if consent else importer.SKIP
            importer.import_set_mapping(
                job=job, mapping=mapping, consent_channel="email" if consent else "",
                consent_purpose="newsletter" if consent else "",
                consent_wording="Yes, send me the newsletter." if consent else "", acting=owner,
            )  # fmt: skip
            importer.import_start(job=job, acting=owner)  # autocommit: the eager task runs now
            return ImportJob.objects.get(pk=job.pk)

        def check(job: ImportJob, created: int, updated: int) -> str:
            assert job.status == ImportJob.Status.DONE, job.failure_reason
            assert (job.processed_rows, job.created_count, job.updated_count) == (ROWS, created, updated), (
                job.processed_rows, job.created_count, job.updated_count, job.error_count,
            )  # fmt: skip
            return f"{job.created_count:,} created, {job.updated_count:,} updated, {job.error_count:,} rejected"

        job, seconds = timed(lambda: upload(first_file))
        assert job.total_rows == ROWS, job.total_rows
        results.append(
            (f"upload check ({sizes[0] / 1e6:.1f} MB: encoding, delimiter, header, rows)", ROWS, seconds, "")
        )

        done, seconds = timed(lambda: start(job, consent=False))
        results.append(("run, all rows new contacts", ROWS, seconds, check(done, ROWS, 0)))

        def again() -> ImportJob:
            importer.import_restart(job=done, acting=owner)
            return ImportJob.objects.get(pk=job.pk)

        rerun, seconds = timed(again)
        results.append(("run again, every row updates a contact", ROWS, seconds, check(rerun, 0, ROWS)))

        second = upload(second_file)
        with_consent, seconds = timed(lambda: start(second, consent=True))
        consents = ConsentRecord.objects.filter(source="import").count()
        detail = f"{check(with_consent, ROWS, 0)}; {consents:,} consent records"
        results.append(("run, new contacts + consent column (60 % yes)", ROWS, seconds, detail))
        contacts = Contact.objects.count()

    print(f"\n### {time.strftime('%Y-%m-%d')} · {platform.node()} · {os.cpu_count()} cores · CSV import")
    print(
        f"{ROWS:,} rows per file, {len(COLUMNS)} columns, chunks of {importer.CHUNK_ROWS:,} rows, one process "
        f"(task run eagerly), PostgreSQL; {contacts:,} contacts at the end; peak RSS {rss_before:.0f} MB before "
        f"the imports, {peak_rss_mb():.0f} MB after\n"
    )
    print("| scenario | rows | seconds | rows/s | outcome |")
    print("|---|---:|---:|---:|---|")
    for name, rows, seconds, outcome in results:
        print(f"| {name} | {rows:,} | {seconds:.1f} | {rows / seconds:,.0f} | {outcome} |")


if __name__ == "__main__":
    main()
