"""Ad audiences: a segment exported as hashed identifiers for Google Customer Match or Meta Custom Audiences.

An ``AudienceDestination`` is a tenant's HTTPS endpoint that receives a segment's file on a schedule
(a django-celery-beat row per destination), signed like the campaigns' webhooks. Every export, to a
destination or downloaded, is an ``AudienceExport``: which segment and which version of it, the
format, who or what asked, how many rows, how many members were left out and why, and the SHA-256
of the file. docs/audiences.md has the formats, the consent rule and the push protocol.
"""

from __future__ import annotations

from django.db import models

from segments.models import Segment
from tenants.models import TenantOwnedModel, User


class AudienceFormat(models.TextChoices):
    GOOGLE = "google", "Google Customer Match"
    META = "meta", "Meta Custom Audiences"


class ExportKind(models.TextChoices):
    AUDIENCE = "audience", "Ad audience"
    LOOKALIKE_SEED = "lookalike_seed", "Lookalike seed"


class AudienceDestination(TenantOwnedModel):
    """Where a segment's audience file is pushed, and when (a crontab or an interval)."""

    class Schedule(models.TextChoices):
        INTERVAL = "interval", "Every N minutes"
        CRONTAB = "crontab", "On a crontab (the workspace's time zone)"

    name = models.CharField(max_length=120)
    segment = models.ForeignKey(Segment, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=20, choices=ExportKind.choices, default=ExportKind.AUDIENCE)
    format = models.CharField(max_length=10, choices=AudienceFormat.choices, default=AudienceFormat.GOOGLE)
    url = models.URLField(max_length=500, help_text="HTTPS endpoint that receives the signed file.")
    # The HMAC-SHA256 signing key, as the webhook channel's; write-only (never shown back).
    secret = models.CharField(max_length=500)
    schedule = models.CharField(max_length=10, choices=Schedule.choices, default=Schedule.INTERVAL)
    interval_minutes = models.PositiveIntegerField(null=True, blank=True)
    crontab = models.CharField(max_length=100, blank=True)
    enabled = models.BooleanField(default=True)
    # The django-celery-beat row that runs the export (audiences/services.py, destination_schedule_sync).
    periodic_task = models.ForeignKey(
        "django_celery_beat.PeriodicTask", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta(TenantOwnedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="audience_destination_unique_name")]
        indexes = [models.Index(fields=["tenant", "segment"], name="audience_destination_segment")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class AudienceExport(TenantOwnedModel):
    """One export of a segment's audience file: downloaded, or pushed to a destination."""

    class Status(models.TextChoices):
        PENDING = "pending", "Queued"
        RUNNING = "running", "Running"
        RETRYING = "retrying", "Waiting to retry"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    class Delivery(models.TextChoices):
        DOWNLOAD = "download", "Download"
        PUSH = "push", "Pushed to a destination"

    class Trigger(models.TextChoices):
        DOWNLOAD = "download", "Downloaded"
        MANUAL = "manual", "Run now"
        SCHEDULE = "schedule", "Schedule"

    id = models.BigAutoField(primary_key=True)
    segment = models.ForeignKey(Segment, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    destination = models.ForeignKey(
        AudienceDestination, null=True, blank=True, on_delete=models.SET_NULL, related_name="exports"
    )
    # The segment as it was exported: kept after a rule change or a deletion.
    segment_name = models.CharField(max_length=200)
    segment_version = models.PositiveIntegerField(default=0, help_text="The version of the segment's rules.")
    membership_version = models.PositiveIntegerField(
        default=0, help_text="The rules version the materialised membership was computed for (0: never refreshed)."
    )
    membership_refreshed_at = models.DateTimeField(null=True, blank=True)
    definition = models.JSONField(default=dict, help_text="The segment's kind and rules at export time.")
    definition_hash = models.CharField(max_length=64, help_text="SHA-256 of the definition (canonical JSON).")
    kind = models.CharField(max_length=20, choices=ExportKind.choices, default=ExportKind.AUDIENCE)
    format = models.CharField(max_length=10, choices=AudienceFormat.choices)
    delivery = models.CharField(max_length=10, choices=Delivery.choices)
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    requested_by = models.CharField(max_length=200, help_text="Who asked: a user, an API key or the schedule.")
    consent_purpose = models.CharField(max_length=50)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    member_count = models.PositiveIntegerField(default=0, help_text="Members read.")
    row_count = models.PositiveIntegerField(default=0, help_text="Rows written (one per exported contact).")
    # {"erased": n, "no_identifier": n, "no_consent": n, "suppressed": n}
    excluded = models.JSONField(default=dict, blank=True)
    file_sha256 = models.CharField(max_length=64, blank=True)
    file_bytes = models.PositiveBigIntegerField(default=0)
    # A pushed export's file, kept until the push settles (then deleted: it holds hashed personal data).
    file = models.FileField(upload_to="audiences/", blank=True, max_length=200)
    parts_total = models.PositiveIntegerField(default=0)
    parts_sent = models.PositiveIntegerField(default=0)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta(TenantOwnedModel.Meta):
        indexes = [
            models.Index(fields=["tenant", "-created_at"], name="audience_export_time"),
            models.Index(fields=["tenant", "destination", "-created_at"], name="audience_export_destination"),
            models.Index(fields=["tenant", "segment", "-created_at"], name="audience_export_segment"),
        ]
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"audience export {self.pk} ({self.status})"

    @property
    def excluded_total(self) -> int:
        return sum(int(value) for value in (self.excluded or {}).values())

    @property
    def in_flight(self) -> bool:
        return self.status in (self.Status.PENDING, self.Status.RUNNING, self.Status.RETRYING)
