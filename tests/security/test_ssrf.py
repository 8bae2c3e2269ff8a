"""Outbound requests a tenant can aim (webhooks, SMS and push providers, its own SMTP server) reach
only public addresses: every spelling of a private one, names that resolve to one, redirects, and
DNS answers that change between the check and the connection.

tests/campaigns/test_channels.py holds the guard's own cases (ranges, redirects, the address it
checked). Here: the address spellings a parser may read differently, DNS tricks with a resolver
we control, and every place a tenant's URL or host is used, end to end, with a local server
listening where the request must not arrive.
"""

# Fixtures shared between these modules are imported by name, which pytest needs and ruff flags.
# ruff: noqa: F811
from __future__ import annotations

import socket
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from campaigns.channels.http import RequestFailed, RequestRefused, RetryPolicy, checked_addresses
from campaigns.models import ChannelConfig
from campaigns.services import campaign_send_test
from journeys.models import Enrollment, Step, WebhookNotice
from journeys.notices import notices_post
from tenants.audit import Actor
from tests.campaigns.test_channels import SMS_PATH, Provider, Reply, provider, quick_http  # noqa: F401
from tests.campaigns.test_sending_channels import campaign_for, send_all, shop, subscriber, variant_for  # noqa: F401
from tests.mail import SmtpSink

pytestmark = pytest.mark.django_db

# 127.0.0.1 in the forms a resolver, a URL parser or a kernel also reads as loopback.
LOOPBACK_SPELLINGS = [
    "0177.0.0.1", "0x7f.0.0.1", "0x7f000001", "2130706433", "017700000001", "127.1", "127.0.1", "127.000.000.001",
    "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[0:0:0:0:0:ffff:127.0.0.1]", "localhost", "LOCALHOST", "localhost.",
    "127.0.0.1.", "0.0.0.0", "0", "[::]",  # noqa: S104 - addresses under test, not a bind "[::1]", "[0:0:0:0:0:0:0:1]",
]  # fmt: skip
# Cloud metadata services and other private ranges, plainly and in disguise.
METADATA_AND_PRIVATE = [
    "169.254.169.254", "0xa9fea9fe", "2852039166", "0251.0376.0251.0376", "169.254.169.254.",
    "[::ffff:169.254.169.254]", "[::ffff:a9fe:a9fe]", "[64:ff9b::a9fe:a9fe]", "[2002:a9fe:a9fe::]",
    "[fd00:ec2::254]", "[fd00::1]", "[fe80::1]", "[fe80::1%25lo]", "100.100.100.200", "192.168.0.1",
    "10.0.0.1", "172.16.0.1", "192.0.0.192",
]  # fmt: skip


def no_request_arrives(provider: Provider, url: str) -> str:
    """Send a POST to ``url`` with no host allowed; return why it was refused (nothing may arrive)."""
    try:
        quick_http().request("POST", url, body=b"{}")
    except RequestRefused as refused:
        reason = str(refused)
    except RequestFailed as failed:
        assert not failed.reached_server, (url, failed)
        reason = str(failed)
    else:
        raise AssertionError(f"{url} was requested")
    assert provider.requests == [], url
    return reason


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_every_spelling_of_loopback_is_refused(provider, settings, host: str):
    provider.reply("/hook", Reply(200))
    settings.OUTBOUND_HTTP_ALLOWED_HOSTS = []
    reason = no_request_arrives(provider, f"http://{host}:{provider.port}/hook")
    assert "not a public internet address" in reason or "resolve" in reason, reason


@pytest.mark.parametrize("host", [h for h in LOOPBACK_SPELLINGS if h != "127.0.0.1."])  # the same name, rooted
def test_allowing_127_0_0_1_allows_no_other_spelling_of_it(provider, host: str):
    provider.reply("/hook", Reply(200))  # the fixture allows exactly 127.0.0.1:<port>
    no_request_arrives(provider, f"http://{host}:{provider.port}/hook")


@pytest.mark.parametrize("host", METADATA_AND_PRIVATE)
def test_metadata_and_private_addresses_are_refused_in_every_form(settings, host: str):
    settings.OUTBOUND_HTTP_ALLOWED_HOSTS = []
    with pytest.raises((RequestRefused, RequestFailed)) as refused:
        quick_http().request("GET", f"http://{host}/latest/meta-data/iam/security-credentials/")
    if isinstance(refused.value, RequestFailed):
        assert not refused.value.reached_server
    else:
        assert "not a public internet address" in str(refused.value)


@pytest.mark.parametrize(
    "template",
    [
        "http://public.example@127.0.0.1:{port}/hook",
        "http://127.0.0.1:{port}#@public.example/hook",
        "http://127.0.0.1:{port}\\@public.example/hook",
        "http://public.example:80@127.0.0.1:{port}/hook",
        "http://127.0.0.1:{port}?@public.example/hook",
        "http://[::ffff:127.0.0.1]:{port}\\@public.example/hook",
    ],
)
def test_urls_that_parsers_read_differently_are_judged_by_where_the_socket_goes(provider, settings, template):
    provider.reply("/hook", Reply(200))
    settings.OUTBOUND_HTTP_ALLOWED_HOSTS = ["public.example:80"]
    no_request_arrives(provider, template.format(port=provider.port))


# --- DNS -------------------------------------------------------------------------------------------
class Resolver:
    """Answers for names we choose (in order, the last repeating); counts every lookup."""

    def __init__(self, monkeypatch: Any, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []
        real = socket.getaddrinfo

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            name = host.decode() if isinstance(host, bytes) else str(host)
            if name not in self.answers:
                return real(host, port, *args, **kwargs)
            self.lookups.append(name)
            queue = self.answers[name]
            addresses = queue.pop(0) if len(queue) > 1 else queue[0]
            return [
                (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, int(port or 0)) if ":" not in a else (a, int(port or 0), 0, 0))
                for a in addresses
            ]  # fmt: skip

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "169.254.169.254", "::1", "::ffff:10.0.0.1", "fd00::1"])
def test_a_name_that_resolves_to_a_private_address_is_refused(provider, settings, monkeypatch, address: str):
    Resolver(monkeypatch, {"hooks.tenant.example": [[address]]})
    settings.OUTBOUND_HTTP_ALLOWED_HOSTS = []
    reason = no_request_arrives(provider, f"http://hooks.tenant.example:{provider.port}/hook")
    assert address not in reason, "the address stays out of the message a tenant sees"


def test_dns_rebinding_cannot_swap_the_address_after_the_check(provider, settings, monkeypatch):
    """First answer public, every later one loopback: the socket goes to the address that was checked."""
    resolver = Resolver(monkeypatch, {"rebind.example": [["203.0.113.1", "93.184.215.14"], ["127.0.0.1"]]})
    settings.OUTBOUND_HTTP_ALLOWED_HOSTS = []
    provider.reply("/hook", Reply(200))
    # One lookup per connection, and the socket opens to what it returned (a public address, which
    # is unreachable from here), never to a second lookup's answer: only one lookup happens.
    with pytest.raises(RequestRefused):  # 203.0.113.1 is documentation space: the whole answer is refused
        checked_addresses("rebind.example", provider.port)
    resolver.answers["rebind.example"] = [["93.184.215.14"], ["127.0.0.1"]]
    resolver.lookups.clear()
    with pytest.raises(RequestFailed) as failed:
        quick_http(retry=RetryPolicy(retries=0)).request(
            "POST", f"http://rebind.example:{provider.port}/hook", body=b"{}"
        )
    assert not failed.value.reached_server and resolver.lookups == ["rebind.example"]
    assert provider.requests == [], "the second answer (loopback) was never used"
    # A retry resolves again and checks again: the answer that turned private is refused.
    with pytest.raises(RequestRefused):
        quick_http(retry=RetryPolicy(retries=0)).request(
            "POST", f"http://rebind.example:{provider.port}/hook", body=b"{}"
        )
    assert provider.requests == []


def test_a_redirect_to_a_name_that_resolves_inside_is_refused(provider, settings, monkeypatch):
    Resolver(monkeypatch, {"internal.example": [["127.0.0.1"]]})
    provider.reply("/hook", Reply(307, headers={"Location": f"http://internal.example:{provider.port}/admin"}))
    provider.reply("/admin", Reply(200))
    with pytest.raises(RequestRefused):
        quick_http().request("POST", f"{provider.url}/hook", body=b"{}")
    assert [r.path for r in provider.requests] == ["/hook"]


# --- every place a tenant's URL is used ----------------------------------------------------------------
@pytest.fixture
def closed(settings, provider):
    """The provider listens on 127.0.0.1, and no private host is allowed."""
    settings.OUTBOUND_HTTP_ALLOWED_HOSTS = []
    provider.reply("/hook", Reply(200))
    provider.reply(SMS_PATH, Reply.json(201, {"sid": "SM1"}))
    return provider


def test_a_webhook_campaign_to_a_private_url_fails_with_the_reason(shop, closed):
    ChannelConfig.objects.create(tenant=shop, channel="webhook", backend="webhook", secret="whsec-1")
    ann = subscriber(shop, "ann", channels=[], email="ann@example.com")
    campaign = campaign_for(shop, [ann], channel="webhook", webhook_url=f"http://0x7f000001:{closed.port}/hook")
    variant_for(campaign, webhook_payload='{"who": "{{ contact.first_name }}"}')
    rows = send_all(campaign)
    assert rows[ann.pk].status == "failed" and "not a public internet address" in rows[ann.pk].error
    # The test send takes any URL as its recipient: the same guard.
    result = campaign_send_test(
        campaign=campaign, variant=campaign.variants.get(), contact=ann, to=f"http://[::1]:{closed.port}/hook",
        actor=Actor.system("test"),
    )  # fmt: skip
    assert result.status == "failed_permanent" and "not a public internet address" in result.error
    assert closed.requests == []


def test_sms_and_push_providers_at_private_addresses_are_refused(shop, closed):
    ChannelConfig.objects.create(
        tenant=shop, channel="sms", backend="twilio", secret="tok",
        settings={
            "base_url": f"http://127.1:{closed.port}/2010-04-01", "account_sid": "AC123", "sender": "+15550001111"
        },
    )  # fmt: skip
    ChannelConfig.objects.create(
        tenant=shop, channel="push", backend="fcm", secret="srv", settings={"base_url": "http://169.254.169.254/v1"}
    )
    ann = subscriber(shop, "ann", channels=["sms", "push"], phone="+4915112345678", push_tokens=["t1"])
    with time_machine.travel("2026-06-10 10:00Z"):
        for channel, content in (("sms", {"sms_body": "Hi"}), ("push", {"push_title": "Hi"})):
            campaign = campaign_for(shop, [ann], channel=channel)
            variant_for(campaign, **content)
            row = send_all(campaign)[ann.pk]
            assert row.status == "failed" and "not a public internet address" in row.error, (channel, row.error)
    assert closed.requests == []


def test_a_journey_webhook_to_a_private_url_fails_with_the_reason(world, shop, closed):
    from tests.isolation.walk import object_ids

    ids = object_ids(world, "a")
    ChannelConfig.objects.filter(tenant=shop, channel="webhook").update(secret="whsec-1")
    enrollment = Enrollment.objects.get(pk=ids["enrollment_id"])
    notice = WebhookNotice.objects.create(
        tenant=shop, enrollment=enrollment, step=Step.objects.get(version=enrollment.version, key="s1"), seq=1,
        url=f"http://[::ffff:127.0.0.1]:{closed.port}/hook", payload={"x": 1}, next_attempt_at=timezone.now(),
    )  # fmt: skip
    assert notices_post(tenant=shop) == 1
    notice.refresh_from_db()
    assert notice.status == "failed" and "not a public internet address" in notice.error
    assert closed.requests == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0x7f000001", "::1"])
def test_a_tenants_smtp_server_at_a_private_address_is_refused(shop, settings, host: str):
    """A tenant's own SMTP host is an outbound connection like any other (Redis, a relay, metadata...)."""
    with SmtpSink() as sink:
        ChannelConfig.objects.create(
            tenant=shop, channel="email", backend="django_email", secret="pw",
            settings={"host": host, "port": sink.port, "use_tls": False},
        )  # fmt: skip
        ann = subscriber(shop, "ann", email="ann@example.com")
        settings.OUTBOUND_HTTP_ALLOWED_HOSTS = []
        campaign = campaign_for(shop, [ann], sender_name="Shop")
        variant_for(campaign, subject="Hi", html_body="<p>Hi</p>")
        row = send_all(campaign)[ann.pk]
        assert row.status == "failed" and "not a public internet address" in row.error, row.error
        assert sink.inbox.messages == []
        # The same server, allowed by name and port (tests, development): the message goes out.
        settings.OUTBOUND_HTTP_ALLOWED_HOSTS = [f"{host if ':' not in host else f'[{host}]'}:{sink.port}"]
        again = campaign_for(shop, [ann], sender_name="Shop")
        variant_for(again, subject="Hi", html_body="<p>Hi</p>")
        if host in ("127.0.0.1", "localhost"):
            assert send_all(again)[ann.pk].status == "sent"
            assert len(sink.inbox.wait_for(1)) == 1
