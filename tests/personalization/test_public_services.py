"""The writes behind the public side: site keys, content rules, variant order, figures by upsert."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from personalization.models import SiteKey, Slot, SlotDailyStats, SlotVariant
from personalization.services import (
    SlotFigures,
    site_key_create,
    site_key_rotate_identify_secret,
    site_key_update,
    slot_create,
    slot_stats_add,
    slot_update,
    variant_add,
    variant_delete,
    variant_move,
)
from segments.models import Segment
from segments.services import segment_create
from tenants.context import tenant_context
from tests.conftest import World
from tests.personalization.test_public import ACTOR


@pytest.mark.parametrize(
    "origins",
    [[], ["https://shop.example/"], ["https://shop.example/path"], ["shop.example"], ["javascript:alert(1)"],
     ["https://Shop.example"], ["null"], "https://shop.example", [f"https://s{i}.example" for i in range(21)]],
)  # fmt: skip
def test_site_keys_take_exact_origins_only(world: World, origins: Any):
    with tenant_context(world.tenant_a.pk), pytest.raises(ValidationError) as error:
        site_key_create(tenant=world.tenant_a, name="Shop", allowed_origins=origins, actor=ACTOR)
    assert "allowed_origins" in error.value.message_dict


def test_a_site_key_is_public_and_its_identify_secret_rotates(world: World):
    with tenant_context(world.tenant_a.pk):
        key = site_key_create(
            tenant=world.tenant_a, name="Shop", allowed_origins=["http://localhost:8000"], actor=ACTOR
        )
        assert key.public_key.startswith("pk_live_") and len(key.public_key) > 30
        assert key.require_signed_identify  # secure by default
        before = key.identify_secret
        assert site_key_rotate_identify_secret(site_key=key, actor=ACTOR).identify_secret != before
        updated = site_key_update(site_key=key, actor=ACTOR, allowed_origins=["https://a.example", "https://a.example"])
        assert updated.allowed_origins == ["https://a.example"]
        assert SiteKey.objects.get(pk=key.pk).allowed_origins == ["https://a.example"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("cta_url", "javascript:alert(1)"), ("image_url", "data:image/svg+xml,<svg/>"), ("cta_url", "//evil.example/"),
     ("cta_url", "https://x.example/a b"), ("key", "Not a slug!"), ("headline", "x" * 201)],
)  # fmt: skip
def test_slot_content_refuses_dangerous_links_and_bad_keys(world: World, field: str, value: str):
    with tenant_context(world.tenant_a.pk), pytest.raises(ValidationError) as error:
        slot_create(tenant=world.tenant_a, actor=ACTOR, data={"key": "hero", field: value})
    assert field in error.value.message_dict


def test_slot_keys_are_unique_per_tenant_and_unknown_fields_refused(world: World):
    with tenant_context(world.tenant_a.pk):
        slot_create(tenant=world.tenant_a, actor=ACTOR, data={"key": "hero"})
        with pytest.raises(ValidationError) as error:
            slot_create(tenant=world.tenant_a, actor=ACTOR, data={"key": "hero"})
        assert "key" in error.value.message_dict
        with pytest.raises(ValidationError):
            slot_create(tenant=world.tenant_a, actor=ACTOR, data={"key": "x", "tenant_id": world.tenant_b.pk})
    with tenant_context(world.tenant_b.pk):
        assert slot_create(tenant=world.tenant_b, actor=ACTOR, data={"key": "hero"}).name == "hero"


def test_a_variant_targets_a_segment_of_its_own_tenant_or_a_stage(world: World):
    with tenant_context(world.tenant_b.pk):
        foreign = segment_create(tenant=world.tenant_b, actor=ACTOR, name="B", kind=Segment.Kind.STATIC)
    with tenant_context(world.tenant_a.pk):
        slot = slot_create(tenant=world.tenant_a, actor=ACTOR, data={"key": "hero"})
        for data, field in (
            ({"name": "x", "target": "segment", "target_segment": foreign}, "target_segment"),
            ({"name": "x", "target": "segment"}, "target_segment"),
            ({"name": "x", "target": "stage", "target_stage": "royalty"}, "target_stage"),
            ({"name": "x", "target": "everyone"}, "target"),
        ):
            with pytest.raises(ValidationError) as error:
                variant_add(slot=slot, actor=ACTOR, data=data)
            assert field in error.value.message_dict
        own = segment_create(tenant=world.tenant_a, actor=ACTOR, name="A", kind=Segment.Kind.STATIC)
        variant = variant_add(slot=slot, actor=ACTOR, data={
            "name": "x", "target": "stage", "target_stage": "lead", "target_segment": own,
        })  # fmt: skip
        assert variant.target_segment_id is None  # a stage variant keeps no segment
        slot_update(slot=slot, actor=ACTOR, data={"headline": "Hello"})
        assert Slot.objects.get(pk=slot.pk).headline == "Hello"


def test_variants_keep_a_dense_priority_order(world: World):
    with tenant_context(world.tenant_a.pk):
        slot = slot_create(tenant=world.tenant_a, actor=ACTOR, data={"key": "hero"})

        def add(name: str, **extra: Any) -> SlotVariant:
            return variant_add(slot=slot, actor=ACTOR, data={"name": name, "target": "stage", "target_stage": "lead",
                                                             **extra})  # fmt: skip

        a, b, c = add("a"), add("b"), add("c")
        add("first", priority=0)

        def order() -> list[tuple[str, int]]:
            return list(SlotVariant.objects.filter(slot=slot).order_by("priority").values_list("name", "priority"))

        assert order() == [("first", 0), ("a", 1), ("b", 2), ("c", 3)]
        variant_move(variant=c, position=1, actor=ACTOR)
        assert order() == [("first", 0), ("c", 1), ("a", 2), ("b", 3)]
        variant_move(variant=a, position=99, actor=ACTOR)
        assert order() == [("first", 0), ("c", 1), ("b", 2), ("a", 3)]
        variant_delete(variant=b, actor=ACTOR)
        assert order() == [("first", 0), ("c", 1), ("a", 2)]


def test_figures_add_up_with_upserts(world: World):
    day = dt.date(2026, 12, 1)
    with tenant_context(world.tenant_a.pk):
        slot = slot_create(tenant=world.tenant_a, actor=ACTOR, data={"key": "hero"})
        variant = variant_add(slot=slot, actor=ACTOR, data={"name": "x", "target": "stage", "target_stage": "lead"})
        slot_stats_add(tenant_id=world.tenant_a.pk, day=day, figures=[
            SlotFigures(slot.pk, None, impressions=2), SlotFigures(slot.pk, variant.pk, impressions=1),
            SlotFigures(slot.pk, None, clicks=1),
        ])  # fmt: skip
        slot_stats_add(tenant_id=world.tenant_a.pk, day=day, figures=[
            SlotFigures(slot.pk, variant.pk, conversions=1, revenue=Decimal("19.90")),
        ])  # fmt: skip
        rows = {
            r.variant_id: (r.impressions, r.clicks, r.conversions, r.revenue)
            for r in SlotDailyStats.objects.filter(slot=slot, day=day)
        }
    assert rows == {None: (2, 1, 0, Decimal("0.00")), variant.pk: (1, 0, 1, Decimal("19.90"))}


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_lose_no_impression(world: World):
    """Two connections adding to the same row at once: an upsert adds, where read-modify-write would lose one."""
    day = dt.date(2026, 12, 2)
    with tenant_context(world.tenant_a.pk):
        slot = slot_create(tenant=world.tenant_a, actor=ACTOR, data={"key": "hero"})
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with tenant_context(world.tenant_a.pk):
                for _ in range(25):
                    slot_stats_add(
                        tenant_id=world.tenant_a.pk, day=day, figures=[SlotFigures(slot.pk, None, impressions=1)]
                    )
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with tenant_context(world.tenant_a.pk):
        assert SlotDailyStats.objects.get(slot=slot, day=day).impressions == 100
