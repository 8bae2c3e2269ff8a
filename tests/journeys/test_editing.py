"""Editing journeys: settings, steps of the draft, the graph checks, versions, blueprints."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from journeys.blueprints import BLUEPRINTS
from journeys.models import Journey, JourneyVersion, Step
from journeys.services import (
    JourneyInvalid,
    journey_create,
    journey_draft,
    journey_from_blueprint,
    journey_problems,
    journey_start,
    journey_update,
    step_add,
    step_delete,
    step_move,
    step_update,
)
from tenants.audit import Actor
from tenants.context import tenant_context

pytestmark = pytest.mark.django_db

EMAIL = {"variants": [{"name": "All", "target": "default", "subject": "Hi", "html_body": "<p>Hello</p>"}]}


@pytest.fixture
def tenant(world):
    with tenant_context(world.tenant_a.id):
        yield world.tenant_a


@pytest.fixture
def actor(world):
    return Actor.for_user(world.alice)


def _journey(tenant, actor, **settings) -> Journey:
    data = {"name": "Cart", "trigger": "event", "trigger_event": "cart_abandoned", **settings}
    return journey_create(tenant=tenant, actor=actor, data=data)


def _keys(journey: Journey) -> list[tuple[str, str, dict]]:
    draft = journey_draft(journey=journey)
    return [(s.key, s.kind, s.exits) for s in Step.objects.filter(version=draft).order_by("position")]


@pytest.mark.parametrize("key", sorted(BLUEPRINTS))
def test_every_blueprint_makes_a_journey_that_can_start(tenant, actor, key):
    journey = journey_from_blueprint(tenant=tenant, actor=actor, blueprint=key)
    assert journey_problems(journey=journey) == []
    journey_start(journey=journey, actor=actor)
    journey.refresh_from_db()
    assert journey.status == Journey.Status.LIVE
    assert journey.live_version.published_at is not None


def test_steps_are_inserted_moved_and_deleted_with_the_graph_kept_whole(tenant, actor):
    journey = _journey(tenant, actor)
    wait = step_add(journey=journey, actor=actor, kind="wait", config={"duration": {"amount": 1, "unit": "hours"}})
    send = step_add(journey=journey, actor=actor, kind="send", after=wait.key, config={"channel": "email"},
                    content=EMAIL)  # fmt: skip
    germans = {"all": [{"type": "field", "field": "country", "op": "eq", "value": "DE"}]}
    branch = step_add(journey=journey, actor=actor, kind="branch", after=wait.key, config={"rules": germans})
    # wait → branch (yes → send) ; the inserted step took over what followed on its first exit.
    assert _keys(journey) == [
        (wait.key, "wait", {"next": branch.key}),
        (branch.key, "branch", {"yes": send.key, "no": None}),
        (send.key, "send", {"next": None}),
    ]
    step_move(journey=journey, actor=actor, key=wait.key, after=send.key)
    draft = journey_draft(journey=journey)
    assert draft.start_key == branch.key
    assert {k: e for k, _, e in _keys(journey)}[send.key] == {"next": wait.key}
    gone = step_delete(journey=journey, actor=actor, key=branch.key, keep="no")
    assert set(gone) == {branch.key, send.key, wait.key}
    assert journey_draft(journey=journey).start_key == ""


def test_problems_name_the_step_and_field(tenant, actor):
    journey = _journey(tenant, actor)
    step_add(journey=journey, actor=actor, kind="send", config={"channel": "email"})
    with pytest.raises(ValidationError) as error:
        step_add(journey=journey, actor=actor, kind="wait", config={"duration": {"amount": 0, "unit": "days"}})
    assert "config.duration" in error.value.message_dict
    problems = journey_problems(journey=journey)
    assert [(p.step, p.field) for p in problems] == [("s1", "variants")]
    with pytest.raises(JourneyInvalid):
        journey_start(journey=journey, actor=actor)


def test_a_loop_is_refused(tenant, actor):
    journey = _journey(tenant, actor)
    first = step_add(journey=journey, actor=actor, kind="wait", config={"duration": {"amount": 1, "unit": "days"}})
    second = step_add(journey=journey, actor=actor, kind="wait", after=first.key,
                      config={"duration": {"amount": 1, "unit": "days"}})  # fmt: skip
    step_update(journey=journey, actor=actor, key=second.key, data={"exits": {"next": first.key}})
    problems = journey_problems(journey=journey)
    assert any(p.field == "exits" and "every path must end" in p.message for p in problems)


def test_editing_a_live_journey_edits_a_draft_and_publishing_makes_a_new_version(tenant, actor):
    journey = journey_from_blueprint(tenant=tenant, actor=actor, blueprint="post_purchase")
    journey = journey_start(journey=journey, actor=actor)
    live = journey.live_version
    step_update(journey=journey, actor=actor, key="s2", data={"config": {"duration": {"amount": 3, "unit": "days"}}})
    draft = journey_draft(journey=journey)
    assert draft.pk != live.pk and draft.number == 2
    assert Step.objects.get(version=live, key="s2").config["duration"]["amount"] == 7
    # The draft's send steps have campaigns of their own.
    live_campaigns = set(Step.objects.filter(version=live, kind="send").values_list("campaign_id", flat=True))
    draft_campaigns = set(Step.objects.filter(version=draft, kind="send").values_list("campaign_id", flat=True))
    assert not live_campaigns & draft_campaigns
    journey_start(journey=journey, actor=actor)
    journey.refresh_from_db()
    assert journey.live_version_id == draft.pk
    assert JourneyVersion.objects.filter(journey=journey).count() == 2


def test_settings_are_validated(tenant, actor):
    with pytest.raises(ValidationError) as error:
        journey_create(tenant=tenant, actor=actor, data={"name": "X", "trigger": "event", "trigger_event": "bad name!"})
    assert "trigger_event" in error.value.message_dict
    journey = _journey(tenant, actor)
    with pytest.raises(ValidationError) as error:
        journey_update(journey=journey, actor=actor, data={"trigger_segment_id": 999999})
    assert "trigger_segment" in error.value.message_dict


def test_a_segment_in_use_by_a_journey_or_campaign_cannot_be_deleted(tenant, actor):
    from campaigns.models import Campaign, CampaignAudience
    from segments.models import Segment
    from segments.selectors import segment_usages
    from segments.services import segment_create, segment_delete

    used = segment_create(tenant=tenant, actor=actor, name="Used", kind=Segment.Kind.STATIC)
    branch = segment_create(tenant=tenant, actor=actor, name="Branch", kind=Segment.Kind.STATIC)
    campaign = Campaign.objects.create(tenant=tenant, name="Spring")
    CampaignAudience.objects.create(tenant=tenant, campaign=campaign, segment=used)
    journey = _journey(tenant, actor, name="Cart", exit_segment_id=used.pk)
    rules = {"all": [{"type": "segment", "op": "in", "segment": branch.pk}]}
    step_add(journey=journey, actor=actor, kind="branch", config={"rules": rules})
    assert [(u["kind"], u["name"]) for u in segment_usages(used)] == [("campaign", "Spring"), ("journey", "Cart")]
    assert [(u["kind"], u["name"]) for u in segment_usages(branch)] == [("journey", "Cart")]
    with pytest.raises(ValidationError, match="Used by campaigns: Spring; journeys: Cart"):
        segment_delete(segment=used, actor=actor)


def test_an_erased_contact_leaves_its_journeys(tenant, actor):
    from contacts.models import Contact
    from contacts.privacy import contact_erase
    from journeys.engine import enroll
    from journeys.models import Enrollment

    journey = _journey(tenant, actor)
    step_add(journey=journey, actor=actor, kind="wait", config={"duration": {"amount": 1, "unit": "days"}})
    journey = journey_start(journey=journey, actor=actor)
    contact = Contact.objects.create(tenant=tenant, email="gone@example.com")
    enroll(journey=journey, contact_ids=[contact.pk])
    contact_erase(contact=contact, actor=actor)
    assert Enrollment.objects.get(contact=contact).exit_reason == "contact erased"
