"""Which content a visitor gets, and that a cached decision never outlives what it was made from."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from contacts.lifecycle import lifecycle_refresh
from contacts.models import Contact, LifecycleStage
from personalization import versions
from personalization.decisions import decide_for_contact, decide_for_visitor
from personalization.models import Visitor
from personalization.services import identify_signature, slot_update, variant_add, variant_move, variant_update
from segments.models import Segment
from segments.services import segment_create, static_members_add, static_members_remove
from tenants.context import tenant_context
from tests.conftest import World
from tests.personalization.test_public import ACTOR, Site, add_to_segment, make_site, send, visitor


@pytest.fixture
def site(world: World, django_capture_on_commit_callbacks: Any) -> Site:
    return make_site(world, django_capture_on_commit_callbacks)


def known_visitor(site: Site, n: int = 1, **fields: Any) -> Contact:
    """A contact the visitor ``n`` is identified as."""
    tenant = site.world.tenant_a
    with tenant_context(tenant.pk):
        contact = Contact.objects.create(tenant=tenant, email=f"v{n}@example.com", **fields)
        at = contact.created_at
        Visitor.objects.create(
            tenant=tenant, anonymous_id=visitor(n), site_key=site.key, contact=contact, identified_at=at,
            first_seen_at=at, last_seen_at=at,
        )  # fmt: skip
    return contact


def headline(client: Client, site: Site, n: int = 1) -> str:
    response = send(client, "decide/", {"visitor_id": visitor(n), "slots": ["hero"]}, key=site.key.public_key)
    assert response.status_code == 200, response.content
    return str(response.json()["slots"]["hero"]["headline"])


def test_the_first_matching_variant_by_priority_wins(site: Site, client: Client, django_capture_on_commit_callbacks):
    vip_lead = known_visitor(site, 1, lifecycle_stage=LifecycleStage.LEAD)
    known_visitor(site, 2, lifecycle_stage=LifecycleStage.LEAD)
    known_visitor(site, 3, lifecycle_stage=LifecycleStage.REPEAT_CUSTOMER)
    add_to_segment(site, django_capture_on_commit_callbacks, vip_lead)
    assert headline(client, site, 1) == "Early access for VIPs"  # segment variant first: priority 0
    assert headline(client, site, 2) == "10% off"  # stage variant
    assert headline(client, site, 3) == "Spring is here"  # nothing matches: the default
    assert headline(client, site, 4) == "Spring is here"  # an unknown visitor
    with django_capture_on_commit_callbacks(execute=True), tenant_context(site.world.tenant_a.pk):
        variant_move(variant=site.lead_variant, position=0, actor=ACTOR)
    assert headline(client, site, 1) == "10% off"  # now the stage variant comes first


def test_inactive_variants_and_slots_are_skipped(site: Site, client: Client, django_capture_on_commit_callbacks):
    known_visitor(site, 1, lifecycle_stage=LifecycleStage.LEAD)
    assert headline(client, site, 1) == "10% off"
    with django_capture_on_commit_callbacks(execute=True), tenant_context(site.world.tenant_a.pk):
        variant_update(variant=site.lead_variant, actor=ACTOR, data={"active": False})
    assert headline(client, site, 1) == "Spring is here"
    with django_capture_on_commit_callbacks(execute=True), tenant_context(site.world.tenant_a.pk):
        slot_update(slot=site.slot, actor=ACTOR, data={"active": False})
    response = send(client, "decide/", {"visitor_id": visitor(1), "slots": ["hero"]}, key=site.key.public_key)
    assert response.json() == {"slots": {}}  # the page keeps its own content


def test_an_erased_contact_gets_the_default(site: Site, client: Client):
    contact = known_visitor(site, 1, lifecycle_stage=LifecycleStage.LEAD)
    with tenant_context(site.world.tenant_a.pk):
        [decision] = decide_for_contact(tenant_id=site.world.tenant_a.pk, contact_id=contact.pk, slot_keys=["hero"])
        assert decision.variant_id == site.lead_variant.pk
        Contact.objects.filter(pk=contact.pk).update(erased_at=contact.created_at)
        [decision] = decide_for_contact(tenant_id=site.world.tenant_a.pk, contact_id=contact.pk, slot_keys=["hero"])
    assert decision.variant_id is None
    assert headline(client, site, 1) == "Spring is here"  # the public path's own query agrees


# --- the cache ----------------------------------------------------------------------------------
def test_a_warm_decision_needs_no_query_but_the_impression(
    site: Site, client: Client, django_assert_max_num_queries, django_capture_on_commit_callbacks
):
    contact = known_visitor(site, 1)
    add_to_segment(site, django_capture_on_commit_callbacks, contact)
    assert headline(client, site, 1) == "Early access for VIPs"
    tenant_id = site.world.tenant_a.pk
    with tenant_context(tenant_id), django_assert_max_num_queries(0):
        [decision] = decide_for_visitor(tenant_id=tenant_id, anonymous_id=visitor(1), slot_keys=["hero"])
    assert decision.variant_id == site.vip_variant.pk


def test_the_cache_follows_segment_membership(site: Site, client: Client, django_capture_on_commit_callbacks):
    contact = known_visitor(site, 1)
    assert headline(client, site, 1) == "Spring is here"
    assert headline(client, site, 1) == "Spring is here"  # cached now
    add_to_segment(site, django_capture_on_commit_callbacks, contact)  # membership_changed, after commit
    assert headline(client, site, 1) == "Early access for VIPs"
    with django_capture_on_commit_callbacks(execute=True), tenant_context(site.world.tenant_a.pk):
        static_members_remove(segment=site.vips, actor=ACTOR, contact_ids=[contact.pk])
    assert headline(client, site, 1) == "Spring is here"


def test_a_membership_change_stales_only_the_visitors_who_moved(
    site: Site, client: Client, django_capture_on_commit_callbacks, django_assert_max_num_queries
):
    mover, bystander = known_visitor(site, 1), known_visitor(site, 2)
    headline(client, site, 1), headline(client, site, 2)
    add_to_segment(site, django_capture_on_commit_callbacks, mover)
    tenant_id = site.world.tenant_a.pk
    with tenant_context(tenant_id), django_assert_max_num_queries(0):
        decide_for_visitor(tenant_id=tenant_id, anonymous_id=visitor(2), slot_keys=["hero"])  # still cached
    assert bystander.pk != mover.pk
    assert headline(client, site, 1) == "Early access for VIPs"


def test_a_big_membership_change_moves_the_whole_tenant(
    site: Site, client: Client, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.setattr(versions, "MAX_VISITOR_BUMPS", 1)
    first, second = known_visitor(site, 1), known_visitor(site, 2)
    headline(client, site, 1), headline(client, site, 2)
    with django_capture_on_commit_callbacks(execute=True), tenant_context(site.world.tenant_a.pk):
        static_members_add(segment=site.vips, actor=ACTOR, contact_ids=[first.pk, second.pk])
    assert headline(client, site, 1) == headline(client, site, 2) == "Early access for VIPs"


def test_the_cache_follows_the_lifecycle_stage(site: Site, client: Client, django_capture_on_commit_callbacks):
    contact = known_visitor(site, 1, lifecycle_stage=LifecycleStage.NEW_VISITOR)
    assert headline(client, site, 1) == "Spring is here"
    tenant = site.world.tenant_a
    with django_capture_on_commit_callbacks(execute=True), tenant_context(tenant.pk):
        lifecycle_refresh(tenant=tenant, contacts=[contact], reason="test")  # has an email: a lead now
        assert Contact.objects.get(pk=contact.pk).lifecycle_stage == LifecycleStage.LEAD
    assert headline(client, site, 1) == "10% off"


def test_the_cache_follows_slot_and_variant_edits(site: Site, client: Client, django_capture_on_commit_callbacks):
    known_visitor(site, 1, lifecycle_stage=LifecycleStage.LEAD)
    assert headline(client, site, 1) == "10% off"
    with django_capture_on_commit_callbacks(execute=True), tenant_context(site.world.tenant_a.pk):
        variant_update(variant=site.lead_variant, actor=ACTOR, data={"headline": "15% off"})
    assert headline(client, site, 1) == "15% off"
    with django_capture_on_commit_callbacks(execute=True), tenant_context(site.world.tenant_a.pk):
        segment = segment_create(tenant=site.world.tenant_a, actor=ACTOR, name="All", kind=Segment.Kind.STATIC)
        variant_add(slot=site.slot, actor=ACTOR, data={
            "name": "Top", "priority": 0, "target": "stage", "target_stage": "lead", "headline": "Top of the list",
        })  # fmt: skip
    assert segment.pk and headline(client, site, 1) == "Top of the list"


def test_the_cache_follows_identify(site: Site, client: Client, django_capture_on_commit_callbacks):
    with tenant_context(site.world.tenant_a.pk):
        vip = Contact.objects.create(tenant=site.world.tenant_a, email="vip@example.com")
    add_to_segment(site, django_capture_on_commit_callbacks, vip)
    assert headline(client, site, 5) == "Spring is here"
    signature = identify_signature(secret=site.key.identify_secret, user_id="vip@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        response = send(client, "identify/", {"visitor_id": visitor(5), "email": "vip@example.com",
                                              "signature": signature}, key=site.key.public_key)  # fmt: skip
    assert response.status_code == 200
    assert headline(client, site, 5) == "Early access for VIPs"


def test_an_anonymous_visitor_in_a_segment_is_personalised(
    site: Site, client: Client, django_capture_on_commit_callbacks
):
    """Segments can hold anonymous contacts (e.g. carts without purchase): their visitors match too."""
    send(client, "events/", {"visitor_id": visitor(6), "events": [{"event": "page_view"}]}, key=site.key.public_key)
    assert headline(client, site, 6) == "Spring is here"
    with tenant_context(site.world.tenant_a.pk):
        anonymous = Contact.objects.get(anonymous_id=visitor(6))
    add_to_segment(site, django_capture_on_commit_callbacks, anonymous)
    assert headline(client, site, 6) == "Early access for VIPs"


def test_without_a_shared_cache_nothing_is_cached(site: Site, client: Client, settings):
    settings.PERSONALIZATION_CACHE = False
    contact = known_visitor(site, 1)
    assert headline(client, site, 1) == "Spring is here"
    with tenant_context(site.world.tenant_a.pk):
        static_members_add(segment=site.vips, actor=ACTOR, contact_ids=[contact.pk])  # no after-commit here
    assert headline(client, site, 1) == "Early access for VIPs"


def test_the_embedded_default_memory_cache_works_and_still_limits(site: Site, client: Client, settings):
    """`make run` has a per-process memory cache: nothing is cached across requests, limits still hold."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "pz-test"}}
    settings.PERSONALIZATION_CACHE = False
    settings.PERSONALIZATION_VISITOR_RATE = "2/min"
    known_visitor(site, 1, lifecycle_stage=LifecycleStage.LEAD)
    assert headline(client, site, 1) == "10% off"
    assert headline(client, site, 1) == "10% off"
    response = send(client, "decide/", {"visitor_id": visitor(1), "slots": ["hero"]}, key=site.key.public_key)
    assert response.status_code == 429


def test_a_cold_decision_reads_the_visitor_its_stage_and_memberships_in_one_query(
    site: Site, client: Client, django_capture_on_commit_callbacks
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    vip = known_visitor(site, 1, lifecycle_stage=LifecycleStage.LEAD)
    known_visitor(site, 2, lifecycle_stage=LifecycleStage.LEAD)
    add_to_segment(site, django_capture_on_commit_callbacks, vip)
    assert headline(client, site, 2) == "10% off"  # the key and the slot rules are cached now
    with CaptureQueriesContext(connection) as queries:
        assert headline(client, site, 1) == "Early access for VIPs"  # visitor 1: nothing cached yet
    statements = [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert len(statements) == 1, statements


def test_a_visitor_follows_its_contact_merged_by_the_api(
    site: Site, client: Client, django_capture_on_commit_callbacks
):
    """Identify through the REST API merges the visitor's anonymous contact into the known one: the
    visitor now belongs to the known contact, and its cached decision (made for the anonymous one) is gone."""
    from contacts.ingest import contact_identify

    tenant = site.world.tenant_a
    with tenant_context(tenant.pk):
        anonymous = Contact.objects.create(tenant=tenant, anonymous_id=visitor(1))
        at = anonymous.created_at
        Visitor.objects.create(
            tenant=tenant, anonymous_id=visitor(1), site_key=site.key, contact=anonymous, first_seen_at=at,
            last_seen_at=at,
        )  # fmt: skip
        known = Contact.objects.create(tenant=tenant, email="lead@example.com", lifecycle_stage=LifecycleStage.LEAD)
    assert headline(client, site, 1) == "Spring is here"  # the anonymous contact: the default, now cached
    with django_capture_on_commit_callbacks(execute=True), tenant_context(tenant.pk):
        merged = contact_identify(
            tenant=tenant, anonymous_id=visitor(1), traits={"email": "lead@example.com"}, actor=ACTOR
        )
        assert merged.pk == known.pk and not Contact.objects.filter(pk=anonymous.pk).exists()
        assert Visitor.objects.get(anonymous_id=visitor(1)).contact_id == known.pk
    assert headline(client, site, 1) == "10% off"  # the known contact's stage variant


def test_visitors_not_seen_for_the_retention_period_are_forgotten(site: Site, settings):
    """The daily task deletes visitors not seen for PERSONALIZATION_VISITOR_RETENTION_DAYS, in batches,
    and only the tenant's; their clicks keep their contact."""
    import datetime as dt

    from django.utils import timezone

    from personalization.models import SlotClick
    from personalization.tasks import forget_stale_visitors

    settings.PERSONALIZATION_VISITOR_RETENTION_DAYS = 30
    tenant = site.world.tenant_a
    stale = [known_visitor(site, n) for n in (1, 2, 3)]
    fresh = known_visitor(site, 4)
    long_ago = timezone.now() - dt.timedelta(days=31)
    with tenant_context(tenant.pk):
        Visitor.objects.filter(contact__in=stale).update(last_seen_at=long_ago)
        click = SlotClick.objects.create(
            tenant=tenant, slot=site.slot, visitor=Visitor.objects.get(contact=stale[0]), contact=stale[0],
            clicked_at=long_ago,
        )  # fmt: skip
    with tenant_context(site.world.tenant_b.pk):  # another workspace's old visitor stays
        other = Visitor.objects.create(
            tenant=site.world.tenant_b, anonymous_id=visitor(1), first_seen_at=long_ago, last_seen_at=long_ago
        )
    assert forget_stale_visitors(tenant.pk) == 3
    with tenant_context(tenant.pk):
        assert list(Visitor.objects.values_list("contact_id", flat=True)) == [fresh.pk]
        click.refresh_from_db()
        assert (click.visitor_id, click.contact_id) == (None, stale[0].pk)
    with tenant_context(site.world.tenant_b.pk):
        assert Visitor.objects.filter(pk=other.pk).exists()
