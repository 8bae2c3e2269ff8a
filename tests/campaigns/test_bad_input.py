"""Junk sent to every campaign page, as a careless or hostile user would: never a 500."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.conftest import World, api_client
from tests.isolation.walk import iter_routes, object_ids, url_for

pytestmark = pytest.mark.django_db

JUNK = {
    "name": "x" * 5_000, "channel": "carrier-pigeon", "purpose": "", "schedule": "whenever",
    "send_at": "yesterday", "crontab": "* * *", "local_time": "25:99", "throttle_per_minute": "-5",
    "cost": "NaN", "attribution_window_hours": "1e99", "include": ["abc", "-1", "99999999999999999999"],
    "exclude": ["\x00"], "segment": "abc", "target": "everyone", "target_stage": "royalty", "weight": "-1",
    "html_body": "{% if %}", "subject": "{{ contact.first_name | nope }}", "sms_body": "€" * 2_000,
    "preview_contact": "zz", "contact": "-3", "to": "not-an-address", "variant": "0", "after": "abc",
    "status": "nope", "skip_reason": "<script>", "now": "maybe", "order": ["z", "1"],
}  # fmt: skip


def test_junk_to_every_campaign_page_is_answered_without_a_server_error(world: World):
    client = Client(raise_request_exception=False)
    client.force_login(world.alice)
    ids = object_ids(world, "a")
    routes = [r for r in iter_routes() if r.kind == "tenant" and "/campaigns/" in r.template]
    assert len(routes) > 10
    for route in routes:
        url = url_for(route, ids)
        for verb in ("get", "post"):
            response = getattr(client, verb)(url, JUNK)
            assert response.status_code < 500, f"{verb.upper()} {route.template}: {response.status_code}"


API_JUNK = [
    JUNK,
    {"audience": {"include": "everyone"}, "variants": [{"target": "segment", "target_segment": "x"}, 7]},
    {"variants": [{"id": 10**20, "weight": 10**9}], "send_at": {"$gt": 1}, "crontab": ["*"]},
    {"contact_id": "abc", "to": ["a"], "variant_id": -1, "settings": "not an object", "backend": None},
    ["not", "an", "object"],
]


def test_junk_to_every_campaign_api_route_is_a_4xx(world: World):
    client = api_client(world.secret_a)
    ids = object_ids(world, "a")
    routes = [r for r in iter_routes() if r.kind == "api" and ("campaign" in r.template or "channel" in r.template)]
    assert len(routes) >= 5
    for route in routes:
        url = url_for(route, ids)
        for body in API_JUNK:
            for verb in ("post", "put", "patch"):
                response = getattr(client, verb)(url, body, format="json")
                assert response.status_code < 500, (
                    f"{verb.upper()} {route.template} {body!r:.60}: {response.status_code}"
                )
        assert client.get(url, {"status": "nope", "cursor": "%%%", "page_size": "-1"}).status_code < 500
