"""What the API fuzzer (tests/test_api_fuzz.py) found, pinned down one by one (docs/hardening.md, Fuzzing)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from rest_framework.test import APIClient

from campaigns.services import campaign_create
from tenants.api.schema import WALL_CLOCK_TIME
from tenants.audit import Actor
from tenants.context import tenant_context
from tests.conftest import World


@pytest.fixture(scope="module")
def document(django_db_setup: None, django_db_blocker: Any) -> dict[str, Any]:
    with django_db_blocker.unblock():
        response = APIClient().get("/api/schema/?format=json")
    assert response.status_code == 200
    return response.json()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


@pytest.mark.parametrize("junk", ["abc", "0", "-1", "null", "1.5", "²", "9" * 5000])
def test_a_page_size_that_is_not_a_whole_number_from_1_is_a_400(world: World, api_a: APIClient, junk: str):
    response = api_a.get("/api/v1/members/", {"page_size": junk})
    assert response.status_code == 400 or junk == "9" * 5000
    if response.status_code == 400:
        assert response.json() == {
            "error": {"code": "invalid", "message": "Some fields are invalid.",
                      "fields": {"page_size": ["A whole number from 1 to 1000."]}},
        }  # fmt: skip


def test_a_page_size_above_the_maximum_gets_the_maximum_and_an_empty_one_the_default(world: World, api_a: APIClient):
    assert api_a.get("/api/v1/members/", {"page_size": "5000"}).status_code == 200
    assert api_a.get("/api/v1/members/", {"page_size": "9" * 5000}).status_code == 200
    assert len(api_a.get("/api/v1/members/?page_size=").json()["results"]) == 2  # Alice and Bob


def test_the_stages_switch_of_campaign_figures_takes_true_or_false_only(world: World, api_a: APIClient):
    with tenant_context(world.tenant_a.id):
        campaign, _ = campaign_create(tenant=world.tenant_a, actor=Actor.for_user(world.alice), data={"name": "Sale"})
    url = f"/api/v1/analytics/campaigns/{campaign.pk}/"
    assert api_a.get(url, {"stages": "false"}).json()["stages"] == []
    assert api_a.get(url, {"stages": "yes"}).status_code == 200
    refused = api_a.get(url, {"stages": "1.5e308"})
    assert refused.status_code == 400 and refused.json()["error"]["fields"] == {"stages": ["true or false."]}


def test_every_operation_documents_the_errors_of_the_layers_in_front_of_it(document: dict[str, Any]):
    for method, path, operation in operations(document):
        documented = set(operation["responses"])
        assert {"401", "429", "503"} <= documented, (method, path)
        if method != "get":
            assert "403" in documented, (method, path)
        if "{" in path:
            assert "404" in documented, (method, path)
        if "requestBody" in operation:
            assert "400" in documented, (method, path)


def test_every_error_response_has_the_one_error_shape(document: dict[str, Any]):
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error"] and error["additionalProperties"] is False
    assert error["properties"]["error"]["required"] == ["code", "message"]
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)


def test_blank_and_null_values_the_api_renders_are_in_the_schema(document: dict[str, Any]):
    schemas = document["components"]["schemas"]
    blank = {"type": "string", "enum": [""]}
    assert blank in schemas["Campaign"]["properties"]["sender_email"]["oneOf"]  # a campaign without its own sender
    assert blank in schemas["Delivery"]["properties"]["skip_reason"]["oneOf"]  # a delivery that was not skipped
    assert blank in schemas["Journey"]["properties"]["trigger_stage"]["oneOf"]  # any change of stage
    assert schemas["Contact"]["properties"]["birth_date"]["nullable"] is True
    assert schemas["Engagement"]["properties"]["last_order_at"]["nullable"] is True
    rules = schemas["Segment"]["properties"]["rules"]
    assert {"type": "object", "maxProperties": 0} in rules["oneOf"]  # a static segment's rules: {}
    quiet = schemas["Tenant"]["properties"]["quiet_hours_start"]
    assert quiet["pattern"] == WALL_CLOCK_TIME and re.fullmatch(WALL_CLOCK_TIME, "21:00:00")
