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


class SendTimeProfile(TenantOwnedModel):
    """A contact's best hour of the week (0 = Monday 00:00 … 167 = Sunday 23:00, on their own clock)
    to receive a message, from their human opens and clicks blended with the tenant's
    (analytics/send_time.py). Contacts without recent engagement have no row: they get the
    tenant's busiest hour (``SendTimeBaseline``)."""

    id = models.BigAutoField(primary_key=True)
    # Rewritten in bulk by the periodic recompute: no constraint triggers (the ORM cascades).
    tenant = unchecked_foreign_key(Tenant)
    contact = unchecked_foreign_key("contacts.Contact")
    best_hour_of_week = models.PositiveSmallIntegerField()
    # The share of the evidence for the chosen hour that is the contact's own, in whole percent (0: the tenant's habit).
    confidence = models.FloatField(default=0)
    # Engagements counted: one per message and hour of the week in which the contact opened or clicked it.
    events_counted = models.PositiveIntegerField(default=0)
    # When these figures were computed (a recompute that finds the same figures leaves the row alone).
    computed_at = models.DateTimeField()

    class Meta(TenantOwnedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "contact"], name="send_time_profile_unique_contact")]

    def __str__(self) -> str:
        return f"contact {self.contact_id}: hour {self.best_hour_of_week} of the week"


class SendTimeBaseline(TenantOwnedModel):
    """The tenant's human engagement by hour of the week: the prior of every contact's profile, and
    the best hour of contacts with no recent engagement."""

    # 168 counts, one per hour of the week on each contact's own clock.
    hour_counts = models.JSONField(default=list)
    best_hour_of_week = models.PositiveSmallIntegerField()
    events_counted = models.PositiveIntegerField(default=0)
    contacts_profiled = models.PositiveIntegerField(default=0)
    computed_at = models.DateTimeField()

    class Meta(TenantOwnedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant"], name="send_time_baseline_unique_tenant")]

    def __str__(self) -> str:
        return f"tenant {self.tenant_id}: hour {self.best_hour_of_week} of the week"


class ChannelProfile(TenantOwnedModel):
    """How much a contact engages on each channel: a recency-weighted engagement rate per message
    received (analytics/preferred_channel.py), kept by a periodic recompute, read by the snapshot of a
    preferred-channel campaign in the same statement. Contacts with no message or engagement in the
    window have no row (every score 0)."""

    id = models.BigAutoField(primary_key=True)
    # Rewritten in bulk by the periodic recompute: no constraint triggers (the ORM cascades).
    tenant = unchecked_foreign_key(Tenant)
    contact = unchecked_foreign_key("contacts.Contact")
    # Engagement per message received on the channel, recency-weighted and shrunk towards 0 (0 ≤ score < 1).
    email_score = models.FloatField(default=0)
    sms_score = models.FloatField(default=0)
    push_score = models.FloatField(default=0)
    # The channel with the highest score whatever the consent ("" when every score is 0).
    best_channel = models.CharField(max_length=10, blank=True)
    # What the scores rest on, unweighted: messages received and engaged with in the window (all channels).
    messages_counted = models.PositiveIntegerField(default=0)
    engagements_counted = models.PositiveIntegerField(default=0)
    computed_at = models.DateTimeField()

    class Meta(TenantOwnedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "contact"], name="channel_profile_unique_contact")]

    def __str__(self) -> str:
        return f"contact {self.contact_id}: {self.best_channel or 'no engagement'}"


class Experiment(TenantOwnedModel):
    """An A/B/n test of a campaign's variants that share one target (the control's), with an automatic winner.

    When the campaign's run starts, a test share of the arms' contacts (a stable sample by a hash of
    the contact id) keeps its variants and is sent; the rest is held (no variant, ``not_before``
    far ahead). After ``duration_hours`` the decision compares each arm's rate of the metric with the
    stated method at the stated level, picks the winner (or the fallback) and releases the held
    deliveries with it (analytics/experiments.py).
    """

    class Tested(models.TextChoices):
        SUBJECT = "subject", "Subject line"
        CONTENT = "content", "Content"
        CTA = "cta", "Call to action"
        SEND_TIME = "send_time", "Send time"
        CHANNEL = "channel", "Channel"

    class Metric(models.TextChoices):
        OPEN = "open", "Opens by people (machine opens left out)"
        CLICK = "click", "Clicks by people (machine clicks left out)"
        CONVERSION = "conversion", "Conversions (the campaign's goal)"

    class Method(models.TextChoices):
        Z_TEST = "z_test", "Two-proportion z-test"
        BAYESIAN = "bayesian", "Bayesian probability to be best"

    class Fallback(models.TextChoices):
        CONTROL = "control", "Send the control (the first variant)"
        BEST_OBSERVED = "best_observed", "Send the variant with the best observed rate"
        NONE = "none", "Do not send to the rest"

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        TESTING = "testing", "Testing"
        DECIDED = "decided", "Decided"
        SENT = "sent", "Winner sent"

    campaign = models.ForeignKey("campaigns.Campaign", on_delete=models.CASCADE, related_name="+")
    tested = models.CharField(max_length=10, choices=Tested.choices, default=Tested.SUBJECT)
    # The first arm; the arms are the campaign's variants with the same target as this one.
    control = models.ForeignKey("campaigns.Variant", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Send-time tests: each arm's hour of the day (workspace time), by variant id.
    arm_send_hours = models.JSONField(default=dict, blank=True)
    # Channel tests: each arm's channel, by variant id (an arm left out sends on the campaign's channel).
    arm_channels = models.JSONField(default=dict, blank=True)
    # Channel tests, from the start: the hidden campaign that sends an arm on another channel, by the
    # arm's variant id: {"campaign": id, "variant": id, "channel": ..., "run": the test share's run}.
    arm_siblings = models.JSONField(default=dict, blank=True)
    test_share = models.PositiveSmallIntegerField(default=20, help_text="Percent of the arms' contacts in the test.")
    metric = models.CharField(max_length=10, choices=Metric.choices, default=Metric.CLICK)
    duration_hours = models.PositiveIntegerField(default=24)
    significance_level = models.DecimalField(max_digits=4, decimal_places=3, default=0.95)
    method = models.CharField(max_length=10, choices=Method.choices, default=Method.Z_TEST)
    fallback = models.CharField(max_length=15, choices=Fallback.choices, default=Fallback.CONTROL)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    # The run under test: its arms (variant ids, control first) and the deliveries held for the winner.
    run = models.ForeignKey("campaigns.CampaignRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    arms = models.JSONField(default=list, blank=True)
    held_count = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    decide_at = models.DateTimeField(null=True, blank=True)
    # The decision: figures per arm as they stood, the winner (or the fallback's pick) and why.
    winner = models.ForeignKey("campaigns.Variant", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    winner_name = models.CharField(max_length=100, blank=True)
    significant = models.BooleanField(null=True, blank=True)
    p_value = models.FloatField(null=True, blank=True)
    probability = models.FloatField(null=True, blank=True)
    results = models.JSONField(default=list, blank=True)
    reason = models.TextField(blank=True)
    released_count = models.PositiveIntegerField(default=0)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey("tenants.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey("tenants.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta(TenantOwnedModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant", "campaign"], name="experiment_unique_campaign"),
            models.CheckConstraint(
                condition=models.Q(test_share__gte=1, test_share__lte=100), name="experiment_test_share_percent"
            ),
        ]
        indexes = [
            # The decision tick looks across tenants for tests whose time is up.
            models.Index(fields=["decide_at"], name="experiment_due", condition=models.Q(status="testing")),
        ]

    def __str__(self) -> str:
        return f"A/B test of campaign {self.campaign_id} ({self.status})"


# --- message figures: kept by analytics/rollup.py, read by analytics/selectors.py ----------------------
class DeliveryOutcome(TenantOwnedModel):
    """What became of one sent message: its firsts (by a person, unless said) and its human clicks.

    One row per delivery that anything happened to (an open, a click, a bounce, a complaint, an
    unsubscribe), recomputed from the raw rows whenever one of them arrives, so doing it twice is
    harmless. The daily figures (``CampaignDayStats``) change by the difference between the old row
    and the new one.
    """

    id = models.BigAutoField(primary_key=True)
    tenant = unchecked_foreign_key(Tenant)
    delivery_id = models.BigIntegerField()
    campaign_id = models.BigIntegerField()
    variant_id = models.BigIntegerField(default=0, help_text="0: the delivery had no variant.")
    # The figures by lifecycle stage join the contact's current stage; the row outlives the contact.
    contact = unchecked_foreign_key("contacts.Contact", on_delete=models.DO_NOTHING, null=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    opened_any_at = models.DateTimeField(null=True, blank=True, help_text="First open by anyone, machines too.")
    clicked_at = models.DateTimeField(null=True, blank=True)
    clicks = models.PositiveIntegerField(default=0)
    engaged_at = models.DateTimeField(null=True, blank=True, help_text="First open or click by a person.")
    bounced_at = models.DateTimeField(null=True, blank=True)
    complained_at = models.DateTimeField(null=True, blank=True)
    unsubscribed_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantOwnedModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant", "delivery_id"], name="delivery_outcome_unique_delivery")
        ]
        indexes = [models.Index(fields=["tenant", "campaign_id"], name="delivery_outcome_campaign")]

    def __str__(self) -> str:
        return f"outcome of delivery {self.delivery_id}"


class CampaignDayStats(TenantOwnedModel):
    """Messages of one campaign and variant, per day (in the tenant's time zone) on which things happened.

    ``sent`` counts on the day of sending; each unique figure on the day of the delivery's first such
    event (a delivery first opened on Tuesday adds one to Tuesday's ``opened``, whatever came later);
    ``clicks`` (every human click) on each click's day. Conversions are read from ``Conversion``.
    """

    id = models.BigAutoField(primary_key=True)
    tenant = unchecked_foreign_key(Tenant)
    campaign_id = models.BigIntegerField()
    variant_id = models.BigIntegerField(default=0, help_text="0: deliveries without a variant.")
    day = models.DateField()
    sent = models.IntegerField(default=0)
    bounced = models.IntegerField(default=0)
    opened = models.IntegerField(default=0)
    opened_any = models.IntegerField(default=0)
    clicked = models.IntegerField(default=0)
    clicks = models.IntegerField(default=0)
    engaged = models.IntegerField(default=0)
    unsubscribed = models.IntegerField(default=0)
    complained = models.IntegerField(default=0)

    class Meta(TenantOwnedModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant", "campaign_id", "variant_id", "day"], name="campaign_day_unique")
        ]
        indexes = [models.Index(fields=["tenant", "day"], name="campaign_day_by_day")]

    def __str__(self) -> str:
        return f"campaign {self.campaign_id}, variant {self.variant_id} on {self.day}"


class RunTally(TenantOwnedModel):
    """A run's sent messages by variant and day as last counted; settled once the run is over."""

    id = models.BigAutoField(primary_key=True)
    tenant = unchecked_foreign_key(Tenant)
    run_id = models.BigIntegerField()
    campaign_id = models.BigIntegerField()
    # [[variant_id, "YYYY-MM-DD", sent], ...]
    counts = models.JSONField(default=list)
    settled = models.BooleanField(default=False)
    counted_at = models.DateTimeField()

    class Meta(TenantOwnedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "run_id"], name="run_tally_unique_run")]
        indexes = [models.Index(fields=["tenant", "run_id"], name="run_tally_open", condition=models.Q(settled=False))]

    def __str__(self) -> str:
        return f"tally of run {self.run_id}"


class StatsCursor(TenantOwnedModel):
    """How far the tenant's message figures have read the raw tables: recent checkpoints of their ids.

    Each refresh reads again from the checkpoint taken ``OVERLAP`` earlier (analytics/rollup.py), so a
    row whose transaction committed after a later id was already read is still seen.
    """

    checkpoints = models.JSONField(default=list)
    # A pass under way: {"at", "from": {source: id}, "to": {source: id}}; null between passes.
    pending = models.JSONField(null=True, blank=True)
    # Campaigns whose figures changed and whose figures by lifecycle stage are to be counted again.
    stages_due = models.JSONField(default=list, blank=True)
    refreshed_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantOwnedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant"], name="stats_cursor_unique_tenant")]

    def __str__(self) -> str:
        return f"figures of tenant {self.tenant_id} as of {self.refreshed_at}"


class CampaignStageStats(TenantOwnedModel):
    """A campaign's messages by the recipients' lifecycle stage, as the stages stood at ``computed_at``.

    Stages change after the message, so these are counted again from the raw rows (not by differences):
    after the campaign's figures change (at most every ``STAGE_FRESH_FOR``) and every ``STAGE_MAX_AGE``.
    """

    id = models.BigAutoField(primary_key=True)
    tenant = unchecked_foreign_key(Tenant)
    campaign_id = models.BigIntegerField()
    stage = models.CharField(max_length=20, blank=True, help_text="Blank: the contact is gone.")
    sent = models.IntegerField(default=0)
    bounced = models.IntegerField(default=0)
    opened = models.IntegerField(default=0)
    opened_any = models.IntegerField(default=0)
    clicked = models.IntegerField(default=0)
    clicks = models.IntegerField(default=0)
    engaged = models.IntegerField(default=0)
    unsubscribed = models.IntegerField(default=0)
    complained = models.IntegerField(default=0)
    conversions = models.IntegerField(default=0)
    revenue = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    computed_at = models.DateTimeField()

    class Meta(TenantOwnedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "campaign_id", "stage"], name="campaign_stage_unique")]
        indexes = [models.Index(fields=["tenant", "computed_at"], name="campaign_stage_computed")]

    def __str__(self) -> str:
        return f"campaign {self.campaign_id}, stage {self.stage or '(gone)'}"


class StatsSweep(models.Model):
    """Platform-wide checkpoints of the beat tick that finds the tenants with something new to count.

    Not tenant-owned: one row, holding only ids (no tenant data), read and written by platform code.
    """

    checkpoints = models.JSONField(default=list)
    swept_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"sweep as of {self.swept_at}"
