"""The platform admin for the audience data: every tenant's rows, for looking and for privacy requests.

Writes go through the services, as everywhere: the ledgers (consent, audit, events) are
read-only here, and erasure and suppression removal are admin actions that call the
services inside the row's tenant. The big tables count at most COUNT_CAP rows per page view.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, ClassVar, cast

from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import models
from django.http import HttpRequest

from contacts.consent import suppression_remove
from contacts.models import (
    AttributeDefinition,
    ConsentRecord,
    ConsentState,
    Contact,
    Event,
    EventDailyRollup,
    ImportJob,
    LifecycleTransition,
    PrivacyRequest,
    Suppression,
)
from contacts.privacy import contact_erase
from contacts.services import attribute_delete
from tenants.admin import PlatformAdmin
from tenants.audit import Actor
from tenants.context import tenant_context
from tenants.models import AuditLog

COUNT_CAP = 10_000


class CappedCountPaginator(Paginator):
    """Count at most COUNT_CAP + 1 rows: a changelist over ten million events must not COUNT(*) them all."""

    @cached_property
    def count(self) -> int:
        rows = cast("models.QuerySet[Any]", self.object_list)
        return rows.order_by().values("pk")[: COUNT_CAP + 1].count()


class ReadOnlyAdmin(PlatformAdmin):
    """A ledger or a derived table: staff may look, never add, edit or delete.

    Every field is a read-only display, so no form field is ever built: a form field for a
    foreign key to a tenant-owned model would ask its scoped manager for choices, which raises
    in the admin's platform view.
    """

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if self.fields:
            return list(self.fields)
        return [f.name for f in self.model._meta.fields if not f.primary_key]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if self.fieldsets:
            return list(flatten_fieldsets(self.fieldsets))
        return self.get_fields(request, obj)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class BigTableAdmin(ReadOnlyAdmin):
    paginator = CappedCountPaginator
    show_full_result_count = False
    list_per_page = 50
    # Newest first by primary key: the models' time orderings have no index without a tenant.
    ordering: ClassVar[Any] = ("-id",)


def _user_may(request: HttpRequest, permission: str) -> bool:
    return bool(request.user.has_perm(permission))


@admin.register(Contact)
class ContactAdmin(BigTableAdmin):
    list_display = ("id", "tenant", "email", "external_id", "country", "lifecycle_stage", "last_seen_at", "erased_at")
    list_filter = ("tenant", "lifecycle_stage", ("erased_at", admin.EmptyFieldListFilter))
    # Exact matches only: they use the (tenant, email/external_id/phone) indexes.
    search_fields = ("=email", "=external_id", "=phone")
    search_help_text = "Exact email, external id or phone (E.164)."
    actions = ["erase_contacts"]
    fieldsets = (
        ("Identity", {"fields": ("tenant", "external_id", "anonymous_id", "email", "phone", "push_tokens",
                                 "first_name", "last_name", "locale", "time_zone")}),
        ("Demographic", {"fields": ("birth_date", "gender", "income_band", "education", "job_role")}),
        ("Geographic", {"fields": ("country", "region", "city", "postal_code")}),
        ("B2B", {"fields": ("company", "industry", "company_size", "buying_stage")}),
        ("Psychographic", {"fields": ("interests", "values", "lifestyle", "attitudes")}),
        ("Custom attributes", {"fields": ("attributes",)}),
        ("Lifecycle and engagement", {"fields": ("lifecycle_stage", "lifecycle_changed_at", "first_seen_at",
                                                 "last_seen_at", "last_engaged_at", "order_count", "total_revenue",
                                                 "last_order_at")}),
        ("Record", {"fields": ("erased_at", "created_at", "updated_at")}),
    )  # fmt: skip

    def has_erase_permission(self, request: HttpRequest) -> bool:
        return _user_may(request, "contacts.delete_contact")

    @admin.action(description="Erase personal data of the selected contacts (GDPR art. 17)", permissions=["erase"])
    def erase_contacts(self, request: HttpRequest, queryset: models.QuerySet[Contact]) -> None:
        actor = Actor.for_user(request.user)  # type: ignore[arg-type]
        erased = 0
        for contact in queryset.filter(erased_at__isnull=True).select_related("tenant"):
            with tenant_context(contact.tenant_id):
                contact_erase(contact=contact, actor=actor)
            erased += 1
        self.message_user(request, f"Erased {erased} contact(s).", messages.SUCCESS)


@admin.register(AttributeDefinition)
class AttributeDefinitionAdmin(ReadOnlyAdmin):
    """Tenants define attributes in their settings; staff may look and remove (audited, through the service)."""

    list_display = ("key", "label", "type", "tenant", "created_at")
    list_filter = ("tenant", "type")
    search_fields = ("key", "label")
    actions = ["delete_definitions"]

    def has_remove_permission(self, request: HttpRequest) -> bool:
        return _user_may(request, "contacts.delete_attributedefinition")

    @admin.action(description="Delete the selected definitions (values on contacts stay)", permissions=["remove"])
    def delete_definitions(self, request: HttpRequest, queryset: models.QuerySet[AttributeDefinition]) -> None:
        actor = Actor.for_user(request.user)  # type: ignore[arg-type]
        count = 0
        for definition in queryset.select_related("tenant"):
            with tenant_context(definition.tenant_id):
                attribute_delete(definition=definition, actor=actor)
            count += 1
        self.message_user(request, f"Deleted {count} definition(s).", messages.SUCCESS)


@admin.register(Event)
class EventAdmin(BigTableAdmin):
    list_display = ("id", "name", "tenant", "contact_id", "occurred_at", "revenue", "currency", "source")
    list_filter = ("tenant",)
    search_fields = ("=name", "=contact__id", "=idempotency_key")
    search_help_text = "Exact event name, contact id or idempotency key."
    raw_id_fields = ("contact",)


@admin.register(EventDailyRollup)
class EventDailyRollupAdmin(BigTableAdmin):
    list_display = ("id", "name", "day", "count", "revenue", "tenant", "contact_id")
    list_filter = ("tenant",)
    search_fields = ("=name", "=contact__id")
    raw_id_fields = ("contact",)


@admin.register(LifecycleTransition)
class LifecycleTransitionAdmin(BigTableAdmin):
    list_display = ("id", "tenant", "contact_id", "from_stage", "to_stage", "reason", "occurred_at")
    list_filter = ("tenant", "to_stage")
    search_fields = ("=contact__id",)
    raw_id_fields = ("contact",)


@admin.register(ConsentRecord)
class ConsentRecordAdmin(BigTableAdmin):
    """The consent ledger is append-only: nothing here may change it."""

    list_display = (
        "id",
        "tenant",
        "contact_id",
        "channel",
        "purpose",
        "status",
        "source",
        "legal_basis",
        "occurred_at",
    )
    list_filter = ("tenant", "channel", "status", "source", "legal_basis")
    search_fields = ("=contact__id", "=purpose")
    raw_id_fields = ("contact",)


@admin.register(ConsentState)
class ConsentStateAdmin(BigTableAdmin):
    """Derived from the ledger in the same transaction; read-only."""

    list_display = ("id", "tenant", "contact_id", "channel", "purpose", "status", "updated_at")
    list_filter = ("tenant", "channel", "status")
    search_fields = ("=contact__id", "=purpose")
    raw_id_fields = ("contact", "record")


@admin.register(Suppression)
class SuppressionAdmin(BigTableAdmin):
    list_display = ("id", "tenant", "channel", "reason", "note", "created_at")
    list_filter = ("tenant", "channel", "reason")
    search_fields = ("=address_hash",)
    search_help_text = "The SHA-256 hash of 'channel:normalised address'."
    actions = ["remove_suppressions"]

    def has_remove_permission(self, request: HttpRequest) -> bool:
        return _user_may(request, "contacts.delete_suppression")

    @admin.action(description="Remove the selected suppressions (manual and hard bounce only)", permissions=["remove"])
    def remove_suppressions(self, request: HttpRequest, queryset: models.QuerySet[Suppression]) -> None:
        actor = Actor.for_user(request.user)  # type: ignore[arg-type]
        removed, refused = 0, 0
        for suppression in queryset.select_related("tenant"):
            with tenant_context(suppression.tenant_id):
                try:
                    suppression_remove(suppression=suppression, actor=actor)
                    removed += 1
                except ValidationError:
                    refused += 1
        self.message_user(request, f"Removed {removed} suppression(s).", messages.SUCCESS)
        if refused:
            self.message_user(
                request, f"Kept {refused}: unsubscribes, complaints and erasures cannot be removed.", messages.WARNING
            )


@admin.register(PrivacyRequest)
class PrivacyRequestAdmin(ReadOnlyAdmin):
    ordering: ClassVar[Any] = ("-id",)
    list_display = ("id", "tenant", "kind", "contact_ref", "requested_by", "created_at", "completed_at")
    list_filter = ("tenant", "kind")
    search_fields = ("=contact_ref",)


@admin.register(ImportJob)
class ImportJobAdmin(ReadOnlyAdmin):
    list_display = ("id", "tenant", "original_name", "status", "total_rows", "processed_rows", "created_count",
                    "updated_count", "error_count", "created_at", "finished_at")  # fmt: skip
    list_filter = ("tenant", "status")
    search_fields = ("original_name",)
    list_select_related = ("tenant", "created_by")


@admin.register(AuditLog)
class AuditLogAdmin(BigTableAdmin):
    """Who did what, per tenant: append-only."""

    list_display = ("created_at", "tenant", "action", "actor_label", "object_type", "object_id")
    list_filter = ("tenant",)
    search_fields = ("=action", "=object_id", "=actor_label")
    search_help_text = "Exact action (e.g. contact.erased), object id or actor."
