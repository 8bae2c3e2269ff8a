from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from tenants.models import User
from tests.conftest import World

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(world: World) -> Client:
    staff = User.objects.create_superuser("staff@segmentor.example", "a-long-password")
    client = Client()
    client.force_login(staff)
    return client


@pytest.mark.parametrize("model", ["user", "tenant", "membership", "invitation", "apikey"])
def test_platform_staff_see_every_tenant_in_the_admin(world: World, staff_client: Client, model: str):
    response = staff_client.get(reverse(f"admin:tenants_{model}_changelist"))
    assert response.status_code == 200
    body = response.content.decode()
    if model in ("membership", "apikey"):
        assert "Tenant A" in body and "Tenant B" in body


def test_admin_change_pages_and_filters_work(world: World, staff_client: Client):
    change = staff_client.get(reverse("admin:tenants_membership_change", args=[world.bob_membership.id]))
    assert change.status_code == 200
    filtered = staff_client.get(reverse("admin:tenants_apikey_changelist") + f"?tenant__id__exact={world.tenant_b.id}")
    assert "B write" in filtered.content.decode() and "A write" not in filtered.content.decode()
    search = staff_client.get(reverse("admin:tenants_membership_changelist") + "?q=charlie")
    assert "charlie@b.example" in search.content.decode()


def test_tenant_members_are_not_let_into_the_admin(world: World, alice_client: Client):
    response = alice_client.get(reverse("admin:tenants_membership_changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
