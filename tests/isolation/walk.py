"""Walk every URL pattern and check tenant isolation for each one.

A route is either tenant-scoped UI (``/t/<tenant_slug>/…``), the tenant API
(``/api/v1/…``) or explicitly public (``PUBLIC_ROUTES`` with a reason). A new
route that fits none of these, or that names an object kwarg the walk cannot
fill, fails the walk: nobody can add an unguarded page by accident.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tenants.context import tenant_context
from tenants.models import Invitation
from tenants.roles import Role
from tests.conftest import World

VERBS = ("get", "post", "put", "patch", "delete")

# Routes with no tenant in them, each with why it is safe.
PUBLIC_ROUTES: dict[str, str] = {
    "": "home: redirects to the user's own workspaces",
    "healthz": "health check: no tenant data",
    "workspaces/new/": "creates a new tenant owned by the signed-in user",
    "invitations/<str:token>/": "the signed token names tenant and invitation; unforgeable",
    "confirm/<str:token>/": "signed token binds tenant, record and address",
    "u/<str:token>/": "one-click unsubscribe: signed token binds tenant, contact, channel and purpose",
    "preferences/<str:token>/": "preference centre: signed token binds tenant, contact, channel and purpose",
    "r/o/<str:token>.gif": "open pixel: the signed token binds tenant and delivery; answers the same image to all",
    "r/c/<str:token>/": "click redirect: the signed token binds tenant, delivery and the URL that was in the message",
    "api/schema/": "OpenAPI schema: no tenant data",
    "api/docs/": "Swagger UI: no tenant data",
    "hooks/<slug:slug>/feedback/": "provider feedback: only the slug's tenant's webhook secret authenticates it",
    "hooks/<slug:slug>/sms/inbound/": "inbound SMS: X-Twilio-Signature with the slug's tenant's SMS auth token",
    "hooks/<slug:slug>/sms/status/": "SMS status callback: X-Twilio-Signature with the slug's tenant's SMS token",
    "p/v1/events/": "website snippet: the public site key names the tenant; writes only the key's visitor's events",
    "p/v1/identify/": "website snippet: public site key + HMAC of the user id by the tenant's server; answers no data",
    "p/v1/decide/": "website snippet: public site key; answers only that tenant's slot content for the visitor",
    "p/v1/click/": "website snippet: public site key; records a click, redirects only to the slot's stored link",
    "demo/shop/": "the demo tenant's fake shop page (PERSONALIZATION_DEMO only); shows its public site key",
}
PUBLIC_PREFIXES: dict[str, str] = {
    "accounts/": "allauth: the signed-in user's own account",
    "admin/": "platform staff only (is_staff), uses all_tenants on purpose",
    "anymail/": "ESP webhooks (basic auth); the tenant is the one of the delivery the event names",
}


@dataclass(frozen=True)
class Route:
    template: str  # e.g. "t/<slug:tenant_slug>/settings/members/<int:member_id>/role/"
    name: str | None  # namespaced, e.g. "tenants:member_role"
    kwargs: tuple[str, ...]
    callback: Callable[..., Any]

    @property
    def kind(self) -> str:
        if self.template.startswith("t/<slug:tenant_slug>/"):
            return "tenant"
        if self.template.startswith("api/v1/"):
            return "api"
        if self.template in PUBLIC_ROUTES or self.template.startswith(tuple(PUBLIC_PREFIXES)):
            return "public"
        return "unclassified"

    def allowed_methods(self) -> set[str]:
        view_class = getattr(self.callback, "view_class", None) or getattr(self.callback, "cls", None)
        actions = getattr(self.callback, "actions", None)
        if actions:  # a DRF viewset route: {"get": "list", ...}
            return set(actions) & set(VERBS)
        if view_class is not None:
            return {m for m in VERBS if hasattr(view_class, m) and m in view_class.http_method_names}
        return set(VERBS)


KWARG_RE = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>\w+)>|\(\?P<(?P<rname>\w+)>")


def iter_routes(patterns: list[Any] | None = None, prefix: str = "", namespace: str = "") -> Iterator[Route]:
    if patterns is None:
        patterns = get_resolver().url_patterns
    for entry in patterns:
        piece = str(entry.pattern)
        if isinstance(entry, URLResolver):
            ns = entry.namespace
            child_ns = f"{namespace}:{ns}" if namespace and ns else (ns or namespace)
            yield from iter_routes(entry.url_patterns, prefix + piece, child_ns)
        elif isinstance(entry, URLPattern):
            template = (prefix + piece).replace("^", "").replace("$", "")
            kwargs = tuple(m.group("name") or m.group("rname") for m in KWARG_RE.finditer(template))
            name = f"{namespace}:{entry.name}" if namespace and entry.name else entry.name
            yield Route(template, name, kwargs, entry.callback)


def url_for(route: Route, values: dict[str, Any]) -> str:
    missing = [k for k in route.kwargs if k not in values]
    if missing:
        raise LookupError(f"{route.template}: the isolation walk has no value for {missing}; add them to the world")
    assert route.name, f"{route.template} has no name; name every route so the walk can build it"
    return reverse(route.name, kwargs={k: values[k] for k in route.kwargs})


def object_ids(world: World, tenant: str) -> dict[str, Any]:
    """Values for every kwarg a route may name, all pointing at ``tenant``'s objects."""
    from audiences.models import AudienceDestination, AudienceExport
    from campaigns.models import Campaign, CampaignRun, ChannelConfig, Variant
    from contacts.models import AttributeDefinition, Channel, Contact, ImportJob, Suppression
    from journeys.models import Enrollment, Journey, JourneyVersion, Step
    from personalization.models import SiteKey, Slot, SlotVariant
    from segments.models import Segment

    t = world.tenant_a if tenant == "a" else world.tenant_b
    with tenant_context(t.id):
        invitation, _ = Invitation.objects.get_or_create(
            tenant=t, email=f"invitee-{tenant}@example.com", defaults={"role": Role.VIEWER}
        )
        contact, _ = Contact.objects.get_or_create(
            tenant=t, email=f"contact-{tenant}@example.com",
            defaults={"first_name": f"Zed{tenant.upper()}", "last_name": "Walker", "external_id": f"ext-{tenant}"},
        )  # fmt: skip
        attribute, _ = AttributeDefinition.objects.get_or_create(
            tenant=t, key="plan", defaults={"label": "Plan", "type": AttributeDefinition.Type.TEXT}
        )
        suppression, _ = Suppression.objects.get_or_create(
            tenant=t, channel=Channel.EMAIL, address_hash=f"{tenant}" * 64,
            defaults={"reason": Suppression.Reason.MANUAL},
        )  # fmt: skip
        import_job, _ = ImportJob.objects.get_or_create(
            tenant=t, original_name=f"contacts-{tenant}.csv",
            defaults={"file": f"imports/test/contacts-{tenant}.csv", "headers": ["email"]},
        )  # fmt: skip
        segment, _ = Segment.objects.get_or_create(
            tenant=t, name=f"Segment {tenant.upper()}",
            defaults={"rules": {"all": [{"type": "field", "field": "country", "op": "eq", "value": "DE"}]}},
        )  # fmt: skip
        campaign, _ = Campaign.objects.get_or_create(tenant=t, name=f"Campaign {tenant.upper()}")
        run, _ = CampaignRun.objects.get_or_create(
            tenant=t, campaign=campaign, number=1, defaults={"scheduled_for": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)}
        )
        variant, _ = Variant.objects.get_or_create(
            tenant=t, campaign=campaign, name=f"Variant {tenant.upper()}", defaults={"subject": "Hello"}
        )
        channel_config, _ = ChannelConfig.objects.get_or_create(
            tenant=t, channel="webhook", defaults={"backend": "webhook", "secret": f"secret-{tenant}"}
        )
        journey, _ = Journey.objects.get_or_create(
            tenant=t, name=f"Journey {tenant.upper()}", defaults={"trigger_event": "cart_abandoned"}
        )
        version, _ = JourneyVersion.objects.get_or_create(
            tenant=t, journey=journey, number=1, defaults={"start_key": "s1"}
        )
        step, _ = Step.objects.get_or_create(
            tenant=t, version=version, key="s1",
            defaults={"kind": "wait", "config": {"duration": {"amount": 1, "unit": "days"}}, "exits": {"next": None}},
        )  # fmt: skip
        enrollment, _ = Enrollment.objects.get_or_create(
            tenant=t, journey=journey, contact=contact,
            defaults={"version": version, "step": step, "entered_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)},
        )  # fmt: skip
        destination, _ = AudienceDestination.objects.get_or_create(
            tenant=t, name=f"Destination {tenant.upper()}",
            defaults={"segment": segment, "url": "https://hooks.example.com/a", "secret": "s" * 16,
                      "interval_minutes": 60},
        )  # fmt: skip
        audience_export, _ = AudienceExport.objects.get_or_create(
            tenant=t, destination=destination, segment=segment,
            defaults={"segment_name": segment.name, "format": "google", "delivery": "push", "trigger": "manual",
                      "requested_by": "walk", "consent_purpose": "advertising", "definition_hash": "0" * 64},
        )  # fmt: skip
        slot, _ = Slot.objects.get_or_create(tenant=t, key=f"hero-{tenant}", defaults={"name": f"Hero {tenant}"})
        slot_variant, _ = SlotVariant.objects.get_or_create(
            tenant=t, slot=slot, name=f"Slot variant {tenant}", defaults={"target": "stage", "target_stage": "lead"}
        )
        site_key, _ = SiteKey.objects.get_or_create(
            tenant=t, public_key=f"pk_live_walk_{tenant}",
            defaults={"name": f"Site key {tenant.upper()}", "allowed_origins": ["https://shop.example"],
                      "identify_secret": f"{tenant}" * 64},
        )  # fmt: skip
    return {
        "tenant_slug": t.slug,
        "member_id": (world.alice_membership if tenant == "a" else world.charlie_membership).id,
        "api_key_id": (world.key_a if tenant == "a" else world.key_b).id,
        "invitation_id": invitation.id,
        "contact_id": contact.id,
        "attribute_id": attribute.id,
        "suppression_id": suppression.id,
        "import_id": import_job.id,
        "segment_id": segment.id,
        "campaign_id": campaign.id,
        "run_id": run.id,
        "variant_id": variant.id,
        "channel_config_id": channel_config.id,
        "journey_id": journey.id,
        # Step keys are the same in every journey ("s1"): the journey id in the URL tells whose.
        "step_key": step.key,
        "enrollment_id": enrollment.id,
        "destination_id": destination.id,
        "export_id": audience_export.id,
        "slot_id": slot.id,
        "slot_variant_id": slot_variant.id,
        "site_key_id": site_key.id,
    }
