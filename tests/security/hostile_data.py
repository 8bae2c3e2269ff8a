"""Put hostile text into every text field of a tenant, each field with its own marker.

Every CharField and TextField of every tenant-owned model (and the tenant, its people and
their keys) gets, for tenant A's rows, a payload that is both markup and a spreadsheet
formula: ``="><img src=x onerror=alert(7)><script>s7</script>`` (the first character cycles
through ``= + - @ TAB CR``); short fields get ``"><b id=x7>``. The number names the field, so
a page that shows one raw says which. JSON the pages show (custom attributes, tags, event
properties, rule values, audit data, import headers) gets the same. Values are written
straight to the tables, past the forms and services that would refuse some of them: the
pages must be safe even for data that arrived by a path nobody foresaw.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from tenants.context import platform_access, tenant_context
from tests.conftest import World

PROJECT_APPS = ("tenants", "contacts", "segments", "campaigns", "journeys", "analytics", "personalization", "audiences")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Text that code reads as something other than text: keys, codes, hashes, addresses, names of
# things the rule language or a parser looks up. Their forms refuse markup; the rest is seeded.
NOT_FREE_TEXT = frozenset({
    "password", "key_hash", "prefix", "slug", "address_hash", "idempotency_key", "time_zone", "locale", "currency",
    "crontab", "encoding", "delimiter", "key", "start_key", "public_key", "identify_secret", "secret", "email",
    "phone", "provider_message_id", "provider_event_id", "object_type", "object_id", "action", "purpose",
    "consent_purpose", "goal_event", "trigger_event", "trigger_date_field", "waiting_for", "definition_hash",
    "postal_code", "anonymous_id", "external_id", "stage", "machine", "best_channel", "event_name", "url",
    "image_url", "cta_url", "push_deep_link", "webhook_url", "sms_sender", "sender_email", "reply_to",
    "default_sender_email", "source", "requested_by", "user_agent", "outcome", "exit_reason", "format", "delivery",
})  # fmt: skip
RAW = re.compile(r"<img src=x onerror=alert\((\d+)\)>|<script>s(\d+)</script>|<b id=x(\d+)>")
SEEN = re.compile(r"alert\((\d+)\)|id=x(\d+)")


def payload(number: int, room: int | None = None) -> str:
    start = FORMULA_STARTS[number % len(FORMULA_STARTS)]
    long = f'{start}"><img src=x onerror=alert({number})><script>s{number}</script>'
    if room is None or room >= len(long):
        return long
    short = f'"><b id=x{number}>'
    return short if room >= len(short) else ""


@dataclass
class Seeded:
    """Which marker went into which field, and the fields that could not take one."""

    fields: dict[int, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)

    def next(self, where: str) -> int:
        number = len(self.fields) + 1
        self.fields[number] = where
        return number

    def numbers(self, text: str, pattern: re.Pattern[str]) -> set[int]:
        return {int(next(g for g in m.groups() if g)) for m in pattern.finditer(text)}


def _text_fields(model: type[models.Model]) -> Iterator[models.Field[Any, Any]]:
    for f in model._meta.concrete_fields:
        text = isinstance(f, models.CharField | models.TextField) and not f.choices and not f.primary_key
        formatted = isinstance(f, models.EmailField | models.URLField | models.SlugField) or f.name in NOT_FREE_TEXT
        if text and not formatted:
            yield f


def _seed_model(model: type[models.Model], rows: models.QuerySet[Any], seeded: Seeded) -> None:
    for f in _text_fields(model):
        where = f"{model._meta.label}.{f.name}"
        number = seeded.next(where)
        text = payload(number, f.max_length)
        if not text:
            seeded.refused[where] = f"max_length {f.max_length}"
            continue
        try:
            with transaction.atomic():
                rows.update(**{f.name: text})
        except IntegrityError:  # unique per tenant: one value per row, the marker first
            with transaction.atomic():
                for pk in rows.values_list("pk", flat=True):
                    rows.filter(pk=pk).update(**{f.name: payload(number, (f.max_length or 10**6) - 12) + f"#{pk}"})


def _extra_rows(world: World, values: dict[str, Any]) -> None:
    """Rows the pages show that the walk's world lacks: events, consent, delivery results, audit."""
    from campaigns.models import Delivery, DeliveryFeedback
    from contacts.models import ConsentRecord, Contact, Event, LifecycleTransition
    from tenants.models import AuditLog

    tenant = world.tenant_a
    with tenant_context(tenant.id):
        contact = Contact.objects.get(pk=values["contact_id"])
        now = timezone.now()
        Event.objects.create(tenant=tenant, contact=contact, name="purchase", occurred_at=now, properties={})
        ConsentRecord.objects.create(
            tenant=tenant, contact=contact, channel="email", purpose="marketing", status="granted", source="form",
            occurred_at=now,
        )  # fmt: skip
        LifecycleTransition.objects.create(
            tenant=tenant, contact=contact, from_stage="", to_stage="lead", occurred_at=now
        )
        delivery = Delivery.objects.get(pk=values["delivery_id"])
        Delivery.objects.filter(pk=delivery.pk).update(status="failed")
        DeliveryFeedback.objects.create(
            tenant=tenant, delivery=delivery, contact=contact, channel="email", kind="bounce_hard", provider="test",
            provider_event_id="walk-1", occurred_at=now,
        )  # fmt: skip
        AuditLog.objects.create(tenant=tenant, action="walk.seeded", actor_label="walk", data={})


def _seed_json(world: World, values: dict[str, Any], seeded: Seeded) -> None:
    from contacts.models import Contact, Event, ImportJob
    from journeys.models import Journey
    from segments.models import Segment
    from tenants.models import AuditLog

    def mark(where: str) -> str:
        return payload(seeded.next(where))

    tenant = world.tenant_a
    with tenant_context(tenant.id):
        contacts = Contact.objects.filter(tenant=tenant)
        contacts.update(
            attributes={"plan": mark("Contact.attributes")},
            interests=[mark("Contact.interests")], values=[mark("Contact.values")],
            lifestyle=[mark("Contact.lifestyle")], attitudes=[mark("Contact.attitudes")],
        )  # fmt: skip
        Event.objects.filter(tenant=tenant).update(properties={"category": mark("Event.properties")})
        condition = {"type": "field", "field": "first_name", "op": "eq", "value": mark("Segment.rules value")}
        Segment.objects.filter(tenant=tenant).update(rules={"all": [condition]})
        where = [{"property": "value", "op": "eq", "value": mark("Journey.trigger_filters value")}]
        Journey.objects.filter(tenant=tenant).update(trigger_filters=where)
        ImportJob.objects.filter(tenant=tenant).update(headers=[mark("ImportJob.headers")])
        AuditLog.objects.filter(tenant=tenant).update(data={"note": mark("AuditLog.data")})


def seed_hostile_text(world: World, values: dict[str, Any]) -> Seeded:
    """Fill tenant A's text with markers (see the module's docstring); return which is which."""
    from tenants.models import ApiKey, Tenant, User

    _extra_rows(world, values)
    seeded = Seeded()
    with platform_access():
        for model in apps.get_models():
            if model._meta.app_label not in PROJECT_APPS or model in (Tenant, User, ApiKey):
                continue
            if any(f.name == "tenant" for f in model._meta.concrete_fields):
                _seed_model(model, model._base_manager.filter(tenant=world.tenant_a), seeded)
        _seed_model(Tenant, Tenant.objects.filter(pk=world.tenant_a.pk), seeded)
        _seed_model(User, User.objects.filter(pk__in=[world.alice.pk, world.bob.pk]), seeded)
        _seed_model(ApiKey, ApiKey.all_tenants.filter(tenant=world.tenant_a), seeded)
    _seed_json(world, values, seeded)
    return seeded
