"""503 instead of a 500 while the database cannot be reached.

When PostgreSQL is restarting, unreachable or refusing connections, every request fails on its
first query (with ``ATOMIC_REQUESTS`` already when the view's transaction opens, or earlier in a
middleware that reads the session or the tenant membership). Those requests answer **503 Service
Unavailable with ``Retry-After``**: the API in its one error shape (``{"error": {"code":
"unavailable", "message": …}}``), pages with a plain 503 page that needs no database. Nothing is
retried here: the client retries (API writes carry idempotency keys), and the first request after
the database is back reconnects (``CONN_HEALTH_CHECKS``).

Whichever layer raised, Django turns an uncaught exception into a response through the 500 handler
(``segmentor.views.server_error``), which asks ``unavailable_response_for_current_exception``
first. Other database errors (a constraint, a deadlock, a bad statement) stay 500s. With ``DEBUG``
on, Django shows its technical 500 page instead, as for any other error.
"""

from __future__ import annotations

import sys

from django import db
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template import loader

from tenants.api.errors import error_body

RETRY_AFTER_SECONDS = 5
API_MESSAGE = (
    "The service is temporarily unavailable: its database cannot be reached. Retry in a few seconds "
    "(with the same idempotency keys)."
)
# SQLSTATEs that mean "the server is not there for you right now": connection exceptions (class
# 08), shutting down (57P01 admin, 57P02 crash), starting up (57P03), too many connections (53300).
UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})


def database_unreachable(error: BaseException | None) -> bool:
    """Whether ``error`` says the database cannot be reached (rather than that a statement failed)."""
    if isinstance(error, db.InterfaceError):  # the connection is already closed
        return True
    if not isinstance(error, db.OperationalError):
        return False
    sqlstate = getattr(error.__cause__, "sqlstate", None) or getattr(error, "sqlstate", None)
    # No SQLSTATE: the client library failed to connect or lost the connection.
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in UNAVAILABLE_SQLSTATES


def unavailable_response(request: HttpRequest) -> HttpResponse:
    """The 503 for ``request``: JSON in the API's error shape under /api/, else a plain page."""
    response: HttpResponse
    if request.path.startswith("/api/"):
        response = JsonResponse(error_body("unavailable", API_MESSAGE), status=503)
    else:
        # Rendered without the request: context processors would query the database.
        response = HttpResponse(loader.render_to_string("503.html"), status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response["Cache-Control"] = "no-store"
    return response


def unavailable_response_for_current_exception(request: HttpRequest) -> HttpResponse | None:
    """In the 500 handler: the 503 when the exception being handled is an unreachable database."""
    error = sys.exc_info()[1]
    return unavailable_response(request) if database_unreachable(error) else None
