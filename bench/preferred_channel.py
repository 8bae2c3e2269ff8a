"""Benchmark: preferred channel — the profile recompute, and the snapshot choosing each contact's channel.

    .venv/bin/python bench/preferred_channel.py                        # 200,000 contacts
    .venv/bin/python bench/preferred_channel.py --contacts 1000000 --rebuild

Builds (once, or again with ``--rebuild``) a tenant in its own database (``--database``, default
``bench_preferred_channel``): ``--contacts`` contacts with an email address and a phone number,
email consent for 90 % and SMS consent for 60 % (ledger rows and their state, written in SQL), and a
history of the last 150 days written in SQL: six email sends and three SMS sends, each to about
70 % of the contacts, with human opens (30 %), clicks (10 %) and machine opens (15 %) of the
emails, and clicks of 25 % of the SMS. Then, in process, as the app role under row-level security,
DEBUG off:

- **recompute** (``channel_profiles_compute``): from no profiles, and again with nothing changed;
- **snapshot** (``run_start``) of a campaign to every contact: by email only, and on each contact's
  preferred channel of email and SMS (the difference is the choice in the ``INSERT … SELECT``: a join
  of the profiles and one of each channel's consent), each repeat on an emptied, vacuumed table.

Prints Markdown for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.send_time import PYTHON, machine, psql, vacuum  # noqa: E402
from bench.send_time import env as send_time_env  # noqa: E402

SLUG = "bench-preferred"
EMAIL_SENDS, SMS_SENDS = 6, 3

# Consent for ``share`` of the contacts on a channel, by a hash of the id (the same contacts every build).
CONSENT_SQL = """
WITH records AS (
    INSERT INTO contacts_consentrecord (tenant_id, contact_id, channel, purpose, status, legal_basis, source,
                                        wording, wording_version, ip_address, user_agent, actor, occurred_at)
    SELECT c.tenant_id, c.id, %s, 'marketing', 'granted', 'consent', 'import', '', '', NULL, '', 'bench', now()
    FROM contacts_contact AS c
    WHERE c.tenant_id = %s AND ((c.id * 2654435761 + %s) %% 1000) < %s
    RETURNING tenant_id, contact_id, channel, id
)
INSERT INTO contacts_consentstate (tenant_id, contact_id, channel, purpose, status, record_id, updated_at)
SELECT tenant_id, contact_id, channel, 'marketing', 'granted', id, now() FROM records
"""
# One send of a history campaign to about 70 % of the contacts over the last 150 days.
SEND_SQL = """
INSERT INTO campaigns_delivery (tenant_id, run_id, contact_id, variant_id, status, skip_reason, attempts,
                                provider_message_id, error, sent_at)
SELECT c.tenant_id, %s, c.id, NULL, 'sent', '', 1, '', '', now() - make_interval(mins => (random() * 216000)::int)
FROM contacts_contact AS c
WHERE c.tenant_id = %s AND random() < 0.7
"""
EVENTS_SQL = """
INSERT INTO analytics_messageevent
    (tenant_id, delivery_id, campaign_id, variant_id, contact_id, kind, url, is_cta, machine, user_agent, occurred_at)
SELECT d.tenant_id, d.id, %s, NULL, d.contact_id, e.kind, '', false, e.machine, '', d.sent_at + interval '1 hour'
FROM campaigns_delivery AS d
CROSS JOIN LATERAL (SELECT random() AS r) AS x
CROSS JOIN LATERAL (
    VALUES ('open', '', %s::float8), ('click', '', %s::float8), ('open', 'apple privacy proxy', %s::float8)
) AS e (kind, machine, share)
WHERE d.tenant_id = %s AND d.run_id = %s AND x.r < e.share
"""


def env(database: str) -> dict[str, str]:
    return {
        **send_time_env(database),
        "CELERY_BROKER_URL": os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/5"),
    }


def build(args: argparse.Namespace) -> Any:
    """The tenant, its contacts, consent and history (made once per database)."""
    from django.db import connection, transaction
    from django.utils import timezone

    from campaigns.models import Campaign, CampaignRun
    from contacts.models import Contact
    from tenants.context import platform_access, tenant_context
    from tenants.models import Tenant

    with platform_access():
        tenant = Tenant.objects.filter(slug=SLUG).first()
        if tenant is None:
            tenant = Tenant.objects.create(
                name="Bench preferred channel", slug=SLUG, time_zone="Europe/Berlin", frequency_cap_messages=0
            )
    with tenant_context(tenant.id):
        if Contact.objects.filter(tenant=tenant).exists():
            return tenant
        started = time.perf_counter()
        for start in range(0, args.contacts, 10_000):
            batch = [
                Contact(tenant=tenant, email=f"c{i}@bench.example", phone=f"+4915{i:09d}", first_name=f"C{i}")
                for i in range(start, min(start + 10_000, args.contacts))
            ]
            Contact.objects.bulk_create(batch, batch_size=2_000)
        print(f"{args.contacts:,} contacts in {time.perf_counter() - started:.1f} s", flush=True)
        started = time.perf_counter()
        with transaction.atomic(), connection.cursor() as cursor:
            for channel, salt, share in (("email", 0, 900), ("sms", 7, 600)):
                cursor.execute(CONSENT_SQL, [channel, tenant.id, salt, share])
        print(f"consent in {time.perf_counter() - started:.1f} s", flush=True)
        started = time.perf_counter()
        for channel, sends, shares in (("email", EMAIL_SENDS, (0.3, 0.1, 0.15)), ("sms", SMS_SENDS, (0.0, 0.25, 0.0))):
            campaign = Campaign.objects.create(
                tenant=tenant, name=f"history {channel}", channel=channel, kind=Campaign.Kind.JOURNEY
            )
            for number in range(1, sends + 1):
                run = CampaignRun.objects.create(
                    tenant=tenant, campaign=campaign, number=number, scheduled_for=timezone.now(),
                    status=CampaignRun.Status.DONE,
                )  # fmt: skip
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute(SEND_SQL, [run.pk, tenant.id])
                    cursor.execute(EVENTS_SQL, [campaign.pk, *shares, tenant.id, run.pk])
        print(f"history in {time.perf_counter() - started:.1f} s", flush=True)
    for table in ("contacts_contact", "contacts_consentstate", "campaigns_delivery", "analytics_messageevent"):
        vacuum(table)
    return tenant


def recompute(tenant: Any) -> list[tuple[str, Any, float]]:
    from analytics.models import ChannelProfile
    from analytics.preferred_channel import channel_profiles_compute
    from tenants.context import tenant_context

    results = []
    with tenant_context(tenant.id):
        ChannelProfile.objects.filter(tenant=tenant)._raw_delete("default")
    vacuum("analytics_channelprofile", full=True)
    for label in ("from no profiles", "nothing changed"):
        with tenant_context(tenant.id):
            started = time.perf_counter()
            result = channel_profiles_compute(tenant=tenant)
            elapsed = time.perf_counter() - started
        print(f"  recompute {label}: {elapsed:.2f} s — {result}", flush=True)
        results.append((label, result, elapsed))
    vacuum("analytics_channelprofile")
    return results


def _clear(tenant: Any, campaign: Any) -> None:
    from django.db import transaction

    from campaigns.models import Campaign, CampaignRun, Delivery

    with transaction.atomic():
        family = [campaign.pk, *Campaign.objects.filter(sibling_of=campaign).values_list("pk", flat=True)]
        runs = list(CampaignRun.objects.filter(tenant=tenant, campaign_id__in=family).values_list("id", flat=True))
        Delivery.objects.filter(tenant=tenant, run_id__in=runs)._raw_delete("default")
        CampaignRun.objects.filter(pk__in=runs).delete()


def snapshot(tenant: Any, args: argparse.Namespace) -> dict[bool, list[tuple[float, dict[str, int]]]]:
    from django.db import connection, transaction
    from django.db.models import Count
    from django.utils import timezone

    from campaigns.models import Campaign, CampaignAudience, Delivery, Variant
    from campaigns.sending import run_family, run_start
    from segments.models import Segment
    from tenants.context import tenant_context

    timings: dict[bool, list[tuple[float, dict[str, int]]]] = {False: [], True: []}
    with tenant_context(tenant.id):
        segment, made = Segment.objects.get_or_create(
            tenant=tenant, name="bench everyone", defaults={"kind": Segment.Kind.STATIC, "rules": {}}
        )
        if made:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO segments_segmentmember (tenant_id, segment_id, contact_id, entered_at) "
                    "SELECT tenant_id, %s, id, %s FROM contacts_contact WHERE tenant_id = %s",
                    [segment.id, timezone.now(), tenant.id],
                )
            vacuum("segments_segmentmember")
        campaign = Campaign.objects.filter(tenant=tenant, name="bench preferred").first()
        if campaign is None:
            campaign = Campaign.objects.create(
                tenant=tenant, name="bench preferred", preferred_channels=["email", "sms"]
            )
            CampaignAudience.objects.create(tenant=tenant, campaign=campaign, segment=segment)
            Variant.objects.create(
                tenant=tenant, campaign=campaign, name="Everyone", subject="Hi", html_body="<p>Hi</p>", sms_body="Hi"
            )
        for repeat in range(args.repeats):
            for preferred in (False, True):
                Campaign.objects.filter(pk=campaign.pk).update(preferred_channel=preferred)
                campaign.refresh_from_db()
                _clear(tenant, campaign)
                vacuum("campaigns_delivery")
                started = time.perf_counter()
                run = run_start(campaign=campaign)
                elapsed = time.perf_counter() - started
                split = dict(
                    Delivery.objects.filter(tenant=tenant, run_id__in=run_family(run))
                    .values_list("chosen_channel")
                    .annotate(n=Count("id"))
                    .order_by()
                )
                timings[preferred].append((elapsed, split))
                print(f"  snapshot repeat {repeat + 1}, preferred={preferred}: {run.audience_size:,} deliveries in "
                      f"{elapsed:.2f} s {split}", flush=True)  # fmt: skip
        _clear(tenant, campaign)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="bench_preferred_channel")
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    exists = psql(f"SELECT 1 FROM pg_database WHERE datname = '{args.database}'")
    if exists and args.rebuild:
        psql(f"DROP DATABASE {args.database}")
    if not exists or args.rebuild:
        psql(f"CREATE DATABASE {args.database} OWNER segmentor")
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "-v0", "--skip-checks"], cwd=ROOT, env=env(args.database), check=True
    )
    os.environ.update(env(args.database))
    os.environ["DJANGO_SETTINGS_MODULE"] = "segmentor.settings"
    import django

    django.setup()
    import analytics.preferred_channel

    # Nothing is sent here: the siblings' runs are not queued for a worker.
    analytics.preferred_channel.send_after_commit = lambda run: None
    print(f"preferred channel · {args.database} · {machine()}", flush=True)
    tenant = build(args)
    recomputed = recompute(tenant)
    timings = snapshot(tenant, args)
    print(f"\n### Preferred channel · {time.strftime('%Y-%m-%d %H:%M')} UTC · {machine()}\n")
    print(
        f"Tenant: {args.contacts:,} contacts (email consent 90 %, SMS 60 %), {EMAIL_SENDS} email and {SMS_SENDS} SMS "
        "sends to ~70 % each over 150 days with opens and clicks.\n"
    )
    print("| recompute | seconds | contacts profiled | profiles written | removed |")
    print("|---|---:|---:|---:|---:|")
    for label, result, elapsed in recomputed:
        print(f"| {label} | {elapsed:.2f} | {result.contacts:,} | {result.written:,} | {result.removed:,} |")
    plain = statistics.median(t for t, _ in timings[False])
    chosen = statistics.median(t for t, _ in timings[True])
    print(f"\n| snapshot of {args.contacts:,} deliveries | runs (s) | median s | by channel |")
    print("|---|---|---:|---|")
    for preferred, label in ((False, "email only"), (True, "each contact's preferred of email, SMS")):
        runs = " / ".join(f"{t:.2f}" for t, _ in timings[preferred])
        split = ", ".join(f"{k or 'campaign channel'} {v:,}" for k, v in sorted(timings[preferred][-1][1].items()))
        print(f"| {label} | {runs} | {statistics.median(t for t, _ in timings[preferred]):.2f} | {split} |")
    print(f"\nThe choice costs {chosen - plain:.2f} s ({(chosen - plain) / args.contacts * 1e6:.1f} µs per delivery).")


if __name__ == "__main__":
    main()
