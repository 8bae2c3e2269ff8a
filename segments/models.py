"""Segments: rule trees, their materialised membership, its history, and RFM scores.

A dynamic segment's members are whoever its rules (segments/rules.py) match; they are
materialised in ``SegmentMember`` and kept current by segments/services.py. A static
segment's members are hand-picked or uploaded. Every entry and exit is a
``SegmentTransition``: the events journeys and campaigns trigger on.
"""

from __future__ import annotations

from django.db import models

from contacts.models import Contact
from tenants.models import Tenant, TenantOwnedModel, User, unchecked_foreign_key


class Segment(TenantOwnedModel):
    class Kind(models.TextChoices):
        DYNAMIC = "dynamic", "Dynamic (rules)"
        STATIC = "static", "Static (list)"

    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.DYNAMIC)
    rules = models.JSONField(default=dict, blank=True, help_text="The rule tree (docs/segments.md).")
    # Bumped on every change of the rules; a refresh records the version it materialised.
    version = models.PositiveIntegerField(default=1)
    materialized_version = models.PositiveIntegerField(default=0)
    # Ids of the segments the rules refer to (for cycles and "where used").
    depends_on = models.JSONField(default=list, blank=True)
    # True when the rules move with the clock ("within the last 30 days"): refreshed periodically.
    time_relative = models.BooleanField(default=False)
    size = models.PositiveIntegerField(default=0)
    refreshed_at = models.DateTimeField(null=True, blank=True)
    refresh_error = models.TextField(blank=True)
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta(TenantOwnedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="segment_unique_name")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_dynamic(self) -> bool:
        return self.kind == self.Kind.DYNAMIC


class SegmentMember(TenantOwnedModel):
    tenant = unchecked_foreign_key(Tenant)
    segment = unchecked_foreign_key(Segment, db_index=True)
    contact = unchecked_foreign_key(Contact)
    entered_at = models.DateTimeField()

    class Meta(TenantOwnedModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant", "segment", "contact"], name="segment_member_unique"),
        ]
        # A contact's memberships, for real-time updates and the contact page.
        indexes = [models.Index(fields=["tenant", "contact"], name="segment_member_contact")]

    def __str__(self) -> str:
        return f"contact {self.contact_id} in segment {self.segment_id}"


class SegmentTransition(TenantOwnedModel):
    """A contact entered or left a segment: the event journeys and campaigns trigger on."""

    class Kind(models.TextChoices):
        ENTERED = "entered", "Entered"
        EXITED = "exited", "Exited"

    id = models.BigAutoField(primary_key=True)
    tenant = unchecked_foreign_key(Tenant)
    segment = unchecked_foreign_key(Segment)
    contact = unchecked_foreign_key(Contact)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    occurred_at = models.DateTimeField()
    segment_version = models.PositiveIntegerField(default=0)

    class Meta(TenantOwnedModel.Meta):
        indexes = [
            models.Index(fields=["tenant", "segment", "-occurred_at"], name="segment_transition_segment"),
            models.Index(fields=["tenant", "contact", "-occurred_at"], name="segment_transition_contact"),
        ]
        ordering = ["-occurred_at", "-id"]

    def __str__(self) -> str:
        return f"contact {self.contact_id} {self.kind} segment {self.segment_id}"


class SegmentSize(TenantOwnedModel):
    """The size of a segment at a moment: the chart on the segment page and the trend on the list."""

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="+", db_index=False)
    measured_at = models.DateTimeField()
    size = models.PositiveIntegerField()

    class Meta(TenantOwnedModel.Meta):
        indexes = [models.Index(fields=["tenant", "segment", "measured_at"], name="segment_size_time")]
        ordering = ["measured_at"]

    def __str__(self) -> str:
        return f"{self.size} at {self.measured_at:%Y-%m-%d %H:%M}"


class RfmGroup(models.TextChoices):
    CHAMPIONS = "champions", "Champions"
    LOYAL = "loyal", "Loyal customers"
    POTENTIAL_LOYALISTS = "potential_loyalists", "Potential loyalists"
    NEW_CUSTOMERS = "new_customers", "New customers"
    PROMISING = "promising", "Promising"
    NEED_ATTENTION = "need_attention", "Need attention"
    CANNOT_LOSE = "cannot_lose", "Can't lose them"
    AT_RISK = "at_risk", "At risk"
    HIBERNATING = "hibernating", "Hibernating"
    LOST = "lost", "Lost"


class RfmScore(TenantOwnedModel):
    """Recency, frequency and monetary quintiles (1-5) of a buyer, recomputed periodically.

    Only contacts with at least one order have a score; 5 is best (most recent, most
    orders, most revenue).
    """

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="+", db_index=False)
    recency = models.PositiveSmallIntegerField()
    frequency = models.PositiveSmallIntegerField()
    monetary = models.PositiveSmallIntegerField()
    group = models.CharField(max_length=20, choices=RfmGroup.choices)
    computed_at = models.DateTimeField()

    class Meta(TenantOwnedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "contact"], name="rfm_unique_contact")]

    def __str__(self) -> str:
        return f"R{self.recency} F{self.frequency} M{self.monetary} ({self.group})"
