"""Count a tenant's message figures again from the raw rows (after a time zone change, or to check them).

manage.py analytics_rebuild --tenant demo-shop
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from analytics.rollup import stats_rebuild
from tenants.context import tenant_context
from tenants.models import Tenant


class Command(BaseCommand):
    help = "Forget a tenant's message figures (outcomes, daily figures, run tallies, stages) and count them again."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, help="The tenant's slug.")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"No tenant with the slug {options['tenant']!r}.")
        started = time.perf_counter()
        with tenant_context(tenant.pk):
            result = stats_rebuild(tenant=tenant)
        self.stdout.write(
            self.style.SUCCESS(
                f"Counted {result.deliveries:,} deliveries' outcomes and {result.runs:,} runs for {tenant.slug} "
                f"in {time.perf_counter() - started:.1f} s."
            )
        )
