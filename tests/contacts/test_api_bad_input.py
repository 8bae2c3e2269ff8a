"""No input makes a contacts endpoint fail: junk in any field is a 400 in the one error shape."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.conftest import World

pytestmark = pytest.mark.django_db

JUNK = [
    None, True, -1, 1.5, 10**30, "", "x" * 5000, "\x00", "line\nbreak", [], [1, "a"],
    {"nested": {"deep": [1, 2, {"x": None}]}}, "2026-13-01T25:61:00Z", "NaN",
]  # fmt: skip


def check(response) -> None:
    assert response.status_code < 500, response.content
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) <= {"code", "message", "fields"} and error["message"]


@pytest.fixture
def ids(world: World, api_a: APIClient) -> dict[str, int]:
    contact = api_a.post("/api/v1/contacts/", {"external_id": "u-1", "email": "a@example.com"}, format="json").json()
    attribute = api_a.post("/api/v1/attributes/", {"key": "plan", "type": "text"}, format="json").json()
    return {"contact": contact["id"], "attribute": attribute["id"]}


def bodies(fields: list[str]) -> list[object]:
    """Every junk value in every field, plus junk as the whole body."""
    out: list[object] = [*JUNK]
    for name in fields:
        out += [{name: value} for value in JUNK]
    return out


CASES = [
    ("post", "/api/v1/contacts/", ["external_id", "email", "phone", "birth_date", "country", "time_zone",
                                   "interests", "push_tokens", "attributes"]),
    ("patch", "/api/v1/contacts/{contact}/", ["email", "phone", "birth_date", "interests", "attributes"]),
    ("post", "/api/v1/contacts/bulk/", ["contacts"]),
    ("post", "/api/v1/events/", ["event", "occurred_at", "properties", "revenue", "currency", "source",
                                 "idempotency_key", "contact_id", "external_id", "email", "anonymous_id"]),
    ("post", "/api/v1/events/batch/", ["events"]),
    ("post", "/api/v1/identify/", ["anonymous_id", "traits"]),
    ("post", "/api/v1/contacts/{contact}/consent/", ["channel", "purpose", "status", "legal_basis", "wording",
                                                     "double_opt_in", "ip_address", "user_agent"]),
    ("post", "/api/v1/suppressions/", ["channel", "address", "reason", "note"]),
    ("post", "/api/v1/attributes/", ["key", "label", "type"]),
    ("patch", "/api/v1/attributes/{attribute}/", ["key", "label", "type"]),
]  # fmt: skip


@pytest.mark.parametrize(("verb", "url", "fields"), CASES, ids=[f"{v} {u}" for v, u, _ in CASES])
def test_junk_never_breaks_an_endpoint(world: World, api_a: APIClient, ids, verb, url, fields):
    url = url.format(**ids)
    for body in bodies(fields):
        check(getattr(api_a, verb)(url, body, format="json"))


def test_junk_inside_batch_rows_is_reported_per_row(world: World, api_a: APIClient):
    for value in JUNK:
        rows = [{"external_id": "u-2", "city": value}, {"email": value}, value]
        check(api_a.post("/api/v1/contacts/bulk/", {"contacts": rows}, format="json"))
        events = [{"event": "page_view", "external_id": value}, {"event": value, "email": "a@example.com"}, value]
        check(api_a.post("/api/v1/events/batch/", {"events": events}, format="json"))
        check(api_a.post("/api/v1/identify/", {"anonymous_id": "anon", "traits": {"email": value}}, format="json"))


@pytest.mark.parametrize(
    "query",
    ["email=%00", "country=%F0%9F%98%80", "updated_since=2026-02-30", "lifecycle_stage=", "page_size=-1",
     "page_size=abc", "cursor=garbage", "external_id=" + "x" * 3000],
)  # fmt: skip
def test_junk_in_list_filters_is_never_a_500(world: World, api_a: APIClient, query):
    check(api_a.get(f"/api/v1/contacts/?{query}"))
    check(api_a.get(f"/api/v1/suppressions/?channel=email&address={query}"))


def test_malformed_bodies_and_wrong_content_types(world: World, api_a: APIClient, ids):
    for url in ("/api/v1/contacts/", "/api/v1/contacts/bulk/", "/api/v1/events/", "/api/v1/events/batch/",
                "/api/v1/identify/", "/api/v1/suppressions/", "/api/v1/attributes/"):  # fmt: skip
        # The last: nested deeper than Python's JSON decoder can recurse.
        for body in ("{", "[1,", "nul", '{"a": NaN}', "\xff\xfe", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"):
            check(api_a.post(url, body, content_type="application/json"))
        check(api_a.post(url, "a=1&b=2", content_type="application/x-www-form-urlencoded"))
        response = api_a.post(url, "<xml/>", content_type="application/xml")
        assert response.status_code == 415 and response.json()["error"]["code"] == "unsupported_media_type"
