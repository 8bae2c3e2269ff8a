"""Impressions on the decision path: counted in Redis, written by the minute's flush, exactly once."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from personalization.impressions import impressions_count, impressions_flush, tenants_with_impressions
from personalization.models import SlotDailyStats
from personalization.services import variant_delete
from personalization.tasks import flush_impressions_all
from tenants.context import tenant_context
from tests.conftest import World
from tests.personalization.test_public import ACTOR, Site, make_site, send, visitor


@pytest.fixture
def site(world: World, django_capture_on_commit_callbacks: Any) -> Site:
    return make_site(world, django_capture_on_commit_callbacks)


def figures(site: Site) -> dict[int | None, int]:
    with tenant_context(site.world.tenant_a.pk):
        rows = SlotDailyStats.objects.filter(slot=site.slot).values_list("variant_id", "impressions")
        return dict(rows)


def flush(site: Site) -> int:
    with tenant_context(site.world.tenant_a.pk):
        return impressions_flush(tenant_id=site.world.tenant_a.pk)


def test_a_warm_decision_touches_no_database(site: Site, client: Client, django_assert_num_queries):
    body = {"visitor_id": visitor(), "slots": ["hero"]}
    assert send(client, "decide/", body, key=site.key.public_key).status_code == 200
    with django_assert_num_queries(0):
        response = send(client, "decide/", body, key=site.key.public_key)
    assert response.status_code == 200
    assert figures(site) == {}  # waiting in Redis
    assert site.world.tenant_a.pk in tenants_with_impressions()
    assert flush(site) == 2
    assert figures(site) == {None: 2}


def test_a_flush_writes_each_impression_once_and_keeps_what_arrives_meanwhile(site: Site):
    tenant_id = site.world.tenant_a.pk
    today = timezone.now().date()
    shown = [(site.slot.pk, None), (site.slot.pk, site.vip_variant.pk)]
    for _ in range(3):
        impressions_count(tenant_id=tenant_id, shown=shown, day=today)
    impressions_count(tenant_id=tenant_id, shown=[(site.slot.pk, None)], day=today - dt.timedelta(days=1))
    assert flush(site) == 7
    assert flush(site) == 0  # nothing twice
    impressions_count(tenant_id=tenant_id, shown=shown, day=today)
    assert flush(site) == 2
    with tenant_context(tenant_id):
        rows = dict(SlotDailyStats.objects.filter(slot=site.slot, day=today).values_list("variant_id", "impressions"))
        yesterday = SlotDailyStats.objects.get(slot=site.slot, variant=None, day=today - dt.timedelta(days=1))
    assert rows == {None: 4, site.vip_variant.pk: 4}
    assert yesterday.impressions == 1
    assert site.world.tenant_a.pk not in tenants_with_impressions()  # emptied: forgotten until the next one


def test_a_failed_flush_leaves_the_impressions_waiting(site: Site, monkeypatch):
    tenant_id = site.world.tenant_a.pk
    impressions_count(tenant_id=tenant_id, shown=[(site.slot.pk, None)], day=timezone.now().date())

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("database down")

    monkeypatch.setattr("personalization.impressions.slot_stats_add", broken)
    with pytest.raises(RuntimeError):
        flush(site)
    monkeypatch.undo()
    assert flush(site) == 1
    assert figures(site) == {None: 1}


def test_impressions_of_a_deleted_variant_are_dropped(site: Site):
    tenant_id = site.world.tenant_a.pk
    impressions_count(tenant_id=tenant_id, shown=[(site.slot.pk, site.lead_variant.pk)], day=timezone.now().date())
    with tenant_context(tenant_id):
        variant_delete(variant=site.lead_variant, actor=ACTOR)
    assert flush(site) == 0
    assert figures(site) == {}
    assert site.world.tenant_a.pk not in tenants_with_impressions()


def test_the_beat_tick_queues_a_flush_per_tenant_with_impressions(site: Site, monkeypatch):
    queued: list[int] = []
    monkeypatch.setattr("personalization.tasks.flush_impressions.delay", queued.append)
    impressions_count(tenant_id=site.world.tenant_a.pk, shown=[(site.slot.pk, None)], day=timezone.now().date())
    assert flush_impressions_all() >= 1
    assert site.world.tenant_a.pk in queued and site.world.tenant_b.pk not in queued


def test_without_buffering_each_decision_writes_its_impressions(site: Site, client: Client, settings):
    settings.PERSONALIZATION_BUFFER_IMPRESSIONS = False
    assert (
        send(client, "decide/", {"visitor_id": visitor(), "slots": ["hero"]}, key=site.key.public_key).status_code
        == 200
    )
    assert figures(site) == {None: 1}
