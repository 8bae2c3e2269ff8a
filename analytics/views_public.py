"""The open pixel and the click redirect: public (the signed token is the credential), fast, never failing.

Recording is best effort: a pixel always answers with the image and a valid click token always
redirects, even if recording failed (the reader must not pay for our outage). An invalid token
answers 404 and redirects nowhere.
"""

from __future__ import annotations

import logging

from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from analytics.services import message_event_record
from analytics.tracking import Clicked, Opened, read_click, read_open
from tenants.context import tenant_context
from tenants.models import Tenant

logger = logging.getLogger(__name__)

# The smallest transparent GIF (43 bytes).
PIXEL = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")


def _record(request: HttpRequest, seen: Opened | Clicked) -> None:
    try:
        with tenant_context(seen.tenant_id):
            tenant = Tenant.objects.filter(pk=seen.tenant_id).first()
            if tenant is not None:
                message_event_record(
                    tenant=tenant,
                    seen=seen,
                    user_agent=request.headers.get("User-Agent", ""),
                    method=request.method or "",
                )
    except DatabaseError:
        logger.warning("tracking.not_recorded", extra={"tenant_id": seen.tenant_id, "delivery_id": seen.delivery_id})


@never_cache
@require_http_methods(["GET", "HEAD"])
def open_pixel(request: HttpRequest, token: str) -> HttpResponse:
    opened = read_open(token)
    if opened is not None:
        _record(request, opened)
    return HttpResponse(PIXEL, content_type="image/gif")


@never_cache
@require_http_methods(["GET", "HEAD"])
def click(request: HttpRequest, token: str) -> HttpResponse:
    clicked = read_click(token)
    if clicked is None:
        raise Http404("This link is not valid.")
    _record(request, clicked)
    response = HttpResponseRedirect(clicked.url)
    response["Referrer-Policy"] = "no-referrer"
    return response
