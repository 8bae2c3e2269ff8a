from __future__ import annotations

from django.conf import settings
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from django.views.decorators.cache import never_cache

from segmentor.celery import app as celery_app
from segmentor.unavailable import unavailable_response_for_current_exception
from tenants.api.errors import json_not_found, json_server_error


# Not inside the request transaction: with the database down it must still answer, in its own shape.
@transaction.non_atomic_requests
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Report whether the database and the Celery broker can be reached (200 or 503)."""
    checks = {"database": _check_database(), "broker": _check_broker()}
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if healthy else "unavailable", **checks}, status=200 if healthy else 503)


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as error:  # noqa: BLE001 - any failure means unreachable
        return f"error: {type(error).__name__}"


def _check_broker() -> str:
    try:
        with celery_app.connection_for_write(settings.CELERY_BROKER_URL) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as error:  # noqa: BLE001 - any failure means unreachable
        return f"error: {type(error).__name__}"


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith("/api/"):
        return json_not_found(request, exception)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if (unavailable := unavailable_response_for_current_exception(request)) is not None:
        return unavailable  # a middleware's query found the database unreachable: 503, not 500
    if request.path.startswith("/api/"):
        return json_server_error(request)
    return defaults.server_error(request)
