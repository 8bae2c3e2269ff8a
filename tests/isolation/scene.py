"""Two tenants with one of everything, made through the services: what the isolation probes aim at.

``build_scene(world, "a")`` returns the ids of tenant A's objects (those of the URL walk, plus a
static segment with a member, a second variant with the same target, a journey from a blueprint
with a send step, a contact known by an anonymous id, events and a sent delivery), all with
distinctive text (``MARKERS``) so that a response or a CSV file of the other tenant can be
searched for them.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import secrets
from dataclasses import dataclass
from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from campaigns.models import Campaign, CampaignAudience, CampaignRun, ChannelConfig, Delivery, Variant
from contacts.importer import import_mapping_initial, import_set_mapping, import_start, import_upload
from contacts.models import Contact, Event, ImportJob
from journeys.models import Step
from journeys.services import journey_from_blueprint
from personalization.models import SiteKey
from segments.models import Segment, SegmentMember
from segments.services import segment_create
from tenants.audit import Actor
from tenants.context import tenant_context
from tenants.models import Tenant
from tests.conftest import World
from tests.isolation.walk import object_ids

# Text that only one tenant's data contains: finding B's in anything A is shown is a leak.
MARKERS = {
    "a": (
        "ZedA",
        "ext-a",
        "contact-a@example.com",
        "Segment A",
        "Campaign A",
        "Journey A",
        "anon-a",
        "Quokka-A",
        "SharedA",
    ),
    "b": (
        "ZedB",
        "ext-b",
        "contact-b@example.com",
        "Segment B",
        "Campaign B",
        "Journey B",
        "anon-b",
        "Quokka-B",
        "SharedB",
    ),
}
SHARED_EMAIL = "both@example.com"  # a person known to both tenants (same address, same external id)
SHARED_EXTERNAL_ID = "shared-1"


@dataclass(frozen=True)
class Scene:
    tenant: Tenant
    ids: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.ids[key]


def build_scene(world: World, which: str) -> Scene:
    tenant = world.tenant_a if which == "a" else world.tenant_b
    owner = world.alice if which == "a" else world.charlie
    actor = Actor.for_user(owner)
    ids = object_ids(world, which)
    upper = which.upper()
    now = timezone.now()
    with tenant_context(tenant.id):
        contact = Contact.objects.get(pk=ids["contact_id"])
        Contact.objects.filter(pk=contact.pk).update(city=f"Quokka-{upper}", anonymous_id=f"anon-{which}")
        shared = Contact.objects.create(
            tenant=tenant, email=SHARED_EMAIL, external_id=SHARED_EXTERNAL_ID, first_name=f"Shared{upper}",
            city=f"Quokka-{upper}",
        )  # fmt: skip
        Event.objects.create(tenant=tenant, contact=contact, name="purchase", occurred_at=now - dt.timedelta(days=1))
        static = segment_create(tenant=tenant, actor=actor, name=f"Static {upper}", kind=Segment.Kind.STATIC)
        SegmentMember.objects.create(tenant=tenant, segment=static, contact=contact, entered_at=now)
        campaign = Campaign.objects.get(pk=ids["campaign_id"])
        CampaignAudience.objects.create(tenant=tenant, campaign=campaign, segment_id=ids["segment_id"])
        Variant.objects.filter(pk=ids["variant_id"]).update(html_body=f"<p>Hello {upper}</p>", name=f"Control {upper}")
        second = Variant.objects.create(
            tenant=tenant, campaign=campaign, name=f"Challenger {upper}", subject="Hi", html_body="<p>Hi</p>",
            position=1,
        )  # fmt: skip
        run = CampaignRun.objects.get(pk=ids["run_id"])
        delivery = Delivery.objects.create(
            tenant=tenant, run=run, contact=contact, variant_id=ids["variant_id"], status=Delivery.Status.SENT,
            sent_at=now,
        )  # fmt: skip
        # The provider accounts the public hooks authenticate the tenant with.
        ChannelConfig.objects.filter(pk=ids["channel_config_id"]).update(secret=f"webhook-secret-{which}")
        ChannelConfig.objects.create(
            tenant=tenant, channel="sms", backend="twilio", secret=f"sms-token-{which}",
            settings={"account_sid": f"AC{which}", "from_number": "+15005550006"},
        )  # fmt: skip
        # A site key of its own: public keys are cached by their text, and the walk's are the same in every run.
        site_key = SiteKey.objects.create(
            tenant=tenant, name=f"Probe key {upper}", public_key=f"pk_live_iso_{secrets.token_hex(8)}",
            allowed_origins=["https://shop.example"], identify_secret=secrets.token_hex(32),
        )  # fmt: skip
        journey = journey_from_blueprint(tenant=tenant, actor=actor, blueprint="welcome", name=f"Welcome {upper}")
        send_step = (
            Step.objects.filter(version__journey=journey, kind="send").select_related("campaign").order_by("position")
        ).first()
        assert send_step is not None and send_step.campaign_id is not None
        send_variant = Variant.objects.filter(campaign_id=send_step.campaign_id).order_by("position").first()
        assert send_variant is not None
    return Scene(tenant, {
        **ids, "static_segment_id": static.pk, "shared_contact_id": shared.pk, "second_variant_id": second.pk,
        "delivery_id": delivery.pk, "send_journey_id": journey.pk, "send_step_key": send_step.key,
        "send_variant_id": send_variant.pk, "send_campaign_id": send_step.campaign_id,
        "webhook_secret": f"webhook-secret-{which}", "sms_token": f"sms-token-{which}",
        "site_public_key": site_key.public_key,
    })  # fmt: skip


def build_scenes(world: World) -> tuple[Scene, Scene]:
    return build_scene(world, "a"), build_scene(world, "b")


def csv_file(rows: list[list[str]]) -> SimpleUploadedFile:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return SimpleUploadedFile("people.csv", buffer.getvalue().encode(), "text/csv")


def queue_import(world: World, which: str, rows: list[list[str]]) -> ImportJob:
    """Upload, map (the guesses) and queue an import, as the tenant's owner (its task not run yet)."""
    tenant = world.tenant_a if which == "a" else world.tenant_b
    owner = world.alice_membership if which == "a" else world.charlie_membership
    with tenant_context(tenant.id):
        job, _ = import_upload(tenant=tenant, upload=csv_file(rows), acting=owner)
        proposal = import_mapping_initial(job=job)
        import_set_mapping(
            job=job, mapping=proposal.mapping, consent_channel="", consent_purpose="", consent_wording="", acting=owner
        )
        return import_start(job=job, acting=owner)
