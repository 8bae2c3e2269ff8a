"""While the database cannot be reached, the API answers 503 in its error shape and pages a plain 503.

The database is made unreachable for this process only: the connection is closed and pointed at a
local port nobody listens on (connection refused at once), then put back. No test database
transaction is open meanwhile (the tests take no ``db`` fixture; ``django_db_blocker`` lets the
requests try to connect).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import DatabaseError, IntegrityError, OperationalError, connection, connections
from django.test import Client
from django.urls import path

from segmentor.unavailable import database_unreachable
from tenants.context import tenant_context
from tests.mail import free_port


@pytest.fixture
def database_down(django_db_blocker) -> Iterator[None]:
    with django_db_blocker.unblock():
        saved = dict(connection.settings_dict)
        connection.close()
        connection.settings_dict.update(HOST="127.0.0.1", PORT=str(free_port()))
        try:
            yield
        finally:
            connection.close()
            connection.settings_dict.clear()
            connection.settings_dict.update(saved)


def assert_api_unavailable(response) -> None:
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == "unavailable"
    assert "database cannot be reached" in body["error"]["message"]
    assert "Traceback" not in response.content.decode()


def test_the_api_answers_503_in_its_error_shape(database_down):
    client = Client(raise_request_exception=False)
    batch = {"events": [{"event": "signup", "email": "ada@example.com", "idempotency_key": "k-1"}]}
    assert_api_unavailable(
        client.post(
            "/api/v1/events/batch/", batch, content_type="application/json", HTTP_AUTHORIZATION="Bearer sk_whatever"
        )
    )
    assert_api_unavailable(client.get("/api/v1/contacts/", HTTP_AUTHORIZATION="Bearer sk_whatever"))


def test_pages_answer_a_plain_503_page(database_down):
    client = Client(raise_request_exception=False)
    # The tenant middleware reads the session and the membership before any view runs.
    client.cookies["sessionid"] = "a-session-the-database-would-know"
    for page in ("/t/acme/contacts/", "/accounts/login/", "/"):
        response = client.get(page)
        assert response.status_code == 503, page
        assert response["Retry-After"] == "5"
        assert response["Content-Type"].startswith("text/html")
        body = response.content.decode()
        assert "Temporarily unavailable" in body and "Traceback" not in body


def test_healthz_reports_the_database_in_its_own_shape(database_down, settings):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"  # not the point here, and fast
    response = Client().get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["database"] == "error: OperationalError"


def boom(request):
    raise IntegrityError("duplicate key value violates unique constraint")


urlpatterns = [path("boom/", boom)]
handler500 = "segmentor.views.server_error"


def test_other_database_errors_stay_500(db, settings):
    settings.ROOT_URLCONF = __name__
    assert Client(raise_request_exception=False).get("/boom/").status_code == 500


def test_what_counts_as_unreachable():
    class Refused(Exception):
        sqlstate = None

    class Shutdown(Exception):
        sqlstate = "57P01"

    class Deadlock(Exception):
        sqlstate = "40P01"

    def wrapped(cause: Exception) -> OperationalError:
        error = OperationalError(str(cause))
        error.__cause__ = cause
        return error

    assert database_unreachable(wrapped(Refused("connection refused")))
    assert database_unreachable(wrapped(Shutdown("terminating connection due to administrator command")))
    assert not database_unreachable(wrapped(Deadlock("deadlock detected")))
    assert not database_unreachable(IntegrityError("duplicate key"))
    assert not database_unreachable(DatabaseError("syntax error"))
    assert not database_unreachable(None)


def test_a_connection_lost_under_the_tenant_setting_raises_djangos_error(db, world):
    """The first statement of a tenant's transaction sets the tenant (tenants/db/postgresql): when the
    connection is gone, that must raise Django's OperationalError like any query, so the request
    answers 503 and the connection is dropped, not a bare psycopg error and a 500."""
    other = connections.create_connection("default")
    try:
        other.ensure_connection()
        other.set_autocommit(False)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s, 5000)", [other.connection.info.backend_pid])
        with tenant_context(world.tenant_a.id), pytest.raises(OperationalError) as raised, other.cursor() as cursor:
            cursor.execute("SELECT 1")
        assert database_unreachable(raised.value)
        assert other.errors_occurred and not other.is_usable()
    finally:
        other.close()


def test_the_api_answers_while_the_shared_cache_is_away(world, api_a, settings):
    """Throttle counters live in Redis: while it restarts, requests go through unthrottled, not 500."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        }
    }
    response = api_a.get("/api/v1/contacts/")
    assert response.status_code == 200, response.content
