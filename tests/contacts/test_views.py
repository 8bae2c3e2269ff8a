"""The contacts pages: list, search and keyset pages, contact page, edits, consent, privacy, settings, opt-in link."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from unittest import mock

import pytest
from django.core import signing
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from contacts.consent import (
    ConsentEvidence,
    confirmation_token,
    consent_change,
    consent_request_confirmation,
    suppression_add,
)
from contacts.ingest import events_ingest
from contacts.models import (
    AttributeDefinition,
    ConsentRecord,
    ConsentState,
    Contact,
    Event,
    LifecycleTransition,
    PrivacyRequest,
    Suppression,
)
from contacts.normalize import address_hash
from contacts.services import contact_upsert, contacts_bulk_upsert
from tenants.audit import Actor, audit
from tenants.context import tenant_context
from tenants.models import AuditLog, Tenant
from tests.conftest import World

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("test")
FORM_EVIDENCE = ConsentEvidence(source="form", wording="Send me offers", wording_version="v3", ip_address="203.0.113.9")


# --- helpers -----------------------------------------------------------------------------------
def url(name: str, world: World, **kwargs: Any) -> str:
    return reverse(f"contacts:{name}", kwargs={"tenant_slug": world.tenant_a.slug, **kwargs})


def make_contact(tenant: Tenant, **data: Any) -> Contact:
    with tenant_context(tenant.id):
        contact, _ = contact_upsert(tenant=tenant, data=data)
    return contact


def reload(contact: Contact) -> Contact:
    with tenant_context(contact.tenant_id):
        return Contact.objects.get(pk=contact.pk)


def bulk_contacts(tenant: Tenant, count: int, **extra: Any) -> list[int]:
    rows = [{"email": f"bulk{i:04d}@example.com", "first_name": f"Bulk{i:04d}", **extra} for i in range(count)]
    with tenant_context(tenant.id):
        results = contacts_bulk_upsert(tenant=tenant, rows=rows)
    assert all(r.status == "created" for r in results)
    return sorted((r.id for r in results if r.id is not None), reverse=True)


def ids_on(response: Any) -> list[int]:
    return [row.contact.pk for row in response.context["page"].rows]


@pytest.fixture
def ada(world: World) -> Contact:
    """A well-filled contact of tenant A with consent, events and an attribute."""
    tenant = world.tenant_a
    with tenant_context(tenant.id):
        AttributeDefinition.objects.create(tenant=tenant, key="plan", label="Plan", type="text")
        AttributeDefinition.objects.create(tenant=tenant, key="seats", label="Seats", type="number")
        contact, _ = contact_upsert(
            tenant=tenant,
            data={
                "email": "ada@lovelace.example", "external_id": "crm-1815", "phone": "+44 20 7946 0958",
                "first_name": "Ada", "last_name": "Lovelace", "country": "GB", "city": "London",
                "company": "Analytical Engines", "interests": ["maths", "poetry"], "attributes": {"plan": "gold"},
            },
        )  # fmt: skip
        consent_change(
            contact=contact, channel="email", purpose="marketing", status="granted", evidence=FORM_EVIDENCE,
            actor=SYSTEM,
        )  # fmt: skip
        events_ingest(
            tenant=tenant,
            events=[
                {"contact_id": contact.pk, "event": "page_view", "properties": {"path": "/pricing"}},
                {"contact_id": contact.pk, "event": "purchase", "revenue": "42.50", "currency": "EUR"},
            ],
        )
        contact.refresh_from_db()
    return contact


# --- list ----------------------------------------------------------------------------------------
def test_the_list_shows_the_tenants_contacts_newest_first(
    world: World, alice_client: Client, ada: Contact, django_assert_max_num_queries
):
    other = make_contact(world.tenant_a, email="zoe@example.com", first_name="Zoe")
    make_contact(world.tenant_b, email="b-only@example.com", first_name="Bertha")
    bulk_contacts(world.tenant_a, 60)
    # Session, user, tenant, membership, the page of contacts, their email consent, the workspace switcher,
    # and the request's savepoint and session write: none of it grows with the page.
    with django_assert_max_num_queries(12):
        response = alice_client.get(url("list", world))
    assert response.status_code == 200
    body = response.content.decode()
    assert "b-only@example.com" not in body and "Bertha" not in body
    ids = ids_on(response)
    assert len(ids) == 50 and ids == sorted(ids, reverse=True)
    assert ada.pk not in ids and other.pk not in ids  # older than the 60 bulk contacts
    assert response.context["page"].prev_cursor is None and response.context["page"].next_cursor
    assert 'rel="next"' in body and 'rel="prev"' not in body
    # The top navigation leads here.
    assert f'href="{url("list", world)}" aria-current="page">Contacts<' in body


def test_the_viewer_reads_the_list_and_sees_no_write_buttons(world: World, bob_client: Client, ada: Contact):
    response = bob_client.get(url("list", world))
    assert response.status_code == 200
    body = response.content.decode()
    assert "ada@lovelace.example" in body
    assert "New contact" not in body
    assert "Audit log" not in body  # admins only


def test_keyset_pages_cover_every_contact_once_in_both_directions(world: World, alice_client: Client):
    expected = bulk_contacts(world.tenant_a, 120)
    seen: list[list[int]] = []
    response = alice_client.get(url("list", world))
    cursors = []
    while True:
        seen.append(ids_on(response))
        page = response.context["page"]
        if not page.next_cursor:
            break
        cursors.append(page.next_cursor)
        response = alice_client.get(url("list", world), {"cursor": page.next_cursor})
        assert response.status_code == 200
    assert [len(p) for p in seen] == [50, 50, 20]
    assert [i for p in seen for i in p] == expected  # every contact once, newest first

    # Back again with the "previous" cursors: the same pages, the first one exactly.
    last = response.context["page"]
    back = alice_client.get(url("list", world), {"cursor": last.prev_cursor})
    assert ids_on(back) == seen[1]
    first = alice_client.get(url("list", world), {"cursor": back.context["page"].prev_cursor})
    assert ids_on(first) == seen[0]
    assert first.context["page"].prev_cursor is None
    # The links keep the filters.
    filtered = alice_client.get(url("list", world), {"q": "bulk", "lifecycle_stage": "lead"})
    assert f"cursor={filtered.context['page'].next_cursor}" in filtered.context["next_url"]
    assert "q=bulk" in filtered.context["next_url"] and "lifecycle_stage=lead" in filtered.context["next_url"]


def test_a_cursor_past_the_end_offers_the_way_back(world: World, alice_client: Client):
    ids = bulk_contacts(world.tenant_a, 3)
    response = alice_client.get(url("list", world), {"cursor": f"n{ids[-1]}"})
    assert response.status_code == 200
    assert response.context["page"].rows == []
    back = alice_client.get(url("list", world), {"cursor": response.context["page"].prev_cursor})
    assert ids_on(back) == ids  # fewer than a page above: the first page itself


@pytest.mark.parametrize(
    ("query", "matches"),
    [
        ("ada@love", True),  # email prefix
        ("ADA@LOVELACE.EXAMPLE", True),  # emails are stored lower-case
        ("ada", True),  # email prefix without the @
        ("Lovel", True),  # last name prefix
        ("lOVELACE", True),  # in any case
        ("ada love", True),  # first and last name
        ("ADA LOVELACE", True),
        ("grace love", False),
        ("+44 20 7946", True),  # phone prefix, as typed
        ("442079460958", True),  # phone digits
        ("crm-18", True),  # external id prefix
        ("crm-1815", True),
        ("lovelace@", False),
        ("da", False),  # prefixes only, not substrings
        ("bob love", False),
    ],
)
def test_search_by_each_key(world: World, alice_client: Client, ada: Contact, query: str, matches: bool):
    make_contact(world.tenant_a, email="grace@hopper.example", first_name="Grace", last_name="Hopper")
    response = alice_client.get(url("list", world), {"q": query})
    assert response.status_code == 200
    assert (ada.pk in ids_on(response)) is matches
    assert all(pk == ada.pk for pk in ids_on(response))


def test_search_handles_mixed_case_names_and_special_characters(world: World, alice_client: Client):
    mac = make_contact(world.tenant_a, email="x1@example.com", first_name="Ronald", last_name="McDonald")
    odd = make_contact(world.tenant_a, email="x2@example.com", last_name="O'Brien_%", external_id="Ext_%1")

    def found(q: str) -> set[int]:
        response = alice_client.get(url("list", world), {"q": q})
        assert response.status_code == 200
        return set(ids_on(response))

    assert found("mcdon") == found("MCDONALD") == found("ronald mcd") == {mac.pk}
    assert found("o'brien_%") == {odd.pk}
    assert found("o'brien%") == set()  # % and _ are matched literally, not as wildcards
    assert found("Ext_%") == {odd.pk} and found("ext_%") == set()  # external ids keep their case
    assert found("\u00e9\U0010ffff") == set()


@pytest.mark.parametrize(
    ("query", "index"),
    [
        ("ada@love", "contact_search_email"),
        ("lovelace", "contact_name"),
        ("ada love", "contact_name"),
        ("+44 20 79", "contact_phone"),
        ("crm-18", "contact_search_external_id"),
    ],
)
def test_every_search_is_an_index_condition_under_row_level_security(world: World, ada: Contact, query, index):
    """LIKE and lower() are not leakproof, so under RLS they can never be index conditions: a search
    written with them scans the whole tenant. The ranges the search uses instead must reach the index."""
    from django.db import connection, transaction

    from contacts.selectors import ContactFilters, contacts_matching

    with tenant_context(world.tenant_a.id), transaction.atomic():
        # Enough other contacts that reading the whole tenant costs more than a search index.
        Contact.objects.bulk_create(
            Contact(
                tenant=world.tenant_a, email=f"p{i}@x{i % 50}.example", phone=f"+3361234{i:04d}",
                last_name=f"Name{i % 300}", first_name=f"First{i % 70}", external_id=f"e-{i}",
            )
            for i in range(3000)
        )  # fmt: skip
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE contacts_contact")
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("SET LOCAL enable_indexscan = off")  # leave only bitmap scans, which show their Index Cond
        matching = contacts_matching(tenant=world.tenant_a, filters=ContactFilters(q=query))
        plan = matching.order_by("-id").explain()
        assert ada.pk in set(matching.values_list("pk", flat=True))
    scans = [line for line in plan.splitlines() if f"Bitmap Index Scan on {index}" in line]
    assert scans, plan


def test_search_never_finds_another_tenants_contacts(world: World, alice_client: Client):
    make_contact(world.tenant_b, email="ada@lovelace.example", first_name="Ada")
    response = alice_client.get(url("list", world), {"q": "ada"})
    assert ids_on(response) == []
    assert "No contacts match." in response.content.decode()


def test_filters_by_stage_country_and_email_consent(world: World, alice_client: Client, ada: Contact):
    lead = make_contact(world.tenant_a, email="lead@example.com", country="DE")
    with tenant_context(world.tenant_a.id):
        consent_change(
            contact=lead, channel="email", purpose="newsletter", status="granted", evidence=FORM_EVIDENCE, actor=SYSTEM
        )
        consent_change(
            contact=lead, channel="sms", purpose="marketing", status="granted", evidence=FORM_EVIDENCE, actor=SYSTEM
        )
    assert ada.lifecycle_stage == "first_time_buyer" and reload(lead).lifecycle_stage == "lead"

    def ids(**params: str) -> set[int]:
        response = alice_client.get(url("list", world), params)
        assert response.status_code == 200
        return set(ids_on(response))

    assert ids(lifecycle_stage="first_time_buyer") == {ada.pk}
    assert ids(lifecycle_stage="lead") == {lead.pk}
    assert ids(country="DE") == {lead.pk}
    assert ids(country="GB", lifecycle_stage="first_time_buyer") == {ada.pk}
    assert ids(email_consent="any") == {ada.pk, lead.pk}
    assert ids(email_consent="marketing") == {ada.pk}
    assert ids(email_consent="newsletter") == {lead.pk}
    assert ids(email_consent="product_updates") == set()
    assert ids(q="lead", country="GB") == set()
    # The consent column shows the granted email consent.
    body = alice_client.get(url("list", world)).content.decode()
    assert body.count("badge-granted") == 2


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"cursor": "zzz"}, "This page link is not valid"),
        ({"cursor": "n-5"}, "This page link is not valid"),
        ({"cursor": "n99999999999999999999999"}, "This page link is not valid"),
        ({"country": "XX"}, "Select a valid choice"),
        ({"country": "Narnia"}, "Select a valid choice"),
        ({"lifecycle_stage": "emperor"}, "Select a valid choice"),
        ({"email_consent": "telepathy"}, "Select a valid choice"),
        ({"q": "x" * 201}, "at most 200 characters"),
    ],
)
def test_bad_list_input_is_a_400_with_the_error(world: World, alice_client: Client, params: dict, message: str):
    response = alice_client.get(url("list", world), params)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert response.context["page"] is None


def test_htmx_search_returns_only_the_table(world: World, alice_client: Client, ada: Contact):
    headers = {"HX-Request": "true", "HX-Target": "contact-results"}
    response = alice_client.get(url("list", world), {"q": "ada"}, headers=headers)
    assert response.status_code == 200
    body = response.content.decode()
    assert body.lstrip().startswith('<section id="contact-results"')
    assert "<html" not in body and "ada@lovelace.example" in body
    assert "HX-Request" in response["Vary"]
    # A history restore gets the whole page.
    restore = alice_client.get(url("list", world), headers={**headers, "HX-History-Restore-Request": "true"})
    assert "<html" in restore.content.decode()
    bad = alice_client.get(url("list", world), {"country": "XX"}, headers=headers)
    assert bad.status_code == 400 and "Select a valid choice" in bad.content.decode()


# --- the contact page -------------------------------------------------------------------------------
def test_the_contact_page_shows_profile_consent_lifecycle_timeline_and_engagement(
    world: World, alice_client: Client, ada: Contact, django_assert_max_num_queries
):
    with django_assert_max_num_queries(18):  # 17, and the contact's best send time (analytics)
        response = alice_client.get(url("detail", world, contact_id=ada.pk))
    assert response.status_code == 200
    body = response.content.decode()
    groups = [g.name for g in response.context["profile"]]
    assert groups == ["Identity", "Demographic", "Geographic", "B2B", "Psychographic"]
    for text in ("Ada Lovelace", "ada@lovelace.example", "+442079460958", "crm-1815", "United Kingdom", "London",
                 "Analytical Engines", "maths, poetry"):  # fmt: skip
        assert text in body, text
    # Custom attributes: set and unset.
    attributes = {a.key: a.value for a in response.context["attributes"]}
    assert attributes == {"plan": "gold", "seats": ""}
    # Consent: the grid and the ledger.
    grid = {(row.channel, cell.purpose): cell.status for row in response.context["consent"].rows for cell in row.cells}
    assert grid[("email", "marketing")] == "granted" and grid[("sms", "marketing")] == ""
    assert "Send me offers" in body and "203.0.113.9" in body
    # Lifecycle: the stage and its history.
    assert response.context["contact"].lifecycle_stage == "first_time_buyer"
    assert [t.to_stage for t in response.context["lifecycle"]][:1] == ["first_time_buyer"]
    assert "First-time buyer" in body
    # Timeline and engagement.
    assert {r.event.name for r in response.context["timeline"].rows} == {"purchase", "page_view"}
    assert "/pricing" in body and "42.50 EUR" in body
    assert {t.name: t.count for t in response.context["engagement"]} == {"page_view": 1, "purchase": 1}
    assert 'data-testid="order-count">1<' in body
    # Owner's buttons.
    for label in ("Edit", "Change consent", "Export JSON", "Erase…"):
        assert label in body


def test_the_viewer_sees_the_contact_page_without_write_buttons(world: World, bob_client: Client, ada: Contact):
    response = bob_client.get(url("detail", world, contact_id=ada.pk))
    assert response.status_code == 200
    body = response.content.decode()
    assert "ada@lovelace.example" in body
    for label in ("Change consent", "Export JSON", "Erase…"):
        assert label not in body


def test_the_timeline_pages_by_keyset(world: World, alice_client: Client, ada: Contact):
    start = timezone.now() - dt.timedelta(days=10)
    with tenant_context(world.tenant_a.id):
        Event.objects.filter(contact=ada).delete()
        # 60 events, 10 of them at the same instant: the cursor must break ties by id.
        times = [start + dt.timedelta(minutes=i) for i in range(50)] + [start - dt.timedelta(hours=1)] * 10
        Event.objects.bulk_create(
            [Event(tenant=world.tenant_a, contact=ada, name=f"e{i}", occurred_at=t) for i, t in enumerate(times)]
        )
        expected = list(Event.objects.filter(contact=ada).order_by("-occurred_at", "-id").values_list("id", flat=True))
    first = alice_client.get(url("detail", world, contact_id=ada.pk))
    timeline = first.context["timeline"]
    assert [r.event.pk for r in timeline.rows] == expected[:50]
    assert 'data-testid="timeline-more"' in first.content.decode()
    more = alice_client.get(
        url("detail", world, contact_id=ada.pk),
        {"before": timeline.next_cursor},
        headers={"HX-Request": "true", "HX-Target": "timeline-more"},
    )
    assert more.status_code == 200
    assert "<html" not in more.content.decode()
    assert [r.event.pk for r in more.context["timeline"].rows] == expected[50:]
    assert more.context["timeline"].next_cursor is None
    # Without htmx the link opens the contact page from that point.
    page = alice_client.get(url("detail", world, contact_id=ada.pk), {"before": timeline.next_cursor})
    assert "Newest events" in page.content.decode()


def test_event_properties_and_audit_details_of_any_shape_render(world: World, alice_client: Client, ada: Contact):
    # A key named "items" (a basket size) once broke a template loop over `properties.items`.
    with tenant_context(world.tenant_a.id):
        events_ingest(
            tenant=world.tenant_a,
            events=[{"contact_id": ada.pk, "event": "checkout", "properties": {"items": 3, "tags": ["a", "b"]}}],
        )
        audit(tenant=world.tenant_a, actor=SYSTEM, action="test.shape", data={"items": 2, "nested": {"x": 1}})
    body = alice_client.get(url("detail", world, contact_id=ada.pk)).content.decode()
    assert "items: 3" in body and "tags: [&quot;a&quot;, &quot;b&quot;]" in body
    log = alice_client.get(url("audit_log", world)).content.decode()
    assert "items: 2" in log and "nested: {&quot;x&quot;: 1}" in log


@pytest.mark.parametrize("before", ["yesterday", "1.0", "99999999999999999999.5", "-99999999999999999.5", "1.2.3"])
def test_a_bad_timeline_cursor_is_a_400(world: World, alice_client: Client, ada: Contact, before: str):
    response = alice_client.get(url("detail", world, contact_id=ada.pk), {"before": before})
    assert response.status_code == 400
    assert "This page link is not valid" in response.content.decode()


def test_missing_and_foreign_contacts_are_404(world: World, alice_client: Client):
    foreign = make_contact(world.tenant_b, email="b@example.com")
    assert alice_client.get(url("detail", world, contact_id=foreign.pk)).status_code == 404
    assert alice_client.get(url("detail", world, contact_id=999_999_999)).status_code == 404


# --- edit and create ---------------------------------------------------------------------------------
def edit_data(**overrides: str) -> dict[str, str]:
    data = {
        "external_id": "crm-1815", "email": "ada@lovelace.example", "phone": "+442079460958",
        "first_name": "Ada", "last_name": "King", "locale": "en-GB", "time_zone": "Europe/London",
        "birth_date": "1985-12-10", "country": "GB", "city": "London", "interests": "maths, engines",
        "attr_plan": "platinum", "attr_seats": "12",
    }  # fmt: skip
    return {**data, **overrides}


def test_alice_edits_a_contact(world: World, alice_client: Client, ada: Contact):
    form = alice_client.get(url("edit", world, contact_id=ada.pk))
    assert form.status_code == 200
    assert 'value="ada@lovelace.example"' in form.content.decode()
    response = alice_client.post(url("edit", world, contact_id=ada.pk), edit_data())
    assert response.status_code == 302 and response["Location"] == url("detail", world, contact_id=ada.pk)
    ada = reload(ada)
    assert ada.last_name == "King" and ada.birth_date == dt.date(1985, 12, 10)
    assert ada.interests == ["maths", "engines"] and ada.time_zone == "Europe/London"
    assert ada.attributes == {"plan": "platinum", "seats": 12}
    # A blank attribute removes it; a blank field clears it.
    alice_client.post(url("edit", world, contact_id=ada.pk), edit_data(attr_plan="", city=""))
    ada = reload(ada)
    assert ada.attributes == {"seats": 12} and ada.city == ""


def test_edit_shows_every_field_error(world: World, alice_client: Client, ada: Contact):
    make_contact(world.tenant_a, email="taken@example.com")
    response = alice_client.post(
        url("edit", world, contact_id=ada.pk),
        edit_data(
            email="taken@example.com",
            phone="12",
            birth_date="1815-13-45",
            country="XX",
            time_zone="Mars/Olympus",
            attr_seats="a dozen",
        ),
    )
    assert response.status_code == 400
    # The form's own choices first; the service checks the rest once those pass.
    assert set(response.context["form"].errors) == {"country", "time_zone"}
    response = alice_client.post(
        url("edit", world, contact_id=ada.pk),
        edit_data(email="taken@example.com", phone="12", birth_date="1815-13-45", attr_seats="a dozen"),
    )
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert set(errors) == {"email", "phone", "birth_date", "attr_seats"}
    body = response.content.decode()
    assert "Another contact already has this value." in body
    assert "is not a number" in body and 'class="field-error"' in body
    assert reload(ada).email == "ada@lovelace.example"


def test_the_viewer_may_not_edit_or_create(world: World, bob_client: Client, ada: Contact):
    assert bob_client.get(url("edit", world, contact_id=ada.pk)).status_code == 403
    assert bob_client.post(url("edit", world, contact_id=ada.pk), edit_data(last_name="X")).status_code == 403
    assert bob_client.get(url("create", world)).status_code == 403
    assert bob_client.post(url("create", world), {"email": "new@example.com"}).status_code == 403
    assert reload(ada).last_name == "Lovelace"


def test_alice_creates_a_contact(world: World, alice_client: Client):
    assert alice_client.get(url("create", world)).status_code == 200
    response = alice_client.post(
        url("create", world), {"email": " New@Example.COM ", "first_name": "Newt", "country": ""}
    )
    with tenant_context(world.tenant_a.id):
        contact = Contact.objects.get(email="new@example.com")
    assert response.status_code == 302 and response["Location"] == url("detail", world, contact_id=contact.pk)
    assert contact.first_name == "Newt" and contact.lifecycle_stage == "lead"
    # The same email again updates that contact, and never blanks what was not typed.
    again = alice_client.post(url("create", world), {"email": "new@example.com", "city": "Oslo"}, follow=True)
    assert "it was updated" in again.content.decode()
    contact = reload(contact)
    assert (contact.first_name, contact.city) == ("Newt", "Oslo")


def test_create_without_identity_or_with_bad_values_is_a_400(world: World, alice_client: Client):
    response = alice_client.post(url("create", world), {"first_name": "Nobody"})
    assert response.status_code == 400
    assert "Give an external_id or an email" in response.content.decode()
    response = alice_client.post(url("create", world), {"email": "not-an-email", "attr_nope": "x"})
    assert response.status_code == 400 and "email" in response.context["form"].errors
    with tenant_context(world.tenant_a.id):
        assert not Contact.objects.exists()


def test_an_erased_contact_cannot_be_edited(world: World, alice_client: Client, ada: Contact):
    alice_client.post(url("erase", world, contact_id=ada.pk), {"confirm": "on"})
    response = alice_client.post(url("edit", world, contact_id=ada.pk), edit_data())
    assert response.status_code == 400
    assert "This contact was erased" in response.content.decode()
    assert reload(ada).email == ""


# --- consent -------------------------------------------------------------------------------------------
def test_alice_records_consent_changes_in_the_ledger(world: World, alice_client: Client, ada: Contact):
    assert alice_client.get(url("consent", world, contact_id=ada.pk)).status_code == 200
    response = alice_client.post(
        url("consent", world, contact_id=ada.pk),
        {"channel": "sms", "purpose": "newsletter", "status": "granted", "legal_basis": "consent",
         "wording": "Said yes on the phone", "wording_version": "call-2"},
    )  # fmt: skip
    assert response.status_code == 302
    with tenant_context(world.tenant_a.id):
        record = ConsentRecord.objects.filter(contact=ada).first()
        assert record is not None
        assert (record.channel, record.purpose, record.status, record.source) == (
            "sms",
            "newsletter",
            "granted",
            "admin",
        )
        assert record.actor == world.alice.email and record.wording == "Said yes on the phone"
        assert ConsentState.objects.get(contact=ada, channel="sms", purpose="newsletter").status == "granted"
        assert AuditLog.objects.filter(action="consent.granted", object_id=str(ada.pk)).exists()
    alice_client.post(
        url("consent", world, contact_id=ada.pk),
        {"channel": "email", "purpose": "marketing", "status": "withdrawn", "legal_basis": "consent"},
    )
    with tenant_context(world.tenant_a.id):
        assert ConsentState.objects.get(contact=ada, channel="email", purpose="marketing").status == "withdrawn"
    page = alice_client.get(url("detail", world, contact_id=ada.pk)).content.decode()
    assert "Said yes on the phone" in page and "Withdrawn" in page


def test_a_double_opt_in_request_records_a_pending_consent(world: World, alice_client: Client, ada: Contact):
    with mock.patch("contacts.tasks.send_consent_confirmation.delay") as send:
        response = alice_client.post(
            url("consent", world, contact_id=ada.pk),
            {"channel": "email", "purpose": "newsletter", "status": "pending", "legal_basis": "consent",
             "wording": "Newsletter, weekly"},
        )  # fmt: skip
    assert response.status_code == 302
    with tenant_context(world.tenant_a.id):
        state = ConsentState.objects.get(contact=ada, channel="email", purpose="newsletter")
    assert state.status == "pending"
    assert send.call_count <= 1  # sent after commit (tests run inside one transaction)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"channel": "email", "purpose": "marketing", "status": "granted", "legal_basis": "consent"}, "wording"),
        ({"channel": "sms", "purpose": "marketing", "status": "pending", "legal_basis": "consent", "wording": "x"},
         "status"),
        ({"channel": "pigeon", "purpose": "marketing", "status": "granted", "wording": "x"}, "channel"),
        ({"channel": "email", "purpose": "spam", "status": "granted", "legal_basis": "consent", "wording": "x"},
         "purpose"),
        ({"channel": "email", "purpose": "marketing", "status": "maybe", "legal_basis": "consent"}, "status"),
    ],
)  # fmt: skip
def test_bad_consent_input_is_a_400_with_field_errors(world: World, alice_client: Client, ada: Contact, data, field):
    with tenant_context(world.tenant_a.id):
        before = ConsentRecord.objects.count()
    response = alice_client.post(url("consent", world, contact_id=ada.pk), data)
    assert response.status_code == 400
    assert field in response.context["form"].errors
    with tenant_context(world.tenant_a.id):
        assert ConsentRecord.objects.count() == before


def test_the_viewer_may_not_change_consent(world: World, bob_client: Client, ada: Contact):
    data = {"channel": "email", "purpose": "marketing", "status": "withdrawn", "legal_basis": "consent"}
    assert bob_client.post(url("consent", world, contact_id=ada.pk), data).status_code == 403
    with tenant_context(world.tenant_a.id):
        assert ConsentState.objects.get(contact=ada, channel="email", purpose="marketing").status == "granted"


# --- export and erasure ----------------------------------------------------------------------------------
def test_export_downloads_everything_held_as_json(world: World, alice_client: Client, ada: Contact):
    assert alice_client.get(url("export", world, contact_id=ada.pk)).status_code == 405
    response = alice_client.post(url("export", world, contact_id=ada.pk))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response["Content-Disposition"] == f'attachment; filename="contact-{ada.pk}.json"'
    assert response["Cache-Control"] == "no-store"
    data = json.loads(response.content)
    assert data["profile"]["email"] == "ada@lovelace.example"
    assert data["profile"]["attributes"] == {"plan": "gold"}
    assert {e["event"] for e in data["events"]} == {"page_view", "purchase"}
    assert [(c["channel"], c["purpose"], c["status"]) for c in data["consent"]] == [("email", "marketing", "granted")]
    assert data["lifecycle"] and data["deliveries"] == []
    with tenant_context(world.tenant_a.id):
        assert PrivacyRequest.objects.filter(kind="export", contact_ref=ada.pk, requested_by=world.alice.email).exists()
        assert AuditLog.objects.filter(action="contact.exported", object_id=str(ada.pk)).exists()


def test_the_viewer_may_not_export(world: World, bob_client: Client, ada: Contact):
    assert bob_client.post(url("export", world, contact_id=ada.pk)).status_code == 403
    with tenant_context(world.tenant_a.id):
        assert not PrivacyRequest.objects.exists()


def test_erasure_asks_for_confirmation_then_erases(world: World, alice_client: Client, ada: Contact):
    page = alice_client.get(url("erase", world, contact_id=ada.pk))
    assert page.status_code == 200 and "cannot be undone" in page.content.decode()
    unconfirmed = alice_client.post(url("erase", world, contact_id=ada.pk), {})
    assert unconfirmed.status_code == 400
    assert "Tick the box to confirm the erasure." in unconfirmed.content.decode()
    assert reload(ada).erased_at is None

    response = alice_client.post(url("erase", world, contact_id=ada.pk), {"confirm": "on"}, follow=True)
    assert response.status_code == 200
    erased = reload(ada)
    assert erased.erased_at is not None
    assert (erased.email, erased.phone, erased.first_name, erased.external_id, erased.attributes) == (
        "",
        "",
        "",
        "",
        {},
    )
    with tenant_context(world.tenant_a.id):
        assert Suppression.objects.filter(
            channel="email", address_hash=address_hash("email", "ada@lovelace.example"), reason="erasure"
        ).exists()
        assert not ConsentRecord.objects.filter(contact=ada).exists()
        assert list(Event.objects.filter(contact=ada).values_list("properties", flat=True)) == [{}, {}]
        assert PrivacyRequest.objects.filter(kind="erasure", contact_ref=ada.pk).count() == 1
    body = response.content.decode()
    assert "Erased contact #" in body and "ada@lovelace.example" not in body
    assert url("edit", world, contact_id=ada.pk) not in body and url("erase", world, contact_id=ada.pk) not in body
    # A second erasure is a no-op with a message.
    again = alice_client.post(url("erase", world, contact_id=ada.pk), {"confirm": "on"}, follow=True)
    assert "already erased" in again.content.decode()
    with tenant_context(world.tenant_a.id):
        assert PrivacyRequest.objects.filter(kind="erasure", contact_ref=ada.pk).count() == 1


def test_the_viewer_may_not_erase(world: World, bob_client: Client, ada: Contact):
    assert bob_client.get(url("erase", world, contact_id=ada.pk)).status_code == 403
    assert bob_client.post(url("erase", world, contact_id=ada.pk), {"confirm": "on"}).status_code == 403
    assert reload(ada).erased_at is None


# --- custom attributes ----------------------------------------------------------------------------------------
def test_attribute_definitions_list_create_and_delete(world: World, alice_client: Client, bob_client: Client):
    assert bob_client.get(url("attributes", world)).status_code == 200
    response = alice_client.post(
        url("attributes", world), {"key": "loyalty_tier", "label": "Loyalty tier", "type": "text"}
    )
    assert response.status_code == 302
    with tenant_context(world.tenant_a.id):
        definition = AttributeDefinition.objects.get(key="loyalty_tier")
        assert AuditLog.objects.filter(action="attribute.defined", object_id=str(definition.pk)).exists()
    listing = bob_client.get(url("attributes", world)).content.decode()
    assert "loyalty_tier" in listing and "Define an attribute" not in listing

    duplicate = alice_client.post(url("attributes", world), {"key": "loyalty_tier", "label": "Again", "type": "text"})
    assert duplicate.status_code == 400 and "already exists" in duplicate.content.decode()
    bad = alice_client.post(url("attributes", world), {"key": "Bad Key!", "label": "", "type": "colour"})
    assert bad.status_code == 400
    assert set(bad.context["form"].errors) == {"label", "type"}
    worse = alice_client.post(url("attributes", world), {"key": "Bad Key!", "label": "x", "type": "text"})
    assert worse.status_code == 400 and "lower-case letters" in worse.content.decode()

    assert bob_client.post(url("attributes", world), {"key": "x", "label": "X", "type": "text"}).status_code == 403
    assert bob_client.post(url("attribute_delete", world, attribute_id=definition.pk)).status_code == 403
    assert alice_client.post(url("attribute_delete", world, attribute_id=definition.pk)).status_code == 302
    with tenant_context(world.tenant_a.id):
        assert not AttributeDefinition.objects.filter(pk=definition.pk).exists()


# --- suppressions ------------------------------------------------------------------------------------------------
def test_suppressions_add_look_up_and_remove_without_showing_addresses(
    world: World, alice_client: Client, bob_client: Client
):
    response = alice_client.post(
        url("suppressions", world), {"channel": "email", "address": " Spam.Me@Example.COM ", "note": "asked by phone"}
    )
    assert response.status_code == 302
    with tenant_context(world.tenant_a.id):
        suppression = Suppression.objects.get()
        suppression_add(tenant=world.tenant_a, channel="sms", address="+33612345678", reason="unsubscribe")
    assert suppression.address_hash == address_hash("email", "spam.me@example.com")
    assert (suppression.reason, suppression.note) == ("manual", "asked by phone")

    listing = bob_client.get(url("suppressions", world))
    assert listing.status_code == 200
    body = listing.content.decode()
    assert "spam.me" not in body.lower() and "33612345678" not in body
    assert "Manual" in body and "Unsubscribed" in body and "asked by phone" in body
    assert "Suppress an address" not in body and "Remove" not in body  # the viewer only reads

    found = alice_client.get(url("suppressions", world), {"address": "SPAM.me@example.com"})
    assert [s.pk for s in found.context["page"].rows] == [suppression.pk]
    phone = alice_client.get(url("suppressions", world), {"address": "+33 6 12 34 56 78"})
    assert [s.channel for s in phone.context["page"].rows] == ["sms"]
    missing = alice_client.get(url("suppressions", world), {"address": "nobody@example.com"})
    assert "This address is not suppressed." in missing.content.decode()

    assert bob_client.post(url("suppression_delete", world, suppression_id=suppression.pk)).status_code == 403
    assert alice_client.post(url("suppression_delete", world, suppression_id=suppression.pk)).status_code == 302
    with tenant_context(world.tenant_a.id):
        unsubscribed = Suppression.objects.get()
        assert AuditLog.objects.filter(action="suppression.added").count() == 1
        assert AuditLog.objects.filter(action="suppression.removed").count() == 1
    # An unsubscribe is the person's decision: it stays.
    refused = alice_client.post(url("suppression_delete", world, suppression_id=unsubscribed.pk), follow=True)
    assert "cannot be removed by hand" in refused.content.decode()
    with tenant_context(world.tenant_a.id):
        assert Suppression.objects.filter(pk=unsubscribed.pk).exists()


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"channel": "email", "address": "not an email"}, "address"),
        ({"channel": "sms", "address": "call me"}, "address"),
        ({"channel": "email", "address": ""}, "address"),
        ({"channel": "fax", "address": "+33612345678"}, "channel"),
    ],
)
def test_bad_suppression_input_is_a_400(world: World, alice_client: Client, data: dict, field: str):
    response = alice_client.post(url("suppressions", world), data)
    assert response.status_code == 400
    assert field in response.context["form"].errors
    with tenant_context(world.tenant_a.id):
        assert not Suppression.objects.exists()


def test_suppressions_page_by_keyset_and_reject_bad_cursors(world: World, alice_client: Client):
    with tenant_context(world.tenant_a.id):
        for i in range(55):
            suppression_add(tenant=world.tenant_a, channel="email", address=f"s{i}@example.com", reason="hard_bounce")
    first = alice_client.get(url("suppressions", world))
    second = alice_client.get(url("suppressions", world), {"cursor": first.context["page"].next_cursor})
    ids = [s.pk for s in first.context["page"].rows] + [s.pk for s in second.context["page"].rows]
    assert len(ids) == len(set(ids)) == 55 and ids == sorted(ids, reverse=True)
    back = alice_client.get(url("suppressions", world), {"cursor": second.context["page"].prev_cursor})
    assert [s.pk for s in back.context["page"].rows] == [s.pk for s in first.context["page"].rows]
    assert alice_client.get(url("suppressions", world), {"cursor": "abc"}).status_code == 400


# --- audit log --------------------------------------------------------------------------------------------------------
def test_the_audit_log_is_for_admins_newest_first_and_paged(
    world: World, alice_client: Client, bob_client: Client, django_assert_max_num_queries
):
    with tenant_context(world.tenant_a.id):
        AuditLog.objects.all().delete()
        for i in range(60):
            audit(tenant=world.tenant_a, actor=SYSTEM, action=f"test.step{i}", data={"n": i})
    with tenant_context(world.tenant_b.id):
        audit(tenant=world.tenant_b, actor=SYSTEM, action="test.other_tenant")
    assert bob_client.get(url("audit_log", world)).status_code == 403
    with django_assert_max_num_queries(12):
        first = alice_client.get(url("audit_log", world))
    assert first.status_code == 200
    actions = [r.entry.action for r in first.context["page"].rows]
    assert actions == [f"test.step{i}" for i in range(59, 9, -1)]
    body = first.content.decode()
    assert "test.other_tenant" not in body
    assert f'href="{url("audit_log", world)}" aria-current="page">Audit log<' in body
    second = alice_client.get(url("audit_log", world), {"before": first.context["page"].next_cursor})
    assert [r.entry.action for r in second.context["page"].rows] == [f"test.step{i}" for i in range(9, -1, -1)]
    assert second.context["page"].next_cursor is None
    bad = alice_client.get(url("audit_log", world), {"before": "last-tuesday"})
    assert bad.status_code == 400 and "This page link is not valid" in bad.content.decode()


def test_the_audit_log_links_contacts_and_records_ui_actions(world: World, alice_client: Client, ada: Contact):
    alice_client.post(url("export", world, contact_id=ada.pk))
    body = alice_client.get(url("audit_log", world)).content.decode()
    assert "contact.exported" in body and world.alice.email in body
    assert f'href="{url("detail", world, contact_id=ada.pk)}"' in body


# --- the public double opt-in page ------------------------------------------------------------------------------------
@pytest.fixture
def pending(world: World, ada: Contact) -> tuple[Contact, str]:
    with tenant_context(world.tenant_a.id), mock.patch("contacts.tasks.send_consent_confirmation.delay"):
        record = consent_request_confirmation(
            contact=ada, purpose="newsletter", evidence=ConsentEvidence(source="form", wording="Weekly news"),
            actor=SYSTEM,
        )  # fmt: skip
        token = confirmation_token(record, ada.email)
    return ada, token


def newsletter_state(world: World, contact: Contact) -> str:
    with tenant_context(world.tenant_a.id):
        return ConsentState.objects.get(contact=contact, channel="email", purpose="newsletter").status


def test_the_confirm_link_shows_a_button_and_confirms_only_on_post(world: World, pending):
    contact, token = pending
    anonymous = Client(enforce_csrf_checks=True)
    page = anonymous.get(reverse("consent_confirm", kwargs={"token": token}))
    assert page.status_code == 200
    body = page.content.decode()
    assert "Tenant A" in body and "newsletter" in body and "Yes, confirm my subscription" in body
    assert contact.email not in body
    assert newsletter_state(world, contact) == "pending"  # a mail scanner's GET changes nothing

    csrf = anonymous.cookies["csrftoken"].value
    done = anonymous.post(
        reverse("consent_confirm", kwargs={"token": token}),
        {"csrfmiddlewaretoken": csrf},
        HTTP_USER_AGENT="Mozilla/5.0 (Test)",
        REMOTE_ADDR="198.51.100.7",
    )
    assert done.status_code == 200 and "Thank you" in done.content.decode()
    assert newsletter_state(world, contact) == "granted"
    with tenant_context(world.tenant_a.id):
        record = ConsentRecord.objects.filter(contact=contact, status="granted", purpose="newsletter").get()
    assert (record.source, record.ip_address, record.user_agent) == (
        "double_opt_in",
        "198.51.100.7",
        "Mozilla/5.0 (Test)",
    )
    # Pressing again, or opening the link again, is harmless.
    again = anonymous.get(reverse("consent_confirm", kwargs={"token": token}))
    assert again.status_code == 200 and "already confirmed" in again.content.decode()


@pytest.mark.parametrize("kind", ["garbage", "tampered", "other_address", "expired", "unknown_record"])
def test_bad_confirm_links_get_a_clear_400(world: World, pending, kind: str):
    contact, token = pending
    if kind == "garbage":
        token = "not-a-token"
    elif kind == "tampered":
        token = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    elif kind == "other_address":
        with tenant_context(world.tenant_a.id):
            record = ConsentRecord.objects.get(contact=contact, status="pending")
            token = confirmation_token(record, "someone-else@example.com")
    elif kind == "expired":
        eight_days_ago = signing.time.time() - 8 * 86400
        with (
            mock.patch("django.core.signing.time.time", return_value=eight_days_ago),
            tenant_context(world.tenant_a.id),
        ):
            record = ConsentRecord.objects.get(contact=contact, status="pending")
            token = confirmation_token(record, contact.email)
    elif kind == "unknown_record":
        payload = signing.loads(token, salt="contacts.consent.confirm")
        token = signing.dumps({**payload, "r": 999_999_999}, salt="contacts.consent.confirm")
    link = reverse("consent_confirm", kwargs={"token": token})
    client = Client()
    for response in (client.get(link), client.post(link)):
        assert response.status_code == 400
        assert "This confirmation link cannot be used" in response.content.decode()
    assert newsletter_state(world, contact) == "pending"


def test_the_confirm_page_needs_no_sign_in_and_no_tenant(world: World, pending, alice_client: Client):
    _, token = pending
    response = alice_client.get(reverse("consent_confirm", kwargs={"token": token}))
    assert response.status_code == 200
    assert "Sign in" not in response.content.decode()


def test_lifecycle_history_lists_transitions(world: World, alice_client: Client, ada: Contact):
    with tenant_context(world.tenant_a.id):
        transitions = list(LifecycleTransition.objects.filter(contact=ada).values_list("to_stage", flat=True))
    response = alice_client.get(url("detail", world, contact_id=ada.pk))
    assert [t.to_stage for t in response.context["lifecycle"]] == transitions
    assert 'data-testid="lifecycle-history"' in response.content.decode()
