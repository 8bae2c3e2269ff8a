"""The Celery app, and the decorator for tasks that act inside one tenant."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from celery import Celery
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "segmentor.settings")

app = Celery("segmentor")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The embedded default's file-system broker needs its folders before the first message.
for folder in (app.conf.broker_transport_options or {}).values():
    if isinstance(folder, str):
        Path(folder).mkdir(parents=True, exist_ok=True)

P = ParamSpec("P")
R = TypeVar("R")


def tenant_task(*task_args: Any, **task_options: Any) -> Callable[[Callable[..., R]], Any]:
    """Declare a task whose first argument is ``tenant_id`` and run its body as that tenant.

    Tasks take ids and JSON values only and look everything up again.
    """
    from tenants.context import tenant_context

    def decorator(func: Callable[..., R]) -> Any:
        @functools.wraps(func)
        def run_as_tenant(tenant_id: int, *args: Any, **kwargs: Any) -> R:
            with tenant_context(tenant_id):
                return func(tenant_id, *args, **kwargs)

        return app.task(*task_args, **task_options)(run_as_tenant)

    return decorator


def fan_out(task: Any) -> int:
    """A beat tick's body: queue ``task`` once for every tenant; return how many (platform code)."""
    from tenants.models import Tenant

    ids = list(Tenant.objects.values_list("pk", flat=True))
    for tenant_id in ids:
        task.delay(tenant_id)
    return len(ids)


# After a web process found the broker away, its after-commit listeners fail at once for a while (and
# are kept for the sweep: contacts.signals) instead of each waiting for Celery's publish retries again.
BROKER_BACKOFF_SECONDS = 10.0
_broker_down_until = 0.0
# What a publish raises when the broker cannot be reached.
BROKER_ERRORS = (OperationalError, RedisError, OSError)


class BrokerUnavailable(OperationalError):
    """The broker could not be reached a moment ago: nothing was tried."""


def hand_over(task: Any, *args: Any, **options: Any) -> Any:
    """Queue ``task`` from a listener that runs after a write committed.

    Fails at once (``BrokerUnavailable``) for ``BROKER_BACKOFF_SECONDS`` after the broker could not be
    reached, so that a write made during an outage answers without waiting for every listener's
    publish retries; the listener is kept and run again by the sweep."""
    global _broker_down_until
    if time.monotonic() < _broker_down_until:
        raise BrokerUnavailable("The broker could not be reached a moment ago.")
    try:
        return task.apply_async(args, **options)
    except BROKER_ERRORS:
        _broker_down_until = time.monotonic() + BROKER_BACKOFF_SECONDS
        raise
