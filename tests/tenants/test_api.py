from __future__ import annotations

import uuid

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from tenants.context import tenant_context
from tenants.models import ApiKey
from tests.conftest import World, api_client

pytestmark = pytest.mark.django_db


def test_the_key_sets_the_tenant(world: World, api_a: APIClient, api_b: APIClient):
    assert api_a.get("/api/v1/tenant/").json()["slug"] == world.tenant_a.slug
    assert api_b.get("/api/v1/tenant/").json()["slug"] == world.tenant_b.slug
    emails = {m["email"] for m in api_a.get("/api/v1/members/").json()["results"]}
    assert emails == {"alice@a.example", "bob@a.example"}


def test_errors_share_one_shape(world: World, api_a: APIClient):
    missing = APIClient().get("/api/v1/tenant/")
    assert missing.status_code == 401
    assert missing.json() == {"error": {"code": "not_authenticated", "message": missing.json()["error"]["message"]}}
    assert missing["WWW-Authenticate"] == "Bearer"
    bad = api_client("sgm_not-a-real-key").get("/api/v1/tenant/")
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "authentication_failed"
    malformed = APIClient()
    malformed.credentials(HTTP_AUTHORIZATION="Bearer two parts")
    assert malformed.get("/api/v1/tenant/").json()["error"]["code"] == "authentication_failed"
    not_found = api_a.get("/api/v1/members/999999/")
    assert not_found.status_code == 404 and not_found.json() == {
        "error": {"code": "not_found", "message": "Not found."}
    }
    no_route = api_a.get("/api/v1/no-such-thing/")
    assert no_route.status_code == 404 and no_route.json()["error"]["code"] == "not_found"
    wrong_method = api_a.post("/api/v1/tenant/", {})
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_not_allowed"


def test_another_tenants_object_is_the_same_404_as_a_missing_one(world: World, api_b: APIClient):
    other = api_b.get(f"/api/v1/members/{world.alice_membership.id}/")
    missing = api_b.get("/api/v1/members/999999/")
    assert other.status_code == missing.status_code == 404
    assert other.json() == missing.json()
    assert api_b.delete(f"/api/v1/api-keys/{world.key_a.id}/").status_code == 404
    with tenant_context(world.tenant_a.id):
        assert ApiKey.objects.get(pk=world.key_a.pk).revoked_at is None


def test_read_keys_read_and_write_keys_revoke(world: World, api_a: APIClient, api_a_read: APIClient):
    assert api_a_read.get("/api/v1/api-keys/").status_code == 200
    denied = api_a_read.delete(f"/api/v1/api-keys/{world.read_key_a.id}/")
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "permission_denied"
    assert api_a.delete(f"/api/v1/api-keys/{world.read_key_a.id}/").status_code == 204
    assert api_a_read.get("/api/v1/tenant/").status_code == 401  # revoked at once


def test_api_key_listing_never_shows_secrets_and_records_use(world: World, api_a: APIClient):
    body = api_a.get("/api/v1/api-keys/").content.decode()
    assert world.secret_a not in body and world.key_a.key_hash not in body
    with tenant_context(world.tenant_a.id):
        assert ApiKey.objects.get(pk=world.key_a.pk).last_used_at is not None


def test_cursor_pagination(world: World, api_a: APIClient):
    first = api_a.get("/api/v1/members/?page_size=1").json()
    assert len(first["results"]) == 1 and first["next"]
    second = api_a.get(first["next"]).json()
    assert len(second["results"]) == 1
    assert first["results"][0]["id"] != second["results"][0]["id"]


def test_throttling_per_key(world: World, api_a: APIClient, api_b: APIClient):
    from django.core.cache import cache

    cache.clear()
    with override_settings(API_KEY_THROTTLE_RATE="3/min"):
        codes = [api_a.get("/api/v1/tenant/").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        throttled = api_a.get("/api/v1/tenant/")
        assert throttled.json()["error"]["code"] == "throttled" and int(throttled["Retry-After"]) > 0
        assert api_b.get("/api/v1/tenant/").status_code == 200  # another key has its own budget
    cache.clear()


def test_the_throttle_counts_in_one_redis_round_trip_with_a_window_expiry(monkeypatch):
    """On Redis (the tests' cache, as in production) a hit is one pipelined INCR + EXPIRE NX, not Django's
    incr (EXISTS, then INCRBY) with an add for each new window; the window's key expires by itself."""
    from django.core.cache import caches
    from django.core.cache.backends.redis import RedisCache

    from tenants.api.throttling import count_hit

    cache = caches["default"]
    assert isinstance(cache, RedisCache), "the tests run on Redis (settings_test.py)"

    def two_round_trips(*args, **kwargs):
        raise AssertionError("the throttle took Django's incr")

    monkeypatch.setattr(RedisCache, "incr", two_round_trips)
    key = f"throttle:test:{uuid.uuid4().hex}"
    assert [count_hit(key, 30) for _ in range(3)] == [1, 2, 3]
    client = cache._cache.get_client(cache.make_and_validate_key(key))
    assert 0 < client.ttl(cache.make_and_validate_key(key)) <= 30
    cache.delete(key)


def test_openapi_schema_and_docs(db):
    schema = APIClient().get("/api/schema/?format=json")
    assert schema.status_code == 200
    document = schema.json()
    assert document["openapi"].startswith("3.")
    assert {"/api/v1/tenant/", "/api/v1/members/", "/api/v1/api-keys/{api_key_id}/"} <= set(document["paths"])
    assert document["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key from Settings → API keys.",
    }
    docs = APIClient().get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()


def test_the_schema_generates_without_warnings(db, tmp_path):
    from django.core.management import call_command

    call_command("spectacular", "--fail-on-warn", "--validate", "--file", str(tmp_path / "schema.yaml"))
    assert (tmp_path / "schema.yaml").read_text().startswith("openapi: 3")
