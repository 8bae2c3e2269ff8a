from __future__ import annotations

from django.apps import AppConfig


class AudiencesConfig(AppConfig):
    name = "audiences"

    def ready(self) -> None:
        from audiences.selectors import destination_usages
        from segments.selectors import USAGE_FINDERS

        # A segment that a destination exports cannot be deleted (segments.services.segment_delete).
        USAGE_FINDERS.append(destination_usages)
