"""Sending a run: snapshot with variants, claims, checks at the moment of sending, real SMTP."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from campaigns.models import Campaign, CampaignAudience, CampaignRun, ContactPause, Delivery, Variant
from campaigns.sending import (
    STALE_CLAIM,
    deliveries_claim,
    deliveries_reclaim_stale,
    deliveries_send,
    message_id,
    run_finish_if_done,
    run_progress,
    run_start,
)
from contacts.consent import ConsentEvidence, consent_change, suppression_add
from contacts.models import Contact, Suppression
from segments.models import Segment
from segments.services import segment_create, segment_refresh, static_members_add
from tenants.audit import Actor
from tenants.context import tenant_context
from tests.campaigns.test_sending_channels import clicked_links

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("test")
API = ConsentEvidence(source="api")


def person(tenant, email: str, *, country: str = "DE", stage: str = "lead", consent: bool = True, **extra) -> Contact:
    names = {"first_name": email.split("@")[0].title(), **extra}
    contact = Contact.objects.create(tenant=tenant, email=email, country=country, lifecycle_stage=stage, **names)
    if consent:
        consent_change(
            contact=contact, channel="email", purpose="marketing", status="granted", evidence=API, actor=ACTOR
        )
    Contact.objects.filter(pk=contact.pk).update(lifecycle_stage=stage)  # as if derived from their orders
    contact.lifecycle_stage = stage
    return contact


@pytest.fixture
def shop(world):
    tenant = world.tenant_a
    with tenant_context(tenant.id):
        tenant.default_sender_email = "news@shop.example"
        tenant.frequency_cap_messages = 3
        tenant.save()
        people = {
            "ann": person(tenant, "ann@example.com"),
            "bob": person(tenant, "bob@example.com", country="FR", stage="first_time_buyer"),
            "cid": person(tenant, "cid@example.com", country="FR", consent=False),
            "dan": person(tenant, "dan@example.com", country="FR"),
            "eve": person(tenant, "eve@example.com", country="FR"),
            "fay": person(tenant, "fay@example.com", country="FR", first_name="<b>Fay</b>"),
        }
        suppression_add(tenant=tenant, channel="email", address="dan@example.com", reason=Suppression.Reason.MANUAL)
        everyone = segment_create(
            tenant=tenant, actor=ACTOR, name="Everyone with email",
            rules={"all": [{"type": "field", "field": "email", "op": "is_set"}]},
        )  # fmt: skip
        germans = segment_create(
            tenant=tenant,
            actor=ACTOR,
            name="Germans",
            rules={"all": [{"type": "field", "field": "country", "op": "eq", "value": "DE"}]},
        )
        excluded = segment_create(tenant=tenant, actor=ACTOR, name="Do not mail", kind=Segment.Kind.STATIC)
        for segment in (everyone, germans):
            segment_refresh(segment=segment)
        static_members_add(segment=excluded, actor=ACTOR, contact_ids=[people["eve"].pk])
        campaign = Campaign.objects.create(tenant=tenant, name="Spring sale", sender_name="Shop")
        CampaignAudience.objects.create(tenant=tenant, campaign=campaign, segment=everyone)
        CampaignAudience.objects.create(tenant=tenant, campaign=campaign, segment=excluded, exclude=True)
        variants = {
            "de": Variant.objects.create(
                tenant=tenant, campaign=campaign, name="Germany", position=0, target=Variant.Target.SEGMENT,
                target_segment=germans, subject="Hallo {{ contact.first_name }}",
                html_body="<p>Hallo {{ contact.first_name }}</p>",
            ),
            "buyers": Variant.objects.create(
                tenant=tenant, campaign=campaign, name="Buyers", position=1, target=Variant.Target.STAGE,
                target_stage="first_time_buyer", subject="Thanks {{ contact.first_name }}", html_body="<p>Thanks</p>",
            ),
            "default": Variant.objects.create(
                tenant=tenant, campaign=campaign, name="Everyone", position=2,
                subject='Hi {{ contact.first_name | default: "there" }}',
                html_body='<p>Hi {{ contact.first_name }}</p><p><a href="{{ cta.url }}">{{ cta.label }}</a></p>',
                cta_label="Buy now", cta_url="https://shop.example/sale",
            ),
        }  # fmt: skip
        yield tenant, campaign, people, variants


def deliveries(run) -> dict[str, Delivery]:
    return {d.contact.email.split("@")[0]: d for d in Delivery.objects.filter(run=run).select_related("contact")}


def test_the_snapshot_takes_the_audience_and_picks_each_variant(shop):
    tenant, campaign, _people, variants = shop
    with tenant_context(tenant.id):
        run = run_start(campaign=campaign)
        rows = deliveries(run)
        assert set(rows) == {"ann", "bob", "cid", "dan", "fay"}  # eve is in an excluded segment
        assert run.audience_size == 5 and run.number == 1
        assert rows["ann"].variant == variants["de"]  # the first matching target wins
        assert rows["bob"].variant == variants["buyers"]
        assert rows["cid"].variant == variants["default"]
        # Running the snapshot's statement again adds nobody twice (unique per run and contact).
        assert run_start(campaign=campaign).number == 2


def test_ab_variants_split_a_target_by_weight(shop):
    tenant, campaign, _people, variants = shop
    with tenant_context(tenant.id):
        variants["default"].weight = 30
        variants["default"].save()
        b = Variant.objects.create(
            tenant=tenant, campaign=campaign, name="Everyone B", position=3, weight=70, subject="B"
        )
        for i in range(400):
            Contact.objects.create(tenant=tenant, email=f"p{i}@example.com", country="IT")
        segment_refresh(segment=Segment.objects.get(name="Everyone with email"))
        run = run_start(campaign=campaign)
        split = Delivery.objects.filter(run=run, variant__in=[variants["default"], b])
        share_b = split.filter(variant=b).count() / split.count()
        assert 0.6 < share_b < 0.8


def test_claims_are_disjoint_and_stale_claims_come_back(shop):
    tenant, campaign, *_ = shop
    with tenant_context(tenant.id):
        run = run_start(campaign=campaign)
        first = deliveries_claim(run=run, size=3)
        second = deliveries_claim(run=run, size=3)
        assert len(first) == 3 and len(second) == 2 and not set(first) & set(second)
        assert deliveries_claim(run=run) == []
        assert deliveries_reclaim_stale(run=run) == 0  # fresh claims stay with their worker
        later = dt.datetime.now(dt.UTC) + STALE_CLAIM + dt.timedelta(seconds=1)
        assert deliveries_reclaim_stale(run=run, now=later) == 5
        assert sorted(deliveries_claim(run=run, size=10)) == sorted(first + second)


def test_consent_and_suppression_are_checked_again_at_the_moment_of_sending(shop, smtp):
    tenant, campaign, people, _variants = shop
    with tenant_context(tenant.id):
        run = run_start(campaign=campaign)
        # After the snapshot, Bob withdraws his consent: the very next send respects it.
        consent_change(
            contact=people["bob"], channel="email", purpose="marketing", status="withdrawn", evidence=API, actor=ACTOR
        )
        outcome = deliveries_send(run=run, ids=deliveries_claim(run=run))
        assert (outcome.sent, outcome.skipped, outcome.failed) == (2, 3, 0)
        rows = deliveries(run)
        assert {k: (d.status, d.skip_reason) for k, d in rows.items()} == {
            "ann": ("sent", ""), "fay": ("sent", ""), "bob": ("skipped", "no_consent"),
            "cid": ("skipped", "no_consent"), "dan": ("skipped", "suppressed"),
        }  # fmt: skip
        assert run_finish_if_done(run=run)
        campaign.refresh_from_db()
        assert campaign.status == Campaign.Status.SENT
        assert run_progress(run) == {"sent": 2, "skipped": 3}
    messages = {m["To"]: m for m in smtp.inbox.wait_for(2)}
    ann, fay = messages["ann@example.com"], messages["fay@example.com"]
    assert ann["Subject"] == "Hallo Ann" and ann["From"] == "Shop <news@shop.example>"
    assert ann["Message-ID"] == message_id(rows["ann"].pk, tenant)
    html = next(p for p in fay.walk() if p.get_content_type() == "text/html").get_payload(decode=True).decode()
    text = next(p for p in fay.walk() if p.get_content_type() == "text/plain").get_payload(decode=True).decode()
    assert "&lt;b&gt;Fay&lt;/b&gt;" in html and clicked_links(html) == [("https://shop.example/sale", True)]
    assert "Buy now (https://shop.example/sale)" in text


def test_a_pause_holds_messages_back(shop, smtp):
    tenant, campaign, people, _variants = shop
    with tenant_context(tenant.id):
        ContactPause.objects.create(tenant=tenant, contact=people["ann"], until=timezone.now() + dt.timedelta(days=30))
        run = run_start(campaign=campaign)
        deliveries_send(run=run, ids=deliveries_claim(run=run))
        assert deliveries(run)["ann"].skip_reason == "paused"
        assert deliveries(run)["fay"].status == "sent"


def test_the_frequency_cap_counts_recent_sends(shop, smtp):
    tenant, campaign, _people, _variants = shop
    with tenant_context(tenant.id):
        tenant.frequency_cap_messages = 1
        tenant.save()
        first = run_start(campaign=campaign)
        deliveries_send(run=first, ids=deliveries_claim(run=first))
        second = run_start(campaign=campaign)
        deliveries_send(run=second, ids=deliveries_claim(run=second))
        assert deliveries(second)["ann"].skip_reason == "frequency_cap"


def test_a_refused_send_is_retried_later_then_recorded(shop, settings):
    tenant, campaign, *_ = shop
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 1  # nothing listens
    with tenant_context(tenant.id):
        run = run_start(campaign=campaign)
        outcome = deliveries_send(run=run, ids=deliveries_claim(run=run))
        assert outcome.retried == 3  # ann, bob and fay: transient (no connection), back to pending for later
        held = Delivery.objects.filter(run=run, status="pending")
        assert held.count() == 3 and all(d.not_before and d.error for d in held)
        assert deliveries_claim(run=run) == []  # not before their time
        assert not run_finish_if_done(run=run)
        assert CampaignRun.objects.get(pk=run.pk).status == "sending"
