"""Authentication against an attacker: guessing passwords, stolen sessions, revoked keys.

- Failed logins lock out, through the real login form: per account (whatever the address the
  guesses come from) and per address (whatever the accounts), a spoofed X-Forwarded-For
  changes nothing, and the right password is refused while locked; the lock ends with its window.
- The admin has no login of its own: it sends people through the same form (same lockout, same
  second factor).
- Changing or resetting the password signs out every other session of the user; so does
  deactivating the user; a removed member loses the workspace on the next request.
- An API key works until it is revoked and not one request after, however warm.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

import pytest
import time_machine
from allauth.account.models import EmailAddress
from allauth.mfa.totp.internal.auth import format_hotp_value, hotp_value
from django.core import mail
from django.test import Client
from rest_framework.test import APIClient

from tenants.context import platform_access, tenant_context
from tenants.models import ApiKey, Membership, User
from tests.conftest import World, api_client
from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db
NEW_PASSWORD = "another-horse-battery-staple"
_ADDRESSES = iter(range(1, 250))


@pytest.fixture(autouse=True)
def own_cache(settings):
    """Failed-login counts in a cache of this module's own: other test files clear the shared one mid-run."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "auth"}}


def fresh_address() -> str:
    """A client address no earlier test used (the lockout counts live in the shared cache)."""
    return f"203.0.{next(_ADDRESSES)}.{int(time.time()) % 250 + 1}"


def login(email: str, password: str = PASSWORD, *, address: str | None = None, **headers: Any) -> tuple[Client, Any]:
    client = Client(REMOTE_ADDR=address or fresh_address(), **headers)
    return client, client.post("/accounts/login/", {"login": email, "password": password})


def signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def locked(response: Any) -> bool:
    return response.status_code == 429 or "Too many failed login attempts" in response.content.decode()


def unique_user() -> User:
    return UserFactory(email=f"target-{time.time_ns()}@example.com")


def test_five_wrong_passwords_lock_the_account_from_any_address():
    user = unique_user()
    for _ in range(5):
        client, response = login(user.email, "wrong-password")  # each guess from another address
        assert response.status_code == 200 and not signed_in(client) and not locked(response)
    client, response = login(user.email)  # the right password, from yet another address
    assert locked(response) and not signed_in(client)
    other = unique_user()
    client, response = login(other.email)
    assert signed_in(client), "another account is not locked"


def test_ten_failures_from_one_address_lock_that_address_for_every_account():
    address = fresh_address()
    for _ in range(10):
        login(unique_user().email, "wrong-password", address=address)  # a spray: one guess per account
    victim = unique_user()
    client, response = login(victim.email, address=address)
    assert locked(response) and not signed_in(client)
    client, response = login(victim.email, address=fresh_address())
    assert signed_in(client), "the account itself is not locked"


def test_a_spoofed_forwarded_for_header_does_not_reset_the_count():
    address = fresh_address()
    for i in range(10):
        login(unique_user().email, "wrong-password", address=address, HTTP_X_FORWARDED_FOR=f"198.51.100.{i}")
    client, response = login(unique_user().email, address=address, HTTP_X_FORWARDED_FOR="198.51.100.200")
    assert locked(response) and not signed_in(client)


def test_behind_a_trusted_proxy_each_client_is_counted_on_its_own(settings):
    settings.ALLAUTH_TRUSTED_PROXY_COUNT = 1
    proxy, attacker = fresh_address(), fresh_address()
    for _ in range(10):
        login(unique_user().email, "wrong-password", address=proxy, HTTP_X_FORWARDED_FOR=attacker)
    client, response = login(unique_user().email, address=proxy, HTTP_X_FORWARDED_FOR=attacker)
    assert locked(response)
    client, response = login(unique_user().email, address=proxy, HTTP_X_FORWARDED_FOR=fresh_address())
    assert signed_in(client), "the other people behind the same proxy can still sign in"


def test_the_lock_ends_with_its_window():
    user = unique_user()
    start = dt.datetime.now(dt.UTC)
    with time_machine.travel(start, tick=False):
        for _ in range(5):
            login(user.email, "wrong-password")
        assert locked(login(user.email)[1])
    with time_machine.travel(start + dt.timedelta(minutes=5, seconds=1), tick=False):
        client, _ = login(user.email)
        assert signed_in(client)


def test_the_admin_login_is_the_accounts_login_with_its_lockout_and_second_factor():
    staff = UserFactory(email=f"staff-{time.time_ns()}@platform.example", is_staff=True, is_superuser=True)
    anonymous = Client(REMOTE_ADDR=fresh_address())
    response = anonymous.post("/admin/login/?next=/admin/", {"username": staff.email, "password": PASSWORD})
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert not signed_in(anonymous), "no password is checked by the admin's own form"
    for _ in range(5):
        anonymous.post("/admin/login/", {"username": staff.email, "password": "wrong"})
    client, response = login(staff.email)
    assert signed_in(client), "posts to the admin login are not attempts at all"
    # With TOTP on, the admin is reached only after the second factor.
    EmailAddress.objects.create(user=staff, email=staff.email, verified=True, primary=True)
    from allauth.mfa.totp.internal.auth import TOTP

    secret = "JBSWY3DPEHPK3PXP"
    TOTP.activate(staff, secret)
    second, response = login(staff.email)
    assert response["Location"] == "/accounts/2fa/authenticate/" and not signed_in(second)
    assert second.get("/admin/")["Location"].startswith("/admin/login/")
    code = format_hotp_value(hotp_value(secret, int(time.time()) // 30))
    assert second.post("/accounts/2fa/authenticate/", {"code": code}).status_code == 302
    assert second.get("/admin/").status_code == 200


def test_a_signed_in_member_who_is_not_staff_gets_no_admin_login_form(world: World, alice_client: Client):
    assert alice_client.get("/admin/login/").status_code == 403


# --- sessions -----------------------------------------------------------------------------------------
def two_sessions(user: User) -> tuple[Client, Client]:
    first, _ = login(user.email)
    second, _ = login(user.email)
    assert signed_in(first) and signed_in(second)
    return first, second


def test_changing_the_password_signs_out_every_other_session(world: World):
    here, elsewhere = two_sessions(world.alice)
    slug = world.tenant_a.slug
    response = here.post(
        "/accounts/password/change/", {"oldpassword": PASSWORD, "password1": NEW_PASSWORD, "password2": NEW_PASSWORD}
    )
    assert response.status_code == 302
    assert here.get(f"/t/{slug}/").status_code == 200, "the session that changed it stays"
    gone = elsewhere.get(f"/t/{slug}/")
    assert gone.status_code == 302 and gone["Location"].startswith("/accounts/login/")
    assert not signed_in(elsewhere)


def test_resetting_the_password_signs_out_every_session(world: World):
    here, elsewhere = two_sessions(world.alice)
    Client().post("/accounts/password/reset/", {"email": world.alice.email})
    link = re.search(r"http://testserver(/accounts/password/reset/key/\S+)", mail.outbox[-1].body).group(1)
    browser = Client()
    form_url = browser.get(link)["Location"]  # allauth moves the key out of the URL first
    response = browser.post(form_url, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert response.status_code == 302
    for client in (here, elsewhere):
        assert client.get(f"/t/{world.tenant_a.slug}/")["Location"].startswith("/accounts/login/")
    assert signed_in(login(world.alice.email, NEW_PASSWORD)[0])


def test_a_deactivated_user_is_signed_out_at_once(world: World):
    here, _ = two_sessions(world.alice)
    User.objects.filter(pk=world.alice.pk).update(is_active=False)
    assert here.get(f"/t/{world.tenant_a.slug}/")["Location"].startswith("/accounts/login/")
    assert not signed_in(login(world.alice.email)[0])


def test_a_removed_member_loses_the_workspace_on_the_next_request(world: World, bob_client: Client):
    url = f"/t/{world.tenant_a.slug}/contacts/"
    assert bob_client.get(url).status_code == 200
    with tenant_context(world.tenant_a.id):
        Membership.objects.filter(pk=world.bob_membership.pk).delete()
    assert bob_client.get(url).status_code == 404


def test_the_session_cookie_is_http_only_and_the_session_changes_at_login(world: World):
    client = Client(REMOTE_ADDR=fresh_address())
    client.get("/accounts/login/")
    before = client.cookies.get("sessionid")
    client.post("/accounts/login/", {"login": world.alice.email, "password": PASSWORD})
    after = client.cookies["sessionid"]
    assert after["httponly"] and (before is None or before.value != after.value), "no session fixation"
    assert after["samesite"] == "Lax"


def test_a_login_never_redirects_off_site():
    user = unique_user()
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example/", "https:evil.example"):
        client = Client(REMOTE_ADDR=fresh_address())
        response = client.post(f"/accounts/login/?next={target}", {"login": user.email, "password": PASSWORD})
        assert response.status_code == 302 and "evil.example" not in response["Location"], target


# --- API keys -----------------------------------------------------------------------------------------
def test_a_revoked_key_stops_working_at_the_very_next_request(world: World, alice_client: Client):
    warm = api_client(world.secret_a)
    for _ in range(20):  # warm: whatever a server may keep about a key it has just seen
        assert warm.get("/api/v1/tenant/").status_code == 200
    alice_client.post(f"/t/{world.tenant_a.slug}/settings/api-keys/{world.key_a.id}/revoke/")
    for client in (warm, api_client(world.secret_a)):
        response = client.get("/api/v1/contacts/")
        assert response.status_code == 401
        assert response.json()["error"]["message"] == "Invalid or revoked API key."
    assert client.post("/api/v1/contacts/", {"email": "x@example.com"}, format="json").status_code == 401


def test_a_key_revoked_through_the_api_or_the_admin_stops_at_once(world: World, api_a: APIClient):
    assert api_a.get("/api/v1/tenant/").status_code == 200
    response = api_a.delete(f"/api/v1/api-keys/{world.read_key_a.id}/")
    assert response.status_code == 204, response.content
    assert api_client(world.read_secret_a).get("/api/v1/tenant/").status_code == 401
    with platform_access():  # as the admin does
        assert ApiKey.all_tenants.filter(pk=world.key_a.pk).update(revoked_at=dt.datetime.now(dt.UTC)) == 1
    assert api_a.get("/api/v1/tenant/").status_code == 401


def test_a_key_of_a_deleted_workspace_stops_working(world: World, alice_client: Client):
    client = api_client(world.secret_a)
    assert client.get("/api/v1/tenant/").status_code == 200
    alice_client.post(f"/t/{world.tenant_a.slug}/settings/delete/", {"confirm_slug": world.tenant_a.slug})
    assert client.get("/api/v1/tenant/").status_code == 401


def test_a_key_is_only_its_secret(world: World):
    prefix_only = api_client(world.key_a.prefix)
    assert prefix_only.get("/api/v1/tenant/").status_code == 401
    mangled = api_client(world.secret_a[:-1] + ("A" if world.secret_a[-1] != "A" else "B"))
    assert mangled.get("/api/v1/tenant/").status_code == 401
    for header in (f"Token {world.secret_a}", f"Bearer {world.secret_a} extra", f"Basic {world.secret_a}"):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=header)
        assert client.get("/api/v1/tenant/").status_code == 401, header
