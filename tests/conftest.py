"""Three people, as in every test: Alice owns tenant A, Bob views A, Charlie owns tenant B."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django.test import Client
from rest_framework.test import APIClient

from tenants.context import tenant_context
from tenants.models import ApiKey, Membership, Tenant, User
from tenants.roles import Role
from tests.factories import UserFactory, add_member, make_api_key, make_tenant
from tests.mail import SmtpSink


@dataclass
class World:
    alice: User
    bob: User
    charlie: User
    tenant_a: Tenant
    tenant_b: Tenant
    alice_membership: Membership
    bob_membership: Membership
    charlie_membership: Membership
    key_a: ApiKey
    secret_a: str
    read_key_a: ApiKey
    read_secret_a: str
    key_b: ApiKey
    secret_b: str


@pytest.fixture(scope="session", autouse=True)
def forget_cached_personalization(django_db_setup: None) -> None:
    """The test cache (Redis) outlives a run and the test database's name repeats, so entries that a
    previous run cached for this database (site keys by their public string, decisions) are dropped."""
    from django.core.cache import caches
    from django.core.cache.backends.redis import RedisCache

    from personalization import versions

    backend = caches["default"]
    if isinstance(backend, RedisCache):
        redis = backend._cache.get_client(write=True)
        for key in redis.scan_iter(match=f"*{versions.cache_key('')}*"):
            redis.delete(key)


@pytest.fixture
def world(db) -> World:
    alice = UserFactory(email="alice@a.example", full_name="Alice Owner")
    bob = UserFactory(email="bob@a.example", full_name="Bob Viewer")
    charlie = UserFactory(email="charlie@b.example", full_name="Charlie Other")
    tenant_a = make_tenant("Tenant A", alice)
    tenant_b = make_tenant("Tenant B", charlie)
    bob_membership = add_member(tenant_a, bob, Role.VIEWER)
    key_a, secret_a = make_api_key(tenant_a, ApiKey.Scope.WRITE, "A write")
    read_key_a, read_secret_a = make_api_key(tenant_a, ApiKey.Scope.READ, "A read")
    key_b, secret_b = make_api_key(tenant_b, ApiKey.Scope.WRITE, "B write")
    with tenant_context(tenant_a.id):
        alice_membership = Membership.objects.get(user=alice)
    with tenant_context(tenant_b.id):
        charlie_membership = Membership.objects.get(user=charlie)
    return World(
        alice, bob, charlie, tenant_a, tenant_b,
        alice_membership, bob_membership, charlie_membership,
        key_a, secret_a, read_key_a, read_secret_a, key_b, secret_b,
    )  # fmt: skip


def _logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def alice_client(world: World) -> Client:
    return _logged_in(world.alice)


@pytest.fixture
def bob_client(world: World) -> Client:
    return _logged_in(world.bob)


@pytest.fixture
def charlie_client(world: World) -> Client:
    return _logged_in(world.charlie)


def api_client(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


@pytest.fixture
def api_a(world: World) -> APIClient:
    return api_client(world.secret_a)


@pytest.fixture
def api_a_read(world: World) -> APIClient:
    return api_client(world.read_secret_a)


@pytest.fixture
def api_b(world: World) -> APIClient:
    return api_client(world.secret_b)


@pytest.fixture
def smtp(settings) -> Iterator[SmtpSink]:
    """A real SMTP server (aiosmtpd) on a free port, and Django's SMTP backend pointed at it."""
    with SmtpSink() as sink:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_USE_TLS = "127.0.0.1", sink.port, False
        settings.EMAIL_USE_SSL = False
        settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
        yield sink
