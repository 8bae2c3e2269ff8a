"""Campaigns: what to send to which segments, on which channel, when; each run's deliveries.

A campaign targets included segments minus excluded ones. Its variants carry the content: the
first variant whose target (a segment or a lifecycle stage) matches a contact wins, a default
catches the rest, and variants sharing a target split it by weight (A/B). Each send is a
``CampaignRun`` whose audience is snapshotted into ``Delivery`` rows, one per contact, which
workers claim, check again, render, send and record.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from contacts.models import Contact, LifecycleStage
from segments.models import Segment
from tenants.models import Tenant, TenantOwnedModel, User, unchecked_foreign_key


class CampaignChannel(models.TextChoices):
    EMAIL = "email", "Email"
    SMS = "sms", "SMS"
    PUSH = "push", "Push"
    WEBHOOK = "webhook", "Webhook"


class Campaign(TenantOwnedModel):
    class Kind(models.TextChoices):
        CAMPAIGN = "campaign", "Campaign"
        # A journey's send step: edited in the journey builder, sent a run per batch of contacts
        # reaching the step, and kept out of the campaign pages and API.
        JOURNEY = "journey", "Journey step"

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        SCHEDULED = "scheduled", "Scheduled"
        SENDING = "sending", "Sending"
        PAUSED = "paused", "Paused"
        SENT = "sent", "Sent"
        CANCELLED = "cancelled", "Cancelled"

    class AttributionTouch(models.TextChoices):
        CLICK = "click", "After a click"
        DELIVERY = "delivery", "After a delivery"

    class Schedule(models.TextChoices):
        NOW = "now", "Send now"
        AT = "at", "At a date and time"
        RECURRING = "recurring", "Recurring"
        LOCAL_TIME = "local_time", "At a local time in each recipient's time zone"

    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.CAMPAIGN)
    channel = models.CharField(max_length=10, choices=CampaignChannel.choices, default=CampaignChannel.EMAIL)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    # Consent is checked for (channel, purpose) at the moment of sending.
    purpose = models.CharField(max_length=50, default="marketing")
    # Measurement: a conversion is this event within the window after a message.
    goal_event = models.CharField(max_length=100, default="purchase", blank=True)
    attribution_window_hours = models.PositiveIntegerField(default=120)
    attribution_touch = models.CharField(
        max_length=10, choices=AttributionTouch.choices, default=AttributionTouch.CLICK,
        help_text="What counts as the message's touch: a click on it (default) or its delivery.",
    )  # fmt: skip
    cost = models.DecimalField(max_digits=12, decimal_places=2, default=0)
    # Tracking (email): a signed open pixel, and links rewritten to the signed click redirect.
    track_opens = models.BooleanField(default=True)
    track_clicks = models.BooleanField(default=True)
    throttle_per_minute = models.PositiveIntegerField(default=0, help_text="0: as fast as the channel allows.")
    # Schedule (django-celery-beat rows are created by campaigns services).
    schedule = models.CharField(max_length=12, choices=Schedule.choices, default=Schedule.NOW)
    send_at = models.DateTimeField(null=True, blank=True)
    crontab = models.CharField(max_length=100, blank=True, help_text="minute hour day-of-month month day-of-week")
    local_time = models.TimeField(null=True, blank=True)
    # Send-time optimisation (analytics/send_time.py): each delivery waits for its contact's best hour.
    best_time = models.BooleanField(
        default=False, verbose_name="Send at each recipient's best time",
        help_text="Within the 24 hours after the send starts, each message waits for the hour its recipient "
        "usually opens and clicks in (not with a local-time schedule).",
    )  # fmt: skip
    # Preferred channel (analytics/preferred_channel.py): each contact gets the message on the channel of
    # ``preferred_channels`` they engage with most among those they consented to; ``channel`` is the first.
    preferred_channel = models.BooleanField(
        default=False, verbose_name="Send on each contact's preferred channel",
        help_text="Each contact gets the message on the channel they engage with most among those they consented "
        "to; without engagement, the first of the channels in order.",
    )  # fmt: skip
    preferred_channels = models.JSONField(
        default=list, blank=True, help_text="The channels it may choose, in the order used without engagement."
    )
    # A hidden campaign (kind "journey") sending this campaign's messages on another channel (its preferred
    # channel option, campaigns/siblings.py): its runs belong to the parent's.
    sibling_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="siblings", editable=False
    )
    # Sender (the tenant's defaults when blank).
    sender_name = models.CharField(max_length=120, blank=True)
    sender_email = models.EmailField(blank=True)
    reply_to = models.EmailField(blank=True)
    sms_sender = models.CharField(max_length=20, blank=True)
    webhook_url = models.URLField(max_length=500, blank=True)
    # The django-celery-beat row that starts scheduled and recurring runs (campaigns/scheduling.py).
    periodic_task = models.ForeignKey(
        "django_celery_beat.PeriodicTask", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta(TenantOwnedModel.Meta):
        indexes = [models.Index(fields=["tenant", "-created_at"], name="campaign_tenant_time")]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name

    @property
    def channel_label(self) -> str:
        """The channel in words: "SMS", or "Preferred channel: Email, SMS" (in the order used without engagement)."""
        if not self.preferred_channel:
            return str(self.get_channel_display())
        labels = dict(CampaignChannel.choices)
        return "Preferred channel: " + ", ".join(str(labels.get(c, c)) for c in self.preferred_channels or [])


class CampaignAudience(TenantOwnedModel):
    """A segment a campaign includes (or, with ``exclude``, leaves out)."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="audience")
    segment = models.ForeignKey(Segment, on_delete=models.PROTECT, related_name="+")
    exclude = models.BooleanField(default=False)

    class Meta(TenantOwnedModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant", "campaign", "segment"], name="campaign_audience_unique")
        ]

    def __str__(self) -> str:
        return f"{'−' if self.exclude else '+'} segment {self.segment_id}"


class Variant(TenantOwnedModel):
    """Content for one target: a segment, a lifecycle stage, or everyone else (the default)."""

    class Target(models.TextChoices):
        SEGMENT = "segment", "Members of a segment"
        STAGE = "stage", "A lifecycle stage"
        DEFAULT = "default", "Everyone else"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="variants")
    name = models.CharField(max_length=100)
    position = models.PositiveSmallIntegerField(default=0, help_text="Targets are tried in this order.")
    target = models.CharField(max_length=10, choices=Target.choices, default=Target.DEFAULT)
    target_segment = models.ForeignKey(Segment, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    target_stage = models.CharField(max_length=20, choices=LifecycleStage.choices, blank=True)
    # A/B: variants with the same target split its contacts by weight.
    weight = models.PositiveSmallIntegerField(default=100)
    # Email
    subject = models.CharField(max_length=500, blank=True)
    preheader = models.CharField(max_length=500, blank=True)
    html_body = models.TextField(blank=True)
    text_body = models.TextField(blank=True, help_text="Derived from the HTML when blank.")
    # SMS
    sms_body = models.TextField(blank=True)
    # Push
    push_title = models.CharField(max_length=200, blank=True)
    push_body = models.CharField(max_length=1000, blank=True)
    push_deep_link = models.CharField(max_length=500, blank=True)
    # Webhook: a Liquid template producing the JSON body (a default document when blank).
    webhook_payload = models.TextField(blank=True)
    # Call to action
    cta_label = models.CharField(max_length=100, blank=True)
    cta_url = models.CharField(max_length=500, blank=True)
    # A hidden sibling campaign's copy of this variant of its parent (campaigns/siblings.py).
    copy_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )

    class Meta(TenantOwnedModel.Meta):
        indexes = [models.Index(fields=["tenant", "campaign", "position"], name="variant_campaign_position")]
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.name


class CampaignRun(TenantOwnedModel):
    """One send of a campaign (a recurring campaign has one per occurrence)."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        PAUSED = "paused", "Paused"
        DONE = "done", "Done"
        CANCELLED = "cancelled", "Cancelled"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="runs")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    scheduled_for = models.DateTimeField()
    audience_size = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # A hidden sibling campaign's run: the run of the parent campaign whose contacts it sends on its channel.
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="+", editable=False
    )

    class Meta(TenantOwnedModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant", "campaign", "number"], name="campaign_run_unique"),
            # One run per occurrence: a redelivered task or a second beat starting the same
            # occurrence finds the run that exists.
            models.UniqueConstraint(
                fields=["tenant", "campaign", "scheduled_for"], name="campaign_run_unique_occurrence"
            ),
        ]
        ordering = ["-number"]

    def __str__(self) -> str:
        return f"run {self.number} of campaign {self.campaign_id}"


class Delivery(TenantOwnedModel):
    """One message of one run to one contact: claimed, checked again, sent once, recorded."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        SKIPPED = "skipped", "Skipped"
        FAILED = "failed", "Failed"

    class ChannelReason(models.TextChoices):
        """Why a preferred-channel campaign chose the delivery's channel (analytics/preferred_channel.py)."""

        MOST_ENGAGED = "most_engaged", "Most engaged"
        ONLY_CONSENTED = "only_consented", "Only consented channel"
        NO_ENGAGEMENT = "no_engagement", "No engagement yet: the channel order"
        NO_CONSENT = "no_consent", "No consented channel"

    class SkipReason(models.TextChoices):
        NO_CONSENT = "no_consent", "No consent"
        SUPPRESSED = "suppressed", "Suppressed"
        FREQUENCY_CAP = "frequency_cap", "Frequency cap reached"
        PAUSED = "paused", "Paused by the contact"
        NO_ADDRESS = "no_address", "No address for the channel"
        ERASED = "erased", "Contact erased"
        CANCELLED = "cancelled", "Campaign cancelled"
        NO_VARIANT = "no_variant", "No variant for the contact"

    id = models.BigAutoField(primary_key=True)
    # Written a million at a time by the snapshot: no constraint triggers (the ORM cascades).
    tenant = unchecked_foreign_key(Tenant)
    run = unchecked_foreign_key(CampaignRun)
    contact = unchecked_foreign_key(Contact)
    variant = unchecked_foreign_key(Variant, null=True, on_delete=models.SET_NULL)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    skip_reason = models.CharField(max_length=20, choices=SkipReason.choices, blank=True)
    # Not before this time: a local-time schedule or quiet hours hold a delivery back.
    not_before = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    sent_at = models.DateTimeField(null=True, blank=True)
    provider_message_id = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    # Preferred-channel campaigns: the channel chosen for the contact at the snapshot, why, and the
    # engagement score of each channel they could get it on, in thousandths (null: not one of them, or
    # not such a campaign). Database defaults, so statements that do not name them (the snapshot) need not.
    chosen_channel = models.CharField(
        max_length=10, choices=CampaignChannel.choices, blank=True, default="", db_default=""
    )
    channel_reason = models.CharField(
        max_length=20, choices=ChannelReason.choices, blank=True, default="", db_default=""
    )
    # Small integers: cheaper for the snapshot to build and store than a JSON document per delivery.
    score_email = models.PositiveSmallIntegerField(null=True, blank=True)
    score_sms = models.PositiveSmallIntegerField(null=True, blank=True)
    score_push = models.PositiveSmallIntegerField(null=True, blank=True)

    class Meta(TenantOwnedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "run", "contact"], name="delivery_unique_contact")]
        indexes = [
            # Workers claim pending deliveries of a run in id order.
            models.Index(
                fields=["tenant", "run", "id"], name="delivery_pending", condition=Q(status__in=["pending", "sending"])
            ),
            # The frequency cap: a contact's recent sends.
            models.Index(
                fields=["tenant", "contact", "sent_at"], name="delivery_contact_sent", condition=Q(status="sent")
            ),
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk} ({self.status})"

    @property
    def channel_scores(self) -> dict[str, float] | None:
        """The scores the choice compared: channel → score (0 to 1), for the channels it could go by."""
        if not self.channel_reason:
            return None
        found = {
            c: getattr(self, f"score_{c}") for c in (CampaignChannel.EMAIL, CampaignChannel.SMS, CampaignChannel.PUSH)
        }
        return {c: value / 1000 for c, value in found.items() if value is not None}

    @property
    def channel_reason_text(self) -> str:
        """Why a preferred-channel campaign chose this delivery's channel, in words ("" otherwise)."""
        from analytics.preferred_channel import reason_text

        return reason_text(self.chosen_channel, self.channel_reason, self.channel_scores)


class ContactPause(TenantOwnedModel):
    """A contact's "pause for a while" from the preference centre: nothing is sent until ``until``.

    Not consent: the consent stays as it was and messages resume by themselves afterwards.
    The sending code reads it with ``campaigns.optout.is_paused``.
    """

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="+")
    until = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta(TenantOwnedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "contact"], name="contact_pause_unique_contact")]

    def __str__(self) -> str:
        return f"contact {self.contact_id} paused until {self.until:%Y-%m-%d}"


class ChannelConfig(TenantOwnedModel):
    """A tenant's provider account for one channel (email uses the project's email backend when absent).

    ``settings`` holds the backend's non-secret options (base URL, account id, sender); ``secret``
    the credential (SMS auth token, push server key, webhook signing secret), never shown back.
    """

    class Backend(models.TextChoices):
        DJANGO_EMAIL = "django_email", "Django email backend (SMTP or an ESP through django-anymail)"
        TWILIO = "twilio", "Twilio-style SMS REST API"
        FCM = "fcm", "FCM-style push HTTP API"
        WEBHOOK = "webhook", "Signed JSON webhook"
        CONSOLE = "console", "Console (development)"
        FILE = "file", "File (development)"

    channel = models.CharField(max_length=10, choices=CampaignChannel.choices)
    backend = models.CharField(max_length=20, choices=Backend.choices)
    settings = models.JSONField(default=dict, blank=True)
    secret = models.CharField(max_length=500, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta(TenantOwnedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "channel"], name="channel_config_unique_channel")]

    def __str__(self) -> str:
        return f"{self.channel} via {self.backend}"


class DeliveryFeedback(TenantOwnedModel):
    """What a provider or a recipient told us after sending: bounces, complaints, inbound STOP/START.

    Providers retry their webhooks, so (provider, provider_event_id) is unique per tenant and a
    repeat is a no-op.
    """

    class Kind(models.TextChoices):
        DELIVERED = "delivered", "Delivered"
        BOUNCE_HARD = "bounce_hard", "Hard bounce"
        BOUNCE_SOFT = "bounce_soft", "Soft bounce"
        COMPLAINT = "complaint", "Spam complaint"
        UNSUBSCRIBE = "unsubscribe", "Unsubscribed at the provider"
        INBOUND_STOP = "inbound_stop", "Replied STOP"
        INBOUND_START = "inbound_start", "Replied START"

    id = models.BigAutoField(primary_key=True)
    delivery = models.ForeignKey(Delivery, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    contact = models.ForeignKey(Contact, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    channel = models.CharField(max_length=10, choices=CampaignChannel.choices)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    provider = models.CharField(max_length=50)
    provider_event_id = models.CharField(max_length=200)
    occurred_at = models.DateTimeField()
    detail = models.TextField(blank=True)
    payload = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta(TenantOwnedModel.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "provider", "provider_event_id"], name="delivery_feedback_unique_event"
            )
        ]
        indexes = [models.Index(fields=["tenant", "-occurred_at"], name="delivery_feedback_time")]

    def __str__(self) -> str:
        return f"{self.kind} from {self.provider}"
