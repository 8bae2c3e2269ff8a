"""Onboarding in a real browser: sign up, switch workspace, create an API key, sign in."""

from __future__ import annotations

import json
import re
import urllib.request
from typing import TYPE_CHECKING

from playwright.sync_api import ConsoleMessage, Page, expect

from tenants.context import tenant_context
from tenants.models import ApiKey, Membership, Tenant
from tenants.roles import Role
from tests.factories import PASSWORD, UserFactory, add_member, make_tenant

if TYPE_CHECKING:
    from pytest_django.live_server_helper import LiveServer

CSP_VIOLATION = re.compile(r"Content Security Policy", re.IGNORECASE)


def dashboard_url(slug: str) -> re.Pattern[str]:
    return re.compile(rf"/t/{re.escape(slug)}/$")


def submit(page: Page, label: str) -> None:
    """Click a form's submit button (the top bar has a "Sign up" link styled as a button too)."""
    page.locator("main form").get_by_role("button", name=label).click()


def test_sign_up_creates_workspace_and_opens_its_dashboard(page: Page) -> None:
    page.goto("/accounts/signup/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign Up")

    page.get_by_label("Email").fill("founder@rockets.example")
    page.get_by_label("Company or workspace name").fill("Acme Rockets")
    page.locator("input[name=password1]").fill(PASSWORD)
    page.locator("input[name=password2]").fill(PASSWORD)
    submit(page, "Sign Up")

    expect(page).to_have_url(dashboard_url("acme-rockets"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Acme Rockets")
    expect(page.get_by_test_id("tenant-switcher").locator("summary")).to_have_text("Acme Rockets")
    expect(page.get_by_text("You are owner in this workspace")).to_be_visible()

    # The workspace and the owner membership are really there.
    tenant = Tenant.objects.get(slug="acme-rockets")
    assert tenant.name == "Acme Rockets"
    with tenant_context(tenant.id):
        membership = Membership.objects.select_related("user").get(tenant=tenant)
    assert membership.user.email == "founder@rockets.example"
    assert membership.role == Role.OWNER


def test_tenant_switcher_opens_the_other_workspace(page: Page, sign_in) -> None:
    user = UserFactory()
    alpha = make_tenant("Alpha Corp", user)
    other_owner = UserFactory()
    beta = make_tenant("Beta Labs", other_owner)
    add_member(beta, user, Role.MARKETER)
    sign_in(user)

    page.goto(alpha.get_absolute_url())
    expect(page.get_by_role("heading", level=1)).to_have_text("Alpha Corp")

    switcher = page.get_by_test_id("tenant-switcher")
    expect(switcher.get_by_role("link", name="Beta Labs")).to_be_hidden()
    switcher.locator("summary").click()
    expect(switcher).to_have_attribute("open", "")
    expect(switcher.get_by_role("link", name="Alpha Corp")).to_have_attribute("aria-current", "page")
    expect(switcher.get_by_role("link", name="New workspace")).to_be_visible()

    switcher.get_by_role("link", name="Beta Labs").click()

    expect(page).to_have_url(dashboard_url(beta.slug))
    expect(page.get_by_role("heading", level=1)).to_have_text("Beta Labs")
    expect(page.get_by_text("You are marketer in this workspace")).to_be_visible()
    expect(switcher.locator("summary")).to_have_text("Beta Labs")

    # The home page now remembers the last workspace.
    page.goto("/")
    expect(page).to_have_url(dashboard_url(beta.slug))


def test_owner_creates_api_key_shown_once_and_usable(page: Page, sign_in, live_server: LiveServer) -> None:
    owner = UserFactory()
    tenant = make_tenant("Keyed Co", owner)
    sign_in(owner)

    page.goto(tenant.get_absolute_url())
    page.locator("header nav").get_by_role("link", name="Settings").click()
    page.get_by_role("navigation", name="Settings").get_by_role("link", name="API keys").click()
    expect(page).to_have_url(re.compile(rf"/t/{tenant.slug}/settings/api-keys/$"))
    expect(page.get_by_text("No API keys yet.")).to_be_visible()

    page.get_by_label("Name").fill("Shop backend")
    page.get_by_label("Scope").select_option(ApiKey.Scope.WRITE)
    page.get_by_role("button", name="Create API key").click()

    shown = page.get_by_test_id("new-api-key")
    expect(shown).to_have_text(re.compile(r"^sgm_\S{20,}$"))
    secret = shown.inner_text().strip()
    expect(page.get_by_role("cell", name="Shop backend")).to_be_visible()

    with tenant_context(tenant.id):
        api_key = ApiKey.objects.get(name="Shop backend")
    assert api_key.scope == ApiKey.Scope.WRITE
    assert secret.startswith(api_key.prefix)
    assert secret not in api_key.key_hash

    request = urllib.request.Request(
        f"{live_server.url}/api/v1/tenant/",
        headers={"Authorization": f"Bearer {secret}", "Accept": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        body = json.loads(response.read())
    assert body["slug"] == tenant.slug
    assert body["name"] == "Keyed Co"

    # A reload lists the key by its prefix but never shows the secret or makes another key.
    page.reload()
    expect(page.get_by_role("cell", name="Shop backend")).to_be_visible()
    expect(page.get_by_test_id("new-api-key")).to_have_count(0)
    expect(page.locator("body")).not_to_contain_text(secret)
    expect(page.get_by_role("cell", name=f"{api_key.prefix}…")).to_be_visible()
    with tenant_context(tenant.id):
        assert ApiKey.objects.count() == 1


def test_sign_in_with_email_and_password_under_strict_csp(page: Page) -> None:
    user = UserFactory(email="returning@example.com")
    tenant = make_tenant("Returning Ltd", user)
    csp_errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and CSP_VIOLATION.search(message.text):
            csp_errors.append(message.text)

    page.on("console", on_console)

    response = page.goto("/accounts/login/")
    assert response is not None
    assert response.ok
    login_csp = response.headers.get("content-security-policy", "")
    assert "default-src 'self'" in login_csp
    assert "script-src 'self'" in login_csp
    assert "'unsafe-inline'" not in login_csp

    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill(PASSWORD)
    with page.expect_response(lambda r: dashboard_url(tenant.slug).search(r.url) is not None) as dashboard:
        submit(page, "Sign In")

    expect(page).to_have_url(dashboard_url(tenant.slug))
    expect(page.get_by_role("heading", level=1)).to_have_text("Returning Ltd")
    expect(page.get_by_test_id("tenant-switcher").locator("summary")).to_have_text("Returning Ltd")
    assert "script-src 'self'" in dashboard.value.headers.get("content-security-policy", "")
    # The page's own scripts (htmx, app.js) loaded and ran under the policy.
    page.wait_for_function("() => window.htmx !== undefined")
    assert csp_errors == []

    # The listener does catch a violation: an inline script is refused and reported.
    with page.expect_console_message(lambda m: CSP_VIOLATION.search(m.text) is not None):
        page.evaluate("document.body.append(Object.assign(document.createElement('script'), {textContent: '1'}))")
    assert len(csp_errors) == 1
