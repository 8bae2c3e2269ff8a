"""Contact upserts, custom attributes and lifecycle stages."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from contacts.lifecycle import derive_stage
from contacts.models import AttributeDefinition, Contact, LifecycleStage, LifecycleTransition
from contacts.services import attribute_define, contact_update, contact_upsert, contacts_bulk_upsert
from tenants.audit import Actor
from tenants.context import tenant_context
from tests.conftest import World

pytestmark = pytest.mark.django_db


@pytest.fixture
def in_a(world: World):
    with tenant_context(world.tenant_a.id):
        yield world.tenant_a


def test_upsert_is_keyed_by_external_id_then_normalised_email(in_a):
    first, created = contact_upsert(tenant=in_a, data={"email": " Ada@Example.COM ", "first_name": "Ada"})
    assert created and first.email == "ada@example.com"
    same, created = contact_upsert(tenant=in_a, data={"email": "ada@example.com", "external_id": "u-1"})
    assert not created and same.pk == first.pk and same.external_id == "u-1"
    again, created = contact_upsert(tenant=in_a, data={"external_id": "u-1", "city": "Berlin"})
    assert not created and again.pk == first.pk and again.city == "Berlin" and again.first_name == "Ada"


def test_fields_are_normalised_and_validated(in_a):
    contact, _ = contact_upsert(
        tenant=in_a,
        data={
            "email": "bo@example.com",
            "phone": "+49 151 23456789",
            "country": "de",
            "interests": "Running, yoga ,running",
            "birth_date": "1990-05-17",
            "time_zone": "Europe/Berlin",
        },
    )
    assert contact.phone == "+4915123456789"
    assert contact.country.code == "DE"
    assert contact.interests == ["running", "yoga"]
    with pytest.raises(ValidationError) as error:
        contact_upsert(
            tenant=in_a,
            data={"email": "not-an-email", "phone": "12", "country": "Atlantis", "birth_date": "17.05.1990"},
        )
    assert set(error.value.message_dict) == {"email", "phone", "country", "birth_date"}


def test_a_row_needs_an_identity_and_known_fields(in_a):
    [no_identity, unknown, ok] = contacts_bulk_upsert(
        tenant=in_a, rows=[{"first_name": "Nobody"}, {"email": "x@example.com", "shoe_size": 42}, {"email": "y@ex.com"}]
    )
    assert no_identity.status == "error" and "external_id" in no_identity.errors["non_field_errors"][0]
    assert unknown.status == "error" and "shoe_size" in unknown.errors["non_field_errors"][0]
    assert ok.status == "created"


def test_bulk_keeps_valid_rows_and_applies_repeats_in_order(in_a):
    results = contacts_bulk_upsert(
        tenant=in_a,
        rows=[
            {"external_id": "a", "first_name": "One"},
            {"email": "bad"},
            {"external_id": "a", "last_name": "Two"},
            "not an object",
        ],
    )
    assert [r.status for r in results] == ["created", "error", "updated", "error"]
    contact = Contact.objects.get(external_id="a")
    assert (contact.first_name, contact.last_name) == ("One", "Two")
    assert results[0].id == results[2].id == contact.pk


def test_an_email_of_another_contact_is_a_row_error(in_a):
    contact_upsert(tenant=in_a, data={"external_id": "a", "email": "a@example.com"})
    contact_upsert(tenant=in_a, data={"external_id": "b", "email": "b@example.com"})
    [result] = contacts_bulk_upsert(tenant=in_a, rows=[{"external_id": "a", "email": "b@example.com"}])
    assert result.status == "error" and "email" in result.errors


def test_contacts_are_unique_per_tenant_not_globally(world: World):
    with tenant_context(world.tenant_a.id):
        a, _ = contact_upsert(tenant=world.tenant_a, data={"email": "same@example.com"})
    with tenant_context(world.tenant_b.id):
        b, created = contact_upsert(tenant=world.tenant_b, data={"email": "same@example.com"})
    assert created and a.pk != b.pk


def test_custom_attributes_are_validated_against_definitions(in_a):
    AttributeDefinition.objects.create(tenant=in_a, key="plan", label="Plan", type="text")
    AttributeDefinition.objects.create(tenant=in_a, key="seats", label="Seats", type="number")
    contact, _ = contact_upsert(
        tenant=in_a, data={"email": "c@example.com", "attributes": {"plan": "pro", "seats": "5"}}
    )
    assert contact.attributes == {"plan": "pro", "seats": 5}
    with pytest.raises(ValidationError) as wrong_type:
        contact_upsert(tenant=in_a, data={"email": "c@example.com", "attributes": {"seats": "many"}})
    assert "seats" in wrong_type.value.message_dict["attributes"][0]
    with pytest.raises(ValidationError, match="unknown attribute"):
        contact_upsert(tenant=in_a, data={"email": "c@example.com", "attributes": {"color": "red"}})
    in_a.auto_define_attributes = True
    in_a.save()
    contact, _ = contact_upsert(
        tenant=in_a, data={"email": "c@example.com", "attributes": {"color": "red", "vip": True}}
    )
    assert contact.attributes == {"plan": "pro", "seats": 5, "color": "red", "vip": True}
    assert AttributeDefinition.objects.get(key="vip").type == "boolean"
    # null removes a key
    contact = contact_update(contact=contact, data={"attributes": {"color": None}})
    assert "color" not in contact.attributes


def test_lifecycle_stages_follow_the_tenant_thresholds(in_a):
    contact = Contact(tenant=in_a)
    assert derive_stage(contact, in_a, has_consent=False) == LifecycleStage.NEW_VISITOR
    assert derive_stage(contact, in_a, has_consent=True) == LifecycleStage.LEAD
    contact.email = "d@example.com"
    assert derive_stage(contact, in_a, has_consent=False) == LifecycleStage.LEAD
    contact.order_count = 1
    assert derive_stage(contact, in_a, has_consent=False) == LifecycleStage.FIRST_TIME_BUYER
    contact.order_count = 2
    assert derive_stage(contact, in_a, has_consent=False) == LifecycleStage.REPEAT_CUSTOMER
    contact.order_count, contact.total_revenue = 5, Decimal("499")
    assert derive_stage(contact, in_a, has_consent=False) == LifecycleStage.REPEAT_CUSTOMER
    contact.total_revenue = Decimal("500")
    assert derive_stage(contact, in_a, has_consent=False) == LifecycleStage.LOYAL_ADVOCATE
    in_a.loyal_advocate_min_orders = 10
    assert derive_stage(contact, in_a, has_consent=False) == LifecycleStage.REPEAT_CUSTOMER


def test_a_new_identified_contact_becomes_a_lead_and_the_change_is_recorded(in_a):
    contact, _ = contact_upsert(tenant=in_a, data={"email": "e@example.com"})
    assert contact.lifecycle_stage == LifecycleStage.LEAD
    [transition] = LifecycleTransition.objects.filter(contact=contact)
    assert (transition.from_stage, transition.to_stage) == ("", LifecycleStage.LEAD)


def test_contact_update_rejects_a_taken_email(in_a):
    contact_upsert(tenant=in_a, data={"email": "taken@example.com"})
    other, _ = contact_upsert(tenant=in_a, data={"email": "free@example.com"})
    with pytest.raises(ValidationError) as error:
        contact_update(contact=other, data={"email": "TAKEN@example.com"})
    assert "email" in error.value.message_dict


@pytest.mark.parametrize("key", ["plan\n", "Plan", "1plan", "plan-name", "p" * 65, ""])
def test_attribute_keys_are_whole_identifiers(in_a, key):
    with pytest.raises(ValidationError) as error:
        attribute_define(tenant=in_a, key=key, label="Plan", type="text", actor=Actor.system("test"))
    assert "key" in error.value.message_dict
