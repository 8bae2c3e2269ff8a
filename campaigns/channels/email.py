"""Email through Django's email backends: SMTP, console, file, or any django-anymail ESP.

One connection per batch: the backend is opened once, every message goes over it, and it is
closed at the end. Each message is handed over alone so each gets its own result. On Django's
own SMTP backend the message is written by ``mime_bytes`` (not through EmailMessage, ~10x
cheaper) and MAIL, RCPT and DATA are pipelined when the server offers PIPELINING (RFC 2920);
every other backend (anymail ESPs, console, file) gets a Django ``EmailMultiAlternatives``.
"""

from __future__ import annotations

import binascii
import contextlib
import functools
import itertools
import logging
import re
import secrets
import smtplib
import socket
from collections.abc import Iterable, Iterator, Sequence
from email.header import Header
from email.utils import formatdate, parseaddr
from typing import Any

from django.conf import settings
from django.core.mail import BadHeaderError, EmailMultiAlternatives, get_connection
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.backends.smtp import EmailBackend as SmtpEmailBackend
from django.core.mail.message import sanitize_address
from django.utils.module_loading import import_string

from campaigns.channels.base import OutgoingEmail, SendResult, SendStatus, status_for_http, status_for_smtp
from campaigns.channels.http import OutboundHttpError, checked_addresses, result_for_error

# A django-anymail service as its backend module is named (amazon_ses, sendgrid, postmark…).
ESP_NAME = re.compile(r"^[a-z][a-z0-9_]{1,30}$")

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


# --- MIME without the email package's generator ----------------------------------------------
# Django builds each message with email.mime and flattens it with email.generator: about 0.4 ms
# a message, more than rendering it. Campaign mail has one fixed shape (text and/or HTML, a few
# headers), so over SMTP it is written directly: bodies as they are when they are ASCII in short
# lines (7bit), else quoted-printable (binascii, in C); RFC 2047 words only for headers that need
# them; every header value checked for line breaks.
CRLF = "\r\n"
_HEADER_LIMIT = 900  # longer values are folded by the email package (RFC 5322 allows 998)


def _no_line_breaks(name: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        raise BadHeaderError(f"Header values can't contain newlines (got {value!r} for header {name!r})")
    return value


@functools.lru_cache(maxsize=256)
def _address(value: str) -> str:
    """An address header value, RFC 2047 and IDNA where needed (Django's sanitize_address)."""
    return sanitize_address(_no_line_breaks("address", value), "utf-8")


def _address_fast(value: str) -> str:
    if value.isascii() and "<" not in value and "," not in value and "\n" not in value and "\r" not in value:
        return value.strip()
    return sanitize_address(_no_line_breaks("To", value), "utf-8")


def _text_header(name: str, value: str) -> str:
    _no_line_breaks(name, value)
    if value.isascii() and len(value) < _HEADER_LIMIT:
        return value
    return Header(value, "utf-8", header_name=name).encode(linesep=CRLF)


def _list_header(value: str) -> str:
    """Fold a list of <URI>s (List-Unsubscribe) between its entries."""
    return ("," + CRLF + " ").join(part.strip() for part in value.split(","))


def _part(content_type: str, body: str, eight_bit: bool = False) -> bytes:
    text = body.replace("\r\n", "\n")
    short = max(map(len, text.encode("utf-8").split(b"\n"))) < 999
    if short and text.isascii():
        # Plain ASCII in short lines needs no encoding at all (7bit).
        encoding, data = "7bit", text.replace("\n", CRLF).encode("ascii")
    elif short and eight_bit:
        # The server takes 8BITMIME (the envelope says BODY=8BITMIME): UTF-8 as it is.
        encoding, data = "8bit", text.replace("\n", CRLF).encode("utf-8")
    else:
        encoding = "quoted-printable"
        data = binascii.b2a_qp(text.replace("\n", CRLF).encode("utf-8"), quotetabs=False, istext=True, header=False)
        # Soft line breaks come out as a bare LF when the text has no line break of its own (a
        # one-line HTML body): SMTP needs CRLF, or the whole body is one line over 998 octets.
        data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    head = f'Content-Type: {content_type}; charset="utf-8"{CRLF}Content-Transfer-Encoding: {encoding}{CRLF}{CRLF}'
    return head.encode("ascii") + data


def mime_bytes(message: OutgoingEmail, *, date: str | None = None, eight_bit: bool = False) -> bytes:
    """The message as RFC 5322 bytes with CRLF line ends; raise BadHeaderError on a line break.

    ``eight_bit``: UTF-8 bodies may go as they are (the server announced 8BITMIME and the
    envelope will say BODY=8BITMIME); otherwise they are quoted-printable.
    """
    headers = {
        "From": _address(message.from_email),
        "To": _address_fast(message.to),
        "Subject": _text_header("Subject", message.subject),
        "Date": date or formatdate(localtime=settings.EMAIL_USE_LOCALTIME),
        "MIME-Version": "1.0",
    }
    if message.reply_to:
        headers["Reply-To"] = _address(message.reply_to)
    for name, value in message.all_headers().items():
        _no_line_breaks(name, name)
        if name.lower() in ("list-unsubscribe", "list-help", "list-subscribe"):
            headers[name] = _list_header(_no_line_breaks(name, value))
        else:
            headers[name] = _text_header(name, value)
    if message.text and message.html:
        boundary = f"=_{secrets.token_hex(12)}"
        headers["Content-Type"] = f'multipart/alternative; boundary="{boundary}"'
        body = b"".join(
            [
                f"--{boundary}{CRLF}".encode(),
                _part("text/plain", message.text, eight_bit),
                f"{CRLF}--{boundary}{CRLF}".encode(),
                _part("text/html", message.html, eight_bit),
                f"{CRLF}--{boundary}--{CRLF}".encode(),
            ]
        )
        head = "".join(f"{name}: {value}{CRLF}" for name, value in headers.items()) + CRLF
        return head.encode("utf-8") + body
    single = _part(
        "text/html" if message.html and not message.text else "text/plain", message.text or message.html, eight_bit
    )
    head = "".join(f"{name}: {value}{CRLF}" for name, value in headers.items())
    return head.encode("utf-8") + single


# --- a tenant's own SMTP server: only at a public address --------------------------------------------
class _CheckedSocket:
    """Connect only to a public address of the host, resolved once (the outbound HTTP guard's policy).

    A tenant names its own SMTP server; without this, ``127.0.0.1:6379`` or a relay on our network
    would be one setting away. ``OUTBOUND_HTTP_ALLOWED_HOSTS`` exempts ``host:port`` pairs (tests).
    """

    source_address: Any

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        last_error: OSError | None = None
        for address in checked_addresses(host, port):  # raises RequestRefused for a private address
            try:
                return socket.create_connection((address, port), timeout, self.source_address)
            except OSError as exc:
                last_error = exc
        raise last_error or OSError(f"could not connect to {host}")


class _CheckedSMTP(_CheckedSocket, smtplib.SMTP):
    pass


class _CheckedSMTPSSL(smtplib.SMTP_SSL, _CheckedSMTP):  # SMTP_SSL wraps the socket _CheckedSocket opened
    pass


class TenantSmtpBackend(SmtpEmailBackend):
    """Django's SMTP backend for a server a tenant configured: public addresses only."""

    @property
    def connection_class(self) -> type[smtplib.SMTP]:
        return _CheckedSMTPSSL if self.use_ssl else _CheckedSMTP


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
        return list(self.send_each(messages))

    def send_each(self, messages: Iterable[OutgoingEmail]) -> Iterator[SendResult]:
        """Yield each message's result as soon as the server has answered it (one connection).

        ``messages`` may be a generator: the next one is taken only after the last result was used.
        """
        pending = iter(messages)
        first = next(pending, None)
        if first is None:
            return
        connection = get_connection(self.backend, fail_silently=False, **self.options)
        try:
            opened = self._open(connection)
            for message in itertools.chain([first], pending):
                if isinstance(opened, SendResult):
                    yield opened  # no connection: the rest waits for a later try
                    continue
                result, connection_lost = self._send_one(connection, message)
                yield result
                if connection_lost:
                    connection.close()
                    opened = self._open(connection)
        finally:
            try:
                connection.close()
            except Exception:  # the results stand; a failed QUIT changes nothing
                logger.warning("email.close_failed", exc_info=True)

    def _open(self, connection: BaseEmailBackend) -> SendResult | None:
        try:
            connection.open()
        except OutboundHttpError as exc:  # a server at a private address: refused for good, with the reason
            return result_for_error(exc)
        except Exception as exc:  # noqa: BLE001 - every message of the batch gets this answer
            # Connection-level trouble (refused, TLS, login) is not about any one recipient.
            return SendResult.transient(f"could not open the email connection: {type(exc).__name__}: {exc}")
        return None

    def _send_one(self, connection: BaseEmailBackend, message: OutgoingEmail) -> tuple[SendResult, bool]:
        """Return the message's result and whether the connection was lost on the way."""
        try:
            # Django's own SMTP backend (or ours for a tenant's server), not a subclass that may send otherwise.
            exact = type(connection) in (SmtpEmailBackend, TenantSmtpBackend)
            if exact and isinstance(connection, SmtpEmailBackend) and connection.connection is not None:
                return self._send_smtp(connection, message), False
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

    def _send_smtp(self, connection: SmtpEmailBackend, message: OutgoingEmail) -> SendResult:
        """Hand one message to the open SMTP connection, written by ``mime_bytes``."""
        smtp = connection.connection
        assert smtp is not None
        smtp.ehlo_or_helo_if_needed()
        eight_bit = smtp.does_esmtp and smtp.has_extn("8bitmime")
        raw = mime_bytes(message, eight_bit=eight_bit)
        smtp_send(smtp, _envelope(message.from_email), _address_fast(message.to), raw, eight_bit=eight_bit)
        return SendResult.sent(message.all_headers()["Message-ID"])


@functools.lru_cache(maxsize=256)
def _envelope(from_email: str) -> str:
    return parseaddr(_address(from_email))[1]


_LEADING_DOT = re.compile(rb"(?m)^\.")
_PLAIN_ADDRESS = re.compile(r"^[!-;=?-~]+@[!-;=?-~]+$")  # printable ASCII, no <, >, space


def smtp_send(smtp: smtplib.SMTP, sender: str, recipient: str, raw: bytes, *, eight_bit: bool = False) -> None:
    """Send one message; with PIPELINING (RFC 2920) MAIL, RCPT and DATA go in one write.

    Two round trips a message instead of four. Raise smtplib's errors exactly as ``sendmail``
    does (refused sender or recipient, refused data), leaving the connection ready for the next.
    """
    smtp.ehlo_or_helo_if_needed()
    pipelining = smtp.does_esmtp and smtp.has_extn("pipelining")
    if not (pipelining and _PLAIN_ADDRESS.match(sender) and _PLAIN_ADDRESS.match(recipient)):
        smtp.sendmail(sender, [recipient], raw, mail_options=["BODY=8BITMIME"] if eight_bit else [])
        return
    options = f" SIZE={len(raw)}" if smtp.has_extn("size") else ""
    if eight_bit:
        options += " BODY=8BITMIME"
    smtp.send(f"MAIL FROM:<{sender}>{options}\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode("ascii"))
    mail, rcpt, data = smtp.getreply(), smtp.getreply(), smtp.getreply()
    if mail[0] != 250 or rcpt[0] not in (250, 251) or data[0] != 354:
        if data[0] == 354:
            # The server took DATA after refusing the envelope (RFC 2920 says it must not): end it.
            smtp.send(b".\r\n")
            smtp.getreply()
        _after_refusal(smtp, 421 in (mail[0], rcpt[0], data[0]))
        if mail[0] != 250:
            raise smtplib.SMTPSenderRefused(mail[0], mail[1], sender)
        if rcpt[0] not in (250, 251):
            raise smtplib.SMTPRecipientsRefused({recipient: rcpt})
        raise smtplib.SMTPDataError(*data)
    body = _LEADING_DOT.sub(b"..", raw) if raw.startswith(b".") or b"\n." in raw else raw
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    smtp.send(body + b".\r\n")
    code, reply = smtp.getreply()
    if code != 250:
        _after_refusal(smtp, code == 421)
        raise smtplib.SMTPDataError(code, reply)


def _after_refusal(smtp: smtplib.SMTP, closing: bool) -> None:
    """Leave the connection ready for the next message (or closed, when the server closes it)."""
    if closing:
        smtp.close()
        return
    with contextlib.suppress(smtplib.SMTPServerDisconnected):
        smtp.rset()
