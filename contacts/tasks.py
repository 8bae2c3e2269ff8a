from __future__ import annotations

import logging
from email.utils import formataddr

from django.core.mail import send_mail
from django.template.loader import render_to_string

from contacts.consent import confirmation_token, confirmation_url
from contacts.importer import run_import  # noqa: F401 - registers the task
from contacts.ingest import events_apply_backlog, tenants_with_stale_backlog
from contacts.models import ConsentRecord, ConsentStatus
from contacts.privacy import events_apply_retention
from contacts.signals import announcements_retry, tenants_with_pending_announcements
from segmentor.celery import app, fan_out, tenant_task
from tenants.models import Tenant

logger = logging.getLogger(__name__)


@tenant_task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def send_consent_confirmation(tenant_id: int, record_id: int) -> None:
    """Email the double opt-in link for a pending consent record."""
    record = ConsentRecord.objects.select_related("contact", "tenant").filter(pk=record_id).first()
    if record is None or record.status != ConsentStatus.PENDING or not record.contact.email:
        return
    link = confirmation_url(confirmation_token(record, record.contact.email))
    tenant = record.tenant
    context = {"tenant": tenant, "record": record, "link": link}
    # Names are a tenant's free text: quoted as one display name, on one line (no header of their own).
    name = " ".join((tenant.default_sender_name or tenant.name).split())
    sender = formataddr((name, tenant.default_sender_email)) if tenant.default_sender_email else None
    send_mail(
        subject=" ".join(f"Please confirm your subscription to {tenant.name}".split()),
        message=render_to_string("contacts/email/confirm_consent.txt", context),
        from_email=sender,
        recipient_list=[record.contact.email],
    )
    logger.info("consent confirmation sent", extra={"tenant_id": tenant_id, "record_id": record_id})


@tenant_task()
def apply_retention(tenant_id: int) -> int:
    tenant = Tenant.objects.get(pk=tenant_id)
    return events_apply_retention(tenant=tenant)


@app.task
def apply_retention_all() -> int:
    """Beat tick: fan out one retention task per tenant."""
    return fan_out(apply_retention)


@tenant_task()
def apply_event_backlog(tenant_id: int) -> int:
    """Apply the tenant's events stored by an asynchronous batch (rollups, summaries, lifecycle)."""
    return events_apply_backlog(tenant=Tenant.objects.get(pk=tenant_id))


@app.task
def apply_event_backlog_all() -> int:
    """Beat tick: re-queue event batches left unapplied (a worker died, a message was lost)."""
    ids = tenants_with_stale_backlog()
    for tenant_id in ids:
        apply_event_backlog.delay(tenant_id)
    if ids:
        logger.warning("stale event backlog re-queued", extra={"tenant_ids": ids})
    return len(ids)


@tenant_task()
def retry_announcements(tenant_id: int) -> int:
    return announcements_retry(tenant_id=tenant_id)


@app.task
def retry_announcements_all() -> int:
    """Beat tick (every minute): tenants with listeners kept after a failed hand-over run them again."""
    ids = tenants_with_pending_announcements()
    for tenant_id in ids:
        retry_announcements.delay(tenant_id)
    return len(ids)
