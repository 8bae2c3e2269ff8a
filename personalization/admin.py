"""The platform admin for website personalisation: every tenant's site keys, slots and their variants,
visitors, clicks and daily figures.

A slot is edited with its variants inline, inside its tenant, and saved through the services
(``slot_create``/``slot_update``, ``variant_add``/``variant_update``/``variant_move``/``variant_delete``), with
their checks and audit; a variant's segment must be the slot tenant's. Site keys are shown, never
edited here (they are created in the workspace, where the identify secret is shown once): their
identify secret is never shown in full, and revoking or requiring signed identify are admin actions
that call the services. Visitors, clicks and figures are read-only.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest

from contacts.admin import BigTableAdmin, ReadOnlyAdmin
from personalization import services
from personalization.models import CONTENT_FIELDS, SiteKey, Slot, SlotClick, SlotDailyStats, SlotVariant, Visitor
from tenants.admin import PlatformAdmin
from tenants.audit import Actor
from tenants.context import tenant_context

NO_SEGMENT = "No such segment in this workspace."
VARIANT_FIELDS = ("name", "target", "target_segment", "target_stage", "active", *CONTENT_FIELDS)


def _actor(request: HttpRequest) -> Actor:
    return Actor.for_user(request.user)  # type: ignore[arg-type]


def _each(admin_: admin.ModelAdmin, request: HttpRequest, queryset: Any, act: Any, done: str) -> None:
    """Run ``act(obj)`` for each selected object inside its tenant; report what changed and what was refused."""
    changed, refused = 0, []
    for obj in queryset.select_related("tenant"):
        with tenant_context(obj.tenant_id):
            try:
                with transaction.atomic():
                    act(obj)
                changed += 1
            except ValidationError as error:
                refused.append(f"{obj}: {' '.join(error.messages)}")
    admin_.message_user(request, f"{done} {changed}.", messages.SUCCESS)
    for reason in refused:
        admin_.message_user(request, f"Left {reason}", messages.WARNING)


# --- site keys: look, and act through the services ----------------------------------------------------------
@admin.register(SiteKey)
class SiteKeyAdmin(ReadOnlyAdmin):
    list_display = ("name", "tenant", "public_key", "require_signed_identify", "created_at", "revoked_at")
    list_filter = ("tenant", "require_signed_identify", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("name", "=public_key")
    ordering: ClassVar[Any] = ("-id",)
    # Never ``identify_secret`` itself: only a hint to tell secrets apart.
    fields = (
        "tenant", "name", "public_key", "allowed_origins", "require_signed_identify", "identify_secret_hint",
        "created_by", "created_at", "revoked_at",
    )  # fmt: skip
    actions = ["revoke_keys", "require_signed_identify", "allow_unsigned_identify"]

    @admin.display(description="Identify secret")
    def identify_secret_hint(self, site_key: SiteKey) -> str:
        return f"{site_key.identify_secret[:4]}… (shown once, when it was made)"

    def has_state_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("personalization.change_sitekey"))

    @admin.action(description="Revoke the selected site keys (their snippets stop at once)", permissions=["state"])
    def revoke_keys(self, request: HttpRequest, queryset: models.QuerySet[SiteKey]) -> None:
        actor = _actor(request)
        _each(self, request, queryset, lambda key: services.site_key_revoke(site_key=key, actor=actor), "Revoked")

    @admin.action(description="Require signed identify on the selected keys", permissions=["state"])
    def require_signed_identify(self, request: HttpRequest, queryset: models.QuerySet[SiteKey]) -> None:
        self._signed(request, queryset, True)

    @admin.action(description="Allow unsigned identify on the selected keys", permissions=["state"])
    def allow_unsigned_identify(self, request: HttpRequest, queryset: models.QuerySet[SiteKey]) -> None:
        self._signed(request, queryset, False)

    def _signed(self, request: HttpRequest, queryset: models.QuerySet[SiteKey], required: bool) -> None:
        actor = _actor(request)
        _each(
            self, request, queryset,
            lambda key: services.site_key_update(site_key=key, actor=actor, require_signed_identify=required),
            "Changed",
        )  # fmt: skip


# --- slots with their variants ----------------------------------------------------------------------------
class SlotAdminForm(forms.ModelForm):
    class Meta:
        model = Slot
        fields = ("tenant", "key", "name", "active", *CONTENT_FIELDS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None and "tenant" in self.fields:
            self.fields["tenant"].disabled = True  # a slot stays with its tenant
        if "name" in self.fields:
            self.fields["name"].required = False  # the key when blank (slot_create)


class SlotInlineFormSet(BaseInlineFormSet):
    """Tell each variant row its slot's tenant before validation (a new slot's id is not known yet)."""

    def add_fields(self, form: forms.Form, index: int | None) -> None:
        super().add_fields(form, index)
        form.slot_tenant_id = self.instance.tenant_id  # type: ignore[attr-defined]


# The segment field is left to the inline's fieldsets: the admin builds it per request (inside its platform
# view); built here at import, it would ask the tenant-scoped manager with no tenant set.
class SlotVariantAdminForm(forms.ModelForm):
    class Meta:
        model = SlotVariant
        fields = ("priority", *(name for name in VARIANT_FIELDS if name != "target_segment"))

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        segment = cleaned.get("target_segment")
        tenant_id = getattr(self, "slot_tenant_id", None)
        # A segment chosen by raw id must be the slot tenant's: another tenant's is as unknown as a missing one.
        if segment is not None and tenant_id is not None and segment.tenant_id != tenant_id:
            self.add_error("target_segment", NO_SEGMENT)
        target = cleaned.get("target")
        if target == SlotVariant.Target.SEGMENT:
            if segment is None and "target_segment" not in self.errors:
                self.add_error("target_segment", "Required when the variant is for a segment.")
            cleaned["target_stage"] = ""
        elif target == SlotVariant.Target.STAGE:
            if not cleaned.get("target_stage"):
                self.add_error("target_stage", "Required when the variant is for a lifecycle stage.")
            cleaned["target_segment"] = None
        return cleaned


class SlotVariantInline(admin.StackedInline):
    model = SlotVariant
    form = SlotVariantAdminForm
    formset = SlotInlineFormSet
    raw_id_fields = ("target_segment",)
    extra = 0
    ordering = ("priority", "id")
    fieldsets = (
        (None, {"fields": ("name", "priority", "active", "target", "target_segment", "target_stage")}),
        ("Content", {"fields": CONTENT_FIELDS}),
    )

    def get_queryset(self, request: HttpRequest) -> models.QuerySet[Any]:
        return SlotVariant.all_tenants.select_related("target_segment")


@admin.register(Slot)
class SlotAdmin(PlatformAdmin):
    form = SlotAdminForm
    inlines = (SlotVariantInline,)
    list_display = ("key", "name", "tenant", "active", "updated_at")
    list_filter = ("tenant", "active")
    search_fields = ("=key", "name")
    ordering: ClassVar[Any] = ("-id",)
    readonly_fields = ("created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("tenant", "key", "name", "active")}),
        ("Default content", {"fields": CONTENT_FIELDS}),
        ("Record", {"fields": ("created_at", "updated_at")}),
    )

    def save_model(self, request: HttpRequest, obj: Slot, form: Any, change: bool) -> None:
        """Save through the services: the same checks, the same audit as the pages and the API."""
        names = ("key", "name", "active", *CONTENT_FIELDS)
        with tenant_context(obj.tenant_id):
            if change:
                data = {name: form.cleaned_data[name] for name in names if name in form.changed_data}
                if data:
                    services.slot_update(slot=obj, actor=_actor(request), data=data)
            else:
                slot = services.slot_create(
                    tenant=obj.tenant, actor=_actor(request), data={name: form.cleaned_data[name] for name in names}
                )
                obj.pk = slot.pk
                obj._state.adding = False
            obj.refresh_from_db()

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        """Each variant row through the services; what changed is left where the admin's history looks for it."""
        slot: Slot = form.instance
        actor = _actor(request)
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        with tenant_context(slot.tenant_id):
            for row in formset.deleted_forms:
                if row.instance.pk is not None:
                    services.variant_delete(variant=row.instance, actor=actor)
                    formset.deleted_objects.append(row.instance)
            for row in formset.forms:
                if row in formset.deleted_forms or not row.has_changed():
                    continue
                data = {name: row.cleaned_data[name] for name in VARIANT_FIELDS}
                if row.instance.pk is None:
                    data["priority"] = row.cleaned_data["priority"]
                    formset.new_objects.append(services.variant_add(slot=slot, actor=actor, data=data))
                    continue
                variant = services.variant_update(variant=row.instance, actor=actor, data=data)
                if "priority" in row.changed_data:
                    variant = services.variant_move(variant=variant, position=row.cleaned_data["priority"], actor=actor)
                formset.changed_objects.append((variant, row.changed_data))


# --- visitors, clicks and figures: look, never touch ----------------------------------------------------------
@admin.register(Visitor)
class VisitorAdmin(BigTableAdmin):
    list_display = ("id", "tenant", "anonymous_id", "contact_id", "identified_at", "first_seen_at", "last_seen_at")
    list_filter = ("tenant", ("identified_at", admin.EmptyFieldListFilter))
    search_fields = ("=anonymous_id", "=contact__id")
    search_help_text = "Exact visitor id (anonymous id) or contact id."


@admin.register(SlotClick)
class SlotClickAdmin(BigTableAdmin):
    list_display = ("id", "tenant", "slot", "variant", "visitor_id", "contact_id", "clicked_at")
    list_filter = ("tenant",)
    list_select_related = ("tenant", "slot", "variant")
    search_fields = ("=contact__id", "=slot__key")
    search_help_text = "Exact contact id or slot key."


@admin.register(SlotDailyStats)
class SlotDailyStatsAdmin(BigTableAdmin):
    list_display = ("day", "tenant", "slot", "variant", "impressions", "clicks", "conversions", "revenue")
    list_filter = ("tenant",)
    list_select_related = ("tenant", "slot", "variant")
    search_fields = ("=slot__key",)
    search_help_text = "Exact slot key."
