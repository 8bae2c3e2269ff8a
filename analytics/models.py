"""Analytics: what recipients did with messages (opens, clicks) and what converted.

``MessageEvent`` is one open or click of one delivery, recorded by the signed pixel and
redirect (analytics/tracking.py), with machine opens and clicks (privacy proxies, security
scanners) flagged so the figures can count humans. ``Conversion`` is a goal event attributed to
the last message that touched the contact within the campaign's attribution window.
"""

from __future__ import annotations

from django.db import models

from tenants.models import Tenant, TenantOwnedModel, unchecked_foreign_key


class MessageEvent(TenantOwnedModel):
    class Kind(models.TextChoices):
        OPEN = "open", "Open"
        CLICK = "click", "Click"
        UNSUBSCRIBE = "unsub", "Unsubscribe"

    id = models.BigAutoField(primary_key=True)
    tenant = unchecked_foreign_key(Tenant)
    # Written on every open: no constraint triggers; the ids stay for the figures.
    delivery_id = models.BigIntegerField()
    campaign_id = models.BigIntegerField()
    variant_id = models.BigIntegerField(null=True)
    contact_id = models.BigIntegerField()
    kind = models.CharField(max_length=5, choices=Kind.choices)
    url = models.CharField(max_length=2000, blank=True)
    is_cta = models.BooleanField(default=False)
    # A privacy proxy or a security scanner, not a person: why we think so ("" for a person).
    machine = models.CharField(max_length=40, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    occurred_at = models.DateTimeField()

    class Meta(TenantOwnedModel.Meta):
        indexes = [
            models.Index(fields=["tenant", "campaign_id", "kind"], name="message_event_campaign"),
            models.Index(fields=["tenant", "contact_id", "-occurred_at"], name="message_event_contact"),
            models.Index(fields=["tenant", "delivery_id"], name="message_event_delivery"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} of delivery {self.delivery_id}"


class Conversion(TenantOwnedModel):
    """A goal event credited to the last message that touched the contact (last touch)."""

    class Touch(models.TextChoices):
        CLICK = "click", "A click"
        DELIVERY = "delivery", "A delivery"

    id = models.BigAutoField(primary_key=True)
    tenant = unchecked_foreign_key(Tenant)
    # One credit per event, however often attribution runs for it.
    event_id = models.BigIntegerField()
    event_name = models.CharField(max_length=100)
    contact_id = models.BigIntegerField()
    delivery_id = models.BigIntegerField()
    campaign_id = models.BigIntegerField()
    variant_id = models.BigIntegerField(null=True)
    touch = models.CharField(max_length=10, choices=Touch.choices)
    touched_at = models.DateTimeField()
    revenue = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    occurred_at = models.DateTimeField()

    class Meta(TenantOwnedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "event_id"], name="conversion_unique_event")]
        indexes = [
            models.Index(fields=["tenant", "campaign_id"], name="conversion_campaign"),
            models.Index(fields=["tenant", "-occurred_at"], name="conversion_time"),
        ]

    def __str__(self) -> str:
        return f"{self.event_name} credited to delivery {self.delivery_id}"
