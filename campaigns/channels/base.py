"""What the channel layer takes and gives back: messages in, one result per message out.

Nothing here knows about campaign models; the sending code turns deliveries into these
values and records the results.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, NamedTuple, Protocol, TypeVar

# Provider error texts can be long (HTML error pages); a delivery row keeps the start.
MAX_ERROR_LENGTH = 500


class SendStatus(StrEnum):
    SENT = "sent"
    # Worth another try later (rate limit, provider down, timeout): the caller retries with backoff.
    FAILED_TRANSIENT = "failed_transient"
    # Retrying cannot help (invalid number, refused recipient, bad URL): record and move on.
    FAILED_PERMANENT = "failed_permanent"


@dataclass(frozen=True)
class SendResult:
    status: SendStatus
    provider_message_id: str = ""
    error: str = ""
    # Seconds the provider asked us to wait (Retry-After), for the caller's backoff.
    retry_after: float | None = None
    # Push only: device tokens the provider says are gone; the caller should forget them.
    invalid_tokens: tuple[str, ...] = ()

    @classmethod
    def sent(cls, provider_message_id: str = "", **extra: Any) -> SendResult:
        return cls(SendStatus.SENT, provider_message_id=provider_message_id, **extra)

    @classmethod
    def transient(cls, error: str, *, retry_after: float | None = None, **extra: Any) -> SendResult:
        return cls(SendStatus.FAILED_TRANSIENT, error=error[:MAX_ERROR_LENGTH], retry_after=retry_after, **extra)

    @classmethod
    def permanent(cls, error: str, **extra: Any) -> SendResult:
        return cls(SendStatus.FAILED_PERMANENT, error=error[:MAX_ERROR_LENGTH], **extra)

    @property
    def ok(self) -> bool:
        return self.status is SendStatus.SENT


def status_for_http(status: int) -> SendStatus:
    """Classify a provider's final HTTP status: 2xx sent; 408, 429 and 5xx transient; the rest permanent."""
    if 200 <= status < 300:
        return SendStatus.SENT
    if status in (408, 429) or status >= 500:
        return SendStatus.FAILED_TRANSIENT
    return SendStatus.FAILED_PERMANENT


def status_for_smtp(code: int) -> SendStatus:
    """Classify an SMTP reply code: 4xx transient, 5xx permanent (RFC 5321 §4.2.1)."""
    return SendStatus.FAILED_TRANSIENT if 400 <= code < 500 else SendStatus.FAILED_PERMANENT


# --- Messages ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutgoingEmail:
    channel: ClassVar[str] = "email"

    to: str
    from_email: str
    subject: str
    # Deterministic per delivery (e.g. "<d123.c45@mail.example>"), so a provider can drop
    # the duplicate of a message that was in flight when a worker died.
    message_id: str
    html: str = ""
    text: str = ""
    reply_to: str = ""
    # Already inside ``html`` (a hidden span at the top); kept apart for previews.
    preheader: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    # RFC 8058: an https URL that unsubscribes on POST, and/or a mailto: address.
    unsubscribe_url: str = ""
    unsubscribe_mailto: str = ""
    # Handed to django-anymail ESPs (tracking webhooks echo it back); SMTP ignores it.
    metadata: Mapping[str, str] = field(default_factory=dict)

    def all_headers(self) -> dict[str, str]:
        """Return the extra headers to send: the caller's, List-Unsubscribe(-Post) and Message-ID."""
        headers = dict(self.headers)
        targets = []
        if self.unsubscribe_url:
            targets.append(f"<{self.unsubscribe_url}>")
        if self.unsubscribe_mailto:
            mailto = self.unsubscribe_mailto
            targets.append(f"<{mailto if mailto.startswith('mailto:') else 'mailto:' + mailto}>")
        if targets:
            headers["List-Unsubscribe"] = ", ".join(targets)
        if self.unsubscribe_url.startswith("https://"):
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message_id = self.message_id.strip()
        headers["Message-ID"] = message_id if message_id.startswith("<") else f"<{message_id}>"
        return headers


@dataclass(frozen=True)
class OutgoingSms:
    channel: ClassVar[str] = "sms"

    to: str  # E.164, e.g. +4915112345678
    text: str
    sender: str = ""  # a number or an alphanumeric sender id; empty: the tenant's configured sender


@dataclass(frozen=True)
class OutgoingPush:
    channel: ClassVar[str] = "push"

    tokens: tuple[str, ...]
    title: str
    body: str
    deep_link: str = ""
    data: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OutgoingWebhook:
    channel: ClassVar[str] = "webhook"

    url: str
    payload: Mapping[str, Any]
    secret: str = field(repr=False)
    # Sent as X-Segmentor-Delivery so a receiver can drop a repeat.
    delivery_id: str = ""


OutgoingMessage = OutgoingEmail | OutgoingSms | OutgoingPush | OutgoingWebhook
MessageT = TypeVar("MessageT", bound=OutgoingMessage, contravariant=True)


class Backend(Protocol[MessageT]):
    """A channel backend: one connection or HTTP session per batch, one result per message, in order.

    ``send_many`` never raises for a single message's failure; an exception escaping it would
    leave the caller unable to tell which messages went out.
    """

    def send_many(self, messages: Sequence[MessageT]) -> list[SendResult]: ...

    def send_each(self, messages: Iterable[MessageT]) -> Iterator[SendResult]:
        """Yield each message's result as soon as it is handed over; take the next message only then.

        The caller records each result before the next message goes out (it may hand over a
        generator that waits for that), so a crash can repeat at most the message in flight.
        """
        ...

    def close(self) -> None: ...


# --- SMS length --------------------------------------------------------------------------

# GSM 03.38 default alphabet (0x1B, the escape to the extension table, left out) and the
# extension table, whose characters take two septets (escape + code).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE, GSM7_MULTIPART = 160, 153  # septets; a concatenation header takes 7 septets per part
UCS2_SINGLE, UCS2_MULTIPART = 70, 67  # UTF-16 code units; the header takes 3 per part


class SmsLength(NamedTuple):
    encoding: str  # "GSM-7" or "UCS-2"
    characters: int  # septets for GSM-7 (extension characters count 2), UTF-16 code units for UCS-2
    segments: int


def sms_segments(text: str) -> SmsLength:
    """Return the encoding, length and number of segments an SMS with this text is sent as.

    A single character outside GSM-7 (an emoji, a curly quote, Cyrillic) makes the whole message
    UCS-2. Characters outside the Basic Multilingual Plane (most emoji) take two UTF-16 units, as
    carriers send them. Parts never split an escape sequence or a surrogate pair.
    """
    if all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in text):
        encoding, single, multipart = "GSM-7", GSM7_SINGLE, GSM7_MULTIPART
        units = [2 if char in GSM7_EXTENSION else 1 for char in text]
    else:
        encoding, single, multipart = "UCS-2", UCS2_SINGLE, UCS2_MULTIPART
        units = [2 if ord(char) > 0xFFFF else 1 for char in text]
    characters = sum(units)
    if characters <= single:
        return SmsLength(encoding, characters, 1 if characters else 0)
    segments, filled = 1, 0
    for size in units:
        if filled + size > multipart:
            segments, filled = segments + 1, 0
        filled += size
    return SmsLength(encoding, characters, segments)
