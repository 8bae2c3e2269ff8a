"""Destinations: what is refused, their beat rows, and pushing to a local receiver that checks the signature
(the SSRF guard's development override lets 127.0.0.1:<port> through, as in the campaigns' webhook tests)."""

from __future__ import annotations

import datetime as dt
import socket

import pytest
from django.core.exceptions import ValidationError
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from audiences import services
from audiences.models import AudienceDestination, AudienceExport
from audiences.tasks import run_destination
from tenants.context import tenant_context
from tests.audiences.helpers import (
    ACTOR,
    SECRET,
    parse_csv,
    person,
    segment_of,
    signed_only,
    verified,
)
from tests.campaigns.test_channels import Reply, quick_http

pytestmark = pytest.mark.django_db

PATH = "/audiences/hook"


@pytest.fixture
def leads(shop):
    people = [person(shop, email=f"lead{i}@example.com", first_name=f"Lead{i}") for i in range(5)]
    return segment_of(shop, people)


def destination_for(shop, segment, url: str, **extra) -> AudienceDestination:
    data = {"name": "Google leads", "segment": segment, "format": "google", "url": url, "secret": SECRET,
            "schedule": "interval", "interval_minutes": 60} | extra  # fmt: skip
    return services.destination_create(tenant=shop, actor=ACTOR, data=data)


def push(destination: AudienceDestination, **http) -> AudienceExport:
    export = services.destination_run(destination=destination, actor=ACTOR, trigger="manual")
    return services.export_push(export=export, http=quick_http(**http))


# --- what a destination may be ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://hooks.example.com/a", "https://"),
        ("https://10.0.0.1/hook", "not a public internet address"),
        ("https://169.254.169.254/latest/meta-data/", "not a public internet address"),
        ("https://127.0.0.1:8443/hook", "not a public internet address"),
        ("https://[::1]/hook", "not a public internet address"),
        ("https://localhost/hook", "not a public internet address"),
        ("https://user:secret@hooks.example.com/a", "credentials"),
        ("ftp://hooks.example.com/a", "valid URL"),
        ("not a url", "valid URL"),
    ],
)
def test_a_destination_url_must_be_https_and_public(shop, leads, url, message):
    with pytest.raises(ValidationError) as refused:
        destination_for(shop, leads, url)
    assert message in " ".join(refused.value.message_dict["url"])
    assert not AudienceDestination.objects.exists()


def test_other_refusals_name_their_field(shop, leads, world):
    with tenant_context(world.tenant_b.id):
        theirs = segment_of(world.tenant_b, [], name="Theirs")
    cases = [
        ({"secret": "short"}, "secret"),
        ({"interval_minutes": 5}, "interval_minutes"),
        ({"schedule": "crontab", "crontab": "61 * * * *"}, "crontab"),
        ({"schedule": "crontab", "crontab": "daily"}, "crontab"),
        ({"format": "tiktok"}, "format"),
        ({"name": ""}, "name"),
    ]
    for extra, field in cases:
        with pytest.raises(ValidationError) as refused:
            destination_for(shop, leads, "https://hooks.example.com/a", **extra)
        assert field in refused.value.message_dict, (extra, refused.value.message_dict)
    with pytest.raises(ValidationError) as foreign:
        destination_for(shop, theirs, "https://hooks.example.com/a")
    assert "segment" in foreign.value.message_dict
    destination_for(shop, leads, "https://hooks.example.com/a")
    with pytest.raises(ValidationError) as twice:
        destination_for(shop, leads, "https://hooks.example.com/b")
    assert "name" in twice.value.message_dict


def test_saving_a_destination_keeps_its_beat_row(shop, leads):
    destination = destination_for(shop, leads, "https://hooks.example.com/a")
    task = PeriodicTask.objects.get(pk=destination.periodic_task_id)
    assert (task.task, task.args, task.enabled) == ("audiences.tasks.run_destination",
                                                    f"[{shop.pk}, {destination.pk}]", True)  # fmt: skip
    assert (task.interval.every, task.interval.period, task.crontab) == (60, IntervalSchedule.MINUTES, None)
    interval_id = task.interval_id

    shop.time_zone = "Europe/Berlin"
    shop.save()
    destination = services.destination_update(
        destination=destination, actor=ACTOR, data={"schedule": "crontab", "crontab": "0  6 * * 1"}
    )
    task.refresh_from_db()
    assert task.interval is None
    cron = task.crontab
    assert (cron.minute, cron.hour, cron.day_of_week, str(cron.timezone)) == ("0", "6", "1", "Europe/Berlin")
    assert not IntervalSchedule.objects.filter(pk=interval_id).exists(), "an unused schedule row goes"
    destination.refresh_from_db()
    assert destination.crontab == "0 6 * * 1" and destination.secret == SECRET, "no secret given: kept"
    next_run = services.next_run(destination, now=dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC))  # a Tuesday
    assert next_run == dt.datetime(2026, 12, 7, 5, tzinfo=dt.UTC)  # Monday 06:00 in Berlin

    destination = services.destination_update(destination=destination, actor=ACTOR, data={"enabled": False})
    task.refresh_from_db()
    assert task.enabled is False and services.next_run(destination) is None

    services.destination_delete(destination=destination, actor=ACTOR)
    assert not PeriodicTask.objects.filter(pk=task.pk).exists()
    assert not CrontabSchedule.objects.filter(pk=cron.pk).exists()


def test_a_segment_a_destination_exports_cannot_be_deleted(shop, leads):
    from segments.services import segment_delete

    destination_for(shop, leads, "https://hooks.example.com/a")
    with pytest.raises(ValidationError, match="ad audience destinations: Google leads"):
        segment_delete(segment=leads, actor=ACTOR)


# --- pushing ------------------------------------------------------------------------------------------
def test_the_file_arrives_in_signed_parts_that_the_receiver_verifies(shop, leads, receiver, settings, tmp_path):
    settings.AUDIENCE_PUSH_PART_ROWS = 2
    receiver.route(PATH, signed_only)
    destination = destination_for(shop, leads, f"{receiver.url}{PATH}")
    export = push(destination)

    assert export.status == AudienceExport.Status.SUCCEEDED, export.error
    assert (export.row_count, export.parts_total, export.parts_sent, export.attempts) == (5, 3, 3, 1)
    parts = receiver.requests
    assert [p.headers["X-Segmentor-Part"] for p in parts] == ["1/3", "2/3", "3/3"]
    assert all(verified(p) for p in parts)
    assert {p.headers["X-Segmentor-Delivery"] for p in parts} == {
        f"audience-export-{export.pk}-part-{n}" for n in (1, 2, 3)
    }
    assert parts[0].headers["Content-Type"] == "text/csv; charset=utf-8"
    assert parts[0].headers["X-Segmentor-Format"] == "google"
    assert parts[0].headers["X-Segmentor-File-Sha256"] == export.file_sha256
    tables = [parse_csv(p.body.decode()) for p in parts]
    assert all(table[0] == ["Email", "Phone", "First Name", "Last Name", "Country", "Zip"] for table in tables)
    assert [len(table) - 1 for table in tables] == [2, 2, 1]
    # The parts put together are the file a download gives.
    download = services.export_start(segment=leads, format="google", kind="audience", actor=ACTOR, trigger="download")
    text = "".join(services.download_stream(export=download))
    assert [row for table in tables for row in table[1:]] == parse_csv(text)[1:]
    assert export.file == ""
    assert not list(tmp_path.rglob("*.csv")), "the stored file is deleted once delivered"


def test_a_receiver_that_fails_is_retried_later_and_the_push_resumes_where_it_stopped(
    shop, leads, receiver, settings, django_capture_on_commit_callbacks
):
    settings.AUDIENCE_PUSH_PART_ROWS = 2
    settings.AUDIENCE_PUSH_RETRY_BASE_SECONDS = 30
    busy = Reply.json(503, {"message": "busy"})
    receiver.reply(PATH, Reply(200), busy, busy, busy, Reply(200))
    destination = destination_for(shop, leads, f"{receiver.url}{PATH}")
    with django_capture_on_commit_callbacks() as queued:
        export = push(destination)
    assert export.status == AudienceExport.Status.RETRYING
    assert (export.parts_sent, export.attempts) == (1, 1)
    assert "HTTP 503" in export.error and "busy" in export.error
    assert dt.timedelta(seconds=25) < export.next_attempt_at - export.started_at < dt.timedelta(seconds=40)
    assert len(queued) == 1, "the retry is queued with a countdown"
    assert export.file, "the file waits for the retry"

    export = services.export_push(export=export, http=quick_http())  # what the queued retry does
    assert export.status == AudienceExport.Status.SUCCEEDED
    assert (export.parts_sent, export.attempts, export.error) == (3, 2, "")
    parts = [r.headers["X-Segmentor-Part"] for r in receiver.requests]
    assert parts == ["1/3", "2/3", "2/3", "2/3", "2/3", "3/3"], "part 1 is not sent twice"


def test_retry_delays_grow_exponentially_and_honour_retry_after(settings):
    settings.AUDIENCE_PUSH_RETRY_BASE_SECONDS = 60
    assert [services.retry_delay(n) for n in (1, 2, 3, 4)] == [60, 120, 240, 480]
    assert services.retry_delay(20) == 3600
    assert services.retry_delay(1, retry_after=300) == 300


def test_a_receiver_that_refuses_the_file_fails_it_for_good_with_its_reason(
    shop, leads, receiver, django_capture_on_commit_callbacks
):
    receiver.reply(PATH, Reply.json(422, {"error": {"message": "unknown audience"}}))
    destination = destination_for(shop, leads, f"{receiver.url}{PATH}")
    with django_capture_on_commit_callbacks() as queued:
        export = push(destination)
    assert export.status == AudienceExport.Status.FAILED
    assert "HTTP 422" in export.error and "unknown audience" in export.error
    assert queued == [] and export.file == ""
    assert len(receiver.requests) == 1


def test_a_push_gives_up_after_the_last_attempt(shop, leads, receiver, settings):
    settings.AUDIENCE_PUSH_MAX_ATTEMPTS = 1
    receiver.reply(PATH, Reply(500))
    export = push(destination_for(shop, leads, f"{receiver.url}{PATH}"))
    assert export.status == AudienceExport.Status.FAILED
    assert "HTTP 500" in export.error and "after 1 attempts" in export.error


def test_the_guard_refuses_loopback_when_it_is_not_the_allowed_development_host(shop, leads, receiver, settings):
    destination = destination_for(shop, leads, f"{receiver.url}{PATH}")
    settings.OUTBOUND_HTTP_ALLOWED_HOSTS = []
    export = push(destination)
    assert export.status == AudienceExport.Status.FAILED
    assert "not a public internet address" in export.error
    assert receiver.requests == []


def test_the_guard_refuses_a_name_that_resolves_to_a_private_address(shop, leads, monkeypatch, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    destination = destination_for(shop, leads, "https://audiences.shop.example/hook")
    monkeypatch.setattr("campaigns.channels.http._resolve", lambda host, port: [(socket.AF_INET, "10.1.2.3")])
    export = push(destination)
    assert export.status == AudienceExport.Status.FAILED
    assert "not a public internet address" in export.error and "10.1.2.3" not in export.error


@pytest.mark.parametrize("location", ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/hook",
                                      "http://127.0.0.1:1/hook"])  # fmt: skip
def test_the_guard_refuses_a_redirect_to_a_private_address(shop, leads, receiver, location):
    receiver.reply(PATH, Reply(307, headers={"Location": location}))
    export = push(destination_for(shop, leads, f"{receiver.url}{PATH}"))
    assert export.status == AudienceExport.Status.FAILED
    assert [r.path for r in receiver.requests] == [PATH]


def test_one_export_at_a_time_per_destination(shop, leads, receiver):
    receiver.reply(PATH, Reply(200))
    destination = destination_for(shop, leads, f"{receiver.url}{PATH}")
    waiting = services.destination_run(destination=destination, actor=ACTOR, trigger="manual")
    with pytest.raises(ValidationError, match=f"Export #{waiting.pk}"):
        services.destination_run_now(destination=destination, actor=ACTOR)
    assert services.destination_scheduled_run(destination=destination) is None, "the tick skips"
    services.export_push(export=waiting, http=quick_http())
    scheduled = services.destination_scheduled_run(destination=destination, http=quick_http())
    assert scheduled is not None and scheduled.status == AudienceExport.Status.SUCCEEDED
    assert scheduled.trigger == "schedule" and scheduled.requested_by == "schedule"


def test_a_destination_that_is_off_does_not_run_on_its_schedule(shop, leads):
    destination = destination_for(shop, leads, "https://hooks.example.com/a", enabled=False)
    assert services.destination_scheduled_run(destination=destination) is None
    assert not AudienceExport.objects.exists()


def test_the_beat_task_removes_the_row_of_a_deleted_destination(shop):
    PeriodicTask.objects.create(
        name=f"audience destination {shop.pk}:999999", task="audiences.tasks.run_destination",
        interval=IntervalSchedule.objects.create(every=60, period=IntervalSchedule.MINUTES),
    )  # fmt: skip
    assert run_destination(shop.pk, 999999) is None
    assert not PeriodicTask.objects.filter(name=f"audience destination {shop.pk}:999999").exists()


def test_an_export_whose_destination_was_deleted_fails_with_the_reason(shop, leads):
    destination = destination_for(shop, leads, "https://hooks.example.com/a")
    export = services.destination_run(destination=destination, actor=ACTOR, trigger="manual")
    services.destination_delete(destination=destination, actor=ACTOR)
    export.refresh_from_db()
    export = services.export_push(export=export)
    assert export.status == AudienceExport.Status.FAILED
    assert export.error == "The destination was deleted."


def test_an_export_whose_worker_was_lost_is_taken_over(shop, leads, receiver):
    receiver.reply(PATH, Reply(200))
    destination = destination_for(shop, leads, f"{receiver.url}{PATH}")
    lost = services.destination_run(destination=destination, actor=ACTOR, trigger="manual")
    long_ago = lost.created_at - dt.timedelta(hours=1)
    AudienceExport.objects.filter(pk=lost.pk).update(status="running", claimed_at=long_ago)
    # A redelivered task may claim it again...
    assert services.export_push(export=lost, http=quick_http()).status == AudienceExport.Status.SUCCEEDED
    # ...and the next run closes one that nobody will come back for.
    stuck = services.destination_run(destination=destination, actor=ACTOR, trigger="manual")
    AudienceExport.objects.filter(pk=stuck.pk).update(status="running", claimed_at=long_ago)
    fresh = services.destination_run(destination=destination, actor=ACTOR, trigger="schedule")
    stuck.refresh_from_db()
    assert stuck.status == AudienceExport.Status.FAILED and "worker stopped" in stuck.error
    assert fresh.status == AudienceExport.Status.PENDING
