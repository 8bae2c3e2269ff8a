"""Email through Django's email backends: SMTP, console, file, or any django-anymail ESP.

One connection per batch: the backend is opened once, every message goes over it, and it is
closed at the end. Each message is handed over alone so each gets its own result.
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.backends.smtp import EmailBackend as SmtpEmailBackend
from django.utils.module_loading import import_string

from campaigns.channels.base import OutgoingEmail, SendResult, SendStatus, status_for_http, status_for_smtp

logger = logging.getLogger(__name__)

# Django's SMTP backend waits forever by default; a stuck server must not hold a worker.
DEFAULT_SMTP_TIMEOUT = 30


def build_email(message: OutgoingEmail, connection: BaseEmailBackend | None = None) -> EmailMultiAlternatives:
    """Return the Django message: text and HTML as alternatives, our headers and Message-ID."""
    email = EmailMultiAlternatives(
        subject=message.subject,
        body=message.text or message.html,
        from_email=message.from_email,
        to=[message.to],
        reply_to=[message.reply_to] if message.reply_to else None,
        headers=message.all_headers(),
        connection=connection,
    )
    if message.text and message.html:
        email.attach_alternative(message.html, "text/html")
    elif message.html:
        email.content_subtype = "html"
    if message.metadata:
        email.metadata = dict(message.metadata)  # type: ignore[attr-defined]  # read by django-anymail
    return email


def _smtp_reply(code: int, text: bytes | str) -> str:
    reply = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return f"SMTP {code}: {reply}"


def _exception_names(exc: BaseException) -> set[str]:
    # django-anymail is optional: its errors are recognised by class name, not imported.
    return {cls.__name__ for cls in type(exc).__mro__}


def classify_email_error(exc: Exception) -> SendResult:
    """Classify a failure to hand one message over: SMTP 4xx transient, 5xx permanent."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        replies = list(exc.recipients.values())
        code, text = replies[0] if replies else (550, b"recipient refused")
        reply = _smtp_reply(code, text)
        if status_for_smtp(code) is SendStatus.FAILED_TRANSIENT:
            return SendResult.transient(reply)
        return SendResult.permanent(reply)
    if isinstance(exc, smtplib.SMTPResponseException):
        reply = _smtp_reply(exc.smtp_code, exc.smtp_error)
        if status_for_smtp(exc.smtp_code) is SendStatus.FAILED_TRANSIENT:
            return SendResult.transient(reply)
        return SendResult.permanent(reply)
    names = _exception_names(exc)
    if "AnymailRecipientsRefused" in names:
        return SendResult.permanent(str(exc))
    status_code = getattr(exc, "status_code", None)
    if isinstance(status_code, int):  # an ESP's HTTP API answered (AnymailAPIError)
        if status_for_http(status_code) is SendStatus.FAILED_TRANSIENT:
            return SendResult.transient(f"HTTP {status_code}: {exc}")
        return SendResult.permanent(f"HTTP {status_code}: {exc}")
    if isinstance(exc, OSError):  # connection lost, timeout; includes smtplib.SMTPServerDisconnected
        return SendResult.transient(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, ValueError):  # invalid address or a header with a line break
        return SendResult.permanent(f"invalid message: {exc}")
    return SendResult.transient(f"{type(exc).__name__}: {exc}")


class DjangoEmailBackend:
    """Send OutgoingEmail through a Django email backend (``backend`` path and options, or settings)."""

    def __init__(self, *, backend: str | None = None, **options: Any) -> None:
        self.backend = backend
        self.options = options
        backend_class = import_string(backend or settings.EMAIL_BACKEND)
        if (
            issubclass(backend_class, SmtpEmailBackend)
            and "timeout" not in options
            and getattr(settings, "EMAIL_TIMEOUT", None) is None
        ):
            self.options["timeout"] = DEFAULT_SMTP_TIMEOUT

    def __enter__(self) -> DjangoEmailBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release: each batch closes its own connection."""

    def send_many(self, messages: Sequence[OutgoingEmail]) -> list[SendResult]:
        connection = get_connection(self.backend, fail_silently=False, **self.options)
        results: list[SendResult] = []
        try:
            opened = self._open(connection)
            for message in messages:
                if isinstance(opened, SendResult):
                    results.append(opened)  # no connection: the rest waits for a later try
                    continue
                result, connection_lost = self._send_one(connection, message)
                results.append(result)
                if connection_lost:
                    connection.close()
                    opened = self._open(connection)
        finally:
            try:
                connection.close()
            except Exception:  # the results stand; a failed QUIT changes nothing
                logger.warning("email.close_failed", exc_info=True)
        return results

    def _open(self, connection: BaseEmailBackend) -> SendResult | None:
        try:
            connection.open()
        except Exception as exc:  # noqa: BLE001 - every message of the batch gets this answer
            # Connection-level trouble (refused, TLS, login) is not about any one recipient.
            return SendResult.transient(f"could not open the email connection: {type(exc).__name__}: {exc}")
        return None

    def _send_one(self, connection: BaseEmailBackend, message: OutgoingEmail) -> tuple[SendResult, bool]:
        """Return the message's result and whether the connection was lost on the way."""
        try:
            email = build_email(message, connection)
            sent = connection.send_messages([email])
        except Exception as exc:  # noqa: BLE001 - classified; one bad message must not hide the others
            # The server's answer to this message leaves the connection usable (smtplib sends
            # RSET); anything else at the socket level means reconnecting for the rest.
            # (421 is the server closing the connection.)
            answered = isinstance(exc, smtplib.SMTPRecipientsRefused) or (
                isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code != 421
            )
            return classify_email_error(exc), isinstance(exc, OSError) and not answered
        if not sent:
            return SendResult.permanent("the email backend did not accept the message"), False
        status = getattr(email, "anymail_status", None)
        provider_id = getattr(status, "message_id", None) if status is not None else None
        return SendResult.sent(str(provider_id) if provider_id else email.extra_headers["Message-ID"]), False
