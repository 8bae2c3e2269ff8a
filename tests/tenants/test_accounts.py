"""Accounts through django-allauth: sign-up creates a workspace, verification, reset, TOTP, lockout."""

from __future__ import annotations

import re
import time

import pytest
import time_machine
from allauth.account.models import EmailAddress
from allauth.mfa.totp.internal.auth import SECRET_SESSION_KEY, format_hotp_value, hotp_value
from django.core import mail
from django.core.cache import cache
from django.test import Client

from tenants.context import tenant_context
from tenants.models import Membership, Tenant, User
from tenants.roles import Role
from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db


def totp_now(secret: str) -> str:
    return format_hotp_value(hotp_value(secret, int(time.time()) // 30))


def login(client: Client, email: str, password: str = PASSWORD):
    return client.post("/accounts/login/", {"login": email, "password": password})


def test_signup_creates_the_user_and_their_first_workspace_as_owner():
    client = Client()
    response = client.post(
        "/accounts/signup/",
        {"email": "Founder@Startup.example", "password1": PASSWORD, "password2": PASSWORD, "company": "Startup GmbH"},
    )
    assert response.status_code == 302
    user = User.objects.get(email__iexact="founder@startup.example")
    tenant = Tenant.objects.get(name="Startup GmbH")
    with tenant_context(tenant.id):
        assert Membership.objects.get(user=user).role == Role.OWNER
    assert client.get("/")["Location"] == f"/t/{tenant.slug}/"
    # A verification email went out, and its link confirms the address.
    [message] = mail.outbox
    link = re.search(r"http://testserver(/accounts/confirm-email/[^\s]+)", message.body).group(1)
    client.post(link)
    assert user.emailaddress_set.get().verified


def test_signup_errors_are_shown_on_the_form(db):
    response = Client().post(
        "/accounts/signup/", {"email": "not-an-email", "password1": "short", "password2": "other", "company": ""}
    )
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert {"email", "company"} <= set(errors)
    assert not User.objects.exists()


def test_password_reset_sends_a_link():
    user = UserFactory(email="forgetful@example.com")
    Client().post("/accounts/password/reset/", {"email": user.email})
    [message] = mail.outbox
    assert message.to == [user.email] and "/accounts/password/reset/key/" in message.body


def test_login_is_locked_after_repeated_failures():
    cache.clear()
    user = UserFactory(email="target@example.com")
    client = Client()
    for _ in range(5):
        assert login(client, user.email, "wrong-password").status_code == 200
    blocked = login(client, user.email)
    assert blocked.status_code in (200, 429)
    assert "_auth_user_id" not in client.session
    cache.clear()


@time_machine.travel("2026-11-28 12:00:05Z", tick=False)  # one TOTP step for the whole test
def test_totp_two_factor_is_required_at_login_once_enabled():
    cache.clear()
    user = UserFactory(email="careful@example.com")
    # allauth lets only a verified address turn on two-factor authentication.
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    client = Client()
    assert login(client, user.email).status_code == 302
    # Turning on 2FA asks for the password again.
    assert client.get("/accounts/2fa/totp/activate/")["Location"].startswith("/accounts/reauthenticate/")
    assert client.post("/accounts/reauthenticate/", {"password": PASSWORD}).status_code == 302
    page = client.get("/accounts/2fa/totp/activate/")
    assert page.status_code == 200
    secret = client.session[SECRET_SESSION_KEY]
    assert client.post("/accounts/2fa/totp/activate/", {"code": totp_now(secret)}).status_code == 302
    assert user.authenticator_set.filter(type="totp").exists()

    client.post("/accounts/logout/")
    second = Client()
    response = login(second, user.email)
    assert response["Location"] == "/accounts/2fa/authenticate/"
    assert "_auth_user_id" not in second.session
    assert second.post("/accounts/2fa/authenticate/", {"code": "000000"}).status_code == 200
    assert second.post("/accounts/2fa/authenticate/", {"code": totp_now(secret)}).status_code == 302
    assert second.session["_auth_user_id"] == str(user.pk)
    cache.clear()
