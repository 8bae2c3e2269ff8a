from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from segmentor.celery import app, tenant_task
from tenants.context import platform_access
from tenants.models import Invitation
from tenants.services import invitation_token

logger = logging.getLogger(__name__)


@tenant_task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def send_invitation(tenant_id: int, invitation_id: int) -> None:
    """Email the invitation's accept link (if it is still open)."""
    invitation = Invitation.objects.filter(pk=invitation_id).select_related("tenant", "invited_by").first()
    if invitation is None or not invitation.is_open:
        return
    link = settings.SITE_URL + reverse("invitation_accept", kwargs={"token": invitation_token(invitation)})
    context = {"invitation": invitation, "link": link, "max_age_days": settings.INVITATION_MAX_AGE_DAYS}
    send_mail(
        subject=" ".join(f"You are invited to {invitation.tenant.name} on Segmentor".split()),  # one line
        message=render_to_string("tenants/email/invitation.txt", context),
        from_email=None,
        recipient_list=[invitation.email],
    )
    logger.info("invitation sent", extra={"tenant_id": tenant_id, "invitation_id": invitation_id})


@app.task
def expire_invitations() -> int:
    """Close invitations whose links have expired, so the address can be invited again."""
    cutoff = timezone.now() - timedelta(days=settings.INVITATION_MAX_AGE_DAYS)
    with platform_access():
        return Invitation.all_tenants.filter(accepted_at=None, revoked_at=None, created_at__lt=cutoff).update(
            revoked_at=timezone.now()
        )
