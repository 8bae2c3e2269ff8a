from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class SegmentsConfig(AppConfig):
    name = "segments"

    def ready(self) -> None:
        from contacts.signals import contacts_changed

        contacts_changed.connect(_queue_evaluation, dispatch_uid="segments.realtime")


def _queue_evaluation(sender: Any, *, tenant_id: int, contact_ids: list[int], **kwargs: Any) -> None:
    from segments.tasks import queue_evaluation

    queue_evaluation(tenant_id, contact_ids)
