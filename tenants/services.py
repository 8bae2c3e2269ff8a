"""Every write to tenants, members, invitations and API keys."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from tenants.audit import Actor, audit
from tenants.context import tenant_context
from tenants.models import TENANT_SETTINGS_FIELDS, ApiKey, Invitation, Membership, Tenant, User
from tenants.roles import Permission, Role

API_KEY_PREFIX = "sgm_"
INVITATION_SALT = "tenants.invitation"


def _unique_slug(name: str) -> str:
    base = slugify(name)[:50] or "workspace"
    slug, n = base, 1
    while Tenant.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


# --- tenants --------------------------------------------------------------------
@transaction.atomic
def tenant_create(*, name: str, owner: User, time_zone: str = "UTC") -> Tenant:
    """Create a tenant with ``owner`` as its first owner."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": "A name is required."})
    tenant = Tenant(name=name, slug=_unique_slug(name), time_zone=time_zone)
    tenant.full_clean()
    tenant.save()
    with tenant_context(tenant.id):
        Membership.objects.create(tenant=tenant, user=owner, role=Role.OWNER)
    return tenant


@transaction.atomic
def tenant_update(*, tenant: Tenant, acting: Membership, data: dict[str, Any]) -> Tenant:
    """Change a tenant's settings (admins and owners)."""
    acting.require(Permission.MANAGE_TENANT)
    for field, value in data.items():
        if field not in TENANT_SETTINGS_FIELDS:
            raise ValidationError({field: "This setting cannot be changed."})
        setattr(tenant, field, value)
    try:
        tenant.full_clean()
    except ValidationError:
        tenant.refresh_from_db()  # leave the caller's instance as it was
        raise
    tenant.save()
    return tenant


@transaction.atomic
def tenant_delete(*, tenant: Tenant, acting: Membership, confirm_slug: str) -> None:
    """Delete a tenant and everything it owns (owners only, confirmed by typing the slug)."""
    acting.require(Permission.DELETE_TENANT)
    if confirm_slug != tenant.slug:
        raise ValidationError({"confirm_slug": "Type the workspace's slug exactly to confirm."})
    with tenant_context(tenant.id):
        tenant.delete()


# --- members ----------------------------------------------------------------------
def _owner_count(tenant: Tenant) -> int:
    return Membership.objects.filter(tenant=tenant, role=Role.OWNER).count()


@transaction.atomic
def membership_change_role(*, membership: Membership, role: str, acting: Membership) -> Membership:
    """Give a member another role; only owners touch the owner role; one owner must remain."""
    acting.require(Permission.MANAGE_TENANT)
    if role not in Role.values:
        raise ValidationError({"role": f"{role!r} is not a role."})
    touches_owner = Role.OWNER in (role, membership.role)
    if touches_owner and acting.role != Role.OWNER:
        raise PermissionDenied("Only an owner may grant or take away the owner role.")
    if membership.role == Role.OWNER and role != Role.OWNER and _owner_count(membership.tenant) <= 1:
        raise ValidationError({"role": "A workspace needs at least one owner."})
    old_role = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    audit(
        tenant=membership.tenant, actor=Actor.for_user(acting.user), action="member.role_changed", obj=membership,
        data={"user_id": membership.user_id, "from": old_role, "to": role},
    )  # fmt: skip
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership, acting: Membership) -> None:
    """Remove a member; members may also leave on their own."""
    if membership.pk != acting.pk:
        acting.require(Permission.MANAGE_TENANT)
        if membership.role == Role.OWNER and acting.role != Role.OWNER:
            raise PermissionDenied("Only an owner may remove an owner.")
    if membership.role == Role.OWNER and _owner_count(membership.tenant) <= 1:
        raise ValidationError("A workspace needs at least one owner.")
    audit(
        tenant=membership.tenant, actor=Actor.for_user(acting.user), action="member.removed", obj=membership,
        data={"user_id": membership.user_id, "role": membership.role},
    )  # fmt: skip
    membership.delete()


# --- invitations --------------------------------------------------------------------
def invitation_token(invitation: Invitation) -> str:
    return signing.dumps({"t": invitation.tenant_id, "i": invitation.pk}, salt=INVITATION_SALT)


def invitation_token_payload(token: str) -> tuple[int, int] | None:
    """Return (tenant_id, invitation_id) from a valid, unexpired token, else None."""
    max_age = settings.INVITATION_MAX_AGE_DAYS * 86400
    try:
        payload = signing.loads(token, salt=INVITATION_SALT, max_age=max_age)
        return int(payload["t"]), int(payload["i"])
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        return None


@transaction.atomic
def invitation_create(*, tenant: Tenant, email: str, role: str, acting: Membership) -> Invitation:
    """Invite someone by email; the email is sent after commit."""
    from tenants.tasks import send_invitation

    acting.require(Permission.MANAGE_TENANT)
    email = email.strip().lower()
    if role == Role.OWNER and acting.role != Role.OWNER:
        raise PermissionDenied("Only an owner may invite another owner.")
    if Membership.objects.filter(tenant=tenant, user__email__iexact=email).exists():
        raise ValidationError({"email": "This person is already a member."})
    # An expired invitation no longer blocks a new one for the same address.
    expired_before = timezone.now() - timedelta(days=settings.INVITATION_MAX_AGE_DAYS)
    Invitation.objects.filter(
        tenant=tenant, email=email, accepted_at=None, revoked_at=None, created_at__lt=expired_before
    ).update(revoked_at=timezone.now())
    invitation = Invitation(tenant=tenant, email=email, role=role, invited_by=acting.user)
    invitation.full_clean(validate_constraints=False)
    try:
        with transaction.atomic():
            invitation.save()
    except IntegrityError:
        raise ValidationError({"email": "This person already has an open invitation."}) from None
    audit(
        tenant=tenant, actor=Actor.for_user(acting.user), action="member.invited", obj=invitation,
        data={"role": role},
    )  # fmt: skip
    transaction.on_commit(lambda: send_invitation.delay(tenant.id, invitation.pk))
    return invitation


@transaction.atomic
def invitation_revoke(*, invitation: Invitation, acting: Membership) -> None:
    acting.require(Permission.MANAGE_TENANT)
    if invitation.is_open:
        invitation.revoked_at = timezone.now()
        invitation.save(update_fields=["revoked_at"])
        audit(tenant=invitation.tenant, actor=Actor.for_user(acting.user), action="invitation.revoked", obj=invitation)


@transaction.atomic
def invitation_accept(*, invitation: Invitation, user: User) -> Membership:
    """Join the invitation's tenant as ``user``, whose email must be the invited one."""
    if not invitation.is_open:
        raise ValidationError("This invitation has already been used or was withdrawn.")
    if user.email.lower() != invitation.email.lower():
        raise ValidationError(
            f"This invitation was sent to {invitation.email}; sign in with that address to accept it."
        )
    membership, _ = Membership.objects.get_or_create(
        tenant_id=invitation.tenant_id, user=user, defaults={"role": invitation.role}
    )
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by"])
    audit(
        tenant=invitation.tenant, actor=Actor.for_user(user), action="member.joined", obj=membership,
        data={"user_id": user.pk, "role": membership.role, "invitation_id": invitation.pk},
    )  # fmt: skip
    return membership


# --- API keys -------------------------------------------------------------------------
def api_key_hash(raw_key: str) -> str:
    # The key has 256 bits of entropy, so a fast hash is as safe as a slow one here.
    return hashlib.sha256(raw_key.encode()).hexdigest()


@transaction.atomic
def api_key_create(*, tenant: Tenant, name: str, scope: str, acting: Membership) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret, which is never shown again."""
    acting.require(Permission.MANAGE_TENANT)
    if scope not in ApiKey.Scope.values:
        raise ValidationError({"scope": f"{scope!r} is not a scope."})
    if not name.strip():
        raise ValidationError({"name": "A name is required."})
    raw_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(
        tenant=tenant,
        name=name.strip(),
        scope=scope,
        prefix=raw_key[: len(API_KEY_PREFIX) + 8],
        key_hash=api_key_hash(raw_key),
        created_by=acting.user,
    )
    audit(
        tenant=tenant, actor=Actor.for_user(acting.user), action="api_key.created", obj=api_key,
        data={"scope": scope, "prefix": api_key.prefix},
    )  # fmt: skip
    return api_key, raw_key


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey, actor: Actor, acting: Membership | None = None) -> None:
    """Revoke a key at once (from the UI by an admin, or through the API with a write key)."""
    if acting is not None:
        acting.require(Permission.MANAGE_TENANT)
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
        audit(
            tenant=api_key.tenant, actor=actor, action="api_key.revoked", obj=api_key, data={"prefix": api_key.prefix}
        )


def api_key_record_use(*, api_key: ApiKey) -> None:
    """Note when a key was last used, at most once a minute to spare the database."""
    now = timezone.now()
    if api_key.last_used_at is None or (now - api_key.last_used_at).total_seconds() >= 60:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
