"""Website personalisation: public site keys, content slots and their variants, visitors, figures.

A tenant pastes the snippet (static/js/segmentor.js) into its site with a public ``SiteKey``.
The snippet fills named ``Slot``s with the first active ``SlotVariant`` (by priority) whose
segment or lifecycle stage matches the visitor's contact, else with the slot's default content.
``SlotDailyStats`` keeps impressions, clicks, conversions and revenue per slot, variant and day
(written with upserts); ``SlotClick`` keeps each click so attribution can find the last one.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from contacts.models import Contact, LifecycleStage
from segments.models import Segment
from tenants.models import TenantOwnedModel, User, unchecked_foreign_key

PUBLIC_KEY_PREFIX = "pk_live_"
MAX_BODY_CHARS = 2000


def validate_content_url(value: str) -> None:
    """Accept an absolute http(s) URL or a path on the tenant's site ("/sale"); nothing else.

    The snippet puts these into ``href`` and ``src``: a ``javascript:`` or ``data:`` URL there
    would run or show whatever its author wrote.
    """
    if not value:
        return
    if any(ch.isspace() or ord(ch) < 32 for ch in value):
        raise ValidationError("A link may not contain spaces or control characters.", code="invalid_url")
    if value.startswith("/") and not value.startswith("//"):
        return
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValidationError(
            "Give an http(s) address (https://shop.example/sale) or a path on your site (/sale).",
            code="invalid_url",
        )


def validate_origin(value: str) -> None:
    """An origin exactly as a browser sends it: scheme, host and optional port, nothing else."""
    parts = urlsplit(value)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path
        or parts.query
        or parts.fragment
        or parts.username
        or parts.password
        or value != value.strip().lower()
        or value.endswith("/")
    ):
        raise ValidationError(
            f"{value!r} is not an origin: write scheme and host (and port), e.g. https://shop.example.",
            code="invalid_origin",
        )


class SiteKey(TenantOwnedModel):
    """A public key for the website snippet: may send events and read slot content, nothing else.

    It is not a secret (it sits in the page); the allowed origins, the rate limits and, for
    identify, the HMAC signature made with ``identify_secret`` on the tenant's server keep it
    from being used to read or claim anything else.
    """

    name = models.CharField(max_length=100)
    public_key = models.CharField(max_length=64, help_text="pk_live_…: goes into the page.")
    allowed_origins = models.JSONField(
        default=list, blank=True, help_text="Exact origins the snippet may run on, e.g. https://shop.example."
    )
    require_signed_identify = models.BooleanField(
        default=True,
        help_text="Identify only with an HMAC-SHA256 of the user id made on your server with the identify secret.",
    )
    identify_secret = models.CharField(max_length=64, help_text="Server side only: signs identify calls.")
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantOwnedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "public_key"], name="sitekey_unique_public_key")]
        # The public endpoints look a key up before the tenant is known.
        indexes = [models.Index(fields=["public_key"], name="sitekey_public_key")]
        ordering = ["-created_at"]
        verbose_name = "site key"

    def __str__(self) -> str:
        return f"{self.name} ({self.public_key[:16]}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class SlotContent(models.Model):
    """What a slot shows: the default of a slot, or a variant's."""

    headline = models.CharField(max_length=200, blank=True)
    body = models.TextField(blank=True, max_length=MAX_BODY_CHARS)
    cta_label = models.CharField(max_length=100, blank=True)
    cta_url = models.CharField(max_length=500, blank=True, validators=[validate_content_url])
    image_url = models.CharField(max_length=500, blank=True, validators=[validate_content_url])

    class Meta:
        abstract = True


CONTENT_FIELDS = ("headline", "body", "cta_label", "cta_url", "image_url")


class Slot(TenantOwnedModel, SlotContent):
    """A named place on the tenant's site (``<div data-segmentor-slot="hero">``) and its default content."""

    key = models.SlugField(max_length=64, help_text='The name in the page: data-segmentor-slot="hero".')
    name = models.CharField(max_length=100)
    active = models.BooleanField(default=True, help_text="An inactive slot keeps the page's own content.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta(TenantOwnedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "key"], name="slot_unique_key")]
        ordering = ["key"]

    def __str__(self) -> str:
        return self.name or self.key


class SlotVariant(TenantOwnedModel, SlotContent):
    """Content for the visitors of one segment or lifecycle stage; the lowest priority number wins."""

    class Target(models.TextChoices):
        SEGMENT = "segment", "Members of a segment"
        STAGE = "stage", "A lifecycle stage"

    slot = models.ForeignKey(Slot, on_delete=models.CASCADE, related_name="variants", db_index=False)
    name = models.CharField(max_length=100)
    priority = models.PositiveIntegerField(default=0, help_text="Variants are tried in this order, lowest first.")
    target = models.CharField(max_length=10, choices=Target.choices, default=Target.SEGMENT)
    target_segment = models.ForeignKey(Segment, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    target_stage = models.CharField(max_length=20, choices=LifecycleStage.choices, blank=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta(TenantOwnedModel.Meta):
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(target="segment", target_segment__isnull=False, target_stage="")
                    | Q(target="stage", target_segment__isnull=True) & ~Q(target_stage="")
                ),
                name="slotvariant_one_target",
            )
        ]
        indexes = [models.Index(fields=["tenant", "slot", "priority"], name="slotvariant_slot_priority")]
        ordering = ["priority", "id"]

    def __str__(self) -> str:
        return self.name


class Visitor(TenantOwnedModel):
    """A browser the snippet runs in (after consent), and the contact it is known as.

    ``contact`` is the anonymous contact the visitor's events created, and after identify the
    known contact; ``identified_at`` says which.
    """

    anonymous_id = models.CharField(max_length=64)
    site_key = models.ForeignKey(SiteKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    contact = unchecked_foreign_key(Contact, on_delete=models.SET_NULL, null=True, blank=True)
    identified_at = models.DateTimeField(null=True, blank=True)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()

    class Meta(TenantOwnedModel.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "anonymous_id"], name="visitor_unique_anonymous_id")]
        indexes = [models.Index(fields=["tenant", "contact"], name="visitor_contact")]

    def __str__(self) -> str:
        return f"visitor {self.pk}"


class SlotDailyStats(TenantOwnedModel):
    """Figures of one slot's variant (or its default: ``variant`` null) on one day (UTC).

    Written only with ``INSERT … ON CONFLICT DO UPDATE`` (personalization/stats.py), so
    concurrent requests add up instead of overwriting each other.
    """

    slot = models.ForeignKey(Slot, on_delete=models.CASCADE, related_name="+", db_index=False)
    variant = models.ForeignKey(SlotVariant, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    impressions = models.PositiveBigIntegerField(default=0)
    clicks = models.PositiveBigIntegerField(default=0)
    conversions = models.PositiveBigIntegerField(default=0)
    revenue = models.DecimalField(max_digits=14, decimal_places=2, default=0)

    class Meta(TenantOwnedModel.Meta):
        # Two partial unique indexes rather than one with NULLS NOT DISTINCT: the default row (no
        # variant) needs its own, and both work as ON CONFLICT targets on PostgreSQL and SQLite.
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "slot", "day"], condition=Q(variant__isnull=True), name="slotstats_unique_default"
            ),
            models.UniqueConstraint(
                fields=["tenant", "slot", "variant", "day"],
                condition=Q(variant__isnull=False),
                name="slotstats_unique_variant",
            ),
        ]
        indexes = [models.Index(fields=["tenant", "day"], name="slotstats_day")]
        ordering = ["-day", "slot_id", "variant_id"]
        verbose_name_plural = "slot daily stats"

    def __str__(self) -> str:
        return f"slot {self.slot_id} variant {self.variant_id or 'default'} on {self.day}"


class SlotClick(TenantOwnedModel):
    """One click on a slot's call to action: attribution finds a contact's last click here."""

    id = models.BigAutoField(primary_key=True)
    slot = models.ForeignKey(Slot, on_delete=models.CASCADE, related_name="+", db_index=False)
    variant = models.ForeignKey(SlotVariant, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    visitor = models.ForeignKey(Visitor, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    contact = unchecked_foreign_key(Contact, on_delete=models.SET_NULL, null=True, blank=True)
    clicked_at = models.DateTimeField()

    class Meta(TenantOwnedModel.Meta):
        indexes = [
            models.Index(fields=["tenant", "contact", "-clicked_at"], name="slotclick_contact_time"),
            models.Index(fields=["tenant", "slot", "-clicked_at"], name="slotclick_slot_time"),
        ]
        ordering = ["-clicked_at", "-id"]

    def __str__(self) -> str:
        return f"click on slot {self.slot_id} at {self.clicked_at:%Y-%m-%d %H:%M}"
