"""Open pixel, click redirect, machine detection, unsubscribes and last-touch attribution."""

# ruff: noqa: F811

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from types import SimpleNamespace

import pytest
import time_machine
from django.test import Client

from analytics.models import Conversion, MessageEvent
from analytics.services import conversions_attribute
from analytics.tracking import click_token, machine_reason, open_token, read_click, read_open
from campaigns.models import Campaign, Delivery
from contacts.ingest import events_ingest
from contacts.models import Event, EventBacklog
from tests.campaigns.test_sending_channels import (
    SITE,
    body_parts,
    campaign_for,
    send_all,
    shop,  # noqa: F401
    subscriber,
    variant_for,
)

pytestmark = pytest.mark.django_db
BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko)"
T0 = dt.datetime(2026, 6, 1, 10, 0, tzinfo=dt.UTC)


def test_tokens_are_bound_to_tenant_delivery_and_url():
    token = click_token(1, 2, "https://shop.example/sale", is_cta=True)
    clicked = read_click(token)
    assert clicked is not None and (clicked.tenant_id, clicked.delivery_id, clicked.url, clicked.is_cta) == (
        1, 2, "https://shop.example/sale", True,
    )  # fmt: skip
    tenant, delivery, cta, url, signature = token.split(".")
    assert read_click(f"{tenant}.3.{cta}.{url}.{signature}") is None, "moved to another delivery"
    assert read_click(f"2.{delivery}.{cta}.{url}.{signature}") is None, "moved to another tenant"
    assert read_click(f"{tenant}.{delivery}.0.{url}.{signature}") is None, "CTA mark changed"
    evil = click_token(1, 2, "https://shop.example/sale", is_cta=True).split(".")
    evil[3] = "aHR0cHM6Ly9ldmlsLmV4YW1wbGU"  # https://evil.example
    assert read_click(".".join(evil)) is None, "another URL under the same signature"
    assert read_click(click_token(1, 2, "javascript:alert(1)", is_cta=False)) is None
    assert read_click("junk") is None and read_click("1.2.1.!!!.x") is None
    assert read_open(open_token(5, 6)) is not None and read_open("5.7." + open_token(5, 6).split(".")[2]) is None


@pytest.mark.parametrize(
    ("agent", "method", "after", "kind", "reason"),
    [
        (BROWSER, "GET", 3600, "open", ""),
        ("Mozilla/5.0", "GET", 3600, "open", "apple privacy proxy"),
        ("Mozilla/5.0 (compatible; Barracuda Sentinel)", "GET", 3600, "click", "security scanner"),
        (BROWSER, "HEAD", 3600, "click", "head request"),
        (BROWSER, "GET", 2, "click", "clicked within seconds of sending"),
        ("", "GET", 3600, "open", "no user agent"),
    ],
)
def test_machines_are_told_from_people(agent, method, after, kind, reason):
    assert machine_reason(user_agent=agent, method=method, seconds_after_send=after, kind=kind) == reason


@pytest.fixture
def sent(shop, smtp):
    ann = subscriber(shop, "ann", email="ann@example.com")
    campaign = campaign_for(shop, [ann], goal_event="purchase", attribution_window_hours=48)
    variant_for(
        campaign, subject="Sale", html_body='<p>Hi</p><a href="https://shop.example/blog">Blog</a> '
        '<a href="{{ cta.url }}">{{ cta.label }}</a>', cta_label="Buy", cta_url="https://shop.example/sale",
    )  # fmt: skip
    with time_machine.travel(T0, tick=False):
        rows = send_all(campaign)
    [message] = smtp.inbox.wait_for(1)
    html = body_parts(message)["text/html"]
    return SimpleNamespace(tenant=shop, campaign=campaign, ann=ann, delivery=rows[ann.pk], html=html)


def links(html: str) -> dict[str, str]:
    """Tracked path by original URL."""
    paths = re.findall(r'href="https?://[^/"]+(/r/c/[^"]+)"', html)
    return {read_click(p.split("/")[3]).url: p for p in paths}  # type: ignore[union-attr]


def test_a_person_opening_and_clicking_is_recorded_and_becomes_engagement(sent):
    ann, delivery, html = sent.ann, sent.delivery, sent.html
    pixel = re.search(rf'src="{SITE}(/r/o/[^"]+\.gif)"', html).group(1)  # type: ignore[union-attr]
    client = Client(HTTP_USER_AGENT=BROWSER)
    with time_machine.travel(T0 + dt.timedelta(hours=1), tick=False):
        response = client.get(pixel)
        client.get(pixel)  # a second open: a second row, no second contact event
    assert response.status_code == 200 and response["Content-Type"] == "image/gif"
    assert response["Cache-Control"].startswith("max-age=0")
    paths = links(html)
    assert set(paths) == {"https://shop.example/blog", "https://shop.example/sale"}
    with time_machine.travel(T0 + dt.timedelta(hours=2), tick=False):
        response = client.get(paths["https://shop.example/sale"])
    assert (response.status_code, response["Location"]) == (302, "https://shop.example/sale")
    rows = list(MessageEvent.objects.order_by("id").values_list("kind", "machine", "is_cta", "delivery_id"))
    assert rows == [
        ("open", "", False, delivery.pk),
        ("open", "", False, delivery.pk),
        ("click", "", True, delivery.pk),
    ]
    events = list(Event.objects.filter(contact=ann).order_by("id").values_list("name", "properties"))
    assert [name for name, _ in events] == ["email_open", "email_click"]
    assert events[1][1]["url"] == "https://shop.example/sale" and events[1][1]["cta"] is True
    assert EventBacklog.objects.count() == 2, "applied by a worker, not in the request"


def test_machines_are_recorded_apart_and_tampering_goes_nowhere(sent):
    ann, html = sent.ann, sent.html
    pixel = re.search(rf'src="{SITE}(/r/o/[^"]+\.gif)"', html).group(1)  # type: ignore[union-attr]
    with time_machine.travel(T0 + dt.timedelta(minutes=5), tick=False):
        Client(HTTP_USER_AGENT="Mozilla/5.0").get(pixel)
        Client(HTTP_USER_AGENT=BROWSER).head(links(html)["https://shop.example/blog"])
    assert list(MessageEvent.objects.order_by("id").values_list("kind", "machine")) == [
        ("open", "apple privacy proxy"), ("click", "head request"),
    ]  # fmt: skip
    assert not Event.objects.filter(contact=ann).exists()
    tampered = links(html)["https://shop.example/blog"].replace("/r/c/", "/r/c/9")
    assert Client().get(tampered).status_code == 404
    assert Client().get("/r/o/not-a-token.gif").status_code == 200, "the image, recording nothing"
    assert MessageEvent.objects.count() == 2


def test_opt_out_links_are_not_wrapped(sent):
    html = sent.html
    assert re.search(rf'href="{SITE}/u/[^"]+">Unsubscribe', html)
    assert re.search(rf'href="{SITE}/preferences/[^"]+"', html)


def test_tracking_can_be_switched_off(shop, smtp):
    ann = subscriber(shop, "ann", email="ann@example.com")
    campaign = campaign_for(shop, [ann], track_opens=False, track_clicks=False)
    variant_for(campaign, subject="Plain", html_body='<a href="https://shop.example/">Shop</a>')
    send_all(campaign)
    html = body_parts(smtp.inbox.wait_for(1)[0])["text/html"]
    assert '<a href="https://shop.example/">Shop</a>' in html and "/r/o/" not in html


def purchase(tenant, contact, at: dt.datetime, revenue: str = "80.00") -> int:
    with time_machine.travel(at, tick=False):
        [result] = events_ingest(
            tenant=tenant, events=[{"event": "purchase", "contact_id": contact.pk, "revenue": revenue}]
        )
    return result.id


def test_a_purchase_after_a_click_is_credited_to_that_message_once(sent):
    tenant, campaign, ann, delivery, html = sent.tenant, sent.campaign, sent.ann, sent.delivery, sent.html
    with time_machine.travel(T0 + dt.timedelta(hours=1), tick=False):
        Client(HTTP_USER_AGENT=BROWSER).get(links(html)["https://shop.example/sale"])
    inside = purchase(tenant, ann, T0 + dt.timedelta(hours=30))
    outside = purchase(tenant, ann, T0 + dt.timedelta(hours=60), revenue="10.00")
    assert conversions_attribute(tenant=tenant, event_ids=[inside, outside]) == 1
    assert conversions_attribute(tenant=tenant, event_ids=[inside]) == 0, "credited once"
    conversion = Conversion.objects.get()
    assert (conversion.event_id, conversion.delivery_id, conversion.campaign_id, conversion.touch) == (
        inside, delivery.pk, campaign.pk, "click",
    )  # fmt: skip
    assert conversion.revenue == Decimal("80.00")


def test_without_a_click_nothing_is_credited_unless_the_campaign_counts_deliveries(sent):
    tenant, campaign, ann = sent.tenant, sent.campaign, sent.ann
    event_id = purchase(tenant, ann, T0 + dt.timedelta(hours=3))
    assert conversions_attribute(tenant=tenant, event_ids=[event_id]) == 0
    Campaign.objects.filter(pk=campaign.pk).update(attribution_touch="delivery")
    assert conversions_attribute(tenant=tenant, event_ids=[event_id]) == 1
    assert Conversion.objects.get().touch == "delivery"


def test_the_last_touch_wins(shop, smtp):
    ann = subscriber(shop, "ann", email="ann@example.com")
    first = campaign_for(shop, [ann], goal_event="purchase", attribution_touch="delivery")
    second = campaign_for(shop, [ann], goal_event="purchase", attribution_touch="delivery")
    for campaign, at in ((first, T0), (second, T0 + dt.timedelta(hours=5))):
        variant_for(campaign, subject="Hi", html_body="<p>Hi</p>")
        with time_machine.travel(at, tick=False):
            send_all(campaign)
    event_id = purchase(shop, ann, T0 + dt.timedelta(hours=6))
    conversions_attribute(tenant=shop, event_ids=[event_id])
    assert Conversion.objects.get().campaign_id == second.pk


def test_an_unsubscribe_through_the_link_counts_against_the_campaign(sent, django_capture_on_commit_callbacks):
    campaign, delivery, html = sent.campaign, sent.delivery, sent.html
    path = re.search(rf'href="{SITE}(/u/[^"]+)">Unsubscribe', html).group(1)  # type: ignore[union-attr]
    with django_capture_on_commit_callbacks(execute=True):
        response = Client().post(path, {"List-Unsubscribe": "One-Click"})
    assert response.status_code in (200, 302)
    assert Delivery.objects.filter(pk=delivery.pk).exists()
    assert list(MessageEvent.objects.values_list("kind", "campaign_id")) == [("unsub", campaign.pk)]


def test_tracking_and_attribution_settings_round_trip_through_the_api_and_the_composer(world, api_a, alice_client):
    response = api_a.post(
        "/api/v1/campaigns/",
        {"name": "Quiet", "attribution_touch": "delivery", "track_opens": False, "track_clicks": True},
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["attribution_touch"], body["track_opens"], body["track_clicks"]) == ("delivery", False, True)
    bad = api_a.post("/api/v1/campaigns/", {"name": "Bad", "attribution_touch": "view"}, format="json")
    assert bad.status_code == 400 and "attribution_touch" in bad.json()["error"]["fields"]
    basics = {"name": "Form", "channel": "email", "purpose": "marketing", "goal_event": "purchase",
              "attribution_window_hours": "48", "attribution_touch": "delivery", "cost": "0",
              "throttle_per_minute": "0", "track_clicks": "on", "go": "next"}  # fmt: skip
    response = alice_client.post(f"/t/{world.tenant_a.slug}/campaigns/new/", basics)
    assert response.status_code == 302
    from tenants.context import tenant_context

    with tenant_context(world.tenant_a.id):
        campaign = Campaign.objects.get(name="Form")
    assert (campaign.attribution_touch, campaign.track_opens, campaign.track_clicks) == ("delivery", False, True)
