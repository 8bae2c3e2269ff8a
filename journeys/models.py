"""Journeys: multi-step automations a contact enters on a trigger and walks step by step.

A ``Journey`` holds what does not change between edits (name, trigger, entry and exit rules,
goal); its steps live in a ``JourneyVersion``. Editing a live journey edits a draft version;
publishing it makes it the version new entrants get, while contacts in flight finish on the
version they entered (unless the publish moves them). Each contact's walk is an ``Enrollment``
(current step, when it is due, status) with one ``EnrollmentStep`` row per step taken.

A send step sends through the campaigns pipeline: it owns a hidden campaign (``Campaign.kind``
"journey") whose variants are its content, and each batch of contacts reaching the step becomes
a run of that campaign, so consent, caps, quiet hours and exactly-once sending are the same.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from contacts.models import Channel, Contact, LifecycleStage
from segments.models import Segment
from tenants.models import Tenant, TenantOwnedModel, User, unchecked_foreign_key


class Journey(TenantOwnedModel):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        LIVE = "live", "Live"
        PAUSED = "paused", "Paused"
        ARCHIVED = "archived", "Archived"

    class Trigger(models.TextChoices):
        SEGMENT_ENTERED = "segment_entered", "Enters a segment"
        EVENT = "event", "Performs an event"
        STAGE_CHANGED = "stage_changed", "Lifecycle stage changes to"
        DATE_ATTRIBUTE = "date_attribute", "A date comes round (birthday, renewal)"

    class Entry(models.TextChoices):
        ONCE = "once", "Once ever"
        COOLDOWN = "cooldown", "Again after a cooldown"

    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    # Trigger: one kind, with the fields that kind uses (journeys/validation.py checks them).
    trigger = models.CharField(max_length=20, choices=Trigger.choices, default=Trigger.EVENT)
    trigger_segment = models.ForeignKey(Segment, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    trigger_event = models.CharField(max_length=100, blank=True)
    # Property filters on the trigger event: [{"property": "value", "op": "gt", "value": 50}, ...]
    trigger_filters = models.JSONField(default=list, blank=True)
    trigger_stage = models.CharField(max_length=20, choices=LifecycleStage.choices, blank=True)
    # A date field: "birth_date" or a custom attribute of type date; entered on its anniversary.
    trigger_date_field = models.CharField(max_length=100, blank=True)
    # Entry rules
    entry = models.CharField(max_length=10, choices=Entry.choices, default=Entry.ONCE)
    cooldown_days = models.PositiveIntegerField(default=0)
    entry_segment = models.ForeignKey(
        Segment, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="Only contacts in this segment may enter.",
    )  # fmt: skip
    daily_cap = models.PositiveIntegerField(default=0, help_text="Most entrants per day; 0: no cap.")
    # Goal and exits
    goal_event = models.CharField(max_length=100, blank=True)
    exit_segment = models.ForeignKey(
        Segment, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="Contacts who leave this segment leave the journey.",
    )  # fmt: skip
    exit_on_consent_withdrawn = models.CharField(
        max_length=10, choices=Channel.choices, blank=True,
        help_text="Contacts who withdraw consent on this channel leave the journey.",
    )  # fmt: skip
    purpose = models.CharField(max_length=50, default="marketing")
    # The version new entrants get (None until the journey is first started).
    live_version = models.ForeignKey(
        "JourneyVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta(TenantOwnedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="journey_unique_name")]
        indexes = [models.Index(fields=["tenant", "status", "trigger"], name="journey_live_trigger")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class JourneyVersion(TenantOwnedModel):
    """The steps of a journey as they were at one publish (or, unpublished, the draft)."""

    journey = models.ForeignKey(Journey, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    start_key = models.CharField(max_length=40, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta(TenantOwnedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "journey", "number"], name="journey_version_unique")]
        ordering = ["-number"]

    def __str__(self) -> str:
        return f"version {self.number} of journey {self.journey_id}"

    @property
    def is_draft(self) -> bool:
        return self.published_at is None


class StepKind(models.TextChoices):
    SEND = "send", "Send a message"
    WAIT = "wait", "Wait for a duration"
    WAIT_UNTIL = "wait_until", "Wait until a day and time"
    WAIT_EVENT = "wait_event", "Wait for an event"
    BRANCH = "branch", "Branch on a condition"
    SPLIT = "split", "Random split"
    UPDATE = "update", "Update the contact"
    WEBHOOK = "webhook", "Notify a webhook"
    EXIT = "exit", "Exit"


class Step(TenantOwnedModel):
    """One step of a version's graph: what it does (``config``) and where each exit leads (``exits``).

    ``exits`` maps an exit label to the key of the next step, or null for "the journey ends here":
    ``next`` for most kinds; ``yes``/``no`` for a branch; ``happened``/``timed_out`` for a wait for
    an event; one label per path of a split. docs/journeys.md lists each kind's config.
    """

    version = models.ForeignKey(JourneyVersion, on_delete=models.CASCADE, related_name="steps")
    key = models.CharField(max_length=40)
    kind = models.CharField(max_length=12, choices=StepKind.choices)
    name = models.CharField(max_length=200, blank=True)
    config = models.JSONField(default=dict, blank=True)
    exits = models.JSONField(default=dict, blank=True)
    # A send step's content: a hidden campaign (kind "journey") with its variants.
    campaign = models.ForeignKey(
        "campaigns.Campaign", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    position = models.PositiveIntegerField(default=0)

    class Meta(TenantOwnedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "version", "key"], name="journey_step_unique_key")]
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.name or f"{self.get_kind_display()} ({self.key})"


class Enrollment(TenantOwnedModel):
    """One contact's walk through a journey, on the version it entered."""

    class Status(models.TextChoices):
        ACTIVE = "active", "In the journey"
        COMPLETED = "completed", "Completed"
        CONVERTED = "converted", "Converted (reached the goal)"
        EXITED = "exited", "Exited"

    id = models.BigAutoField(primary_key=True)
    journey = models.ForeignKey(Journey, on_delete=models.CASCADE, related_name="+")
    version = models.ForeignKey(JourneyVersion, on_delete=models.CASCADE, related_name="+")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    step = models.ForeignKey(Step, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # How many steps it has taken: the number of the current step in its history.
    seq = models.PositiveIntegerField(default=0)
    step_entered_at = models.DateTimeField(null=True, blank=True)
    # When the engine looks at it next: now for a step to run, the end of a wait otherwise.
    next_run_at = models.DateTimeField(null=True, blank=True)
    # Set while the contact waits at a "wait for an event" step: that event wakes it early.
    waiting_for = models.CharField(max_length=100, blank=True)
    entered_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    exit_reason = models.CharField(max_length=200, blank=True)
    # What triggered it (an event id, a segment, a stage, a date) for the contact's path.
    trigger_detail = models.CharField(max_length=200, blank=True)

    class Meta(TenantOwnedModel.Meta):
        constraints = [
            # A contact walks a journey once at a time (re-entry starts a new enrollment afterwards).
            models.UniqueConstraint(
                fields=["tenant", "journey", "contact"], condition=Q(status="active"), name="enrollment_one_active"
            )
        ]
        indexes = [
            # The engine's claim: due enrollments, oldest first.
            models.Index(fields=["tenant", "next_run_at"], name="enrollment_due", condition=Q(status="active")),
            # Events wake waiting contacts, goals convert them, exits end them.
            models.Index(fields=["tenant", "contact"], name="enrollment_contact", condition=Q(status="active")),
            models.Index(fields=["tenant", "journey", "-entered_at"], name="enrollment_journey_time"),
        ]
        ordering = ["-entered_at", "-id"]

    def __str__(self) -> str:
        return f"contact {self.contact_id} in journey {self.journey_id} ({self.status})"


class EnrollmentStep(TenantOwnedModel):
    """A step an enrollment took: when it arrived, when it left, and by which exit."""

    id = models.BigAutoField(primary_key=True)
    tenant = unchecked_foreign_key(Tenant)
    enrollment = unchecked_foreign_key(Enrollment)
    step = unchecked_foreign_key(Step)
    seq = models.PositiveIntegerField()
    entered_at = models.DateTimeField()
    left_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=40, blank=True)
    # A send step's delivery (campaigns.Delivery id), or a webhook step's notification.
    delivery_id = models.BigIntegerField(null=True, blank=True)
    detail = models.CharField(max_length=500, blank=True)

    class Meta(TenantOwnedModel.Meta):
        constraints = [
            # Idempotency: a step number of an enrollment is taken once, however often a tick runs.
            models.UniqueConstraint(fields=["tenant", "enrollment", "seq"], name="enrollment_step_unique_seq")
        ]
        indexes = [models.Index(fields=["tenant", "step"], name="enrollment_step_step")]
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"step {self.step_id} #{self.seq} of enrollment {self.enrollment_id}"


class WebhookNotice(TenantOwnedModel):
    """A webhook step's notification: written with the step, posted after commit, retried until sent."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    id = models.BigAutoField(primary_key=True)
    enrollment = unchecked_foreign_key(Enrollment)
    step = unchecked_foreign_key(Step)
    seq = models.PositiveIntegerField()
    url = models.URLField(max_length=500)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta(TenantOwnedModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant", "enrollment", "seq"], name="webhook_notice_unique_step")
        ]
        indexes = [
            models.Index(fields=["tenant", "next_attempt_at"], name="webhook_notice_due", condition=Q(status="pending"))
        ]

    def __str__(self) -> str:
        return f"webhook notice {self.pk} ({self.status})"
