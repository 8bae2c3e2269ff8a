"""The endpoints the website snippet calls (``/p/v1/``), authenticated only by a public site key.

A public key can do four things for its tenant and nothing else: send events for its visitor,
identify its visitor (signed by the tenant's server unless the key says otherwise), ask which
content the visitor's slots show, and record a click. It reads no contact data and is refused by
the REST API (which takes only secret keys); a secret API key is refused here.

Every request must come from one of the key's allowed origins (``Origin``, or for a plain GET the
``Referer``'s origin): only those get ``Access-Control-Allow-Origin``, and only for them is a
preflight answered. Requests are limited per key and per visitor (429 with ``Retry-After``). No
cookie is read or set: these views are CSRF-exempt because nothing ambient authenticates them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from personalization import cache_client, versions
from personalization.decisions import MAX_SLOTS_PER_DECISION, decide_for_visitor, decision_cache_keys
from personalization.impressions import impressions_count
from personalization.models import PUBLIC_KEY_PREFIX, SiteKey, Slot, SlotVariant, Visitor
from personalization.services import (
    clean_visitor_id,
    slot_click_record,
    visitor_identify,
    visitor_touch,
    web_events_track,
)
from tenants.api.errors import error_body
from tenants.api.throttling import parse_rate
from tenants.context import platform_access, tenant_context
from tenants.models import Tenant
from tenants.services import API_KEY_PREFIX

KEY_HEADER = "X-Segmentor-Key"
MAX_BODY_BYTES = 256 * 1024
SITE_KEY_TTL = 300
SLOT_KEY = re.compile(r"^[-a-zA-Z0-9_]{1,64}$")
ALLOW_HEADERS = f"Content-Type, {KEY_HEADER}"


@dataclass(frozen=True)
class SiteKeyInfo:
    """What a request needs to know about its key (cached in a shared cache, dropped on any change)."""

    id: int
    tenant_id: int
    public_key: str
    allowed_origins: tuple[str, ...]
    active: bool
    stamp: str = ""  # the key's version when this was read (versions.site_key_version_key)


class PublicError(Exception):
    """An answer other than success, in the API's error shape."""

    def __init__(
        self, status: int, code: str, message: str, fields: dict[str, Any] | None = None, retry_after: int = 0
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.fields, self.retry_after = status, code, message, fields, retry_after


def site_key_info(public_key: str) -> SiteKeyInfo | None:
    """Return the key (active or revoked) with this public string, from any tenant, or None."""
    cache_key, version_key = versions.site_key_cache_key(public_key), versions.site_key_version_key(public_key)
    stamp = ""
    if versions.enabled():
        found = cache_client.get_many([cache_key, version_key])
        # The version is read before the database, so a change committing meanwhile leaves this entry stale.
        stamp = str(found[version_key]) if version_key in found else versions.read_tokens([version_key])[0]
        info = found.get(cache_key)
        if isinstance(info, SiteKeyInfo) and info.stamp == stamp:
            return info
    with platform_access():
        row = (
            SiteKey.all_tenants.filter(public_key=public_key)
            .values("id", "tenant_id", "public_key", "allowed_origins", "revoked_at")
            .first()
        )
    if row is None:
        return None
    origins = tuple(row["allowed_origins"] or ())
    info = SiteKeyInfo(row["id"], row["tenant_id"], row["public_key"], origins, row["revoked_at"] is None, stamp)
    if versions.enabled():
        cache_client.set_value(cache_key, info, SITE_KEY_TTL)
    return info


@dataclass
class Gate:
    """A request that passed the key and origin checks."""

    site_key: SiteKeyInfo
    origin: str
    limited: bool = False

    def limit(self, visitor_id: str | None, fetch: list[str] | None = None) -> dict[str, Any]:
        """Count the request against the key's limit and the visitor's; 429 past one. Reads ``fetch`` from the
        cache in the same round trip and returns what it found."""
        self.limited = True
        key = self.site_key.public_key
        checks = [(versions.cache_key("rl", "k", key), settings.PERSONALIZATION_KEY_RATE, "site key")]
        if visitor_id is not None:
            rate = settings.PERSONALIZATION_VISITOR_RATE
            checks.append((versions.cache_key("rl", "v", key, visitor_id), rate, "visitor"))
        now = time.time()
        windows = []
        for name, rate, what in checks:
            limit, period = parse_rate(rate)
            window = int(now // period)
            windows.append((f"{name}:{period}:{window}", period, limit, window, what))
        counts, found = cache_client.count_hits([(name, period + 1) for name, period, _, _, _ in windows], fetch)
        for count, (_, period, limit, window, what) in zip(counts, windows, strict=True):
            if count > limit:
                wait = max(1, int((window + 1) * period - now + 0.999))
                message = f"Too many requests for this {what}; try again later."
                raise PublicError(429, "throttled", message, retry_after=wait)
        return found

    def tenant(self) -> Tenant:
        return Tenant.objects.get(pk=self.site_key.tenant_id)

    def site_key_row(self) -> SiteKey:
        return SiteKey.objects.get(tenant_id=self.site_key.tenant_id, pk=self.site_key.id)


def _origin_of(request: HttpRequest, *, referer_fallback: bool) -> str:
    origin = request.headers.get("Origin", "")
    if not origin and referer_fallback:
        # A same-origin GET and a link followed in the page carry no Origin; their Referer names the page.
        referer = urlsplit(request.headers.get("Referer", ""))
        if referer.scheme and referer.netloc:
            origin = f"{referer.scheme}://{referer.netloc}"
    return origin.lower()


def _key_of(request: HttpRequest) -> str:
    return (request.headers.get(KEY_HEADER) or request.GET.get("key") or "").strip()


def _resolve(request: HttpRequest, *, referer_fallback: bool) -> Gate:
    raw = _key_of(request)
    if not raw:
        raise PublicError(
            401, "not_authenticated", "Send the site key (?key=pk_live_… or the X-Segmentor-Key header).",
            {"key": ["This field is required."]},
        )  # fmt: skip
    if raw.startswith(API_KEY_PREFIX):
        # Never accept a secret where a public key belongs: it would teach people to paste secrets into pages.
        raise PublicError(
            401, "not_authenticated",
            "That is a secret API key: never put it in a page. Use a public site key (pk_live_…).",
            {"key": ["A secret API key is not accepted here."]},
        )  # fmt: skip
    info = site_key_info(raw) if raw.startswith(PUBLIC_KEY_PREFIX) and len(raw) <= 64 else None
    if info is None:
        raise PublicError(401, "not_authenticated", "Unknown site key.", {"key": ["Unknown site key."]})
    origin = _origin_of(request, referer_fallback=referer_fallback)
    if not origin or origin not in info.allowed_origins:
        raise PublicError(
            403, "forbidden", "This site key may not be used from this origin.",
            {"origin": [f"{origin or 'No origin'} is not an allowed origin of this key."]},
        )  # fmt: skip
    if not info.active:
        raise PublicError(401, "not_authenticated", "This site key was revoked.", {"key": ["Revoked."]})
    return Gate(info, origin)


def _cors(response: HttpResponse, origin: str | None) -> HttpResponse:
    response["Vary"] = "Origin"
    response["Cache-Control"] = "no-store"
    if origin:
        response["Access-Control-Allow-Origin"] = origin
        response["Access-Control-Expose-Headers"] = "Retry-After"
    return response


def _error(error: PublicError) -> JsonResponse:
    response = JsonResponse(error_body(error.code, error.message, error.fields), status=error.status)
    if error.retry_after:
        response["Retry-After"] = str(error.retry_after)
    return response


def _validation_fields(error: ValidationError) -> dict[str, list[str]]:
    if hasattr(error, "error_dict"):
        return {
            field: [str(m) for m in ValidationError(messages).messages] for field, messages in error.error_dict.items()
        }
    return {"non_field_errors": [str(m) for m in error.messages]}


def _as_public_error(error: Exception) -> PublicError:
    if isinstance(error, PermissionDenied):
        return PublicError(403, "forbidden", str(error), {"signature": [str(error)]})
    if isinstance(error, ValidationError):
        fields = _validation_fields(error)
        message = "; ".join(fields.pop("non_field_errors", [])) or "Some fields are invalid."
        return PublicError(400, "invalid", message, fields)
    assert isinstance(error, PublicError)
    return error


def _rollback() -> None:
    """Undo what the request wrote before it failed (the request's transaction, ATOMIC_REQUESTS)."""
    if connection.in_atomic_block:
        transaction.set_rollback(True)


View = Callable[[HttpRequest, Gate], HttpResponse]


def public_endpoint(
    *methods: str, referer_fallback: bool = False, atomic: bool = True
) -> Callable[[View], Callable[..., HttpResponse]]:
    """Wrap a view: preflight, key, origin and rate checks, the key's tenant, errors in one shape, CORS.

    ``atomic=False``: no request transaction (the view opens its own where it reads or writes), so a
    request that needs no row never touches the database.
    """

    def decorate(view: View) -> Callable[..., HttpResponse]:
        @csrf_exempt
        @functools.wraps(view)
        def wrapped(request: HttpRequest) -> HttpResponse:
            allowed = (*methods, "OPTIONS")
            response: HttpResponse
            if request.method not in allowed:
                response = _error(PublicError(405, "method_not_allowed", f"Use {' or '.join(methods)}."))
                response["Allow"] = ", ".join(allowed)
                return _cors(response, None)
            preflight = request.method == "OPTIONS"
            try:
                gate = _resolve(request, referer_fallback=referer_fallback and request.method == "GET")
            except PublicError as error:
                # A key's own origin may read why it was refused (revoked, throttled); no one else.
                raw = _key_of(request)
                known = error.status in (401, 429) and raw.startswith(PUBLIC_KEY_PREFIX) and len(raw) <= 64
                info = site_key_info(raw) if known else None
                origin = _origin_of(request, referer_fallback=False)
                readable = info is not None and origin in info.allowed_origins
                return _cors(_error(error), origin if readable else None)
            if preflight:
                try:
                    gate.limit(None)
                except PublicError as error:
                    return _cors(_error(error), gate.origin)
                response = HttpResponse(status=204)
                response["Access-Control-Allow-Methods"] = ", ".join(allowed)
                response["Access-Control-Allow-Headers"] = ALLOW_HEADERS
                response["Access-Control-Max-Age"] = "600"
                return _cors(response, gate.origin)
            try:
                with tenant_context(gate.site_key.tenant_id):
                    response = view(request, gate)
            except (PublicError, PermissionDenied, ValidationError) as error:
                if atomic:
                    _rollback()
                response = _error(_as_public_error(error))
                if not gate.limited:  # refused before it named a visitor: it still counts for the key
                    with contextlib.suppress(PublicError):
                        gate.limit(None)
            return _cors(response, gate.origin)

        return wrapped if atomic else transaction.non_atomic_requests(wrapped)

    return decorate


def _body(request: HttpRequest) -> dict[str, Any]:
    """The JSON object in the body (sent as application/json, or as text/plain to skip the preflight)."""
    if request.method == "GET":
        return {}
    content_type = request.content_type or ""
    if content_type not in ("application/json", "text/plain", ""):
        raise PublicError(415, "unsupported_media_type", "Send JSON (application/json or text/plain).")
    length = int(request.headers.get("Content-Length") or 0)
    if length > MAX_BODY_BYTES:
        raise PublicError(413, "too_large", f"At most {MAX_BODY_BYTES // 1024} KB per request.")
    try:
        data = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested past the decoder
        raise PublicError(400, "invalid", "The body is not valid JSON.", {"body": ["Not valid JSON."]}) from None
    if not isinstance(data, dict):
        raise PublicError(400, "invalid", "The body must be a JSON object.", {"body": ["Expected a JSON object."]})
    return data


def _visitor(request: HttpRequest, data: dict[str, Any], gate: Gate, *, count: bool = True) -> str:
    visitor_id = clean_visitor_id(data.get("visitor_id", request.GET.get("vid")))
    if count:
        gate.limit(visitor_id)
    return visitor_id


def _slot_keys(value: Any) -> list[str]:
    keys = value.split(",") if isinstance(value, str) else value
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) and SLOT_KEY.match(k) for k in keys):
        raise ValidationError({"slots": ["Name the slots: a list (or comma-separated) of slot keys, e.g. hero."]})
    if len(set(keys)) > MAX_SLOTS_PER_DECISION:
        raise ValidationError({"slots": [f"At most {MAX_SLOTS_PER_DECISION} slots per request."]})
    return keys


# --- the endpoints ------------------------------------------------------------------------------
@public_endpoint("POST")
def events(request: HttpRequest, gate: Gate) -> HttpResponse:
    """Store the visitor's events: ``{"visitor_id", "events": [{"event", "properties", "idempotency_key"}]}``."""
    data = _body(request)
    visitor_id = _visitor(request, data, gate)
    results = web_events_track(
        tenant=gate.tenant(), site_key=gate.site_key_row(), anonymous_id=visitor_id, events=data.get("events") or []
    )
    accepted = sum(1 for r in results if r.status == "accepted")
    return JsonResponse({"accepted": accepted, "duplicates": len(results) - accepted}, status=202)


@public_endpoint("POST")
def identify(request: HttpRequest, gate: Gate) -> HttpResponse:
    """Tie the visitor to a contact: ``{"visitor_id", "external_id" | "email", "signature"}``; answers no data."""
    data = _body(request)
    visitor_id = _visitor(request, data, gate)
    unknown = sorted(set(data) - {"visitor_id", "external_id", "email", "signature"})
    if unknown:
        raise ValidationError({"non_field_errors": [f"Unknown field(s): {', '.join(map(str, unknown))}."]})
    visitor_identify(
        tenant=gate.tenant(),
        site_key=gate.site_key_row(),
        anonymous_id=visitor_id,
        external_id=data.get("external_id") or "",
        email=data.get("email") or "",
        signature=data.get("signature") or "",
    )
    return JsonResponse({"identified": True})


@public_endpoint("GET", "POST", referer_fallback=True, atomic=False)
def decide(request: HttpRequest, gate: Gate) -> HttpResponse:
    """The content of the named slots for this visitor: ``?vid=…&slots=hero,banner`` (or the same as JSON)."""
    data = _body(request)
    visitor_id = _visitor(request, data, gate, count=False)
    slot_keys = _slot_keys(data.get("slots", request.GET.get("slots", "")))
    tenant_id = gate.site_key.tenant_id
    # The limits and the cached decision in one cache round trip.
    keys = decision_cache_keys(tenant_id=tenant_id, anonymous_id=visitor_id, slot_keys=slot_keys)
    found = gate.limit(visitor_id, fetch=keys)
    decisions = decide_for_visitor(
        tenant_id=tenant_id, anonymous_id=visitor_id, slot_keys=slot_keys, prefetched=found if keys else None
    )
    if decisions:
        shown = [(d.slot_id, d.variant_id) for d in decisions]
        impressions_count(tenant_id=tenant_id, shown=shown, day=timezone.now().date())
    return JsonResponse({"slots": {d.slot_key: d.as_dict() for d in decisions}})


def _click_target(tenant_id: int, data: dict[str, Any]) -> tuple[Slot, SlotVariant | None]:
    key = data.get("slot")
    if not isinstance(key, str) or not SLOT_KEY.match(key):
        raise ValidationError({"slot": ["Name the slot that was clicked."]})
    slot = Slot.objects.filter(tenant_id=tenant_id, key=key, active=True).first()
    if slot is None:
        raise ValidationError({"slot": ["No such slot."]})
    raw = data.get("variant")
    if raw in (None, "", "default"):
        return slot, None
    if isinstance(raw, bool) or not str(raw).isdigit():
        raise ValidationError({"variant": ["Expected the variant id the decision gave (or none for the default)."]})
    variant = SlotVariant.objects.filter(tenant_id=tenant_id, slot=slot, pk=int(str(raw)[:18])).first()
    if variant is None:
        raise ValidationError({"variant": ["No such variant of this slot."]})
    return slot, variant


@public_endpoint("GET", "POST", referer_fallback=True)
def click(request: HttpRequest, gate: Gate) -> HttpResponse:
    """Record a click on a slot's call to action: POST (a beacon) answers 204, GET redirects to the CTA."""
    data = _body(request) if request.method == "POST" else {k: request.GET.get(k) for k in ("slot", "variant")}
    visitor_id = _visitor(request, data, gate)
    tenant_id = gate.site_key.tenant_id
    slot, variant = _click_target(tenant_id, data)
    ref = visitor_touch(tenant_id=tenant_id, site_key_id=gate.site_key.id, anonymous_id=visitor_id)
    visitor = Visitor.objects.get(tenant_id=tenant_id, pk=ref.id)
    slot_click_record(tenant_id=tenant_id, slot=slot, variant=variant, visitor=visitor)
    url = (variant or slot).cta_url
    if request.method == "POST" or not url:
        return HttpResponse(status=204)
    # A path is on the tenant's site (the page's origin); the URL comes from the slot, never the request.
    response = HttpResponseRedirect(urljoin(gate.origin + "/", url))
    response["Referrer-Policy"] = "no-referrer"
    return response
