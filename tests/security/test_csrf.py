"""CSRF on every route that takes a write, from the URLConf; the exemptions, each with its reason.

The site walk (tests/security/test_site_walk.py) submits every ``<form method=post>`` and
every htmx write of every page again without the token. Here every route that takes POST,
PUT, PATCH or DELETE is called without a token by a signed-in person, linked from a page or
not: 403, unless it is on the short list below of routes that must take foreign POSTs, each
with the reason it is safe. A session is never an API credential either.
"""

from __future__ import annotations

import pytest
from django.test import Client

from tests.conftest import World
from tests.security.site import every_route, route_values, strict_client, visitors

pytestmark = pytest.mark.django_db

# Routes that take a POST from elsewhere on purpose, and why that is safe.
EXEMPT: dict[str, str] = {
    "optout_unsubscribe": "RFC 8058 one-click: mail providers POST without cookies; it only withdraws "
    "the consent the signed token names",
    "hooks_feedback": "provider webhook: authenticated by the tenant's webhook secret, no cookies",
    "hooks_sms_inbound": "provider webhook: X-Twilio-Signature",
    "hooks_sms_status": "provider webhook: X-Twilio-Signature",
}
EXEMPT_PREFIXES = {
    "anymail:": "ESP webhooks: HTTP basic auth (ANYMAIL_WEBHOOK_SECRET), no cookies",
    "personalization_public:": "the website snippet's API: a public site key and CORS, no cookies",
}
WRITES = ("post", "put", "patch", "delete")


def exempt(name: str | None) -> bool:
    return name in EXEMPT or (name or "").startswith(tuple(EXEMPT_PREFIXES))


def test_every_route_that_writes_refuses_a_request_without_the_token(world: World):
    """Also the routes no page links to: the URLConf is the list, not the pages."""
    values = route_values(world)
    people = visitors(world)
    problems, refused = [], 0
    for route, url in every_route(world, values):
        writes = route.allowed_methods() & set(WRITES)
        if not writes or exempt(route.name):
            continue
        who = {"tenant": "alice", "api": "alice"}.get(route.kind, "staff" if url.startswith("/admin/") else "alice")
        client = strict_client(world, who, people.staff)
        # The middleware checks every unsafe verb alike before the view: one per route tells.
        for verb in sorted(writes)[:1]:
            response = getattr(client, verb)(url)
            if route.kind == "api":
                # A signed-in browser is no API client: the session is not a credential there.
                if response.status_code not in (401, 403):
                    problems.append(f"{verb.upper()} {url} with a session: {response.status_code}")
            elif response.status_code == 403:
                refused += 1
            elif response.status_code != 405:
                problems.append(f"{verb.upper()} {url} without a token: {response.status_code}")
    assert problems == [], "\n".join(problems)
    assert refused > 150


def test_the_exempt_routes_are_exactly_the_csrf_exempt_views():
    """Nobody exempts a view from CSRF without adding it, with its reason, to the list above."""
    from tests.isolation.walk import iter_routes

    exempted = set()
    for route in iter_routes():
        callback = route.callback
        view_class = getattr(callback, "view_class", None)
        marked = getattr(callback, "csrf_exempt", False) or getattr(
            getattr(view_class, "dispatch", None), "csrf_exempt", False
        )
        is_api = route.kind == "api" or route.template.startswith("api/")  # DRF: token-free by design, no session auth
        if marked and not is_api:
            exempted.add(route.name)
    assert set(EXEMPT) <= exempted, "the check sees csrf_exempt views"
    unexplained = sorted(name for name in exempted if not exempt(name))
    # The import upload is exempt from the middleware only to check the token itself, after a size guard.
    assert unexplained == ["contacts:import_list"] or unexplained == [], unexplained


def test_the_checked_import_upload_still_needs_the_token(world: World):
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.alice)
    url = f"/t/{world.tenant_a.slug}/contacts/imports/"
    assert client.post(url, {"file": ""}).status_code == 403


def test_logging_out_needs_a_post_with_the_token(world: World):
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.alice)
    client.get("/accounts/logout/")
    assert "_auth_user_id" in client.session, "a GET (an <img src> on another site) does not log out"
    assert client.post("/accounts/logout/").status_code == 403
    assert "_auth_user_id" in client.session


def test_the_api_ignores_a_browser_session(world: World):
    client = Client()
    client.force_login(world.alice)
    assert client.get("/api/v1/contacts/").status_code == 401
    assert client.post("/api/v1/contacts/", {"email": "x@example.com"}).status_code == 401
