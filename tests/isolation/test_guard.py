"""The checks every isolation test leans on: they must see a row that points across tenants, or changes."""

from __future__ import annotations

import pytest

from analytics.models import Experiment
from campaigns.models import Variant
from journeys.models import Step
from segments.models import Segment
from tenants.context import platform_access
from tests.conftest import World
from tests.isolation.guard import cross_tenant_references, fingerprint_changes, tenant_fingerprint
from tests.isolation.scene import build_scenes

pytestmark = pytest.mark.django_db


def test_cross_tenant_references_are_found_by_key_and_inside_json(world: World):
    a, b = build_scenes(world)
    assert cross_tenant_references() == []
    rule = {"all": [{"type": "segment", "op": "in", "segment": b["segment_id"]}]}
    with platform_access():
        Variant.all_tenants.filter(pk=a["variant_id"]).update(target_segment_id=b["segment_id"])
        Segment.all_tenants.filter(pk=a["segment_id"]).update(rules=rule, depends_on=[b["segment_id"]])
        step = Step.all_tenants.filter(tenant=a.tenant).values_list("pk", flat=True).first()
        Step.all_tenants.filter(pk=step).update(config={"rules": {"any": [rule]}})
        Experiment.all_tenants.create(
            tenant=a.tenant, campaign_id=a["campaign_id"], arms=[a["variant_id"], b["variant_id"]],
            arm_send_hours={str(b["second_variant_id"]): 9},
        )  # fmt: skip
    found = {problem.split(":")[0] for problem in cross_tenant_references()}
    assert found == {
        "campaigns.Variant.target_segment", "segments.Segment.rules", "segments.Segment.depends_on",
        "journeys.Step.config", "analytics.Experiment.arms", "analytics.Experiment.arm_send_hours",
    }  # fmt: skip


def test_the_fingerprint_sees_an_added_a_changed_and_a_removed_row(world: World):
    a, b = build_scenes(world)
    before = tenant_fingerprint(b.tenant.pk)
    with platform_access():
        Segment.all_tenants.filter(pk=b["segment_id"]).update(description="changed")
        assert [c.split(":")[0] for c in fingerprint_changes(before, tenant_fingerprint(b.tenant.pk))] == [
            "segments_segment"
        ]
        Variant.all_tenants.filter(pk=b["second_variant_id"]).delete()
        Segment.all_tenants.filter(pk=a["segment_id"]).update(description="A's change is not B's")
    changed = {c.split(":")[0] for c in fingerprint_changes(before, tenant_fingerprint(b.tenant.pk))}
    assert changed == {"segments_segment", "campaigns_variant"}
