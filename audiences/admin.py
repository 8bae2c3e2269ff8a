"""The platform admin for ad audiences: every tenant's destinations and exports.

Destinations are configured inside their workspace (web or API), where the URL is checked and the
secret is written once; here staff look, and may run one now or turn it on or off (through the
services, with their audit and beat rows). Exports are a record: read-only.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.http import HttpRequest

from audiences import services
from audiences.models import AudienceDestination, AudienceExport
from contacts.admin import BigTableAdmin, ReadOnlyAdmin
from tenants.audit import Actor
from tenants.context import tenant_context


@admin.register(AudienceDestination)
class AudienceDestinationAdmin(ReadOnlyAdmin):
    list_display = ("name", "tenant", "segment", "format", "kind", "schedule_text", "enabled", "updated_at")
    list_filter = ("tenant", "format", "kind", "enabled")
    list_select_related = ("tenant", "segment")
    search_fields = ("name", "url")
    fields = (
        "tenant", "name", "segment", "kind", "format", "url", "schedule", "interval_minutes", "crontab", "enabled",
        "periodic_task", "created_by", "created_at", "updated_at",
    )  # fmt: skip
    actions = ["run_now", "turn_on", "turn_off"]

    @admin.display(description="Schedule")
    def schedule_text(self, destination: AudienceDestination) -> str:
        if destination.schedule == AudienceDestination.Schedule.CRONTAB:
            return f"crontab {destination.crontab}"
        return f"every {destination.interval_minutes} min"

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("audiences.change_audiencedestination"))

    def _each(self, request: HttpRequest, queryset: models.QuerySet[AudienceDestination], act: Any, done: str) -> None:
        actor = Actor.for_user(request.user)  # type: ignore[arg-type]
        changed, refused = 0, []
        for destination in queryset.select_related("tenant", "segment"):
            with tenant_context(destination.tenant_id):
                try:
                    with transaction.atomic():
                        act(destination, actor)
                    changed += 1
                except ValidationError as error:
                    refused.append(f"{destination.name}: {' '.join(error.messages)}")
        self.message_user(request, f"{done} {changed} destination(s).", messages.SUCCESS)
        for reason in refused:
            self.message_user(request, f"Left {reason}", messages.WARNING)

    @admin.action(description="Run the selected destinations now", permissions=["operate"])
    def run_now(self, request: HttpRequest, queryset: models.QuerySet[AudienceDestination]) -> None:
        self._each(request, queryset, lambda d, a: services.destination_run_now(destination=d, actor=a), "Queued")

    @admin.action(description="Turn the selected destinations on", permissions=["operate"])
    def turn_on(self, request: HttpRequest, queryset: models.QuerySet[AudienceDestination]) -> None:
        self._each(
            request, queryset,
            lambda d, a: services.destination_update(destination=d, actor=a, data={"enabled": True}), "Turned on",
        )  # fmt: skip

    @admin.action(description="Turn the selected destinations off", permissions=["operate"])
    def turn_off(self, request: HttpRequest, queryset: models.QuerySet[AudienceDestination]) -> None:
        self._each(
            request, queryset,
            lambda d, a: services.destination_update(destination=d, actor=a, data={"enabled": False}), "Turned off",
        )  # fmt: skip


@admin.register(AudienceExport)
class AudienceExportAdmin(BigTableAdmin):
    list_display = (
        "id", "tenant", "segment_name", "segment_version", "format", "kind", "delivery", "status", "row_count",
        "created_at",
    )  # fmt: skip
    list_filter = ("tenant", "status", "format", "delivery", "kind")
    list_select_related = ("tenant",)
    search_fields = ("=id", "segment_name")
    # The stored file (while a push is in flight) holds hashed personal data: not shown here.
    fields = tuple(f.name for f in AudienceExport._meta.fields if not f.primary_key and f.name != "file")
