"""The ad audiences API: destinations, run now, exports, downloads and the lookalike summary."""

from __future__ import annotations

import hashlib

import pytest
from django.core.management import call_command
from django_celery_beat.models import PeriodicTask

from audiences.models import AudienceDestination, AudienceExport
from tenants.context import tenant_context
from tests.audiences.helpers import SECRET, allow_advertising, parse_csv, person, segment_of

pytestmark = pytest.mark.django_db

BASE = "/api/v1/audiences/"


@pytest.fixture
def leads(world):
    shop = world.tenant_a
    with tenant_context(shop.id):
        allow_advertising(shop)
        people = [person(shop, email=f"lead{i}@example.com", country="DE", interests=["golf"]) for i in range(3)]
        return segment_of(shop, people)


def body(of, **changes) -> dict:
    data = {"name": "Google leads", "segment": of.pk, "format": "google", "url": "https://hooks.example.com/a",
            "secret": SECRET, "schedule": "interval", "interval_minutes": 60}  # fmt: skip
    return data | changes


def test_create_read_change_and_delete_a_destination(api_a, leads, world):
    response = api_a.post(f"{BASE}destinations/", body(leads), format="json")
    assert response.status_code == 201, response.json()
    created = response.json()
    assert created["has_secret"] is True and "secret" not in created and SECRET not in response.content.decode()
    shown = (created["segment"], created["format"], created["kind"], created["enabled"])
    assert shown == (leads.pk, "google", "audience", True)
    assert created["next_run"] is not None
    with tenant_context(world.tenant_a.id):
        destination = AudienceDestination.objects.get(pk=created["id"])
    assert PeriodicTask.objects.filter(pk=destination.periodic_task_id, enabled=True).exists()

    assert api_a.get(f"{BASE}destinations/").json()["results"][0]["id"] == destination.pk
    assert api_a.get(f"{BASE}destinations/{destination.pk}/").json()["name"] == "Google leads"

    change = {"schedule": "crontab", "crontab": "30 5 * * *", "enabled": False}
    response = api_a.patch(f"{BASE}destinations/{destination.pk}/", change, format="json")
    assert response.status_code == 200, response.json()
    assert (response.json()["crontab"], response.json()["next_run"]) == ("30 5 * * *", None)
    with tenant_context(world.tenant_a.id):
        destination.refresh_from_db()
    assert destination.secret == SECRET, "an omitted secret is kept"
    assert PeriodicTask.objects.get(pk=destination.periodic_task_id).enabled is False

    response = api_a.put(f"{BASE}destinations/{destination.pk}/", body(leads, format="meta", secret=""), format="json")
    assert response.status_code == 200 and response.json()["format"] == "meta"

    assert api_a.delete(f"{BASE}destinations/{destination.pk}/").status_code == 204
    assert api_a.get(f"{BASE}destinations/{destination.pk}/").status_code == 404
    assert not PeriodicTask.objects.filter(pk=destination.periodic_task_id).exists()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"url": "https://169.254.169.254/latest/meta-data/"}, "url"),
        ({"url": "http://hooks.example.com/a"}, "url"),
        ({"secret": "short"}, "secret"),
        ({"interval_minutes": "often"}, "interval_minutes"),
        ({"interval_minutes": 1}, "interval_minutes"),
        ({"schedule": "crontab", "crontab": "* * *"}, "crontab"),
        ({"format": "linkedin"}, "format"),
        ({"segment": 999_999_999}, "segment"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_destinations_are_400_with_the_field(api_a, leads, changes, field):
    response = api_a.post(f"{BASE}destinations/", body(leads, **changes), format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]


def test_not_json_is_a_400(api_a, leads):
    response = api_a.post(f"{BASE}destinations/", "[1, 2]", content_type="application/json")
    assert response.status_code == 400


def test_run_now_and_the_export_records(api_a, leads, world, django_capture_on_commit_callbacks):
    destination_id = api_a.post(f"{BASE}destinations/", body(leads), format="json").json()["id"]
    with django_capture_on_commit_callbacks() as queued:
        response = api_a.post(f"{BASE}destinations/{destination_id}/run/")
    assert response.status_code == 202
    export = response.json()
    assert (export["status"], export["destination"], export["segment"], export["trigger"]) == (
        "pending", destination_id, leads.pk, "manual",
    )  # fmt: skip
    assert export["requested_by"].startswith("api key A write")
    assert len(queued) == 1
    again = api_a.post(f"{BASE}destinations/{destination_id}/run/")
    assert again.status_code == 400 and "still queued" in again.json()["error"]["message"]

    listed = api_a.get(f"{BASE}exports/", {"destination": destination_id}).json()["results"]
    assert [e["id"] for e in listed] == [export["id"]]
    assert api_a.get(f"{BASE}exports/", {"destination": destination_id + 1}).json()["results"] == []
    assert api_a.get(f"{BASE}exports/", {"destination": "abc"}).status_code == 400
    detail = api_a.get(f"{BASE}exports/{export['id']}/").json()
    assert detail["definition"] == {"kind": "static", "rules": {}} and len(detail["definition_hash"]) == 64


def test_download_streams_the_file_and_records_the_export(api_a_read, leads):
    response = api_a_read.get(f"{BASE}segments/{leads.pk}/download.csv", {"format": "google"})
    assert response.status_code == 200 and response["Content-Type"] == "text/csv; charset=utf-8"
    content = b"".join(response.streaming_content)
    rows = parse_csv(content.decode())
    assert rows[0] == ["Email", "Phone", "First Name", "Last Name", "Country", "Zip"]
    assert [row[0] for row in rows[1:]] == [
        hashlib.sha256(f"lead{i}@example.com".encode()).hexdigest() for i in range(3)
    ]
    record = api_a_read.get(f"{BASE}exports/{response['X-Segmentor-Export']}/").json()
    assert (record["status"], record["row_count"], record["delivery"]) == ("succeeded", 3, "download")
    assert record["file_sha256"] == hashlib.sha256(content).hexdigest()
    assert record["excluded"] == {"erased": 0, "no_identifier": 0, "no_consent": 0, "suppressed": 0}


def test_bad_download_input_is_400(api_a, leads):
    response = api_a.get(f"{BASE}segments/{leads.pk}/download.csv", {"format": "excel"})
    assert response.status_code == 400 and "format" in response.json()["error"]["fields"]
    response = api_a.get(f"{BASE}segments/{leads.pk}/download.csv", {"kind": "everyone"})
    assert response.status_code == 400 and "kind" in response.json()["error"]["fields"]
    with tenant_context(leads.tenant_id):
        assert not AudienceExport.objects.exists()


def test_the_lookalike_summary(api_a_read, leads):
    summary = api_a_read.get(f"{BASE}segments/{leads.pk}/lookalike/").json()
    assert (summary["segment"], summary["seed_size"], summary["audience_size"]) == (leads.pk, 3, 3)
    assert summary["countries"][0] | {"lift": None} == {
        "value": "DE", "label": "Germany", "seed": 3, "overall": 3, "seed_share": 1.0, "overall_share": 1.0,
        "lift": None,
    }  # fmt: skip
    assert summary["tags"]["Interests"][0]["value"] == "golf"
    assert {figure["label"] for figure in summary["value"]} >= {"Average order value", "Predicted CLV per buyer"}
    # every figure is decimal text or null, as documented, the buyer share included
    assert all(isinstance(figure[side], str | None) for figure in summary["value"] for side in ("seed", "overall"))


def test_a_read_only_key_reads_but_cannot_write(api_a_read, api_a, leads):
    destination_id = api_a.post(f"{BASE}destinations/", body(leads), format="json").json()["id"]
    assert api_a_read.get(f"{BASE}destinations/{destination_id}/").status_code == 200
    assert api_a_read.post(f"{BASE}destinations/", body(leads, name="Other"), format="json").status_code == 403
    assert api_a_read.post(f"{BASE}destinations/{destination_id}/run/").status_code == 403
    assert api_a_read.delete(f"{BASE}destinations/{destination_id}/").status_code == 403


def test_another_workspaces_key_gets_404(api_a, api_b, leads):
    destination_id = api_a.post(f"{BASE}destinations/", body(leads), format="json").json()["id"]
    export_id = api_a.post(f"{BASE}destinations/{destination_id}/run/").json()["id"]
    assert api_b.get(f"{BASE}destinations/{destination_id}/").status_code == 404
    assert api_b.post(f"{BASE}destinations/{destination_id}/run/").status_code == 404
    assert api_b.patch(f"{BASE}destinations/{destination_id}/", {"enabled": False}, format="json").status_code == 404
    assert api_b.get(f"{BASE}exports/{export_id}/").status_code == 404
    assert api_b.get(f"{BASE}segments/{leads.pk}/download.csv").status_code == 404
    assert api_b.get(f"{BASE}segments/{leads.pk}/lookalike/").status_code == 404
    assert api_b.get(f"{BASE}destinations/").json()["results"] == []
    # and B cannot point a destination at A's segment
    response = api_b.post(f"{BASE}destinations/", body(leads), format="json")
    assert response.status_code == 400 and "segment" in response.json()["error"]["fields"]


def test_the_schema_has_no_warnings(tmp_path):
    call_command("spectacular", "--fail-on-warn", "--validate", "--file", str(tmp_path / "schema.yaml"))
    schema = (tmp_path / "schema.yaml").read_text()
    assert "/api/v1/audiences/destinations/{destination_id}/run/" in schema
    assert "/api/v1/audiences/segments/{segment_id}/download.csv" in schema
