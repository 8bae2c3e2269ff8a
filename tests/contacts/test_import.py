"""CSV import: upload, mapping (guessed and remembered), preview, the run as a Celery job, the report."""

from __future__ import annotations

import codecs
import csv
import io
import time
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from contacts import importer
from contacts.consent import ConsentEvidence, consent_change, is_suppressed, suppression_add
from contacts.importer import import_restart, import_run, import_set_mapping, import_start, import_upload, run_import
from contacts.models import (
    AttributeDefinition,
    Channel,
    ConsentRecord,
    ConsentSource,
    ConsentState,
    ConsentStatus,
    Contact,
    ImportJob,
    Suppression,
)
from segmentor.celery import app
from tenants.audit import Actor
from tenants.context import tenant_context
from tenants.models import AuditLog
from tests.conftest import World

pytestmark = pytest.mark.django_db

WORDING = "Yes, send me the monthly newsletter. You can unsubscribe at any time."


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def in_a(world: World):
    with tenant_context(world.tenant_a.id):
        yield world.tenant_a


def csv_bytes(rows: list[list[str]], delimiter: str = ",", encoding: str = "utf-8") -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue().encode(encoding)


def url(world: World, name: str, job: ImportJob | None = None) -> str:
    kwargs: dict[str, Any] = {"tenant_slug": world.tenant_a.slug}
    if job is not None:
        kwargs["import_id"] = job.pk
    return reverse(f"contacts:{name}", kwargs=kwargs)


def upload(client: Client, world: World, content: bytes, name: str = "contacts.csv"):
    return client.post(url(world, "import_list"), {"file": SimpleUploadedFile(name, content, "text/csv")})


def make_job(world: World, content: bytes, mapping: dict[str, str] | None = None, **consent: str) -> ImportJob:
    """Upload, map (the guesses unless given) and queue an import, as Alice, through the services."""
    with tenant_context(world.tenant_a.id):
        job, _ = import_upload(
            tenant=world.tenant_a, upload=SimpleUploadedFile("c.csv", content), acting=world.alice_membership
        )
        proposal = importer.import_mapping_initial(job=job)
        import_set_mapping(
            job=job,
            mapping=mapping or proposal.mapping,
            consent_channel=consent.get("channel", ""),
            consent_purpose=consent.get("purpose", ""),
            consent_wording=consent.get("wording", ""),
            acting=world.alice_membership,
        )
        return import_start(job=job, acting=world.alice_membership)


def run(world: World, job: ImportJob) -> ImportJob:
    """Run the task body in this process (the worker test runs it on a real worker)."""
    run_import(world.tenant_a.id, job.pk)
    with tenant_context(world.tenant_a.id):
        return ImportJob.objects.get(pk=job.pk)


def rejected_rows(job: ImportJob) -> list[dict[str, str]]:
    with job.errors_file.open("rb") as report:
        return list(csv.DictReader(io.StringIO(report.read().decode("utf-8-sig"))))


def contacts_in_a(world: World) -> dict[str, Contact]:
    with tenant_context(world.tenant_a.id):
        return {c.email or c.external_id: c for c in Contact.objects.all()}


PEOPLE = [
    ["E-Mail", "First Name", "Surname", "Country", "Newsletter"],
    ["ann@example.com", "Ann", "Lee", "DE", "yes"],
    ["bo@example.com", "Bo", "Berg", "SE", "no"],
    ["not-an-email", "Cy", "Cole", "FR", "yes"],
    ["dee@example.com", "Dee", "Dunn", "Atlantis", "1"],
    ["eve@example.com", "=cmd|' /C calc'!A0", "Eden", "GB", "x"],
]
NO_CONSENT = {"E-Mail": "email", "First Name": "first_name", "Surname": "last_name", "Country": "country",
              "Newsletter": "skip"}  # fmt: skip


# --- the whole flow, on a real worker ---------------------------------------------------------
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_upload_map_preview_and_run_on_a_real_worker(world: World, alice_client: Client):
    response = upload(alice_client, world, csv_bytes(PEOPLE))
    assert response.status_code == 302, response.content.decode()
    with tenant_context(world.tenant_a.id):
        job = ImportJob.objects.get()
    assert response["Location"] == url(world, "import_map", job)
    assert (job.headers, job.total_rows, job.delimiter, job.encoding) == (PEOPLE[0], 5, ",", "utf-8")

    page = alice_client.get(url(world, "import_map", job)).content.decode()
    assert '<option value="email" selected>' in page  # "E-Mail" guessed as email
    form = {
        "column_0": "email", "column_1": "first_name", "column_2": "last_name", "column_3": "country",
        "column_4": "consent", "consent_channel": "email", "consent_purpose": "newsletter", "consent_wording": WORDING,
    }  # fmt: skip
    response = alice_client.post(url(world, "import_map", job), form)
    assert response.status_code == 302 and response["Location"] == url(world, "import_preview", job)

    preview = alice_client.get(url(world, "import_preview", job)).content.decode()
    assert "is not a valid email address" in preview and "is not an ISO 3166 country code" in preview
    assert preview.count('data-status="created"') == 3
    assert contacts_in_a(world) == {}, "the preview writes nothing"

    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        response = alice_client.post(url(world, "import_preview", job))
        assert response.status_code == 302 and response["Location"] == url(world, "import_detail", job)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with tenant_context(world.tenant_a.id):
                job.refresh_from_db()
            if job.status in (ImportJob.Status.DONE, ImportJob.Status.FAILED):
                break
            time.sleep(0.1)
    assert job.status == ImportJob.Status.DONE, job.failure_reason
    assert (job.processed_rows, job.created_count, job.updated_count, job.error_count) == (5, 3, 0, 2)

    people = contacts_in_a(world)
    assert set(people) == {"ann@example.com", "bo@example.com", "eve@example.com"}
    assert people["ann@example.com"].last_name == "Lee" and people["ann@example.com"].country.code == "DE"
    # Our own formula escaping is undone on the way in; the export escapes it again.
    assert people["eve@example.com"].first_name == "=cmd|' /C calc'!A0"
    with tenant_context(world.tenant_a.id):
        records = list(ConsentRecord.objects.select_related("contact").order_by("contact__email"))
        entry = AuditLog.objects.get(action="contacts.imported")
    assert [(r.contact.email, r.source, r.status, r.wording) for r in records] == [
        ("ann@example.com", ConsentSource.IMPORT, ConsentStatus.GRANTED, WORDING),
        ("eve@example.com", ConsentSource.IMPORT, ConsentStatus.GRANTED, WORDING),
    ]
    assert entry.object_id == str(job.pk) and entry.actor_user_id == world.alice.pk
    assert entry.data == {
        "rows": 5, "created": 3, "updated": 0, "rejected": 2,
        "consent_recorded": 2, "consent_unchanged": 0, "consent_suppressed": 0,
    }  # fmt: skip

    report = alice_client.get(url(world, "import_progress", job)).content.decode()
    assert "hx-trigger" not in report, "polling stops once the job is done"
    assert 'value="100"' in report and "Import finished" in report
    download = alice_client.get(url(world, "import_rejected_rows", job))
    rows = list(csv.DictReader(io.StringIO(b"".join(download.streaming_content).decode("utf-8-sig"))))
    assert [(r["line"], r["E-Mail"]) for r in rows] == [("4", "not-an-email"), ("5", "dee@example.com")]
    assert "E-Mail: 'not-an-email' is not a valid email address." in rows[0]["reason"]
    assert "Country:" in rows[1]["reason"] and "Atlantis" in rows[1]["reason"]


# --- mapping ---------------------------------------------------------------------------------
def test_columns_are_guessed_from_their_names(world: World, in_a):
    AttributeDefinition.objects.create(tenant=in_a, key="plan", label="Plan", type="text")
    schema = importer.AttributeSchema(in_a)
    headers = ["Customer ID", "Email Address", "first_name", "Last", "Mobile", "ZIP", "DOB", "Plan", "Opt-in", "Notes"]
    assert importer.guess_mapping(headers, schema) == {
        "Customer ID": "external_id", "Email Address": "email", "first_name": "first_name", "Last": "last_name",
        "Mobile": "phone", "ZIP": "postal_code", "DOB": "birth_date", "Plan": "attributes.plan", "Opt-in": "consent",
        "Notes": "skip",
    }  # fmt: skip
    # A target is used once: the second "mail" column is not imported over the first.
    assert importer.guess_mapping(["email", "mail"], schema) == {"email": "email", "mail": "skip"}


def test_the_mapping_is_remembered_for_files_with_the_same_columns(world: World, alice_client: Client):
    headers = ["Kundennummer", "Mail", "Name"]
    mapping = {"Kundennummer": "external_id", "Mail": "email", "Name": "first_name"}
    make_job(world, csv_bytes([headers, ["k1", "a@example.com", "A"]]), mapping)
    upload(alice_client, world, csv_bytes([headers, ["k2", "b@example.com", "B"]]), name="second.csv")
    upload(alice_client, world, csv_bytes([["Mail", "Name"], ["c@example.com", "C"]]), name="other.csv")
    with tenant_context(world.tenant_a.id):
        same, other = (
            ImportJob.objects.get(original_name="second.csv"),
            ImportJob.objects.get(original_name="other.csv"),
        )

    page = alice_client.get(url(world, "import_map", same)).content.decode()
    assert 'data-testid="mapping-remembered"' in page
    assert '<option value="external_id" selected>' in page  # "Kundennummer" is no guess: remembered
    with tenant_context(world.tenant_a.id):
        assert importer.import_mapping_initial(job=same).mapping == mapping
        # Different columns: no memory, only guesses ("Name" is not a field name).
        assert importer.import_mapping_initial(job=other).mapping == {"Mail": "email", "Name": "skip"}
    assert 'data-testid="mapping-remembered"' not in alice_client.get(url(world, "import_map", other)).content.decode()


def test_a_mapping_needs_an_identity_column_and_one_column_per_field(world: World, alice_client: Client):
    upload(alice_client, world, csv_bytes([["a", "b", "c"], ["x@example.com", "y@example.com", "z"]]))
    with tenant_context(world.tenant_a.id):
        job = ImportJob.objects.get()
    map_url = url(world, "import_map", job)
    page = alice_client.post(map_url, {"column_0": "first_name", "column_1": "skip", "column_2": "skip"})
    assert page.status_code == 400 and "Map a column to External id or Email" in page.content.decode()
    page = alice_client.post(map_url, {"column_0": "email", "column_1": "email", "column_2": "skip"})
    assert page.status_code == 400 and "Email is chosen for more than one column" in page.content.decode()
    page = alice_client.post(map_url, {"column_0": "email", "column_1": "skip", "column_2": "consent"})
    body = page.content.decode()
    assert page.status_code == 400 and "Choose the channel" in body and "Give the wording" in body
    with tenant_context(world.tenant_a.id):
        job.refresh_from_db()
    assert job.mapping == {}


# --- reading files -----------------------------------------------------------------------------
def test_utf8_with_byte_order_mark(world: World):
    job = make_job(world, codecs.BOM_UTF8 + csv_bytes([["email", "city"], ["zoe@example.com", "Zürich"]]))
    assert job.headers == ["email", "city"] and job.encoding == "utf-8-sig"
    run(world, job)
    assert contacts_in_a(world)["zoe@example.com"].city == "Zürich"


def test_excel_unicode_text_utf16_tab_separated(world: World):
    job = make_job(
        world, csv_bytes([["email", "city"], ["zoe@example.com", "Łódź"]], delimiter="\t", encoding="utf-16")
    )
    assert (job.encoding, job.delimiter, job.headers) == ("utf-16", "\t", ["email", "city"])
    run(world, job)
    assert contacts_in_a(world)["zoe@example.com"].city == "Łódź"


def test_windows_1252_falls_back_with_a_note(world: World, alice_client: Client):
    content = csv_bytes(
        [["email", "city"], ["rene@example.com", "Besançon"], ["o@example.com", "Köln – Süd"]], encoding="cp1252"
    )
    response = upload(alice_client, world, content)
    with tenant_context(world.tenant_a.id):
        job = ImportJob.objects.get()
    assert job.encoding == "cp1252"
    page = alice_client.get(response["Location"]).content.decode()
    assert "read as Windows-1252" in page
    job = make_job(world, content)
    run(world, job)
    people = contacts_in_a(world)
    assert people["rene@example.com"].city == "Besançon" and people["o@example.com"].city == "Köln – Süd"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (bytes(range(256)) * 40, "This file is not text"),
        (b"PK\x03\x04\x14\x00\x06\x00" + b"\x00" * 200, "This is an Excel workbook or another ZIP archive"),
        (b"", "The file is empty."),
        (b"\r\n \r\n", "The file is empty."),
        (b"email,first_name\r\n", "The file has a header row but no data rows."),
        (b"email,,city\r\na@example.com,x,y\r\n", "Column 2 of the header row has no name"),
        (b"email,City,city\r\na@example.com,x,y\r\n", "“city” is both column 2 and column 3"),
        (b"ann@example.com,Ann\r\nbo@example.com,Bo\r\n", "The first row looks like data (“ann@example.com”)"),
        (b'email,city\r\na@example.com,"Berlin\r\nb@example.com,Rome\r\n', "line 2: a quoted field is never closed"),
        (codecs.BOM_UTF8 + "email\r\nä@x.de\r\n".encode("latin-1"), "starts with a UTF-8 marker but is not valid"),
    ],
    ids=["binary", "xlsx", "empty", "blank-lines", "header-only", "empty-header", "duplicate-header",
         "no-header", "open-quote", "bad-utf8-after-bom"],
)  # fmt: skip
def test_malformed_files_get_a_clear_answer(world: World, alice_client: Client, content: bytes, message: str):
    response = upload(alice_client, world, content)
    assert response.status_code == 400
    assert message in response.content.decode()
    with tenant_context(world.tenant_a.id):
        assert not ImportJob.objects.exists()


@pytest.mark.parametrize("delimiter", [";", "\t"], ids=["semicolon", "tab"])
def test_semicolon_and_tab_delimiters_are_detected(world: World, delimiter: str):
    rows = [
        ["email", "first_name", "company"],
        ["ann@example.com", "Ann", "Lee, Berg & Co"],
        ["bo@example.com", "Bo", "X"],
    ]
    job = make_job(world, csv_bytes(rows, delimiter=delimiter))
    assert job.delimiter == delimiter and job.headers == rows[0]
    run(world, job)
    assert contacts_in_a(world)["ann@example.com"].company == "Lee, Berg & Co"


def test_ragged_rows_are_rejected_with_a_reason_and_the_rest_imported(world: World, alice_client: Client):
    content = (
        b"email,first_name\r\nann@example.com,Ann\r\nbo@example.com\r\n"
        b"cy@example.com,Cy,extra\r\ndee@example.com,Dee,,\r\n"
    )
    response = upload(alice_client, world, content)
    page = alice_client.get(response["Location"]).content.decode()
    assert "2 row(s) have a different number of fields than the header row" in page
    job = run(world, make_job(world, content))
    assert (job.processed_rows, job.created_count, job.error_count) == (4, 2, 2)
    assert set(contacts_in_a(world)) == {"ann@example.com", "dee@example.com"}  # trailing empty cells are fine
    assert [(r["line"], r["reason"]) for r in rejected_rows(job)] == [
        ("3", "This row has 1 field(s); the header row has 2."),
        ("4", "This row has 3 field(s); the header row has 2."),
    ]


def test_a_file_over_the_limit_is_refused_from_its_length_without_reading_it(world: World, alice_client, settings):
    settings.CONTACT_IMPORT_MAX_BYTES = 200 * 1024 * 1024

    class Unreadable:
        def read(self, *args):
            raise AssertionError("the body was read")

        readline = read

    response = alice_client.generic(
        "POST",
        url(world, "import_list"),
        data=b"-",
        content_type="multipart/form-data; boundary=xyz",
        CONTENT_LENGTH=str(500 * 1024 * 1024),
        **{"wsgi.input": Unreadable()},
    )
    assert response.status_code == 413
    assert "The file is too large: about 500 MB, and imports take at most 200 MB." in response.content.decode()
    with tenant_context(world.tenant_a.id):
        assert not ImportJob.objects.exists()


def test_a_file_just_over_the_limit_is_stopped_while_streaming(world: World, alice_client: Client, settings):
    settings.CONTACT_IMPORT_MAX_BYTES = 1024
    content = csv_bytes([["email"]] + [[f"person{n}@example.com"] for n in range(200)])
    response = upload(alice_client, world, content)
    assert response.status_code == 413
    assert "The file is too large" in response.content.decode()
    with tenant_context(world.tenant_a.id):
        assert not ImportJob.objects.exists()


# --- the run ---------------------------------------------------------------------------------
def test_invalid_rows_go_to_the_report_and_valid_rows_are_imported(world: World):
    job = run(world, make_job(world, csv_bytes(PEOPLE), NO_CONSENT))
    assert job.status == ImportJob.Status.DONE
    assert (job.created_count, job.error_count) == (3, 2)
    rows = rejected_rows(job)
    assert [r["line"] for r in rows] == ["4", "5"]
    assert list(rows[0])[:2] == ["line", "reason"] and list(rows[0])[2:] == PEOPLE[0]
    assert "not-an-email" in rows[0]["reason"]


def test_formula_cells_are_escaped_in_the_rejected_rows_report(world: World):
    content = csv_bytes([["email", "first_name"], ["bad", '=HYPERLINK("http://evil")'], ["@x", "+Zoë"]])
    job = run(world, make_job(world, content))
    rows = rejected_rows(job)
    assert [r["first_name"] for r in rows] == ['\'=HYPERLINK("http://evil")', "'+Zoë"]
    assert rows[1]["email"] == "'@x"
    with job.errors_file.open("rb") as report:
        assert report.read(3) == codecs.BOM_UTF8, "UTF-8 with a byte-order mark, so Excel shows the ë"


def test_a_doubled_task_does_not_import_twice(world: World):
    job = make_job(world, csv_bytes(PEOPLE), NO_CONSENT)
    run_import(world.tenant_a.id, job.pk)
    run_import(world.tenant_a.id, job.pk)  # the same message delivered again
    with tenant_context(world.tenant_a.id):
        job.refresh_from_db()
        assert Contact.objects.count() == 3
        assert AuditLog.objects.filter(action="contacts.imported").count() == 1
    assert (job.created_count, job.updated_count) == (3, 0)


def test_a_running_job_is_not_claimed_again(world: World):
    job = make_job(world, csv_bytes(PEOPLE), NO_CONSENT)
    with tenant_context(world.tenant_a.id):
        ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.RUNNING)
        assert import_run(job_id=job.pk) is None
        assert not Contact.objects.exists()


def test_running_a_job_again_gives_the_same_result(world: World):
    rows = [["external_id", "email", "city", "opt_in"]] + [
        [f"u{n}", f"p{n}@example.com", f"City {n}", "yes"] for n in range(25)
    ]
    job = make_job(world, csv_bytes(rows), channel="email", purpose="newsletter", wording=WORDING)
    first = run(world, job)
    assert (first.created_count, first.updated_count) == (25, 0)
    before = {k: (c.pk, c.city, c.external_id) for k, c in contacts_in_a(world).items()}
    with tenant_context(world.tenant_a.id):
        import_restart(job=first, acting=world.alice_membership)
    second = run(world, job)
    assert (second.created_count, second.updated_count, second.error_count) == (0, 25, 0)
    assert {k: (c.pk, c.city, c.external_id) for k, c in contacts_in_a(world).items()} == before
    with tenant_context(world.tenant_a.id):
        assert ConsentRecord.objects.count() == 25, "a second run records no second consent"


def test_a_failing_chunk_leaves_nothing_half_applied_and_the_job_can_run_again(world: World, monkeypatch):
    rows = [["email", "newsletter"]] + [[f"p{n}@example.com", "yes"] for n in range(6)]
    job = make_job(world, csv_bytes(rows), channel="email", purpose="newsletter", wording=WORDING)
    real_grant = importer.consents_grant_new
    calls = {"n": 0}

    def flaky_grant(**kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the consent of the second chunk of three
            raise ConnectionError("database went away")
        return real_grant(**kwargs)

    monkeypatch.setattr(importer, "consents_grant_new", flaky_grant)
    with tenant_context(world.tenant_a.id):
        failed = import_run(job_id=job.pk, chunk_rows=3)
    assert failed is not None and failed.status == ImportJob.Status.FAILED
    assert failed.processed_rows == 3
    assert "stopped after 3 of 6 rows" in failed.failure_reason and "ConnectionError" in failed.failure_reason
    # The second chunk's contacts were upserted before its consent failed, and rolled back with it.
    assert set(contacts_in_a(world)) == {"p0@example.com", "p1@example.com", "p2@example.com"}

    monkeypatch.setattr(importer, "consents_grant_new", real_grant)
    with tenant_context(world.tenant_a.id):
        import_restart(job=failed, acting=world.alice_membership)
        done = import_run(job_id=job.pk, chunk_rows=3)
        assert ConsentRecord.objects.count() == 6
    assert done is not None and done.status == ImportJob.Status.DONE
    assert (done.processed_rows, done.created_count, done.updated_count) == (6, 3, 3)
    assert len(contacts_in_a(world)) == 6


def test_a_restarted_jobs_old_run_stops_without_committing_more(world: World, monkeypatch):
    rows = [["email"]] + [[f"p{n}@example.com"] for n in range(6)]
    job = make_job(world, csv_bytes(rows))
    real_upsert = importer.contacts_bulk_upsert
    calls = {"n": 0}

    def upsert_then_get_restarted(**kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # meanwhile someone restarted the job and a new run claimed it
            ImportJob.objects.filter(pk=job.pk).update(started_at=importer.timezone.now())
        return real_upsert(**kwargs)

    monkeypatch.setattr(importer, "contacts_bulk_upsert", upsert_then_get_restarted)
    with tenant_context(world.tenant_a.id):
        assert import_run(job_id=job.pk, chunk_rows=3) is None
        job.refresh_from_db()
    assert job.processed_rows == 3
    assert len(contacts_in_a(world)) == 3


# --- consent -----------------------------------------------------------------------------------
def test_a_consent_column_records_consent_with_source_import_and_the_wording(world: World):
    rows = [["email", "consent"], ["a@example.com", "Yes"], ["b@example.com", "no"], ["c@example.com", ""],
            ["d@example.com", "maybe"], ["e@example.com", "TRUE"]]  # fmt: skip
    job = run(world, make_job(world, csv_bytes(rows), channel="email", purpose="newsletter", wording=WORDING))
    assert (job.created_count, job.error_count) == (4, 1)
    assert rejected_rows(job)[0]["reason"] == "consent: 'maybe' is not yes or no."
    with tenant_context(world.tenant_a.id):
        records = ConsentRecord.objects.select_related("contact").order_by("contact__email")
        assert [
            (r.contact.email, r.channel, r.purpose, r.status, r.source, r.legal_basis, r.wording) for r in records
        ] == [
            ("a@example.com", "email", "newsletter", "granted", "import", "consent", WORDING),
            ("e@example.com", "email", "newsletter", "granted", "import", "consent", WORDING),
        ]
        assert records[0].actor == f"{world.alice.email} (import #{job.pk})"
        assert ConsentState.objects.filter(status=ConsentStatus.GRANTED).count() == 2


def test_a_suppressed_address_stays_suppressed_and_a_withdrawal_stands_after_reimport(world: World):
    with tenant_context(world.tenant_a.id):
        suppression_add(tenant=world.tenant_a, channel=Channel.EMAIL, address="gone@example.com",
                        reason=Suppression.Reason.UNSUBSCRIBE)  # fmt: skip
    first = run(world, make_job(world, csv_bytes([["email"], ["gone@example.com"], ["left@example.com"]])))
    assert first.created_count == 2
    with tenant_context(world.tenant_a.id):
        left = Contact.objects.get(email="left@example.com")
        consent_change(
            contact=left, channel="email", purpose="newsletter", status=ConsentStatus.WITHDRAWN,
            evidence=ConsentEvidence(source=ConsentSource.ADMIN), actor=Actor.system(),
        )  # fmt: skip

    rows = [["email", "subscribed"], ["gone@example.com", "yes"], ["left@example.com", "yes"], ["new@example.com", "y"]]
    job = run(world, make_job(world, csv_bytes(rows), channel="email", purpose="newsletter", wording=WORDING))
    assert (job.created_count, job.updated_count) == (1, 2)
    with tenant_context(world.tenant_a.id):
        assert is_suppressed(tenant=world.tenant_a, channel=Channel.EMAIL, address="gone@example.com")
        states = {s.contact.email: s.status for s in ConsentState.objects.select_related("contact")}
        assert states == {"left@example.com": "withdrawn", "new@example.com": "granted"}
        assert AuditLog.objects.filter(action="contacts.imported").first().data["consent_suppressed"] == 1


# --- pages -------------------------------------------------------------------------------------
def test_the_preview_shows_the_first_rows_as_imported_and_writes_nothing(world: World, alice_client: Client):
    rows = [["email", "phone", "interests"]] + [
        [f"p{n}@Example.com", "+49 151 23456789", "Yoga, running"] for n in range(12)
    ]
    rows[3][1] = "12"
    with tenant_context(world.tenant_a.id):
        Contact.objects.create(tenant=world.tenant_a, email="p1@example.com")
    job = make_job(world, csv_bytes(rows))
    with tenant_context(world.tenant_a.id):
        ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.UPLOADED)
    page = alice_client.get(url(world, "import_preview", job)).content.decode()
    assert sum(page.count(f'<tr data-status="{status}"') for status in ("created", "updated", "error")) == 10
    assert 'data-status="updated"' in page and page.count('data-status="error"') == 1
    assert "p0@example.com" in page and "+4915123456789" in page and "yoga, running" in page
    assert "phone: &#x27;12&#x27; is not" in page
    with tenant_context(world.tenant_a.id):
        assert Contact.objects.count() == 1
    assert "Start import" in page


def test_progress_polls_while_running_and_the_report_offers_the_rejected_rows(world: World, alice_client, bob_client):
    job = make_job(world, csv_bytes(PEOPLE), NO_CONSENT)
    partial = alice_client.get(url(world, "import_progress", job)).content.decode()
    assert 'hx-trigger="every 1s"' in partial and "Waiting for a worker" in partial
    with tenant_context(world.tenant_a.id):
        ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.RUNNING, processed_rows=2)
    partial = alice_client.get(url(world, "import_progress", job)).content.decode()
    assert 'hx-trigger="every 1s"' in partial and 'value="40"' in partial and "2</span> of 5 rows (40 %)" in partial
    with tenant_context(world.tenant_a.id):
        ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.QUEUED)
    run(world, job)
    detail = alice_client.get(url(world, "import_detail", job)).content.decode()
    assert "hx-trigger" not in detail and 'data-testid="rejected-rows"' in detail and "Run again" in detail
    # Bob (viewer) sees the report but not the rows' personal data, and may not change anything.
    detail = bob_client.get(url(world, "import_detail", job)).content.decode()
    assert "Import finished" in detail and 'data-testid="rejected-rows"' not in detail and "Run again" not in detail
    assert bob_client.get(url(world, "import_rejected_rows", job)).status_code == 403
    assert bob_client.get(url(world, "import_map", job)).status_code == 403
    assert bob_client.post(url(world, "import_restart", job)).status_code == 403
    assert upload(bob_client, world, csv_bytes(PEOPLE)).status_code == 403


def test_an_import_starts_once(world: World, alice_client: Client, django_capture_on_commit_callbacks):
    job = make_job(world, csv_bytes(PEOPLE), NO_CONSENT)
    with tenant_context(world.tenant_a.id):
        ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.UPLOADED)
    with django_capture_on_commit_callbacks() as callbacks:
        alice_client.post(url(world, "import_preview", job))
        response = alice_client.post(url(world, "import_preview", job), follow=True)
    assert len(callbacks) == 1, "one task queued"
    assert "This import has already started." in response.content.decode()
