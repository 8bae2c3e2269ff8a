"""Webhooks: a JSON POST to the tenant's URL, signed so the receiver can trust it.

The receiver recomputes ``sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`` over the
raw body it received and compares it with ``X-Segmentor-Signature``; the timestamp is signed
too, so an old request cannot be replayed once it is older than the receiver's tolerance.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

import orjson

from campaigns.channels.base import OutgoingWebhook, SendResult
from campaigns.channels.http import HttpChannelBackend, OutboundHttp, provider_error_text, result_for_response

SIGNATURE_HEADER = "X-Segmentor-Signature"
TIMESTAMP_HEADER = "X-Segmentor-Timestamp"
DELIVERY_HEADER = "X-Segmentor-Delivery"
SIGNATURE_TOLERANCE_SECONDS = 300


def webhook_signature(*, secret: str, timestamp: int | str, body: bytes) -> str:
    """Return the X-Segmentor-Signature value for this body sent at this (unix) timestamp."""
    signed = str(timestamp).encode("ascii") + b"." + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify_webhook_signature(
    *,
    secret: str,
    body: bytes,
    signature: str,
    timestamp: str,
    tolerance: int = SIGNATURE_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Return whether the signature matches the raw body and the timestamp is recent enough."""
    try:
        sent_at = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance:
        return False
    expected = webhook_signature(secret=secret, timestamp=sent_at, body=body)
    return hmac.compare_digest(expected.encode(), signature.strip().encode())


class WebhookBackend(HttpChannelBackend[OutgoingWebhook]):
    """POST each message's payload as JSON to its URL, signed with its secret."""

    def __init__(self, *, http: OutboundHttp | None = None, clock: Callable[[], float] = time.time) -> None:
        super().__init__(http=http)
        self._clock = clock

    def send_one(self, message: OutgoingWebhook) -> SendResult:
        try:
            body = orjson.dumps(message.payload)
        except TypeError as exc:
            return SendResult.permanent(f"the payload is not JSON: {exc}")
        timestamp = str(int(self._clock()))
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: webhook_signature(secret=message.secret, timestamp=timestamp, body=body),
            TIMESTAMP_HEADER: timestamp,
        }
        if message.delivery_id:
            headers[DELIVERY_HEADER] = message.delivery_id
        response = self.http.request("POST", message.url, body=body, headers=headers)
        return result_for_response(response, error=provider_error_text(response) if response.status >= 300 else "")
