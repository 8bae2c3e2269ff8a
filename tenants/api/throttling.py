from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from tenants.models import ApiKey

logger = logging.getLogger(__name__)

PERIODS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """``"6000/min"`` → (6000, 60)."""
    count, period = rate.split("/")
    return int(count), PERIODS[period]


def count_hit(key: str, ttl: int) -> int:
    """Add one to a counter that expires ``ttl`` seconds after its first hit; return the count."""
    cache = caches["default"]  # the backend itself: ``django.core.cache.cache`` is a proxy of it
    if isinstance(cache, RedisCache):
        # One round trip: INCR and set the expiry only when the key is new (Django's incr is two,
        # and a new window's add a third).
        full_key = cache.make_and_validate_key(key)
        pipe = cache._cache.get_client(full_key, write=True).pipeline()  # type: ignore[attr-defined]
        pipe.incr(full_key)
        pipe.expire(full_key, ttl, nx=True)
        count, _ = pipe.execute()
        return int(count)
    try:
        return cache.incr(key)
    except ValueError:  # first hit of the window
        return 1 if cache.add(key, 1, timeout=ttl) else cache.incr(key)


class ApiKeyRateThrottle(BaseThrottle):
    """Requests per API key (``API_KEY_THROTTLE_RATE``, e.g. ``6000/min``), in fixed windows.

    One cache round trip per request. (DRF's SimpleRateThrottle keeps every
    request's timestamp in one cache value, which costs O(rate) per request.)
    """

    def allow_request(self, request: Request, view: Any) -> bool:
        if not isinstance(request.auth, ApiKey):
            return True
        limit, period = parse_rate(str(settings.API_KEY_THROTTLE_RATE))
        now = time.time()
        window = int(now // period)
        try:
            count = count_hit(f"throttle:api_key:{request.auth.pk}:{period}:{window}", period + 1)
        except (RedisError, OSError):  # the shared cache is away, e.g. Redis restarting
            # Fail open: a few seconds without a limit beat every API request failing meanwhile.
            logger.warning("throttle.cache_unavailable", exc_info=True, extra={"api_key_id": request.auth.pk})
            return True
        self._wait = (window + 1) * period - now
        return count <= limit

    def wait(self) -> float | None:
        return getattr(self, "_wait", None)
