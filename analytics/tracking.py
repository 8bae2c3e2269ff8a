"""Open and click tracking: a signed pixel per delivery, and links rewritten to a signed redirect.

A click token carries the delivery and the exact URL that was in the message, signed with the
project's key (HMAC-SHA256 under a salt of its own): the redirect only ever leads to a URL
Segmentor itself put in that message, so it cannot be used as an open redirect, and a token
cannot be moved to another delivery or tenant. Opt-out links, ``mailto:``, ``tel:`` and anchors
are left alone.

Machine opens and clicks are flagged, not dropped: Apple Mail Privacy Protection fetches every
pixel through its proxy ("Mozilla/5.0" alone), security gateways follow every link within
seconds of delivery, and link checkers send HEAD requests.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import html as html_lib
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

SALT = b"segmentor.analytics.tracking"
_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
SCANNER_AGENTS = re.compile(
    r"barracuda|mimecast|proofpoint|forcepoint|trend ?micro|symantec|messagelabs|sophos|fortinet|"
    r"safelinks|urldefense|microsoft office existence|linkcheck|python-requests|curl/|wget/|go-http-client|"
    r"okhttp|java/|libwww|headless|phantomjs|bot\b|spider|crawler|scanner",
    re.IGNORECASE,
)
# A click this soon after the message left is a gateway following links, not a reader.
SCANNER_SECONDS = 10


@functools.lru_cache(maxsize=4)
def _key(secret: str) -> bytes:
    return hashlib.sha256(SALT + secret.encode()).digest()


def _sign(*parts: str) -> str:
    # hmac.digest: the one-shot C path (a message carries a dozen links; the sender builds thousands a second).
    digest = hmac.digest(_key(settings.SECRET_KEY), "\x1f".join(parts).encode(), "sha256")
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


@functools.lru_cache(maxsize=4096)  # a campaign's links repeat in every message of a batch
def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def _unb64(text: str) -> str:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()


@dataclass(frozen=True)
class Opened:
    tenant_id: int
    delivery_id: int


@dataclass(frozen=True)
class Clicked:
    tenant_id: int
    delivery_id: int
    url: str
    is_cta: bool


def open_token(tenant_id: int, delivery_id: int) -> str:
    return f"{tenant_id}.{delivery_id}.{_sign('o', str(tenant_id), str(delivery_id))}"


def click_token(tenant_id: int, delivery_id: int, url: str, *, is_cta: bool) -> str:
    cta = "1" if is_cta else "0"
    signature = _sign("c", str(tenant_id), str(delivery_id), cta, url)
    return f"{tenant_id}.{delivery_id}.{cta}.{_b64(url)}.{signature}"


def read_open(token: str) -> Opened | None:
    """The delivery a pixel token names, or None when it was not made here."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    if not hmac.compare_digest(parts[2], _sign("o", parts[0], parts[1])):
        return None
    return Opened(int(parts[0]), int(parts[1]))


def read_click(token: str) -> Clicked | None:
    """The delivery and URL a click token names, or None when it was not made here."""
    parts = token.split(".")
    if len(parts) != 5 or not parts[0].isdigit() or not parts[1].isdigit() or parts[2] not in ("0", "1"):
        return None
    try:
        url = _unb64(parts[3])
    except (ValueError, UnicodeDecodeError):
        return None
    if not hmac.compare_digest(parts[4], _sign("c", parts[0], parts[1], parts[2], url)):
        return None
    if urlsplit(url).scheme not in ("http", "https"):
        return None
    return Clicked(int(parts[0]), int(parts[1]), url, parts[2] == "1")


def trackable(url: str, skip: tuple[str, ...]) -> bool:
    """Wrap http(s) links only, and never the opt-out links (one-click must reach us unchanged)."""
    return url[:8].lower().startswith(("http://", "https://")) and not any(
        url.startswith(prefix) for prefix in skip if prefix
    )


def with_tracking(
    markup: str, *, tenant_id: int, delivery_id: int, base_url: str, cta_url: str = "", skip: tuple[str, ...] = (),
    clicks: bool = True, opens: bool = True,
) -> str:  # fmt: skip
    """Point every trackable link of ``markup`` at the click redirect (``clicks``); add the open pixel (``opens``)."""

    def wrap(match: re.Match[str]) -> str:
        href = html_lib.unescape(match.group(3)).strip()
        if not trackable(href, skip):
            return match.group(0)
        token = click_token(tenant_id, delivery_id, href, is_cta=bool(cta_url) and href == cta_url)
        return f"{match.group(1)}{match.group(2)}{base_url}/r/c/{token}/{match.group(2)}"

    wrapped = _HREF.sub(wrap, markup) if clicks else markup
    if not opens:
        return wrapped
    pixel = (
        f'<img src="{base_url}/r/o/{open_token(tenant_id, delivery_id)}.gif" width="1" height="1" alt="" '
        'style="display:block;border:0;width:1px;height:1px">'
    )
    closing = wrapped.lower().rfind("</body")
    return wrapped[:closing] + pixel + wrapped[closing:] if closing >= 0 else wrapped + pixel


def machine_reason(
    *, user_agent: str, method: str = "GET", seconds_after_send: float | None = None, kind: str = "open"
) -> str:
    """Why a request looks like a machine rather than the recipient ("" when it looks human)."""
    agent = user_agent.strip()
    if method.upper() == "HEAD":
        return "head request"
    if not agent:
        return "no user agent"
    if kind == "open" and agent == "Mozilla/5.0":
        return "apple privacy proxy"
    if SCANNER_AGENTS.search(agent):
        return "security scanner"
    if kind == "click" and seconds_after_send is not None and 0 <= seconds_after_send < SCANNER_SECONDS:
        return "clicked within seconds of sending"
    return ""
