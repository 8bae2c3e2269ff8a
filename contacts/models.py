"""The audience data: contacts, their events, consent, suppression and privacy requests.

Every model is tenant-owned (row-level security in the migrations) and every
unique constraint includes the tenant.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django_countries.fields import CountryField

from tenants.models import TenantOwnedModel, User


class LifecycleStage(models.TextChoices):
    NEW_VISITOR = "new_visitor", "New visitor"
    LEAD = "lead", "Lead"
    FIRST_TIME_BUYER = "first_time_buyer", "First-time buyer"
    REPEAT_CUSTOMER = "repeat_customer", "Repeat customer"
    LOYAL_ADVOCATE = "loyal_advocate", "Loyal advocate"


class Channel(models.TextChoices):
    EMAIL = "email", "Email"
    SMS = "sms", "SMS"
    PUSH = "push", "Push"
    WHATSAPP = "whatsapp", "WhatsApp"


class Contact(TenantOwnedModel):
    # Identity
    external_id = models.CharField(max_length=200, blank=True)
    anonymous_id = models.CharField(max_length=200, blank=True)
    email = models.CharField(max_length=254, blank=True, help_text="Normalised: trimmed and lower-case.")
    phone = models.CharField(max_length=20, blank=True, help_text="E.164, e.g. +4915112345678.")
    push_tokens = models.JSONField(default=list, blank=True)
    first_name = models.CharField(max_length=100, blank=True)
    last_name = models.CharField(max_length=100, blank=True)
    locale = models.CharField(max_length=20, blank=True)
    time_zone = models.CharField(max_length=64, blank=True)
    # Demographics
    birth_date = models.DateField(null=True, blank=True)
    gender = models.CharField(max_length=30, blank=True)
    income_band = models.CharField(max_length=30, blank=True)
    education = models.CharField(max_length=60, blank=True)
    job_role = models.CharField(max_length=100, blank=True)
    # Geography
    country = CountryField(blank=True)
    region = models.CharField(max_length=100, blank=True)
    city = models.CharField(max_length=100, blank=True)
    postal_code = models.CharField(max_length=20, blank=True)
    # B2B
    company = models.CharField(max_length=200, blank=True)
    industry = models.CharField(max_length=100, blank=True)
    company_size = models.CharField(max_length=30, blank=True)
    buying_stage = models.CharField(max_length=30, blank=True)
    # Psychographics: lists of tags
    interests = models.JSONField(default=list, blank=True)
    values = models.JSONField(default=list, blank=True)
    lifestyle = models.JSONField(default=list, blank=True)
    attitudes = models.JSONField(default=list, blank=True)
    # Custom attributes, validated against AttributeDefinition
    attributes = models.JSONField(default=dict, blank=True)
    # Lifecycle
    lifecycle_stage = models.CharField(
        max_length=20, choices=LifecycleStage.choices, default=LifecycleStage.NEW_VISITOR
    )
    lifecycle_changed_at = models.DateTimeField(null=True, blank=True)
    # Engagement summary, kept current by event ingest
    first_seen_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_engaged_at = models.DateTimeField(null=True, blank=True)
    order_count = models.PositiveIntegerField(default=0)
    total_revenue = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    last_order_at = models.DateTimeField(null=True, blank=True)
    # Privacy
    erased_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta(TenantOwnedModel.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "external_id"], condition=~Q(external_id=""), name="contact_unique_external_id"
            ),
            models.UniqueConstraint(fields=["tenant", "email"], condition=~Q(email=""), name="contact_unique_email"),
            models.UniqueConstraint(
                fields=["tenant", "anonymous_id"], condition=~Q(anonymous_id=""), name="contact_unique_anonymous_id"
            ),
        ]
        indexes = [
            # Keyset pagination of the contact list, newest first.
            models.Index(fields=["tenant", "-id"], name="contact_tenant_id_desc"),
            models.Index(fields=["tenant", "country", "lifecycle_stage"], name="contact_country_stage"),
            models.Index(fields=["tenant", "lifecycle_stage"], name="contact_stage"),
            models.Index(fields=["tenant", "last_name", "first_name"], name="contact_name"),
            models.Index(fields=["tenant", "phone"], name="contact_phone"),
        ]

    def __str__(self) -> str:
        return f"contact {self.pk}"

    @property
    def full_name(self) -> str:
        return " ".join(part for part in (self.first_name, self.last_name) if part)

    @property
    def display_name(self) -> str:
        return self.full_name or self.email or self.phone or self.external_id or f"Contact #{self.pk}"


class AttributeDefinition(TenantOwnedModel):
    class Type(models.TextChoices):
        TEXT = "text", "Text"
        NUMBER = "number", "Number"
        BOOLEAN = "boolean", "Yes/no"
        DATE = "date", "Date"
        LIST = "list", "List of text"

    key = models.SlugField(max_length=64)
    label = models.CharField(max_length=100)
    type = models.CharField(max_length=10, choices=Type.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta(TenantOwnedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "key"], name="attribute_unique_key")]
        ordering = ["key"]

    def __str__(self) -> str:
        return f"{self.key} ({self.type})"


class Event(TenantOwnedModel):
    """Something a contact did. The biggest table: keep rows narrow, indexes few."""

    id = models.BigAutoField(primary_key=True)
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=100)
    occurred_at = models.DateTimeField()
    properties = models.JSONField(default=dict, blank=True)
    revenue = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    source = models.CharField(max_length=50, blank=True)
    idempotency_key = models.CharField(max_length=200, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta(TenantOwnedModel.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "idempotency_key"], condition=~Q(idempotency_key=""), name="event_unique_idempotency"
            )
        ]
        indexes = [
            # The contact timeline, and "what did this contact do" for real-time segments.
            models.Index(fields=["tenant", "contact", "-occurred_at"], name="event_contact_time"),
            # Retention deletes by age; analytics scans by name and time.
            models.Index(fields=["tenant", "name", "occurred_at"], name="event_name_time"),
        ]

    def __str__(self) -> str:
        return f"{self.name} by {self.contact_id}"


class EventDailyRollup(TenantOwnedModel):
    """Per contact, event name and day: how many and how much revenue.

    "Did X at least N times in the last D days" and "revenue in the last D days"
    read this (a few rows per contact) instead of the raw events.
    """

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=100)
    day = models.DateField()
    count = models.PositiveIntegerField(default=0)
    revenue = models.DecimalField(max_digits=14, decimal_places=2, default=0)

    class Meta(TenantOwnedModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant", "contact", "name", "day"], name="rollup_unique_contact_day")
        ]
        indexes = [models.Index(fields=["tenant", "name", "day"], name="rollup_name_day")]

    def __str__(self) -> str:
        return f"{self.name} x{self.count} on {self.day}"


class EventWindowSummary(TenantOwnedModel):
    """Per contact and summarised event name: the rollups of the last 7 … 365 days, added up.

    ``count_N`` and ``revenue_N`` (in cents) add up the contact's rollups from N-1 days before
    the tenant's summary day (``EventSummaryState.day``) onwards — what "within the last N days"
    counts on that day — and ``last_day`` is the day of the newest one. Event ingest adds to them
    (contacts/summaries.py), a periodic refresh moves them on with the clock; segment counts read
    one row per contact instead of adding up a day of rollups at a time. Only rows of contacts with
    rollups in the last 365 days are kept. Cents and whole counts keep every comparison leakproof
    (usable by the planner under row-level security, unlike numeric).
    """

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    name = models.CharField(max_length=100)
    last_day = models.DateField()
    count_7 = models.IntegerField(default=0)
    count_14 = models.IntegerField(default=0)
    count_30 = models.IntegerField(default=0)
    count_60 = models.IntegerField(default=0)
    count_90 = models.IntegerField(default=0)
    count_180 = models.IntegerField(default=0)
    count_365 = models.IntegerField(default=0)
    revenue_7 = models.BigIntegerField(default=0)
    revenue_14 = models.BigIntegerField(default=0)
    revenue_30 = models.BigIntegerField(default=0)
    revenue_60 = models.BigIntegerField(default=0)
    revenue_90 = models.BigIntegerField(default=0)
    revenue_180 = models.BigIntegerField(default=0)
    revenue_365 = models.BigIntegerField(default=0)

    class Meta(TenantOwnedModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name", "contact"], name="event_summary_unique_contact")
        ]

    def __str__(self) -> str:
        return f"{self.name} by {self.contact_id} up to {self.last_day}"


class EventSummaryState(TenantOwnedModel):
    """The day a tenant's event window summaries are counted for, and which event names they cover.

    Segments read the summaries only when ``day`` is today: until the refresh after midnight
    has moved them on, they count the rollups themselves.
    """

    day = models.DateField()
    names = models.JSONField(default=list)
    rebuilt_at = models.DateTimeField()
    refreshed_at = models.DateTimeField()

    class Meta(TenantOwnedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant"], name="event_summary_state_unique_tenant")]

    def __str__(self) -> str:
        return f"event summaries of {', '.join(self.names)} as of {self.day}"


class PendingAnnouncement(TenantOwnedModel):
    """An after-commit listener that could not hand its work over, kept to be run again.

    When a listener of ``contacts_changed``, ``events_recorded`` or ``lifecycle_changed`` fails for a
    passing reason (the broker or the database away: it could not queue its task), contacts.signals
    records it here with the signal's arguments; a beat sweep runs that listener again each minute
    and deletes the row once it succeeds, so a write's real-time segments, journeys and attribution
    catch up after an outage instead of being lost.
    """

    signal = models.CharField(max_length=40)
    receiver = models.CharField(max_length=200)  # the listener's dotted path
    payload = models.JSONField(default=dict)  # the signal's arguments but tenant_id
    error = models.CharField(max_length=500, blank=True)
    attempts = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField()

    class Meta(TenantOwnedModel.Meta):
        indexes = [models.Index(fields=["tenant", "id"], name="pending_announcement_tenant_id")]

    def __str__(self) -> str:
        return f"{self.signal} for {self.receiver}"


class EventBacklog(TenantOwnedModel):
    """A batch of stored events whose rollups, summaries and lifecycle are not applied yet.

    Written by an asynchronous ingest in the transaction that stores the events; a worker
    applies the batch and deletes this row in one transaction, so each event counts once,
    and a crashed worker leaves the row for the next one (or the sweep) to pick up.
    """

    event_ids = models.JSONField(default=list)
    created_at = models.DateTimeField()

    class Meta(TenantOwnedModel.Meta):
        indexes = [models.Index(fields=["tenant", "id"], name="event_backlog_tenant_id")]

    def __str__(self) -> str:
        return f"{len(self.event_ids)} events to apply"


class LifecycleTransition(TenantOwnedModel):
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="+")
    from_stage = models.CharField(max_length=20, choices=LifecycleStage.choices, blank=True)
    to_stage = models.CharField(max_length=20, choices=LifecycleStage.choices)
    reason = models.CharField(max_length=200, blank=True)
    occurred_at = models.DateTimeField()

    class Meta(TenantOwnedModel.Meta):
        indexes = [
            models.Index(fields=["tenant", "contact", "-occurred_at"], name="lifecycle_contact_time"),
            models.Index(fields=["tenant", "to_stage", "occurred_at"], name="lifecycle_stage_time"),
        ]
        ordering = ["-occurred_at", "-id"]

    def __str__(self) -> str:
        return f"{self.from_stage or '∅'} → {self.to_stage}"


class ConsentStatus(models.TextChoices):
    GRANTED = "granted", "Granted"
    WITHDRAWN = "withdrawn", "Withdrawn"
    PENDING = "pending", "Awaiting confirmation"


class ConsentSource(models.TextChoices):
    FORM = "form", "Form"
    IMPORT = "import", "Import"
    API = "api", "API"
    UNSUBSCRIBE_LINK = "unsubscribe_link", "Unsubscribe link"
    PREFERENCE_CENTRE = "preference_centre", "Preference centre"
    INBOUND_STOP = "inbound_stop", "Inbound STOP"
    ADMIN = "admin", "Admin"
    DOUBLE_OPT_IN = "double_opt_in", "Double opt-in confirmation"


class LegalBasis(models.TextChoices):
    CONSENT = "consent", "Consent"
    LEGITIMATE_INTEREST = "legitimate_interest", "Legitimate interest"
    CONTRACT = "contract", "Contract"


class ConsentRecord(TenantOwnedModel):
    """The append-only consent ledger. Never updated or deleted, except by erasure."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="+")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    purpose = models.CharField(max_length=50)
    status = models.CharField(max_length=10, choices=ConsentStatus.choices)
    legal_basis = models.CharField(max_length=20, choices=LegalBasis.choices, default=LegalBasis.CONSENT)
    source = models.CharField(max_length=20, choices=ConsentSource.choices)
    wording = models.TextField(blank=True)
    wording_version = models.CharField(max_length=50, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=500, blank=True)
    actor = models.CharField(max_length=200, blank=True, help_text="Who recorded it: a user, an API key, the contact.")
    occurred_at = models.DateTimeField()

    class Meta(TenantOwnedModel.Meta):
        indexes = [models.Index(fields=["tenant", "contact", "-occurred_at"], name="consent_contact_time")]
        ordering = ["-occurred_at", "-id"]

    def __str__(self) -> str:
        return f"{self.channel}/{self.purpose}: {self.status}"


class ConsentState(TenantOwnedModel):
    """The current consent per contact, channel and purpose, derived from the ledger.

    Written only in the same transaction as the ledger row it reflects. No row
    means "never asked".
    """

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="+")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    purpose = models.CharField(max_length=50)
    status = models.CharField(max_length=10, choices=ConsentStatus.choices)
    record = models.ForeignKey(ConsentRecord, on_delete=models.CASCADE, related_name="+")
    updated_at = models.DateTimeField()

    class Meta(TenantOwnedModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant", "contact", "channel", "purpose"], name="consent_state_unique")
        ]
        indexes = [
            models.Index(fields=["tenant", "channel", "purpose", "status", "contact"], name="consent_state_lookup")
        ]

    def __str__(self) -> str:
        return f"{self.channel}/{self.purpose}: {self.status}"


class Suppression(TenantOwnedModel):
    """An address that must not be messaged, kept by hash so it survives erasure and re-import."""

    class Reason(models.TextChoices):
        UNSUBSCRIBE = "unsubscribe", "Unsubscribed"
        HARD_BOUNCE = "hard_bounce", "Hard bounce"
        COMPLAINT = "complaint", "Complaint"
        ERASURE = "erasure", "Erased"
        MANUAL = "manual", "Manual"

    channel = models.CharField(max_length=10, choices=Channel.choices)
    address_hash = models.CharField(max_length=64)
    reason = models.CharField(max_length=20, choices=Reason.choices)
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta(TenantOwnedModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant", "channel", "address_hash"], name="suppression_unique_address")
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.channel} suppression ({self.reason})"


class PrivacyRequest(TenantOwnedModel):
    class Kind(models.TextChoices):
        EXPORT = "export", "Export (art. 15)"
        ERASURE = "erasure", "Erasure (art. 17)"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    contact = models.ForeignKey(Contact, null=True, on_delete=models.SET_NULL, related_name="+")
    contact_ref = models.BigIntegerField(help_text="The contact's id, kept after erasure.")
    requested_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantOwnedModel.Meta):
        indexes = [models.Index(fields=["tenant", "-created_at"], name="privacy_request_tenant_time")]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} of contact {self.contact_ref}"


class ImportJob(TenantOwnedModel):
    """A CSV import: uploaded, mapped, previewed, then run by a Celery task with progress."""

    class Status(models.TextChoices):
        UPLOADED = "uploaded", "Uploaded"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    file = models.FileField(upload_to="imports/%Y/%m/")
    original_name = models.CharField(max_length=255)
    encoding = models.CharField(max_length=20, default="utf-8")
    delimiter = models.CharField(max_length=1, default=",")
    headers = models.JSONField(default=list)
    mapping = models.JSONField(default=dict, blank=True, help_text="CSV column → contact field.")
    consent_channel = models.CharField(max_length=10, choices=Channel.choices, blank=True)
    consent_purpose = models.CharField(max_length=50, blank=True)
    consent_wording = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.UPLOADED)
    total_rows = models.PositiveIntegerField(default=0)
    processed_rows = models.PositiveIntegerField(default=0)
    created_count = models.PositiveIntegerField(default=0)
    updated_count = models.PositiveIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)
    errors_file = models.FileField(upload_to="imports/errors/%Y/%m/", blank=True)
    failure_reason = models.TextField(blank=True)
    created_by = models.ForeignKey(User, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantOwnedModel.Meta):
        indexes = [models.Index(fields=["tenant", "-created_at"], name="import_tenant_time")]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"import {self.pk} ({self.status})"

    @property
    def percent(self) -> int:
        return int(100 * self.processed_rows / self.total_rows) if self.total_rows else 0
