"""Malformed bodies at every route that takes a write: an answer, never a 500.

Python's JSON decoder gives up on deep nesting with RecursionError, which is not the
ValueError that parsing code usually catches; broken UTF-8 and a body that is not what its
Content-Type says are the other classics. Every route of the URLConf that takes POST gets
each, from the person it is for (the public ones from nobody).
"""

from __future__ import annotations

import time

import pytest

from tenants.context import tenant_context
from tests.conftest import World
from tests.security.site import every_route, route_values, visitors

pytestmark = pytest.mark.django_db

DEEP = "[" * 100_000 + "]" * 100_000
BODIES = {
    "JSON nested 100,000 deep": (DEEP, "application/json"),
    "broken UTF-8": (b'{"name": "\xff\xfe\xfa"}', "application/json"),
    "a form with broken UTF-8": (b"name=%ff%fe&email=\xff", "application/x-www-form-urlencoded"),
}


def test_every_route_that_takes_a_post_answers_malformed_bodies_without_a_500(world: World):
    from personalization.models import SiteKey

    values = route_values(world)
    people = visitors(world)
    # The website snippet's endpoints read a body only from an allowed origin with a public site key. A key
    # of its own: the shared cache keeps what other tests' keys (rolled back since) resolved to.
    with tenant_context(world.tenant_a.id):
        site_key = SiteKey.objects.create(
            tenant=world.tenant_a, name="Bodies", public_key=f"pk_live_bodies_{time.time_ns()}",
            allowed_origins=["https://shop.example"], identify_secret="b" * 64,
        )  # fmt: skip
    snippet = {"HTTP_X_SEGMENTOR_KEY": site_key.public_key, "HTTP_ORIGIN": "https://shop.example"}
    problems, tried = [], 0
    for route, url in every_route(world, values):
        if "post" not in route.allowed_methods():
            continue
        if route.kind == "tenant":
            who = "alice"
        elif route.kind == "api":
            who = "api_write"
        else:
            who = "staff" if url.startswith("/admin/") else "anonymous"
        client = people.get(who) if who != "api_write" else people.api_writer
        client.raise_request_exception = False  # a crash is a 500 to report, with the others
        for name, (body, content_type) in BODIES.items():
            response = client.generic("POST", url, body, content_type=content_type, **snippet)
            tried += 1
            if response.status_code >= 500:
                problems.append(f"{who} POST {url} with {name}: {response.status_code}")
    assert tried > 300
    assert problems == [], "\n".join(problems)
