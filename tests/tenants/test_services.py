from __future__ import annotations

import itertools

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from tenants import services
from tenants.audit import Actor
from tenants.context import tenant_context
from tenants.models import ApiKey, Invitation, Membership, Tenant
from tenants.roles import ROLE_PERMISSIONS, Permission, Role, role_allows
from tests.conftest import World
from tests.factories import UserFactory, add_member

pytestmark = pytest.mark.django_db


def test_the_permission_matrix():
    assert role_allows(Role.VIEWER, Permission.VIEW)
    assert not role_allows(Role.VIEWER, Permission.EXPORT)
    assert role_allows(Role.ANALYST, Permission.EXPORT)
    assert not role_allows(Role.ANALYST, Permission.EDIT_CONTENT)
    assert role_allows(Role.MARKETER, Permission.EDIT_CONTENT)
    assert not role_allows(Role.MARKETER, Permission.MANAGE_TENANT)
    assert role_allows(Role.ADMIN, Permission.MANAGE_TENANT)
    assert not role_allows(Role.ADMIN, Permission.DELETE_TENANT)
    assert role_allows(Role.OWNER, Permission.DELETE_TENANT)
    # Each role can do everything the role below it can.
    order = [Role.VIEWER, Role.ANALYST, Role.MARKETER, Role.ADMIN, Role.OWNER]
    for lower, higher in itertools.pairwise(order):
        assert ROLE_PERMISSIONS[lower] < ROLE_PERMISSIONS[higher]


def test_tenant_create_makes_the_user_owner_with_a_unique_slug():
    user = UserFactory()
    first = services.tenant_create(name="Acme Shoes", owner=user)
    second = services.tenant_create(name="Acme Shoes", owner=user)
    assert (first.slug, second.slug) == ("acme-shoes", "acme-shoes-2")
    with tenant_context(second.id):
        assert Membership.objects.get(user=user).role == Role.OWNER


def test_tenant_create_rejects_a_blank_name_and_a_bad_time_zone():
    user = UserFactory()
    with pytest.raises(ValidationError) as blank:
        services.tenant_create(name="  ", owner=user)
    assert "name" in blank.value.message_dict
    with pytest.raises(ValidationError) as zone:
        services.tenant_create(name="X", owner=user, time_zone="Mars/Olympus")
    assert "time_zone" in zone.value.message_dict


def test_tenant_update_needs_manage_tenant_and_validates(world: World):
    with tenant_context(world.tenant_a.id):
        with pytest.raises(PermissionDenied):
            services.tenant_update(tenant=world.tenant_a, acting=world.bob_membership, data={"name": "Bobco"})
        with pytest.raises(ValidationError):
            services.tenant_update(
                tenant=world.tenant_a, acting=world.alice_membership, data={"default_sender_email": "nope"}
            )
        services.tenant_update(tenant=world.tenant_a, acting=world.alice_membership, data={"time_zone": "Asia/Tokyo"})
    world.tenant_a.refresh_from_db()
    assert world.tenant_a.time_zone == "Asia/Tokyo"


def test_only_owners_touch_the_owner_role_and_one_owner_remains(world: World):
    with tenant_context(world.tenant_a.id):
        admin = add_member(world.tenant_a, UserFactory(), Role.ADMIN)
        with pytest.raises(PermissionDenied):
            services.membership_change_role(membership=world.bob_membership, role=Role.OWNER, acting=admin)
        with pytest.raises(PermissionDenied):
            services.membership_change_role(membership=world.alice_membership, role=Role.VIEWER, acting=admin)
        services.membership_change_role(membership=world.bob_membership, role=Role.MARKETER, acting=admin)
        with pytest.raises(ValidationError):
            services.membership_change_role(
                membership=world.alice_membership, role=Role.ADMIN, acting=world.alice_membership
            )
        with pytest.raises(ValidationError):
            services.membership_remove(membership=world.alice_membership, acting=world.alice_membership)
        with pytest.raises(PermissionDenied):
            services.membership_remove(membership=admin, acting=world.bob_membership)
        services.membership_remove(membership=world.bob_membership, acting=world.bob_membership)  # Bob leaves
        assert not Membership.objects.filter(user=world.bob).exists()


def test_invitations_are_accepted_only_by_the_invited_address(world: World, django_capture_on_commit_callbacks):
    newcomer = UserFactory(email="dana@example.com")
    with tenant_context(world.tenant_a.id):
        with django_capture_on_commit_callbacks() as callbacks:
            invitation = services.invitation_create(
                tenant=world.tenant_a, email="Dana@Example.com", role=Role.MARKETER, acting=world.alice_membership
            )
        assert len(callbacks) == 1  # the email is queued after commit
        with pytest.raises(ValidationError):
            services.invitation_create(
                tenant=world.tenant_a, email="dana@example.com", role=Role.VIEWER, acting=world.alice_membership
            )
        with pytest.raises(ValidationError, match=r"sent to dana@example\.com"):
            services.invitation_accept(invitation=invitation, user=world.charlie)
        membership = services.invitation_accept(invitation=invitation, user=newcomer)
        assert membership.role == Role.MARKETER
        with pytest.raises(ValidationError):
            services.invitation_accept(invitation=invitation, user=newcomer)


def test_invitation_rules(world: World):
    with tenant_context(world.tenant_a.id):
        with pytest.raises(PermissionDenied):
            services.invitation_create(
                tenant=world.tenant_a, email="x@example.com", role=Role.VIEWER, acting=world.bob_membership
            )
        with pytest.raises(ValidationError, match="already a member"):
            services.invitation_create(
                tenant=world.tenant_a, email="BOB@a.example", role=Role.VIEWER, acting=world.alice_membership
            )


def test_invitation_tokens_cannot_be_forged_or_reused_for_another_tenant(world: World):
    with tenant_context(world.tenant_a.id):
        invitation = Invitation.objects.create(tenant=world.tenant_a, email="e@example.com", role=Role.ADMIN)
    token = services.invitation_token(invitation)
    assert services.invitation_token_payload(token) == (world.tenant_a.id, invitation.id)
    assert services.invitation_token_payload(token[:-2] + "xx") is None
    assert services.invitation_token_payload("garbage") is None


def test_api_keys_store_only_a_hash_and_revoke(world: World):
    with tenant_context(world.tenant_a.id):
        api_key, secret = services.api_key_create(
            tenant=world.tenant_a, name="Shop", scope=ApiKey.Scope.READ, acting=world.alice_membership
        )
        assert secret.startswith("sgm_") and len(secret) > 40
        stored = ApiKey.objects.get(pk=api_key.pk)
        assert secret not in (stored.key_hash, stored.prefix, stored.name)
        assert stored.key_hash == services.api_key_hash(secret)
        assert secret.startswith(stored.prefix)
        with pytest.raises(PermissionDenied):
            services.api_key_create(tenant=world.tenant_a, name="x", scope="read", acting=world.bob_membership)
        with pytest.raises(ValidationError):
            services.api_key_create(tenant=world.tenant_a, name="x", scope="admin", acting=world.alice_membership)
        services.api_key_revoke(api_key=stored, actor=Actor.for_user(world.alice), acting=world.alice_membership)
        assert ApiKey.objects.get(pk=api_key.pk).revoked_at is not None


def test_tenant_delete_needs_the_owner_and_the_slug(world: World):
    with tenant_context(world.tenant_a.id):
        admin = add_member(world.tenant_a, UserFactory(), Role.ADMIN)
        with pytest.raises(PermissionDenied):
            services.tenant_delete(tenant=world.tenant_a, acting=admin, confirm_slug=world.tenant_a.slug)
        with pytest.raises(ValidationError):
            services.tenant_delete(tenant=world.tenant_a, acting=world.alice_membership, confirm_slug="wrong")
        services.tenant_delete(tenant=world.tenant_a, acting=world.alice_membership, confirm_slug=world.tenant_a.slug)
    assert not Tenant.objects.filter(pk=world.tenant_a.pk).exists()
    with tenant_context(world.tenant_b.id):
        assert Membership.objects.count() == 1  # tenant B untouched
