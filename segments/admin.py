"""The platform admin for segments: every tenant's segments, edited through the services.

The rules are a JSON editor that is validated against the segment's tenant on save (each
error with its path) and shows a live count while typing (static/js/segment-admin.js posts
the tree to ``preview_view``, which counts inside that tenant only). Materialised rows
(members, entries and exits, sizes, RFM scores) are read-only lists; "Refresh now" queues a
refresh, and deleting goes through the service, which refuses a segment others use.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any, ClassVar

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import models, transaction
from django.forms.fields import InvalidJSONInput
from django.http import HttpRequest, JsonResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from contacts.admin import BigTableAdmin, ReadOnlyAdmin
from segments.api.parsers import MAX_JSON_DEPTH, nested_deeper_than
from segments.models import RfmScore, Segment, SegmentMember, SegmentSize, SegmentTransition
from segments.rules import Registry, validate
from segments.selectors import segment_preview
from segments.services import segment_create, segment_delete, segment_update
from tenants.admin import PlatformAdmin
from tenants.audit import Actor
from tenants.context import tenant_context
from tenants.models import Tenant

TOO_DEEP = f"The JSON nests more than {MAX_JSON_DEPTH} levels deep."
STATIC_HAS_NO_RULES = "A static segment has no rules: leave this empty."


class RulesEditor(forms.Textarea):
    """A monospace JSON editor with a live count under it (static/js/segment-admin.js)."""

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs={"rows": 18, "cols": 100, "spellcheck": "false", **(attrs or {})})

    def render(self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None) -> SafeString:
        editor = super().render(name, value, attrs, renderer)
        output_id = f"{(attrs or {}).get('id', name)}_preview"
        return format_html('{}<div id="{}" class="help" aria-live="polite"></div>', editor, output_id)

    class Media:
        js = ("js/segment-admin.js",)


class RulesField(forms.JSONField):
    """JSON that may be anything the validator then judges; indented for editing; never nested absurdly."""

    def to_python(self, value: Any) -> Any:
        try:
            data = super().to_python(value)
        except RecursionError:
            raise ValidationError(TOO_DEEP, code="invalid") from None
        if nested_deeper_than(data, MAX_JSON_DEPTH):
            raise ValidationError(TOO_DEEP, code="invalid")
        return data

    def bound_data(self, data: Any, initial: Any) -> Any:
        try:
            return super().bound_data(data, initial)
        except RecursionError:
            return InvalidJSONInput(data)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, InvalidJSONInput):
            return value
        return json.dumps(value, ensure_ascii=False, indent=2)


class SegmentAdminForm(forms.ModelForm):
    rules = RulesField(
        required=False,
        widget=RulesEditor,
        help_text='The rule tree (docs/segments.md), e.g. {"all": [{"type": "field", "field": "country", "op": "eq", '
        '"value": "DE"}]}. Checked against the tenant on save; the count below follows your edits.',
    )

    class Meta:
        model = Segment
        fields = ("tenant", "name", "description", "kind", "rules")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        rules = self.fields["rules"]  # a copy per form: what is set here stays with this segment
        rules.widget.attrs.update(
            {"data-segment-rules": "", "data-preview-url": reverse("admin:segments_segment_preview")}
        )
        segment = self.instance
        if segment.pk is not None:
            # A segment stays with its tenant and its kind; the services offer no way to change them.
            self.fields["tenant"].disabled = True
            self.fields["kind"].disabled = True
            rules.widget.attrs.update({"data-tenant": str(segment.tenant_id), "data-segment": str(segment.pk)})
            rules.disabled = not segment.is_dynamic

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        tenant, kind, rules = cleaned.get("tenant"), cleaned.get("kind"), cleaned.get("rules")
        if tenant is None or kind is None or "rules" in self.errors:
            return cleaned
        if kind == Segment.Kind.STATIC:
            if rules:
                self.add_error("rules", STATIC_HAS_NO_RULES)
            return cleaned
        with tenant_context(tenant.pk):
            errors = validate(rules, Registry.for_tenant(tenant), segment_id=self.instance.pk)
        for error in errors:
            self.add_error("rules", f"{error.path or 'rules'}: {error.message}")
        return cleaned


def _admin_link(model: type[models.Model], segment: Segment, text: str) -> SafeString:
    url = reverse(f"admin:segments_{model._meta.model_name}_changelist") + f"?segment__id__exact={segment.pk}"
    return format_html('<a href="{}">{}</a>', url, text)


@admin.register(Segment)
class SegmentAdmin(PlatformAdmin):
    form = SegmentAdminForm
    list_display = ("name", "tenant", "kind", "size", "version", "materialized_version", "refreshed_at", "problem")
    list_filter = ("tenant", "kind", "time_relative")
    search_fields = ("name",)
    ordering: ClassVar[Any] = ("tenant", "name")
    actions = ["refresh_now", "delete_segments"]
    readonly_fields = (
        "membership", "size", "version", "materialized_version", "refreshed_at", "refresh_error", "time_relative",
        "depends_on", "created_by", "created_at", "updated_at",
    )  # fmt: skip
    fieldsets = (
        (None, {"fields": ("tenant", "name", "description", "kind")}),
        ("Rules", {"fields": ("rules",)}),
        ("Membership", {"fields": ("membership", "size", "version", "materialized_version", "refreshed_at",
                                   "refresh_error", "time_relative", "depends_on")}),
        ("Record", {"fields": ("created_by", "created_at", "updated_at")}),
    )  # fmt: skip

    def save_model(self, request: HttpRequest, obj: Segment, form: Any, change: bool) -> None:
        """Save through the services (validation, version, audit, refresh), inside the segment's tenant."""
        actor = Actor.for_user(request.user)  # type: ignore[arg-type]
        with tenant_context(obj.tenant_id):
            if change:
                saved = segment_update(
                    segment=Segment.objects.get(pk=obj.pk), actor=actor, name=obj.name, description=obj.description,
                    rules=obj.rules if obj.is_dynamic else None,
                )  # fmt: skip
            else:
                saved = segment_create(
                    tenant=obj.tenant, actor=actor, name=obj.name, kind=obj.kind, rules=obj.rules or None,
                    description=obj.description,
                )  # fmt: skip
            obj.pk = saved.pk
            obj._state.adding = False
            obj.refresh_from_db()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # through the delete_segments action, which asks the service

    def has_remove_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("segments.delete_segment"))

    def has_refresh_permission(self, request: HttpRequest) -> bool:
        return self.has_change_permission(request)

    @admin.display(description="Last refresh failed")
    def problem(self, segment: Segment) -> str:
        return segment.refresh_error[:80]

    @admin.display(description="Materialised rows")
    def membership(self, segment: Segment) -> SafeString:
        if segment.pk is None:
            return format_html("{}", "Computed by a refresh once the segment is saved.")
        return format_html(
            "{} · {} · {}",
            _admin_link(SegmentMember, segment, f"{segment.size:,} members"),
            _admin_link(SegmentTransition, segment, "entries and exits"),
            _admin_link(SegmentSize, segment, "size history"),
        )

    @admin.action(description="Refresh now (queue a refresh of the selected dynamic segments)", permissions=["refresh"])
    def refresh_now(self, request: HttpRequest, queryset: models.QuerySet[Segment]) -> None:
        from segments.tasks import refresh_segment

        targets = list(queryset.filter(kind=Segment.Kind.DYNAMIC).values_list("tenant_id", "pk"))
        for tenant_id, pk in targets:
            transaction.on_commit(partial(refresh_segment.delay, tenant_id, pk))
        self.message_user(request, f"Queued a refresh of {len(targets)} segment(s).", messages.SUCCESS)
        static = queryset.filter(kind=Segment.Kind.STATIC).count()
        if static:
            self.message_user(request, f"Skipped {static} static segment(s): their members are hand-picked.")

    @admin.action(description="Delete the selected segments (not those another segment uses)", permissions=["remove"])
    def delete_segments(self, request: HttpRequest, queryset: models.QuerySet[Segment]) -> None:
        actor = Actor.for_user(request.user)  # type: ignore[arg-type]
        pending = list(queryset.select_related("tenant"))
        deleted = 0
        refusals: dict[int, str] = {}
        while pending:  # a segment that uses another goes first, so both may go in one action
            refused = []
            for segment in pending:
                with tenant_context(segment.tenant_id):
                    try:
                        segment_delete(segment=segment, actor=actor)
                        deleted += 1
                    except ValidationError as error:
                        refused.append(segment)
                        refusals[segment.pk] = f"{segment.name}: {' '.join(error.messages)}"
            if len(refused) == len(pending):
                break
            pending = refused
        self.message_user(request, f"Deleted {deleted} segment(s).", messages.SUCCESS)
        for segment in pending:
            self.message_user(request, f"Kept {refusals[segment.pk]}", messages.WARNING)

    # --- the live count -------------------------------------------------------------------------------
    def get_urls(self) -> list[URLPattern]:
        preview = path("preview/", self.admin_site.admin_view(self.preview_view), name="segments_segment_preview")
        return [preview, *super().get_urls()]

    def preview_view(self, request: HttpRequest) -> JsonResponse:
        """Count a rule tree inside one tenant: POST {"tenant": id, "segment": id or null, "rules": tree}."""
        if request.method != "POST":
            return JsonResponse({"error": "POST the rules as JSON."}, status=405)
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            body = json.loads(request.body)
        except (ValueError, RecursionError):
            return JsonResponse({"error": "Send a JSON object."}, status=400)
        if not isinstance(body, dict) or nested_deeper_than(body, MAX_JSON_DEPTH):
            return JsonResponse({"error": "Send a JSON object (nested at most 40 levels)."}, status=400)
        tenant_id, segment_id = _id(body.get("tenant")), _id(body.get("segment"))
        tenant = Tenant.objects.filter(pk=tenant_id).first() if tenant_id else None
        if tenant is None:
            return JsonResponse({"error": "Choose a tenant."}, status=400)
        with tenant_context(tenant.pk):
            segment = Segment.objects.filter(pk=segment_id).first() if segment_id else None
            preview = segment_preview(tenant=tenant, rules=body.get("rules"), segment=segment)
        return JsonResponse(preview.as_dict())


def _id(value: Any) -> int | None:
    """``value`` if it is a plausible primary key (a JSON integer, not true/false), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**31 else None


# --- materialised rows: look, never touch ------------------------------------------------------------
@admin.register(SegmentMember)
class SegmentMemberAdmin(BigTableAdmin):
    list_display = ("id", "tenant", "segment", "contact_id", "entered_at")
    list_select_related = ("tenant", "segment")
    search_fields = ("=contact__id", "=segment__id")
    search_help_text = "Exact contact id or segment id."


@admin.register(SegmentTransition)
class SegmentTransitionAdmin(BigTableAdmin):
    """Entries and exits: the events journeys and campaigns trigger on."""

    list_display = ("id", "tenant", "segment", "contact_id", "kind", "occurred_at", "segment_version")
    list_filter = ("tenant", "kind")
    list_select_related = ("tenant", "segment")
    search_fields = ("=contact__id", "=segment__id")
    search_help_text = "Exact contact id or segment id."


@admin.register(SegmentSize)
class SegmentSizeAdmin(BigTableAdmin):
    list_display = ("id", "tenant", "segment", "measured_at", "size")
    list_select_related = ("tenant", "segment")
    search_fields = ("=segment__id",)


@admin.register(RfmScore)
class RfmScoreAdmin(ReadOnlyAdmin):
    ordering: ClassVar[Any] = ("-id",)
    list_display = ("id", "tenant", "contact_id", "recency", "frequency", "monetary", "group", "computed_at")
    list_filter = ("tenant", "group")
    search_fields = ("=contact__id",)
    show_full_result_count = False
