"""A webhook step's notices: claimed, posted (signed, SSRF-checked, as the webhook channel), retried.

A notice is written in the same transaction as the step that made it, so a step taken is a
notice owed; posting is at least once, and each carries its id in ``X-Segmentor-Delivery``
so the receiver can drop a repeat.
"""

from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.utils import timezone

from campaigns.channels.base import OutgoingWebhook, SendStatus
from campaigns.channels.webhook import WebhookBackend
from campaigns.models import ChannelConfig
from journeys.models import WebhookNotice
from tenants.models import Tenant

MAX_ATTEMPTS = 8
NO_SECRET = "Webhooks have no signing secret: add one under Settings → Channels."  # noqa: S105


def _retry_at(now: dt.datetime, attempts: int, retry_after: float | None) -> dt.datetime:
    backoff = min(60 * 2 ** (attempts - 1), 6 * 3600)
    return now + dt.timedelta(seconds=max(backoff, retry_after or 0))


def notices_post(*, tenant: Tenant, limit: int = 100, backend: WebhookBackend | None = None) -> int:
    """Post up to ``limit`` due notices of the tenant; return how many were settled or rescheduled."""
    now = timezone.now()
    config = ChannelConfig.objects.filter(tenant=tenant, channel="webhook").first()
    secret = config.secret if config is not None else ""
    with transaction.atomic():
        notices = list(
            WebhookNotice.objects.filter(tenant=tenant, status=WebhookNotice.Status.PENDING, next_attempt_at__lte=now)
            .order_by("next_attempt_at", "id")
            .select_for_update(skip_locked=True)[:limit]
        )
        if not notices:
            return 0
        with backend or WebhookBackend() as http:
            for notice in notices:
                notice.attempts += 1
                if not secret:
                    result_status, error, retry_after = SendStatus.FAILED_PERMANENT, NO_SECRET, None
                else:
                    message = OutgoingWebhook(
                        url=notice.url, payload=notice.payload, secret=secret, delivery_id=f"journey-{notice.pk}"
                    )
                    result = http.send_many([message])[0]
                    result_status, error, retry_after = result.status, result.error, result.retry_after
                if result_status is SendStatus.SENT:
                    notice.status, notice.sent_at, notice.error = WebhookNotice.Status.SENT, now, ""
                elif result_status is SendStatus.FAILED_TRANSIENT and notice.attempts < MAX_ATTEMPTS:
                    notice.next_attempt_at, notice.error = _retry_at(now, notice.attempts, retry_after), error
                else:
                    notice.status, notice.error = WebhookNotice.Status.FAILED, error
                notice.save(update_fields=["attempts", "status", "sent_at", "error", "next_attempt_at"])
    return len(notices)
