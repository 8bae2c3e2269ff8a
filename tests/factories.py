"""Factories: people, tenants and keys, created through the services like real ones."""

from __future__ import annotations

import factory

from tenants.context import tenant_context
from tenants.models import ApiKey, Membership, Tenant, User
from tenants.roles import Role
from tenants.services import api_key_create, tenant_create

PASSWORD = "correct-horse-battery"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    full_name = factory.Faker("name")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def save_password(obj, create, extracted, **kwargs):
        if create:
            obj.save()


def make_tenant(name: str, owner: User) -> Tenant:
    return tenant_create(name=name, owner=owner)


def add_member(tenant: Tenant, user: User, role: str = Role.VIEWER) -> Membership:
    with tenant_context(tenant.id):
        return Membership.objects.create(tenant=tenant, user=user, role=role)


def make_api_key(tenant: Tenant, scope: str = ApiKey.Scope.WRITE, name: str = "test key") -> tuple[ApiKey, str]:
    with tenant_context(tenant.id):
        owner = Membership.objects.filter(tenant=tenant, role=Role.OWNER).select_related("user").first()
        assert owner is not None
        return api_key_create(tenant=tenant, name=name, scope=scope, acting=owner)
