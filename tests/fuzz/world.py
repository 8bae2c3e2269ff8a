"""The tenant the API fuzzer works on: the demo seed (contacts, events, consent, segments, a draft
and a sent campaign, journeys with enrollments, analytics figures), plus what the seed leaves out
(a channel account, a suppression, a static segment with members), and a write key."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import StringIO
from typing import Any

from django.core.management import call_command
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from django.test import override_settings
from schemathesis import Case, GenerationMode
from schemathesis.core.parameters import ParameterLocation

from campaigns.models import Campaign, CampaignRun
from campaigns.services import channel_config_save
from contacts.consent import suppression_add
from contacts.models import AttributeDefinition, Channel, Contact, Suppression
from journeys.models import Enrollment, Journey, Step
from segments.models import Segment
from segments.services import segment_create, static_members_add
from tenants.audit import Actor
from tenants.context import tenant_context
from tenants.models import ApiKey, Membership, Tenant
from tenants.roles import Role
from tests.factories import make_api_key

SEED_CONTACTS = 60


@dataclass(frozen=True)
class FuzzWorld:
    tenant: Tenant
    secret: str
    # Sets of real ids that belong together (a run of that campaign, a step of that journey).
    bundles: tuple[dict[str, Any], ...]

    def point_at_real_objects(self, case: Case) -> None:
        """Aim the path at one set of the tenant's objects, or leave it as generated (one time in five).

        The choice follows from the generated values, so it is as reproducible as they are. A path that
        is invalid on purpose stays so.
        """
        path = case.meta.components.get(ParameterLocation.PATH) if case.meta else None
        if not case.path_parameters or (path is not None and path.mode is not GenerationMode.POSITIVE):
            return
        generated = repr((sorted(case.path_parameters.items()), case.query, case.body))
        pick = zlib.crc32(generated.encode()) % (2 * len(self.bundles) + 1)
        if pick < 2 * len(self.bundles):
            bundle = self.bundles[pick % len(self.bundles)]
            # Of the generated value's type (most ids are digit strings in the schema, a few integers): a value
            # of another type would count as invalid input.
            case.path_parameters = {
                name: type(value)(bundle[name]) if name in bundle and isinstance(value, (int, str)) else value
                for name, value in case.path_parameters.items()
            }


@contextmanager
def fuzz_world_module(django_db_blocker: Any) -> Iterator[FuzzWorld]:
    """Seed the world once for the module, in a transaction that is rolled back at its end.

    Each test's own transaction (pytest-django's ``db``) is a savepoint inside it. WSGI calls run in
    the test's thread on its connection, as with Django's test client, which also disconnects
    ``close_old_connections`` (it would close a connection found inside a transaction); so does this.
    The throttle counters go to a cache of this module's own, out of other test processes' way.
    """
    cache = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "fuzz"}}
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        with override_settings(CACHES=cache), django_db_blocker.unblock(), transaction.atomic():
            yield seed_fuzz_world()
            transaction.set_rollback(True)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def seed_fuzz_world() -> FuzzWorld:
    call_command("seed_demo", contacts=SEED_CONTACTS, stdout=StringIO())
    tenant = Tenant.objects.get(slug="demo-shop")
    _, secret = make_api_key(tenant, ApiKey.Scope.WRITE, "fuzzer")
    with tenant_context(tenant.id):
        owner = Membership.objects.filter(tenant=tenant, role=Role.OWNER).select_related("user").get()
        actor = Actor.for_user(owner.user)
        contacts = list(Contact.objects.filter(tenant=tenant).order_by("pk")[:5])
        channel = channel_config_save(tenant=tenant, actor=actor, channel="email", backend="console", settings={})
        suppression = suppression_add(
            tenant=tenant, channel=Channel.EMAIL, address="blocked@example.com", reason=Suppression.Reason.MANUAL
        )
        static = segment_create(tenant=tenant, actor=actor, name="VIP list", kind=Segment.Kind.STATIC)
        static_members_add(segment=static, contact_ids=[c.pk for c in contacts], actor=actor)
        rule_segment = Segment.objects.filter(tenant=tenant, kind=Segment.Kind.DYNAMIC).order_by("pk").first()
        sent = Campaign.objects.filter(tenant=tenant, name="Last week's newsletter").get()
        draft = Campaign.objects.filter(tenant=tenant, name="New this week").get()
        run = CampaignRun.objects.filter(tenant=tenant, campaign=sent).get()
        enrollment = Enrollment.objects.filter(tenant=tenant).order_by("pk").first()
        assert enrollment is not None and rule_segment is not None
        live = Journey.objects.get(pk=enrollment.journey_id)
        drafts = Journey.objects.filter(tenant=tenant, status=Journey.Status.DRAFT).order_by("pk")
        draft_journey = drafts.first()
        assert draft_journey is not None
        common = {
            "api_key_id": ApiKey.objects.filter(tenant=tenant).order_by("pk").values_list("pk", flat=True).first(),
            "member_id": owner.pk,
            "channel_config_id": channel.pk,
            "suppression_id": suppression.pk,
            "attribute_id": AttributeDefinition.objects.filter(tenant=tenant).order_by("pk").first().pk,  # type: ignore[union-attr]
        }
        bundles = (
            {
                **common, "contact_id": contacts[0].pk, "segment_id": rule_segment.pk, "campaign_id": sent.pk,
                "run_id": run.pk, "journey_id": live.pk, "enrollment_id": enrollment.pk,
                "step_key": _first_step_key(live),
            },
            {
                **common, "contact_id": contacts[1].pk, "segment_id": static.pk, "campaign_id": draft.pk,
                "journey_id": draft_journey.pk, "step_key": _first_step_key(draft_journey),
            },
        )  # fmt: skip
    return FuzzWorld(tenant=tenant, secret=secret, bundles=bundles)


def _first_step_key(journey: Journey) -> str:
    version = journey.versions.order_by("-number").first()
    step = Step.objects.filter(version=version).order_by("pk").first()
    assert step is not None
    return step.key
