"""The public opt-out pages behind the signed link of every marketing message: no login, no tenant URL.

The token is the credential (see campaigns/optout.py); the services run inside its tenant.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import validate_ipv46_address
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from campaigns import optout
from contacts.selectors import purpose_label

ONE_CLICK_BODY = "List-Unsubscribe=One-Click"
SAVED_NOTICES = {
    "changed": "Your choice is saved.",
    "unchanged": "That was already your choice; nothing changed.",
    "paused": f"Messages are paused for {optout.PAUSE_DAYS} days.",
    "resumed": "Your pause has ended: messages you agreed to can reach you again.",
    "all": "You are unsubscribed from everything. You will receive no more messages.",
}


def _client_ip(request: HttpRequest) -> str | None:
    address = request.META.get("REMOTE_ADDR") or ""
    try:
        validate_ipv46_address(address)
    except ValidationError:
        return None
    return address


def _user_agent(request: HttpRequest) -> str:
    return request.headers.get("User-Agent", "")[:500]


def _invalid(request: HttpRequest, error: ValidationError) -> HttpResponse:
    return render(request, "campaigns/optout_invalid.html", {"errors": error.messages}, status=400)


def _gone(request: HttpRequest, error: ValidationError) -> HttpResponse:
    # 200, not an error: the person asked to hear nothing more, and nothing more will come.
    return render(request, "campaigns/optout_gone.html", {"errors": error.messages})


def _outcome_context(outcome: optout.UnsubscribeOutcome, token: str) -> dict[str, object]:
    return {
        "outcome": outcome, "purpose_label": purpose_label(outcome.purpose).lower(), "token": token,
        "tenant_name": outcome.tenant_name, "postal_address": outcome.postal_address,
        "pause_days": optout.PAUSE_DAYS,
    }  # fmt: skip


# RFC 8058: mailbox providers POST the one-click body with no cookies, no CSRF token and no
# Origin we could trust, and must get a 2xx. The exemption is safe because the only effect a
# POST can have is withdrawing consent for the contact that the signed token names: a forged
# cross-site POST can do no more than the token's holder can, and it grants nothing.
@method_decorator([csrf_exempt, never_cache], name="dispatch")
class UnsubscribeView(View):
    """GET shows a button (link scanners prefetch GETs); POST unsubscribes at once (one-click)."""

    http_method_names = ["get", "post", "head"]

    def get(self, request: HttpRequest, token: str) -> HttpResponse:
        try:
            status = optout.unsubscribe_status(token)
        except optout.ContactGone as error:
            return _gone(request, error)
        except ValidationError as error:
            return _invalid(request, error)
        return render(request, "campaigns/unsubscribe.html", _outcome_context(status, token))

    def post(self, request: HttpRequest, token: str) -> HttpResponse:
        # Any POST unsubscribes; the RFC 8058 body only tells us who pressed.
        one_click = request.POST.get("List-Unsubscribe") == "One-Click"
        try:
            outcome = optout.unsubscribe(
                token, ip=_client_ip(request), user_agent=_user_agent(request),
                wording="List-Unsubscribe one-click" if one_click else "Unsubscribe page button",
            )  # fmt: skip
        except optout.ContactGone as error:
            return _gone(request, error)
        except ValidationError as error:
            return _invalid(request, error)
        return render(request, "campaigns/unsubscribed.html", _outcome_context(outcome, token))


@method_decorator(never_cache, name="dispatch")
class PreferencesView(View):
    """The preference centre: a normal form (with a CSRF token) per choice."""

    http_method_names = ["get", "post", "head"]

    def get(self, request: HttpRequest, token: str) -> HttpResponse:
        try:
            page = optout.preference_page(token)
        except optout.ContactGone as error:
            return _gone(request, error)
        except ValidationError as error:
            return _invalid(request, error)
        notice = SAVED_NOTICES.get(request.GET.get("saved", ""))
        context = {
            "page": page, "notice": notice, "pause_days": optout.PAUSE_DAYS,
            "tenant_name": page.tenant_name, "postal_address": page.postal_address,
        }  # fmt: skip
        return render(request, "campaigns/preferences.html", context)

    def post(self, request: HttpRequest, token: str) -> HttpResponse:
        action = request.POST.get("action", "")
        ip, user_agent = _client_ip(request), _user_agent(request)
        try:
            if action == "set":
                changed = optout.preference_change(
                    token, channel=request.POST.get("channel", ""), purpose=request.POST.get("purpose", ""),
                    status=request.POST.get("status", ""), ip=ip, user_agent=user_agent,
                )  # fmt: skip
                saved = "changed" if changed else "unchanged"
            elif action == "pause":
                optout.pause_start(token)
                saved = "paused"
            elif action == "resume":
                optout.pause_end(token)
                saved = "resumed"
            elif action == "unsubscribe_all":
                optout.unsubscribe_all(token, ip=ip, user_agent=user_agent)
                saved = "all"
            else:
                raise ValidationError("Choose one of the buttons on the page.")
        except optout.ContactGone as error:
            return _gone(request, error)
        except ValidationError as error:
            return _invalid(request, error)
        return redirect(f"{request.path}?saved={saved}")
