"""Public webhooks that bring delivery feedback in: no login, each authenticated by a secret.

``POST /hooks/<slug>/feedback/`` — the generic JSON endpoint, for any provider or relay.
  Authenticate with the tenant's webhook signing secret (``ChannelConfig`` of channel
  ``webhook``, its ``secret``), either as ``Authorization: Bearer <secret>`` or by signing the
  raw body exactly as Segmentor signs its outgoing webhooks: ``X-Segmentor-Timestamp: <unix
  seconds>`` and ``X-Segmentor-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." +
  body)>`` (at most 5 minutes old). No credentials: 401; wrong ones, an unknown workspace or
  one without a secret: 403, all alike. The body is a list of events (or ``{"events": [...]}``),
  at most 1,000, each ``{"type", "email" | "phone", "id", "provider"?, "occurred_at"?,
  "delivery"?, "reason"?}`` with ``type`` one of delivered, bounce_hard (hard_bounce),
  bounce_soft (soft_bounce), complaint, unsubscribe, inbound_stop (stop), inbound_start
  (start). The answer counts recorded, duplicate and error events with a result per event; it
  is 200 when every event was good and 400 when any was not, the good ones applied all the same.

``POST /hooks/<slug>/sms/inbound/`` — Twilio-style inbound SMS (form fields From, To, Body,
  MessageSid), checked against ``X-Twilio-Signature`` (base64 HMAC-SHA1 of the URL followed by
  every parameter name and value, sorted, keyed with the tenant's SMS auth token: the SMS
  ``ChannelConfig.secret``). STOP/START words update consent and suppression and are answered
  with TwiML; HELP gets a short help text; any other message an empty ``<Response/>``.

``POST /hooks/<slug>/sms/status/`` — Twilio-style status callbacks (MessageSid, MessageStatus,
  To, ErrorCode; the delivery id may come as ``?delivery=<id>`` in the callback URL), same
  signature. ``delivered`` is recorded; ``undelivered``/``failed`` with a permanent error
  (unknown or landline number, invalid number) is a hard bounce, with a temporary one
  (handset unreachable, blocked, unknown) a soft bounce; 21610 (the number opted out at the
  provider) an unsubscribe. 204 in every accepted case.

``/anymail/<esp>/tracking/`` — django-anymail's ESP webhooks (``anymail.urls``), with its
  basic-auth ``WEBHOOK_SECRET`` (and the ESP's own signature where it has one); they answer
  404 while ``ANYMAIL["WEBHOOK_SECRET"]`` is not set (they would be open to anyone) or the
  ESP is not set up. Their ``tracking`` signal is received here: bounced/rejected/complained/
  unsubscribed/delivered become feedback for the tenant of the delivery named in the
  message's ``delivery`` metadata; events without one are logged and ignored.

The slug keyword is ``slug``, not ``tenant_slug``: the tenant middleware turns any
``tenant_slug`` route into a members-only page. Bodies are bounded, CSRF does not apply
(the secret is the credential), and garbage gets a 4xx, never a 500.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import functools
import hashlib
import hmac
import logging
import re
from collections.abc import Callable
from typing import Any
from xml.sax.saxutils import escape

import orjson
from django.conf import settings
from django.core.exceptions import DisallowedHost, ImproperlyConfigured, SuspiciousOperation, ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.http.multipartparser import MultiPartParserError
from django.http.response import HttpResponseBase
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from campaigns import feedback, optout
from campaigns.channels.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_webhook_signature
from campaigns.models import CampaignChannel, ChannelConfig, Delivery, DeliveryFeedback
from tenants.context import platform_access, tenant_context
from tenants.models import Tenant

logger = logging.getLogger(__name__)

Kind = DeliveryFeedback.Kind
MAX_BODY_BYTES = 1024 * 1024
MAX_FORM_BYTES = 64 * 1024
MAX_EVENTS = 1000
GENERIC_PROVIDER = "webhook"
TWILIO = "twilio"
TWILIO_SIGNATURE_HEADER = "X-Twilio-Signature"
RESULT_STATUSES = ("recorded", "duplicate", "error")
FORBIDDEN = "The credentials are not valid for this workspace."
EVENT_TYPES: dict[str, str] = {
    **{kind: kind for kind in Kind.values},
    "hard_bounce": Kind.BOUNCE_HARD,
    "soft_bounce": Kind.BOUNCE_SOFT,
    "stop": Kind.INBOUND_STOP,
    "start": Kind.INBOUND_START,
}
# Twilio error codes of undelivered/failed messages that say something about the recipient.
SMS_HARD_ERRORS = frozenset({"21211", "21614", "30005", "30006"})  # invalid, not mobile, unknown, landline
# 30003 is a handset switched off or out of reach: temporary, so three within 30 days suppress.
SMS_SOFT_ERRORS = frozenset({"30003", "30004", "30008"})
SMS_OPTED_OUT_ERRORS = frozenset({"21610"})  # the number replied STOP to the provider itself


def _too_big(request: HttpRequest, limit: int) -> bool:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0) > limit
    except ValueError:
        return True


def _tenant(slug: str) -> Tenant | None:
    return Tenant.objects.filter(slug=slug).first()


def _channel_secret(tenant: Tenant | None, channel: str) -> str:
    if tenant is None:
        return ""
    with tenant_context(tenant.pk):
        config = ChannelConfig.objects.filter(tenant=tenant, channel=channel).first()
    return config.secret if config is not None else ""


def _json(body: dict[str, Any], status: int = 200) -> JsonResponse:
    return JsonResponse(body, status=status)


def _error(code: str, message: str, status: int) -> JsonResponse:
    return _json({"error": {"code": code, "message": message}}, status)


def _messages(error: ValidationError) -> dict[str, list[str]]:
    if hasattr(error, "error_dict"):
        return {field: [str(m) for m in messages] for field, messages in error.message_dict.items()}
    return {"event": [str(m) for m in error.messages]}


# --- the generic endpoint ----------------------------------------------------------------------
@method_decorator([csrf_exempt, never_cache], name="dispatch")
class FeedbackHookView(View):
    """Record a batch of feedback events for one tenant (see the module docstring)."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest, slug: str) -> HttpResponse:
        if _too_big(request, MAX_BODY_BYTES):
            return _error("too_large", f"Send at most {MAX_BODY_BYTES} bytes a request.", 413)
        body = request.body
        authorization = request.headers.get("Authorization", "")
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not authorization and not signature:
            response = _error("unauthenticated", "Authenticate with your webhook signing secret.", 401)
            response["WWW-Authenticate"] = 'Bearer realm="feedback"'
            return response
        tenant = _tenant(slug)
        secret = _channel_secret(tenant, CampaignChannel.WEBHOOK)
        if tenant is None or not _authentic(secret, authorization, signature, request, body):
            logger.warning("feedback.hook.forbidden", extra={"tenant_id": tenant.pk if tenant else None})
            return _error("forbidden", FORBIDDEN, 403)
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _error("invalid_json", "The body is not JSON.", 400)
        events = document.get("events") if isinstance(document, dict) else document
        if not isinstance(events, list):
            return _error("invalid", 'Send a list of events, or {"events": [...]}.', 400)
        if len(events) > MAX_EVENTS:
            return _error("too_many", f"Send at most {MAX_EVENTS} events a request.", 400)
        results = [_record_one(tenant, index, event) for index, event in enumerate(events)]
        counts = {status: sum(1 for r in results if r["status"] == status) for status in RESULT_STATUSES}
        return _json({"counts": counts, "results": results}, 400 if counts["error"] else 200)


def _authentic(secret: str, authorization: str, signature: str, request: HttpRequest, body: bytes) -> bool:
    if not secret:
        return False
    if authorization:
        scheme, _, token = authorization.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), secret.encode())
    timestamp = request.headers.get(TIMESTAMP_HEADER, "")
    return verify_webhook_signature(secret=secret, body=body, signature=signature, timestamp=timestamp)


def _record_one(tenant: Tenant, index: int, raw: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"index": index, "status": "error", "id": None}
    try:
        # feedback_record runs in a savepoint of its own: a bad event undoes only itself.
        recorded = feedback.feedback_record(tenant=tenant, **_parse_event(raw))
    except ValidationError as error:
        result["errors"] = _messages(error)
        return result
    if recorded is None:
        result["status"] = "duplicate"
    else:
        result["status"], result["id"] = "recorded", recorded.pk
    return result


def _text(raw: dict[str, Any], key: str, errors: dict[str, str], *, required: bool = False) -> str:
    value = raw.get(key)
    if value is None or value == "":
        if required:
            errors[key] = "This field is required."
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        errors[key] = "Expected a string."
        return ""
    return str(value).strip()


def _parse_event(raw: Any) -> dict[str, Any]:
    """Turn one JSON event into feedback_record's arguments, or raise ValidationError by field."""
    if not isinstance(raw, dict):
        raise ValidationError({"event": "Each event is a JSON object."})
    errors: dict[str, str] = {}
    kind_name = _text(raw, "type", errors, required=True)
    kind = EVENT_TYPES.get(kind_name.lower()) if kind_name else None
    if kind_name and kind is None:
        errors["type"] = f"{kind_name!r} is not a feedback type ({', '.join(sorted(EVENT_TYPES))})."
    email, phone = _text(raw, "email", errors), _text(raw, "phone", errors)
    if bool(email) == bool(phone) and "email" not in errors and "phone" not in errors:
        errors["email"] = "Give either an email or a phone number."
    event_id = _text(raw, "id", errors, required=True)
    provider = _text(raw, "provider", errors) or GENERIC_PROVIDER
    occurred_at = None
    when = _text(raw, "occurred_at", errors)
    if when:
        try:
            occurred_at = parse_datetime(when)
        except ValueError:
            occurred_at = None
        if occurred_at is None or timezone.is_naive(occurred_at):
            errors["occurred_at"] = "Expected an ISO 8601 time with a zone, e.g. 2026-11-28T09:30:00Z."
    delivery = _text(raw, "delivery", errors)
    if delivery and not delivery.isdigit():
        errors["delivery"] = "Expected a delivery id (a number)."
    reason = _text(raw, "reason", errors)
    if errors:
        raise ValidationError(errors)
    return {
        "channel": CampaignChannel.EMAIL if email else CampaignChannel.SMS,
        "kind": kind, "provider": provider, "provider_event_id": event_id, "occurred_at": occurred_at,
        "address": email or phone, "delivery_id": delivery or None, "detail": reason, "payload": raw,
    }  # fmt: skip


# --- Twilio-style SMS --------------------------------------------------------------------------
def twilio_signature(*, auth_token: str, url: str, params: dict[str, list[str]]) -> str:
    """Return the X-Twilio-Signature of a POST: the URL, then each name and value, names sorted."""
    signed = url + "".join(name + value for name in sorted(params) for value in sorted(params[name]))
    digest = hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _signed_urls(request: HttpRequest) -> list[str]:
    """The URL the provider may have signed: as configured (SITE_URL) and as it reached us."""
    urls = [settings.SITE_URL + request.get_full_path()]
    with contextlib.suppress(DisallowedHost):
        urls.append(request.build_absolute_uri())
    return urls


def _twilio_authentic(request: HttpRequest, tenant: Tenant) -> bool:
    token = _channel_secret(tenant, CampaignChannel.SMS)
    signature = request.headers.get(TWILIO_SIGNATURE_HEADER, "")
    if not token or not signature:
        return False
    params = {name: request.POST.getlist(name) for name in request.POST}
    return any(
        hmac.compare_digest(twilio_signature(auth_token=token, url=url, params=params).encode(), signature.encode())
        for url in _signed_urls(request)
    )


def _twiml(message: str = "") -> HttpResponse:
    inner = f"<Message>{escape(message)}</Message>" if message else ""
    xml = f'<?xml version="1.0" encoding="UTF-8"?><Response>{inner}</Response>'
    return HttpResponse(xml, content_type="text/xml; charset=utf-8")


def _plain(message: str, status: int) -> HttpResponse:
    return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")


class _TwilioHook(View):
    http_method_names = ["post"]

    tenant: Tenant

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method == "POST":
            if _too_big(request, MAX_FORM_BYTES):
                return _plain("Too large.", 413)
            try:
                request.POST  # noqa: B018 - parse now: a malformed body is the sender's error, not ours
            except (MultiPartParserError, SuspiciousOperation, ValueError):
                return _plain("The body is not a form.", 400)
            tenant = _tenant(kwargs.get("slug", ""))
            if tenant is None or not _twilio_authentic(request, tenant):
                logger.warning("feedback.sms.forbidden", extra={"tenant_id": tenant.pk if tenant else None})
                return _plain("Invalid signature.", 403)
            self.tenant = tenant
        return super().dispatch(request, *args, **kwargs)


@method_decorator([csrf_exempt, never_cache], name="dispatch")
class SmsInboundView(_TwilioHook):
    """A reply to the tenant's number: STOP and START words change consent, answered in TwiML."""

    def post(self, request: HttpRequest, slug: str) -> HttpResponse:
        sender, sid, body = (request.POST.get(name, "").strip() for name in ("From", "MessageSid", "Body"))
        if not sender or not sid:
            return _plain("From and MessageSid are required.", 400)
        keyword = feedback.sms_keyword(body)
        name = self.tenant.name
        if keyword == "help":
            return _twiml(f"{name}: reply STOP to unsubscribe, START to subscribe again.")
        if keyword is None:
            return _twiml()
        kind = Kind.INBOUND_STOP if keyword == "stop" else Kind.INBOUND_START
        try:
            feedback.feedback_record(
                tenant=self.tenant, channel=CampaignChannel.SMS, kind=kind, provider=TWILIO, provider_event_id=sid,
                occurred_at=None, address=sender, detail=body.strip().upper()[:20],
                payload={k: request.POST.get(k, "")[:200] for k in ("From", "To", "MessageSid", "Body")},
            )  # fmt: skip
        except ValidationError as error:
            return _plain("; ".join(m for ms in _messages(error).values() for m in ms), 400)
        if kind == Kind.INBOUND_STOP:
            return _twiml(
                f"You are unsubscribed from {name} messages and will receive no more. Reply START to subscribe again."
            )
        return _twiml(f"You are subscribed to {name} messages again. Reply STOP to unsubscribe.")


@method_decorator([csrf_exempt, never_cache], name="dispatch")
class SmsStatusView(_TwilioHook):
    """A delivery receipt: delivered is recorded, failures that concern the number are bounces."""

    def post(self, request: HttpRequest, slug: str) -> HttpResponse:
        sid, status, to = (request.POST.get(name, "").strip() for name in ("MessageSid", "MessageStatus", "To"))
        if not sid or not status:
            return _plain("MessageSid and MessageStatus are required.", 400)
        code = request.POST.get("ErrorCode", "").strip()
        kind = _sms_status_kind(status.lower(), code)
        if kind is None:
            return HttpResponse(status=204)
        delivery = request.GET.get("delivery", "").strip()
        try:
            feedback.feedback_record(
                tenant=self.tenant, channel=CampaignChannel.SMS, kind=kind, provider=TWILIO,
                provider_event_id=f"{sid}:{status.lower()}"[:200], occurred_at=None, address=to or None,
                delivery_id=delivery or None, provider_message_id=sid, detail=f"{status} {code}".strip(),
                payload={k: request.POST.get(k, "")[:200] for k in ("MessageSid", "MessageStatus", "To", "ErrorCode")},
            )  # fmt: skip
        except ValidationError as error:
            return _plain("; ".join(m for ms in _messages(error).values() for m in ms), 400)
        return HttpResponse(status=204)


def _sms_status_kind(status: str, code: str) -> str | None:
    if status == "delivered":
        return Kind.DELIVERED
    if status not in ("undelivered", "failed"):
        return None
    if code in SMS_HARD_ERRORS:
        return Kind.BOUNCE_HARD
    if code in SMS_SOFT_ERRORS:
        return Kind.BOUNCE_SOFT
    if code in SMS_OPTED_OUT_ERRORS:
        return Kind.UNSUBSCRIBE
    return None  # our side (queue, account, content filtering): nothing about the recipient


# --- anymail's tracking signal -----------------------------------------------------------------
ANYMAIL_KINDS = {
    "bounced": Kind.BOUNCE_HARD,
    "complained": Kind.COMPLAINT,
    "unsubscribed": Kind.UNSUBSCRIBE,
    "delivered": Kind.DELIVERED,
}
# A message the ESP refused to send, by anymail's normalised reason.
ANYMAIL_REJECT_KINDS = {
    "invalid": Kind.BOUNCE_HARD,
    "bounced": Kind.BOUNCE_HARD,
    "spam": Kind.COMPLAINT,
    "unsubscribed": Kind.UNSUBSCRIBE,
    "timed_out": Kind.BOUNCE_SOFT,
    "blocked": Kind.BOUNCE_SOFT,
    "other": Kind.BOUNCE_SOFT,
}


def _anymail_kind(event: Any) -> str | None:
    event_type = getattr(event, "event_type", None)
    if event_type == "rejected":
        return ANYMAIL_REJECT_KINDS.get(getattr(event, "reject_reason", None) or "other")
    return ANYMAIL_KINDS.get(str(event_type))


def _anymail_secured() -> bool:
    options = getattr(settings, "ANYMAIL", {}) or {}
    return bool(options.get("WEBHOOK_SECRET") or getattr(settings, "ANYMAIL_WEBHOOK_SECRET", None))


def _tenant_of_delivery(reference: Any) -> int | None:
    pk = feedback.delivery_pk(reference)
    if pk is None:
        return None
    # Platform access: the tenant is what we are finding out (the webhook is the project's ESP account's).
    with platform_access():
        return Delivery.all_tenants.filter(pk=pk).values_list("tenant_id", flat=True).first()


def _esp_payload(event: Any) -> Any:
    raw = getattr(event, "esp_event", None)
    if isinstance(raw, QueryDict):  # form-encoded webhooks
        return dict(raw.lists())
    return raw if isinstance(raw, (dict, list)) else {}


def anymail_tracking_received(sender: Any, event: Any, esp_name: str, **kwargs: Any) -> None:
    """Turn an ESP tracking event into feedback for the tenant whose delivery it reports."""
    kind = _anymail_kind(event)
    if kind is None:
        return
    esp = (esp_name or "esp").lower()[: feedback.MAX_PROVIDER_LENGTH]
    if not _anymail_secured():
        logger.warning("feedback.anymail.insecure_ignored", extra={"esp": esp})
        return
    metadata = getattr(event, "metadata", None) or {}
    reference = metadata.get("delivery") if isinstance(metadata, dict) else None
    tenant_id = _tenant_of_delivery(reference)
    if tenant_id is not None and str(metadata.get("tenant") or tenant_id) != str(tenant_id):
        tenant_id = None  # metadata that contradicts itself names no tenant
    if tenant_id is None:
        logger.info("feedback.anymail.no_tenant", extra={"esp": esp, "event_type": event.event_type})
        return
    tenant = Tenant.objects.get(pk=tenant_id)
    event_id = str(getattr(event, "event_id", "") or "")
    if not event_id or len(event_id) > feedback.MAX_EVENT_ID_LENGTH:
        # No usable id: one made of what identifies the event, so a retry still repeats it.
        seed = f"{event_id}|{event.event_type}|{getattr(event, 'message_id', '')}|{reference}|{event.timestamp}"
        event_id = "sha256:" + hashlib.sha256(seed.encode()).hexdigest()
    occurred_at = event.timestamp if isinstance(event.timestamp, dt.datetime) else None
    detail = " ".join(
        str(p) for p in (event.event_type, event.reject_reason, event.description, event.mta_response) if p
    )
    try:
        feedback.feedback_record(
            tenant=tenant, channel=CampaignChannel.EMAIL, kind=kind, provider=esp, provider_event_id=event_id,
            occurred_at=occurred_at, address=event.recipient or None, delivery_id=reference,
            provider_message_id=str(getattr(event, "message_id", "") or ""), detail=detail, payload=_esp_payload(event),
        )  # fmt: skip
    except ValidationError as error:
        logger.warning(
            "feedback.anymail.invalid", extra={"tenant_id": tenant_id, "esp": esp, "fields": sorted(_messages(error))}
        )


def anymail_guarded(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """Wrap one of anymail's webhook views: closed until its basic auth is set, a 4xx for what it cannot read.

    Without ``WEBHOOK_SECRET`` anymail's webhooks take posts from anyone; an ESP that is not set
    up raises ImproperlyConfigured, and a body it cannot parse KeyError or ValueError: none of
    that is worth a 500 to whoever posted it.
    """

    @functools.wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not _anymail_secured():
            return _plain("Not found.", 404)
        try:
            return view(request, *args, **kwargs)
        except ImproperlyConfigured:
            logger.warning("feedback.anymail.esp_not_configured", extra={"path": request.path})
            return _plain("Not found.", 404)
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            logger.warning("feedback.anymail.unreadable", extra={"path": request.path}, exc_info=True)
            return _plain("The webhook body could not be read.", 400)

    return guarded


# --- anymail's inbound signal: the List-Unsubscribe mailto ---------------------------------------
# Every marketing email's List-Unsubscribe carries mailto:unsubscribe@<domain>?subject=unsubscribe <token>
# (campaigns.sending). Route that address to an ESP's inbound webhook and the mail unsubscribes.
MAILTO_SUBJECT = re.compile(r"\bunsubscribe\s+(\S+)", re.IGNORECASE)


def anymail_inbound_received(sender: Any, event: Any, esp_name: str, **kwargs: Any) -> None:
    """Unsubscribe the person whose signed token is in the subject of an inbound mail (RFC 2369 mailto)."""
    message = getattr(event, "message", None)
    match = MAILTO_SUBJECT.search(str(getattr(message, "subject", "") or ""))
    if match is None:
        logger.info("feedback.inbound_ignored", extra={"esp": esp_name, "reason": "no unsubscribe token"})
        return
    try:
        optout.unsubscribe(
            match.group(1), ip=None, user_agent=f"mailto via {esp_name}"[:200],
            wording="Unsubscribe by email (List-Unsubscribe mailto)",
        )  # fmt: skip
    except ValidationError as error:  # a forged or mangled token, or a contact that is gone
        logger.info("feedback.inbound_ignored", extra={"esp": esp_name, "reason": "; ".join(error.messages)})


def connect_anymail() -> None:
    """Listen to anymail's tracking and inbound signals (once, however often this is called)."""
    from anymail.signals import inbound, tracking

    tracking.connect(anymail_tracking_received, dispatch_uid="campaigns.feedback.anymail_tracking")
    inbound.connect(anymail_inbound_received, dispatch_uid="campaigns.feedback.anymail_inbound")
