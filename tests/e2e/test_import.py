"""CSV import in a real browser: upload, map, preview, run on a real Celery worker, watch the progress, read the report.

The live server and a real worker (in-process, on Redis, like tests/test_worker.py) share the
test database, so the browser sees exactly what a user would: the job queued after the
request commits, picked up by the worker, its progress polled by htmx until the report.
"""

from __future__ import annotations

import csv
import io
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from celery.contrib.testing.worker import start_worker
from playwright.sync_api import ConsoleMessage, Page, expect

from contacts.models import ConsentRecord, Contact, ImportJob
from segmentor.celery import app
from tenants.context import tenant_context
from tests.factories import UserFactory, make_tenant

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.worker

ROWS = 6_000
WORDING = "Yes, email me the newsletter. Unsubscribe at any time."


@pytest.fixture
def worker() -> Iterator[object]:
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10) as running:
        yield running


def customers_csv() -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
    writer.writerow(["Member no", "E-Mail", "First Name", "Country", "Newsletter"])
    for n in range(ROWS):
        writer.writerow([f"m{n}", f"customer{n}@example.com", f"Name {n}", "DE", "yes" if n % 100 == 0 else "no"])
    writer.writerow(["m-bad", "not-an-email", "Broken", "DE", "no"])
    writer.writerow(["m-bad-2", "x@example.com", "=cmd|' /C calc'!A0", "Atlantis", "no"])
    return buffer.getvalue().encode("utf-8")


def test_import_a_csv_and_watch_it_run(page: Page, sign_in, settings, tmp_path, worker) -> None:
    settings.MEDIA_ROOT = tmp_path
    owner = UserFactory()
    tenant = make_tenant("Importers Ltd", owner)
    sign_in(owner)
    csp_errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            csp_errors.append(message.text)

    page.on("console", on_console)
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if "/progress/" in r.url else None)

    # 1. Upload
    page.goto(f"/t/{tenant.slug}/contacts/imports/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Import contacts")
    page.get_by_label("CSV file").set_input_files(
        files=[{"name": "customers.csv", "mimeType": "text/csv", "buffer": customers_csv()}]
    )
    page.get_by_role("button", name="Upload").click()

    # 2. Map: guesses preselected, the rest chosen by hand, consent recorded for the newsletter
    expect(page).to_have_url(re.compile(rf"/t/{tenant.slug}/contacts/imports/\d+/map/$"))
    expect(page.get_by_text(f"Read {ROWS + 2:,} rows and 5 columns")).to_be_visible()
    expect(page.get_by_text("semicolon separated")).to_be_visible()
    expect(page.get_by_label("E-Mail", exact=True)).to_have_value("email")
    expect(page.get_by_label("First Name", exact=True)).to_have_value("first_name")
    expect(page.get_by_label("Newsletter", exact=True)).to_have_value("consent")
    expect(page.get_by_label("Member no", exact=True)).to_have_value("skip")
    page.get_by_label("Member no", exact=True).select_option("external_id")
    page.get_by_label("The consent column grants consent to").select_option("email")
    page.get_by_label("for the purpose").select_option("newsletter")
    page.get_by_label("Wording the people agreed to").fill(WORDING)
    page.get_by_role("button", name="Preview").click()

    # 3. Preview: ten rows as they will be imported
    expect(page).to_have_url(re.compile(r"/imports/\d+/preview/$"))
    preview = page.get_by_test_id("preview")
    expect(preview.locator('tbody tr[data-status="created"]')).to_have_count(10)
    expect(preview.get_by_role("cell", name="customer0@example.com")).to_be_visible()
    expect(preview.get_by_role("cell", name="grants email · newsletter").first).to_be_visible()
    with tenant_context(tenant.id):
        assert not Contact.objects.exists()

    # 4. Run: the progress bar is polled until the worker is done, then the report replaces it
    page.get_by_role("button", name="Start import").click()
    expect(page).to_have_url(re.compile(r"/imports/\d+/$"))
    progress = page.get_by_test_id("import-progress")
    seen: list[int] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        value = progress.get_attribute("value") if progress.count() else None
        if value is not None:
            seen.append(int(value))
            if value == "100":
                break
        page.wait_for_timeout(100)
    print(f"progress values seen: {sorted(set(seen))}")
    assert seen and seen[-1] == 100, seen
    assert seen == sorted(seen), f"progress went backwards: {seen}"
    assert polls, "the page polled the progress partial"
    expect(page.get_by_role("heading", name="Import finished")).to_be_visible()
    expect(page.get_by_test_id("count-processed")).to_have_text(str(ROWS + 2))
    expect(page.get_by_test_id("count-created")).to_have_text(str(ROWS))
    expect(page.get_by_test_id("count-rejected")).to_have_text("2")
    expect(page.get_by_test_id("consent-outcome")).to_contain_text("recorded for 60 contacts")
    # Polling has stopped: no request for the partial after the report arrived.
    settled = len(polls)
    page.wait_for_timeout(2_500)
    assert len(polls) == settled

    # 5. The rejected rows, with reasons, escaped for spreadsheets
    with page.expect_download() as download_info:
        page.get_by_test_id("rejected-rows").click()
    download = download_info.value
    assert download.suggested_filename.endswith("-rejected-rows.csv")
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text(encoding="utf-8-sig"))))
    assert [(r["Member no"], r["First Name"]) for r in rows] == [
        ("m-bad", "Broken"),
        ("m-bad-2", "'=cmd|' /C calc'!A0"),
    ]
    assert "not a valid email address" in rows[0]["reason"] and "Atlantis" in rows[1]["reason"]

    with tenant_context(tenant.id):
        job = ImportJob.objects.get()
        assert job.status == ImportJob.Status.DONE
        assert Contact.objects.count() == ROWS
        assert Contact.objects.get(external_id="m42").email == "customer42@example.com"
        assert ConsentRecord.objects.filter(source="import", wording=WORDING).count() == ROWS // 100
    assert csp_errors == []
