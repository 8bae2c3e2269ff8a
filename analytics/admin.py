"""The platform admin for analytics: every tenant's A/B tests, read-only, with "decide now"; the contacts'
preferred-channel profiles, read-only.

A test is set up by the tenant (the campaign's A/B test page or the API); staff look, and may decide a
test under way through ``experiment_decide`` (with its audit row), e.g. for a tenant who asks.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import models
from django.http import HttpRequest

from analytics.experiments import experiment_decide
from analytics.models import ChannelProfile, Experiment
from contacts.admin import BigTableAdmin, ReadOnlyAdmin
from tenants.audit import Actor
from tenants.context import tenant_context


@admin.register(Experiment)
class ExperimentAdmin(ReadOnlyAdmin):
    ordering: ClassVar[Any] = ("-id",)
    list_display = ("id", "tenant", "campaign", "status", "tested", "metric", "method", "test_share", "decide_at",
                    "winner_name", "significant")  # fmt: skip
    list_filter = ("tenant", "status", "method", "metric")
    list_select_related = ("tenant", "campaign")
    search_fields = ("=campaign__id", "campaign__name")
    actions = ["decide_now"]
    fieldsets = (
        (None, {"fields": ("tenant", "campaign", "status")}),
        ("Settings", {"fields": ("tested", "control", "arm_send_hours", "test_share", "metric", "duration_hours",
                                 "significance_level", "method", "fallback")}),
        ("Run", {"fields": ("run", "arms", "held_count", "started_at", "decide_at")}),
        ("Decision", {"fields": ("winner", "winner_name", "significant", "p_value", "probability", "results",
                                 "reason", "released_count", "decided_at", "decided_by")}),
        ("Record", {"fields": ("created_by", "created_at", "updated_at")}),
    )  # fmt: skip

    def has_decide_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("analytics.change_experiment"))

    @admin.action(description="Decide the selected tests now (on the figures so far)", permissions=["decide"])
    def decide_now(self, request: HttpRequest, queryset: models.QuerySet[Experiment]) -> None:
        actor = Actor.for_user(request.user)  # type: ignore[arg-type]
        decided, refused = 0, []
        for experiment in queryset:
            with tenant_context(experiment.tenant_id):
                try:
                    experiment_decide(experiment=experiment, actor=actor)
                    decided += 1
                except ValidationError as error:
                    refused.append(f"test {experiment.pk}: {' '.join(error.messages)}")
        self.message_user(request, f"Decided {decided} test(s).", messages.SUCCESS)
        for reason in refused:
            self.message_user(request, f"Left {reason}", messages.WARNING)


@admin.register(ChannelProfile)
class ChannelProfileAdmin(BigTableAdmin):
    """Each contact's engagement score per channel, as the daily recompute left it (analytics/preferred_channel.py)."""

    list_display = ("id", "tenant", "contact_id", "best_channel", "email_score", "sms_score", "push_score",
                    "messages_counted", "engagements_counted", "computed_at")  # fmt: skip
    list_filter = ("tenant", "best_channel")
    search_fields = ("=contact__id",)
    search_help_text = "Exact contact id."
