"""Every CSV the site serves, with names that are formulas: no cell a spreadsheet would run.

The site walk (tests/security/test_site_walk.py) checks every CSV route of the URLConf and
every CSV table the pages link to, on the walk's small world. Here the same check runs where
the tables have rows: the analytics scenario (campaigns, variants, segments, stages, a
journey, with sends and conversions) with every name turned into a formula, and a real import
whose rejected rows and column names are formulas of every kind.
"""

from __future__ import annotations

import csv
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from contacts import importer
from contacts.importer import import_set_mapping, import_start, import_upload, run_import
from contacts.models import ImportJob
from tenants.context import tenant_context
from tests.analytics.test_views import winter  # noqa: F401 - the analytics scenario, as a fixture
from tests.conftest import World
from tests.security.hostile_data import FORMULA_STARTS, SEEN, seed_hostile_text
from tests.security.site import every_page, route_values, visitors
from tests.security.test_site_walk import Walk, formula_cells

pytestmark = pytest.mark.django_db

FORMULAS = [f"{start}HYPERLINK(\"https://evil.example\",\"x\")" for start in FORMULA_STARTS] + [
    "=cmd|' /C calc'!A0", "@SUM(1+1)*cmd|' /C calc'!A0", "-2+3", "+1+1",
]  # fmt: skip


def test_every_analytics_csv_with_rows_has_no_formula_cell(winter, world: World):  # noqa: F811
    values = route_values(world)
    seeded = seed_hostile_text(world, values)
    people = visitors(world)
    walk = Walk(seeded)
    slug = world.tenant_a.slug
    for page in every_page(world, values):
        if page.url.startswith((f"/t/{slug}/analytics/", f"/t/{slug}/segments/", f"/t/{slug}/audiences/")):
            walk.page(page.who, page.url, people.get(page.who).get(page.url))
    walk.follow_downloads(people)
    assert walk.problems["CSV formulas"] == []
    assert walk.problems["server errors"] == []
    assert len(walk.downloads) >= 20, sorted(walk.downloads)
    in_csv = {seeded.fields[n] for n in walk.in_csv if n in seeded.fields}
    names = ("campaigns.Campaign.name", "campaigns.Variant.name", "segments.Segment.name", "journeys.Journey.name")
    assert [name for name in names if name not in in_csv] == []


def test_the_rejected_rows_report_escapes_every_formula_in_cells_and_column_names(world: World):
    header = ["email", *FORMULAS[:3]]
    rows = [header, *([f"bad{i}", *FORMULAS[i : i + 3]] for i in range(len(FORMULAS) - 2))]
    rows.append([FORMULAS[0], "x", "y", "z"])  # the email itself a formula: rejected, echoed in the reason
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    content = buffer.getvalue().encode()
    with tenant_context(world.tenant_a.id):
        job, _ = import_upload(
            tenant=world.tenant_a, upload=SimpleUploadedFile("c.csv", content), acting=world.alice_membership
        )
        mapping = {
            name: ("email" if name == "email" else "skip") for name in importer.import_mapping_initial(job=job).mapping
        }
        import_set_mapping(
            job=job,
            mapping=mapping,
            consent_channel="",
            consent_purpose="",
            consent_wording="",
            acting=world.alice_membership,
        )
        import_start(job=job, acting=world.alice_membership)
    run_import(world.tenant_a.id, job.pk)
    with tenant_context(world.tenant_a.id):
        job = ImportJob.objects.get(pk=job.pk)
    assert job.error_count == len(rows) - 1
    client = Client()
    client.force_login(world.alice)
    response = client.get(f"/t/{world.tenant_a.slug}/contacts/imports/{job.pk}/rejected-rows.csv")
    text = b"".join(response.streaming_content).decode() if response.streaming else response.content.decode()
    assert formula_cells(text) == []
    report = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    assert report[0][2:] == [header[0], *(f"'{name}" for name in header[1:])]
    assert {cell for row in report[1:] for cell in row[3:]} == {f"'{f}" for f in FORMULAS} | {"x", "y", "z"}


def test_the_seen_pattern_finds_markers_in_a_csv():
    """The walk's CSV coverage reads markers through csv quoting."""
    from tests.security.hostile_data import Seeded, payload

    seeded = Seeded()
    number = seeded.next("x")
    buffer = io.StringIO()
    csv.writer(buffer).writerow(["'" + payload(number)])
    assert seeded.numbers(buffer.getvalue(), SEEN) == {number}
