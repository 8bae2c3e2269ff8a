"""Project-wide behaviour: health, security headers and the Content-Security-Policy."""

from __future__ import annotations

import io

import pytest
from django.test import Client

from tests.conftest import World
from tests.isolation.walk import iter_routes, object_ids, url_for

pytestmark = pytest.mark.django_db


def test_healthz_reports_database_and_broker(db):
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}


def test_healthz_answers_503_when_the_broker_is_down(db, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    response = Client().get("/healthz")
    assert response.status_code == 503
    assert response.json()["broker"].startswith("error") and response.json()["database"] == "ok"


def assert_secure_headers(response) -> None:
    csp = response["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


def test_every_tenant_page_sends_a_strict_csp_and_security_headers(world: World, alice_client: Client):
    ids = object_ids(world, "a")
    pages = [r for r in iter_routes() if r.kind == "tenant" and "get" in r.allowed_methods()]
    assert pages
    for route in pages:
        response = alice_client.get(url_for(route, ids))
        assert response.status_code == 200, route.template
        assert_secure_headers(response)


@pytest.mark.parametrize(
    "path", ["/accounts/login/", "/accounts/signup/", "/accounts/password/reset/", "/api/docs/", "/nope/"]
)
def test_public_pages_send_the_same_headers(db, path: str):
    assert_secure_headers(Client().get(path))


def test_pages_have_no_inline_script(world: World, alice_client: Client):
    body = alice_client.get(f"/t/{world.tenant_a.slug}/").content.decode()
    assert "<script>" not in body and "onclick=" not in body


def test_forms_carry_csrf_tokens(world: World):
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.alice)
    assert client.post(f"/t/{world.tenant_a.slug}/settings/", {"name": "x"}).status_code == 403
    assert "csrfmiddlewaretoken" in client.get(f"/t/{world.tenant_a.slug}/settings/").content.decode()


def test_the_demo_seed_gives_segments_and_a_campaign_ready_to_send(db):
    from django.core.management import call_command

    from campaigns.models import Campaign
    from campaigns.services import audience_estimate, campaign_problems
    from tenants.context import tenant_context
    from tenants.models import Tenant

    call_command("seed_demo", contacts=300, stdout=io.StringIO())
    tenant = Tenant.objects.get(slug="demo-shop")
    with tenant_context(tenant.id):
        campaign = Campaign.objects.get(name="New this week")
        assert campaign.status == Campaign.Status.DRAFT
        assert campaign_problems(campaign=campaign) == []
        assert audience_estimate(campaign=campaign).total > 0
        assert {v.target_stage for v in campaign.variants.all()} == {"new_visitor", "lead", "repeat_customer", ""}
        from journeys.models import Enrollment, Journey

        assert Journey.objects.count() == 5
        assert set(Journey.objects.filter(status="live").values_list("name", flat=True)) == {
            "Abandoned cart", "Post-purchase follow-up",
        }  # fmt: skip
        assert Enrollment.objects.exists(), "recent cart abandoners and buyers walk in"
        from analytics.models import CampaignDayStats

        sent = Campaign.objects.get(name="Last week's newsletter")
        assert sent.status == Campaign.Status.SENT
        assert CampaignDayStats.objects.filter(campaign_id=sent.pk).exists(), "the analytics pages have figures"
