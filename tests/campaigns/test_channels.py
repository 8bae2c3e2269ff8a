"""The channel layer against real servers: a local HTTP server plays the SMS provider, the push
provider and webhook receivers; aiosmtpd receives email."""

from __future__ import annotations

import base64
import email.header
import hashlib
import hmac
import io
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from typing import Any, cast
from urllib.parse import parse_qs

import orjson
import pytest
from aiosmtpd.controller import Controller

from campaigns.channels.base import (
    OutgoingEmail,
    OutgoingMessage,
    OutgoingPush,
    OutgoingSms,
    OutgoingWebhook,
    SendStatus,
    sms_segments,
)
from campaigns.channels.email import DjangoEmailBackend
from campaigns.channels.http import (
    OutboundHttp,
    RequestRefused,
    RetryPolicy,
    Timeouts,
    is_public_address,
)
from campaigns.channels.local import ConsoleBackend, FileBackend
from campaigns.channels.push import FcmPushBackend, PushConfig
from campaigns.channels.sms import SmsConfig, TwilioSmsBackend
from campaigns.channels.webhook import WebhookBackend, verify_webhook_signature
from tests.mail import Inbox, free_port

SENT, TRANSIENT, PERMANENT = SendStatus.SENT, SendStatus.FAILED_TRANSIENT, SendStatus.FAILED_PERMANENT


# --- A local HTTP server standing in for providers and receivers ------------------------------


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0

    @classmethod
    def json(cls, status: int, document: Any, *, delay: float = 0.0, headers: dict[str, str] | None = None) -> Reply:
        return cls(
            status, json.dumps(document).encode(), {"Content-Type": "application/json", **(headers or {})}, delay
        )


@dataclass
class Received:
    method: str
    path: str
    headers: Message
    body: bytes
    client_port: int


class Provider:
    """Records every request; answers by path with scripted replies (the last one repeats)."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._routes: dict[str, Callable[[Received], Reply]] = {}
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.provider = self  # type: ignore[attr-defined]
        self.server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def reply(self, path: str, *replies: Reply) -> None:
        queue = list(replies)

        def next_reply(_request: Received) -> Reply:
            return queue.pop(0) if len(queue) > 1 else queue[0]

        self._routes[path] = next_reply

    def route(self, path: str, answer: Callable[[Received], Reply]) -> None:
        self._routes[path] = answer

    def answer(self, request: Received) -> Reply:
        with self._lock:
            self.requests.append(request)
            route = self._routes.get(request.path)
            return route(request) if route else Reply(404, b"no route")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is visible

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = Received(self.command, self.path, self.headers, body, self.client_address[1])
        reply = self.server.provider.answer(request)  # type: ignore[attr-defined]
        if reply.delay:
            time.sleep(reply.delay)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def provider(settings):
    provider = Provider()
    thread = threading.Thread(target=provider.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    settings.OUTBOUND_HTTP_ALLOWED_HOSTS = [f"127.0.0.1:{provider.port}"]
    yield provider
    provider.server.shutdown()
    provider.server.server_close()


def quick_http(**overrides: Any) -> OutboundHttp:
    """A session with the real policy but short waits, so failure tests stay fast."""
    options: dict[str, Any] = {
        "timeouts": Timeouts(connect=1.0, read=0.3, total=2.0),
        "retry": RetryPolicy(retries=2, base_delay=0.001, max_delay=0.01),
    }
    return OutboundHttp(**(options | overrides))


# --- SMS -------------------------------------------------------------------------------------

SMS_PATH = "/2010-04-01/Accounts/AC123/Messages.json"


def sms_backend(provider: Provider, **http: Any) -> TwilioSmsBackend:
    config = SmsConfig(
        base_url=f"{provider.url}/2010-04-01", account_sid="AC123", auth_token="tok-secret", sender="+15550001111"
    )
    return TwilioSmsBackend(config, http=quick_http(**http))


def test_sms_posts_twilio_style_forms_with_basic_auth_over_one_connection(provider):
    provider.reply(
        SMS_PATH,
        Reply.json(201, {"sid": "SM0001", "status": "queued"}),
        Reply.json(201, {"sid": "SM0002", "status": "queued"}),
    )
    with sms_backend(provider) as backend:
        results = backend.send_many(
            [
                OutgoingSms(to="+4915112345678", text="Hallo Ada, 20 % Rabatt heute. STOP an 1234"),
                OutgoingSms(to="+447700900123", text="Hi 👋", sender="Segmentor"),
            ]
        )

    assert [(r.status, r.provider_message_id) for r in results] == [(SENT, "SM0001"), (SENT, "SM0002")]
    first, second = provider.requests
    assert (first.method, first.path) == ("POST", SMS_PATH)
    assert first.headers["Authorization"] == "Basic " + base64.b64encode(b"AC123:tok-secret").decode()
    assert first.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(first.body.decode()) == {
        "To": ["+4915112345678"],
        "From": ["+15550001111"],
        "Body": ["Hallo Ada, 20 % Rabatt heute. STOP an 1234"],
    }
    assert parse_qs(second.body.decode()) == {"To": ["+447700900123"], "From": ["Segmentor"], "Body": ["Hi 👋"]}
    assert first.client_port == second.client_port, "one connection for the batch"


def test_sms_server_error_is_transient_after_quick_retries(provider):
    provider.reply(SMS_PATH, Reply.json(500, {"code": 20500, "message": "Internal Server Error"}))
    [result] = sms_backend(provider).send_many([OutgoingSms(to="+4915112345678", text="hi")])
    assert result.status is TRANSIENT
    assert "HTTP 500" in result.error
    assert len(provider.requests) == 3, "one try and two retries"


def test_sms_server_error_then_success_is_sent(provider):
    provider.reply(SMS_PATH, Reply(503), Reply.json(201, {"sid": "SM9"}))
    [result] = sms_backend(provider).send_many([OutgoingSms(to="+4915112345678", text="hi")])
    assert (result.status, result.provider_message_id) == (SENT, "SM9")
    assert len(provider.requests) == 2


def test_sms_client_error_is_permanent_with_the_providers_reason(provider):
    provider.reply(
        SMS_PATH, Reply.json(400, {"code": 21211, "message": "The 'To' number is not a valid phone number."})
    )
    [result] = sms_backend(provider).send_many([OutgoingSms(to="+4915112345678", text="hi")])
    assert result.status is PERMANENT
    assert "21211" in result.error and "not a valid phone number" in result.error
    assert len(provider.requests) == 1, "a 4xx is not retried"


def test_sms_timeout_is_transient_and_not_resent_at_once(provider):
    # The provider may have sent the SMS before it stalled: no immediate retry, the caller decides.
    provider.reply(SMS_PATH, Reply.json(201, {"sid": "SMslow"}, delay=1.0))
    started = time.monotonic()
    [result] = sms_backend(provider).send_many([OutgoingSms(to="+4915112345678", text="hi")])
    assert result.status is TRANSIENT
    assert "did not answer" in result.error
    assert len(provider.requests) == 1
    assert time.monotonic() - started < 1.0


def test_sms_rate_limit_passes_a_long_retry_after_to_the_caller(provider):
    provider.reply(SMS_PATH, Reply.json(429, {"message": "Too Many Requests"}, headers={"Retry-After": "120"}))
    [result] = sms_backend(provider).send_many([OutgoingSms(to="+4915112345678", text="hi")])
    assert (result.status, result.retry_after) == (TRANSIENT, 120.0)
    assert len(provider.requests) == 1, "waiting two minutes is the caller's job"


def test_sms_batch_stops_hammering_a_provider_that_is_down(provider):
    provider.reply(SMS_PATH, Reply(503, b"down"))
    messages = [OutgoingSms(to=f"+491511234567{i}", text="hi") for i in range(5)]
    results = sms_backend(provider).send_many(messages)
    assert [r.status for r in results] == [TRANSIENT] * 5
    assert len(provider.requests) == 9, "three messages tried three times each, then no more"
    assert results[-1].error.startswith("not attempted")


def test_sms_to_an_unreachable_provider_is_transient(settings):
    port = free_port()
    settings.OUTBOUND_HTTP_ALLOWED_HOSTS = [f"127.0.0.1:{port}"]
    config = SmsConfig(base_url=f"http://127.0.0.1:{port}", account_sid="AC1", auth_token="t", sender="+15550001111")
    [result] = TwilioSmsBackend(config, http=quick_http()).send_many([OutgoingSms(to="+4915112345678", text="hi")])
    assert result.status is TRANSIENT
    assert "could not connect" in result.error


def test_sms_provider_name_that_does_not_resolve_is_transient_after_quick_retries(monkeypatch):
    lookups: list[str] = []

    def resolve(host: str, port: int) -> list[tuple[socket.AddressFamily, str]]:
        lookups.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr("campaigns.channels.http._resolve", resolve)
    config = SmsConfig(base_url="https://sms.provider.test", account_sid="AC1", auth_token="t", sender="+15550001111")
    [result] = TwilioSmsBackend(config, http=quick_http()).send_many([OutgoingSms(to="+4915112345678", text="hi")])
    assert result.status is TRANSIENT
    assert "could not resolve sms.provider.test" in result.error
    assert lookups == ["sms.provider.test"] * 3, "never sent, so retried at once"


def test_sms_to_a_number_not_in_e164_is_permanent_without_a_request(provider):
    results = sms_backend(provider).send_many([OutgoingSms(to="0151 1234567", text="hi")])
    assert results[0].status is PERMANENT
    assert provider.requests == []


# --- Push ------------------------------------------------------------------------------------

PUSH_PATH = "/v1/projects/demo/messages:send"


def push_backend(provider: Provider) -> FcmPushBackend:
    return FcmPushBackend(
        PushConfig(base_url=f"{provider.url}/v1/projects/demo", server_key="srv-key"), http=quick_http()
    )


def fcm_answer(request: Received) -> Reply:
    token = orjson.loads(request.body)["message"]["token"]
    if token.startswith("gone"):
        return Reply.json(
            404,
            {
                "error": {
                    "code": 404,
                    "message": "Requested entity was not found.",
                    "status": "NOT_FOUND",
                    "details": [
                        {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}
                    ],
                }
            },
        )
    return Reply.json(200, {"name": f"projects/demo/messages/{token}-1"})


def test_push_sends_one_fcm_request_per_token_with_the_bearer_key(provider):
    provider.route(PUSH_PATH, fcm_answer)
    message = OutgoingPush(
        tokens=("phone", "tablet"),
        title="Your cart misses you",
        body="20 % off until midnight",
        deep_link="shop://cart",
        data={"campaign": "42"},
    )
    [result] = push_backend(provider).send_many([message])

    assert (result.status, result.provider_message_id, result.invalid_tokens) == (
        SENT,
        "projects/demo/messages/phone-1",
        (),
    )
    assert [r.path for r in provider.requests] == [PUSH_PATH, PUSH_PATH]
    assert provider.requests[0].headers["Authorization"] == "Bearer srv-key"
    assert orjson.loads(provider.requests[1].body) == {
        "message": {
            "token": "tablet",
            "notification": {"title": "Your cart misses you", "body": "20 % off until midnight"},
            "data": {"campaign": "42", "deep_link": "shop://cart"},
        }
    }


def test_push_reports_unregistered_tokens(provider):
    provider.route(PUSH_PATH, fcm_answer)
    some_gone, all_gone, none = push_backend(provider).send_many(
        [
            OutgoingPush(tokens=("gone-1", "phone"), title="t", body="b"),
            OutgoingPush(tokens=("gone-2",), title="t", body="b"),
            OutgoingPush(tokens=(), title="t", body="b"),
        ]
    )
    assert (some_gone.status, some_gone.invalid_tokens) == (SENT, ("gone-1",))
    assert (all_gone.status, all_gone.invalid_tokens) == (PERMANENT, ("gone-2",))
    assert "UNREGISTERED" not in all_gone.error and "NOT_FOUND" in all_gone.error
    assert none.status is PERMANENT


def test_push_provider_errors_are_classified(provider):
    provider.reply(PUSH_PATH, Reply.json(500, {"error": {"code": 500, "message": "internal"}}))
    [down] = push_backend(provider).send_many([OutgoingPush(tokens=("phone",), title="t", body="b")])
    provider.reply(PUSH_PATH, Reply.json(401, {"error": {"code": 401, "message": "bad key"}}))
    [unauthorised] = push_backend(provider).send_many([OutgoingPush(tokens=("phone",), title="t", body="b")])
    assert down.status is TRANSIENT
    assert unauthorised.status is PERMANENT and "bad key" in unauthorised.error


# --- Webhooks --------------------------------------------------------------------------------

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z


def webhook_backend() -> WebhookBackend:
    return WebhookBackend(http=quick_http(), clock=lambda: NOW)


def test_webhook_posts_signed_json(provider):
    provider.reply("/hooks/segmentor", Reply(204))
    payload = {"event": "campaign.message", "contact": {"id": 7, "first_name": "Zoë"}, "cta": "Buy now"}
    [result] = webhook_backend().send_many(
        [OutgoingWebhook(url=f"{provider.url}/hooks/segmentor", payload=payload, secret="whsec-1", delivery_id="d-99")]
    )

    assert result.status is SENT
    [request] = provider.requests
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body) == payload
    assert request.headers["X-Segmentor-Timestamp"] == str(NOW)
    assert request.headers["X-Segmentor-Delivery"] == "d-99"
    expected = hmac.new(b"whsec-1", f"{NOW}.".encode() + request.body, hashlib.sha256).hexdigest()
    signature = request.headers["X-Segmentor-Signature"]
    assert signature == f"sha256={expected}"

    def verify(**changes: Any) -> bool:
        arguments = {"secret": "whsec-1", "body": request.body, "signature": signature, "timestamp": str(NOW)}
        return verify_webhook_signature(**(arguments | changes), now=NOW + 10)

    assert verify()
    assert not verify(secret="whsec-2")
    assert not verify(body=request.body.replace(b"Buy now", b"Buy all"))
    assert not verify(timestamp=str(NOW + 1))
    assert not verify(timestamp="yesterday")
    assert not verify_webhook_signature(
        secret="whsec-1", body=request.body, signature=signature, timestamp=str(NOW), now=NOW + 301
    ), "a replay after five minutes is refused"


@pytest.mark.parametrize(
    ("reply", "status", "attempts"),
    [
        (Reply(200, b"ok"), SENT, 1),
        (Reply(500, b"oops"), TRANSIENT, 3),
        (Reply(408), TRANSIENT, 3),
        (Reply(400, b"bad"), PERMANENT, 1),
        (Reply(410, b"gone"), PERMANENT, 1),
        (Reply(302, headers={"Location": "/elsewhere"}), PERMANENT, 1),
    ],
)
def test_webhook_answers_are_classified(provider, reply, status, attempts):
    provider.reply("/hook", reply)
    [result] = webhook_backend().send_many([OutgoingWebhook(url=f"{provider.url}/hook", payload={}, secret="s")])
    assert result.status is status
    assert len(provider.requests) == attempts


def test_webhook_timeout_is_transient(provider):
    provider.reply("/slow", Reply(200, delay=1.0))
    [result] = webhook_backend().send_many([OutgoingWebhook(url=f"{provider.url}/slow", payload={}, secret="s")])
    assert result.status is TRANSIENT


def test_webhook_follows_a_307_with_the_same_signed_body(provider):
    provider.reply("/old", Reply(307, headers={"Location": "/new"}))
    provider.reply("/new", Reply(200))
    [result] = webhook_backend().send_many([OutgoingWebhook(url=f"{provider.url}/old", payload={"n": 1}, secret="s")])
    assert result.status is SENT
    old, new = provider.requests
    assert (new.method, new.path, new.body) == ("POST", "/new", old.body)
    assert new.headers["X-Segmentor-Signature"] == old.headers["X-Segmentor-Signature"]


def test_webhook_gives_up_after_three_redirects(provider):
    provider.reply("/loop", Reply(308, headers={"Location": "/loop"}))
    [result] = webhook_backend().send_many([OutgoingWebhook(url=f"{provider.url}/loop", payload={}, secret="s")])
    assert result.status is PERMANENT
    assert "more than 3 redirects" in result.error
    assert len(provider.requests) == 4


# --- The SSRF guard --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://192.168.1.1/hook",
        "http://172.16.0.1/hook",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://0.0.0.0/hook",
        "http://100.64.0.1/hook",
        "http://224.0.0.1/hook",
        "http://[::1]/hook",
        "http://[fe80::1]/hook",
        "http://[fc00::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://2130706433/hook",  # 127.0.0.1 as one decimal number
        "http://127.1/hook",
        "http://localhost/hook",
        "file:///etc/passwd",
        "gopher://example.com/",
        "ftp://example.com/",
        "http://example.com:99999/",
        "http:///no-host",
    ],
)
def test_guard_refuses_private_and_special_destinations(settings, url):
    settings.OUTBOUND_HTTP_ALLOWED_HOSTS = []
    [result] = webhook_backend().send_many([OutgoingWebhook(url=url, payload={}, secret="s")])
    assert result.status is PERMANENT, result.error
    assert "unexpected" not in result.error


def test_guard_refuses_loopback_unless_allowed(provider, settings):
    provider.reply("/hook", Reply(200))
    message = OutgoingWebhook(url=f"{provider.url}/hook", payload={}, secret="s")
    settings.OUTBOUND_HTTP_ALLOWED_HOSTS = []
    [refused] = webhook_backend().send_many([message])
    settings.OUTBOUND_HTTP_ALLOWED_HOSTS = [f"127.0.0.1:{provider.port}"]
    [allowed] = webhook_backend().send_many([message])
    assert refused.status is PERMANENT and "private" in refused.error
    assert allowed.status is SENT
    assert len(provider.requests) == 1


@pytest.mark.parametrize("host", ["localhost", "[::1]"])
def test_guard_allows_only_the_exact_host_that_is_listed(provider, host):
    # 127.0.0.1:<port> is allowed; other names for the same machine are not.
    [result] = webhook_backend().send_many(
        [OutgoingWebhook(url=f"http://{host}:{provider.port}/hook", payload={}, secret="s")]
    )
    assert result.status is PERMANENT
    assert provider.requests == []


@pytest.mark.parametrize(
    "location",
    ["http://10.0.0.1/hook", "http://169.254.169.254/latest/meta-data/", "http://localhost:{port}/hook"],
)
def test_guard_refuses_a_redirect_to_a_private_address(provider, location):
    provider.reply("/hook", Reply(307, headers={"Location": location.format(port=provider.port)}))
    [result] = webhook_backend().send_many([OutgoingWebhook(url=f"{provider.url}/hook", payload={}, secret="s")])
    assert result.status is PERMANENT
    assert [r.path for r in provider.requests] == ["/hook"]


def test_guard_refuses_a_redirect_to_another_local_port(provider):
    other = free_port()
    provider.reply("/hook", Reply(307, headers={"Location": f"http://127.0.0.1:{other}/hook"}))
    with pytest.raises(RequestRefused):
        quick_http().request("POST", f"{provider.url}/hook", body=b"{}")


def test_guard_connects_to_the_address_it_checked(provider, settings, monkeypatch):
    # The system resolver does not know this name: the request can only arrive if the socket
    # was opened to the very address the guard resolved (and checked) itself.
    lookups: list[str] = []

    def resolve(host: str, port: int) -> list[tuple[socket.AddressFamily, str]]:
        lookups.append(host)
        return [(socket.AF_INET, "127.0.0.1")]

    monkeypatch.setattr("campaigns.channels.http._resolve", resolve)
    settings.OUTBOUND_HTTP_ALLOWED_HOSTS = [f"hooks.tenant.test:{provider.port}"]
    provider.reply("/hook", Reply(200))
    response = quick_http().request("POST", f"http://hooks.tenant.test:{provider.port}/hook", body=b"{}")
    assert response.status == 200
    assert provider.requests[0].headers["Host"] == f"hooks.tenant.test:{provider.port}"
    assert lookups == ["hooks.tenant.test"]


def test_guard_refuses_a_name_with_any_private_address(settings, monkeypatch):
    monkeypatch.setattr(
        "campaigns.channels.http._resolve",
        lambda host, port: [(socket.AF_INET, "93.184.215.14"), (socket.AF_INET, "10.1.2.3")],
    )
    with pytest.raises(RequestRefused) as refused:
        quick_http().request("POST", "https://mixed.example/hook", body=b"{}")
    assert "10.1.2.3" not in str(refused.value), "the error does not map our network for a tenant"


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("::ffff:8.8.8.8", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.31.255.255", False),
        ("192.168.0.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),  # noqa: S104 - an address under test, not a bind
        ("224.0.0.251", False),
        ("240.0.0.1", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("fd12:3456::1", False),
        ("ff02::1", False),
        ("::ffff:10.0.0.1", False),
        ("2002:7f00:1::", False),  # 6to4 wrapping 127.0.0.1
        ("64:ff9b::a00:1", False),  # NAT64 wrapping 10.0.0.1
    ],
)
def test_public_address_policy(address, public):
    assert is_public_address(ip_address(address)) is public


def test_response_size_is_bounded(provider):
    provider.reply("/big", Reply(200, b"x" * 500_000))
    response = quick_http(max_response_bytes=1000).request("GET", f"{provider.url}/big")
    assert (response.status, len(response.body), response.truncated) == (200, 1000, True)


# --- Email over a real SMTP server -----------------------------------------------------------


class SmtpInbox(Inbox):
    """Accepts mail like tests.mail.Inbox, refuses some recipients, notes each connection."""

    def __init__(self, *, pipelining: bool = False) -> None:
        super().__init__()
        self.connections: list[Any] = []
        self.pipelining = pipelining
        # Per MAIL command: had the client already sent what follows it (RCPT) without waiting?
        self.pipelined: list[bool] = []

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        # Like Postfix: PIPELINING lets the client send MAIL, RCPT and DATA in one write.
        return [responses[0], "250-PIPELINING", *responses[1:]] if self.pipelining else responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.pipelined.append(b"RCPT TO" in bytes(server._reader._buffer).upper())
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("refused@"):
            return "550 5.1.1 No such user"
        if address.startswith("greylisted@"):
            return "451 4.7.1 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.connections.append(session.peer)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture(params=["one command at a time", "pipelining"])
def smtp(settings, request):
    inbox = SmtpInbox(pipelining=request.param == "pipelining")
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = port
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    yield inbox
    controller.stop()


def an_email(to: str, number: int = 1, **changes: Any) -> OutgoingEmail:
    fields: dict[str, Any] = {
        "to": to,
        "from_email": "Acme News <news@acme.example>",
        "reply_to": "help@acme.example",
        "subject": f"Grüße, your offer #{number}",
        "html": f"<p>Hello <b>Ada</b>, offer {number}</p>",
        "text": f"Hello Ada, offer {number}",
        "message_id": f"<d{number}.c42@mail.segmentor.example>",
        "headers": {"X-Segmentor-Campaign": "42"},
        "unsubscribe_url": f"https://app.segmentor.example/u/token-{number}/",
        "unsubscribe_mailto": f"unsubscribe+{number}@segmentor.example",
    }
    return OutgoingEmail(**(fields | changes))


def parts(message: Message) -> dict[str, str]:
    return {
        part.get_content_type(): cast(bytes, part.get_payload(decode=True)).decode(
            part.get_content_charset() or "utf-8"
        )
        for part in message.walk()
        if not part.is_multipart()
    }


def decoded(header: str | None) -> str:
    return str(email.header.make_header(email.header.decode_header(header or "")))


def unfold(header: str) -> str:
    return header.replace("\r", "").replace("\n", "")


def test_email_batch_goes_over_one_smtp_connection_with_both_parts_and_headers(smtp):
    messages = [an_email(f"ada{i}@example.com", i) for i in range(1, 4)]
    results = DjangoEmailBackend().send_many(messages)

    assert [(r.status, r.provider_message_id) for r in results] == [
        (SENT, f"<d{i}.c42@mail.segmentor.example>") for i in range(1, 4)
    ]
    received = smtp.wait_for(3)
    assert len(set(smtp.connections)) == 1, "one connection for the batch"
    assert smtp.pipelined == [smtp.pipelining] * 3, "MAIL, RCPT and DATA in one write when the server allows it"
    first = received[0]
    assert first.get_content_type() == "multipart/alternative"
    assert parts(first) == {"text/plain": "Hello Ada, offer 1", "text/html": "<p>Hello <b>Ada</b>, offer 1</p>"}
    assert first["To"] == "ada1@example.com"
    assert decoded(first["From"]) == "Acme News <news@acme.example>"
    assert first["Reply-To"] == "help@acme.example"
    assert decoded(first["Subject"]) == "Grüße, your offer #1"
    assert first["Message-ID"] == "<d1.c42@mail.segmentor.example>"
    assert first["X-Segmentor-Campaign"] == "42"
    assert unfold(first["List-Unsubscribe"]) == (
        "<https://app.segmentor.example/u/token-1/>, <mailto:unsubscribe+1@segmentor.example>"
    )
    assert first["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_email_refused_recipient_is_permanent_and_the_batch_goes_on(smtp):
    results = DjangoEmailBackend().send_many(
        [
            an_email("ada@example.com", 1),
            an_email("refused@example.com", 2),
            an_email("greylisted@example.com", 3),
            an_email("bob@example.com", 4),
        ]
    )
    assert [r.status for r in results] == [SENT, PERMANENT, TRANSIENT, SENT]
    assert "550" in results[1].error and "451" in results[2].error
    received = smtp.wait_for(2)
    assert [m["To"] for m in received] == ["ada@example.com", "bob@example.com"]
    assert len(set(smtp.connections)) == 1


def test_email_with_a_header_injection_is_permanent(smtp):
    results = DjangoEmailBackend().send_many(
        [an_email("ada@example.com", 1, subject="Hi\nBcc: everyone@example.com"), an_email("bob@example.com", 2)]
    )
    assert [r.status for r in results] == [PERMANENT, SENT]


def test_email_html_only_is_one_html_part(smtp):
    DjangoEmailBackend().send_many([an_email("ada@example.com", text="", unsubscribe_mailto="")])
    [message] = smtp.wait_for(1)
    assert message.get_content_type() == "text/html"
    assert message["List-Unsubscribe"] == "<https://app.segmentor.example/u/token-1/>"


def test_email_when_the_smtp_server_is_down_every_message_is_transient(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()
    results = DjangoEmailBackend().send_many([an_email("ada@example.com", 1), an_email("bob@example.com", 2)])
    assert [r.status for r in results] == [TRANSIENT, TRANSIENT]
    assert "could not open" in results[0].error


# --- Console and file backends ---------------------------------------------------------------


def test_file_backend_writes_a_json_line_per_message_and_no_secrets(tmp_path):
    messages: list[OutgoingMessage] = [
        an_email("ada@example.com"),
        OutgoingSms(to="+4915112345678", text="hi"),
        OutgoingPush(tokens=("phone",), title="t", body="b"),
        OutgoingWebhook(url="https://hooks.example/x", payload={"a": 1}, secret="very-secret"),
    ]
    results = FileBackend(tmp_path / "outbox").send_many(messages)

    assert [r.status for r in results] == [SENT] * 4
    [batch] = (tmp_path / "outbox").iterdir()
    text = batch.read_text()
    assert "very-secret" not in text
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["channel"] for r in records] == ["email", "sms", "push", "webhook"]
    assert records[0]["provider_message_id"] == "<d1.c42@mail.segmentor.example>"
    assert records[1]["to"] == "+4915112345678"
    assert records[3]["payload"] == {"a": 1}


def test_console_backend_writes_json_lines():
    stream = io.StringIO()
    [result] = ConsoleBackend(stream).send_many([OutgoingSms(to="+4915112345678", text="hi")])
    assert result.status is SENT
    assert json.loads(stream.getvalue())["text"] == "hi"


# --- SMS length --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ("GSM-7", 0, 0)),
        ("Hello", ("GSM-7", 5, 1)),
        ("Grüße aus Köln! Ça va? ¿Qué tal? @£$¥", ("GSM-7", 37, 1)),
        ("a" * 160, ("GSM-7", 160, 1)),
        ("a" * 161, ("GSM-7", 161, 2)),
        ("a" * 306, ("GSM-7", 306, 2)),
        ("a" * 307, ("GSM-7", 307, 3)),
        ("Hi {name}", ("GSM-7", 11, 1)),  # { and } take two septets each
        ("€" * 80, ("GSM-7", 160, 1)),
        ("€" * 81, ("GSM-7", 162, 2)),
        # An escape sequence never straddles two parts: 306 septets but three segments.
        ("a" * 152 + "€" + "a" * 152, ("GSM-7", 306, 3)),
        ("Привет", ("UCS-2", 6, 1)),
        ("я" * 70, ("UCS-2", 70, 1)),
        ("я" * 71, ("UCS-2", 71, 2)),
        ("я" * 134, ("UCS-2", 134, 2)),
        ("я" * 135, ("UCS-2", 135, 3)),
        ("It’s here", ("UCS-2", 9, 1)),  # a curly apostrophe is not GSM-7
        ("Sale 🎉", ("UCS-2", 7, 1)),  # an emoji is two UTF-16 units
        ("🎉" * 35, ("UCS-2", 70, 1)),
        ("🎉" * 36, ("UCS-2", 72, 2)),
        # A surrogate pair never straddles two parts either.
        ("a" * 66 + "🎉" + "a" * 66, ("UCS-2", 134, 3)),
    ],
)
def test_sms_segments(text, expected):
    assert sms_segments(text) == expected
