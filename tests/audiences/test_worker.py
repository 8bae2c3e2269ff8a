"""Real parts together: the destination's beat entry, sent as beat sends it, runs on a Celery worker (Redis),
which builds the file and pushes it to a local receiver that checks every signature; a failing part is
retried by the worker after its backoff."""

from __future__ import annotations

import json

import pytest
from django_celery_beat.models import PeriodicTask

from audiences import services
from audiences.models import AudienceExport
from segmentor.celery import app
from tenants.context import tenant_context
from tests.audiences.helpers import ACTOR, SECRET, allow_advertising, parse_csv, person, segment_of, verified
from tests.campaigns.test_channels import Received, Reply
from tests.journeys.test_worker import wait_for, worker  # noqa: F401  (worker: a fixture)

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_the_scheduled_push_runs_on_a_worker_and_retries_a_failed_part(world, receiver, worker, settings):  # noqa: F811
    settings.AUDIENCE_PUSH_PART_ROWS = 2
    settings.AUDIENCE_PUSH_RETRY_BASE_SECONDS = 0.2
    shop = world.tenant_a
    failed_once: list[str] = []

    def answer(request: Received) -> Reply:
        if not verified(request):
            return Reply(401, b"bad signature")
        # Three failures: the client's two quick retries fail too, so the worker must retry later.
        if request.headers["X-Segmentor-Part"] == "2/2" and len(failed_once) < 3:
            failed_once.append("2/2")
            return Reply.json(500, {"message": "disk full"})
        return Reply(200, b"ok")

    receiver.route("/hook", answer)
    with tenant_context(shop.id):
        allow_advertising(shop)
        people = [person(shop, email=f"fan{i}@example.com") for i in range(3)]
        segment = segment_of(shop, people)
        destination = services.destination_create(
            tenant=shop, actor=ACTOR,
            data={"name": "Fans", "segment": segment, "format": "meta", "url": f"{receiver.url}/hook",
                  "secret": SECRET, "schedule": "crontab", "crontab": "0 6 * * *"},
        )  # fmt: skip
    entry = PeriodicTask.objects.get(pk=destination.periodic_task_id)
    app.send_task(entry.task, args=json.loads(entry.args), kwargs=json.loads(entry.kwargs))  # what beat sends

    def finished() -> bool:
        with tenant_context(shop.id):
            export = AudienceExport.objects.filter(destination_id=destination.pk).first()
            return export is not None and export.status in ("succeeded", "failed")

    wait_for(finished)
    with tenant_context(shop.id):
        export = AudienceExport.objects.get(destination_id=destination.pk)
    assert export.status == AudienceExport.Status.SUCCEEDED, export.error
    assert (export.trigger, export.row_count, export.parts_sent, export.attempts) == ("schedule", 3, 2, 2)
    parts = [r.headers["X-Segmentor-Part"] for r in receiver.requests]
    assert parts[0] == "1/2" and parts[-1] == "2/2" and "1/2" not in parts[1:], "the retry resumed at part 2"
    assert all(verified(r) for r in receiver.requests)
    rows = [
        row for r in receiver.requests if r.headers["X-Segmentor-Part"] == "1/2" for row in parse_csv(r.body.decode())
    ]
    assert rows[0] == ["email", "phone", "fn", "ln", "ct", "st", "zip", "country"] and len(rows) == 3
