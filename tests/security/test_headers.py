"""The security headers on the pages the site walk does not reach: errors, and one page with its own policy.

Every page of the URLConf is checked by tests/security/test_site_walk.py (the same
``header_problems`` and ``markup_problems``); here the error pages (400, 401, 403, 404, 405,
500) are caused on purpose, and the check itself is shown to catch a loose policy.
"""

from __future__ import annotations

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path

from segmentor.urls import urlpatterns as site_patterns
from tests.conftest import World
from tests.security.site import body_of, directives, header_problems, is_html, markup_problems

pytestmark = pytest.mark.django_db


def test_error_pages_send_the_same_headers(world: World, alice_client: Client, bob_client: Client, settings):
    slug = world.tenant_a.slug
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(world.alice)
    answers = {
        "404 page": Client().get("/no/such/page/"),
        "404 tenant": alice_client.get("/t/no-such-workspace/"),
        "404 api": Client().get("/api/v1/no-such-thing/"),
        "401 api": Client().get("/api/v1/contacts/"),
        "403 role": bob_client.post(f"/t/{slug}/settings/", {"name": "x"}),
        "403 csrf": strict.post(f"/t/{slug}/settings/", {"name": "x"}),
        "405": alice_client.put(f"/t/{slug}/settings/"),
        "400 signed link": Client().get("/u/forged-token/"),
    }
    settings.ALLOWED_HOSTS = ["testserver"]
    answers["400 host"] = Client().get("/accounts/login/", HTTP_HOST="evil.example")
    for name, response in answers.items():
        assert response.status_code == int(name[:3]), (name, response.status_code)
        assert header_problems(response) == [], name
        if is_html(response):
            assert markup_problems(body_of(response)) == [], name


def _boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a bug")


urlpatterns = [path("boom/", _boom, name="boom"), path("api/v1/boom/", _boom, name="api_boom"), *site_patterns]


def test_the_500_page_sends_the_same_headers_and_no_trace(db, settings):
    settings.ROOT_URLCONF = __name__
    client = Client(raise_request_exception=False)
    for url in ("/boom/", "/api/v1/boom/"):
        response = client.get(url)
        assert response.status_code == 500
        assert header_problems(response) == [], url
        assert "a bug" not in body_of(response) and "Traceback" not in body_of(response)


def test_the_email_preview_frame_has_its_own_stricter_policy(world: World, alice_client: Client):
    """The one page that shows a tenant's own HTML: no script at all, sandboxed, framed only by us."""
    from tests.isolation.walk import object_ids

    ids = object_ids(world, "a")
    response = alice_client.post(f"/t/{world.tenant_a.slug}/campaigns/{ids['campaign_id']}/variants/frame/", {})
    assert response.status_code == 200
    policy = directives(response)
    assert policy["script-src"] == ["'none'"] and policy["default-src"] == ["'none'"]
    assert "sandbox" in policy and policy["frame-ancestors"] == ["'self'"] and policy["form-action"] == ["'none'"]
    assert response["X-Frame-Options"] == "SAMEORIGIN"


class _Answer(dict):
    """A stand-in response: the headers the check reads."""


def test_the_check_catches_a_loose_policy_and_inline_script():
    strict = {
        "Content-Security-Policy": "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'self'; "
        "form-action 'self'; frame-ancestors 'none'",
        "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
        "Cross-Origin-Opener-Policy": "same-origin",
    }  # fmt: skip
    assert header_problems(_Answer(strict)) == []
    loose = strict["Content-Security-Policy"].replace("script-src 'self'", "script-src 'self' 'unsafe-inline'")
    assert header_problems(_Answer(strict, **{"Content-Security-Policy": loose}))
    assert header_problems(_Answer(strict, **{"X-Frame-Options": "SAMEORIGIN"})) == ["X-Frame-Options: 'SAMEORIGIN'"]
    framed = strict["Content-Security-Policy"].replace("'none'", "*")
    assert header_problems(_Answer(strict, **{"Content-Security-Policy": framed}))
    assert markup_problems("<p onclick=\"x()\">a</p><script>alert(1)</script><a href=\" javascript:x\">b</a>") == [
        "inline script 'alert(1)'", "event handler <p onclick='x()'>", "script URL <a href=' javascript:x'>",
    ]  # fmt: skip
    assert markup_problems('<script src="/static/a.js"></script><script type="application/json">{}</script>') == []
