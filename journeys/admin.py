"""The platform admin for journeys: every tenant's journeys, versions, steps, enrollments and webhook notices.

A journey's settings are edited inside its tenant, checked as the services check them (segments must
be the journey tenant's) and saved through ``journey_create``/``journey_update``, with their audit.
Its page shows the steps of the draft (else the live version) and what stops it from starting
(``journey_problems``). Start, pause and archive are admin actions that call the services; archived
journeys are read-only, and only a journey that never started can be deleted (through
``journey_delete``, which removes its hidden campaigns too).

A step of a draft version can be edited here (name, config and exits as JSON), checked with
``journeys.validation.step_problems`` and saved through ``step_update``; published versions stay as
they were published, and steps are added, moved and deleted in the builder or the API, which keep
the graph whole. Enrollments, their steps and webhook notices are read-only: an enrollment's page
shows its path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from contacts.admin import BigTableAdmin, ReadOnlyAdmin
from contacts.services import NUL_MESSAGE, contains_nul
from journeys import services
from journeys.models import Enrollment, EnrollmentStep, Journey, JourneyVersion, Step, WebhookNotice
from journeys.selectors import enrollment_path, journey_version_shown, version_steps
from journeys.validation import StepSpec, exit_labels, settings_problems, step_problems
from segments.rules import Registry
from tenants.admin import PlatformAdmin
from tenants.audit import Actor
from tenants.context import tenant_context

SEGMENT_FIELDS = ("trigger_segment", "entry_segment", "exit_segment")
SETTINGS = (
    "name", "description", "trigger", "trigger_segment", "trigger_event", "trigger_filters", "trigger_stage",
    "trigger_date_field", "entry", "cooldown_days", "entry_segment", "daily_cap", "goal_event", "exit_segment",
    "exit_on_consent_withdrawn", "purpose",
)  # fmt: skip
NO_SEGMENT = "No such segment in this workspace."


def _pretty(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _field_of(path: str) -> str:
    """The form field a problem's path starts with: ``trigger_filters[0].op`` → ``trigger_filters``."""
    for mark in ".[":
        path = path.split(mark, 1)[0]
    return path


def _add_problems(form: forms.ModelForm, problems: list[Any]) -> None:
    """Each problem under its field (a nested path keeps its place in the message), else above the form."""
    refused = set(form.errors)  # a field its own validation refused already says enough
    for problem in problems:
        name = _field_of(problem.field)
        message = problem.message if problem.field == name else f"{problem.field}: {problem.message}"
        if name in refused:
            continue
        form.add_error(name if name in form.fields else None, message)


def _steps_table(steps: list[Step]) -> SafeString:
    if not steps:
        return format_html("{}", "No steps yet.")
    rows = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td></tr>",
        (
            (
                step.key, step.get_kind_display(), step.name, _pretty(step.config), _pretty(step.exits),
                f"{len(step.campaign.variants.all())} variant(s)" if step.campaign is not None else "",
            )
            for step in steps
        ),
    )  # fmt: skip
    return format_html(
        "<table><thead><tr><th>Key</th><th>Kind</th><th>Name</th><th>Config</th><th>Exits</th><th>Message</th>"
        "</tr></thead><tbody>{}</tbody></table>",
        rows,
    )


# --- journeys ---------------------------------------------------------------------------------------
# The segment fields are left to the admin's fieldsets: it builds them per request (inside its platform
# view); built here at import, they would ask the tenant-scoped manager with no tenant set.
class JourneyAdminForm(forms.ModelForm):
    class Meta:
        model = Journey
        fields = ("tenant", *(name for name in SETTINGS if name not in SEGMENT_FIELDS))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None and "tenant" in self.fields:  # absent when shown read-only
            self.fields["tenant"].disabled = True  # a journey stays with its tenant

    def clean_trigger_filters(self) -> Any:
        value = self.cleaned_data.get("trigger_filters")
        if contains_nul(value):
            raise ValidationError(NUL_MESSAGE)
        return [] if value in (None, "") else value

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        tenant = cleaned.get("tenant") or getattr(self.instance, "tenant", None)
        if tenant is None:
            return cleaned
        # A segment chosen by raw id must be the journey tenant's: another tenant's is as unknown as a missing one.
        for name in SEGMENT_FIELDS:
            segment = cleaned.get(name)
            if segment is not None and segment.tenant_id != tenant.pk:
                self.add_error(name, NO_SEGMENT)
        title = cleaned.get("name")
        if title and Journey.all_tenants.filter(tenant=tenant, name=title).exclude(pk=self.instance.pk).exists():
            self.add_error("name", "Another journey has this name.")
        if self.errors:
            return cleaned
        probe = Journey(tenant=tenant, **{name: cleaned.get(name) for name in SETTINGS if name not in SEGMENT_FIELDS})
        for name in SEGMENT_FIELDS:
            setattr(probe, f"{name}_id", cleaned[name].pk if cleaned.get(name) is not None else None)
        with tenant_context(tenant.pk):
            _add_problems(self, settings_problems(probe, Registry.for_tenant(tenant)))
        return cleaned

    def settings_data(self, names: list[str]) -> dict[str, Any]:
        """The cleaned settings as the services take them (segments as ``<name>_id``)."""
        data: dict[str, Any] = {}
        for name in names:
            value = self.cleaned_data[name]
            if name in SEGMENT_FIELDS:
                data[f"{name}_id"] = value.pk if value is not None else None
            else:
                data[name] = value
        return data


@admin.register(Journey)
class JourneyAdmin(PlatformAdmin):
    form = JourneyAdminForm
    list_display = ("name", "tenant", "status", "trigger", "live_version_number", "created_at")
    list_filter = ("tenant", "status", "trigger")
    list_select_related = ("tenant", "live_version")
    search_fields = ("name",)
    ordering: ClassVar[Any] = ("-id",)
    raw_id_fields = SEGMENT_FIELDS
    actions = ["start_journeys", "pause_journeys", "archive_journeys"]
    readonly_fields = (
        "status", "live_version_number", "created_by", "created_at", "updated_at", "steps_shown", "problems",
        "links",
    )  # fmt: skip
    fieldsets = (
        (None, {"fields": ("tenant", "name", "description", "status", "live_version_number", "links")}),
        ("Trigger", {"fields": ("trigger", "trigger_segment", "trigger_event", "trigger_filters", "trigger_stage",
                                "trigger_date_field")}),
        ("Entry", {"fields": ("entry", "cooldown_days", "entry_segment", "daily_cap")}),
        ("Goal and exits", {"fields": ("goal_event", "exit_segment", "exit_on_consent_withdrawn", "purpose")}),
        ("Steps", {"fields": ("steps_shown", "problems")}),
        ("Record", {"fields": ("created_by", "created_at", "updated_at")}),
    )  # fmt: skip

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # An archived journey is shown read-only (its results stay).
        return (obj is None or obj.status != Journey.Status.ARCHIVED) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return (obj is None or obj.live_version_id is None) and super().has_delete_permission(request, obj)

    def has_state_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("journeys.change_journey"))

    @admin.display(description="Live version")
    def live_version_number(self, journey: Journey) -> int | None:
        return journey.live_version.number if journey.live_version is not None else None

    @admin.display(description="Steps (the draft, else the live version)")
    def steps_shown(self, journey: Journey) -> SafeString:
        if journey.pk is None:
            return format_html("{}", "Add steps in the journey builder or the API once the journey is saved.")
        with tenant_context(journey.tenant_id):
            version = journey_version_shown(journey=journey)
            steps = version_steps(version=version) if version is not None else []
            start = format_html(
                "Version {} ({}), first step {}. ",
                version.number if version else "—",
                "draft" if version is None or version.is_draft else "live",
                (version.start_key if version else "") or "—",
            )
            return format_html("{}{}", start, _steps_table(steps))

    @admin.display(description="What stops it from starting")
    def problems(self, journey: Journey) -> SafeString:
        if journey.pk is None:
            return format_html("{}", "—")
        with tenant_context(journey.tenant_id):
            found = services.journey_problems(journey=journey)
        if not found:
            return format_html("{}", "Nothing: it can start.")
        items = format_html_join(
            "", "<li>{}{}{}</li>",
            ((f"step {p.step} · " if p.step else "", f"{p.field}: " if p.field else "", p.message) for p in found),
        )  # fmt: skip
        return format_html("<ul>{}</ul>", items)

    @admin.display(description="See also")
    def links(self, journey: Journey) -> SafeString:
        if journey.pk is None:
            return format_html("{}", "—")
        enrollments = reverse("admin:journeys_enrollment_changelist") + f"?journey__id__exact={journey.pk}"
        versions = reverse("admin:journeys_journeyversion_changelist") + f"?journey__id__exact={journey.pk}"
        return format_html('<a href="{}">Enrollments</a> · <a href="{}">Versions</a>', enrollments, versions)

    def save_model(self, request: HttpRequest, obj: Journey, form: Any, change: bool) -> None:
        """Save through the services: the same checks, the same audit as the builder and the API."""
        actor = Actor.for_user(request.user)  # type: ignore[arg-type]
        with tenant_context(obj.tenant_id):
            if change:
                changed = [name for name in SETTINGS if name in form.changed_data]
                services.journey_update(journey=obj, actor=actor, data=form.settings_data(changed))
            else:
                journey = services.journey_create(
                    tenant=obj.tenant, actor=actor, data=form.settings_data([n for n in SETTINGS if n in form.fields])
                )
                obj.pk = journey.pk
                obj._state.adding = False
            obj.refresh_from_db()

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        # Versions and steps are read-only here, but a journey that never started takes them along on purpose
        # (journey_delete): they need no delete permission of their own.
        deleted, counts, _perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, counts, set(), protected

    def delete_model(self, request: HttpRequest, obj: Journey) -> None:
        with tenant_context(obj.tenant_id):
            services.journey_delete(journey=obj, actor=Actor.for_user(request.user))  # type: ignore[arg-type]

    def get_actions(self, request: HttpRequest) -> Any:
        # Deleting is one journey at a time from its page, where a started one offers no delete: the bulk
        # action would log and announce deletions that journey_delete refuses.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def _each(self, request: HttpRequest, queryset: models.QuerySet[Journey], service_name: str, done: str) -> None:
        service = getattr(services, service_name)
        actor = Actor.for_user(request.user)  # type: ignore[arg-type]
        changed, refused = 0, []
        for journey in queryset.select_related("tenant"):
            with tenant_context(journey.tenant_id):
                try:
                    with transaction.atomic():
                        service(journey=journey, actor=actor)
                    changed += 1
                except ValidationError as error:
                    refused.append(f"{journey.name}: {' '.join(error.messages)}")
        self.message_user(request, f"{done} {changed} journey(s).", messages.SUCCESS)
        for reason in refused:
            self.message_user(request, f"Left {reason}", messages.WARNING)

    @admin.action(description="Start (or resume) the selected journeys, publishing their drafts", permissions=["state"])
    def start_journeys(self, request: HttpRequest, queryset: models.QuerySet[Journey]) -> None:
        self._each(request, queryset, "journey_start", "Started")

    @admin.action(description="Pause the selected live journeys", permissions=["state"])
    def pause_journeys(self, request: HttpRequest, queryset: models.QuerySet[Journey]) -> None:
        self._each(request, queryset, "journey_pause", "Paused")

    @admin.action(description="Archive the selected journeys (contacts in flight exit)", permissions=["state"])
    def archive_journeys(self, request: HttpRequest, queryset: models.QuerySet[Journey]) -> None:
        self._each(request, queryset, "journey_archive", "Archived")


# --- versions and steps ----------------------------------------------------------------------------
@admin.register(JourneyVersion)
class JourneyVersionAdmin(ReadOnlyAdmin):
    """What each publish made live (and the draft being edited): look, never touch."""

    ordering: ClassVar[Any] = ("-id",)
    list_display = ("id", "journey", "tenant", "number", "start_key", "published_at", "created_at")
    list_filter = ("tenant", ("published_at", admin.EmptyFieldListFilter))
    list_select_related = ("tenant", "journey")
    search_fields = ("=journey__id", "journey__name")
    fields = ("tenant", "journey", "number", "start_key", "published_at", "created_at", "steps_of_version")

    @admin.display(description="Steps")
    def steps_of_version(self, version: JourneyVersion) -> SafeString:
        with tenant_context(version.tenant_id):
            return _steps_table(version_steps(version=version))


class StepAdminForm(forms.ModelForm):
    class Meta:
        model = Step
        fields = ("name", "config", "exits")

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        step = self.instance
        config, exits = cleaned.get("config"), cleaned.get("exits")
        for name, value in (("config", config), ("exits", exits)):
            if contains_nul(value):
                self.add_error(name, NUL_MESSAGE)
        if not isinstance(config, Mapping):
            self.add_error("config", "Expected a JSON object.")
        if not isinstance(exits, Mapping) or not all(isinstance(v, str | None) for v in exits.values()):
            self.add_error("exits", "Expected {exit label: step key or null}.")
        if self.errors:
            return cleaned
        assert isinstance(config, Mapping) and isinstance(exits, Mapping)
        with tenant_context(step.tenant_id):
            problems = step_problems(StepSpec(key=step.key, kind=step.kind, config=config, exits={}),
                                     Registry.for_tenant(step.tenant))  # fmt: skip
            keys = set(
                Step.objects.filter(tenant=step.tenant_id, version=step.version_id).values_list("key", flat=True)
            )
        _add_problems(self, problems)
        labels = exit_labels(step.kind, config)
        for label in sorted(set(exits) - set(labels)):
            self.add_error("exits", f"This step has no exit {label!r} (its exits: {', '.join(labels) or 'none'}).")
        for label, target in exits.items():
            if label in labels and target is not None and (target not in keys or target == step.key):
                self.add_error("exits", f"Exit {label!r}: expected the key of another step of this version, or null.")
        return cleaned


@admin.register(Step)
class StepAdmin(PlatformAdmin):
    """Steps of every version; a draft's step may be edited (published ones are read-only)."""

    form = StepAdminForm
    ordering: ClassVar[Any] = ("-id",)
    list_display = ("id", "key", "name", "kind", "journey", "version_number", "tenant")
    list_filter = ("tenant", "kind")
    list_select_related = ("tenant", "version__journey")
    search_fields = ("=key", "=version__journey__id", "version__journey__name")
    readonly_fields = ("tenant", "journey", "version_number", "key", "kind", "position", "message")
    fields = ("tenant", "journey", "version_number", "key", "kind", "position", "name", "config", "exits", "message")

    def get_queryset(self, request: HttpRequest) -> models.QuerySet[Any]:
        return super().get_queryset(request).select_related("tenant", "version__journey", "campaign")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # the builder and the API insert steps and keep the graph whole

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # deleting relinks the graph: the builder and the API do it

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        editable = obj is None or (obj.version.is_draft and obj.version.journey.status != Journey.Status.ARCHIVED)
        return editable and super().has_change_permission(request, obj)

    @admin.display(description="Journey")
    def journey(self, step: Step) -> Journey:
        return step.version.journey

    @admin.display(description="Version")
    def version_number(self, step: Step) -> str:
        return f"{step.version.number} ({'draft' if step.version.is_draft else 'published'})"

    @admin.display(description="Message")
    def message(self, step: Step) -> SafeString:
        if step.campaign is None:
            return format_html("{}", "—")
        url = reverse("admin:campaigns_campaign_change", args=[step.campaign_id])
        return format_html('<a href="{}">{}</a>', url, "The step's message (its hidden campaign and variants)")

    def save_model(self, request: HttpRequest, obj: Step, form: Any, change: bool) -> None:
        """Save through ``step_update`` (the draft's step, by key), with its audit."""
        data = {name: form.cleaned_data[name] for name in ("name", "config", "exits") if name in form.changed_data}
        actor = Actor.for_user(request.user)  # type: ignore[arg-type]
        with tenant_context(obj.tenant_id):
            services.step_update(journey=obj.version.journey, actor=actor, key=obj.key, data=data)
        obj.refresh_from_db()


# --- enrollments: look, never touch ---------------------------------------------------------------
@admin.register(Enrollment)
class EnrollmentAdmin(BigTableAdmin):
    list_display = ("id", "tenant", "journey", "contact_id", "status", "step_key", "entered_at", "finished_at")
    list_filter = ("tenant", "status", "journey")
    list_select_related = ("tenant", "journey", "step")
    search_fields = ("=contact__id", "=id")
    search_help_text = "Exact contact id or enrollment id."
    fields = (
        "tenant", "journey", "version", "contact", "status", "step", "seq", "step_entered_at", "next_run_at",
        "waiting_for", "entered_at", "finished_at", "exit_reason", "trigger_detail", "path",
    )  # fmt: skip

    @admin.display(description="Step")
    def step_key(self, enrollment: Enrollment) -> str:
        return enrollment.step.key if enrollment.step is not None else "—"

    @admin.display(description="Path (steps taken)")
    def path(self, enrollment: Enrollment) -> SafeString:
        with tenant_context(enrollment.tenant_id):
            taken = enrollment_path(enrollment=enrollment)
        if not taken:
            return format_html("{}", "No step taken yet.")
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (row["seq"], row["key"], row["name"], row["entered_at"], row["left_at"] or "—", row["outcome"],
                 row["delivery_id"] or "", row["detail"])
                for row in taken
            ),
        )  # fmt: skip
        return format_html(
            "<table><thead><tr><th>#</th><th>Key</th><th>Step</th><th>Arrived</th><th>Left</th><th>Outcome</th>"
            "<th>Delivery</th><th>Detail</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )


@admin.register(EnrollmentStep)
class EnrollmentStepAdmin(BigTableAdmin):
    list_display = (
        "id",
        "tenant",
        "enrollment_id",
        "step_id",
        "seq",
        "entered_at",
        "left_at",
        "outcome",
        "delivery_id",
    )
    search_fields = ("=enrollment__id",)
    search_help_text = "Exact enrollment id."


@admin.register(WebhookNotice)
class WebhookNoticeAdmin(BigTableAdmin):
    list_display = ("id", "tenant", "enrollment_id", "step_id", "url", "status", "attempts", "next_attempt_at",
                    "sent_at")  # fmt: skip
    list_filter = ("tenant", "status")
    search_fields = ("=enrollment__id",)
    search_help_text = "Exact enrollment id."
