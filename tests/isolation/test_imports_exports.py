"""CSV imports and exports across tenants: the same person in both, A's import and A's downloads.

An import is keyed by the tenant's external id or email, so a row naming a person tenant B also
knows must create or update tenant A's contact, never B's. Every page, export and API answer
Alice can GET must hold nothing of B's (searched for B's marker strings), with the database wall
down so that only the application's own tenant filters keep B's rows out.
"""

from __future__ import annotations

from typing import Any

import pytest
from celery.app.task import Task
from django.test import Client
from django.urls import reverse

from contacts import export as contacts_export
from contacts.importer import run_import
from contacts.models import Contact, ImportJob
from segmentor.celery import app
from tenants.context import tenant_context
from tests.conftest import World, api_client
from tests.isolation.guard import (
    WALLS,
    cross_tenant_references,
    database_wall_down,
    fingerprint_changes,
    tenant_fingerprint,
    walls,
)
from tests.isolation.scene import MARKERS, SHARED_EMAIL, SHARED_EXTERNAL_ID, build_scenes, queue_import
from tests.isolation.walk import VERBS, iter_routes, url_for

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


# Rows naming people tenant B knows (by external id, by email, by both), and one bad row for the report.
ROWS = [
    ["external_id", "email", "first_name", "city"],
    ["ext-b", "", "Mallory", "Import-A"],
    ["", "contact-b@example.com", "Mallory", "Import-A"],
    [SHARED_EXTERNAL_ID, SHARED_EMAIL, "Mallory", "Import-A"],
    ["bad-row", "not an email", "Mallory", "Import-A"],
]


def import_as(world: World, which: str, rows: list[list[str]]) -> ImportJob:
    """Queue an import as the tenant's owner and run its task in-process."""
    job = queue_import(world, which, rows)
    run_import(job.tenant_id, job.pk)
    with tenant_context(job.tenant_id):
        return ImportJob.objects.get(pk=job.pk)


@pytest.mark.parametrize("wall", WALLS)
def test_an_import_naming_tenant_b_people_changes_only_tenant_a(world: World, alice_client: Client, wall: str):
    a, b = build_scenes(world)
    before = tenant_fingerprint(b.tenant.pk)
    with walls(wall):
        job = import_as(world, "a", ROWS)
        report = alice_client.get(
            reverse("contacts:import_rejected_rows", kwargs={"tenant_slug": a["tenant_slug"], "import_id": job.pk})
        )
        report_text = _body(report)
    assert job.status == ImportJob.Status.DONE
    assert fingerprint_changes(before, tenant_fingerprint(b.tenant.pk)) == []
    assert cross_tenant_references() == []
    with tenant_context(a.tenant.pk):
        imported = {(c.external_id, c.email): c for c in Contact.objects.filter(city="Import-A")}
        # B's person by external id became a contact of A's own; the one A already shares was updated.
        assert {("ext-b", ""), (SHARED_EXTERNAL_ID, SHARED_EMAIL)} <= set(imported)
        assert imported[(SHARED_EXTERNAL_ID, SHARED_EMAIL)].pk == a["shared_contact_id"]
        assert all(c.tenant_id == a.tenant.pk for c in imported.values())
    assert report.status_code == 200 and "not an email" in report_text
    assert [m for m in MARKERS["b"] if m in report_text] == []


def test_tenant_b_import_jobs_and_reports_are_404_for_alice(world: World, alice_client: Client):
    build_scenes(world)
    job_b = import_as(world, "b", ROWS)
    assert job_b.errors_file  # a real rejected-rows report exists
    ids = {"tenant_slug": world.tenant_a.slug, "import_id": job_b.pk}
    routes = [r for r in iter_routes() if "import_id" in r.kwargs]
    assert routes, "the import routes moved: the walk below checks nothing"
    for route in routes:
        for verb in route.allowed_methods() & set(VERBS):
            response = getattr(alice_client, verb)(url_for(route, ids))
            assert response.status_code == 404, f"{verb.upper()} {route.template}: {response.status_code}"
    with tenant_context(world.tenant_b.id):
        assert ImportJob.objects.get(pk=job_b.pk).status == ImportJob.Status.DONE


def _body(response: Any) -> str:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content).decode(errors="replace")
    return response.content.decode(errors="replace")


def read_everything(world: World, client: Client, ids: dict[str, Any], only: str = "") -> tuple[list[str], int]:
    """GET every tenant page and API route (those whose template contains ``only``) as Alice, with
    the database wall down; return the responses that hold B's markers or failed, and how many
    were downloads (CSV or attachments)."""
    api = api_client(world.read_secret_a)
    markers = (*MARKERS["b"], world.tenant_b.name, world.charlie.email)
    leaks, downloads = [], 0
    with database_wall_down():
        for route in iter_routes():
            if (
                route.kind not in ("tenant", "api")
                or "get" not in route.allowed_methods()
                or only not in route.template
            ):
                continue
            response = (client if route.kind == "tenant" else api).get(url_for(route, ids))
            body = _body(response)
            disposition = response.get("Content-Type", "") + response.get("Content-Disposition", "")
            downloads += "csv" in disposition or "attachment" in disposition
            found = [marker for marker in markers if marker in body]
            if found or response.status_code >= 500:
                leaks.append(f"{route.template}: {response.status_code} {found}")
    return leaks, downloads


DERIVED = (
    "analytics.tasks.stats_refresh", "analytics.tasks.value_refresh", "analytics.tasks.send_time_recompute",
    "analytics.tasks.channel_profiles_recompute", "segments.tasks.recompute_rfm", "segments.tasks.record_sizes",
    "segments.tasks.refresh_event_summaries",
)  # fmt: skip
A_ONLY_ROWS = [ROWS[0], ["a-only", "", "Ann", "Import-A"], ["", "broken", "Ann", "Import-A"]]


def test_nothing_alice_can_download_or_read_holds_tenant_b_data(world: World, alice_client: Client, monkeypatch):
    """Every GET page, CSV and JSON export and API answer of tenant A, with B's data in the database."""
    monkeypatch.setattr(Task, "apply_async", lambda self, *args, **kwargs: None)  # the tasks below queue no more
    a, b = build_scenes(world)
    import_as(world, "b", ROWS)  # B has an import with a report too
    ids = {**a.ids, "import_id": import_as(world, "a", A_ONLY_ROWS).pk}
    app.loader.import_default_modules()  # the apps' tasks register lazily
    # Both tenants' figures computed (rollups, customer value, RFM, sizes), so a page reading them unscoped shows B's.
    for tenant in (a.tenant, b.tenant):
        for task in DERIVED:
            app.tasks[task].run(tenant.pk)
        app.tasks["segments.tasks.refresh_segment"].run(tenant.pk, (a if tenant == a.tenant else b)["segment_id"])
    leaks, downloads = read_everything(world, alice_client, ids)
    assert leaks == []
    assert downloads >= 10, "the exports were not reached: the walk above proves nothing"


def test_reading_everything_finds_a_leak(world: World, alice_client: Client, monkeypatch):
    """The marker search means something: an export that forgets its tenant filter is caught."""
    a, _ = build_scenes(world)

    def every_tenants_rows(*, tenant_id: int, attribute_keys: list[str], **_: Any) -> Any:
        for row in Contact.all_tenants.order_by("pk").values_list("first_name", "email"):
            yield list(row)

    monkeypatch.setattr(contacts_export, "contact_rows", every_tenants_rows)
    leaks, _ = read_everything(world, alice_client, a.ids, only="export.csv")
    assert any("contacts/imports/export.csv" in leak and "ZedB" in leak for leak in leaks), leaks
