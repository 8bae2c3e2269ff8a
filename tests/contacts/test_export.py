"""CSV export of contacts: every row by keyset pages, formula cells escaped, export permission."""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from contacts.export import contact_rows, escape_formula
from contacts.importer import import_mapping_initial, import_set_mapping, import_start, import_upload, run_import
from contacts.models import AttributeDefinition, Contact, ImportJob
from tenants.context import tenant_context
from tenants.models import AuditLog
from tests.conftest import World

pytestmark = pytest.mark.django_db


def export_url(world: World) -> str:
    return reverse("contacts:contacts_export_csv", kwargs={"tenant_slug": world.tenant_a.slug})


def download(client: Client, world: World) -> tuple[bytes, list[dict[str, str]]]:
    response = client.get(export_url(world))
    assert response.status_code == 200
    assert response.streaming and response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith(f'attachment; filename="contacts-{world.tenant_a.slug}-')
    body = b"".join(response.streaming_content)  # read after the request, as a WSGI server does
    return body, list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))


@pytest.mark.parametrize(
    ("value", "escaped"),
    [("=1+2", "'=1+2"), ("+49", "'+49"), ("-3", "'-3"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"),
     ("\rx", "'\rx"), ("a=b", "a=b"), ("", ""), ("'quoted", "'quoted")],
)  # fmt: skip
def test_escape_formula(value: str, escaped: str):
    assert escape_formula(value) == escaped


def test_formula_cells_are_escaped(world: World, alice_client: Client):
    with tenant_context(world.tenant_a.id):
        AttributeDefinition.objects.create(tenant=world.tenant_a, key="note", label="Note", type="text")
        Contact.objects.create(
            tenant=world.tenant_a, email="mallory@example.com", first_name="=cmd|' /C calc'!A0", last_name="+SUM(1)",
            company="@evil", city="-2+3", region="\tTab", postal_code="\rCR", interests=["=tag", "ok"],
            attributes={"note": "=HYPERLINK(\"http://evil.example\")"},
        )  # fmt: skip
    body, [row] = download(alice_client, world)
    assert (row["first_name"], row["last_name"], row["company"], row["city"]) == (
        "'=cmd|' /C calc'!A0", "'+SUM(1)", "'@evil", "'-2+3"
    )  # fmt: skip
    assert row["region"] == "'\tTab" and row["postal_code"] == "'\rCR"
    assert row["interests"] == "'=tag, ok"
    assert row["attributes.note"] == '\'=HYPERLINK("http://evil.example")'
    assert b"\n=" not in body and b",=" not in body and b",+" not in body


def test_every_contact_is_exported_across_keyset_pages(world: World, alice_client: Client):
    with tenant_context(world.tenant_a.id):
        AttributeDefinition.objects.bulk_create(
            [
                AttributeDefinition(tenant=world.tenant_a, key="plan", label="Plan", type="text"),
                AttributeDefinition(tenant=world.tenant_a, key="vip", label="VIP", type="boolean"),
            ]
        )
        Contact.objects.bulk_create(
            Contact(
                tenant=world.tenant_a, email=f"p{n}@example.com", external_id=f"u{n}", country="DE",
                birth_date=dt.date(1990, 1, 1 + n % 28), total_revenue=Decimal("12.50"), interests=["yoga", "tea"],
                attributes={"plan": "pro", "vip": n % 2 == 0},
            )
            for n in range(2_050)
        )  # fmt: skip
        Contact.objects.create(tenant=world.tenant_a, email="erased@example.com", erased_at=dt.datetime.now(dt.UTC))
    with tenant_context(world.tenant_b.id):
        Contact.objects.create(tenant=world.tenant_b, email="other-tenant@example.com")

    _, rows = download(alice_client, world)
    assert len(rows) == 2_050
    assert [r["email"] for r in rows[:2]] == ["p0@example.com", "p1@example.com"]
    ids = [int(r["segmentor_id"]) for r in rows]
    assert ids == sorted(set(ids))
    first = rows[0]
    assert (first["external_id"], first["country"], first["birth_date"], first["total_revenue"]) == (
        "u0", "DE", "1990-01-01", "12.50"
    )  # fmt: skip
    assert (first["interests"], first["attributes.plan"], first["attributes.vip"]) == ("yoga, tea", "pro", "true")
    assert rows[1]["attributes.vip"] == "false"
    assert first["lifecycle_stage"] == "new_visitor"
    with tenant_context(world.tenant_a.id):
        assert AuditLog.objects.filter(action="contacts.exported", actor_user=world.alice).count() == 1

    # The pages meet without a gap or an overlap, whatever their size.
    with tenant_context(world.tenant_a.id):
        ids = list(Contact.objects.filter(erased_at__isnull=True).order_by("pk").values_list("pk", flat=True))
    paged = [int(row[0]) for row in contact_rows(tenant_id=world.tenant_a.id, attribute_keys=[], batch_size=7)]
    assert paged == ids


def test_exporting_needs_the_export_permission(world: World, bob_client: Client, charlie_client: Client):
    assert bob_client.get(export_url(world)).status_code == 403
    assert charlie_client.get(export_url(world)).status_code == 404
    with tenant_context(world.tenant_a.id):
        assert not AuditLog.objects.filter(action="contacts.exported").exists()


def test_an_export_imports_back_unchanged(world: World, alice_client: Client, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    with tenant_context(world.tenant_a.id):
        AttributeDefinition.objects.create(tenant=world.tenant_a, key="score", label="Score", type="number")
        Contact.objects.create(
            tenant=world.tenant_a, email="ann@example.com", phone="+4915123456789", first_name="-Ann-",
            country="FR", interests=["yoga"], attributes={"score": 7}, time_zone="Europe/Paris",
        )  # fmt: skip
        Contact.objects.create(tenant=world.tenant_a, external_id="u-2", first_name="=Bo")
    body, _ = download(alice_client, world)
    with tenant_context(world.tenant_a.id):
        job, _ = import_upload(
            tenant=world.tenant_a, upload=SimpleUploadedFile("export.csv", body), acting=world.alice_membership
        )
        mapping = import_mapping_initial(job=job).mapping
        assert mapping["segmentor_id"] == "skip" and mapping["attributes.score"] == "attributes.score"
        assert mapping["phone"] == "phone" and mapping["lifecycle_stage"] == "skip"
        import_set_mapping(
            job=job, mapping=mapping, consent_channel="", consent_purpose="", consent_wording="",
            acting=world.alice_membership,
        )  # fmt: skip
        import_start(job=job, acting=world.alice_membership)
    run_import(world.tenant_a.id, job.pk)
    with tenant_context(world.tenant_a.id):
        job = ImportJob.objects.get(pk=job.pk)
        assert (job.created_count, job.updated_count, job.error_count) == (0, 2, 0)
        ann = Contact.objects.get(email="ann@example.com")
        assert (ann.phone, ann.first_name, ann.attributes) == ("+4915123456789", "-Ann-", {"score": 7})
        assert Contact.objects.get(external_id="u-2").first_name == "=Bo"


@pytest.mark.django_db(transaction=True)
def test_the_stream_is_read_after_the_request_under_row_level_security(world: World, alice_client: Client):
    # As under a WSGI server: the body is read after the request's transaction committed and the
    # middleware forgot the tenant; each page opens its own tenant-scoped query.
    with tenant_context(world.tenant_a.id):
        Contact.objects.bulk_create(Contact(tenant=world.tenant_a, email=f"a{n}@example.com") for n in range(5))
    with tenant_context(world.tenant_b.id):
        Contact.objects.create(tenant=world.tenant_b, email="b@example.com")
    _, rows = download(alice_client, world)
    assert [r["email"] for r in rows] == [f"a{n}@example.com" for n in range(5)]
