"""The audience pages as Alice (owner), Bob (viewer), an analyst and Charlie (another workspace) use them."""

from __future__ import annotations

import hashlib
import re

import pytest
from django.test import Client
from django_celery_beat.models import PeriodicTask

from audiences import services
from audiences.models import AudienceDestination, AudienceExport
from tenants.context import tenant_context
from tenants.roles import Role
from tests.audiences.helpers import ACTOR, SECRET, parse_csv, person, segment_of
from tests.factories import UserFactory, add_member

pytestmark = pytest.mark.django_db


@pytest.fixture
def leads(shop):
    with tenant_context(shop.id):
        people = [person(shop, email=f"lead{i}@example.com", country="DE") for i in range(3)]
        person(shop, email="other@example.com", country="FR")
        return segment_of(shop, people)


def url(shop, name: str = "", **kwargs) -> str:
    base = f"/t/{shop.slug}/audiences/"
    paths = {
        "": "", "new": "destinations/new/", "edit": "destinations/{destination_id}/",
        "run": "destinations/{destination_id}/run/", "delete": "destinations/{destination_id}/delete/",
        "export": "exports/{export_id}/", "download": "segments/{segment_id}/download.csv",
        "lookalike": "segments/{segment_id}/lookalike/",
    }  # fmt: skip
    return base + paths[name].format(**kwargs)


def form_data(segment, **changes) -> dict:
    data = {"name": "Google leads", "segment": segment.pk, "kind": "audience", "format": "google",
            "url": "https://hooks.example.com/audiences", "secret": SECRET, "schedule": "interval",
            "interval_minutes": "1440", "crontab": "", "enabled": "on"}  # fmt: skip
    return data | changes


def make_destination(shop, segment, **data) -> AudienceDestination:
    with tenant_context(shop.id):
        values = {"name": "Google leads", "segment": segment, "format": "google", "url": "https://hooks.example.com/a",
                  "secret": SECRET, "schedule": "interval", "interval_minutes": 60} | data  # fmt: skip
        return services.destination_create(tenant=shop, actor=ACTOR, data=values)


def test_the_page_lists_destinations_and_exports_in_few_queries(
    shop, leads, alice_client, django_assert_max_num_queries
):
    for n in range(3):
        destination = make_destination(shop, leads, name=f"Destination {n}")
        with tenant_context(shop.id):
            services.destination_run(destination=destination, actor=ACTOR, trigger="manual")
    with django_assert_max_num_queries(15):
        response = alice_client.get(url(shop))
    assert response.status_code == 200
    body = response.content.decode()
    assert all(f"Destination {n}" in body for n in range(3))
    assert len(re.findall(r"data-testid=\"export-\d+\"", body)) == 3
    assert 'data-testid="no-purpose"' not in body


def test_the_page_says_when_the_workspace_has_no_advertising_purpose(world, alice_client):
    response = alice_client.get(f"/t/{world.tenant_a.slug}/audiences/")
    assert 'data-testid="no-purpose"' in response.content.decode()


def test_creating_a_destination_shows_each_refusal_on_its_field(shop, leads, alice_client):
    response = alice_client.post(
        url(shop, "new"), form_data(leads, url="https://10.0.0.1/hook", secret="short", interval_minutes="5")
    )
    assert response.status_code == 400
    form = response.context["form"]
    assert "not a public internet address" in " ".join(form.errors["url"])
    assert form.errors["secret"] and form.errors["interval_minutes"]
    response = alice_client.post(url(shop, "new"), form_data(leads, url="http://hooks.example.com/a"))
    assert response.status_code == 400
    assert "https://" in " ".join(response.context["form"].errors["url"]), response.context["form"].errors
    response = alice_client.post(url(shop, "new"), form_data(leads, schedule="crontab", crontab="every day"))
    assert response.status_code == 400 and response.context["form"].errors["crontab"]
    with tenant_context(shop.id):
        assert not AudienceDestination.objects.exists()


def test_creating_and_editing_a_destination(shop, leads, alice_client):
    response = alice_client.post(url(shop, "new"), form_data(leads, schedule="crontab", crontab="0 6 * * *"))
    with tenant_context(shop.id):
        destination = AudienceDestination.objects.get()
    assert response.status_code == 302 and response["Location"] == url(shop, "edit", destination_id=destination.pk)
    assert (destination.crontab, destination.secret) == ("0 6 * * *", SECRET)
    assert PeriodicTask.objects.get(pk=destination.periodic_task_id).crontab.hour == "6"

    page = alice_client.get(url(shop, "edit", destination_id=destination.pk)).content.decode()
    assert "Google leads" in page and SECRET not in page, "the secret is write-only"

    response = alice_client.post(url(shop, "edit", destination_id=destination.pk),
                                 form_data(leads, name="Meta leads", format="meta", secret=""))  # fmt: skip
    assert response.status_code == 302
    with tenant_context(shop.id):
        destination.refresh_from_db()
    assert (destination.name, destination.format, destination.secret) == ("Meta leads", "meta", SECRET)
    response = alice_client.post(url(shop, "edit", destination_id=destination.pk), form_data(leads, url=""))
    assert response.status_code == 400 and response.context["form"].errors["url"]


def test_run_now_queues_a_push_and_refuses_a_second_while_the_first_is_in_flight(
    shop, leads, alice_client, django_capture_on_commit_callbacks
):
    destination = make_destination(shop, leads)
    with django_capture_on_commit_callbacks() as queued:
        response = alice_client.post(url(shop, "run", destination_id=destination.pk))
    with tenant_context(shop.id):
        export = AudienceExport.objects.get()
    assert response["Location"] == url(shop, "export", export_id=export.pk)
    assert (export.status, export.trigger, export.requested_by) == ("pending", "manual", "alice@a.example")
    assert len(queued) == 1
    response = alice_client.post(url(shop, "run", destination_id=destination.pk), follow=True)
    assert f"Export #{export.pk} to this destination is still queued" in response.content.decode()
    with tenant_context(shop.id):
        assert AudienceExport.objects.count() == 1


def test_deleting_a_destination_keeps_its_exports(shop, leads, alice_client):
    destination = make_destination(shop, leads)
    with tenant_context(shop.id):
        export = services.destination_run(destination=destination, actor=ACTOR, trigger="manual")
    response = alice_client.post(url(shop, "delete", destination_id=destination.pk))
    assert response.status_code == 302
    with tenant_context(shop.id):
        assert not AudienceDestination.objects.exists()
        assert AudienceExport.objects.filter(pk=export.pk, destination=None).exists()
    assert not PeriodicTask.objects.filter(pk=destination.periodic_task_id).exists()


def test_a_download_streams_the_file_and_its_record_shows_what_went_in(shop, leads, alice_client):
    response = alice_client.get(url(shop, "download", segment_id=leads.pk) + "?format=meta")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="audience-meta-segment-')
    body = b"".join(response.streaming_content)
    rows = parse_csv(body.decode())
    assert rows[0] == ["email", "phone", "fn", "ln", "ct", "st", "zip", "country"]
    assert rows[1][0] == hashlib.sha256(b"lead0@example.com").hexdigest() and len(rows) == 4
    export_id = int(response["X-Segmentor-Export"])
    page = alice_client.get(url(shop, "export", export_id=export_id)).content.decode()
    assert hashlib.sha256(body).hexdigest() in page
    assert 'data-testid="export-rows">3<' in page and "Succeeded" in page


def test_bad_download_input_is_a_400_not_a_500(shop, leads, alice_client):
    response = alice_client.get(url(shop, "download", segment_id=leads.pk) + "?format=tiktok")
    assert response.status_code == 400
    response = alice_client.get(url(shop) + "?segment=abc&go=download")
    assert response.status_code == 400 and response.context["choice"].errors["segment"]


def test_the_chooser_leads_to_the_download_or_the_lookalike_page(shop, leads, alice_client):
    response = alice_client.get(url(shop) + f"?segment={leads.pk}&format=meta&go=download")
    assert response["Location"] == url(shop, "download", segment_id=leads.pk) + "?format=meta"
    response = alice_client.get(url(shop) + f"?segment={leads.pk}&go=lookalike")
    assert response["Location"] == url(shop, "lookalike", segment_id=leads.pk)


def test_the_lookalike_page_describes_the_seed_and_offers_its_files(shop, leads, alice_client):
    page = alice_client.get(url(shop, "lookalike", segment_id=leads.pk)).content.decode()
    assert 'data-testid="seed-size">3<' in page and 'data-testid="audience-size">4<' in page
    assert "Germany" in page and "100.0 %" in page and "75.0 %" in page  # DE: all of the seed, 3 of 4 overall
    assert "kind=lookalike_seed" in page
    response = alice_client.get(url(shop, "download", segment_id=leads.pk) + "?format=google&kind=lookalike_seed")
    b"".join(response.streaming_content)
    with tenant_context(shop.id):
        assert AudienceExport.objects.get().kind == "lookalike_seed"


def test_a_viewer_sees_the_pages_but_cannot_download_or_change_anything(shop, leads, bob_client):
    destination = make_destination(shop, leads)
    assert bob_client.get(url(shop)).status_code == 200
    assert bob_client.get(url(shop, "lookalike", segment_id=leads.pk)).status_code == 200
    assert bob_client.get(url(shop, "download", segment_id=leads.pk)).status_code == 403
    assert bob_client.get(url(shop, "new")).status_code == 403
    assert bob_client.post(url(shop, "new"), form_data(leads)).status_code == 403
    assert bob_client.post(url(shop, "run", destination_id=destination.pk)).status_code == 403
    assert bob_client.post(url(shop, "delete", destination_id=destination.pk)).status_code == 403
    with tenant_context(shop.id):
        assert AudienceDestination.objects.count() == 1 and not AudienceExport.objects.exists()


def test_an_analyst_downloads_and_a_marketer_runs_but_only_admins_configure_destinations(shop, leads):
    destination = make_destination(shop, leads)
    analyst, marketer = UserFactory(), UserFactory()
    add_member(shop, analyst, Role.ANALYST)
    add_member(shop, marketer, Role.MARKETER)
    as_analyst, as_marketer = Client(), Client()
    as_analyst.force_login(analyst)
    as_marketer.force_login(marketer)
    assert as_analyst.get(url(shop, "download", segment_id=leads.pk)).status_code == 200
    assert as_analyst.post(url(shop, "run", destination_id=destination.pk)).status_code == 403
    assert as_marketer.post(url(shop, "run", destination_id=destination.pk)).status_code == 302
    assert as_marketer.post(url(shop, "new"), form_data(leads, name="Mine")).status_code == 403
    assert as_marketer.get(url(shop, "edit", destination_id=destination.pk)).status_code == 403


def test_another_workspaces_objects_are_404_inside_mine(shop, leads, world, charlie_client, alice_client):
    destination = make_destination(shop, leads)
    with tenant_context(world.tenant_b.id):
        theirs = segment_of(world.tenant_b, [], name="Theirs")
    assert alice_client.get(url(shop, "download", segment_id=theirs.pk)).status_code == 404
    assert alice_client.get(url(shop, "lookalike", segment_id=theirs.pk)).status_code == 404
    b = world.tenant_b
    assert charlie_client.get(f"/t/{b.slug}/audiences/destinations/{destination.pk}/").status_code == 404
    assert charlie_client.post(f"/t/{b.slug}/audiences/destinations/{destination.pk}/run/").status_code == 404
    assert charlie_client.get(f"/t/{b.slug}/audiences/segments/{leads.pk}/download.csv").status_code == 404
    # The segment of another workspace is not a choice in mine either.
    response = alice_client.post(url(shop, "new"), form_data(theirs))
    assert response.status_code == 400 and response.context["form"].errors["segment"]
