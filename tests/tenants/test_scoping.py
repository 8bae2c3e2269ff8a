"""The first wall: scoped managers fail closed; unique constraints carry the tenant."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.db.models import UniqueConstraint

from tenants.context import TenantNotSet, platform_access, tenant_context
from tenants.models import ApiKey, Membership, TenantOwnedModel
from tests.conftest import World

pytestmark = pytest.mark.django_db


def test_the_scoped_manager_raises_without_a_tenant(world: World):
    with pytest.raises(TenantNotSet):
        list(Membership.objects.all())
    with pytest.raises(TenantNotSet):
        ApiKey.objects.count()


def test_the_scoped_manager_sees_only_the_current_tenant(world: World):
    with tenant_context(world.tenant_a.id):
        assert {m.user_id for m in Membership.objects.all()} == {world.alice.id, world.bob.id}
        assert not ApiKey.objects.filter(pk=world.key_b.pk).exists()
    with tenant_context(world.tenant_b.id):
        assert [m.user_id for m in Membership.objects.all()] == [world.charlie.id]


def test_platform_access_without_a_tenant_spans_every_tenant(world: World):
    with platform_access():
        assert Membership.objects.count() == 3
        with tenant_context(world.tenant_b.id):
            assert Membership.objects.count() == 1


def test_every_tenant_owned_model_uses_the_scoped_default_manager():
    models = [m for m in apps.get_models() if issubclass(m, TenantOwnedModel)]
    assert models
    for model in models:
        assert type(model._default_manager).__name__ == "TenantManager", model
        assert hasattr(model, "all_tenants"), model


def test_every_unique_constraint_on_tenant_owned_tables_includes_the_tenant():
    for model in (m for m in apps.get_models() if issubclass(m, TenantOwnedModel)):
        for field in model._meta.fields:
            assert not (field.unique and not field.primary_key), f"{model.__name__}.{field.name} is unique alone"
        for constraint in model._meta.constraints:
            if not isinstance(constraint, UniqueConstraint):
                continue  # a check constraint looks at one row: no tenant to include
            fields = getattr(constraint, "fields", ())
            assert "tenant" in fields, f"{model.__name__}: {constraint.name} lacks the tenant"
        for together in model._meta.unique_together:
            assert "tenant" in together, f"{model.__name__}: unique_together {together} lacks the tenant"
