"""The snippet file and the demo page that serves it: small, no eval, no HTML from data, strict CSP."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from personalization.demo import demo_seed
from tenants.audit import Actor
from tenants.context import tenant_context
from tests.conftest import World
from tests.factories import make_tenant

SNIPPET = Path(settings.BASE_DIR) / "static" / "js" / "segmentor.js"


def test_the_snippet_is_a_few_kilobytes():
    source = SNIPPET.read_bytes()
    assert len(source) < 10_000
    assert len(gzip.compress(source)) < 3_500


@pytest.mark.parametrize(
    "forbidden",
    [r"\beval\s*\(", r"new\s+Function", r"\.innerHTML", r"\.outerHTML", r"insertAdjacentHTML", r"document\.write",
     r"document\.cookie", r"setTimeout\s*\(\s*['\"]", r"sendBeacon"],
)  # fmt: skip
def test_the_snippet_never_runs_strings_writes_html_or_touches_cookies(forbidden: str):
    code = re.sub(r"/\*.*?\*/", "", SNIPPET.read_text(), flags=re.S)  # the header comment may name them
    assert not re.search(forbidden, code), forbidden


def test_the_snippet_omits_credentials_and_sends_only_after_consent():
    code = SNIPPET.read_text()
    assert 'credentials: "omit"' in code
    assert "if (!state.consented || !state.key) return Promise.resolve(null);" in code


@pytest.fixture
def demo(world: World, settings) -> str:
    settings.PERSONALIZATION_DEMO = True
    tenant = make_tenant("Demo Shop", world.alice)
    with tenant_context(tenant.pk):
        key = demo_seed(tenant=tenant, actor=Actor.for_user(world.alice), origins=["http://testserver"])
    return key.public_key


def test_the_demo_page_loads_the_snippet_under_the_strict_csp(demo: str, client: Client):
    response = client.get("/demo/shop/")
    assert response.status_code == 200
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    html = response.content.decode()
    assert f'data-segmentor-key="{demo}"' in html
    assert 'data-segmentor-endpoint="http://testserver/p/v1/"' in html
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []  # no inline script
    assert 'data-segmentor-slot="hero"' in html
    assert "origin-warning" not in html
    assert not response.cookies


def test_the_demo_page_warns_when_served_on_an_origin_its_key_does_not_allow(demo: str):
    response = Client(HTTP_HOST="elsewhere.example").get("/demo/shop/")
    assert response.status_code == 200
    assert "origin-warning" in response.content.decode()


def test_the_demo_page_is_off_unless_enabled(demo: str, client: Client, settings):
    settings.PERSONALIZATION_DEMO = False
    assert client.get("/demo/shop/").status_code == 404
