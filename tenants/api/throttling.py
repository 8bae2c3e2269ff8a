from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from tenants.models import ApiKey


class ApiKeyRateThrottle(SimpleRateThrottle):
    """Requests per API key (``API_KEY_THROTTLE_RATE``, e.g. ``6000/min``)."""

    scope = "api_key"

    def get_rate(self) -> str:
        return str(settings.API_KEY_THROTTLE_RATE)

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if not isinstance(request.auth, ApiKey):
            return None
        return f"throttle:api_key:{request.auth.pk}"
