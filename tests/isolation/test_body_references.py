"""Alice names tenant B's objects in request bodies, query strings and forms: refused as if missing.

The probes (probes.py) run with the database wall down (guard.database_wall_down): with row-level
security on, B's rows are invisible to every query, so B's id could only ever look missing; with
it off, only the application's own tenant filters make it look missing, and a forgotten filter
shows. Foreign keys and unique indexes ignore row-level security either way, and the probes check
that no row ends up pointing at another tenant's.
"""

from __future__ import annotations

import pytest
from django.test import Client

from campaigns import services as campaign_services
from tests.conftest import World, api_client
from tests.isolation.guard import database_wall_down, tenant_fingerprint
from tests.isolation.probes import NOT_REFERENCES, Clients, _ids_out, probes, run_probe
from tests.isolation.references import discovered_references
from tests.isolation.scene import build_scenes

pytestmark = pytest.mark.django_db


def test_an_id_is_blanked_where_it_stands_alone_not_inside_dates_or_numbers():
    """B's id 12 and a missing id must read the same in an answer that also holds the date 2026-12-01."""
    body = '{"day": "2026-12-01", "at": "10:12:00", "rate": 0.12, "segment": 12, "url": "/segments/12/", "x": "a12"}'
    assert _ids_out(body, 12) == (
        '{"day": "2026-12-01", "at": "10:12:00", "rate": 0.12, "segment": <id>, "url": "/segments/<id>/", "x": "a12"}'
    )
    assert _ids_out("No contact with id 12. Not found (1): ext-b.", 12, "ext-b") == (
        "No contact with id <id>. Not found (1): <id>."
    )


def test_every_reference_in_a_request_has_a_probe():
    covered = {key for probe in probes() for key in probe.covers}
    discovered = discovered_references()
    assert sorted(discovered - covered - set(NOT_REFERENCES)) == [], "write a probe for these (probes.py)"
    assert sorted(covered - discovered) == [], "these probes cover fields that are gone: update probes.py"


def test_tenant_b_ids_in_requests_are_refused_like_missing_ones(world: World, alice_client: Client):
    a, b = build_scenes(world)
    clients = Clients(api=api_client(world.secret_a), web=alice_client, slug=world.tenant_a.slug)
    problems = {}
    before = tenant_fingerprint(b.tenant.pk)
    with database_wall_down():
        for probe in probes():
            found = run_probe(probe, clients, a, b, before)
            if found:
                problems[probe.name] = found
    assert not problems, "\n".join(f"{name}: {found}" for name, found in problems.items())


def test_a_forgotten_check_is_caught(world: World, alice_client: Client, monkeypatch):
    """The probes mean something: with the campaign service's segment check gone, B's segment is reported."""
    a, b = build_scenes(world)
    monkeypatch.setattr(campaign_services, "_segment_errors", lambda tenant_id, audience, variants: {})
    clients = Clients(api=api_client(world.secret_a), web=alice_client, slug=world.tenant_a.slug)
    probe = next(p for p in probes() if p.name == "campaign create: audience include")
    with database_wall_down():
        problems = run_probe(probe, clients, a, b)
    assert any("campaigns.CampaignAudience.segment" in problem for problem in problems), problems
    assert any("was not refused" in problem for problem in problems), problems
