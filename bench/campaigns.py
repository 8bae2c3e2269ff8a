"""Benchmark: campaigns — the audience snapshot at 1M contacts, and email send throughput end to end.

    .venv/bin/python bench/campaigns.py                      # snapshot + send (each in a subprocess)
    .venv/bin/python bench/campaigns.py --only snapshot      # 1M deliveries from a 1M-member segment
    .venv/bin/python bench/campaigns.py --only send          # Segmentor vs django-post-office vs sink
    .venv/bin/python bench/campaigns.py --only profile       # cProfile of the send path, in process
    .venv/bin/python bench/campaigns.py --only send --contacts 30000 --repeats 3

- **Snapshot** (goal < 15 s for 1,000,000 deliveries): ``campaigns.sending.run_start`` on the
  benchmark tenant ``bench-1m`` in ``segmentor_bench`` (``bench/build_tenant.py``), for a campaign
  whose audience is a static segment holding every contact (members written set-based), with
  variants for a segment (country DE), a lifecycle stage and an A/B split of the default, so the
  CASE is a realistic one. Each repeat first deletes the previous run and its deliveries and
  VACUUMs the table. In process, app role with RLS, DEBUG off.
- **Send** (goals ≥ 1,200 messages/s and ≥ 3 × django-post-office): a campaign of ``--contacts``
  contacts with email consent (database ``bench_h6_send``, generated with
  ``contacts.generator``), a Liquid template with personalisation (first name with a default, a
  conditional on the stage, the CTA), sent by **2 real Celery worker processes** (``celery -A
  segmentor worker -c 2``, prefork, Redis db 6) through Django's SMTP backend to Postfix's
  ``smtp-sink``. Timed from enqueueing ``send_run`` (twice, one per process) until every delivery
  is settled (the run is done); the snapshot is not in that time. The same rendered messages are
  then queued in django-post-office (its own settings, ``bench/postoffice_settings.py``, and its own
  database ``bench_h6_postoffice``) with ``mail.send(...)`` — timed apart, not in its send time —
  and sent by ``send_queued_mail --processes 2`` to the same sink. Beside them the sink's ceiling:
  the same messages pre-built as bytes, over one smtplib connection. The three run in a rotating
  order in every repeat.

The sink, the workers and the post-office processes are started here and stopped on the way out,
also on failure or Ctrl-C. Prints Markdown for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import io
import json
import os
import platform
import pstats
import re
import resource
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.api_ingest import CLOCK_TICKS
from bench.api_ingest import process_cpu as cpu_seconds
from bench.run import ADMIN_URL, PYTHON, ROOT
from bench.run import env as base_env

SNAPSHOT_DB = "segmentor_bench"
SEND_DB = os.environ.get("BENCH_SEND_DB", "bench_h6_send")
POSTOFFICE_DB = os.environ.get("BENCH_POSTOFFICE_DB", "bench_h6_postoffice")
REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "6"))
# Two copies of this benchmark may run at once (other databases): each has its own sink port and queue.
QUEUE = f"bench-campaigns-{os.getpid()}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


SINK_PORT = int(os.environ.get("BENCH_SINK_PORT") or free_port())
SNAPSHOT_GOAL_S = 15.0
SEND_GOAL_PER_S = 1_200.0
RATIO_GOAL = 3.0
PREFIX = "bench campaigns: "
SEND_TENANT = "bench-send"
WORK = Path(tempfile.gettempdir()) / f"segmentor-bench-campaigns-{SEND_DB}"

SUBJECT = (
    '{{ contact.first_name | default: "Hello" }}, '
    "{% if contact.lifecycle_stage == 'loyal_advocate' %}a thank-you from {{ tenant.name }}"
    "{% else %}new this week at {{ tenant.name }}{% endif %}"
)
PRODUCT = """
      <tr><td style="padding:12px 24px;border-top:1px solid #eee">
        <table role="presentation" width="100%"><tr>
          <td width="96"><img src="https://cdn.shop.example/p/{n}.jpg" width="96" height="96" alt="Product {n}"></td>
          <td style="padding-left:16px;font:15px/1.4 Helvetica,Arial,sans-serif;color:#333">
            <strong>Trail runner {n}</strong><br>Light, grippy and made for long weekends outside.<br>
            <span style="color:#0a7">from 89.00 EUR</span>
          </td></tr></table>
      </td></tr>"""
HTML = (
    """<!doctype html>
<html><head><meta charset="utf-8"><title>{{ campaign.name }}</title>
<style>body{margin:0;background:#f4f4f4} .btn{background:#0a7;color:#fff;padding:12px 24px;border-radius:4px;
text-decoration:none;font:bold 16px Helvetica,Arial,sans-serif} @media (max-width:600px){.wrap{width:100%!important}}
</style></head>
<body><table role="presentation" width="100%" style="background:#f4f4f4"><tr><td align="center">
  <table role="presentation" class="wrap" width="600" style="background:#fff;margin:24px 0">
    <tr><td style="padding:24px;font:bold 22px Helvetica,Arial,sans-serif;color:#222">{{ tenant.name }}</td></tr>
    <tr><td style="padding:0 24px 12px;font:16px/1.5 Helvetica,Arial,sans-serif;color:#333">
      <p>Hi {{ contact.first_name | default: "there" }},</p>
      {% if contact.lifecycle_stage == "loyal_advocate" or contact.lifecycle_stage == "repeat_customer" %}
      <p>Thank you for shopping with us again{% if contact.city %} from {{ contact.city }}{% endif %}.
      As one of our regulars you get early access to the new collection.</p>
      {% else %}
      <p>Our new collection has landed{% if contact.city %}, with free delivery to {{ contact.city }}{% endif %}.
      Here is what we picked for you this week.</p>
      {% endif %}
    </td></tr>"""
    + "".join(PRODUCT.replace("{n}", str(n)) for n in range(1, 4))
    + """
    <tr><td align="center" style="padding:24px">
      <a class="btn" href="{{ cta.url }}?utm_source=email&amp;c={{ contact.id }}">{{ cta.label }}</a>
    </td></tr>
    <tr><td style="padding:24px;font:12px/1.4 Helvetica,Arial,sans-serif;color:#888;border-top:1px solid #eee">
      {{ tenant.name }} · {{ tenant.postal_address }}<br>
      You get this email because you subscribed to our news.
      <a href="{{ links.unsubscribe }}">Unsubscribe</a> · <a href="{{ links.preferences }}">Preferences</a>
    </td></tr>
  </table>
</td></tr></table></body></html>
"""
)


# --- environment and processes ---------------------------------------------------------------------
def env(database: str) -> dict[str, str]:
    values = base_env()
    values.update(
        DATABASE_URL=f"postgres://segmentor@127.0.0.1:5432/{database}",
        CELERY_BROKER_URL=f"redis://127.0.0.1:6379/{REDIS_DB}",
        CACHE_URL=f"rediscache://127.0.0.1:6379/{REDIS_DB}",
        EMAIL_URL=f"smtp://127.0.0.1:{SINK_PORT}",
        DEFAULT_FROM_EMAIL="Bench <bench@shop.example>",
        BENCH_SINK_PORT=str(SINK_PORT),
        BENCH_POSTOFFICE_DB=POSTOFFICE_DB,
    )
    values.pop("DJANGO_SETTINGS_MODULE", None)
    return values


def setup_django(database: str) -> None:
    os.environ.update(env(database))
    os.environ["DJANGO_SETTINGS_MODULE"] = "segmentor.settings"
    import django

    django.setup()


def psql(sql: str) -> str:
    out = subprocess.run(["psql", ADMIN_URL, "-qtAc", sql], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def ensure_database(name: str) -> None:
    if not psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):
        psql(f"CREATE DATABASE {name} OWNER segmentor")


class Processes:
    """Every process this benchmark starts; all are stopped on the way out, whatever happens."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        # A session of its own, so stopping it also stops its children (the prefork pool).
        proc = subprocess.Popen(args, start_new_session=True, **kwargs)
        self.started.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        with contextlib.suppress(ProcessLookupError):  # children left behind in its group
            os.killpg(proc.pid, signal.SIGKILL)

    def __enter__(self) -> Processes:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.started):
            self.stop(proc)
        if any("worker" in proc.args for proc in self.started if isinstance(proc.args, list)):
            drop_queue()


def wait_port(port: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def start_sink(processes: Processes) -> int:
    sink = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if not Path(sink).exists():
        sys.exit("smtp-sink is missing: apt-get install postfix (it ships /usr/sbin/smtp-sink).")
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", SINK_PORT), timeout=0.5):
        sys.exit(f"Port {SINK_PORT} is taken: set BENCH_SINK_PORT.")
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    proc = processes.start(
        [sink, *user, f"127.0.0.1:{SINK_PORT}", "1000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_port(SINK_PORT)
    return proc.pid


def drop_queue() -> None:
    """Remove this run's queue from Redis (a task still unacknowledged when the worker stopped returns to it)."""
    import redis

    with contextlib.suppress(redis.RedisError):
        redis.Redis.from_url(f"redis://127.0.0.1:6379/{REDIS_DB}").delete(QUEUE)


def start_workers(processes: Processes, log: Path, concurrency: int) -> subprocess.Popen[bytes]:
    log.unlink(missing_ok=True)
    celery = str(Path(PYTHON).parent / "celery")
    proc = processes.start(
        [celery, "-A", "segmentor", "worker", "-P", "prefork", "-c", str(concurrency), "-n", f"{QUEUE}@%h", "-Q", QUEUE,
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO", "-f", str(log)],
        cwd=ROOT, env=env(SEND_DB), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the Celery worker exited ({proc.returncode}); see {log}")
        if log.exists() and " ready." in log.read_text(errors="replace"):
            return proc
        time.sleep(0.2)
    raise RuntimeError(f"the Celery worker did not get ready; see {log}")


def machine() -> str:
    load = os.getloadavg()[0]
    return f"{platform.node()} · {os.cpu_count()} cores · load average (1 min) {load:.2f}"


def spread(values: list[float]) -> str:
    return f"{min(values):,.2f}–{max(values):,.2f}" if len(values) > 1 else f"{values[0]:,.2f}"


# --- snapshot ----------------------------------------------------------------------------------------
def static_segment(tenant: Any, name: str, where: str, params: list[Any]) -> tuple[Any, int]:
    """A static segment holding the contacts matching ``where``, written set-based when it differs."""
    from django.db import connection, transaction
    from django.utils import timezone

    from segments.models import Segment, SegmentMember

    segment, _ = Segment.objects.get_or_create(
        tenant=tenant, name=PREFIX + name, defaults={"kind": Segment.Kind.STATIC, "rules": {}}
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM contacts_contact c WHERE c.tenant_id = %s AND c.erased_at IS NULL AND {where}",
            [tenant.id, *params],
        )
        wanted = cursor.fetchone()[0]
    have = SegmentMember.objects.filter(tenant=tenant, segment=segment).count()
    if have != wanted:
        with transaction.atomic(), connection.cursor() as cursor:
            SegmentMember.objects.filter(tenant=tenant, segment=segment).delete()
            cursor.execute(
                "INSERT INTO segments_segmentmember (tenant_id, segment_id, contact_id, entered_at) "
                "SELECT c.tenant_id, %s, c.id, %s FROM contacts_contact c "
                f"WHERE c.tenant_id = %s AND c.erased_at IS NULL AND {where}",
                [segment.id, timezone.now(), tenant.id, *params],
            )
        Segment.objects.filter(pk=segment.pk).update(size=wanted, refreshed_at=timezone.now())
        vacuum("segments_segmentmember")
    return segment, wanted


def vacuum(table: str, *, full: bool = False) -> None:
    """VACUUM (ANALYZE) a table: in autocommit, outside the tenant scope (which wraps statements)."""
    from django.db import connection

    from tenants.context import fresh_scope

    with fresh_scope(), connection.cursor() as cursor:
        cursor.execute(f"VACUUM ({'FULL, ' if full else ''}ANALYZE) {table}")


def campaign_with(tenant: Any, name: str, audience: Any, variants: list[dict[str, Any]]) -> Any:
    """The bench's campaign ``name`` on ``audience`` with ``variants`` (created once, then reused)."""
    from campaigns.models import Campaign, CampaignAudience, Variant

    campaign = Campaign.objects.filter(tenant=tenant, name=PREFIX + name).first()
    if campaign is None:
        campaign = Campaign.objects.create(tenant=tenant, name=PREFIX + name, channel="email", purpose="marketing")
        CampaignAudience.objects.create(tenant=tenant, campaign=campaign, segment=audience)
        for position, fields in enumerate(variants):
            defaults = {"subject": SUBJECT, "html_body": HTML, "cta_label": "Shop the collection",
                        "cta_url": "https://shop.example/new"}  # fmt: skip
            Variant.objects.create(tenant=tenant, campaign=campaign, position=position, **{**defaults, **fields})
    return campaign


def runs_delete(campaign: Any) -> None:
    """Delete a campaign's runs and their deliveries, then VACUUM FULL the deliveries table (rewritten with
    its indexes, so that every repeat starts from the same, unbloated state)."""
    from django.db import transaction

    from campaigns.models import CampaignRun, Delivery

    with transaction.atomic():
        runs = list(
            CampaignRun.objects.filter(tenant_id=campaign.tenant_id, campaign=campaign).values_list("id", flat=True)
        )
        if runs:
            Delivery.objects.filter(tenant_id=campaign.tenant_id, run_id__in=runs)._raw_delete("default")
            CampaignRun.objects.filter(pk__in=runs).delete()
    vacuum("campaigns_delivery", full=True)


COPY_TABLE = "bench_campaigns_delivery_nofk"


def snapshot_floors(campaign: Any) -> dict[str, tuple[int, float]]:
    """The snapshot's statement (same audience and CASE) into a copy of the deliveries table with the same
    columns, indexes and row-level security policy but no foreign keys; with and without ON CONFLICT."""
    from django.db import connection, transaction
    from django.db.models import F
    from django.db.models.functions import Mod

    from campaigns import sending
    from campaigns.models import CampaignRun

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid) FROM pg_policy "
            "WHERE polrelid = 'campaigns_delivery'::regclass"
        )
        using, check = cursor.fetchone()
    results: dict[str, tuple[int, float]] = {}
    for label, conflict in (("same INSERT into a copy without foreign keys", True),
                            ("… and without ON CONFLICT DO NOTHING", False)):  # fmt: skip
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {COPY_TABLE}")
            cursor.execute(
                f"CREATE TABLE {COPY_TABLE} (LIKE campaigns_delivery INCLUDING DEFAULTS INCLUDING INDEXES "
                f"INCLUDING IDENTITY); ALTER TABLE {COPY_TABLE} ENABLE ROW LEVEL SECURITY; "
                f"ALTER TABLE {COPY_TABLE} FORCE ROW LEVEL SECURITY; "
                f"CREATE POLICY tenant_isolation ON {COPY_TABLE} USING ({using}) WITH CHECK ({check})"
            )
        with transaction.atomic():
            run = CampaignRun.objects.create(
                tenant_id=campaign.tenant_id, campaign=campaign, number=10_000, scheduled_for=dt.datetime.now(dt.UTC),
                status=CampaignRun.Status.SENDING,
            )  # fmt: skip
            contacts = sending.audience(campaign).annotate(
                _bucket=Mod(F("id") * sending.HASH_MULTIPLIER + run.pk, 10_000),
                _variant=sending.variant_expression(campaign),
            )
            select_sql, params = contacts.values("id", "_variant").query.sql_with_params()
            sql = (
                f"INSERT INTO {COPY_TABLE} (tenant_id, run_id, contact_id, variant_id, status, skip_reason, attempts, "
                f"provider_message_id, error) SELECT %s, %s, a.id, a._variant, 'pending', '', 0, '', '' "
                f"FROM ({select_sql}) AS a WHERE true" + (" ON CONFLICT DO NOTHING" if conflict else "")
            )
            started = time.perf_counter()
            with connection.cursor() as cursor:
                cursor.execute(sql, [campaign.tenant_id, run.pk, *params])
                rows = cursor.rowcount
            results[label] = (rows, time.perf_counter() - started)
            transaction.set_rollback(True)  # the run row goes too
        print(f"  floor: {label}: {rows:,} rows in {results[label][1]:.2f} s", flush=True)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {COPY_TABLE}")
    return results


def snapshot(args: argparse.Namespace) -> None:
    # The benchmark database holds the 1M tenant across code changes: bring its schema up to date first.
    subprocess.run([PYTHON, "manage.py", "migrate", "-v0", "--skip-checks"], cwd=ROOT, env=env(SNAPSHOT_DB), check=True)
    setup_django(SNAPSHOT_DB)
    from django.db import connection
    from django.db.models import Count

    from campaigns.models import Delivery, Variant
    from campaigns.sending import run_start
    from contacts.models import Contact
    from tenants.context import tenant_context
    from tenants.models import Tenant

    tenant = Tenant.objects.filter(slug=args.tenant).first()
    if tenant is None:
        sys.exit(f"No tenant {args.tenant} in {SNAPSHOT_DB}: build it with `make bench-1m` (bench/build_tenant.py).")
    print(f"snapshot · {SNAPSHOT_DB} · tenant {tenant.slug} · {machine()}", flush=True)
    with tenant_context(tenant.id):
        contacts = Contact.objects.filter(tenant=tenant).count()
        everyone, members = static_segment(tenant, "everyone", "true", [])
        germany, de_members = static_segment(tenant, "country DE", "c.country = %s", ["DE"])
        campaign = campaign_with(tenant, "snapshot", everyone, [
            {"name": "Germany", "target": Variant.Target.SEGMENT, "target_segment": germany},
            {"name": "Loyal advocates", "target": Variant.Target.STAGE, "target_stage": "loyal_advocate"},
            {"name": "Everyone else A", "weight": 50},
            {"name": "Everyone else B", "weight": 50},
        ])  # fmt: skip
        print(f"{contacts:,} contacts; audience segment {members:,} members; variant segment DE {de_members:,}")
        seconds: list[float] = []
        sizes: list[int] = []
        for repeat in range(args.repeats):
            runs_delete(campaign)
            started = time.perf_counter()
            run = run_start(campaign=campaign)
            elapsed = time.perf_counter() - started
            seconds.append(elapsed)
            sizes.append(run.audience_size)
            print(f"  repeat {repeat + 1}: {run.audience_size:,} deliveries in {elapsed:.2f} s "
                  f"({run.audience_size / elapsed:,.0f} rows/s)", flush=True)  # fmt: skip
        floors = snapshot_floors(campaign) if args.floors else {}
        rows = Delivery.objects.filter(tenant=tenant, run=run).values("variant__name").annotate(n=Count("id"))
        by_variant = {row["variant__name"]: row["n"] for row in rows}
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_size_pretty(pg_total_relation_size('campaigns_delivery'))")
            size = cursor.fetchone()[0]
        runs_delete(campaign)
    median = statistics.median(seconds)
    print(
        f"\n### Audience snapshot (`run_start`), {args.repeats} repeats · "
        f"{time.strftime('%Y-%m-%d %H:%M')} UTC · {machine()}\n"
    )
    print("| deliveries | seconds per repeat | median s | best s | rows/s (median) | goal < 15 s |")
    print("|---:|---|---:|---:|---:|:---:|")
    print(f"| {sizes[-1]:,} | {' / '.join(f'{s:.2f}' for s in seconds)} | {median:.2f} | {min(seconds):.2f} | "
          f"{sizes[-1] / median:,.0f} | {'yes' if median < SNAPSHOT_GOAL_S else '**no**'} |")  # fmt: skip
    for label, (rows_, secs) in floors.items():
        print(f"| {label} | {rows_:,} in {secs:.2f} s | | | {rows_ / secs:,.0f} | |")
    print("\nVariants chosen in SQL: " + ", ".join(f"{name}: {n:,}" for name, n in sorted(by_variant.items(), key=str)))
    print(f"campaigns_delivery with one run: {size}")


# --- send: data ------------------------------------------------------------------------------------
def send_tenant(args: argparse.Namespace) -> Any:
    """The send benchmark's tenant with ``--population`` generated contacts (loaded once, reused)."""
    from contacts.generator import load_with_copy
    from contacts.models import Contact
    from tenants.context import tenant_context
    from tenants.models import Tenant, User
    from tenants.services import tenant_create

    tenant = Tenant.objects.filter(slug=SEND_TENANT).first()
    if tenant is None:
        owner = User.objects.filter(email="bench-send@example.com").first() or User.objects.create_user(
            "bench-send@example.com", None
        )
        tenant = tenant_create(name="Bench Send", owner=owner)
        Tenant.objects.filter(pk=tenant.pk).update(
            slug=SEND_TENANT, default_sender_name="Trailhead Outfitters", default_sender_email="news@shop.example",
            postal_address="Trailhead Outfitters GmbH, Hauptstraße 1, 10115 Berlin",
        )  # fmt: skip
        tenant.refresh_from_db()
    with tenant_context(tenant.id):
        have = Contact.objects.filter(tenant=tenant).count()
        if have == 0:
            print(f"Loading {args.population:,} generated contacts into {SEND_DB} …", flush=True)
            load_with_copy(tenant, contacts=args.population, events=0, seed=7, workers=0)
    return tenant


def consenting(tenant: Any, limit: int, offset: int = 0) -> tuple[str, list[Any]]:
    """SQL for contacts with an email address and email marketing consent: ``limit`` of them by id."""
    where = (
        "c.id IN (SELECT c2.id FROM contacts_contact c2 JOIN contacts_consentstate s ON s.contact_id = c2.id "
        "AND s.tenant_id = c2.tenant_id AND s.channel = 'email' AND s.purpose = 'marketing' AND s.status = 'granted' "
        "WHERE c2.tenant_id = %s AND c2.erased_at IS NULL AND c2.email <> '' "
        "ORDER BY c2.id LIMIT %s OFFSET %s)"
    )
    return where, [tenant.id, limit, offset]


def message_builder(campaign: Any) -> Any:
    """A function rendering the message Segmentor sends to a contact."""
    from campaigns.sending import Composer

    return Composer(campaign).build


def rendered_messages(campaign: Any, audience: Any) -> list[Any]:
    """Every audience member's message, rendered once, for post-office and the sink's ceiling."""
    from campaigns.models import Variant
    from contacts.models import Contact
    from segments.models import SegmentMember

    variants = list(Variant.objects.filter(tenant_id=campaign.tenant_id, campaign=campaign).order_by("position"))
    staged = {v.target_stage: v for v in variants if v.target == Variant.Target.STAGE}
    default = next(v for v in variants if v.target == Variant.Target.DEFAULT)
    ids = SegmentMember.objects.filter(tenant_id=campaign.tenant_id, segment=audience).values("contact_id")
    contacts = Contact.objects.filter(tenant_id=campaign.tenant_id, pk__in=ids).order_by("pk")
    build = message_builder(campaign)
    return [
        build(staged.get(c.lifecycle_stage, default), c, 10_000_000 + c.pk) for c in contacts.iterator(chunk_size=2000)
    ]


# --- send: the three senders ----------------------------------------------------------------------
def sink_ceiling(payloads: list[tuple[str, str, bytes]]) -> float:
    """Pre-built messages over one smtplib connection: messages/s."""
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", SINK_PORT, timeout=30) as smtp:
        for sender, to, data in payloads:
            smtp.sendmail(sender, [to], data)
    return len(payloads) / (time.perf_counter() - started)


def spy_summary(raw: Path, top: int = 40) -> str:
    """py-spy's collapsed stacks of the pool processes inside send_run: where their wall time went."""
    inclusive: dict[str, int] = {}
    leaves: dict[str, int] = {}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if "send_run" not in stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [re.sub(r":\d+\)$", ")", f.strip()) for f in stack.split(";")]
        frames = [re.sub(r"\(/.*?(site-packages|python3\.\d+|main)/", "(", f) for f in frames]
        frames = frames[next(i for i, f in enumerate(frames) if f.startswith("send_run ")) + 1 :] or ["send_run"]
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
        leaves[frames[-1]] = leaves.get(frames[-1], 0) + n
    if not total:
        return "py-spy: no samples inside send_run"
    lines = [f"py-spy, pool processes inside send_run: {total:,} samples (wall time, idle included)",
             "inclusive:"]  # fmt: skip
    for frame, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * n / total:5.1f} %  {frame}")
    lines.append("self (leaf frames):")
    for frame, n in sorted(leaves.items(), key=lambda kv: -kv[1])[:15]:
        lines.append(f"  {100 * n / total:5.1f} %  {frame}")
    return "\n".join(lines)


def sink_ceiling_pipelined(payloads: list[tuple[str, str, bytes]]) -> float:
    """The same with PIPELINING (RFC 2920): MAIL, RCPT and DATA in one write, two round trips a message."""
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", SINK_PORT, timeout=30) as smtp:
        smtp.ehlo()
        for sender, to, data in payloads:
            smtp.send(f"MAIL FROM:<{sender}>\r\nRCPT TO:<{to}>\r\nDATA\r\n".encode())
            replies = smtp.getreply(), smtp.getreply(), smtp.getreply()
            if replies[2][0] != 354:
                raise RuntimeError(f"the sink refused: {replies}")
            smtp.send(re.sub(rb"(?m)^\.", b"..", data) + b"\r\n.\r\n")
            if smtp.getreply()[0] != 250:
                raise RuntimeError("the sink refused the data")
    return len(payloads) / (time.perf_counter() - started)


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                    pids.append(int(entry.name))
    return pids


def machine_busy_seconds() -> float:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / CLOCK_TICKS  # all but idle and iowait


class CpuMeter:
    """CPU seconds spent by the workers, the database backends of this database and the sink during a run."""

    def __init__(self, worker: subprocess.Popen[bytes] | None, sink_pid: int | None) -> None:
        from django.db import connection

        self.worker, self.sink_pid, self.connection = worker, sink_pid, connection
        self.before = self.sample()
        self.seen: dict[int, float] = dict(self.before["postgres"])
        self.polled = time.monotonic()

    def poll(self) -> None:
        """Backends come and go with the workers' connections: remember each one's last CPU time."""
        if time.monotonic() - self.polled > 0.5:
            self.polled = time.monotonic()
            self.seen.update({pid: cpu_seconds(pid) for pid in self.backends()})

    def backends(self) -> list[int]:
        with self.connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return [row[0] for row in cursor.fetchall()]

    def sample(self) -> dict[str, dict[int, float]]:
        pids = {
            "workers": group_pids(self.worker.pid) if self.worker else [],
            "postgres": self.backends(),
            "sink": [self.sink_pid] if self.sink_pid else [],
        }
        sample = {name: {pid: cpu_seconds(pid) for pid in group} for name, group in pids.items()}
        sample["machine"] = {0: machine_busy_seconds()}
        return sample

    def used(self) -> dict[str, float]:
        after = self.sample()
        after["postgres"] = {**self.seen, **{pid: cpu for pid, cpu in after["postgres"].items() if cpu}}
        return {
            name: sum(value - self.before[name].get(pid, 0.0) for pid, value in group.items())
            for name, group in after.items()
        }


def segmentor_send(
    campaign: Any, tasks: int, log: Path, worker: subprocess.Popen[bytes] | None = None, spy: Path | None = None,
    sink_pid: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """run_start (not timed), then ``tasks`` × send_run to the workers; timed until the run is done.

    With ``spy``, py-spy samples the worker and its pool processes meanwhile (raw stacks to ``spy``)."""
    from django.db.models import Count

    from campaigns.models import CampaignRun, Delivery
    from campaigns.sending import run_start
    from campaigns.tasks import send_run

    runs_delete(campaign)
    started = time.perf_counter()
    run = run_start(campaign=campaign)
    snapshot_s = time.perf_counter() - started
    mark = log.stat().st_size if log.exists() else 0
    sampler = None
    if spy is not None and worker is not None and shutil.which("py-spy", path=str(Path(PYTHON).parent)):
        sampler = subprocess.Popen(
            [str(Path(PYTHON).parent / "py-spy"), "record", "--pid", str(worker.pid), "--subprocesses", "--idle",
             "--nonblocking", "--format", "raw", "--rate", "100", "-o", str(spy)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1)
    meter = CpuMeter(worker, sink_pid)
    started = time.perf_counter()
    for _ in range(tasks):
        send_run.apply_async((campaign.tenant_id, run.pk), queue=QUEUE)
    open_ = Delivery.objects.filter(tenant_id=run.tenant_id, run=run, status__in=["pending", "sending"])
    deadline = time.monotonic() + 1800
    while open_.exists() or CampaignRun.objects.get(pk=run.pk).status == CampaignRun.Status.SENDING:
        if time.monotonic() > deadline:
            raise RuntimeError("the run did not finish in 30 minutes")
        meter.poll()
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    cpu = meter.used()
    if sampler is not None:
        sampler.send_signal(signal.SIGINT)
        sampler.wait(60)
    counts = dict(
        Delivery.objects.filter(tenant_id=run.tenant_id, run=run).values_list("status").annotate(n=Count("id"))
    )
    # Which pool processes did the work (the worker logs each task's totals).
    time.sleep(0.3)
    with log.open("rb") as handle:
        handle.seek(mark)
        tail = handle.read().decode(errors="replace")
    workers: dict[str, int] = {}
    for pool, sent in re.findall(r"(ForkPoolWorker-\d+)\].*?send_run\[.*?succeeded.*?'sent': (\d+)", tail):
        workers[pool] = workers.get(pool, 0) + int(sent)
    sent = counts.get("sent", 0)
    per_message = {name: round(1000 * value / max(sent, 1), 3) for name, value in cpu.items()}
    return {
        "rate": sent / elapsed, "seconds": elapsed, "counts": counts, "snapshot_s": snapshot_s, "workers": workers,
        "cpu_ms_per_message": per_message,
    }  # fmt: skip


def postoffice_send(messages_file: Path, processes: int) -> dict[str, Any]:
    """post-office in its own process (its own settings): queue, then send_queued_mail."""
    po_env = {**env(SEND_DB), "DJANGO_SETTINGS_MODULE": "bench.postoffice_settings", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [PYTHON, __file__, "--postoffice-worker", str(messages_file), "--po-processes", str(processes)],
        cwd=ROOT, env=po_env, check=True, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def postoffice_worker(messages_file: Path, processes: int) -> None:
    """Runs under bench.postoffice_settings: empty the queue, queue every message, send the queue."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from post_office import mail
    from post_office.models import STATUS, Email

    messages = json.loads(messages_file.read_text())
    queue_s = None
    queued_file = messages_file.with_suffix(".queue-seconds")
    if Email.objects.filter(status=STATUS.sent).count() == len(messages) == Email.objects.count():
        # Queued by an earlier repeat: back in the queue as its users' would be (logs of the last send gone).
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE post_office_log")
        Email.objects.update(status=STATUS.queued, last_updated=dt.datetime.now(dt.UTC))
    else:
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE post_office_log, post_office_email CASCADE")
        queued_file.unlink(missing_ok=True)
        started = time.perf_counter()
        for m in messages:
            mail.send(m["to"], m["from"], subject=m["subject"], message=m["text"], html_message=m["html"],
                      headers=m["headers"])  # fmt: skip
        queue_s = time.perf_counter() - started
        queued_file.write_text(f"{queue_s:.3f}")
    if queue_s is None and queued_file.exists():
        queue_s = float(queued_file.read_text())  # when this queue was filled, by an earlier run
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE post_office_email")
    connection.close()  # the pool forks: no connection shared with the children
    backends: dict[int, float] = {}
    done = threading.Event()

    def watch() -> None:  # the database backends of this database (the pool's connections come and go)
        import psycopg

        settings_db = connection.settings_dict
        url = f"postgresql://{settings_db['USER']}@{settings_db['HOST']}:{settings_db['PORT']}/{settings_db['NAME']}"
        with psycopg.connect(url, autocommit=True) as watcher:
            while not done.wait(0.3):
                rows = watcher.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchall()
                backends.update({pid: cpu_seconds(pid) for (pid,) in rows})

    own_before = own_cpu_seconds()
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    time.sleep(0.4)
    before = dict(backends)
    started = time.perf_counter()
    call_command("send_queued_mail", processes=processes)
    send_s = time.perf_counter() - started
    done.set()
    thread.join(5)
    own = own_cpu_seconds() - own_before
    database = sum(cpu - before.get(pid, 0.0) for pid, cpu in backends.items())
    sent = Email.objects.filter(status=STATUS.sent).count()
    cpu = {"processes": round(1000 * own / max(sent, 1), 3), "postgres": round(1000 * database / max(sent, 1), 3)}
    print(json.dumps({"rate": sent / send_s, "seconds": send_s, "queue_s": queue_s, "sent": sent,
                      "queued": len(messages), "cpu_ms_per_message": cpu}))  # fmt: skip


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have ended (the pool's processes)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def ensure_send_database(population: int) -> None:
    """The send database, recreated when its tenant has another number of contacts than asked for."""
    ensure_database(SEND_DB)
    exists = psql(f"SELECT 1 FROM pg_database WHERE datname = '{SEND_DB}'")
    count = (
        "SELECT count(*) FROM contacts_contact c JOIN tenants_tenant t ON t.id = c.tenant_id "
        f"WHERE t.slug = '{SEND_TENANT}'"
    )
    database = ADMIN_URL.rsplit("/", 1)[0] + f"/{SEND_DB}"
    have = subprocess.run(["psql", database, "-qtAc", count], capture_output=True, text=True).stdout.strip()
    if exists and have.isdigit() and int(have) not in (0, population):
        print(f"{SEND_DB} holds {int(have):,} contacts, not {population:,}: recreating it", flush=True)
        psql(f"DROP DATABASE {SEND_DB}")
        ensure_database(SEND_DB)
    subprocess.run([PYTHON, "manage.py", "migrate", "-v0", "--skip-checks"], cwd=ROOT, env=env(SEND_DB), check=True)


def send(args: argparse.Namespace) -> None:
    ensure_send_database(args.population)
    ensure_database(POSTOFFICE_DB)
    po_env = {**env(SEND_DB), "DJANGO_SETTINGS_MODULE": "bench.postoffice_settings", "PYTHONPATH": str(ROOT)}
    subprocess.run([PYTHON, "-m", "django", "migrate", "-v0", "--skip-checks"], cwd=ROOT, env=po_env, check=True)
    setup_django(SEND_DB)
    from campaigns.channels.email import build_email
    from campaigns.models import Variant
    from tenants.context import tenant_context

    WORK.mkdir(parents=True, exist_ok=True)
    tenant = send_tenant(args)
    print(f"send · {SEND_DB} · tenant {tenant.slug} · {machine()}", flush=True)
    with tenant_context(tenant.id):
        where, params = consenting(tenant, args.contacts)
        audience, size = static_segment(tenant, f"send audience {args.contacts}", where, params)
        where, params = consenting(tenant, args.warmup, offset=args.contacts)
        warm_audience, _ = static_segment(tenant, f"warm-up {args.warmup}", where, params)
        variants = [
            {"name": "Loyal advocates", "target": Variant.Target.STAGE, "target_stage": "loyal_advocate",
             "subject": "{{ contact.first_name | default: 'Hello' }}, early access for you"},
            {"name": "Everyone else"},
        ]  # fmt: skip
        campaign = campaign_with(tenant, f"send {args.contacts}", audience, variants)
        warm_campaign = campaign_with(tenant, f"warm-up {args.warmup}", warm_audience, variants)
        if size < args.contacts:
            print(f"Only {size:,} contacts with email consent: raise --population.")
        started = time.perf_counter()
        messages = rendered_messages(campaign, audience)
        render_s = time.perf_counter() - started
        print(f"Rendered the {len(messages):,} messages in process in {render_s:.1f} s "
              f"({len(messages) / render_s:,.0f}/s), for post-office and the ceiling", flush=True)  # fmt: skip
        payloads = []
        for m in messages:
            email = build_email(m)
            payloads.append((m.from_email, m.to, email.message().as_bytes(linesep="\r\n")))
        po_file = WORK / f"messages-{args.contacts}.json"
        po_file.write_text(json.dumps([
            {"to": m.to, "from": m.from_email, "subject": m.subject, "text": m.text, "html": m.html,
             "headers": m.all_headers()} for m in messages
        ]))  # fmt: skip
        avg_kb = sum(len(p[2]) for p in payloads) / len(payloads) / 1024
        log = WORK / "worker.log"
        results: dict[str, list[dict[str, Any]]] = {"sink": [], "pipelined": [], "segmentor": [], "postoffice": []}
        with Processes() as processes:
            sink_pid = start_sink(processes)
            worker = start_workers(processes, log, args.concurrency)
            warm = segmentor_send(warm_campaign, args.tasks, log)
            print(f"warm-up: {sum(warm['counts'].values()):,} deliveries in {warm['seconds']:.1f} s", flush=True)
            order = [which for which in ("sink", "segmentor", "postoffice") if which in args.senders.split(",")]
            for repeat in range(args.repeats):
                for which in order[repeat % len(order) :] + order[: repeat % len(order)]:
                    if which == "sink":
                        result: dict[str, Any] = {"rate": sink_ceiling(payloads)}
                        results["pipelined"].append({"rate": sink_ceiling_pipelined(payloads)})
                        result["pipelined"] = results["pipelined"][-1]["rate"]
                    elif which == "segmentor":
                        spy = WORK / "py-spy.txt" if args.py_spy and repeat == args.repeats - 1 else None
                        result = segmentor_send(campaign, args.tasks, log, worker, spy, sink_pid)
                        if spy is not None and spy.exists():
                            print(spy_summary(spy), flush=True)
                    else:
                        result = postoffice_send(po_file, args.concurrency)
                    results[which].append(result)
                    print(f"  repeat {repeat + 1} {which}: {result['rate']:,.0f} messages/s "
                          f"{ {k: v for k, v in result.items() if k != 'rate'} }", flush=True)  # fmt: skip
        runs_delete(campaign)
        runs_delete(warm_campaign)
    if all(results[k] for k in ("sink", "segmentor", "postoffice")):
        report_send(args, results, size, avg_kb)


def report_send(args: argparse.Namespace, results: dict[str, list[dict[str, Any]]], size: int, avg_kb: float) -> None:
    rates = {k: [r["rate"] for r in v] for k, v in results.items()}
    med = {k: statistics.median(v) for k, v in rates.items()}
    best = {k: max(v) for k, v in rates.items()}
    ratios = [s / p for s, p in zip(rates["segmentor"], rates["postoffice"], strict=True)]
    print(
        f"\n### Email send end to end, {args.repeats} repeats · {time.strftime('%Y-%m-%d %H:%M')} UTC · {machine()}\n"
    )
    print(f"{size:,} messages of ~{avg_kb:.1f} KiB (Liquid: first name with a default, a stage conditional, "
          f"the CTA; text part derived from the HTML) to smtp-sink on 127.0.0.1:{SINK_PORT}; "
          f"{args.concurrency} worker processes each side.\n")  # fmt: skip
    print("| sender | messages/s per repeat | median | best | note |")
    print("|---|---|---:|---:|---|")
    seg = results["segmentor"]
    snap = statistics.median(r["snapshot_s"] for r in seg)
    print(
        f"| sink ceiling: pre-built bytes, one smtplib connection, one process | "
        f"{' / '.join(f'{r:,.0f}' for r in rates['sink'])} | {med['sink']:,.0f} | {best['sink']:,.0f} | the limit |"
    )
    print(
        f"| sink ceiling, pipelined: the same, MAIL + RCPT + DATA in one write (RFC 2920) | "
        f"{' / '.join(f'{r:,.0f}' for r in rates['pipelined'])} | {med['pipelined']:,.0f} | {best['pipelined']:,.0f} "
        "| the limit for a sender that pipelines, as Segmentor's SMTP path does |"
    )
    print(
        f"| **Segmentor**: `send_run` ×{args.tasks} on `celery worker -c {args.concurrency}` (claim, check, render, "
        f"MIME, SMTP, record) | {' / '.join(f'{r:,.0f}' for r in rates['segmentor'])} | {med['segmentor']:,.0f} | "
        f"{best['segmentor']:,.0f} | from enqueue to run done; snapshot before it {snap:.2f} s; "
        f"statuses {seg[-1]['counts']}; sent per pool process {seg[-1]['workers']} |"
    )
    po = results["postoffice"]
    queue_s = next((r["queue_s"] for r in po if r["queue_s"]), float("nan"))
    print(
        f"| django-post-office 3.12: `send_queued_mail --processes {args.concurrency}` | "
        f"{' / '.join(f'{r:,.0f}' for r in rates['postoffice'])} | {med['postoffice']:,.0f} | "
        f"{best['postoffice']:,.0f} | queue filled once with `mail.send()` per message beforehand (not counted): "
        f"{queue_s:.1f} s ({po[-1]['queued'] / queue_s:,.0f}/s); later repeats put the same rows back in the queue; "
        f"sent {po[-1]['sent']:,} of {po[-1]['queued']:,} |"
    )
    print(
        f"\nSegmentor / post-office per repeat: {' / '.join(f'{r:.2f}' for r in ratios)} (median "
        f"{statistics.median(ratios):.2f}); Segmentor / sink ceiling: {med['segmentor'] / med['sink']:.2f}."
    )
    cpu = {name: statistics.median(r["cpu_ms_per_message"][name] for r in seg) for name in seg[0]["cpu_ms_per_message"]}
    po_cpu = {name: statistics.median(r["cpu_ms_per_message"][name] for r in po) for name in ("processes", "postgres")}
    print(
        f"CPU per message sent by post-office (median): its processes {po_cpu['processes']:.2f} ms, "
        f"its PostgreSQL backends {po_cpu['postgres']:.2f} ms — {sum(po_cpu.values()):.2f} ms against Segmentor's "
        f"{cpu['workers'] + cpu['postgres']:.2f} ms: {sum(po_cpu.values()) / (cpu['workers'] + cpu['postgres']):.2f}× "
        "as much CPU per message (a measure the other processes on the machine disturb less than messages/s)."
    )
    print(
        f"CPU per message sent by Segmentor (median of repeats): worker pool processes {cpu['workers']:.2f} ms, "
        f"their PostgreSQL backends {cpu['postgres']:.2f} ms, smtp-sink {cpu['sink']:.2f} ms; the whole machine was "
        f"busy {cpu['machine']:.2f} ms per message (other helpers' work included; 2 cores = 2 ms per ms of wall time)."
    )
    print(f"Goals: ≥ {SEND_GOAL_PER_S:,.0f}/s: {'met' if med['segmentor'] >= SEND_GOAL_PER_S else '**missed**'} "
          f"(median {med['segmentor']:,.0f}, best {best['segmentor']:,.0f}); ≥ {RATIO_GOAL:.0f}× post-office: "
          f"{'met' if statistics.median(ratios) >= RATIO_GOAL else '**missed**'}.")  # fmt: skip


# --- profile ---------------------------------------------------------------------------------------
def profile(args: argparse.Namespace) -> None:
    """cProfile of send_run's loop (claim + deliveries_send) in this process, against the sink."""
    ensure_send_database(args.population)
    setup_django(SEND_DB)
    from campaigns.models import Variant
    from campaigns.sending import deliveries_claim, deliveries_send, run_start
    from tenants.context import tenant_context

    WORK.mkdir(parents=True, exist_ok=True)
    tenant = send_tenant(args)
    with tenant_context(tenant.id), Processes() as processes:
        start_sink(processes)
        where, params = consenting(tenant, args.contacts)
        audience, _ = static_segment(tenant, f"send audience {args.contacts}", where, params)
        campaign = campaign_with(tenant, f"send {args.contacts}", audience, [
            {"name": "Loyal advocates", "target": Variant.Target.STAGE, "target_stage": "loyal_advocate",
             "subject": "{{ contact.first_name | default: 'Hello' }}, early access for you"},
            {"name": "Everyone else"},
        ])  # fmt: skip
        runs_delete(campaign)
        run = run_start(campaign=campaign)
        for _ in range(2):  # warm up: imports, template cache, connections
            deliveries_send(run=run, ids=deliveries_claim(run=run))
        profiler = cProfile.Profile()
        done = 0
        started = time.perf_counter()
        profiler.enable()
        while done < args.profile_messages and (ids := deliveries_claim(run=run)):
            deliveries_send(run=run, ids=ids)
            done += len(ids)
        profiler.disable()
        elapsed = time.perf_counter() - started
        runs_delete(campaign)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(45)
    stats.sort_stats("tottime").print_stats(30)
    path = WORK / "profile.txt"
    path.write_text(out.getvalue())
    stats.dump_stats(str(WORK / "profile.pstats"))
    print(f"profiled {done:,} messages in {elapsed:.1f} s under cProfile ({done / elapsed:,.0f}/s, "
          f"{elapsed / done * 1e6:,.0f} µs each); full listing in {path}")  # fmt: skip
    print(out.getvalue()[:12000])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["snapshot", "send", "profile"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tenant", default="bench-1m", help="snapshot: the tenant in segmentor_bench")
    parser.add_argument("--contacts", type=int, default=30_000, help="send: messages per run (default 30,000)")
    parser.add_argument(
        "--population", type=int, help="send: generated contacts (default 2.3 × (contacts + warm-up): ~half consent)"
    )
    parser.add_argument("--warmup", type=int, default=1_000, help="send: messages of the warm-up run")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes on each side (default 2)")
    parser.add_argument("--tasks", type=int, default=2, help="send_run tasks enqueued per run (default 2)")
    parser.add_argument("--profile-messages", type=int, default=6_000)
    parser.add_argument("--senders", default="sink,segmentor,postoffice", help="send: which to run (comma-separated)")
    parser.add_argument("--py-spy", action="store_true", help="send: sample the workers with py-spy in the last repeat")
    parser.add_argument(
        "--no-floors",
        dest="floors",
        action="store_false",
        help="snapshot: skip the same INSERT into a copy without FKs",
    )
    parser.add_argument("--postoffice-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--po-processes", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.population = args.population or round((args.contacts + args.warmup) * 2.3)
    if args.postoffice_worker:
        postoffice_worker(args.postoffice_worker, args.po_processes)
    elif args.only == "snapshot":
        snapshot(args)
    elif args.only == "send":
        send(args)
    elif args.only == "profile":
        profile(args)
    else:  # each part in a process of its own: they use different databases
        passed = list(sys.argv[1:])
        failed = []
        for part in ("send", "snapshot"):
            if subprocess.run([PYTHON, __file__, "--only", part, *passed], cwd=ROOT).returncode:
                failed.append(part)
        if failed:
            sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
