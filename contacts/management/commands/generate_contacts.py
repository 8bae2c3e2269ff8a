"""Fill a tenant with realistic generated contacts, events, consent and lifecycle history.

manage.py generate_contacts --tenant demo-shop --contacts 3000
manage.py generate_contacts --tenant bench-1m --contacts 1000000 --events 10000000 --copy
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from contacts.generator import LoadReport, load_with_copy, load_with_orm
from tenants.models import Tenant


class Command(BaseCommand):
    help = "Generate realistic contacts with events, rollups, consent and lifecycle history into a tenant."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, help="The tenant's slug.")
        parser.add_argument("--contacts", type=int, required=True)
        parser.add_argument("--events", type=int, help="Total events (default: 10 per contact).")
        parser.add_argument("--seed", type=int, default=1, help="Same seed, same data (default 1).")
        parser.add_argument(
            "--copy", action="store_true", help="Load with PostgreSQL COPY (millions of rows) instead of the ORM."
        )
        parser.add_argument(
            "--workers", type=int, default=1, help="With --copy: generator processes (0: in this process)."
        )
        parser.add_argument(
            "--connections",
            type=int,
            default=1,
            help="With --copy: load over this many connections in parallel (each commits its share at the end).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"No tenant with the slug {options['tenant']!r}.")
        contacts: int = options["contacts"]
        events: int = options["events"] if options["events"] is not None else contacts * 10
        if contacts < 0 or events < 0:
            raise CommandError("--contacts and --events cannot be negative.")
        if options["copy"]:
            if connection.vendor != "postgresql":
                raise CommandError("--copy needs PostgreSQL; leave it out to load through the ORM.")
            report = load_with_copy(
                tenant,
                contacts=contacts,
                events=events,
                seed=options["seed"],
                workers=options["workers"],
                connections=options["connections"],
                progress=self._progress,
            )
            if self.stdout.isatty():
                self.stdout.write("")
        else:
            report = load_with_orm(tenant, contacts=contacts, events=events, seed=options["seed"])
        self._summary(tenant, report)

    def _progress(self, done: int, total: int) -> None:
        if self.stdout.isatty():
            self.stdout.write(f"\r  {done:,} / {total:,} contacts", ending="")
            sys.stdout.flush()

    def _summary(self, tenant: Tenant, report: LoadReport) -> None:
        self.stdout.write(self.style.SUCCESS(f"Generated into {tenant.slug} in {report.seconds:.1f} s:"))
        for table, count in report.rows.items():
            rate = report.rate(table)
            speed = f"  (COPY {rate:,.0f} rows/s)" if rate else ""
            self.stdout.write(f"  {table:<22} {count:>12,}{speed}")
