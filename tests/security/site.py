"""Every page of the site, found in the URLConf, and what to look for in what it answers.

The security walks (headers, CSRF, stored XSS, CSV) take their pages from here, so a route
added later (an app, an admin model, an allauth page) is walked without editing a test: the
URLConf is read (tests.isolation.walk.iter_routes), each keyword is filled with a value that
points at tenant A's objects (tests.isolation.walk.object_ids), a signed token, an admin
object of that model, or a placeholder, and each page is fetched by the person it is for.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote, urlsplit

from django.apps import apps
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import Resolver404, resolve
from rest_framework.test import APIClient

from tenants.context import platform_access, tenant_context
from tests.conftest import World, api_client
from tests.factories import UserFactory
from tests.isolation.walk import Route, iter_routes, object_ids

# <converter:name> in path() routes, (?P<name>…) in re_path() routes (allauth, the admin).
_PLACEHOLDER = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>\w+)>|\(\?P<(?P<rname>\w+)>(?:[^()]|\([^()]*\))*\)")
_OPTIONAL_GROUP = re.compile(r"\((?!\?P<)[^()]*\)\?")
_ADMIN_MODEL = re.compile(r"^admin/(?P<app>\w+)/(?P<model>\w+)/")
# Placeholders for keywords nothing else fills: a page that does not exist must still be a safe page.
_BY_CONVERTER = {"int": 999_999, "path": "x", "slug": "x", "str": "x", "uuid": "00000000-0000-0000-0000-000000000000"}


@dataclass(frozen=True)
class Page:
    route: Route
    url: str
    who: str  # "alice" (owner of tenant A), "anonymous", "staff" (platform admin), "api" (tenant A's read key)


@dataclass
class Visitors:
    """One client per kind of visitor; staff is a superuser of the platform."""

    alice: Client
    anonymous: Client
    staff: Client
    api: APIClient  # tenant A's read key
    api_writer: APIClient  # tenant A's write key

    def get(self, who: str) -> Client:
        return getattr(self, who)


def visitors(world: World) -> Visitors:
    alice = Client()
    alice.force_login(world.alice)
    staff_user = UserFactory(email="staff@platform.example", is_staff=True, is_superuser=True)
    staff = Client()
    staff.force_login(staff_user)
    return Visitors(
        alice=alice, anonymous=Client(), staff=staff, api=api_client(world.read_secret_a),
        api_writer=api_client(world.secret_a),
    )  # fmt: skip


def route_values(world: World) -> dict[str, Any]:
    """Tenant A's object ids, plus the signed tokens of the public pages (keyed by route name)."""
    from analytics.tracking import click_token, open_token
    from campaigns.models import CampaignRun, Delivery
    from campaigns.optout import unsubscribe_token
    from contacts.consent import ConsentEvidence, confirmation_token, consent_request_confirmation
    from contacts.models import Contact
    from tenants.audit import Actor
    from tenants.models import Invitation
    from tenants.services import invitation_token

    ids = object_ids(world, "a")
    tenant = world.tenant_a
    with tenant_context(tenant.id):
        contact = Contact.objects.get(pk=ids["contact_id"])
        run = CampaignRun.objects.get(pk=ids["run_id"])
        delivery, _ = Delivery.objects.get_or_create(tenant=tenant, run=run, contact=contact)
        record = consent_request_confirmation(
            contact=contact, purpose="marketing", evidence=ConsentEvidence(source="form"), actor=Actor.system("test")
        )
        invitation = Invitation.objects.get(pk=ids["invitation_id"])
        optout = unsubscribe_token(tenant_id=tenant.pk, contact_id=contact.pk, channel="email", purpose="marketing")
        tokens = {
            "invitation_accept": invitation_token(invitation),
            "consent_confirm": confirmation_token(record, contact.email),
            "optout_unsubscribe": optout,
            "optout_preferences": optout,
            "track_open": open_token(tenant.pk, delivery.pk),
            "track_click": click_token(tenant.pk, delivery.pk, "https://shop.example/", is_cta=False),
        }
    return {**ids, "slug": tenant.slug, "delivery_id": delivery.pk, "tokens": tokens}


def _admin_object(template: str, world: World) -> Any:
    """The id of an object of the admin route's model, tenant A's when the model is tenant-owned."""
    match = _ADMIN_MODEL.match(template)
    if match is None:
        return None
    try:
        model = apps.get_model(match["app"], match["model"])
    except LookupError:
        return None
    with platform_access():
        rows = model._base_manager.order_by("pk")
        if any(f.name == "tenant" for f in model._meta.get_fields()):
            rows = rows.filter(tenant=world.tenant_a)
        return rows.values_list("pk", flat=True).first()


def _value(route: Route, name: str, converter: str | None, values: dict[str, Any], world: World) -> Any:
    if name == "token" and route.name in values["tokens"]:
        return values["tokens"][route.name]
    if route.template.startswith("admin/"):
        if name == "object_id":
            found = _admin_object(route.template, world)
            if found is not None:
                return found
        if name == "app_label":
            return "contacts"
        if name == "content_type_id":
            return ContentType.objects.get_by_natural_key("contacts", "contact").pk
        if name == "object_id":
            return values["contact_id"]
    if name in values and name != "tokens":
        return values[name]
    return _BY_CONVERTER.get(converter or "str", "x")


def fill(route: Route, values: dict[str, Any], world: World) -> str:
    """The route's path with every keyword filled (without reverse(): some admin routes have no name)."""

    def one(match: re.Match[str]) -> str:
        name = match.group("name") or match.group("rname")
        value = _value(route, name, match.group("converter"), values, world)
        return quote(str(value), safe="/:@-._~")

    path = _PLACEHOLDER.sub(one, route.template)
    path = _OPTIONAL_GROUP.sub("", path).replace("\\", "")
    return "/" + path


def strict_client(world: World, who: str, staff: Client) -> Client:
    """A client that sends no CSRF token and is checked like a browser, signed in as ``who``."""
    client = Client(enforce_csrf_checks=True)
    if who == "alice":
        client.force_login(world.alice)
    elif who == "staff":
        client.cookies = staff.cookies
    return client


def route_name(url: str) -> str | None:
    """The namespaced name of the route ``url`` resolves to, or None."""
    try:
        return resolve(urlsplit(url).path).view_name
    except Resolver404:
        return None


def who_visits(route: Route) -> tuple[str, ...]:
    if route.kind == "tenant":
        return ("alice",)
    if route.kind == "api":
        return ("api",)
    if route.template.startswith("admin/"):
        return ("staff",)
    if route.template.startswith("accounts/"):
        return ("alice", "anonymous")
    return ("anonymous",)


def every_page(world: World, values: dict[str, Any]) -> Iterator[Page]:
    """Every route of the URLConf that answers GET, once per kind of visitor it is for."""
    for route in iter_routes():
        if "get" not in route.allowed_methods():
            continue
        url = fill(route, values, world)
        for who in who_visits(route):
            yield Page(route, url, who)


def every_route(world: World, values: dict[str, Any]) -> Iterator[tuple[Route, str]]:
    for route in iter_routes():
        yield route, fill(route, values, world)


# --- what a response must carry --------------------------------------------------------------
# Sources a script may never come from, and keywords that undo the policy.
_UNSAFE_SCRIPT_SOURCES = (
    "'unsafe-inline'",
    "'unsafe-eval'",
    "'unsafe-hashes'",
    "*",
    "data:",
    "http:",
    "https:",
    "blob:",
)


def directives(response: Any) -> dict[str, list[str]]:
    policy = response.get("Content-Security-Policy", "")
    parsed: dict[str, list[str]] = {}
    for part in policy.split(";"):
        words = part.split()
        if words:
            parsed[words[0].lower()] = words[1:]
    return parsed


def header_problems(response: Any) -> list[str]:
    """What is missing or loose in a response's security headers (empty when all is well)."""
    policy = directives(response)
    if not policy:
        return ["no Content-Security-Policy"]
    problems = []
    script = policy.get("script-src", policy.get("default-src", []))
    if not script or set(script) - {"'self'", "'none'"}:
        problems.append(f"script-src {' '.join(script) or '(none)'}")
    if unsafe := [s for s in script if s in _UNSAFE_SCRIPT_SOURCES]:
        problems.append(f"unsafe script sources {unsafe}")
    expected = {
        "default-src": (["'self'"], ["'none'"]),
        "object-src": (["'none'"],),
        "base-uri": (["'self'"], ["'none'"]),
        "frame-ancestors": (["'none'"],),
        "form-action": (["'self'"],),
    }
    for name, allowed in expected.items():
        if policy.get(name) not in allowed:
            problems.append(f"{name} {' '.join(policy.get(name) or ['(missing)'])}")
    for header, values in {
        "X-Frame-Options": ("DENY",),
        "X-Content-Type-Options": ("nosniff",),
        # The click redirect sends no referrer at all: its URL is a signed token.
        "Referrer-Policy": ("same-origin", "no-referrer"),
        "Cross-Origin-Opener-Policy": ("same-origin",),
    }.items():
        if response.get(header) not in values:
            problems.append(f"{header}: {response.get(header)!r}")
    return problems


def markup_problems(html: str) -> list[str]:
    found = inspect(html)
    return (
        [f"inline script {s!r}" for s in found.inline_scripts]
        + [f"event handler {h}" for h in found.handlers]
        + [f"script URL {u}" for u in found.script_urls]
    )


# --- what a page contains --------------------------------------------------------------------
_DOWNLOAD = re.compile(r"\.csv(\?|$)")
_HTMX_WRITES = ("hx-post", "hx-put", "hx-patch", "hx-delete")
_URL_ATTRIBUTES = ("href", "src", "action", "formaction", "hx-get", *_HTMX_WRITES, "data-url", "poster")


@dataclass
class Form:
    method: str
    action: str
    has_token: bool
    fields: dict[str, str] = field(default_factory=dict)


class _Inspector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.inline_scripts: list[str] = []
        self.handlers: list[str] = []
        self.script_urls: list[str] = []
        self.style_attributes = 0
        self.forms: list[Form] = []
        self.htmx: list[tuple[str, str]] = []
        self.downloads: list[str] = []
        self._script: dict[str, str | None] | None = None
        self._script_text: list[str] = []
        self._form: Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        for name, value in attrs:
            if name.startswith("on"):
                self.handlers.append(f"<{tag} {name}={value!r}>")
            if name in _URL_ATTRIBUTES and value and value.strip().lower().startswith(("javascript:", "vbscript:")):
                self.script_urls.append(f"<{tag} {name}={value!r}>")
            if name == "style":
                self.style_attributes += 1
            if name in _HTMX_WRITES and value is not None:
                self.htmx.append((name[3:], value))
        if tag == "a" and named.get("href") and ("download" in named or _DOWNLOAD.search(named["href"] or "")):
            self.downloads.append(named["href"] or "")
        if tag == "script":
            self._script, self._script_text = named, []
        elif tag == "form":
            method = (named.get("method") or "get").lower()
            self._form = Form(method, named.get("action") or "", False)
            self.forms.append(self._form)
        elif tag in ("input", "button", "select", "textarea") and self._form is not None:
            name = named.get("name")
            if name == "csrfmiddlewaretoken":
                self._form.has_token = True
            elif name:
                self._form.fields.setdefault(name, named.get("value") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._script is not None:
            text = "".join(self._script_text).strip()
            data_block = (self._script.get("type") or "").lower() in ("application/json", "application/ld+json")
            if not self._script.get("src") and not data_block:
                self.inline_scripts.append(text[:80] or "<script> without src")
            self._script = None
        elif tag == "form":
            self._form = None

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self._script_text.append(data)


def inspect(html: str) -> _Inspector:
    parser = _Inspector()
    parser.feed(html)
    parser.close()
    return parser


def is_html(response: Any) -> bool:
    return response.get("Content-Type", "").startswith("text/html")


def body_of(response: Any) -> str:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content).decode("utf-8", "replace")
    return response.content.decode("utf-8", "replace")
