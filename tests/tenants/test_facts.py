"""Facts of a tenant's set-up (tenants/facts.py): cached, and stale as soon as a watched row changes."""

from __future__ import annotations

import pytest

from journeys.models import Journey
from tenants.context import tenant_context
from tenants.facts import facts_changed, tenant_fact
from tests.conftest import World

pytestmark = pytest.mark.django_db


class Counter:
    """A fact's computation that counts its calls and answers what it is told."""

    def __init__(self, answer: bool = False) -> None:
        self.calls, self.answer = 0, answer

    def __call__(self) -> bool:
        self.calls += 1
        return self.answer


def test_a_fact_is_computed_once_and_recomputed_when_a_watched_row_of_its_tenant_changes(world: World):
    a, b = world.tenant_a, world.tenant_b
    ask_a, ask_b = Counter(), Counter()
    for _ in range(3):
        assert tenant_fact("test.live", a.pk, ask_a) is False
        assert tenant_fact("test.live", b.pk, ask_b) is False
    assert (ask_a.calls, ask_b.calls) == (1, 1)
    with tenant_context(a.pk):
        Journey.objects.create(tenant=a, name="Welcome", trigger="event", trigger_event="signed_up")  # watched
    ask_a.answer = True
    assert tenant_fact("test.live", a.pk, ask_a) is True
    assert tenant_fact("test.live", b.pk, ask_b) is False  # another tenant's facts stay
    assert (ask_a.calls, ask_b.calls) == (2, 1)


def test_an_answer_computed_before_the_change_committed_does_not_outlive_the_commit(
    world: World, django_capture_on_commit_callbacks
):
    """A reader between the change and its commit sees the old state and caches it under the token the
    change set at once; the token set again after the commit makes that answer stale."""
    tenant_id = world.tenant_a.pk
    old_state = Counter(answer=False)
    with django_capture_on_commit_callbacks() as callbacks:
        facts_changed(tenant_id)
        assert tenant_fact("test.goals", tenant_id, old_state) is False  # cached under the first new token
    for callback in callbacks:  # the commit
        callback()
    assert tenant_fact("test.goals", tenant_id, Counter(answer=True)) is True


def test_without_a_shared_cache_every_question_is_computed(world: World, settings):
    settings.TENANT_FACTS_CACHE = False
    ask = Counter()
    tenant_fact("test.live", world.tenant_a.pk, ask)
    tenant_fact("test.live", world.tenant_a.pk, ask)
    assert ask.calls == 2
