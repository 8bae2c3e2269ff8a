from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from tenants.context import tenant_context
from tenants.models import ApiKey, Invitation, Membership, Tenant
from tenants.roles import Role
from tenants.services import invitation_token
from tests.conftest import World
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def url(name: str, world: World, **kwargs) -> str:
    return reverse(f"tenants:{name}", kwargs={"tenant_slug": world.tenant_a.slug, **kwargs})


def test_home_sends_users_to_their_last_workspace_or_to_create_one(world: World, alice_client: Client):
    assert alice_client.get("/")["Location"] == f"/t/{world.tenant_a.slug}/"
    loner = Client()
    loner.force_login(UserFactory())
    assert loner.get("/")["Location"] == reverse("tenant_create")
    assert Client().get("/")["Location"].startswith("/accounts/login/")


def test_dashboard_shows_the_workspace(world: World, alice_client: Client, django_assert_max_num_queries):
    with django_assert_max_num_queries(14):
        response = alice_client.get(url("dashboard", world))
    assert response.status_code == 200
    body = response.content.decode()
    assert "Tenant A" in body and 'data-testid="stat-members">2<' in body
    assert "Tenant B" not in body  # Alice is not in B: the switcher lists only her workspaces


def test_the_switcher_lists_every_workspace_of_the_user(world: World):
    with tenant_context(world.tenant_b.id):
        Membership.objects.create(tenant=world.tenant_b, user=world.alice, role=Role.ANALYST)
    client = Client()
    client.force_login(world.alice)
    body = client.get(url("dashboard", world)).content.decode()
    assert f'href="/t/{world.tenant_b.slug}/"' in body and "Tenant B" in body


def test_creating_a_workspace(world: World, alice_client: Client):
    response = alice_client.post(reverse("tenant_create"), {"name": "Second Brand", "time_zone": "Europe/Paris"})
    tenant = Tenant.objects.get(name="Second Brand")
    assert response["Location"] == f"/t/{tenant.slug}/"
    assert tenant.time_zone == "Europe/Paris"
    bad = alice_client.post(reverse("tenant_create"), {"name": "", "time_zone": "Nowhere/Zone"})
    assert bad.status_code == 400
    assert bad.context["form"].errors.keys() == {"name", "time_zone"}


def test_settings_save_and_show_field_errors(world: World, alice_client: Client):
    data = {
        "name": "Tenant A",
        "time_zone": "Europe/Berlin",
        "default_sender_name": "A Shop",
        "default_sender_email": "hello@a.example",
        "postal_address": "1 Main St",
        "quiet_hours_start": "22:00",
        "quiet_hours_end": "07:30",
        "frequency_cap_messages": "5",
        "frequency_cap_days": "7",
        "repeat_customer_min_orders": "2",
        "loyal_advocate_min_orders": "5",
        "loyal_advocate_min_revenue": "500",
        "event_retention_days": "365",
        "consent_purposes": "marketing, Newsletter, marketing",
    }
    assert alice_client.post(url("settings", world), data).status_code == 302
    world.tenant_a.refresh_from_db()
    assert (world.tenant_a.time_zone, world.tenant_a.frequency_cap_messages) == ("Europe/Berlin", 5)
    assert world.tenant_a.consent_purposes == ["marketing", "newsletter"]
    bad = alice_client.post(url("settings", world), {**data, "default_sender_email": "x", "frequency_cap_days": "0"})
    assert bad.status_code == 400
    assert set(bad.context["form"].errors) == {"default_sender_email", "frequency_cap_days"}
    assert "Enter a valid email address." in bad.content.decode()


def test_viewers_see_settings_read_only_and_cannot_post(world: World, bob_client: Client):
    page = bob_client.get(url("settings", world))
    assert page.status_code == 200 and "<fieldset disabled>" in page.content.decode()
    assert bob_client.post(url("settings", world), {"name": "Hijack"}).status_code == 403
    assert bob_client.get(url("api_keys", world)).status_code == 403
    assert bob_client.get(url("delete", world)).status_code == 403


def test_inviting_changing_roles_and_removing_members(world: World, alice_client: Client):
    response = alice_client.post(url("members", world), {"email": "new@example.com", "role": Role.ANALYST})
    assert response.status_code == 302
    with tenant_context(world.tenant_a.id):
        invitation = Invitation.objects.get(email="new@example.com")
    assert invitation.role == Role.ANALYST
    duplicate = alice_client.post(url("members", world), {"email": "bob@a.example", "role": Role.VIEWER})
    assert duplicate.status_code == 400 and "already a member" in duplicate.content.decode()

    alice_client.post(url("member_role", world, member_id=world.bob_membership.id), {"role": Role.MARKETER})
    alice_client.post(url("invitation_revoke", world, invitation_id=invitation.id))
    with tenant_context(world.tenant_a.id):
        assert Membership.objects.get(user=world.bob).role == Role.MARKETER
        assert Invitation.objects.get(pk=invitation.pk).revoked_at is not None

    alice_client.post(url("member_remove", world, member_id=world.bob_membership.id))
    with tenant_context(world.tenant_a.id):
        assert not Membership.objects.filter(user=world.bob).exists()


def test_the_last_owner_cannot_leave(world: World, alice_client: Client):
    response = alice_client.post(url("member_remove", world, member_id=world.alice_membership.id), follow=True)
    assert "at least one owner" in response.content.decode()


def test_accepting_an_invitation(world: World):
    newcomer = UserFactory(email="erin@example.com")
    with tenant_context(world.tenant_a.id):
        invitation = Invitation.objects.create(
            tenant=world.tenant_a, email="erin@example.com", role=Role.MARKETER, invited_by=world.alice
        )
    link = reverse("invitation_accept", kwargs={"token": invitation_token(invitation)})
    client = Client()
    assert client.get(link)["Location"].startswith("/accounts/login/")
    client.force_login(world.charlie)
    assert client.post(link).status_code == 400  # wrong person
    client.force_login(newcomer)
    assert "Join Tenant A" in client.get(link).content.decode()
    assert client.post(link)["Location"] == f"/t/{world.tenant_a.slug}/"
    assert client.get(f"/t/{world.tenant_a.slug}/").status_code == 200
    assert client.get(link).status_code == 404  # used up
    assert client.get(reverse("invitation_accept", kwargs={"token": "forged"})).status_code == 404


def test_api_key_secret_is_shown_once(world: World, alice_client: Client):
    response = alice_client.post(url("api_keys", world), {"name": "Warehouse", "scope": ApiKey.Scope.WRITE})
    assert response["Location"] == url("api_keys", world)  # post/redirect/get: a reload makes no second key
    shown = alice_client.get(url("api_keys", world))
    secret = shown.context["secret"]
    assert secret.startswith("sgm_") and secret in shown.content.decode()
    assert shown["Cache-Control"] == "no-store"
    listing = alice_client.get(url("api_keys", world)).content.decode()
    assert "Warehouse" in listing and secret not in listing
    with tenant_context(world.tenant_a.id):
        assert ApiKey.objects.filter(name="Warehouse").count() == 1
    bad = alice_client.post(url("api_keys", world), {"name": "", "scope": "root"})
    assert bad.status_code == 400 and set(bad.context["form"].errors) == {"name", "scope"}


def test_revoking_an_api_key_takes_effect_at_once(world: World, alice_client: Client):
    from tests.conftest import api_client

    assert api_client(world.secret_a).get("/api/v1/tenant/").status_code == 200
    alice_client.post(url("api_key_revoke", world, api_key_id=world.key_a.id))
    assert api_client(world.secret_a).get("/api/v1/tenant/").status_code == 401


def test_deleting_the_workspace(world: World, alice_client: Client):
    assert alice_client.post(url("delete", world), {"confirm_slug": "nope"}).status_code == 400
    response = alice_client.post(url("delete", world), {"confirm_slug": world.tenant_a.slug})
    assert response.status_code == 302
    assert not Tenant.objects.filter(pk=world.tenant_a.pk).exists()
