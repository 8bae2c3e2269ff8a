"""The campaigns REST API: CRUD with audience and variants, actions, runs and deliveries, channel configs, schema.

Isolation (Charlie's key, the read-only key, no key) is walked for every route by
tests/isolation; the tests here add what a client of each endpoint would notice.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from rest_framework.test import APIClient

from campaigns.models import Campaign, CampaignRun, ChannelConfig, Delivery, Variant
from contacts.consent import ConsentEvidence, consent_change
from contacts.models import Contact
from segments.models import Segment
from segments.services import segment_create, static_members_add
from tenants.audit import Actor
from tenants.context import tenant_context
from tenants.models import AuditLog, Tenant
from tests.conftest import World

pytestmark = pytest.mark.django_db

CAMPAIGNS = "/api/v1/campaigns/"
CHANNELS = "/api/v1/channels/"
ACTOR = Actor.system("test")


def fields_of(response: Any) -> dict[str, Any]:
    """The field errors of a 400, after checking it has the one error shape."""
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert set(error) <= {"code", "message", "fields"} and error["code"] == "invalid" and error["message"]
    return error.get("fields", {})


def static_segment(tenant: Tenant, name: str, contacts: list[Contact] | None = None) -> Segment:
    with tenant_context(tenant.id):
        segment = segment_create(tenant=tenant, actor=ACTOR, name=name, kind=Segment.Kind.STATIC)
        if contacts:
            static_members_add(segment=segment, actor=ACTOR, contact_ids=[c.pk for c in contacts])
        return segment


def people(tenant: Tenant, count: int, *, consent: bool = True) -> list[Contact]:
    with tenant_context(tenant.id):
        made = [
            Contact.objects.create(tenant=tenant, email=f"p{i}@{tenant.slug}.example", first_name=f"P{i}")
            for i in range(count)
        ]
        if consent:
            for contact in made:
                consent_change(
                    contact=contact, channel="email", purpose="marketing", status="granted",
                    evidence=ConsentEvidence(source="api"), actor=ACTOR,
                )  # fmt: skip
        return made


def email_variant(**overrides: Any) -> dict[str, Any]:
    return {"name": "Everyone", "target": "default", "subject": "Hello", "html_body": "<p>Hi</p>", **overrides}


def create(api: APIClient, **body: Any) -> dict[str, Any]:
    response = api.post(CAMPAIGNS, {"name": "Newsletter", **body}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def set_status(campaign_id: int, tenant: Tenant, status: str) -> None:
    with tenant_context(tenant.id):
        Campaign.objects.filter(pk=campaign_id).update(status=status)


# --- create, read, update, delete ----------------------------------------------------------------------
def test_create_with_audience_and_variants_and_read_it_back(world: World, api_a: APIClient):
    leads, vips, churned = (static_segment(world.tenant_a, name) for name in ("Leads", "VIPs", "Churned"))
    created = create(
        api_a, channel="email", description="November",
        audience={"include": [leads.pk, vips.pk], "exclude": [churned.pk]},
        variants=[
            email_variant(name="Leads", target="stage", target_stage="lead", subject="Try it, {{ contact.first_name }}",
                          cta_label="Start free trial", cta_url="https://example.com/trial"),
            email_variant(name="VIP", target="segment", target_segment=vips.pk, weight=50),
            email_variant(),
        ],
    )  # fmt: skip
    assert created["status"] == "draft" and created["channel"] == "email"
    assert created["audience"] == {"include": sorted([leads.pk, vips.pk]), "exclude": [churned.pk]}
    assert [(v["name"], v["position"], v["target"]) for v in created["variants"]] == [
        ("Leads", 0, "stage"), ("VIP", 1, "segment"), ("Everyone", 2, "default"),
    ]  # fmt: skip
    assert created["variants"][1]["target_segment"] == vips.pk and created["variants"][1]["weight"] == 50
    assert created["warnings"] == {}

    fetched = api_a.get(f"{CAMPAIGNS}{created['id']}/").json()
    assert fetched["variants"] == created["variants"] and "warnings" not in fetched
    with tenant_context(world.tenant_a.id):
        assert AuditLog.objects.filter(action="campaign.created", object_id=str(created["id"])).exists()
        assert Campaign.objects.get(pk=created["id"]).tenant_id == world.tenant_a.id


def test_unknown_variables_come_back_as_warnings_under_their_path(world: World, api_a: APIClient):
    created = create(api_a, variants=[email_variant(), email_variant(subject="Hi {{ contact.nickname }}")])
    assert created["warnings"] == {"variants[1].subject": ["Unknown variable: {{ contact.nickname }} renders empty."]}


def test_list_filters_by_status_channel_and_search(
    world: World, api_a: APIClient, api_b: APIClient, django_assert_max_num_queries
):
    first = create(api_a, name="Spring sale", channel="email")
    second = create(api_a, name="SMS blast", channel="sms")
    create(api_b, name="Spring sale B")
    set_status(second["id"], world.tenant_a, "sent")

    def names(query: str) -> list[str]:
        response = api_a.get(f"{CAMPAIGNS}{query}")
        assert response.status_code == 200, response.content
        return [c["name"] for c in response.json()["results"]]

    for i in range(5):
        create(api_a, name=f"Extra {i}", variants=[email_variant(), email_variant()])
    with django_assert_max_num_queries(10):  # not one query per campaign
        assert len(api_a.get(CAMPAIGNS).json()["results"]) == 7
    assert names("?search=extra") == [f"Extra {i}" for i in reversed(range(5))]
    assert names("?channel=sms") == ["SMS blast"]
    assert names("?status=sent") == ["SMS blast"]
    assert names("?search=spring") == ["Spring sale"]
    assert first["id"] != second["id"]
    assert fields_of(api_a.get(f"{CAMPAIGNS}?status=mailed")) == {"status": ['"mailed" is not a valid choice.']}
    assert fields_of(api_a.get(f"{CAMPAIGNS}?stauts=sent")) == {"stauts": ["Unknown field."]}


def test_a_segment_of_another_tenant_is_refused_by_its_id(world: World, api_a: APIClient):
    mine = static_segment(world.tenant_a, "Mine")
    theirs = static_segment(world.tenant_b, "Theirs")
    fields = fields_of(
        api_a.post(
            CAMPAIGNS,
            {
                "name": "X", "audience": {"include": [mine.pk, theirs.pk], "exclude": [999999]},
                "variants": [email_variant(target="segment", target_segment=theirs.pk)],
            },
            format="json",
        )
    )  # fmt: skip
    assert fields == {
        "audience.include": [f"No segment with id {theirs.pk} in this workspace."],
        "audience.exclude": ["No segment with id 999999 in this workspace."],
        "variants[0].target_segment": [f"No segment with id {theirs.pk} in this workspace."],
    }
    with tenant_context(world.tenant_a.id):
        assert not Campaign.objects.exists()


def test_a_bad_template_is_refused_at_its_field_path_and_line(world: World, api_a: APIClient):
    body = "<p>Hello</p>\n{% if contact.first_name %}\n<p>{{ contact.first_name }</p>"
    fields = fields_of(
        api_a.post(
            CAMPAIGNS, {"name": "X", "variants": [email_variant(), email_variant(html_body=body)]}, format="json"
        )
    )
    assert list(fields) == ["variants[1].html_body"]
    [message] = fields["variants[1].html_body"]
    assert message.startswith("Line 3:"), message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"schedule": "recurring", "crontab": "0 9 * *"}, {"crontab": ["Five fields"]}),
        ({"schedule": "recurring", "crontab": "61 9 * * 1"}, {"crontab": ["minute"]}),
        ({"schedule": "recurring"}, {"crontab": ["Required for a recurring campaign"]}),
        ({"schedule": "at", "send_at": "2020-01-01T09:00:00Z"}, {"send_at": ["Must be in the future."]}),
        ({"schedule": "at"}, {"send_at": ["Required to send at a date and time."]}),
        ({"schedule": "local_time"}, {"local_time": ["Required to send at a local time"]}),
        ({"schedule": "whenever"}, {"schedule": ['"whenever" is not a valid choice.']}),
        ({"variants": [{"name": "A", "target": "segment"}]}, {"variants[0].target_segment": ["Required"]}),
        ({"variants": [{"name": "A", "target": "stage"}]}, {"variants[0].target_stage": ["Required"]}),
        ({"variants": [{"name": "A", "colour": "red"}]}, {"variants[0].colour": ["Unknown field."]}),
        ({"audience": {"include": ["x"]}}, {"audience.include[0]": ["A valid integer is required."]}),
        ({"status": "sent"}, {"status": ["This field is read-only."]}),
        ({"cost": "lots"}, {"cost": ["A valid number is required."]}),
        ({"variants": [{"name": "v"}] * 51}, {"variants": ["Ensure this field has no more than 50 elements."]}),
        ({"audience": {"include": [1], "exclude": [1]}}, {"audience.exclude": ["Segment 1 cannot be included"]}),
    ],
)
def test_bad_fields_answer_400_naming_them(world: World, api_a: APIClient, body: dict, expected: dict):
    fields = fields_of(api_a.post(CAMPAIGNS, {"name": "X", **body}, format="json"))
    assert set(fields) == set(expected), fields
    for name, starts in expected.items():
        assert fields[name][0].startswith(starts[0]) or starts[0] in fields[name][0], fields


def test_a_send_at_without_offset_is_read_in_the_workspace_time_zone(world: World, api_a: APIClient):
    world.tenant_a.time_zone = "Europe/Berlin"
    world.tenant_a.save()
    next_year = timezone.now().year + 1
    created = create(api_a, schedule="at", send_at=f"{next_year}-01-15T09:00:00")
    with tenant_context(world.tenant_a.id):
        send_at = Campaign.objects.get(pk=created["id"]).send_at
    assert send_at == dt.datetime(next_year, 1, 15, 8, 0, tzinfo=dt.UTC)


def test_patch_changes_fields_keeps_named_variants_and_replaces_the_audience(world: World, api_a: APIClient):
    one, two = static_segment(world.tenant_a, "One"), static_segment(world.tenant_a, "Two")
    created = create(api_a, audience={"include": [one.pk]}, variants=[email_variant(name="A"), email_variant(name="B")])
    a, b = created["variants"]
    response = api_a.patch(
        f"{CAMPAIGNS}{created['id']}/",
        {
            "name": "Renamed", "audience": {"include": [two.pk]},
            "variants": [{"id": b["id"], "name": "B2", "subject": "New"}, email_variant(name="C")],
        },
        format="json",
    )  # fmt: skip
    assert response.status_code == 200, response.content
    patched = response.json()
    assert patched["name"] == "Renamed" and patched["audience"] == {"include": [two.pk], "exclude": []}
    assert [(v["id"] == b["id"], v["name"], v["position"]) for v in patched["variants"]] == [
        (True, "B2", 0), (False, "C", 1),
    ]  # fmt: skip
    with tenant_context(world.tenant_a.id):
        assert not Variant.objects.filter(pk=a["id"]).exists()
    # A PATCH without variants leaves them alone; naming another campaign's variant is refused.
    assert (
        api_a.patch(f"{CAMPAIGNS}{created['id']}/", {"description": "d"}, format="json").json()["variants"]
        == (patched["variants"])
    )
    other = create(api_a, name="Other", variants=[email_variant()])
    fields = fields_of(
        api_a.patch(f"{CAMPAIGNS}{created['id']}/", {"variants": [{"id": other["variants"][0]["id"]}]}, format="json")
    )
    assert fields == {"variants[0].id": [f"No variant with id {other['variants'][0]['id']} in this campaign."]}


@pytest.mark.parametrize("state", ["sent", "sending", "cancelled"])
def test_a_sent_sending_or_cancelled_campaign_is_read_only(world: World, api_a: APIClient, state: str):
    created = create(api_a, variants=[email_variant()])
    set_status(created["id"], world.tenant_a, state)
    response = api_a.patch(f"{CAMPAIGNS}{created['id']}/", {"name": "Changed"}, format="json")
    assert fields_of(response) == {}
    assert "read-only" in response.json()["error"]["message"] or "pause it" in response.json()["error"]["message"]
    assert api_a.get(f"{CAMPAIGNS}{created['id']}/").json()["name"] == "Newsletter"


def test_only_a_draft_changes_its_channel(world: World, api_a: APIClient):
    created = create(api_a)
    assert api_a.patch(f"{CAMPAIGNS}{created['id']}/", {"channel": "sms"}, format="json").json()["channel"] == "sms"
    set_status(created["id"], world.tenant_a, "paused")
    fields = fields_of(api_a.patch(f"{CAMPAIGNS}{created['id']}/", {"channel": "email"}, format="json"))
    assert fields == {"channel": ["Only a draft may change its channel."]}


def test_delete_drafts_and_cancelled_only(world: World, api_a: APIClient):
    draft = create(api_a, variants=[email_variant()])
    assert api_a.delete(f"{CAMPAIGNS}{draft['id']}/").status_code == 204
    assert api_a.get(f"{CAMPAIGNS}{draft['id']}/").status_code == 404
    scheduled = create(api_a)
    set_status(scheduled["id"], world.tenant_a, "scheduled")
    response = api_a.delete(f"{CAMPAIGNS}{scheduled['id']}/")
    assert response.status_code == 400 and "cancel it first" in response.json()["error"]["message"]
    set_status(scheduled["id"], world.tenant_a, "cancelled")
    assert api_a.delete(f"{CAMPAIGNS}{scheduled['id']}/").status_code == 204


# --- who may do what ---------------------------------------------------------------------------------------
def test_a_read_only_key_reads_but_cannot_write_or_act(world: World, api_a: APIClient, api_a_read: APIClient):
    created = create(api_a, variants=[email_variant()])
    url = f"{CAMPAIGNS}{created['id']}/"
    assert api_a_read.get(url).status_code == 200
    assert api_a_read.get(f"{url}estimate/").status_code == 200
    for method, path, body in [
        ("post", CAMPAIGNS, {"name": "X"}), ("patch", url, {"name": "X"}), ("delete", url, None),
        ("post", f"{url}schedule/", None), ("post", f"{url}pause/", None), ("post", f"{url}resume/", None),
        ("post", f"{url}cancel/", None), ("post", f"{url}preview/", {"contact_id": 1}),
        ("post", f"{url}send-test/", {"contact_id": 1, "to": "me@example.com"}),
        ("post", CHANNELS, {"channel": "webhook", "backend": "webhook", "secret": "s"}),
    ]:  # fmt: skip
        response = getattr(api_a_read, method)(path, body, format="json")
        assert response.status_code == 403, (method, path, response.status_code)
        assert response.json()["error"]["code"] == "permission_denied"
    assert api_a.get(url).json()["name"] == "Newsletter"


def test_another_tenants_campaign_is_a_404_everywhere(world: World, api_a: APIClient, api_b: APIClient):
    created = create(api_a, variants=[email_variant()])
    url = f"{CAMPAIGNS}{created['id']}/"
    for method, path in [
        ("get", url), ("patch", url), ("delete", url), ("post", f"{url}schedule/"), ("post", f"{url}pause/"),
        ("post", f"{url}cancel/"), ("get", f"{url}estimate/"), ("get", f"{url}runs/"),
        ("post", f"{url}preview/"), ("post", f"{url}send-test/"),
    ]:  # fmt: skip
        response = getattr(api_b, method)(path, {}, format="json")
        assert response.status_code == 404, (method, path)
        assert response.json() == {"error": {"code": "not_found", "message": "Not found."}}
    assert api_b.get(CAMPAIGNS).json()["results"] == []


def test_no_key_is_a_401_and_a_session_is_no_key(world: World, api_a: APIClient):
    """The API authenticates keys only (made by admins): a signed-in viewer cannot write through it."""
    created = create(api_a)
    assert APIClient().get(CAMPAIGNS).status_code == 401
    bob = APIClient()
    bob.force_login(world.bob)
    for method, path in [("get", CAMPAIGNS), ("post", CAMPAIGNS), ("post", f"{CAMPAIGNS}{created['id']}/cancel/")]:
        assert getattr(bob, method)(path, {"name": "X"}, format="json").status_code == 401, (method, path)
    assert api_a.get(f"{CAMPAIGNS}{created['id']}/").json()["status"] == "draft"


# --- actions ------------------------------------------------------------------------------------------------
def test_schedule_lists_what_is_missing(world: World, api_a: APIClient):
    created = create(api_a, variants=[email_variant(subject="")])
    fields = fields_of(api_a.post(f"{CAMPAIGNS}{created['id']}/schedule/"))
    assert set(fields) == {"audience", "variants[0].subject"}
    assert api_a.get(f"{CAMPAIGNS}{created['id']}/").json()["status"] == "draft"


def test_schedule_pause_resume_cancel_a_campaign_at_a_time(world: World, api_a: APIClient):
    segment = static_segment(world.tenant_a, "All", people(world.tenant_a, 2))
    send_at = (timezone.now() + dt.timedelta(days=2)).isoformat()
    created = create(
        api_a, schedule="at", send_at=send_at, audience={"include": [segment.pk]}, variants=[email_variant()]
    )
    url = f"{CAMPAIGNS}{created['id']}/"
    scheduled = api_a.post(f"{url}schedule/")
    assert scheduled.status_code == 200, scheduled.content
    assert scheduled.json()["status"] == "scheduled"
    with tenant_context(world.tenant_a.id):
        task = Campaign.objects.get(pk=created["id"]).periodic_task
        assert task is not None and task.enabled and task.clocked is not None

    assert api_a.post(f"{url}pause/").json()["status"] == "paused"
    assert PeriodicTask.objects.get(pk=task.pk).enabled is False
    with tenant_context(world.tenant_a.id):
        paused = AuditLog.objects.get(action="campaign.paused", object_id=str(created["id"]))
    assert paused.actor_label.startswith("api key A write")
    fields = fields_of(api_a.post(f"{url}pause/"))
    assert fields == {"status": ["A paused campaign cannot be paused."]}
    assert api_a.post(f"{url}resume/").json()["status"] == "scheduled"
    assert PeriodicTask.objects.get(pk=task.pk).enabled is True
    assert fields_of(api_a.post(f"{url}resume/")) == {"status": ["A scheduled campaign cannot be resumed."]}

    # Editing a scheduled campaign's time moves its beat row.
    later = timezone.now() + dt.timedelta(days=5)
    patched = api_a.patch(url, {"send_at": later.isoformat()}, format="json")
    assert patched.status_code == 200, patched.content
    assert PeriodicTask.objects.get(pk=task.pk).clocked.clocked_time == later
    # A scheduled campaign must stay ready: emptying its audience or its subject is refused.
    assert set(fields_of(api_a.patch(url, {"audience": {"include": []}}, format="json"))) == {"audience"}
    variant_id = created["variants"][0]["id"]
    emptied = api_a.patch(url, {"variants": [{"id": variant_id, "subject": ""}]}, format="json")
    assert set(fields_of(emptied)) == {"variants[0].subject"}
    assert api_a.get(url).json()["audience"]["include"] == [segment.pk]

    assert api_a.post(f"{url}cancel/").json()["status"] == "cancelled"
    assert not PeriodicTask.objects.filter(pk=task.pk).exists()
    assert fields_of(api_a.post(f"{url}cancel/")) == {"status": ["A cancelled campaign cannot be cancelled."]}
    assert fields_of(api_a.post(f"{url}pause/")) == {"status": ["A cancelled campaign cannot be paused."]}


def test_estimate_counts_the_audience_and_who_would_be_left_out(world: World, api_a: APIClient):
    consenting = people(world.tenant_a, 3)
    with tenant_context(world.tenant_a.id):
        silent = Contact.objects.create(tenant=world.tenant_a, email="silent@a.example")
        no_email = Contact.objects.create(tenant=world.tenant_a, phone="+4915112345678")
    segment = static_segment(world.tenant_a, "All", [*consenting, silent, no_email])
    excluded = static_segment(world.tenant_a, "Out", consenting[:1])
    created = create(api_a, audience={"include": [segment.pk], "exclude": [excluded.pk]}, variants=[email_variant()])
    estimate = api_a.get(f"{CAMPAIGNS}{created['id']}/estimate/")
    assert estimate.status_code == 200, estimate.content
    counts = estimate.json()
    assert (counts["total"], counts["no_address"], counts["no_consent"], counts["sendable"]) == (4, 1, 1, 2)


# --- runs and deliveries ----------------------------------------------------------------------------------
@pytest.fixture
def sent_run(world: World, api_a: APIClient, django_capture_on_commit_callbacks) -> tuple[dict[str, Any], int]:
    """A campaign sent now to five contacts, its run snapshotted (the send task is not run)."""
    segment = static_segment(world.tenant_a, "All", people(world.tenant_a, 5))
    created = create(api_a, audience={"include": [segment.pk]}, variants=[email_variant()])
    with django_capture_on_commit_callbacks(execute=False):
        response = api_a.post(f"{CAMPAIGNS}{created['id']}/schedule/")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "sending"
    with tenant_context(world.tenant_a.id):
        run = CampaignRun.objects.get(campaign_id=created["id"])
        ids = list(Delivery.objects.filter(run=run).order_by("id").values_list("id", flat=True))
        # As the sender would record them: two sent, one skipped for consent.
        Delivery.objects.filter(pk__in=ids[:2]).update(status="sent", sent_at=timezone.now())
        Delivery.objects.filter(pk=ids[2]).update(status="skipped", skip_reason="no_consent")
    return created, run.pk


def test_runs_show_progress(world: World, api_a: APIClient, sent_run, django_assert_max_num_queries):
    created, run_id = sent_run
    with django_assert_max_num_queries(8):
        runs = api_a.get(f"{CAMPAIGNS}{created['id']}/runs/").json()["results"]
    assert [(r["id"], r["number"], r["status"], r["audience_size"]) for r in runs] == [(run_id, 1, "sending", 5)]
    assert runs[0]["progress"] == {"sent": 2, "skipped": 1, "pending": 2}
    single = api_a.get(f"{CAMPAIGNS}{created['id']}/runs/{run_id}/").json()
    assert single["progress"] == runs[0]["progress"]


def test_deliveries_page_by_cursor_and_filter(world: World, api_a: APIClient, sent_run):
    created, run_id = sent_run
    url = f"{CAMPAIGNS}{created['id']}/runs/{run_id}/deliveries/"
    seen: list[int] = []
    page = api_a.get(f"{url}?page_size=2").json()
    while True:
        assert len(page["results"]) <= 2 and "count" not in page
        seen += [row["id"] for row in page["results"]]
        if not page["next"]:
            break
        page = api_a.get(page["next"]).json()
    assert len(seen) == 5 and seen == sorted(seen)
    skipped = api_a.get(f"{url}?status=skipped").json()["results"]
    assert [(r["status"], r["skip_reason"]) for r in skipped] == [("skipped", "no_consent")]
    assert len(api_a.get(f"{url}?skip_reason=no_consent").json()["results"]) == 1
    assert len(api_a.get(f"{url}?status=sent").json()["results"]) == 2
    assert fields_of(api_a.get(f"{url}?status=lost")) == {"status": ['"lost" is not a valid choice.']}


def test_runs_of_another_campaign_or_tenant_are_404(world: World, api_a: APIClient, api_b: APIClient, sent_run):
    created, run_id = sent_run
    other = create(api_a, name="Other")
    assert api_a.get(f"{CAMPAIGNS}{other['id']}/runs/{run_id}/deliveries/").status_code == 404
    assert api_a.get(f"{CAMPAIGNS}{other['id']}/runs/{run_id}/").status_code == 404
    assert api_b.get(f"{CAMPAIGNS}{created['id']}/runs/{run_id}/deliveries/").status_code == 404
    assert api_b.get(f"{CAMPAIGNS}{created['id']}/runs/").status_code == 404


def test_a_sending_campaign_pauses_and_its_run_stops(world: World, api_a: APIClient, sent_run):
    created, run_id = sent_run
    assert api_a.post(f"{CAMPAIGNS}{created['id']}/pause/").json()["status"] == "paused"
    with tenant_context(world.tenant_a.id):
        assert CampaignRun.objects.get(pk=run_id).status == "paused"
    # While paused its variants may be edited, not removed.
    fields = fields_of(api_a.patch(f"{CAMPAIGNS}{created['id']}/", {"variants": []}, format="json"))
    assert "variants" in fields
    assert api_a.post(f"{CAMPAIGNS}{created['id']}/cancel/").json()["status"] == "cancelled"
    with tenant_context(world.tenant_a.id):
        assert not Delivery.objects.filter(run_id=run_id, status="pending").exists()


# --- preview and test sends ---------------------------------------------------------------------------------
def test_preview_renders_a_variant_for_a_contact(world: World, api_a: APIClient):
    [contact] = people(world.tenant_a, 1)
    created = create(api_a, variants=[email_variant(subject="Hi {{ contact.first_name }} {{ contact.shoe_size }}")])
    url = f"{CAMPAIGNS}{created['id']}/preview/"
    response = api_a.post(url, {"contact_id": contact.pk}, format="json")
    assert response.status_code == 200, response.content
    preview = response.json()
    assert preview["subject"] == "Hi P0" and preview["channel"] == "email"
    assert any("shoe_size" in warning for warning in preview["warnings"])
    assert fields_of(api_a.post(url, {"contact_id": 999999}, format="json")) == {
        "contact_id": ["No contact with id 999999."]
    }
    assert fields_of(api_a.post(url, {"contact_id": contact.pk, "variant_id": 999999}, format="json")) == {
        "variant_id": ["No variant with id 999999 in this campaign."]
    }


def test_send_test_sends_one_message_to_the_given_address(world: World, api_a: APIClient, settings):
    from tests.mail import SmtpSink

    [contact] = people(world.tenant_a, 1)
    created = create(api_a, variants=[email_variant(subject="Hello {{ contact.first_name }}")])
    with SmtpSink() as sink:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", sink.port
        settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
        response = api_a.post(
            f"{CAMPAIGNS}{created['id']}/send-test/", {"contact_id": contact.pk, "to": "Me@Example.com"}, format="json"
        )
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "sent"
        [message] = sink.inbox.wait_for(1)
    assert message["To"] == "me@example.com" and message["Subject"] == "[Test] Hello P0"
    with tenant_context(world.tenant_a.id):
        assert not Delivery.objects.exists()
    bad = api_a.post(f"{CAMPAIGNS}{created['id']}/send-test/", {"contact_id": contact.pk, "to": "nope"}, format="json")
    assert "to" in fields_of(bad)


def test_a_test_send_on_a_channel_without_a_provider_is_a_400(world: World, api_a: APIClient):
    with tenant_context(world.tenant_a.id):
        contact = Contact.objects.create(tenant=world.tenant_a, phone="+4915112345678")
    created = create(api_a, channel="sms", variants=[{"name": "All", "sms_body": "Hi"}])
    response = api_a.post(
        f"{CAMPAIGNS}{created['id']}/send-test/", {"contact_id": contact.pk, "to": "+4915112345679"}, format="json"
    )
    assert "No SMS provider is set up" in fields_of(response)["channel"][0]


# --- channel configuration ----------------------------------------------------------------------------------
def test_channel_config_is_checked_per_backend_and_the_secret_never_comes_back(world: World, api_a: APIClient):
    fields = fields_of(api_a.post(CHANNELS, {"channel": "sms", "backend": "twilio", "settings": {}}, format="json"))
    assert fields == {
        "settings.base_url": ["Required for the twilio backend."],
        "settings.account_sid": ["Required for the twilio backend."],
        "settings.sender": ["Required for the twilio backend."],
        "secret": ["Required for the twilio backend (the auth token)."],
    }
    assert "backend" in fields_of(api_a.post(CHANNELS, {"channel": "sms", "backend": "fcm"}, format="json"))
    bad_url = {"channel": "push", "backend": "fcm", "settings": {"base_url": "ftp://x", "colour": "red"}, "secret": "k"}
    assert fields_of(api_a.post(CHANNELS, bad_url, format="json")) == {
        "settings.base_url": ["Expected an http(s) URL."],
        "settings.colour": ["Unknown setting for the fcm backend (known: base_url)."],
    }

    body = {
        "channel": "sms", "backend": "twilio", "secret": "tok-123456",
        "settings": {"base_url": "https://api.twilio.com/2010-04-01", "account_sid": "AC1", "sender": "+4915112345678"},
    }  # fmt: skip
    response = api_a.post(CHANNELS, body, format="json")
    assert response.status_code == 201, response.content
    config = response.json()
    assert config["has_secret"] is True and "secret" not in config and b"tok-123456" not in response.content
    assert "configured already" in fields_of(api_a.post(CHANNELS, body, format="json"))["channel"][0]

    url = f"{CHANNELS}{config['id']}/"
    patched = api_a.patch(url, {"settings": {**body["settings"], "sender": "Shop"}}, format="json")  # type: ignore[dict-item]
    assert patched.status_code == 200 and patched.json()["settings"]["sender"] == "Shop"
    with tenant_context(world.tenant_a.id):
        assert ChannelConfig.objects.get(pk=config["id"]).secret == "tok-123456"  # kept when omitted
    assert fields_of(api_a.patch(url, {"secret": ""}, format="json")) == {
        "secret": ["Required for the twilio backend (the auth token)."]
    }
    assert fields_of(api_a.put(url, {"settings": {}}, format="json")) == {"backend": ["This field is required."]}
    replaced = api_a.put(url, {"backend": "console"}, format="json")
    assert replaced.status_code == 200 and replaced.json()["settings"] == {} and replaced.json()["backend"] == "console"
    assert [c["channel"] for c in api_a.get(CHANNELS).json()] == ["sms"]
    assert b"tok-123456" not in api_a.get(CHANNELS).content


def test_a_webhook_needs_only_its_secret_and_other_tenants_configs_are_404(
    world: World, api_a: APIClient, api_b: APIClient
):
    assert fields_of(api_a.post(CHANNELS, {"channel": "webhook", "backend": "webhook"}, format="json")) == {
        "secret": ["Required for the webhook backend (the signing secret)."]
    }
    created = api_a.post(CHANNELS, {"channel": "webhook", "backend": "webhook", "secret": "whsec"}, format="json")
    assert created.status_code == 201, created.content
    url = f"{CHANNELS}{created.json()['id']}/"
    for method in ("get", "patch", "put", "delete"):
        assert getattr(api_b, method)(url, {}, format="json").status_code == 404, method
    assert api_b.get(CHANNELS).json() == []
    assert api_a.delete(url).status_code == 204
    assert api_a.get(CHANNELS).json() == []


# --- the schema ----------------------------------------------------------------------------------------------
def test_openapi_documents_every_campaigns_endpoint(db):
    response = APIClient().get("/api/schema/?format=json")
    assert response.status_code == 200
    document = response.json()
    paths = document["paths"]
    expected = {
        "/api/v1/campaigns/": {"get", "post"},
        "/api/v1/campaigns/{campaign_id}/": {"get", "patch", "delete"},
        "/api/v1/campaigns/{campaign_id}/schedule/": {"post"},
        "/api/v1/campaigns/{campaign_id}/pause/": {"post"},
        "/api/v1/campaigns/{campaign_id}/resume/": {"post"},
        "/api/v1/campaigns/{campaign_id}/cancel/": {"post"},
        "/api/v1/campaigns/{campaign_id}/send-test/": {"post"},
        "/api/v1/campaigns/{campaign_id}/preview/": {"post"},
        "/api/v1/campaigns/{campaign_id}/estimate/": {"get"},
        "/api/v1/campaigns/{campaign_id}/runs/": {"get"},
        "/api/v1/campaigns/{campaign_id}/runs/{run_id}/": {"get"},
        "/api/v1/campaigns/{campaign_id}/runs/{run_id}/deliveries/": {"get"},
        "/api/v1/channels/": {"get", "post"},
        "/api/v1/channels/{channel_config_id}/": {"get", "put", "patch", "delete"},
    }
    for path, verbs in expected.items():
        assert set(paths[path]) - {"parameters"} == verbs, path
    schemas = document["components"]["schemas"]
    create_body = paths["/api/v1/campaigns/"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert create_body == {"$ref": "#/components/schemas/CampaignWriteRequest"}
    assert {"audience", "variants", "send_at", "crontab"} <= set(schemas["CampaignWriteRequest"]["properties"])
    assert "secret" in schemas["ChannelConfigInputRequest"]["properties"]
    assert "secret" not in schemas["ChannelConfig"]["properties"]
    deliveries = paths["/api/v1/campaigns/{campaign_id}/runs/{run_id}/deliveries/"]["get"]
    assert {"status", "skip_reason", "cursor"} <= {p["name"] for p in deliveries["parameters"]}
