"""Real time reuses a level's compiled SQL for other contacts (segments/services.py, _LEVEL_SQL)."""

from __future__ import annotations

import datetime as dt

import pytest

from contacts.models import Contact
from segments import services
from segments.models import SegmentMember
from segments.services import segment_create, segment_refresh, segment_update, segments_evaluate_contacts
from tenants.audit import Actor
from tenants.context import tenant_context

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("test")
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)


def rules(country: str, points: int) -> dict[str, object]:
    return {
        "any": [
            {"type": "field", "field": "country", "op": "eq", "value": country},
            {"type": "event", "name": "purchase", "op": "at_least", "count": points},
        ]
    }


def test_the_same_sql_serves_other_contacts_and_a_rule_change_recompiles(world):
    tenant = world.tenant_a
    with tenant_context(tenant.id):
        people = [Contact.objects.create(tenant=tenant, email=f"p{i}@example.com", country=c) for i, c in
                  enumerate(["DE", "FR", "DE", "IT"])]  # fmt: skip
        segment = segment_create(tenant=tenant, actor=ACTOR, name="DE", rules=rules("DE", 2))
        segment_refresh(segment=segment, now=NOW)
        services._LEVEL_SQL.clear()
        for person in people:  # one at a time: one compiled statement, four different contacts
            person.country = "FR" if person.country == "DE" else "DE"
            person.save()
            segments_evaluate_contacts(tenant=tenant, contact_ids=[person.pk], now=NOW)
        assert len(services._LEVEL_SQL) == 1
        expected = {p.pk for p in people if p.country == "DE"}
        assert set(SegmentMember.objects.filter(segment=segment).values_list("contact_id", flat=True)) == expected

        segment_update(segment=segment, actor=ACTOR, rules=rules("IT", 2))
        segment_refresh(segment=segment, now=NOW)
        assert not SegmentMember.objects.filter(segment=segment).exists()
        people[0].country = "IT"
        people[0].save()
        segments_evaluate_contacts(tenant=tenant, contact_ids=[people[3].pk, people[0].pk], now=NOW)
        assert len(services._LEVEL_SQL) == 2  # new rules and another number of contacts: compiled again
        assert set(SegmentMember.objects.filter(segment=segment).values_list("contact_id", flat=True)) == {people[0].pk}
