"""One-click unsubscribe (RFC 8058) and the preference centre, through real HTTP requests."""

from __future__ import annotations

import datetime as dt
import urllib.error
import urllib.request

import pytest
import time_machine
from django.core import signing
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from campaigns import optout
from campaigns.models import ContactPause
from contacts.consent import ConsentEvidence, consent_change, is_suppressed
from contacts.models import ConsentRecord, ConsentState, Contact
from contacts.privacy import contact_erase
from contacts.services import contact_upsert
from tenants.audit import Actor
from tenants.context import tenant_context
from tests.conftest import World

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("test")
ONE_CLICK = "List-Unsubscribe=One-Click"
FORM_URLENCODED = "application/x-www-form-urlencoded"
PURPOSES = ("marketing", "newsletter", "product_updates")


def make_subscriber(world: World, tenant: str = "a", email: str = "pat@example.com") -> Contact:
    t = world.tenant_a if tenant == "a" else world.tenant_b
    with tenant_context(t.id):
        t.postal_address = f"{t.name} Ltd\n1 High Street\nLondon"
        t.save(update_fields=["postal_address"])
        contact, _ = contact_upsert(tenant=t, data={"email": email, "phone": "+33612345678", "first_name": "Pat"})
        for channel in ("email", "sms"):
            for purpose in ("marketing", "newsletter"):
                consent_change(
                    contact=contact, channel=channel, purpose=purpose, status="granted",
                    evidence=ConsentEvidence(source="form"), actor=ACTOR,
                )  # fmt: skip
    return contact


@pytest.fixture
def pat(world: World) -> Contact:
    return make_subscriber(world)


def token_for(contact: Contact, channel: str = "email", purpose: str = "marketing", campaign_id: int | None = 7) -> str:
    return optout.unsubscribe_token(
        tenant_id=contact.tenant_id, contact_id=contact.pk, channel=channel, purpose=purpose, campaign_id=campaign_id
    )


def u_path(token: str) -> str:
    return reverse("optout_unsubscribe", kwargs={"token": token})


def prefs_path(token: str) -> str:
    return reverse("optout_preferences", kwargs={"token": token})


def state(contact: Contact, channel: str = "email", purpose: str = "marketing") -> str | None:
    with tenant_context(contact.tenant_id):
        row = ConsentState.objects.filter(contact=contact, channel=channel, purpose=purpose).first()
        return row.status if row else None


def records(contact: Contact) -> list[ConsentRecord]:
    with tenant_context(contact.tenant_id):
        return list(ConsentRecord.objects.filter(contact=contact).order_by("id"))


def suppressed(contact: Contact, channel: str = "email") -> bool:
    address = contact.email if channel == "email" else contact.phone
    with tenant_context(contact.tenant_id):
        return is_suppressed(tenant=contact.tenant, channel=channel, address=address)


def one_click(client: Client, token: str):
    """What a mailbox provider sends: a form POST with the RFC 8058 body, no cookie, no CSRF token."""
    return client.post(u_path(token), ONE_CLICK, content_type=FORM_URLENCODED, HTTP_USER_AGENT="Mailbox/1.0")


def tampered(token: str) -> str:
    return token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")


# --- the unsubscribe link --------------------------------------------------------------------------
def test_get_shows_a_button_and_changes_nothing(pat):
    before = records(pat)
    client = Client(enforce_csrf_checks=True)
    for _ in range(3):  # a link scanner may fetch it several times
        response = client.get(u_path(token_for(pat)))
        assert response.status_code == 200
    assert client.head(u_path(token_for(pat))).status_code == 200
    page = response.content.decode()
    assert 'method="post"' in page and "Unsubscribe</button>" in page and "Tenant A" in page
    assert "1 High Street" in page  # the sender's postal address (CAN-SPAM)
    assert records(pat) == before and state(pat) == "granted" and not suppressed(pat)
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]


def test_one_click_post_withdraws_and_suppresses_for_the_next_send(pat):
    client = Client(enforce_csrf_checks=True, REMOTE_ADDR="198.51.100.7")
    response = one_click(client, token_for(pat))
    assert response.status_code == 200
    assert "You are unsubscribed" in response.content.decode()
    assert not response.cookies  # nothing to remember: the token is the credential
    assert state(pat) == "withdrawn"
    assert suppressed(pat)  # the send-time check sees it at once
    record = records(pat)[-1]
    assert (record.status, record.source, record.channel, record.purpose) == (
        "withdrawn", "unsubscribe_link", "email", "marketing",
    )  # fmt: skip
    assert (record.ip_address, record.user_agent, record.wording) == (
        "198.51.100.7", "Mailbox/1.0", "List-Unsubscribe one-click",
    )  # fmt: skip
    # Only what the link names: other purposes keep their state in the ledger.
    assert state(pat, purpose="newsletter") == "granted" and state(pat, "sms") == "granted"


def test_any_post_unsubscribes_and_a_second_click_changes_nothing(pat):
    client = Client()
    token = token_for(pat)
    first = client.post(u_path(token))  # the page's own button, or a provider sending an empty body
    assert first.status_code == 200 and state(pat) == "withdrawn"
    after_first = records(pat)
    assert after_first[-1].wording == "Unsubscribe page button"
    second = one_click(client, token)
    assert second.status_code == 200 and "You are unsubscribed" in second.content.decode()
    assert "already unsubscribed" in second.content.decode()
    assert records(pat) == after_first
    again = client.get(u_path(token))
    assert "already unsubscribed" in again.content.decode() and "<button" not in again.content.decode()


def test_the_service_is_idempotent_too(pat):
    token = token_for(pat)
    assert optout.unsubscribe(token, ip=None, user_agent="").changed is True
    assert optout.unsubscribe(token, ip=None, user_agent="").changed is False
    assert len([r for r in records(pat) if r.status == "withdrawn"]) == 1


def test_links_never_expire(pat):
    token = token_for(pat)
    with time_machine.travel(timezone.now() + dt.timedelta(days=5 * 365)):
        assert one_click(Client(), token).status_code == 200
    assert state(pat) == "withdrawn"


@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize("page", ["unsubscribe", "preferences"])
def test_a_tampered_or_made_up_token_is_refused_with_a_clear_page(pat, method, page):
    path = u_path if page == "unsubscribe" else prefs_path
    genuine = token_for(pat)
    payload, timestamp, signature = genuine.split(".")
    for bad in (tampered(genuine), "nonsense", f"{payload}.{timestamp}", f"{payload}..{signature}"):
        response = getattr(Client(), method)(path(bad), {"action": "unsubscribe_all"})
        assert response.status_code == 400, bad
        assert "This link cannot be used" in response.content.decode()
    assert state(pat) == "granted" and not suppressed(pat)


def test_another_tenants_contact_cannot_be_reached_by_editing_the_token(world, pat):
    charlie_contact = make_subscriber(world, "b", email="carol@example.com")
    genuine = token_for(pat)
    _, timestamp, signature = genuine.split(".")
    # Swap in B's tenant and contact, keep A's signature.
    forged_payload = signing.b64_encode(
        signing.JSONSerializer().dumps([charlie_contact.tenant_id, charlie_contact.pk, "email", "marketing"])
    ).decode()
    forged = f"{forged_payload}.{timestamp}.{signature}"
    assert one_click(Client(), forged).status_code == 400
    # A token signed for another purpose of the project (its own salt) is no key either.
    other_salt = signing.TimestampSigner(salt="contacts.consent.confirm", sep=".").sign_object(
        [charlie_contact.tenant_id, charlie_contact.pk, "email", "marketing"]
    )
    assert one_click(Client(), other_salt).status_code == 400
    # Even a genuine signature over a mismatched pair (A's tenant, B's contact) finds nothing:
    # the lookup runs inside the token's tenant, under row-level security.
    mismatched = optout.unsubscribe_token(
        tenant_id=pat.tenant_id, contact_id=charlie_contact.pk, channel="email", purpose="marketing"
    )
    response = one_click(Client(), mismatched)
    assert response.status_code == 200 and "no messages" in response.content.decode()
    assert state(charlie_contact) == "granted" and not suppressed(charlie_contact)
    assert "carol" not in response.content.decode() and "Tenant B" not in response.content.decode()


def test_an_erased_contact_gets_a_clear_page_not_an_error(pat):
    with tenant_context(pat.tenant_id):
        contact_erase(contact=pat, actor=ACTOR)
    token = token_for(pat)
    for response in (Client().get(u_path(token)), one_click(Client(), token), Client().get(prefs_path(token))):
        assert response.status_code == 200
        assert "no messages" in response.content.decode()


# --- the preference centre -------------------------------------------------------------------------
def test_the_preference_centre_shows_every_channel_and_purpose(pat):
    response = Client().get(prefs_path(token_for(pat)))
    assert response.status_code == 200
    page = response.content.decode()
    for channel in ("email", "sms", "push"):
        assert f'data-testid="channel-{channel}"' in page
        for purpose in PURPOSES:
            assert f'data-testid="state-{channel}-{purpose}"' in page
    assert 'data-testid="state-email-marketing">Subscribed<' in page
    assert 'data-testid="state-email-product_updates">Not subscribed<' in page
    assert "p•••@example.com" in page and "pat@example.com" not in page
    assert "Tenant A" in page and "1 High Street" in page
    assert "We have no Push address for you" in page


def _csrf_client(token: str) -> tuple[Client, str]:
    client = Client(enforce_csrf_checks=True)
    client.get(prefs_path(token))
    return client, client.cookies["csrftoken"].value


def test_preference_centre_posts_need_a_csrf_token(pat):
    token = token_for(pat)
    assert Client(enforce_csrf_checks=True).post(prefs_path(token), {"action": "unsubscribe_all"}).status_code == 403
    assert state(pat) == "granted"


def test_toggles_write_ledger_rows_from_the_preference_centre(pat):
    token = token_for(pat)
    client, csrf = _csrf_client(token)
    form = {"csrfmiddlewaretoken": csrf, "action": "set", "channel": "email", "purpose": "newsletter"}
    response = client.post(prefs_path(token), {**form, "status": "withdrawn"}, REMOTE_ADDR="203.0.113.5")
    assert response.status_code == 302 and response["Location"].endswith("?saved=changed")
    assert state(pat, purpose="newsletter") == "withdrawn"
    record = records(pat)[-1]
    assert (record.source, record.status, record.ip_address) == ("preference_centre", "withdrawn", "203.0.113.5")
    assert not suppressed(pat)  # a toggle is not an unsubscribe of the whole address
    count = len(records(pat))
    again = client.post(prefs_path(token), {**form, "status": "withdrawn"})
    assert again["Location"].endswith("?saved=unchanged") and len(records(pat)) == count
    # Opt in to something never asked, on another channel.
    client.post(prefs_path(token), {**form, "channel": "sms", "purpose": "product_updates", "status": "granted"})
    assert state(pat, "sms", "product_updates") == "granted"
    assert records(pat)[-1].source == "preference_centre"
    page = client.get(prefs_path(token) + "?saved=changed").content.decode()
    assert "Your choice is saved." in page and 'data-testid="state-sms-product_updates">Subscribed<' in page


def test_opting_back_in_lifts_the_unsubscribe_suppression(pat):
    token = token_for(pat)
    one_click(Client(), token)
    assert suppressed(pat)
    client, csrf = _csrf_client(token)
    client.post(
        prefs_path(token),
        {"csrfmiddlewaretoken": csrf, "action": "set", "channel": "email", "purpose": "marketing", "status": "granted"},
    )
    assert state(pat) == "granted" and not suppressed(pat)
    assert records(pat)[-1].source == "preference_centre"


def test_bad_choices_are_refused(pat):
    token = token_for(pat)
    client, csrf = _csrf_client(token)
    for form in (
        {"action": "set", "channel": "pigeon", "purpose": "marketing", "status": "granted"},
        {"action": "set", "channel": "email", "purpose": "spam", "status": "granted"},
        {"action": "set", "channel": "email", "purpose": "marketing", "status": "pending"},
        {"action": "explode"},
    ):
        assert client.post(prefs_path(token), {"csrfmiddlewaretoken": csrf, **form}).status_code == 400, form
    assert len(records(pat)) == 4


def test_pause_for_30_days_and_resume(pat):
    token = token_for(pat)
    client, csrf = _csrf_client(token)
    now = timezone.now()
    response = client.post(prefs_path(token), {"csrfmiddlewaretoken": csrf, "action": "pause"})
    assert response["Location"].endswith("?saved=paused")
    with tenant_context(pat.tenant_id):
        pause = ContactPause.objects.get(contact=pat)
        assert dt.timedelta(days=30) <= pause.until - now < dt.timedelta(days=30, minutes=1)
        assert optout.is_paused(pat.pk, now + dt.timedelta(days=29))
        assert not optout.is_paused(pat.pk, now + dt.timedelta(days=31))
    assert "Messages are paused until" in client.get(prefs_path(token)).content.decode()
    assert state(pat) == "granted"  # a pause is not a withdrawal
    client.post(prefs_path(token), {"csrfmiddlewaretoken": csrf, "action": "pause"})  # pausing again extends
    with tenant_context(pat.tenant_id):
        assert ContactPause.objects.filter(contact=pat).count() == 1
    client.post(prefs_path(token), {"csrfmiddlewaretoken": csrf, "action": "resume"})
    with tenant_context(pat.tenant_id):
        assert not optout.is_paused(pat.pk, timezone.now())


def test_a_pause_is_invisible_to_other_tenants(world, pat):
    optout.pause_start(token_for(pat))
    with tenant_context(world.tenant_b.id):
        assert not optout.is_paused(pat.pk, timezone.now())
        assert not ContactPause.objects.exists()


def test_unsubscribe_from_all(pat):
    token = token_for(pat)
    client, csrf = _csrf_client(token)
    response = client.post(prefs_path(token), {"csrfmiddlewaretoken": csrf, "action": "unsubscribe_all"})
    assert response["Location"].endswith("?saved=all")
    for channel in ("email", "sms", "push"):
        for purpose in PURPOSES:
            assert state(pat, channel, purpose) == "withdrawn", (channel, purpose)
    assert suppressed(pat, "email") and suppressed(pat, "sms")
    assert {r.source for r in records(pat) if r.status == "withdrawn"} == {"unsubscribe_link"}
    count = len(records(pat))
    client.post(prefs_path(token), {"csrfmiddlewaretoken": csrf, "action": "unsubscribe_all"})
    assert len(records(pat)) == count
    assert "You are unsubscribed from everything" in client.get(prefs_path(token) + "?saved=all").content.decode()


# --- headers ---------------------------------------------------------------------------------------
def test_list_unsubscribe_headers(pat, settings):
    settings.SITE_URL = "https://app.segmentor.example"
    token = token_for(pat)
    headers = optout.list_unsubscribe_headers(token, "bounce.example.com")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # A signed token is longer than an address's local part may be (64): only the https link.
    assert headers["List-Unsubscribe"] == f"<https://app.segmentor.example/u/{token}/>"
    assert optout.unsubscribe_url(token) == f"https://app.segmentor.example/u/{token}/"
    assert optout.preferences_url(token) == f"https://app.segmentor.example/preferences/{token}/"
    short = optout.list_unsubscribe_headers("abc.def.ghi", "bounce.example.com")
    assert short["List-Unsubscribe"] == (
        "<https://app.segmentor.example/u/abc.def.ghi/>, <mailto:unsubscribe+abc.def.ghi@bounce.example.com>"
    )
    assert optout.list_unsubscribe_headers("abc.def.ghi", None)["List-Unsubscribe"].count("<") == 1


def test_a_token_round_trips_and_is_url_and_address_safe(pat):
    token = token_for(pat, channel="sms", purpose="newsletter", campaign_id=42)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    link = optout.optout_link_load(token)
    assert link == optout.OptOutLink(pat.tenant_id, pat.pk, "sms", "newsletter", 42)
    assert optout.optout_link_load(token_for(pat, campaign_id=None)).campaign_id is None


# --- a real mailbox provider -----------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_a_mailbox_provider_one_click_post_over_real_http(world, live_server):
    pat = make_subscriber(world)
    url = live_server.url + u_path(token_for(pat))
    request = urllib.request.Request(
        url, data=ONE_CLICK.encode(), method="POST",
        headers={"Content-Type": FORM_URLENCODED, "User-Agent": "Mailbox-One-Click/1.0"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        assert "Set-Cookie" not in response.headers
        assert "You are unsubscribed" in response.read().decode()
    assert state(pat) == "withdrawn" and suppressed(pat)
    assert records(pat)[-1].user_agent == "Mailbox-One-Click/1.0"
    # The provider may retry: still 200, still one withdrawal.
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    assert len([r for r in records(pat) if r.status == "withdrawn"]) == 1
    # A scanner's GET over HTTP changes nothing either way; a forged token is a 400.
    forged = urllib.request.Request(live_server.url + u_path(tampered(token_for(pat))), data=b"", method="POST")
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(forged, timeout=10)
    assert error.value.code == 400
