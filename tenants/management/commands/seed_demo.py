from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from contacts.generator import load_with_orm
from contacts.models import Contact
from segments.models import Segment
from segments.services import rfm_recompute, segment_create, segment_refresh
from segments.starters import STARTER_TEMPLATES, USE_CASES
from tenants.audit import Actor
from tenants.context import tenant_context
from tenants.models import Membership, Tenant, User
from tenants.roles import Role
from tenants.services import tenant_create

DEMO_EMAIL = "demo@segmentor.local"
DEMO_PASSWORD = "segmentor-demo"  # noqa: S105 - printed on purpose: it is the demo login


class Command(BaseCommand):
    help = "Create (or refresh) the demo tenant and its demo user."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--email", default=DEMO_EMAIL)
        parser.add_argument("--password", default=DEMO_PASSWORD)
        parser.add_argument("--contacts", type=int, default=3000, help="Demo contacts to generate (once).")

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        user = User.objects.filter(email=options["email"]).first()
        if user is None:
            user = User.objects.create_user(options["email"], options["password"], full_name="Demo Marketer")
        else:
            user.set_password(options["password"])
            user.save(update_fields=["password"])
        tenant = Tenant.objects.filter(slug="demo-shop").first()
        if tenant is None:
            tenant = tenant_create(name="Demo Shop", owner=user, time_zone="Europe/Berlin")
        with tenant_context(tenant.id):
            Membership.objects.get_or_create(tenant=tenant, user=user, defaults={"role": Role.OWNER})
            tenant.default_sender_name = "Demo Shop"
            tenant.default_sender_email = "hello@demo-shop.example"
            tenant.postal_address = "Demo Shop GmbH, Hauptstraße 1, 10115 Berlin, Germany"
            tenant.save()
            if options["contacts"] and not Contact.objects.filter(tenant=tenant).exists():
                report = load_with_orm(tenant, contacts=options["contacts"], seed=1)
                self.stdout.write(f"  Generated {report.rows['contacts']} contacts and {report.rows['events']} events.")
            if not Segment.objects.filter(tenant=tenant).exists():
                self._seed_segments(tenant, user)
        self.stdout.write(self.style.SUCCESS("Demo tenant ready."))
        self.stdout.write(f"  Sign in at /accounts/login/ as {options['email']} with password {options['password']}")

    def _seed_segments(self, tenant: Tenant, user: User) -> None:
        """The seed's use cases as segments, scored and materialised, so the pages have something to show."""
        rfm_recompute(tenant=tenant)
        actor = Actor.for_user(user)
        for starter in STARTER_TEMPLATES:
            if starter.section == USE_CASES:
                segment = segment_create(tenant=tenant, actor=actor, name=starter.label, rules=starter.rules)
                segment_refresh(segment=segment)
        self.stdout.write(f"  Created {Segment.objects.filter(tenant=tenant).count()} segments.")
