"""The platform admin for the audience data: every model, every tenant, ledgers read-only."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from django.contrib.admin.sites import site
from django.db import models
from django.test import Client
from django.urls import reverse

from contacts import admin as contacts_admin
from contacts.consent import ConsentEvidence, consent_change, suppression_add
from contacts.ingest import events_ingest
from contacts.models import (
    AttributeDefinition,
    ConsentRecord,
    ConsentState,
    Contact,
    Event,
    EventDailyRollup,
    ImportJob,
    LifecycleTransition,
    PrivacyRequest,
    Suppression,
)
from contacts.privacy import contact_export
from contacts.services import contact_upsert
from tenants.audit import Actor
from tenants.context import platform_access, tenant_context
from tenants.models import AuditLog, Tenant, User
from tests.conftest import World

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("test")
MODELS: list[type[models.Model]] = [
    Contact, AttributeDefinition, Event, EventDailyRollup, LifecycleTransition, ConsentRecord, ConsentState,
    Suppression, PrivacyRequest, ImportJob, AuditLog,
]  # fmt: skip
READ_ONLY: list[type[models.Model]] = [ConsentRecord, ConsentState, AuditLog, Event, LifecycleTransition]


@pytest.fixture
def staff_client(world: World) -> Client:
    staff = User.objects.create_superuser("staff@segmentor.example", "a-long-password")
    client = Client()
    client.force_login(staff)
    return client


def fill(tenant: Tenant, email: str) -> Contact:
    """One of everything for ``tenant``."""
    with tenant_context(tenant.id):
        AttributeDefinition.objects.create(tenant=tenant, key="plan", label="Plan", type="text")
        contact, _ = contact_upsert(tenant=tenant, data={"email": email, "first_name": "Zelda", "attributes": {}})
        consent_change(
            contact=contact, channel="email", purpose="marketing", status="granted",
            evidence=ConsentEvidence(source="form", wording="yes"), actor=SYSTEM,
        )  # fmt: skip
        events_ingest(tenant=tenant, events=[{"contact_id": contact.pk, "event": "purchase", "revenue": "10"}])
        suppression_add(tenant=tenant, channel="email", address=f"gone-{email}", reason="manual")
        suppression_add(tenant=tenant, channel="sms", address="+33612345678", reason="unsubscribe")
        contact_export(contact=contact, actor=SYSTEM)
        ImportJob.objects.create(tenant=tenant, original_name=f"{tenant.slug}.csv", file="imports/x.csv")
    return contact


@pytest.fixture
def filled(world: World) -> tuple[Contact, Contact]:
    return fill(world.tenant_a, "zelda@a.example"), fill(world.tenant_b, "zelda@b.example")


@pytest.fixture(autouse=True)
def as_platform():
    """The test itself reads every tenant's rows, as the admin does (row-level security applies to tests too)."""
    with platform_access():
        yield


def first_of(model: type[models.Model]) -> Any:
    return model.all_tenants.order_by("pk").first()  # type: ignore[attr-defined]


def admin_url(model: type[models.Model], view: str, *args: Any) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def test_every_contacts_model_is_registered_with_the_platform_admin():
    for model in MODELS:
        assert model in site._registry, model
        assert isinstance(site._registry[model], contacts_admin.PlatformAdmin)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m._meta.model_name)
def test_staff_see_every_models_changelist_and_change_page(
    world: World, staff_client: Client, filled, model: type[models.Model], django_assert_max_num_queries
):
    with django_assert_max_num_queries(20):
        changelist = staff_client.get(admin_url(model, "changelist"))
    assert changelist.status_code == 200
    body = changelist.content.decode()
    assert "Tenant A" in body and "Tenant B" in body  # the platform view: every tenant
    row = first_of(model)
    change = staff_client.get(admin_url(model, "change", row.pk))
    assert change.status_code == 200
    filtered = staff_client.get(admin_url(model, "changelist") + f"?tenant__id__exact={world.tenant_b.id}")
    assert filtered.status_code == 200
    assert all(r.tenant_id == world.tenant_b.id for r in filtered.context["cl"].result_list)


@pytest.mark.parametrize("model", READ_ONLY, ids=lambda m: m._meta.model_name)
def test_ledgers_are_read_only(world: World, staff_client: Client, filled, model: type[models.Model]):
    row = first_of(model)
    assert staff_client.get(admin_url(model, "add")).status_code == 403
    assert staff_client.get(admin_url(model, "delete", row.pk)).status_code == 403
    change = staff_client.get(admin_url(model, "change", row.pk))
    assert b'name="_save"' not in change.content  # a view page, no save button
    before = {f.name: getattr(row, f.attname) for f in model._meta.concrete_fields}
    assert staff_client.post(admin_url(model, "change", row.pk), {"status": "withdrawn"}).status_code == 403
    row.refresh_from_db()
    assert {f.name: getattr(row, f.attname) for f in model._meta.concrete_fields} == before


def test_str_holds_no_contact_data(filled):
    # (AuditLog's str names the acting member, e.g. "api_key.created by charlie@b.example": a team
    # member, not an audience contact.)
    for model in MODELS:
        for row in model.all_tenants.all():  # type: ignore[attr-defined]
            text = str(row).lower()
            assert not any(s in text for s in ("zelda", "gone-", "+336", "33612345678")), (model, text)


def test_contact_search_finds_exact_addresses(world: World, staff_client: Client, filled):
    response = staff_client.get(admin_url(Contact, "changelist") + "?q=zelda@b.example")
    assert [c.email for c in response.context["cl"].result_list] == ["zelda@b.example"]
    events = staff_client.get(admin_url(Event, "changelist") + "?q=purchase")
    assert len(events.context["cl"].result_list) == 2
    audit = staff_client.get(admin_url(AuditLog, "changelist") + "?q=contact.exported")
    assert len(audit.context["cl"].result_list) == 2


def test_big_tables_count_at_most_the_cap(world: World, staff_client: Client, filled):
    with mock.patch.object(contacts_admin, "COUNT_CAP", 1):
        response = staff_client.get(admin_url(Contact, "changelist"))
    assert response.context["cl"].result_count == 2  # cap + 1: "more than one", never a full count
    assert response.context["cl"].full_result_count is None


def test_the_erase_action_erases_through_the_service(world: World, staff_client: Client, filled):
    contact_a, contact_b = filled
    response = staff_client.post(
        admin_url(Contact, "changelist"),
        {"action": "erase_contacts", "_selected_action": [contact_a.pk]},
        follow=True,
    )
    assert response.status_code == 200 and "Erased 1 contact(s)." in response.content.decode()
    erased = Contact.all_tenants.get(pk=contact_a.pk)
    assert erased.erased_at is not None and erased.email == ""
    assert Contact.all_tenants.get(pk=contact_b.pk).email == "zelda@b.example"
    assert AuditLog.all_tenants.filter(action="contact.erased", actor_label="staff@segmentor.example").count() == 1


def test_the_suppression_action_keeps_unsubscribes(world: World, staff_client: Client, filled):
    ids = list(Suppression.all_tenants.filter(tenant=world.tenant_a).values_list("pk", flat=True))
    response = staff_client.post(
        admin_url(Suppression, "changelist"), {"action": "remove_suppressions", "_selected_action": ids}, follow=True
    )
    body = response.content.decode()
    assert "Removed 1 suppression(s)." in body and "Kept 1" in body
    assert list(Suppression.all_tenants.filter(tenant=world.tenant_a).values_list("reason", flat=True)) == [
        "unsubscribe"
    ]


def test_tenant_members_are_not_let_into_the_contacts_admin(world: World, alice_client: Client):
    response = alice_client.get(admin_url(Contact, "changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
