from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class PersonalizationConfig(AppConfig):
    name = "personalization"
    verbose_name = "Website personalisation"

    def ready(self) -> None:
        from contacts.signals import contact_erasing, contact_merging, lifecycle_changed
        from segments.selectors import USAGE_FINDERS
        from segments.signals import membership_changed

        USAGE_FINDERS.append(_segment_usages)
        membership_changed.connect(_membership, dispatch_uid="personalization.membership")
        lifecycle_changed.connect(_stages, dispatch_uid="personalization.stages")
        contact_erasing.connect(_erasing, dispatch_uid="personalization.contact_erasing")
        contact_merging.connect(_merging, dispatch_uid="personalization.contact_merging")
        # Cache invalidation (not business logic) also for saves that bypass the services (the admin, a shell).
        from django.db.models.signals import post_delete, post_save

        from tenants.facts import watch

        watch(self.get_model("SlotVariant"))  # the "stage variants" fact (personalization/versions.py)
        for model in ("SiteKey", "Slot", "SlotVariant"):
            sender = self.get_model(model)
            post_save.connect(_config_saved, sender=sender, dispatch_uid=f"personalization.{model}.saved")
            post_delete.connect(_config_saved, sender=sender, dispatch_uid=f"personalization.{model}.deleted")


# Receivers run after the change committed (erasure: inside its transaction); each costs one small
# query for a tenant whose variants do not target what changed.
def _membership(sender: Any, *, tenant_id: int, segment_ids: list[int], occurred_at: Any, **kwargs: Any) -> None:
    from personalization.versions import on_membership_changed

    on_membership_changed(tenant_id=tenant_id, segment_ids=segment_ids, occurred_at=occurred_at)


def _stages(sender: Any, *, tenant_id: int, changes: list[list[Any]], **kwargs: Any) -> None:
    from personalization.versions import on_stages_changed

    on_stages_changed(tenant_id=tenant_id, changes=changes)


def _config_saved(sender: Any, *, instance: Any, **kwargs: Any) -> None:
    from personalization.versions import config_changed

    public_key = getattr(instance, "public_key", None)
    config_changed(instance.tenant_id, public_keys=[public_key] if public_key else [])


def _erasing(sender: Any, *, tenant_id: int, contact_id: int, **kwargs: Any) -> None:
    from personalization.services import visitors_forget_contact

    visitors_forget_contact(tenant_id=tenant_id, contact_id=contact_id)


def _merging(sender: Any, *, tenant_id: int, source_id: int, target_id: int, **kwargs: Any) -> None:
    from personalization.services import visitors_follow_merge

    visitors_follow_merge(tenant_id=tenant_id, source_id=source_id, target_id=target_id)


def _segment_usages(segment: Any) -> list[dict[str, Any]]:
    """Slot variants that target the segment: it cannot be deleted while they do."""
    from personalization.models import SlotVariant

    variants = (
        SlotVariant.objects.filter(tenant_id=segment.tenant_id, target_segment=segment)
        .select_related("slot")
        .order_by("slot__key", "priority")
    )
    return [{"kind": "website slot", "id": v.slot_id, "name": f"{v.slot.key} / {v.name}", "url": ""} for v in variants]
