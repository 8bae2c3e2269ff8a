"""Outbound HTTP for webhooks, SMS and push: only to public addresses, bounded in time and size.

Tenants choose webhook URLs (and provider base URLs), so every request could be aimed at our
own network (SSRF). The guard sits where the socket is opened: the host is resolved once,
every address it resolves to must be public, and the socket connects to one of exactly
those addresses, so a DNS answer that changes between check and connect (rebinding) has
nothing to change. TLS still verifies the certificate against the host name. Redirects are
followed by hand, each hop through the same guard.

``settings.OUTBOUND_HTTP_ALLOWED_HOSTS`` lists ``host:port`` pairs (as written in the URL,
e.g. ``127.0.0.1:8025`` or ``[::1]:8025``) that may be private: for tests and local
development only.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Generic, Self
from urllib.parse import urljoin, urlsplit

import orjson
import urllib3
from django.conf import settings
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NameResolutionError,
    NewConnectionError,
    ReadTimeoutError,
)
from urllib3.util import connection as urllib3_connection

from campaigns.channels.base import MessageT, SendResult, SendStatus, status_for_http

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 3
MAX_RESPONSE_BYTES = 256 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "Segmentor/1.0"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Not globally reachable (IANA special-purpose registries) though Python 3.11's is_global says so:
# 192.0.0.0/24 holds cloud metadata services (192.0.0.192), fec0::/10 is the old site-local range.
_NOT_GLOBAL = (
    ipaddress.IPv4Network("192.0.0.0/24"),
    ipaddress.IPv4Network("192.88.99.0/24"),
    ipaddress.IPv6Network("fec0::/10"),
)


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    read: float = 10.0  # per socket read
    total: float = 30.0  # the whole exchange, so a server dripping bytes cannot hold a worker


@dataclass(frozen=True)
class RetryPolicy:
    """A few quick retries inside one send; longer waits are the caller's (it reschedules)."""

    retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 5.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Return the pause before retry number ``attempt + 1``: full jitter, at least Retry-After."""
        backoff = random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))  # noqa: S311
        return backoff if retry_after is None else max(backoff, retry_after)


# --- Errors ------------------------------------------------------------------------------


class OutboundHttpError(Exception):
    transient = False


class RequestRefused(OutboundHttpError):
    """The destination is not allowed (address, scheme, redirect): retrying cannot help."""


class RequestFailed(OutboundHttpError):
    """No usable answer (connection refused, timeout, broken connection): worth retrying later.

    ``reached_server`` is False only when the request certainly never left (the connection
    was never made); only then is it retried at once, since a provider that timed out after
    receiving an SMS may well have sent it.
    """

    transient = True

    def __init__(self, message: str, *, reached_server: bool) -> None:
        super().__init__(message)
        self.reached_server = reached_server


# --- Address policy ----------------------------------------------------------------------


def is_public_address(address: IPAddress) -> bool:
    """Return whether the address is globally routable unicast (not ours, not special)."""
    if isinstance(address, ipaddress.IPv6Address):
        # IPv4 carried inside IPv6 reaches the IPv4 host: judge that one.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public_address(embedded)
    if any(address in network for network in _NOT_GLOBAL if network.version == address.version):
        return False
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def _allowed_private(host: str, port: int) -> bool:
    name = f"[{host}]" if ":" in host else host
    allowed = {entry.strip().lower() for entry in getattr(settings, "OUTBOUND_HTTP_ALLOWED_HOSTS", ())}
    return f"{name.lower()}:{port}" in allowed


def _resolve(host: str, port: int) -> list[tuple[socket.AddressFamily, str]]:
    return [
        (family, str(sockaddr[0]))
        for family, _type, _proto, _name, sockaddr in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    ]


def checked_addresses(host: str, port: int) -> list[str]:
    """Resolve the host and return its addresses, refusing it if any one of them is not public."""
    try:
        resolved = _resolve(host, port)
    except (socket.gaierror, UnicodeError) as exc:
        raise RequestFailed(f"could not resolve {host}: {exc}", reached_server=False) from exc
    if not resolved:
        raise RequestFailed(f"{host} has no address", reached_server=False)
    if not _allowed_private(host, port):
        for _family, address in resolved:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            if not is_public_address(ip):
                # The address stays out of the message: it would tell a tenant about our network.
                raise RequestRefused(
                    f"{host} is not a public internet address (private, loopback, link-local or reserved)"
                )
    return list(dict.fromkeys(address for _family, address in resolved))


def _open_checked_socket(conn: HTTPConnection) -> socket.socket:
    """Connect to one of the host's checked addresses (replaces urllib3's resolve-and-connect)."""
    addresses = checked_addresses(conn.host, conn.port)
    last_error: OSError | None = None
    for address in addresses:
        try:
            sock = urllib3_connection.create_connection(
                (address, conn.port),
                conn.timeout,
                source_address=conn.source_address,
                socket_options=conn.socket_options,
            )
        except OSError as exc:  # TimeoutError included
            last_error = exc
        else:
            sys.audit("http.client.connect", conn, conn.host, conn.port)
            return sock
    if isinstance(last_error, TimeoutError):
        raise ConnectTimeoutError(conn, f"connection to {conn.host} timed out") from last_error
    raise NewConnectionError(conn, f"could not connect to {conn.host}: {last_error}") from last_error


class _GuardedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _open_checked_socket(self)


class _GuardedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _open_checked_socket(self)


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _GuardedPoolManager(urllib3.PoolManager):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # No proxies either: urllib3 reads none from the environment, and we configure none.
        self.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}


# --- Requests ----------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpResponse:
    status: int
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)  # names lower-cased
    body: bytes = b""
    # The body was cut at the size limit or the deadline; the status still counts.
    truncated: bool = False

    def json(self) -> Any:
        """Return the parsed JSON body, or None when it is not JSON."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None

    @property
    def retry_after(self) -> float | None:
        value = self.headers.get("retry-after", "").strip()
        if not value:
            return None
        if value.isdigit():
            return float(value)
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # refused by _check_url before any request
        port = None
    return parts.scheme, (parts.hostname or ""), port


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise RequestRefused(f"only http and https URLs are allowed, not {parts.scheme or 'none'!r}")
    try:
        host, _port = parts.hostname, parts.port
    except ValueError as exc:
        raise RequestRefused(f"invalid URL: {exc}") from exc
    if not host:
        raise RequestRefused("the URL has no host")


class OutboundHttp:
    """An HTTP session for one batch: keeps connections alive between requests; close it after.

    After ``give_up_after`` consecutive failed requests to one origin, further requests to it in
    this session fail at once (transient), so a provider that is down does not make a batch of
    hundreds wait out every timeout and backoff.
    """

    def __init__(
        self,
        *,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        give_up_after: int = 3,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self.max_response_bytes = max_response_bytes
        self.give_up_after = give_up_after
        self._sleep = sleep
        self._failures: dict[tuple[str, str, int | None], int] = {}
        self._pool = _GuardedPoolManager(
            num_pools=8,
            maxsize=1,
            retries=False,
            timeout=urllib3.Timeout(connect=self.timeouts.connect, read=self.timeouts.read),
        )

    def __enter__(self) -> OutboundHttp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.clear()

    def request(
        self, method: str, url: str, *, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> HttpResponse:
        """Send the request, following redirects and retrying quick transient failures.

        Return the final response whatever its status (the caller classifies it); raise
        RequestRefused for a destination that is not allowed and RequestFailed when no answer came.
        """
        _check_url(url)
        origin = _origin(url)
        if self._failures.get(origin, 0) >= self.give_up_after:
            raise RequestFailed(
                f"not attempted: {origin[1]} failed {self._failures[origin]} times in a row in this batch",
                reached_server=False,
            )
        attempt = 0
        while True:
            try:
                response = self._follow(method, url, body, dict(headers or {}))
            except RequestFailed as exc:
                if exc.reached_server or attempt >= self.retry.retries:
                    self._failures[origin] = self._failures.get(origin, 0) + 1
                    raise
                delay = self.retry.delay(attempt)
                reason = str(exc)
            else:
                transient = status_for_http(response.status) is SendStatus.FAILED_TRANSIENT
                retry_after = response.retry_after
                if not transient or attempt >= self.retry.retries or (retry_after or 0) > self.retry.max_delay:
                    self._failures[origin] = self._failures.get(origin, 0) + 1 if transient else 0
                    return response
                delay = self.retry.delay(attempt, retry_after)
                reason = f"HTTP {response.status}"
            logger.info(
                "outbound_http.retry host=%s attempt=%s reason=%s delay=%.2f", origin[1], attempt + 1, reason, delay
            )
            self._sleep(delay)
            attempt += 1

    def _follow(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> HttpResponse:
        for hop in range(MAX_REDIRECTS + 1):
            _check_url(url)
            response = self._exchange(method, url, body, headers)
            location = response.headers.get("location")
            if response.status not in REDIRECT_STATUSES or not location:
                return response
            if hop == MAX_REDIRECTS:
                break
            target = urljoin(url, location)
            if response.status in (301, 302, 303) and method not in ("GET", "HEAD"):
                # Following would turn the POST into a GET and drop its body: a "success"
                # that delivered nothing. Only 307/308 keep the method.
                raise RequestRefused(
                    f"{url} redirects ({response.status}) to {target}; a {method} is not re-sent as GET,"
                    " configure the new URL"
                )
            if urlsplit(url).scheme == "https" and urlsplit(target).scheme == "http":
                raise RequestRefused(f"{url} redirects from https to plain http")
            if _origin(target) != _origin(url):
                # Credentials were meant for the first origin only.
                headers = {name: value for name, value in headers.items() if name.lower() != "authorization"}
            url = target
        raise RequestRefused(f"more than {MAX_REDIRECTS} redirects")

    def _exchange(self, method: str, url: str, body: bytes | None, headers: Mapping[str, str]) -> HttpResponse:
        deadline = time.monotonic() + self.timeouts.total
        sent_headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers}
        host = urlsplit(url).hostname
        try:
            raw = self._pool.request(
                method,
                url,
                body=body,
                headers=sent_headers,
                redirect=False,
                retries=False,
                preload_content=False,
                decode_content=False,
            )
        except (NameResolutionError, NewConnectionError, ConnectTimeoutError) as exc:
            # The guard's own RequestRefused / RequestFailed pass through urllib3 unwrapped.
            raise RequestFailed(f"could not connect to {host}: {_reason(exc)}", reached_server=False) from exc
        except ReadTimeoutError as exc:
            raise RequestFailed(f"{host} did not answer within {self.timeouts.read:g} s", reached_server=True) from exc
        except (HTTPError, OSError) as exc:
            raise RequestFailed(f"request to {host} failed: {_reason(exc)}", reached_server=True) from exc

        chunks: list[bytes] = []
        size, truncated = 0, False
        try:
            while True:
                if time.monotonic() > deadline:
                    truncated = True
                    break
                chunk = raw.read1(min(64 * 1024, self.max_response_bytes - size + 1))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > self.max_response_bytes:
                    truncated = True
                    break
        except (HTTPError, OSError):
            # The status line arrived, so the answer stands; only the body is incomplete.
            truncated = True
        if truncated:
            raw.close()  # the rest of the body is still on the wire: the connection cannot be reused
        raw.release_conn()
        content = b"".join(chunks)[: self.max_response_bytes]
        return HttpResponse(
            status=raw.status,
            url=url,
            headers={name.lower(): value for name, value in raw.headers.items()},
            body=content,
            truncated=truncated,
        )


def _reason(exc: BaseException) -> str:
    # urllib3 nests the interesting part ("Connection refused") a level or two down.
    while exc.__cause__ is not None and isinstance(exc, HTTPError):
        exc = exc.__cause__
    return str(exc) or type(exc).__name__


# --- Channel backends over HTTP -------------------------------------------------------------


def result_for_error(exc: OutboundHttpError) -> SendResult:
    """Return the result of a send that got no usable answer."""
    return SendResult.transient(str(exc)) if exc.transient else SendResult.permanent(str(exc))


def result_for_response(response: HttpResponse, *, provider_message_id: str = "", error: str = "") -> SendResult:
    """Classify a provider's final answer; ``error`` is the provider's own explanation, if any."""
    status = status_for_http(response.status)
    if status is SendStatus.SENT:
        return SendResult.sent(provider_message_id)
    explanation = f"HTTP {response.status}" + (f": {error}" if error else "")
    if status is SendStatus.FAILED_TRANSIENT:
        return SendResult.transient(explanation, retry_after=response.retry_after)
    return SendResult.permanent(explanation)


class HttpChannelBackend(Generic[MessageT]):
    """A backend that talks HTTP: one session per backend (a batch), one result per message."""

    def __init__(self, *, http: OutboundHttp | None = None) -> None:
        self.http = http or OutboundHttp()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_many(self, messages: Sequence[MessageT]) -> list[SendResult]:
        return [self._send_guarded(message) for message in messages]

    def send_each(self, messages: Iterable[MessageT]) -> Iterator[SendResult]:
        for message in messages:
            yield self._send_guarded(message)

    def send_one(self, message: MessageT) -> SendResult:
        raise NotImplementedError

    def close(self) -> None:
        self.http.close()

    def _send_guarded(self, message: MessageT) -> SendResult:
        try:
            return self.send_one(message)
        except OutboundHttpError as exc:
            return result_for_error(exc)
        except Exception as exc:  # one bad message must not hide the others' results
            logger.exception("channel.send_failed channel=%s", message.channel)
            return SendResult.transient(f"unexpected error: {type(exc).__name__}: {exc}")


def provider_error_text(response: HttpResponse) -> str:
    """Return the provider's error message from a JSON body ({"message"} or {"error": {"message"}})."""
    document = response.json()
    if isinstance(document, dict):
        inner = document.get("error")
        if isinstance(inner, dict):
            document = inner
        elif isinstance(inner, str):
            return inner
        parts = [str(document[key]) for key in ("code", "status", "message") if document.get(key) not in (None, "")]
        if parts:
            return " ".join(parts)
    return response.body[:200].decode("utf-8", "replace").strip()
