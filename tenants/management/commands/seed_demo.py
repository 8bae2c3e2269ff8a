from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from analytics.models import Conversion, MessageEvent
from analytics.rollup import stats_rebuild
from campaigns.models import Campaign, Delivery, Variant
from campaigns.sending import run_finish_if_done, run_start
from campaigns.services import campaign_create
from contacts.generator import load_with_orm
from contacts.models import Contact, Event
from journeys.blueprints import BLUEPRINTS
from journeys.engine import advance_due, enroll
from journeys.models import Journey
from journeys.services import journey_from_blueprint, journey_start
from personalization.demo import demo_origins, demo_seed
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
            if not Campaign.objects.filter(tenant=tenant).exists():
                self._seed_campaign(tenant, user)
                self._seed_results(tenant, user)
            if not Journey.objects.filter(tenant=tenant).exists():
                self._seed_journeys(tenant, user)
            # Website personalisation: a site key for this server's origins and a "hero" slot (once); /demo/shop/.
            demo_seed(tenant=tenant, actor=Actor.for_user(user), origins=demo_origins())
            self.stdout.write("  Website personalisation: a fake shop using the snippet at /demo/shop/")
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

    def _seed_journeys(self, tenant: Tenant, user: User) -> None:
        """The five built-in journeys: abandoned cart and post-purchase live, the others drafts."""
        actor = Actor.for_user(user)
        for key in BLUEPRINTS:
            journey = journey_from_blueprint(tenant=tenant, actor=actor, blueprint=key)
            if key in ("abandoned_cart", "post_purchase"):
                journey = journey_start(journey=journey, actor=actor)
                # Who did the trigger event lately walks in now, so the journey page has figures.
                recent = Event.objects.filter(tenant=tenant, name=journey.trigger_event).order_by("-occurred_at")
                enroll(journey=journey, contact_ids=list(recent.values_list("contact_id", flat=True)[:200]))
        advance_due(tenant=tenant)
        self.stdout.write(f"  Created {len(BLUEPRINTS)} journeys (two live: abandoned cart, post-purchase).")

    def _seed_results(self, tenant: Tenant, user: User) -> None:
        """Last week's newsletter, sent: deliveries, opens (some by machines), clicks, conversions and
        bounces as the pixel, the redirect and attribution would have recorded them, so the analytics
        pages have figures to show. Deterministic (seeded)."""
        draft = Campaign.objects.filter(tenant=tenant, name="New this week").first()
        if draft is None:
            return
        actor = Actor.for_user(user)
        rules = {"all": [{"type": "consent", "channel": "email", "purpose": "marketing", "status": "granted"}]}
        subscribers = segment_create(tenant=tenant, actor=actor, name="Email subscribers", rules=rules)
        segment_refresh(segment=subscribers)
        data = {
            "name": "Last week's newsletter", "channel": "email", "goal_event": "purchase", "cost": "150.00",
            "audience": {"include": [subscribers.pk], "exclude": []},
            "variants": list(Variant.objects.filter(tenant=tenant, campaign=draft).order_by("position").values(
                "name", "target", "target_stage", "subject", "html_body", "cta_label", "cta_url",
            )),
        }  # fmt: skip
        campaign, _check = campaign_create(tenant=tenant, actor=actor, data=data)
        run = run_start(campaign=campaign)
        rand = random.Random(7)  # noqa: S311 - demo figures, not secrets
        sent_at = timezone.now() - dt.timedelta(days=7)
        deliveries = list(Delivery.objects.filter(tenant=tenant, run=run).values_list("pk", "contact_id", "variant_id"))
        Delivery.objects.filter(tenant=tenant, run=run).update(status=Delivery.Status.SENT, sent_at=sent_at)
        stage_of = dict(Contact.objects.filter(tenant=tenant).values_list("pk", "lifecycle_stage"))
        events: list[MessageEvent] = []
        conversions: list[Conversion] = []
        for pk, contact_id, variant_id in deliveries:
            # Stage-targeted content engages more than the generic default: the seed's claim, in data.
            lift = 1.0 if stage_of.get(contact_id) in ("new_visitor", "lead", "repeat_customer") else 0.6
            at = sent_at + dt.timedelta(minutes=rand.randint(20, 3 * 24 * 60))
            common = {"tenant": tenant, "delivery_id": pk, "campaign_id": campaign.pk, "variant_id": variant_id,
                      "contact_id": contact_id, "occurred_at": at}  # fmt: skip
            if rand.random() < 0.12:
                events.append(MessageEvent(kind="open", machine="apple privacy proxy", **common))
            if rand.random() < 0.35 * lift:
                events.append(MessageEvent(kind="open", **common))
                if rand.random() < 0.3 * lift:
                    click = {**common, "occurred_at": at + dt.timedelta(minutes=2)}
                    events.append(MessageEvent(kind="click", url="https://demo-shop.example/new", is_cta=True, **click))
                    if rand.random() < 0.25 * lift:
                        conversions.append(Conversion(
                            tenant=tenant, event_id=-pk, event_name="purchase", delivery_id=pk, touch="click",
                            touched_at=at, revenue=Decimal(rand.randint(20, 180)), contact_id=contact_id,
                            campaign_id=campaign.pk, variant_id=variant_id, occurred_at=at + dt.timedelta(hours=3),
                        ))  # fmt: skip
        MessageEvent.objects.bulk_create(events, batch_size=1_000)
        Conversion.objects.bulk_create(conversions, batch_size=1_000)
        run_finish_if_done(run=run)
        stats_rebuild(tenant=tenant)
        self.stdout.write(
            f"  Sent last week's newsletter (figures only): {len(deliveries)} messages, {len(conversions)} conversions."
        )

    def _seed_campaign(self, tenant: Tenant, user: User) -> None:
        """A draft email campaign with content per lifecycle stage, ready to preview and send."""
        audience = Segment.objects.filter(tenant=tenant).order_by("pk").first()
        if audience is None:
            return
        greeting = '<p>Hi {{ contact.first_name | default: "there" }},</p>'
        button = '<p><a href="{{ cta.url }}">{{ cta.label }}</a></p>'
        stages = [
            ("Visitors: learn more", "new_visitor", "Learn more", "See what is new at {{ tenant.name }}"),
            (
                "Leads: start a trial",
                "lead",
                "Start free trial",
                "{{ contact.first_name | default: 'Hi' }}, try it free",
            ),
            ("Buyers: buy now", "repeat_customer", "Buy now", "Back in stock, just for you"),
        ]
        variants = [
            {
                "name": name, "target": Variant.Target.STAGE, "target_stage": stage, "subject": subject,
                "html_body": greeting + "<p>We picked a few things for you this week.</p>" + button,
                "cta_label": label, "cta_url": "https://demo-shop.example/new",
            }
            for name, stage, label, subject in stages
        ]  # fmt: skip
        variants.append({
            "name": "Everyone else", "target": Variant.Target.DEFAULT, "subject": "New this week at {{ tenant.name }}",
            "html_body": greeting + "<p>Our new collection has landed.</p>" + button,
            "cta_label": "Learn more", "cta_url": "https://demo-shop.example/new",
        })  # fmt: skip
        campaign_create(
            tenant=tenant, actor=Actor.for_user(user),
            data={"name": "New this week", "channel": "email", "audience": {"include": [audience.pk], "exclude": []},
                  "variants": variants},
        )  # fmt: skip
        self.stdout.write("  Created a draft campaign (Campaigns → New this week).")
