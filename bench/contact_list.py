"""Benchmark: the contact list page and its searches on the big benchmark tenant.

    .venv/bin/python bench/contact_list.py                    # tenant bench-1m in segmentor_bench
    .venv/bin/python bench/contact_list.py --slug bench-20k   # another tenant
    .venv/bin/python bench/contact_list.py --explain          # also print the list query's plans

Each page is requested through Django's test Client, in process, signed in as the tenant's owner,
on the benchmark database (row-level security on, DEBUG off, persistent connection): the whole
request path — middleware, the tenant's transaction, the queries and the template — without
network or a web server. Every scenario is warmed up, then timed ``--runs`` times; the table gives
the median and the 95th percentile in milliseconds (the target is < 200 ms at a million contacts).
Search terms are taken from the tenant's own data, so they match the way real searches do.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import DB_NAME, env

TARGET_MS = 200.0
CONTACT_ROW = re.compile(rb'<td><a href="[^"]+/contacts/\d+/">')


def setup_django() -> None:
    os.environ.update(env())
    os.environ["ALLOWED_HOSTS"] = "testserver,127.0.0.1,localhost"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "segmentor.settings")
    import django

    django.setup()


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def scenarios(tenant: Any) -> list[tuple[str, str, dict[str, str], dict[str, str]]]:
    """(name, path, query, headers) for each page to time, with search terms from the tenant's data."""
    from django.db.models import Count, Max, Min
    from django.urls import reverse

    from contacts.models import ConsentState, Contact, Event
    from tenants.context import tenant_context

    base = reverse("contacts:list", kwargs={"tenant_slug": tenant.slug})
    with tenant_context(tenant.id):
        contacts = Contact.objects.filter(tenant=tenant)
        bounds = contacts.aggregate(low=Min("id"), high=Max("id"))
        middle = (bounds["low"] + bounds["high"]) // 2
        # A typical person from the middle of the table, with a name, an email and a phone.
        sample = (
            contacts.filter(id__lte=middle)
            .exclude(email="")
            .exclude(last_name="")
            .exclude(phone="")
            .exclude(external_id="")
            .order_by("-id")
            .first()
        )
        assert sample is not None, "the tenant has no contact with email, name, phone and external id"
        by_country = list(contacts.exclude(country="").values("country").annotate(n=Count("id")).order_by("-n")[:40])
        common, rare = by_country[0]["country"], by_country[-1]["country"]
        has_consent = ConsentState.objects.filter(tenant=tenant, channel="email", status="granted").exists()
        busiest = (
            Event.objects.filter(tenant=tenant, contact_id__gte=middle)
            .values("contact_id")
            .annotate(n=Count("id"))
            .order_by("-n")
            .first()
            if Event.objects.filter(tenant=tenant, contact_id__gte=middle, contact_id__lt=middle + 2000).exists()
            else None
        )
    digits = "".join(ch for ch in sample.phone if ch.isdigit())
    detail_id = busiest["contact_id"] if busiest else sample.pk
    htmx = {"HX-Request": "true", "HX-Target": "contact-results"}
    found: list[tuple[str, str, dict[str, str], dict[str, str]]] = [
        ("list: first page", base, {}, {}),
        ("list: a page in the middle (keyset cursor)", base, {"cursor": f"n{middle}"}, {}),
        ("list: previous page from the middle", base, {"cursor": f"p{middle}"}, {}),
        ("list: last page", base, {"cursor": f"n{bounds['low'] + 20}"}, {}),
        (f"search email prefix “{sample.email[:3]}”", base, {"q": sample.email[:3]}, {}),
        (f"search email prefix “{sample.email[:1]}” (1 letter)", base, {"q": sample.email[:1]}, {}),
        (f"search full email “{sample.email}”", base, {"q": sample.email}, {}),
        (f"search name prefix “{sample.last_name[:4]}”", base, {"q": sample.last_name[:4]}, {}),
        (f"search name prefix “{sample.last_name[:2]}” (2 letters)", base, {"q": sample.last_name[:2]}, {}),
        (
            f"search name prefix “{sample.last_name[:2]}”, a page in the middle",
            base,
            {"q": sample.last_name[:2], "cursor": f"n{middle}"},
            {},
        ),
        (
            f"search first + last name “{sample.first_name} {sample.last_name[:2]}”",
            base,
            {"q": f"{sample.first_name} {sample.last_name[:2]}"},
            {},
        ),
        (f"search phone prefix “+{digits[:6]}”", base, {"q": f"+{digits[:6]}"}, {}),
        (f"search external id “{sample.external_id}”", base, {"q": sample.external_id}, {}),
        ("search with no match “zzqxv”", base, {"q": "zzqxv"}, {}),
        ("search as htmx fragment (same email prefix)", base, {"q": sample.email[:3]}, htmx),
        (f"filter country {common} (most common)", base, {"country": str(common)}, {}),
        (f"filter country {rare} (rare)", base, {"country": str(rare)}, {}),
        (
            f"filter country {common} + stage repeat customer",
            base,
            {"country": str(common), "lifecycle_stage": "repeat_customer"},
            {},
        ),
        ("filter stage loyal advocate", base, {"lifecycle_stage": "loyal_advocate"}, {}),
    ]
    if has_consent:
        found += [
            ("filter email consent granted (any purpose)", base, {"email_consent": "any"}, {}),
            (
                f"filter email consent + country {common} + name prefix",
                base,
                {"email_consent": "any", "country": str(common), "q": sample.last_name[:2]},
                {},
            ),
        ]
    found.append(
        (
            f"contact page (contact {detail_id}: profile, consent, timeline)",
            reverse("contacts:detail", kwargs={"tenant_slug": tenant.slug, "contact_id": detail_id}),
            {},
            {},
        )
    )
    return found


def explain(tenant: Any, client: Any, path: str, query: dict[str, str]) -> None:
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from tenants.context import tenant_context

    with CaptureQueriesContext(connection) as captured:
        client.get(path, query)
    for entry in captured.captured_queries:
        sql = entry["sql"]
        if 'FROM "contacts_contact"' in sql and "LIMIT" in sql:
            with tenant_context(tenant.id), transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql)
                print("    " + "\n    ".join(row[0] for row in cursor.fetchall()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slug", default="bench-1m")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--explain", action="store_true", help="Print the plan of each page's contact query.")
    args = parser.parse_args()
    setup_django()

    from django.test import Client

    from contacts.models import Contact
    from tenants.context import tenant_context
    from tenants.models import Membership, Tenant
    from tenants.roles import Role

    tenant = Tenant.objects.filter(slug=args.slug).first()
    if tenant is None:
        slugs = ", ".join(Tenant.objects.values_list("slug", flat=True)) or "none"
        sys.exit(f"No tenant {args.slug!r} in {DB_NAME} (there are: {slugs}). Build it with bench/build_tenant.py.")
    with tenant_context(tenant.id):
        owner = Membership.objects.filter(tenant=tenant, role=Role.OWNER).select_related("user").first()
        estimate = Contact.objects.filter(tenant=tenant).count()
    assert owner is not None
    client = Client()
    client.force_login(owner.user)

    rows = []
    for name, path, query, headers in scenarios(tenant):
        for _ in range(args.warmup):
            response = client.get(path, query, headers=headers)
        assert response.status_code == 200, (name, response.status_code)
        # Rows of the contact table (the client keeps no template context outside the test runner).
        shown = None if name.startswith("contact page") else len(CONTACT_ROW.findall(response.content))
        timings = []
        for _ in range(args.runs):
            started = time.perf_counter()
            response = client.get(path, query, headers=headers)
            timings.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
        rows.append((name, shown, statistics.median(timings), percentile(timings, 95)))
        print(f"  {name}: median {rows[-1][2]:.1f} ms", file=sys.stderr, flush=True)
        if args.explain:
            print(f"\n  -- {name}")
            explain(tenant, client, path, query)

    print(f"\n### {time.strftime('%Y-%m-%d')} · {platform.node()} · {os.cpu_count()} cores · contact list")
    print(
        f"Tenant `{tenant.slug}` ({estimate:,} contacts) in `{DB_NAME}`; Django test Client in process, signed in as "
        f"the owner, DEBUG off, RLS on; {args.warmup} warm-up + {args.runs} timed requests per row; page size 50.\n"
    )
    print("| page | rows shown | median ms | p95 ms | < 200 ms |")
    print("|---|---:|---:|---:|:---:|")
    for name, shown, median, p95 in rows:
        mark = "yes" if p95 < TARGET_MS else "**no**"
        print(f"| {name} | {'' if shown is None else shown} | {median:.1f} | {p95:.1f} | {mark} |")


if __name__ == "__main__":
    main()
