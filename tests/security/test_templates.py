"""Liquid in a tenant's hands: nothing of the server to reach, every render bounded, errors clear.

A template is written by a tenant's marketer and rendered by our workers for every contact,
so it is hostile input twice over: it must not read settings, the environment, the ORM,
files or Python internals, and no template may hold a worker (loops over huge ranges, text
that multiplies, thousands of loops in a row). Tried where templates meet the server: the
live preview (UI and API), the test send, and the real send (a worker rendering a batch).
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from rest_framework.test import APIClient

from campaigns.models import Campaign, Delivery
from campaigns.rendering import MAX_RENDER_SECONDS
from campaigns.sending import deliveries_claim, deliveries_send, run_start
from contacts.consent import ConsentEvidence, consent_change
from contacts.models import Contact
from segments.services import segment_create, static_members_add
from tenants.audit import Actor
from tenants.context import tenant_context
from tests.conftest import World
from tests.mail import SmtpSink

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("test")

# Each of these must render nothing of the server (and may render nothing at all).
ESCAPES = [
    "{{ settings.SECRET_KEY }}{{ SECRET_KEY }}{{ settings }}",
    "{{ os.environ }}{{ environ.DATABASE_URL }}{{ env }}",
    "{{ contact.__class__ }}{{ contact.__class__.__mro__ }}{{ contact.__init__.__globals__ }}",
    "{{ contact['__class__'] }}{{ contact['_get'] }}{{ contact._values }}{{ contact.__dict__ }}",
    "{{ contact.save }}{{ contact.delete }}{{ contact.objects }}{{ contact.tenant.slug }}{{ contact.tenant_id }}",
    "{{ contact.attributes.__class__ }}{{ contact.attributes.items }}{{ contact.keys }}{{ contact.get }}",
    "{{ tenant.id }}{{ tenant.slug }}{{ tenant.secret }}{{ campaign.tenant }}{{ campaign.id }}",
    "{{ request }}{{ request.META }}{{ user }}{{ self }}{{ template }}{{ environment }}",
    "{{ contact | map: '__class__' }}{{ contact.interests | map: '__len__' }}",
    "{% assign x = contact %}{{ x.__class__ }}{% for k in contact %}{{ k.__class__ }}{% endfor %}",
]
# Each of these must be refused when saved (partials, marking data as HTML).
REFUSED = [
    "{% include '/etc/passwd' %}",
    "{% render '../../segmentor/settings.py' %}",
    "{% include 'campaigns/_preview.html' %}",
    "{{ contact.first_name | safe }}",
]
# Each of these must stop with a clear error, quickly, whatever the contact.
BOMBS = {
    "nested loops over a million": "{% for i in (1..1000000) %}{% for j in (1..1000000) %}x{% endfor %}{% endfor %}",
    "a loop over a billion": "{% for i in (1..1000000000) %}{{ i }}{% endfor %}",
    "loops in a row": "{% for i in (1..1000) %}{% endfor %}" * 400,
    "a table of a million rows": "{% tablerow i in (1..1000000) %}{{ i }}{% endtablerow %}",
    "text that multiplies": '{{ "aaaaaaaaaa"' + (' | replace: "a", "' + "a" * 90 + '"') * 6 + " | size }}",
    "a joined range": "{{ (1..100000000) | join: ',' | size }}",
    "split and join": '{{ "abcdefghij" | split: "" | join: "' + "x" * 5000 + '" | split: "" | join: "-" | size }}',
    "assigned text that doubles": '{% assign s = "xxxxxxxxxx" %}{% for i in (1..60) %}{% assign s = s | append: s %}'
    "{% endfor %}{{ s | size }}",
    "captured text that doubles": "{% capture s %}xxxxxxxxxx{% endcapture %}{% for i in (1..60) %}{% capture s %}"
    "{{ s }}{{ s }}{% endcapture %}{% endfor %}{{ s | size }}",
    "a number that squares": "{% assign n = 99 %}{% for i in (1..40) %}{% assign n = n | times: n %}{% endfor %}"
    "{{ n }}",
    "output past the limit": "{% for i in (1..900) %}" + "x" * 1000 + "{% endfor %}",
}
LIMIT_WORDS = ("limit", "longer than", "more than")


@pytest.fixture
def composer(world: World) -> dict[str, Any]:
    """Tenant A: a campaign with one subscriber; tenant B: a contact that must never show up."""
    tenant = world.tenant_a
    with tenant_context(world.tenant_b.id):
        Contact.objects.create(tenant=world.tenant_b, email="canary@b.example", first_name="CanaryOfB")
    with tenant_context(tenant.id):
        ann = Contact.objects.create(
            tenant=tenant, email="ann@example.com", first_name="Ann", interests=["tea"], attributes={"ratio": "nan"}
        )
        consent_change(
            contact=ann, channel="email", purpose="marketing", status="granted",
            evidence=ConsentEvidence(source="api"), actor=ACTOR,
        )  # fmt: skip
        segment = segment_create(tenant=tenant, actor=ACTOR, name="Ann", kind="static")
        static_members_add(segment=segment, actor=ACTOR, contact_ids=[ann.pk])
    return {"tenant": tenant, "ann": ann, "segment": segment}


def campaign_with(api: APIClient, segment_id: int, **variant: str) -> dict[str, Any]:
    body = {
        "name": "Spring", "sender_name": "Shop", "sender_email": "news@shop.example",
        "audience": {"include": [segment_id]},
        "variants": [{"name": "All", "target": "default", "subject": "Hi", "html_body": "<p>Hi</p>", **variant}],
    }  # fmt: skip
    response = api.post("/api/v1/campaigns/", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def preview(api: APIClient, campaign: dict[str, Any], contact: Contact) -> tuple[int, dict[str, Any], float]:
    started = time.perf_counter()
    response = api.post(f"/api/v1/campaigns/{campaign['id']}/preview/", {"contact_id": contact.pk}, format="json")
    return response.status_code, response.json(), time.perf_counter() - started


def secrets_in(text: str) -> list[str]:
    """Server values a rendered message must never contain."""
    return [
        name
        for name, value in {
            "SECRET_KEY": settings.SECRET_KEY,
            "DATABASE_URL": os.environ.get("DATABASE_URL", "") or "\0",
            "a Python class": "<class ",
            "a Python object": " object at 0x",
            "a bound method": "bound method",
            "tenant B's contact": "CanaryOfB",
            "/etc/passwd": "root:x:0:0",
        }.items()
        if value and value in text
    ]


@pytest.mark.parametrize("source", ESCAPES)
def test_a_template_reaches_nothing_of_the_server(composer, api_a: APIClient, source: str):
    campaign = campaign_with(
        api_a, composer["segment"].pk, subject=source.replace("\n", " ")[:200], html_body=source, text_body=source
    )
    status, body, _ = preview(api_a, campaign, composer["ann"])
    assert status == 200, body
    rendered = " ".join(str(body.get(key, "")) for key in ("subject", "html", "text"))
    assert secrets_in(rendered) == [], rendered[:500]
    assert str(composer["tenant"].pk) not in body["subject"]


@pytest.mark.parametrize("source", REFUSED)
def test_partials_and_the_safe_filter_are_refused_on_save(composer, api_a: APIClient, source: str):
    body = {"name": "x", "variants": [{"name": "All", "target": "default", "subject": "Hi", "html_body": source}]}
    response = api_a.post("/api/v1/campaigns/", body, format="json")
    assert response.status_code == 400
    [message] = response.json()["error"]["fields"]["variants[0].html_body"]
    assert message.startswith(("Line 1:", "Unknown filter"))


@pytest.mark.parametrize("name", list(BOMBS))
def test_a_runaway_template_stops_with_a_clear_error_at_preview(composer, api_a: APIClient, name: str):
    campaign = campaign_with(api_a, composer["segment"].pk, html_body=BOMBS[name])
    status, body, took = preview(api_a, campaign, composer["ann"])
    assert status == 200, body
    [error] = body["errors"]
    assert error.startswith("Line ") and any(word in error for word in LIMIT_WORDS), error
    assert took < MAX_RENDER_SECONDS + 1


def test_the_live_preview_page_shows_the_limit_as_an_error(world: World, composer, api_a: APIClient):
    campaign = campaign_with(api_a, composer["segment"].pk)
    client = Client()
    client.force_login(world.alice)
    url = f"/t/{world.tenant_a.slug}/campaigns/{campaign['id']}/variants/preview/"
    form = {"name": "All", "target": "default", "weight": 100, "subject": "Hi", "preview_contact": composer["ann"].pk}
    for source in (BOMBS["nested loops over a million"], BOMBS["text that multiplies"]):
        started = time.perf_counter()
        response = client.post(url, {**form, "html_body": source})
        assert response.status_code == 200 and time.perf_counter() - started < MAX_RENDER_SECONDS + 1
        page = response.content.decode()
        assert "limit reached" in page or "longer than" in page, page[:2000]
        assert "Traceback" not in page


def test_a_filter_error_is_a_template_error_not_a_crash(composer, api_a: APIClient):
    """Python errors inside filters (NaN rounded, a year out of range) come back as the template's error."""
    for source in (
        "{{ contact.attributes.ratio | plus: 0 | floor }}",
        "{{ -99999999999 | date: '%Y' }}",
        '{{ "x,y" | split: "," | sum: "x" }}',
    ):
        campaign = campaign_with(api_a, composer["segment"].pk, html_body=source)
        status, body, _ = preview(api_a, campaign, composer["ann"])
        assert status == 200 and body["errors"] and body["errors"][0].startswith("Line 1:"), (source, body)


def test_the_test_send_refuses_a_runaway_template_with_a_400(composer, api_a: APIClient):
    campaign = campaign_with(api_a, composer["segment"].pk, html_body=BOMBS["loops in a row"])
    response = api_a.post(
        f"/api/v1/campaigns/{campaign['id']}/send-test/",
        {"contact_id": composer["ann"].pk, "to": "me@shop.example"},
        format="json",
    )
    assert response.status_code == 400
    assert "loop iteration limit" in str(response.json()["error"]["fields"])


@pytest.mark.parametrize(
    ("bomb", "reason"),
    [("nested loops over a million", "loop iteration limit"), ("text that multiplies", "longer than")],
)
def test_at_send_time_a_runaway_template_fails_its_deliveries_quickly_and_the_rest_go_out(
    composer, api_a: APIClient, settings, bomb: str, reason: str
):
    """One bad variant fails its own deliveries with the reason; the worker moves on at once."""
    tenant = composer["tenant"]
    with tenant_context(tenant.id):
        bob = Contact.objects.create(tenant=tenant, email="bob@example.com", first_name="Bob")
        consent_change(
            contact=bob, channel="email", purpose="marketing", status="granted",
            evidence=ConsentEvidence(source="api"), actor=ACTOR,
        )  # fmt: skip
        static_members_add(segment=composer["segment"], actor=ACTOR, contact_ids=[bob.pk])
    body = {
        "name": "Spring", "sender_name": "Shop", "sender_email": "news@shop.example",
        "audience": {"include": [composer["segment"].pk]},
        "variants": [
            {"name": "Ann's", "target": "default", "weight": 50, "subject": "Hi", "html_body": "<p>Hi</p>"},
        ],
    }  # fmt: skip
    response = api_a.post("/api/v1/campaigns/", body, format="json")
    assert response.status_code == 201, response.content
    campaign_id = response.json()["id"]
    with SmtpSink() as sink:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_USE_TLS = "127.0.0.1", sink.port, False
        with tenant_context(tenant.id):
            campaign = Campaign.objects.get(pk=campaign_id)
            variant = campaign.variants.get()
            # The template that is saved is fine for Bob and runs away for Ann.
            variant.html_body = (
                "{% if contact.first_name == 'Ann' %}" + BOMBS[bomb] + "{% endif %}<p>Hi {{ contact.first_name }}</p>"
            )
            variant.save()
            run = run_start(campaign=campaign)
            started = time.perf_counter()
            deliveries_send(run=run, ids=deliveries_claim(run=run))
            took = time.perf_counter() - started
            rows = {d.contact.first_name: d for d in Delivery.objects.filter(run=run).select_related("contact")}
        [message] = sink.inbox.wait_for(1)
    assert took < MAX_RENDER_SECONDS + 5
    assert rows["Bob"].status == "sent" and message["To"] == "bob@example.com"
    assert rows["Ann"].status == "failed"
    assert rows["Ann"].error.startswith("Template: Line 1:") and reason in rows["Ann"].error


def test_a_journeys_send_step_refuses_partials_too(api_a: APIClient):
    """Journeys send through the campaign pipeline: the same sandbox, the same checks on save."""
    step = {
        "key": "s1", "kind": "send", "config": {"channel": "email"}, "exits": {"next": None},
        "content": {"variants": [{"name": "All", "target": "default", "subject": "Hi",
                                  "html_body": "{% include 'campaigns/_preview.html' %}"}]},
    }  # fmt: skip
    body = {"name": "J", "trigger": "event", "trigger_event": "signup", "steps": [step], "start_key": "s1"}
    response = api_a.post("/api/v1/journeys/", body, format="json")
    assert response.status_code == 400
    assert "unexpected tag 'include'" in str(response.json()["error"]["fields"])
