"""No double send, no lost send: real Celery workers (subprocesses) on Redis, killed mid-batch.

The workers run ``segmentor.celery.app`` (as ``celery -A segmentor worker`` would) against the test
database, on this test process's queue, sending to a real SMTP server (aiosmtpd) that is slowed
down so that a ``kill -9`` lands in the middle of a batch.

Timing knobs for the subprocess (``WORKER`` below sets them before the worker starts, so that
the test takes seconds instead of the production minutes): ``SEGMENTOR_TEST_STALE_CLAIM_SECONDS``
sets ``campaigns.sending.STALE_CLAIM`` (how old a dead worker's claim must be before another
worker takes it back), ``SEGMENTOR_TEST_RECHECK_SECONDS`` ``campaigns.tasks.RECHECK_SECONDS``,
and ``SEGMENTOR_TEST_VISIBILITY_TIMEOUT`` Redis' visibility timeout (when the unacknowledged task
of the killed worker is handed to another one), with unacked keys of our own so that restoring
never touches another test process's tasks.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from django.conf import settings
from django.db import connection

from campaigns import services
from campaigns.models import Campaign, CampaignAudience, CampaignRun, Delivery, Variant
from campaigns.sending import message_id
from contacts.consent import ConsentEvidence, consents_grant_new
from contacts.models import Contact
from segmentor.celery import app
from segments.models import Segment
from segments.services import segment_create, static_members_add
from tenants.audit import Actor
from tenants.context import tenant_context
from tests.mail import Inbox, SmtpSink

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]
ACTOR = Actor.system("test")
ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import datetime as dt, os
import django
django.setup()
from campaigns import sending, tasks
from segmentor.celery import app
env = os.environ.get
if env("SEGMENTOR_TEST_STALE_CLAIM_SECONDS"):
    sending.STALE_CLAIM = dt.timedelta(seconds=float(env("SEGMENTOR_TEST_STALE_CLAIM_SECONDS")))
if env("SEGMENTOR_TEST_RECHECK_SECONDS"):
    tasks.RECHECK_SECONDS = float(env("SEGMENTOR_TEST_RECHECK_SECONDS"))
queue = env("SEGMENTOR_TEST_QUEUE")
options = dict(app.conf.broker_transport_options or {})
options.update(unacked_key=f"unacked:{queue}", unacked_index_key=f"unacked_index:{queue}",
               unacked_mutex_key=f"unacked_mutex:{queue}")
if env("SEGMENTOR_TEST_VISIBILITY_TIMEOUT"):
    options.update(visibility_timeout=float(env("SEGMENTOR_TEST_VISIBILITY_TIMEOUT")),
                   unacked_restore_interval=1, unacked_restore_throttle=1)
app.conf.broker_transport_options = options
app.worker_main(["worker", "--pool=solo", "-Q", queue, "--loglevel=INFO", "--hostname", env("SEGMENTOR_TEST_NAME"),
                 "--without-gossip", "--without-mingle", "--without-heartbeat"])
"""


class SlowInbox(Inbox):
    """An SMTP server that takes ``delay`` seconds to accept each message (so a kill lands mid-batch)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


class Workers:
    """Start and kill real worker processes; each one logs to a file shown when a test fails."""

    code = WORKER  # what each process runs (bench/faults.py puts more timing knobs in front)

    def __init__(self, folder: Path, smtp_port: int, extra_env: dict[str, str]) -> None:
        self.folder = folder
        self.processes: list[subprocess.Popen[bytes]] = []
        db = connection.settings_dict
        auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
        self.env = {
            **os.environ,
            # The test database pytest-django created, not the one DATABASE_URL names.
            "DATABASE_URL": f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
            "DJANGO_SETTINGS_MODULE": "segmentor.settings_test",
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "EMAIL_URL": f"smtp://127.0.0.1:{smtp_port}",
            "SEGMENTOR_TEST_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
            **extra_env,
        }

    def start(self) -> subprocess.Popen[bytes]:
        name = f"worker{len(self.processes) + 1}"
        log = (self.folder / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-c", self.code], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**self.env, "SEGMENTOR_TEST_NAME": f"{name}@{settings.CELERY_TASK_DEFAULT_QUEUE}"},
        )  # fmt: skip
        self.processes.append(process)
        return process

    def wait_ready(self, *processes: subprocess.Popen[bytes]) -> None:
        for process in processes:
            wait_until(lambda: " ready." in self.log(process), 60, "a worker to start", self)  # noqa: B023

    def log(self, process: subprocess.Popen[bytes]) -> str:
        index = self.processes.index(process) + 1
        return (self.folder / f"worker{index}.log").read_text(errors="replace")

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.folder.glob("*.log")))


def purge_queue() -> None:
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    with app.connection_for_write() as conn:
        client = conn.default_channel.client  # type: ignore[attr-defined]
        client.delete(queue, f"unacked:{queue}", f"unacked_index:{queue}", f"unacked_mutex:{queue}")


@pytest.fixture
def workers_for(tmp_path: Path) -> Iterator[Any]:
    started: list[Workers] = []

    def make(smtp_port: int, **extra_env: str) -> Workers:
        workers = Workers(tmp_path, smtp_port, extra_env)
        started.append(workers)
        return workers

    purge_queue()
    yield make
    for workers in started:
        workers.stop_all()
    purge_queue()


def audience_of(tenant, size: int) -> tuple[Campaign, list[Contact]]:
    evidence = ConsentEvidence(source="api")
    people = Contact.objects.bulk_create(
        [Contact(tenant=tenant, email=f"reader{i}@example.com", first_name=f"Reader {i}") for i in range(size)]
    )
    consents_grant_new(
        tenant=tenant, contacts=people, channel="email", purpose="marketing", evidence=evidence, actor=ACTOR
    )
    segment = segment_create(tenant=tenant, actor=ACTOR, name="Readers", kind=Segment.Kind.STATIC)
    static_members_add(segment=segment, actor=ACTOR, contact_ids=[c.pk for c in people])
    tenant.frequency_cap_messages = 0
    tenant.default_sender_email = "news@shop.example"
    tenant.save()
    campaign = Campaign.objects.create(tenant=tenant, name="Newsletter", sender_name="Shop")
    CampaignAudience.objects.create(tenant=tenant, campaign=campaign, segment=segment)
    Variant.objects.create(
        tenant=tenant, campaign=campaign, name="All", subject="News for {{ contact.first_name }}",
        html_body="<p>Hello {{ contact.first_name }}</p>",
    )  # fmt: skip
    return campaign, people


def wait_until(check: Any, timeout: float, what: str, workers: Workers) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{workers.logs()}")
        time.sleep(0.2)


def run_finished(tenant_id: int, run_id: int) -> bool:
    with tenant_context(tenant_id):
        return CampaignRun.objects.get(pk=run_id).status == CampaignRun.Status.DONE


def assert_sent_exactly_once(tenant, run: CampaignRun, people: list[Contact], inbox: Inbox, killed: int) -> None:
    with tenant_context(tenant.id):
        deliveries = {d.contact_id: d for d in Delivery.objects.filter(run=run)}
        assert Counter(d.status for d in deliveries.values()) == {Delivery.Status.SENT: len(people)}
        assert Campaign.objects.get(pk=run.campaign_id).status == Campaign.Status.SENT
    copies: dict[str, list[str]] = defaultdict(list)
    for message in inbox.messages:
        copies[message["To"]].append(message["Message-ID"])
    # Everyone got the message.
    assert set(copies) == {c.email for c in people}
    # A repeat is only ever the message that was in flight when a worker died, with the same
    # Message-ID as its first copy (and the delivery's deterministic one), so a provider drops it.
    repeated = {to: ids for to, ids in copies.items() if len(ids) > 1}
    assert len(repeated) <= killed, repeated
    for contact in people:
        ids = copies[contact.email]
        assert len(ids) <= 2
        assert set(ids) == {message_id(deliveries[contact.pk].pk, tenant)}


def test_a_worker_killed_mid_batch_loses_nothing_and_repeats_at_most_the_message_in_flight(world, workers_for):
    tenant = world.tenant_a
    with tenant_context(tenant.id):
        campaign, people = audience_of(tenant, 40)
    inbox = SlowInbox(delay=0.1)
    sink = SmtpSink()
    sink.inbox, sink.controller = inbox, Controller(inbox, hostname="127.0.0.1", port=sink.port)
    with sink:
        workers = workers_for(
            sink.port, SEGMENTOR_TEST_STALE_CLAIM_SECONDS="3", SEGMENTOR_TEST_RECHECK_SECONDS="2",
            SEGMENTOR_TEST_VISIBILITY_TIMEOUT="4",
        )  # fmt: skip
        first = workers.start()
        with tenant_context(tenant.id):
            run = services.campaign_send_now(campaign=campaign, actor=ACTOR)  # send_run is queued on commit
        wait_until(lambda: len(inbox.messages) >= 12, 60, "the first worker to send a dozen messages", workers)
        workers.kill(first)  # kill -9, in the middle of the batch of 40
        received_before = len(inbox.messages)
        assert received_before < len(people), "the kill came too late to test anything"
        with tenant_context(tenant.id):
            unsent = Delivery.objects.filter(run=run).exclude(status=Delivery.Status.SENT).count()
        assert unsent > 0

        workers.start()
        wait_until(lambda: run_finished(tenant.id, run.pk), 90, "the second worker to finish the run", workers)
        time.sleep(0.5)  # a straggler still in the server would show up here
        assert_sent_exactly_once(tenant, run, people, inbox, killed=1)
        with tenant_context(tenant.id):
            # The dead worker's claims were taken back and sent by the second worker.
            assert Delivery.objects.filter(run=run, attempts=2).exists()


def test_two_workers_sending_one_run_at_once_send_each_message_once(world, workers_for):
    tenant = world.tenant_a
    with tenant_context(tenant.id):
        campaign, people = audience_of(tenant, 450)
    with SmtpSink() as sink:
        workers = workers_for(sink.port)
        both = [workers.start(), workers.start()]
        workers.wait_ready(*both)
        with tenant_context(tenant.id):
            run = services.campaign_send_now(campaign=campaign, actor=ACTOR)
        # A redelivered task and a second beat instance: more tasks for the same run, on both workers.
        from campaigns.tasks import send_run

        send_run.delay(tenant.id, run.pk)
        send_run.delay(tenant.id, run.pk)
        wait_until(lambda: run_finished(tenant.id, run.pk), 120, "the workers to finish the run", workers)
        time.sleep(0.5)
        assert len(sink.inbox.messages) == len(people)
        assert_sent_exactly_once(tenant, run, people, sink.inbox, killed=0)
        # Both workers took part (each logs the tasks it ran).
        for process in both:
            assert "campaigns.tasks.send_run" in workers.log(process), workers.logs()
