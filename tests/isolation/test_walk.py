"""Every URL, every verb: Alice (owner of A), Bob (viewer in A), Charlie (owner of B)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tests.conftest import World, api_client
from tests.isolation.walk import VERBS, Route, iter_routes, object_ids, url_for

pytestmark = pytest.mark.django_db


def a_markers(world: World) -> list[str]:
    """Strings that only tenant A's data contains: none may reach Charlie."""
    return [
        world.tenant_a.name, world.alice.email, world.bob.email, world.key_a.prefix, "A write", "A read",
        "contact-a@example.com", "ZedA", "ext-a", "contacts-a.csv",
    ]  # fmt: skip


def routes(kind: str) -> list[Route]:
    return [r for r in iter_routes() if r.kind == kind]


def call(client: Any, verb: str, url: str) -> Any:
    return getattr(client, verb)(url, follow=False)


def unclassified_routes() -> list[str]:
    return [r.template for r in iter_routes() if r.kind == "unclassified"]


def test_every_route_is_classified():
    unclassified = unclassified_routes()
    assert unclassified == [], "add these routes under /t/<tenant_slug>/ or /api/v1/, or to PUBLIC_ROUTES with a reason"


def test_every_tenant_route_can_be_built(world: World):
    ids = object_ids(world, "a")
    for route in routes("tenant") + routes("api"):
        url_for(route, ids)


def test_charlie_gets_404_on_every_tenant_a_page_and_verb(world: World, charlie_client: Client):
    ids = object_ids(world, "a")
    problems = []
    for route in routes("tenant"):
        url = url_for(route, ids)
        for verb in VERBS:
            response = call(charlie_client, verb, url)
            body = response.content.decode(errors="replace")
            if response.status_code != 404 or any(marker in body for marker in a_markers(world)):
                problems.append(f"{verb.upper()} {url} -> {response.status_code}")
    assert problems == []


def test_anonymous_is_sent_to_login_on_every_tenant_page(world: World):
    ids = object_ids(world, "a")
    anonymous = Client()
    for route in routes("tenant"):
        for verb in VERBS:
            response = call(anonymous, verb, url_for(route, ids))
            assert response.status_code == 302 and "/accounts/login/" in response["Location"], route.template


def test_alice_reaches_every_tenant_page_so_the_404s_mean_something(world: World, alice_client: Client):
    ids = object_ids(world, "a")
    for route in routes("tenant"):
        response = alice_client.get(url_for(route, ids))
        expected = {200} if "get" in route.allowed_methods() else {405}
        assert response.status_code in expected, f"{route.template}: {response.status_code}"


def test_alice_gets_404_for_tenant_b_objects_inside_her_own_tenant(world: World, alice_client: Client):
    ids = {**object_ids(world, "b"), "tenant_slug": world.tenant_a.slug}
    for route in routes("tenant"):
        if len(route.kwargs) < 2:
            continue
        for verb in route.allowed_methods():
            response = call(alice_client, verb, url_for(route, ids))
            assert response.status_code == 404, f"{verb.upper()} {route.template}: {response.status_code}"


def test_bob_the_viewer_cannot_write_anywhere(world: World, bob_client: Client):
    ids = object_ids(world, "a")
    for route in routes("tenant"):
        for verb in ("post", "put", "patch", "delete"):
            response = call(bob_client, verb, url_for(route, ids))
            assert response.status_code in (403, 405), f"{verb.upper()} {route.template}: {response.status_code}"


def charlie_api_problems(world: World) -> list[str]:
    ids = object_ids(world, "a")
    charlie = api_client(world.secret_b)
    problems = []
    for route in routes("api"):
        url = url_for(route, ids)
        for verb in route.allowed_methods():
            response = call(charlie, verb, url)
            body = response.content.decode(errors="replace")
            if any(marker in body for marker in a_markers(world)):
                problems.append(f"{verb.upper()} {url} leaks tenant A's data")
            if route.kwargs and response.status_code != 404:
                problems.append(f"{verb.upper()} {url}: {response.status_code}, not 404")
    return problems


def test_charlie_key_gets_404_on_tenant_a_objects_and_no_a_data(world: World):
    assert charlie_api_problems(world) == []


def test_alice_key_reaches_every_api_route(world: World):
    ids = object_ids(world, "a")
    alice = api_client(world.read_secret_a)
    for route in routes("api"):
        if "get" in route.allowed_methods():
            response = alice.get(url_for(route, ids))
            assert response.status_code == 200, f"{route.template}: {response.status_code}"


def test_a_read_only_key_cannot_write_and_no_key_gets_401(world: World):
    ids = object_ids(world, "a")
    read_only = api_client(world.read_secret_a)
    anonymous = api_client("")
    anonymous.credentials()
    for route in routes("api"):
        url = url_for(route, ids)
        for verb in route.allowed_methods() - {"get"}:
            assert call(read_only, verb, url).status_code == 403, f"{verb.upper()} {url}"
        for verb in route.allowed_methods():
            assert call(anonymous, verb, url).status_code == 401, f"{verb.upper()} {url}"


def test_the_walk_catches_unguarded_routes(world: World, settings):
    settings.ROOT_URLCONF = "tests.isolation.unguarded_urls"
    assert unclassified_routes() == ["export/<int:tenant_id>/"]
    assert "GET /api/v1/everyone/ leaks tenant A's data" in charlie_api_problems(world)
