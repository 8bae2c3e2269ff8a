"""Fault suite: real processes, real faults, counted outcomes (``make faults``).

    .venv/bin/python bench/faults.py                     # every scenario, a Markdown table at the end
    .venv/bin/python bench/faults.py --only kill,redis   # some of them (names below)
    .venv/bin/python bench/faults.py --keep              # keep the folder with every log

Everything runs on services of its own, started here and stopped on the way out: a PostgreSQL
cluster (``initdb`` into a temporary folder, trust auth, the app's ordinary role ``segmentor``), a
``redis-server`` (saving to disk on shutdown, as Debian's default configuration does), SMTP servers
(aiosmtpd, in this process) and the app's processes: real Celery workers (``tests/campaigns/
test_worker_kill.Workers``, the same machinery as the kill test, with short timing knobs), gunicorn
and Celery beat. The shared PostgreSQL and Redis of the machine are never touched; the faults are
done to the private ones (``pg_ctl stop -m fast``/``start``, SIGTERM to Redis, SIGKILL to a worker
or a beat).

Scenarios (``--only``):

- ``kill``: a worker SIGKILLed in the middle of a send, then a new one started;
- ``redis``: Redis restarted during a send (and the API called meanwhile);
- ``pg-send``: PostgreSQL restarted during a send (fast shutdown);
- ``pg-crash``: PostgreSQL stopped like a crash (immediate shutdown) during a send;
- ``pg-ingest``: PostgreSQL restarted during event ingest through the API (a client posting batches
  with idempotency keys, retrying on 503); while it is down the API, a page and /healthz are asked
  (503 with a clear message, not a 500);
- ``beat``: two beat processes at once (django-celery-beat's scheduler, then ``LeaderScheduler``);
  the leader SIGKILLed; a one-off campaign under two beats; and the second wall: a campaign fired
  twice by two unlocked beats still makes one run;
- ``smtp``: an SMTP server that refuses (5xx), defers (4xx), greylists, stalls past the timeout,
  and one that never greets: retries with backoff, then a failure with the reason; the run finishes.

Each scenario counts what arrived at the SMTP server (by recipient and Message-ID) and what the
database holds, and says PASS or FAIL with the figures, the recovery time (from the end of the
fault to the next progress) and the time to finish.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import http.client
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.campaigns import Processes, wait_port  # noqa: E402
from tests.mail import Inbox, free_port  # noqa: E402

PYTHON = sys.executable
VENV_BIN = Path(PYTHON).parent
SCENARIOS = ("kill", "redis", "pg-send", "pg-crash", "pg-ingest", "beat", "smtp")
DOWN_SECONDS = 5.0  # how long a restarted service stays away
# Timing knobs of the worker processes (the production values are minutes): see KNOBS.
FAST = {
    "SEGMENTOR_TEST_STALE_CLAIM_SECONDS": "3",
    "SEGMENTOR_TEST_RECHECK_SECONDS": "2",
    "SEGMENTOR_TEST_VISIBILITY_TIMEOUT": "6",
    "FAULTS_RETRY_DELAY_SECONDS": "1",
    "FAULTS_SMTP_TIMEOUT_SECONDS": "2",
}
# Put in front of the kill test's worker program: more knobs (the backoff's first delay, the SMTP timeout).
KNOBS = """
import datetime as _dt, os as _os
import django as _django
_django.setup()
from campaigns import sending as _sending
from campaigns.channels import email as _email
if _os.environ.get("FAULTS_RETRY_DELAY_SECONDS"):
    _sending.RETRY_DELAY = _dt.timedelta(seconds=float(_os.environ["FAULTS_RETRY_DELAY_SECONDS"]))
if _os.environ.get("FAULTS_SMTP_TIMEOUT_SECONDS"):
    _email.DEFAULT_SMTP_TIMEOUT = float(_os.environ["FAULTS_SMTP_TIMEOUT_SECONDS"])
"""


# --- private services ------------------------------------------------------------------------------
def _as_postgres(args: list[str]) -> list[str]:
    """initdb and pg_ctl refuse to run as root: run them as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class Postgres:
    """A PostgreSQL cluster of this run's own, in ``folder``, on a free port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder / "pg"
        self.data = self.folder / "data"
        self.port = free_port()
        self.bin = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]

    @property
    def url(self) -> str:
        return f"postgres://segmentor@127.0.0.1:{self.port}/segmentor"

    def create(self) -> None:
        self.folder.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        initdb = [str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8"]
        subprocess.run(_as_postgres([*initdb, "--no-sync"]), check=True, capture_output=True)
        self.start()
        import psycopg

        with psycopg.connect(f"postgres://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE ROLE segmentor LOGIN CREATEDB NOSUPERUSER NOBYPASSRLS")
            conn.execute("CREATE DATABASE segmentor OWNER segmentor")

    def _ctl(self, *args: str) -> None:
        subprocess.run(_as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), *args]), check=True,
                       capture_output=True)  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=200"
        self._ctl("-l", str(self.folder / "server.log"), "-w", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "-w", "stop")


class Redis:
    """A redis-server of this run's own, saving to disk when it shuts down (Debian's default save points)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder / "redis"
        self.folder.mkdir(parents=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--save", "3600 1 300 100 60 10000", "--appendonly", "no", "--logfile", str(self.folder / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        wait_port(self.port)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: save, then exit
            self.process.wait(30)
        self.process = None


# --- the app's processes ---------------------------------------------------------------------------
def app_env(pg: Postgres, redis: Redis) -> dict[str, str]:
    return {
        "DJANGO_SETTINGS_MODULE": "segmentor.settings_test",
        "DATABASE_URL": pg.url,
        "CELERY_BROKER_URL": redis.url(0),
        "CACHE_URL": f"rediscache://127.0.0.1:{redis.port}/1",
        "SECRET_KEY": "faults-secret-key",
        "DEBUG": "0",
        "EMAIL_URL": "consolemail://",
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }


class Gunicorn:
    def __init__(self, processes: Processes, folder: Path) -> None:
        self.port = free_port()
        self.log = folder / "gunicorn.log"
        self.output = (folder / "web.log").open("wb")  # the app's own log lines (Django logs to stderr)
        processes.start(
            [str(VENV_BIN / "gunicorn"), "segmentor.wsgi", "-w", "2", "-b", f"127.0.0.1:{self.port}", "--timeout", "60",
             "--error-logfile", str(self.log)],
            cwd=ROOT, env={**os.environ}, stdout=self.output, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while self.get("/healthz")[0] != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not answer /healthz; see {self.log}")
            time.sleep(0.3)

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        """(status, content type, body text, headers); status 0 when the connection failed."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            payload = json.dumps(body) if body is not None else None
            conn.request(method, path, body=payload, headers={"Content-Type": "application/json", **(headers or {})})
            response = conn.getresponse()
            text = response.read().decode("utf-8", "replace")
            return response.status, response.getheader("Content-Type", ""), text, dict(response.getheaders())
        except OSError as error:
            return 0, "", f"{type(error).__name__}: {error}", {}
        finally:
            conn.close()

    def get(self, path: str, headers: dict[str, str] | None = None) -> Any:
        return self.request("GET", path, headers=headers)


def start_beat(processes: Processes, folder: Path, name: str, scheduler: str) -> subprocess.Popen[bytes]:
    log = (folder / f"{name}.log").open("wb")
    return processes.start(
        [str(VENV_BIN / "celery"), "-A", "segmentor", "beat", "-S", scheduler, "--max-interval", "1", "-l", "INFO",
         "-s", str(folder / f"{name}.schedule"), "--pidfile="],
        cwd=ROOT, env={**os.environ}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


# --- outcomes ----------------------------------------------------------------------------------------
@dataclass
class Outcome:
    scenario: str
    passed: bool = False
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def row(self) -> str:
        shown = ", ".join(f"{key} {value}" for key, value in self.figures.items())
        return f"| {self.scenario} | {'PASS' if self.passed else 'FAIL'} | {shown} | {'; '.join(self.notes)} |"


def retrying(read: Callable[[], Any], default: Any = None, attempts: int = 3) -> Any:
    """Run a database read of this process, reconnecting when the database went away; else ``default``."""
    from django.db import DatabaseError, connection

    for attempt in range(attempts):
        try:
            return read()
        except DatabaseError:
            connection.close()
            if attempt < attempts - 1:
                time.sleep(1)
    return default


def wait_for(check: Callable[[], bool], timeout: float, poll: float = 0.2) -> float | None:
    """Seconds until ``check()`` held, or None when it did not within ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(poll)
    return None


@dataclass
class Tally:
    """What arrived at the SMTP server for a run, against its recipients and deliveries."""

    recipients: int
    messages: int
    missing: int
    repeated: int  # recipients who got the same message (same Message-ID) more than once
    conflicting: int  # recipients who got two different messages
    statuses: dict[str, int]

    @property
    def exactly_once(self) -> bool:
        return self.missing == 0 and self.repeated == 0 and self.conflicting == 0

    def figures(self) -> dict[str, Any]:
        return {
            "recipients": self.recipients, "messages": self.messages, "missing": self.missing,
            "repeated": self.repeated, "conflicting": self.conflicting,
            "deliveries": " ".join(f"{k}={v}" for k, v in sorted(self.statuses.items())),
        }  # fmt: skip


def tally(tenant: Any, run_id: int, people: list[Any], messages: list[Any]) -> Tally:
    from campaigns.models import Delivery
    from tenants.context import tenant_context

    with tenant_context(tenant.id):
        statuses = Counter(Delivery.objects.filter(run_id=run_id).values_list("status", flat=True))
    copies: dict[str, list[str]] = defaultdict(list)
    for message in messages:
        copies[str(message["To"])].append(str(message["Message-ID"]))
    emails = {c.email for c in people}
    return Tally(
        recipients=len(emails), messages=len(messages), missing=len(emails - set(copies)),
        repeated=sum(1 for ids in copies.values() if len(ids) > len(set(ids))),
        conflicting=sum(1 for ids in copies.values() if len(set(ids)) > 1), statuses=dict(statuses),
    )  # fmt: skip


class FaultyInbox(Inbox):
    """Answers by the recipient's name: ``refused…`` 550, ``deferred…`` 451 every time, ``greylisted…``
    451 twice then takes the message, ``stalled…`` says nothing for ``stall`` seconds (past the
    sender's timeout) then 451; takes everyone else's. Notes when each recipient was tried."""

    def __init__(self, stall: float) -> None:
        super().__init__()
        self.stall = stall
        self.tries: dict[str, list[float]] = defaultdict(list)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        self.tries[address].append(time.monotonic())
        kind = address.split("@")[0].rstrip("0123456789")
        if kind == "refused":
            return "550 5.1.1 No such user here"
        if kind == "deferred":
            return "451 4.3.0 Mailbox temporarily unavailable, try again later"
        if kind == "greylisted" and len(self.tries[address]) <= 2:
            return "451 4.7.1 Greylisted, try again later"
        if kind == "stalled":
            await asyncio.sleep(self.stall)
            return "451 4.4.2 Timeout"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    def gaps(self, address: str) -> list[float]:
        """Seconds between one try of ``address`` and the next."""
        times = self.tries[address]
        return [later - earlier for earlier, later in itertools.pairwise(times)]


# --- the suite ----------------------------------------------------------------------------------------
class Suite:
    def __init__(self, folder: Path, pg: Postgres, redis: Redis, processes: Processes) -> None:
        self.folder, self.pg, self.redis, self.processes = folder, pg, redis, processes
        self.outcomes: list[Outcome] = []
        self.owner: Any = None
        self.web: Gunicorn | None = None
        self.api_secret = ""
        self.api_tenant: Any = None
        self.beat_scheduler = "segmentor.beat:LeaderScheduler"

    # -- shared set-up
    def tenant(self, name: str) -> Any:
        from tenants.models import User
        from tenants.services import tenant_create

        if self.owner is None:
            self.owner = User.objects.create_user("faults@example.com", "faults-password-1")
        return tenant_create(name=name, owner=self.owner)

    def audience(self, name: str, size: int) -> tuple[Any, Any, list[Any]]:
        from tenants.context import tenant_context
        from tests.campaigns.test_worker_kill import audience_of

        tenant = self.tenant(name)
        with tenant_context(tenant.id):
            campaign, people = audience_of(tenant, size)
        return tenant, campaign, people

    def send_now(self, tenant: Any, campaign: Any) -> Any:
        from campaigns import services
        from tenants.audit import Actor
        from tenants.context import tenant_context

        with tenant_context(tenant.id):
            return services.campaign_send_now(campaign=campaign, actor=Actor.system("faults"))

    def run_done(self, tenant: Any, run_id: int) -> bool:
        from tests.campaigns.test_worker_kill import run_finished

        return bool(retrying(lambda: run_finished(tenant.id, run_id), False))

    def workers(self, name: str, smtp_port: int, **knobs: str) -> Any:
        from tests.campaigns.test_worker_kill import Workers, purge_queue

        class FaultWorkers(Workers):
            code = KNOBS + Workers.code

        folder = self.folder / name
        folder.mkdir(exist_ok=True)
        retrying(purge_queue)
        return FaultWorkers(folder, smtp_port, {**FAST, **knobs})

    def record(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        print(outcome.row(), flush=True)

    def run(self, name: str, scenario: Callable[[Outcome], None]) -> None:
        outcome = Outcome(name)
        started = time.monotonic()
        try:
            scenario(outcome)
        except Exception as error:  # noqa: BLE001 - one scenario's failure is its row, the next one runs
            traceback.print_exc()
            outcome.passed = False
            outcome.notes.append(f"error: {type(error).__name__}: {str(error)[:300]}")
        outcome.figures["took"] = f"{time.monotonic() - started:.0f} s"
        self.record(outcome)

    # -- a send with a fault in the middle
    @contextlib.contextmanager
    def sink(self, inbox: Any) -> Iterator[Any]:
        """An SMTP server (aiosmtpd, in this process) with ``inbox`` as its handler."""
        from aiosmtpd.controller import Controller

        from tests.mail import SmtpSink

        sink = SmtpSink()
        sink.inbox, sink.controller = inbox, Controller(inbox, hostname="127.0.0.1", port=sink.port)
        with sink:
            yield sink

    def send_through(self, outcome: Outcome, name: str, size: int, fault: Callable[[Any], None], *,
                     allowed_repeats: int = 0, timeout: float = 180,
                     after: Callable[[Any, Any], None] | None = None) -> None:  # fmt: skip
        """Send ``size`` messages through a slow SMTP server; call ``fault`` a third of the way through.

        ``fault(workers)`` does the damage and returns when the service is back. Recovery is the
        time from then to the next message at the server; "done after" to the end of the run.
        ``after(workers, sink)`` runs once the run is done, with the same workers and server.
        """
        from tests.campaigns.test_worker_kill import SlowInbox

        tenant, campaign, people = self.audience(name, size)
        inbox = SlowInbox(delay=0.03)
        counts: Tally | None = None
        with self.sink(inbox) as sink:
            workers = self.workers(name, sink.port)
            try:
                workers.wait_ready(workers.start())
                run = self.send_now(tenant, campaign)
                if wait_for(lambda: len(inbox.messages) >= size // 3, 120) is None:
                    raise RuntimeError("the send did not start")
                before = len(inbox.messages)
                fault(workers)
                back, at_back = time.monotonic(), len(inbox.messages)
                resumed = wait_for(lambda: len(inbox.messages) > at_back or self.run_done(tenant, run.pk), timeout)
                finished = wait_for(lambda: self.run_done(tenant, run.pk), timeout)
                done_after = time.monotonic() - back
                time.sleep(1.0)  # a straggler would arrive now
                counts = retrying(lambda: tally(tenant, run.pk, people, list(inbox.messages)))
                if after is not None and finished is not None:
                    after(workers, sink)
            finally:
                workers.stop_all()
        if counts is not None:
            outcome.figures.update(counts.figures())
        outcome.figures["sent during the fault"] = at_back - before
        outcome.figures["recovery"] = "never" if resumed is None else f"{resumed:.1f} s"
        outcome.figures["done after"] = "never" if finished is None else f"{done_after:.1f} s"
        outcome.passed = bool(
            finished is not None
            and counts is not None
            and counts.missing == 0
            and counts.conflicting == 0
            and counts.repeated <= allowed_repeats
            and counts.statuses == {"sent": size}
        )
        if finished is None:
            outcome.notes.append(f"the run was not done within {timeout:.0f} s; logs in {workers.folder}")

    def second_send(self, name: str, size: int, sink: Any, timeout: float = 60) -> float | None:
        """Another campaign through the same workers and server: seconds until done (None: not done)."""
        tenant, campaign, people = self.audience(name, size)
        sink.inbox.messages.clear()
        run = self.send_now(tenant, campaign)
        took = wait_for(lambda: self.run_done(tenant, run.pk), timeout)
        counts = retrying(lambda: tally(tenant, run.pk, people, list(sink.inbox.messages)))
        return took if counts is not None and counts.exactly_once else None

    def scenario_kill(self, outcome: Outcome) -> None:
        def kill(workers: Any) -> None:
            workers.kill(workers.processes[0])  # SIGKILL, mid-batch
            workers.start()

        # The message in flight when the worker died may arrive twice, with the same Message-ID
        # (a provider drops the repeat): nothing can know whether the server took it.
        self.send_through(outcome, "Kill", 300, kill, allowed_repeats=1)

    def scenario_redis(self, outcome: Outcome) -> None:
        import redis
        from django_celery_beat.models import ClockedSchedule, PeriodicTask

        probes: dict[str, str] = {}
        self.web_server()
        # A beat, and a one-off schedule that falls due while Redis is away: it must fire once, late.
        folder = self.folder / "Redis beat"
        folder.mkdir(exist_ok=True)
        start_beat(self.processes, folder, "beat", self.beat_scheduler)
        log = folder / "beat.log"
        if wait_for(lambda: "beat: Starting" in log.read_text(errors="replace"), 120) is None:
            raise RuntimeError(f"the beat did not start; see {log}")
        queue = "faults-redis-probe"

        def restart(workers: Any) -> None:
            due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)
            PeriodicTask.objects.create(
                name="faults one-off", task="faults.probe", clocked=ClockedSchedule.objects.create(clocked_time=due),
                one_off=True, queue=queue,
            )  # fmt: skip
            self.redis.stop()
            probes.update(self.probe_while_down())
            time.sleep(max(0.0, DOWN_SECONDS - 1))
            self.redis.start()

        def again(workers: Any, sink: Any) -> None:
            took = self.second_send("Redis again", 20, sink)
            outcome.figures["next campaign after the restart"] = "not sent" if took is None else f"sent in {took:.1f} s"
            if took is None:
                outcome.passed = False

        self.send_through(outcome, "Redis", 600, restart, after=again)
        broker = redis.Redis.from_url(self.redis.url(0))
        fired = wait_for(lambda: broker.llen(queue) > 0, 60)
        time.sleep(2)  # a second fire would be there now
        copies = int(broker.llen(queue))
        outcome.figures["one-off due while Redis was down"] = "lost" if fired is None else f"fired {copies}×"
        outcome.figures["while Redis was down"] = ", ".join(f"{k} {v}" for k, v in probes.items())
        if any(code.startswith("5") and not k.startswith("healthz") for k, code in probes.items()):
            outcome.passed = False
            outcome.notes.append("a request failed while Redis was down")
        if copies != 1:
            outcome.passed = False

    def probe_while_down(self) -> dict[str, str]:
        """An API read, an API write (a batch of one event), a page and /healthz: their statuses."""
        web, secret = self.web_server()
        key = {"Authorization": f"Bearer {secret}"}
        event = {
            "events": [{"event": "probe", "email": "probe@example.com", "idempotency_key": f"probe-{time.time()}"}]
        }
        calls = {
            "API read": lambda: web.get("/api/v1/contacts/?page_size=1", key),
            "API write": lambda: web.request("POST", "/api/v1/events/batch/", event, key),
            "page": lambda: web.get("/accounts/login/"),
            "healthz": lambda: web.get("/healthz"),
        }
        answers = {}
        for name, call in calls.items():
            started = time.monotonic()
            answers[name] = f"{call()[0]} ({time.monotonic() - started:.1f} s)"
        return answers

    def scenario_pg_send(self, outcome: Outcome) -> None:
        def restart(workers: Any) -> None:
            self.pg.stop()  # fast shutdown: sessions are ended, committed work is kept
            time.sleep(DOWN_SECONDS)
            self.pg.start()

        self.send_through(outcome, "PG send", 300, restart)

    def scenario_pg_crash(self, outcome: Outcome) -> None:
        def crash(workers: Any) -> None:
            # Immediate shutdown, like a crash: no checkpoint, and the last results, committed with
            # synchronous_commit off, may be gone when it comes back (the worker writes them again).
            self.pg.stop("immediate")
            time.sleep(DOWN_SECONDS)
            self.pg.start()

        self.send_through(outcome, "PG crash", 300, crash)

    # -- event ingest through the API while PostgreSQL restarts
    def scenario_pg_ingest(self, outcome: Outcome) -> None:
        web, secret = self.web_server()
        key = {"Authorization": f"Bearer {secret}"}
        batches, size = 60, 100
        statuses: Counter[int] = Counter()
        successes: list[float] = []
        failures: list[str] = []

        def client() -> None:
            for number in range(batches):
                events = [
                    {
                        "event": "fault_view",
                        "email": f"ingest{i % 50}@example.com",
                        "idempotency_key": f"ingest-{number}-{i}",
                    }
                    for i in range(size)
                ]
                for _ in range(200):  # a client that retries on 503 and on a refused connection
                    status, _, body, headers = web.request("POST", "/api/v1/events/batch/", {"events": events}, key)
                    statuses[status] += 1
                    if status == 200:
                        successes.append(time.monotonic())
                        break
                    if status not in (0, 503):
                        failures.append(f"{status}: {body[:200]}")
                    time.sleep(min(float(headers.get("Retry-After", 1)), 0.5))
                else:
                    failures.append(f"batch {number} never stored")

        thread = threading.Thread(target=client)
        thread.start()
        wait_for(lambda: len(successes) >= batches // 3, 120)
        self.pg.stop()
        down = self.down_answers(web, key)
        time.sleep(max(0.0, DOWN_SECONDS - 1))
        self.pg.start()
        back = time.monotonic()
        thread.join(300)
        stored, counted = retrying(lambda: self.ingested(), (None, None))
        after = [t - back for t in successes if t > back]
        outcome.figures.update({
            "events sent": batches * size, "stored": stored, "counted in rollups": counted,
            "answers": " ".join(f"{k}×{v}" for k, v in sorted(statuses.items())),
            "recovery": f"{after[0]:.1f} s" if after else "never",
        })  # fmt: skip
        outcome.figures.update(down["figures"])
        outcome.notes.extend(down["problems"] + failures[:3])
        outcome.passed = bool(
            stored == counted == batches * size and not failures and not down["problems"] and statuses[500] == 0
        )

    def ingested(self) -> tuple[int, int]:
        from django.db.models import Sum

        from contacts.models import Event, EventDailyRollup
        from tenants.context import tenant_context

        with tenant_context(self.api_tenant.id):
            stored = Event.objects.filter(idempotency_key__startswith="ingest-").count()
            counted = EventDailyRollup.objects.filter(name="fault_view").aggregate(n=Sum("count"))["n"] or 0
        return stored, int(counted)

    def down_answers(self, web: Gunicorn, key: dict[str, str]) -> dict[str, Any]:
        """While the database is down: the API (read and write), a page and /healthz, checked for a clear 503."""
        problems: list[str] = []
        api = [web.get("/api/v1/contacts/?page_size=1", key),
               web.request("POST", "/api/v1/events/batch/", {"events": []}, key)]  # fmt: skip
        for status, content_type, body, headers in api:
            try:
                error = json.loads(body)["error"]
            except (ValueError, KeyError, TypeError):
                error = {}
            if status != 503 or "application/json" not in content_type or error.get("code") != "unavailable":
                problems.append(f"API answered {status} {body[:120]}")
            if "Retry-After" not in headers:
                problems.append("API 503 without Retry-After")
            if "Traceback" in body:
                problems.append("API showed a stack trace")
        page = web.get("/accounts/login/")
        if page[0] != 503 or "Temporarily unavailable" not in page[2] or "Traceback" in page[2]:
            problems.append(f"page answered {page[0]}")
        health = web.get("/healthz")
        if health[0] != 503 or "database" not in health[2]:
            problems.append(f"healthz answered {health[0]}")
        message = json.loads(api[0][2])["error"]["message"] if not problems else ""
        return {
            "figures": {"while down": f"API {api[0][0]}/{api[1][0]}, page {page[0]}, healthz {health[0]}",
                        "message": f"“{message}”"},
            "problems": problems,
        }  # fmt: skip

    # -- two beats
    def scenario_beat(self, outcome: Outcome) -> None:
        import redis
        from django.utils import timezone
        from django_celery_beat.models import IntervalSchedule, PeriodicTask

        queue = "faults-beat-probe"
        every = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.SECONDS)
        probe = PeriodicTask.objects.create(name="faults probe", task="faults.probe", interval=every, queue=queue)
        folder = self.folder / "beat"
        folder.mkdir(exist_ok=True)
        stock, leader = "django_celery_beat.schedulers:DatabaseScheduler", "segmentor.beat:LeaderScheduler"
        window = 10.0
        broker = redis.Redis.from_url(self.redis.url(0))

        def fired() -> int:
            return int(broker.llen(queue))

        def log(name: str) -> str:
            path = folder / f"{name}.log"
            return path.read_text(errors="replace") if path.exists() else ""

        def pair(scheduler: str, names: tuple[str, str], ready: Callable[[], bool]) -> list[subprocess.Popen[bytes]]:
            """Two beats, once both tick and the schedule fires (the count starts from zero)."""
            broker.delete(queue)
            beats = [start_beat(self.processes, folder, name, scheduler) for name in names]
            started = wait_for(lambda: all("beat: Starting" in log(n) for n in names) and ready() and fired() > 0, 120)
            if started is None:
                raise RuntimeError(f"the beats did not start firing; see {folder}")
            time.sleep(2)
            return beats

        def count() -> int:
            start = fired()
            time.sleep(window)
            return fired() - start

        def stop(beats: list[subprocess.Popen[bytes]]) -> None:
            for beat in beats:
                self.processes.stop(beat)

        names = ("stock1", "stock2")
        both = pair(stock, names, lambda: all("Sending due task faults probe" in log(n) for n in names))
        unlocked = count()
        stop(both)
        PeriodicTask.objects.filter(pk=probe.pk).update(last_run_at=timezone.now())
        names = ("leader1", "leader2")
        both = pair(leader, names, lambda: any("beat.leading" in log(n) for n in names))
        locked = count()
        # Kill the leader: the other takes over; count a window after the takeover.
        leading = [beat for beat, name in zip(both, names, strict=True) if "beat.leading" in log(name)]
        takeover = None
        if len(leading) == 1:
            before = fired()
            leading[0].send_signal(signal.SIGKILL)
            leading[0].wait(10)
            killed_at = time.monotonic()
            if wait_for(lambda: fired() > before, 60, poll=0.05) is not None:
                takeover = time.monotonic() - killed_at
        after_kill = count()
        PeriodicTask.objects.filter(pk=probe.pk).update(enabled=False)
        stop(both)
        outcome.figures.update({
            f"fires in {window:.0f} s of a 1 s schedule, two unlocked beats": unlocked,
            "two LeaderScheduler beats": locked, "leaders": len(leading),
            "takeover after SIGKILL of the leader": "never" if takeover is None else f"{takeover:.1f} s",
            "fires after the takeover": after_kill,
        })  # fmt: skip
        passed = unlocked >= 1.6 * window and abs(locked - window) <= 2 and len(leading) == 1
        passed = passed and takeover is not None and abs(after_kill - window) <= 2

        # A one-off campaign under two leader beats, then under two unlocked ones (the second wall).
        for label, scheduler in (("leader", leader), ("unlocked", stock)):
            beats = [start_beat(self.processes, folder, f"{label}-c1", scheduler),
                     start_beat(self.processes, folder, f"{label}-c2", scheduler)]  # fmt: skip
            try:
                result = self.scheduled_campaign(f"Beat {label}", 30)
            finally:
                stop(beats)
            outcome.figures[f"one-off campaign, {label} beats"] = result["summary"]
            passed = passed and result["ok"]
        outcome.passed = passed

    def scheduled_campaign(self, name: str, size: int) -> dict[str, Any]:
        """A campaign at a time a few seconds ahead, under the running beats, with a worker: runs and messages."""
        from campaigns import services
        from campaigns.models import Campaign, CampaignRun
        from tenants.audit import Actor
        from tenants.context import tenant_context
        from tests.mail import Inbox

        tenant, campaign, people = self.audience(name, size)
        inbox = Inbox()
        made: list[Any] = []
        counts = None
        with self.sink(inbox) as sink:
            workers = self.workers(name, sink.port)
            try:
                workers.wait_ready(workers.start())
                with tenant_context(tenant.id):
                    campaign.schedule = Campaign.Schedule.AT
                    campaign.send_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
                    campaign.save()
                    services.campaign_schedule(campaign=campaign, actor=Actor.system("faults"))

                def runs() -> list[Any]:
                    with tenant_context(tenant.id):
                        return list(CampaignRun.objects.filter(campaign=campaign))

                wait_for(lambda: any(self.run_done(tenant, r.pk) for r in retrying(runs, [])), 120)
                time.sleep(3)  # a second fire would be received now
                made = runs()
                fired = workers.log(workers.processes[0]).count("campaigns.scheduling.start_scheduled_run[") // 2
                counts = tally(tenant, made[0].pk, people, list(inbox.messages)) if made else None
            finally:
                workers.stop_all()
        ok = len(made) == 1 and counts is not None and counts.exactly_once and counts.statuses == {"sent": size}
        summary = f"fired {fired}×, runs {len(made)}, " + (
            f"messages {counts.messages} to {counts.recipients}, repeated {counts.repeated}" if counts else "no run"
        )
        return {"ok": ok, "summary": summary}

    # -- an SMTP server that refuses, defers, greylists or stalls; one that never greets
    def scenario_smtp(self, outcome: Outcome) -> None:
        timeout = float(FAST["FAULTS_SMTP_TIMEOUT_SECONDS"])
        delay = float(FAST["FAULTS_RETRY_DELAY_SECONDS"])
        answers = {"ok": 4, "refused": 3, "deferred": 3, "greylisted": 3}
        stalls = {"stalled": 2}  # a campaign of their own: their timeouts would stretch the others' gaps
        inbox = FaultyInbox(stall=timeout * 3)
        started = time.monotonic()
        rows: dict[str, tuple[str, int, str]] = {}
        done = True
        with self.sink(inbox) as sink:
            workers = self.workers("SMTP", sink.port)
            try:
                workers.wait_ready(workers.start())
                for name, kinds in (("SMTP answers", answers), ("SMTP stalls", stalls)):
                    tenant, run_id = self.send_to(name, kinds)
                    done = done and wait_for(lambda: self.run_done(tenant, run_id), 240) is not None  # noqa: B023
                    rows.update(self.deliveries(tenant, run_id))
            finally:
                workers.stop_all()
        took = time.monotonic() - started
        expect = {"ok": ("sent", 1), "refused": ("failed", 1), "deferred": ("failed", 5), "greylisted": ("sent", 3),
                  "stalled": ("failed", 5)}  # fmt: skip
        wrong = [f"{a}: {s}/{n} {e[:60]}" for a, (s, n, e) in rows.items()
                 if (s, n) != expect[a.split("@")[0].rstrip("0123456789")]]  # fmt: skip
        reasons = {kind: next((e for a, (_, _, e) in rows.items() if a.startswith(kind)), "") for kind in expect}
        gaps = inbox.gaps("deferred0@example.com")
        # Never sooner than the backoff (delay, 2 × delay, 4 × delay, 8 × delay; later by up to a recheck).
        backoff = len(gaps) == 4 and all(gap >= delay * 2**n - 0.2 for n, gap in enumerate(gaps))
        outcome.figures.update({
            "recipients": " ".join(f"{k}×{v}" for k, v in {**answers, **stalls}.items()),
            "statuses": " ".join(f"{k}={v}" for k, v in sorted(Counter(s for s, _, _ in rows.values()).items())),
            f"gaps between the tries of a 451 (backoff from {delay:.0f} s)": " ".join(f"{g:.1f}" for g in gaps) + " s",
            "reasons": "; ".join(f"{k}: “{v[:90]}”" for k, v in reasons.items() if v),
            "runs done": "never" if not done else f"after {took:.0f} s",
        })  # fmt: skip
        silent = self.silent_server(outcome)
        outcome.notes.extend(wrong[:4])
        outcome.passed = done and not wrong and backoff and silent

    def send_to(self, name: str, kinds: dict[str, int]) -> tuple[Any, int]:
        """Send a campaign to ``kind0@example.com`` … for each kind; return the tenant and the run's id."""
        from contacts.models import Contact
        from contacts.services import contact_update
        from tenants.context import tenant_context

        tenant, campaign, people = self.audience(name, sum(kinds.values()))
        addresses = [f"{kind}{n}@example.com" for kind, count in kinds.items() for n in range(count)]
        with tenant_context(tenant.id):
            for contact, address in zip(people, addresses, strict=True):
                contact_update(contact=Contact.objects.get(pk=contact.pk), data={"email": address})
        return tenant, self.send_now(tenant, campaign).pk

    def silent_server(self, outcome: Outcome) -> bool:
        """An SMTP server that takes the connection and never says a word: every message fails, with the reason."""
        tenant, campaign, _ = self.audience("SMTP silent", 3)
        server = socket.create_server(("127.0.0.1", 0))
        held: list[socket.socket] = []

        def hold() -> None:
            with contextlib.suppress(OSError):
                while True:
                    held.append(server.accept()[0])

        threading.Thread(target=hold, daemon=True).start()
        workers = self.workers("SMTP silent", server.getsockname()[1])
        try:
            workers.wait_ready(workers.start())
            run = self.send_now(tenant, campaign)
            finished = wait_for(lambda: self.run_done(tenant, run.pk), 240)
        finally:
            workers.stop_all()
            server.close()
            for conn in held:
                conn.close()
        rows = self.deliveries(tenant, run.pk)
        first = next(iter(rows.values()))
        shapes = ", ".join(f"{count}× {status} after {tries} attempts" for (status, tries), count in
                           Counter((s, n) for s, n, _ in rows.values()).items())  # fmt: skip
        outcome.figures["server that never greets"] = (
            "never done" if finished is None else f"done after {finished:.0f} s"
        ) + f", {shapes}, “{first[2][:100]}”"
        return finished is not None and all(s == "failed" and n == 5 for s, n, _ in rows.values())

    def deliveries(self, tenant: Any, run_id: int) -> dict[str, tuple[str, int, str]]:
        """Each recipient's delivery: status, attempts, error."""
        from campaigns.models import Delivery
        from tenants.context import tenant_context

        with tenant_context(tenant.id):
            rows = Delivery.objects.filter(run_id=run_id).values_list("contact__email", "status", "attempts", "error")
            return {email: (status, attempts, error) for email, status, attempts, error in rows}

    # -- the web server, and an API key of a tenant of its own
    def web_server(self) -> tuple[Gunicorn, str]:
        if self.web is None:
            from tenants.context import tenant_context
            from tenants.models import ApiKey, Membership
            from tenants.services import api_key_create

            tenant = self.tenant("API")
            with tenant_context(tenant.id):
                owner = Membership.objects.get(tenant=tenant, user=self.owner)
                _, self.api_secret = api_key_create(
                    tenant=tenant, name="faults", scope=ApiKey.Scope.WRITE, acting=owner
                )
            self.api_tenant = tenant
            self.web = Gunicorn(self.processes, self.folder)
        return self.web, self.api_secret


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated: " + ", ".join(SCENARIOS))
    parser.add_argument("--keep", action="store_true", help="keep the folder with the logs and the databases")
    parser.add_argument(
        "--beat-scheduler", default="segmentor.beat:LeaderScheduler",
        help="the beat of the redis scenario (django_celery_beat.schedulers:DatabaseScheduler shows the loss)",
    )  # fmt: skip
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    folder = Path(tempfile.mkdtemp(prefix="segmentor-faults-"))
    folder.chmod(0o755)  # the postgres user must reach its data folder inside
    pg, redis = Postgres(folder), Redis(folder)
    print(f"faults: logs in {folder}", flush=True)
    with Processes() as processes:
        try:
            pg.create()
            redis.start()
            os.environ.update(app_env(pg, redis))
            subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)
            import django

            django.setup()
            import logging

            logging.getLogger().setLevel(logging.WARNING)  # this process: the table, not every SMTP line
            suite = Suite(folder, pg, redis, processes)
            suite.beat_scheduler = args.beat_scheduler
            print("| scenario | outcome | figures | notes |\n|---|---|---|---|", flush=True)
            for name in chosen:
                suite.run(name, getattr(suite, "scenario_" + name.replace("-", "_")))
        finally:
            redis.stop()
            with contextlib.suppress(subprocess.CalledProcessError):
                pg.stop("immediate")
    print_summary(suite.outcomes)
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    sys.exit(0 if all(o.passed for o in suite.outcomes) else 1)


def print_summary(outcomes: list[Outcome]) -> None:
    load = os.getloadavg()[0]
    print(f"\n{platform.node()} · {os.cpu_count()} cores · {dt.date.today()} · load average {load:.2f}\n")
    print("| scenario | outcome | figures | notes |\n|---|---|---|---|")
    for outcome in outcomes:
        print(outcome.row())


if __name__ == "__main__":
    main()
