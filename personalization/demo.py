"""The demo shop: a fake tenant website at ``/demo/shop/`` that uses the snippet, and its seed.

``make run`` seeds the demo tenant with a site key for the development server's origins and a
"hero" slot whose variants target two segments and three lifecycle stages; the page loads the
snippet with that key, so a visitor sees personalisation end to end: consent, page views, identify
(signed here on the server, as a real shop would) and the hero filled for the person.
The page exists only with ``PERSONALIZATION_DEMO`` (on with ``DEBUG``).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from contacts.models import Contact
from personalization.decisions import decide_for_contact
from personalization.models import SiteKey, Slot, SlotVariant
from personalization.services import identify_signature, site_key_create, slot_create, variant_add
from segments.models import Segment, SegmentMember
from segments.services import segment_create, segment_refresh
from segments.starters import STARTER_TEMPLATES
from tenants.audit import Actor
from tenants.context import tenant_context
from tenants.models import Tenant

DEMO_TENANT_SLUG = "demo-shop"
DEMO_KEY_NAME = "Demo shop"
HERO = "hero"
CANDIDATES = 25  # contacts tried per variant when picking demo people
# (starter template key, variant name, headline, body, CTA label, CTA path)
SEGMENT_VARIANTS = (
    ("vips", "VIPs", "Early access for our VIPs", "The new collection is yours a week before anyone else.",
     "Shop early access", "/demo/shop/?promo=vip"),
    ("ready_to_buy", "Ready to buy", "Still thinking it over?", "Your cart is waiting, and shipping is free today.",
     "Back to your cart", "/demo/shop/?promo=cart"),
)  # fmt: skip
STAGE_VARIANTS = (
    ("lead", "Leads", "10% off your first order", "Welcome! Use code HELLO10 at checkout.", "Start shopping",
     "/demo/shop/?promo=first"),
    ("first_time_buyer", "First-time buyers", "Glad you liked it", "Here is what goes well with your first order.",
     "See matching items", "/demo/shop/?promo=second"),
    ("repeat_customer", "Repeat customers", "Welcome back", "Your favourites are back in stock.",
     "See what is back", "/demo/shop/?promo=back"),
)  # fmt: skip
DEFAULT = {
    "headline": "The spring collection is here",
    "body": "Light jackets, bright colours, free returns.",
    "cta_label": "Shop the collection",
    "cta_url": "/demo/shop/?promo=default",
}


def demo_origins() -> list[str]:
    """The development server's origins, and the configured site's."""
    origins = ["http://localhost:8000", "http://127.0.0.1:8000", settings.SITE_URL.rstrip("/").lower()]
    return list(dict.fromkeys(origins))


def demo_seed(*, tenant: Tenant, actor: Actor, origins: list[str]) -> SiteKey:
    """Give the tenant the demo site key and hero slot (once); return the key. Runs as the tenant."""
    site_key = SiteKey.objects.filter(tenant=tenant, name=DEMO_KEY_NAME, revoked_at=None).first()
    if site_key is None:
        site_key = site_key_create(tenant=tenant, name=DEMO_KEY_NAME, allowed_origins=origins, actor=actor)
    if Slot.objects.filter(tenant=tenant, key=HERO).exists():
        return site_key
    slot = slot_create(tenant=tenant, actor=actor, data={"key": HERO, "name": "Home page hero", **DEFAULT})
    starters = {starter.key: starter for starter in STARTER_TEMPLATES}
    for starter_key, name, headline, body, label, url in SEGMENT_VARIANTS:
        starter = starters[starter_key]
        segment = Segment.objects.filter(tenant=tenant, name=starter.label).first()
        if segment is None:
            segment = segment_create(tenant=tenant, actor=actor, name=starter.label, rules=starter.rules)
            segment_refresh(segment=segment)
        variant_add(slot=slot, actor=actor, data={
            "name": name, "target": SlotVariant.Target.SEGMENT, "target_segment": segment,
            "headline": headline, "body": body, "cta_label": label, "cta_url": url,
        })  # fmt: skip
    for stage, name, headline, body, label, url in STAGE_VARIANTS:
        variant_add(slot=slot, actor=actor, data={
            "name": name, "target": SlotVariant.Target.STAGE, "target_stage": stage,
            "headline": headline, "body": body, "cta_label": label, "cta_url": url,
        })  # fmt: skip
    return site_key


@dataclass(frozen=True)
class DemoPerson:
    """Someone the page can sign in as: the shop's server signs their id, as a real shop would."""

    label: str
    email: str
    signature: str
    expect: str


def _people(tenant: Tenant, site_key: SiteKey) -> list[DemoPerson]:
    """One person per hero variant who would see it (checked with the real decision), with a signature."""
    people: list[DemoPerson] = []
    taken: set[int] = set()
    with_email = Contact.objects.filter(tenant=tenant, erased_at=None).exclude(email="")
    variants = SlotVariant.objects.filter(tenant=tenant, slot__key=HERO, slot__active=True, active=True)
    for variant in variants.order_by("priority", "id"):
        if variant.target == SlotVariant.Target.SEGMENT:
            members = SegmentMember.objects.filter(tenant=tenant, segment_id=variant.target_segment_id)
            candidates = with_email.filter(pk__in=members.values("contact_id"))
        else:
            candidates = with_email.filter(lifecycle_stage=variant.target_stage)
        for contact in candidates.exclude(pk__in=taken).order_by("pk")[:CANDIDATES]:
            [decision] = decide_for_contact(tenant_id=tenant.pk, contact_id=contact.pk, slot_keys=[HERO])
            if decision.variant_id == variant.pk:
                taken.add(contact.pk)
                signature = identify_signature(secret=site_key.identify_secret, user_id=contact.email)
                label = f"{contact.display_name} ({variant.name})"
                people.append(DemoPerson(label, contact.email, signature, variant.headline))
                break
    return people


@require_GET
def shop(request: HttpRequest) -> HttpResponse:
    """The fake shop page (not a Segmentor page: it stands for the tenant's own website)."""
    if not settings.PERSONALIZATION_DEMO:
        raise Http404("No such page.")
    tenant = Tenant.objects.filter(slug=DEMO_TENANT_SLUG).first()
    if tenant is None:
        raise Http404("No demo tenant: run `manage.py seed_demo` (make run does).")
    with tenant_context(tenant.pk):
        site_key = SiteKey.objects.filter(tenant=tenant, name=DEMO_KEY_NAME, revoked_at=None).first()
        if site_key is None:
            raise Http404("The demo tenant has no demo site key: run `manage.py seed_demo`.")
        people = _people(tenant, site_key)
    origin = f"{request.scheme}://{request.get_host()}".lower()
    return render(
        request,
        "personalization/demo/shop.html",
        {
            "site_key": site_key,
            "endpoint": request.build_absolute_uri(reverse("personalization_public:decide")).rsplit("decide/", 1)[0],
            "people": people,
            "origin": origin,
            "origin_allowed": origin in site_key.allowed_origins,
            "default": DEFAULT,
        },
    )
