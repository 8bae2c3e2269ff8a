"""Every write to website personalisation: site keys, slots and variants, visitors, figures.

The web UI, the REST API and the admin (their own modules) and the public endpoints
(personalization/public.py) all write through these functions. A change of a slot, a variant or
a site key makes every cached decision of the tenant stale once it commits (versions.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.utils import timezone

from contacts.ingest import (
    ENGAGEMENT_EVENTS,
    EVENT_NAME,
    PURCHASE,
    contact_identify,
    events_ingest,
)
from contacts.models import Contact, LifecycleStage
from contacts.services import RowResult, contact_upsert
from personalization import versions
from personalization.models import (
    CONTENT_FIELDS,
    PUBLIC_KEY_PREFIX,
    SiteKey,
    Slot,
    SlotClick,
    SlotDailyStats,
    SlotVariant,
    Visitor,
    validate_origin,
)
from segments.models import Segment
from tenants.audit import Actor, audit
from tenants.facts import facts_changed
from tenants.models import Tenant

MAX_ORIGINS = 20
MAX_SLOTS_PER_TENANT = 200
MAX_VARIANTS_PER_SLOT = 50
SLOT_FIELDS = frozenset({"key", "name", "active", *CONTENT_FIELDS})
VARIANT_FIELDS = frozenset({"name", "priority", "target", "target_segment", "target_stage", "active", *CONTENT_FIELDS})
# A visitor id: what the snippet makes (a UUID), or any id of that shape.
VISITOR_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
# Events a browser may not send: they move lifecycle stages and message figures, so they come
# from the tenant's server (secret API key) or from Segmentor itself.
SERVER_ONLY_EVENTS = frozenset({PURCHASE, *ENGAGEMENT_EVENTS})
WEB_EVENT_KEYS = frozenset({"event", "properties", "occurred_at", "idempotency_key"})
MAX_WEB_EVENTS = 50
WEB_SOURCE = "web"


# --- site keys -----------------------------------------------------------------------------------
def _clean_origins(origins: Any) -> list[str]:
    if not isinstance(origins, list | tuple) or not all(isinstance(origin, str) for origin in origins):
        raise ValidationError({"allowed_origins": ["Give a list of origins, e.g. https://shop.example."]})
    cleaned = list(dict.fromkeys(origin.strip() for origin in origins if origin.strip()))
    if not cleaned:
        raise ValidationError({"allowed_origins": ["Name at least one origin the snippet runs on."]})
    if len(cleaned) > MAX_ORIGINS:
        raise ValidationError({"allowed_origins": [f"At most {MAX_ORIGINS} origins per key."]})
    errors: list[str] = []
    for origin in cleaned:
        try:
            validate_origin(origin)
        except ValidationError as error:
            errors.extend(error.messages)
    if errors:
        raise ValidationError({"allowed_origins": errors})
    return cleaned


def _clean_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValidationError({"name": ["A name is required."]})
    if len(name.strip()) > 100:
        raise ValidationError({"name": ["At most 100 characters."]})
    return name.strip()


@transaction.atomic
def site_key_create(
    *, tenant: Tenant, name: str, allowed_origins: Sequence[str], actor: Actor, require_signed_identify: bool = True
) -> SiteKey:
    """Create a public key for the snippet, limited to ``allowed_origins``."""
    site_key = SiteKey.objects.create(
        tenant=tenant,
        name=_clean_name(name),
        public_key=PUBLIC_KEY_PREFIX + secrets.token_urlsafe(24),
        allowed_origins=_clean_origins(list(allowed_origins)),
        require_signed_identify=bool(require_signed_identify),
        identify_secret=secrets.token_hex(32),
        created_by=actor.user,
    )
    audit(
        tenant=tenant,
        actor=actor,
        action="site_key.created",
        obj=site_key,
        data={"origins": len(site_key.allowed_origins)},
    )
    versions.config_changed(tenant.pk)
    return site_key


def _locked_key(site_key: SiteKey) -> SiteKey:
    return SiteKey.objects.select_for_update().get(tenant_id=site_key.tenant_id, pk=site_key.pk)


def _key_saved(site_key: SiteKey, actor: Actor, action: str, fields: list[str]) -> SiteKey:
    """Save, audit, and drop the key's cached details in every process once this commits."""
    site_key.save(update_fields=fields)
    audit(tenant=site_key.tenant, actor=actor, action=action, obj=site_key)
    versions.config_changed(site_key.tenant_id, public_keys=[site_key.public_key])
    return site_key


@transaction.atomic
def site_key_update(
    *,
    site_key: SiteKey,
    actor: Actor,
    name: str | None = None,
    allowed_origins: Sequence[str] | None = None,
    require_signed_identify: bool | None = None,
) -> SiteKey:
    """Rename a key, change its origins or whether identify must be signed (at once, in every process)."""
    site_key = _locked_key(site_key)
    if name is not None:
        site_key.name = _clean_name(name)
    if allowed_origins is not None:
        site_key.allowed_origins = _clean_origins(list(allowed_origins))
    if require_signed_identify is not None:
        site_key.require_signed_identify = bool(require_signed_identify)
    return _key_saved(site_key, actor, "site_key.updated", ["name", "allowed_origins", "require_signed_identify"])


@transaction.atomic
def site_key_revoke(*, site_key: SiteKey, actor: Actor) -> SiteKey:
    """Revoke a key: the snippet using it gets 401 from the next request on."""
    site_key = _locked_key(site_key)
    if site_key.revoked_at is not None:
        return site_key
    site_key.revoked_at = timezone.now()
    return _key_saved(site_key, actor, "site_key.revoked", ["revoked_at"])


@transaction.atomic
def site_key_rotate_identify_secret(*, site_key: SiteKey, actor: Actor) -> SiteKey:
    """Replace the identify secret: signatures made with the old one stop working at once."""
    site_key = _locked_key(site_key)
    site_key.identify_secret = secrets.token_hex(32)
    return _key_saved(site_key, actor, "site_key.secret_rotated", ["identify_secret"])


def identify_signature(*, secret: str, user_id: str) -> str:
    """The signature the tenant's server puts into the page: hex HMAC-SHA256 of the user id.

    The user id is the external id, or the email address (trimmed, lower-case) when there is none.
    """
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


# --- slots and variants ----------------------------------------------------------------------------
def _unknown_fields(data: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValidationError({"non_field_errors": [f"Unknown field(s): {', '.join(unknown)}."]})


def _full_clean(obj: Slot | SlotVariant, exclude: list[str]) -> None:
    obj.full_clean(exclude=exclude, validate_unique=False, validate_constraints=False)


@transaction.atomic
def slot_create(*, tenant: Tenant, actor: Actor, data: Mapping[str, Any]) -> Slot:
    """Create a slot (key, name, default content, active)."""
    _unknown_fields(data, SLOT_FIELDS)
    slot = Slot(tenant=tenant)
    for name, value in data.items():
        setattr(slot, name, value)
    if not slot.name:
        slot.name = slot.key
    _full_clean(slot, ["tenant"])
    if Slot.objects.filter(tenant=tenant, key=slot.key).exists():
        raise ValidationError({"key": [f"A slot with the key {slot.key!r} exists already."]})
    if Slot.objects.filter(tenant=tenant).count() >= MAX_SLOTS_PER_TENANT:
        raise ValidationError(f"At most {MAX_SLOTS_PER_TENANT} slots per workspace.")
    slot.save()
    audit(tenant=tenant, actor=actor, action="slot.created", obj=slot, data={"key": slot.key})
    versions.config_changed(tenant.pk)
    return slot


@transaction.atomic
def slot_update(*, slot: Slot, actor: Actor, data: Mapping[str, Any]) -> Slot:
    """Change a slot's key, name, default content or whether it is active (a partial update)."""
    _unknown_fields(data, SLOT_FIELDS)
    slot = Slot.objects.select_for_update().get(tenant_id=slot.tenant_id, pk=slot.pk)
    for name, value in data.items():
        setattr(slot, name, value)
    _full_clean(slot, ["tenant"])
    if Slot.objects.filter(tenant_id=slot.tenant_id, key=slot.key).exclude(pk=slot.pk).exists():
        raise ValidationError({"key": [f"A slot with the key {slot.key!r} exists already."]})
    slot.save()
    audit(tenant=slot.tenant, actor=actor, action="slot.updated", obj=slot, data={"fields": sorted(data)})
    versions.config_changed(slot.tenant_id)
    return slot


@transaction.atomic
def slot_delete(*, slot: Slot, actor: Actor) -> None:
    """Delete a slot with its variants and figures (the page keeps its own content)."""
    audit(tenant=slot.tenant, actor=actor, action="slot.deleted", obj=slot, data={"key": slot.key})
    versions.config_changed(slot.tenant_id)
    slot.delete()


def _apply_target(variant: SlotVariant) -> None:
    """A target names only what it uses; check the segment belongs to the slot's tenant."""
    if variant.target == SlotVariant.Target.SEGMENT:
        variant.target_stage = ""
        if variant.target_segment_id is None:
            raise ValidationError({"target_segment": ["Choose the segment this variant is for."]})
        if not Segment.objects.filter(tenant_id=variant.tenant_id, pk=variant.target_segment_id).exists():
            raise ValidationError({"target_segment": ["No such segment."]})
    elif variant.target == SlotVariant.Target.STAGE:
        variant.target_segment = None
        if variant.target_stage not in LifecycleStage.values:
            raise ValidationError({"target_stage": ["Choose the lifecycle stage this variant is for."]})
    else:
        raise ValidationError({"target": [f"Choose one of: {', '.join(SlotVariant.Target.values)}."]})


def _assign(variant: SlotVariant, data: Mapping[str, Any]) -> None:
    for name, value in data.items():
        if name == "target_segment" and value is not None and not isinstance(value, Segment):
            raise ValidationError({"target_segment": ["Expected a segment."]})
        setattr(variant, name, value)


def _locked_slot(slot: Slot) -> Slot:
    # One writer of a slot's variants at a time: priorities are renumbered as a whole.
    return Slot.objects.select_for_update().get(tenant_id=slot.tenant_id, pk=slot.pk)


def _renumber(slot: Slot, ordered: list[SlotVariant]) -> None:
    for position, variant in enumerate(ordered):
        if variant.priority != position:
            SlotVariant.objects.filter(tenant_id=slot.tenant_id, pk=variant.pk).update(priority=position)
            variant.priority = position


def _ordered_variants(slot: Slot) -> list[SlotVariant]:
    return list(SlotVariant.objects.filter(tenant_id=slot.tenant_id, slot=slot).order_by("priority", "id"))


@transaction.atomic
def variant_add(*, slot: Slot, actor: Actor, data: Mapping[str, Any]) -> SlotVariant:
    """Add a variant; without a ``priority`` it goes last, with one it goes to that place."""
    _unknown_fields(data, VARIANT_FIELDS)
    slot = _locked_slot(slot)
    existing = _ordered_variants(slot)
    if len(existing) >= MAX_VARIANTS_PER_SLOT:
        raise ValidationError(f"At most {MAX_VARIANTS_PER_SLOT} variants per slot.")
    variant = SlotVariant(tenant_id=slot.tenant_id, slot=slot)
    _assign(variant, data)
    _apply_target(variant)
    _full_clean(variant, ["tenant", "slot", "target_segment"])
    position = len(existing) if data.get("priority") is None else min(max(int(variant.priority), 0), len(existing))
    variant.priority = position
    variant.save()
    existing.insert(position, variant)
    _renumber(slot, existing)
    audit(tenant=slot.tenant, actor=actor, action="slot_variant.created", obj=variant, data={"slot_id": slot.pk})
    versions.config_changed(slot.tenant_id)
    return variant


@transaction.atomic
def variant_update(*, variant: SlotVariant, actor: Actor, data: Mapping[str, Any]) -> SlotVariant:
    """Change a variant's content, target or whether it is active (a partial update; use
    ``variant_move`` to change its place)."""
    _unknown_fields(data, VARIANT_FIELDS - {"priority"})
    slot = _locked_slot(variant.slot)
    variant = SlotVariant.objects.get(tenant_id=slot.tenant_id, pk=variant.pk)
    _assign(variant, data)
    _apply_target(variant)
    _full_clean(variant, ["tenant", "slot", "target_segment"])
    variant.save()
    audit(tenant=slot.tenant, actor=actor, action="slot_variant.updated", obj=variant, data={"fields": sorted(data)})
    versions.config_changed(slot.tenant_id)
    return variant


@transaction.atomic
def variant_move(*, variant: SlotVariant, position: int, actor: Actor) -> SlotVariant:
    """Move a variant to ``position`` (0 is tried first); the others keep their order."""
    slot = _locked_slot(variant.slot)
    ordered = _ordered_variants(slot)
    current = next((v for v in ordered if v.pk == variant.pk), None)
    if current is None:
        raise ValidationError("No such variant.")
    if not isinstance(position, int) or isinstance(position, bool):
        raise ValidationError({"position": ["Expected a whole number."]})
    ordered.remove(current)
    ordered.insert(min(max(position, 0), len(ordered)), current)
    _renumber(slot, ordered)
    audit(
        tenant=slot.tenant, actor=actor, action="slot_variant.moved", obj=current, data={"priority": current.priority}
    )
    versions.config_changed(slot.tenant_id)
    return current


@transaction.atomic
def variant_delete(*, variant: SlotVariant, actor: Actor) -> None:
    """Delete a variant with its figures (deactivate it to keep them); the others close up."""
    slot = _locked_slot(variant.slot)
    audit(tenant=slot.tenant, actor=actor, action="slot_variant.deleted", obj=variant, data={"slot_id": slot.pk})
    SlotVariant.objects.filter(tenant_id=slot.tenant_id, pk=variant.pk).delete()
    _renumber(slot, _ordered_variants(slot))
    versions.config_changed(slot.tenant_id)


# --- figures ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SlotFigures:
    """What to add to one row of SlotDailyStats (``variant_id`` None: the slot's default)."""

    slot_id: int
    variant_id: int | None
    impressions: int = 0
    clicks: int = 0
    conversions: int = 0
    revenue: Decimal = Decimal(0)


def slot_stats_add(*, tenant_id: int, day: dt.date, figures: Iterable[SlotFigures]) -> None:
    """Add figures to the day's rows with ``INSERT … ON CONFLICT DO UPDATE`` (never read-modify-write).

    Concurrent writers add up; rows are written in (slot, variant) order so two writers never wait
    for each other in opposite orders.
    """
    merged: dict[tuple[int, int | None], list[Any]] = {}
    for f in figures:
        row = merged.setdefault((f.slot_id, f.variant_id), [0, 0, 0, Decimal(0)])
        row[0] += f.impressions
        row[1] += f.clicks
        row[2] += f.conversions
        row[3] += Decimal(f.revenue)
    table = SlotDailyStats._meta.db_table
    for with_variant in (False, True):
        rows = sorted(
            ((slot_id, variant_id, *values) for (slot_id, variant_id), values in merged.items()
             if (variant_id is not None) == with_variant),
            key=lambda r: (r[0], r[1] or 0),
        )  # fmt: skip
        if not rows:
            continue
        target = "(tenant_id, slot_id, variant_id, day) WHERE variant_id IS NOT NULL" if with_variant else (
            "(tenant_id, slot_id, day) WHERE variant_id IS NULL"
        )  # fmt: skip
        values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(rows))
        params: list[Any] = []
        for slot_id, variant_id, impressions, clicks, conversions, revenue in rows:
            params += [tenant_id, slot_id, variant_id, day, impressions, clicks, conversions, str(revenue)]
        sql = f"""
            INSERT INTO {table} (tenant_id, slot_id, variant_id, day, impressions, clicks, conversions, revenue)
            VALUES {values}
            ON CONFLICT {target} DO UPDATE SET
                impressions = {table}.impressions + excluded.impressions,
                clicks = {table}.clicks + excluded.clicks,
                conversions = {table}.conversions + excluded.conversions,
                revenue = {table}.revenue + excluded.revenue
        """
        with connection.cursor() as cursor:
            cursor.execute(sql, params)


def slot_impressions_record(*, tenant_id: int, shown: Iterable[tuple[int, int | None]], day: dt.date) -> None:
    """Count one impression for each (slot id, variant id or None) shown."""
    slot_stats_add(
        tenant_id=tenant_id,
        day=day,
        figures=[SlotFigures(slot_id, variant_id, impressions=1) for slot_id, variant_id in shown],
    )


@transaction.atomic
def slot_click_record(
    *, tenant_id: int, slot: Slot, variant: SlotVariant | None, visitor: Visitor | None, now: dt.datetime | None = None
) -> SlotClick:
    """Record a click on a slot's call to action: a SlotClick row (for attribution) and the day's count."""
    from personalization.attribution import has_slot_clicks

    now = now or timezone.now()
    if not has_slot_clicks(tenant_id):  # the tenant's first click: attribution has something to credit now
        facts_changed(tenant_id)
    click = SlotClick.objects.create(
        tenant_id=tenant_id,
        slot=slot,
        variant=variant,
        visitor=visitor,
        contact_id=visitor.contact_id if visitor is not None else None,
        clicked_at=now,
    )
    slot_stats_add(
        tenant_id=tenant_id, day=now.date(), figures=[SlotFigures(slot.pk, variant.pk if variant else None, clicks=1)]
    )
    return click


# --- visitors --------------------------------------------------------------------------------------
def clean_visitor_id(value: Any) -> str:
    if not isinstance(value, str) or not VISITOR_ID.match(value):
        raise ValidationError(
            {"visitor_id": ["Expected the visitor id the snippet made (8-64 letters, digits, - or _)."]}
        )
    return value


@dataclass(frozen=True)
class VisitorRef:
    id: int
    contact_id: int | None
    identified: bool


def visitor_touch(*, tenant_id: int, site_key_id: int, anonymous_id: str, now: dt.datetime | None = None) -> VisitorRef:
    """Create the visitor or note that it was seen now (one upsert); return its id and contact."""
    now = now or timezone.now()
    table = Visitor._meta.db_table
    sql = f"""
        INSERT INTO {table}
            (tenant_id, anonymous_id, site_key_id, contact_id, identified_at, first_seen_at, last_seen_at)
        VALUES (%s, %s, %s, NULL, NULL, %s, %s)
        ON CONFLICT (tenant_id, anonymous_id) DO UPDATE SET last_seen_at = excluded.last_seen_at,
            site_key_id = excluded.site_key_id
        RETURNING id, contact_id, identified_at
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [tenant_id, anonymous_id, site_key_id, now, now])
        visitor_id, contact_id, identified_at = cursor.fetchone()
    return VisitorRef(int(visitor_id), contact_id, identified_at is not None)


def _link_anonymous_contact(tenant_id: int, visitor: VisitorRef, anonymous_id: str) -> None:
    """Point a visitor at the anonymous contact its first events created."""
    contact_id = (
        Contact.objects.filter(tenant_id=tenant_id, anonymous_id=anonymous_id).values_list("pk", flat=True).first()
    )
    if contact_id is not None and contact_id != visitor.contact_id:
        Visitor.objects.filter(tenant_id=tenant_id, pk=visitor.id, identified_at__isnull=True).update(
            contact_id=contact_id
        )
        versions.visitors_changed(tenant_id, [anonymous_id])


def _clean_web_event(index: int, data: Any, errors: dict[str, list[str]]) -> dict[str, Any] | None:
    if not isinstance(data, dict):
        errors[f"events[{index}]"] = ["Each event must be a JSON object."]
        return None
    unknown = sorted(set(map(str, data)) - WEB_EVENT_KEYS)
    if unknown:
        errors[f"events[{index}]"] = [
            f"Unknown field(s): {', '.join(unknown)}. "
            "A browser sends only event, properties, occurred_at and idempotency_key."
        ]
        return None
    name = data.get("event")
    if not isinstance(name, str) or not EVENT_NAME.match(name):
        errors[f"events[{index}].event"] = ["Name the event: 1-100 letters, digits, spaces or _ . : -"]
        return None
    if name in SERVER_ONLY_EVENTS:
        errors[f"events[{index}].event"] = [f"{name!r} may only be sent from your server, with a secret API key."]
        return None
    return data


def web_events_track(*, tenant: Tenant, site_key: SiteKey, anonymous_id: str, events: Sequence[Any]) -> list[RowResult]:
    """Store a browser's events for its visitor (never for another contact); return one result per event.

    The visitor is the only identity a browser can name: events go to its identified contact, or
    to the anonymous contact of its visitor id. Idempotency keys are namespaced by visitor, so a
    page cannot swallow a server event by sending its key first.
    """
    anonymous_id = clean_visitor_id(anonymous_id)
    if not isinstance(events, list | tuple) or not events:
        raise ValidationError({"events": ["Send a non-empty list of events."]})
    if len(events) > MAX_WEB_EVENTS:
        raise ValidationError({"events": [f"At most {MAX_WEB_EVENTS} events per request."]})
    errors: dict[str, list[str]] = {}
    cleaned = [_clean_web_event(index, data, errors) for index, data in enumerate(events)]
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        visitor = visitor_touch(tenant_id=tenant.pk, site_key_id=site_key.pk, anonymous_id=anonymous_id)
        if visitor.identified and visitor.contact_id is not None:
            reference: dict[str, Any] = {"contact_id": visitor.contact_id}
        else:
            reference = {"anonymous_id": anonymous_id}
        rows = []
        for data in cleaned:
            assert data is not None
            row = {**data, **reference}
            key = data.get("idempotency_key")
            if key not in (None, ""):
                row["idempotency_key"] = f"web:{anonymous_id}:{key}"[:200] if isinstance(key, str) else key
            rows.append(row)
        results = events_ingest(tenant=tenant, events=rows, source=WEB_SOURCE)
        if not visitor.identified:
            _link_anonymous_contact(tenant.pk, visitor, anonymous_id)
        bad = {
            f"events[{r.index}].{field}": messages
            for r in results
            if r.status == "error"
            for field, messages in r.errors.items()
        }
        if bad:
            # All or nothing (the block rolls back): the browser fixes nothing, so a partial batch would
            # only hide the error.
            raise ValidationError(bad)
    return results


@transaction.atomic
def visitor_identify(
    *,
    tenant: Tenant,
    site_key: SiteKey,
    anonymous_id: str,
    external_id: str = "",
    email: str = "",
    signature: str = "",
) -> Contact:
    """Tie a visitor to the contact with this external id or email (created if new).

    With ``require_signed_identify`` (the default) the page must carry the HMAC-SHA256 of the user id
    made on the tenant's server with the key's identify secret; a signature given is always checked.
    The visitor's anonymous contact and its events merge into the known contact.
    """
    anonymous_id = clean_visitor_id(anonymous_id)
    external_id = (external_id or "").strip() if isinstance(external_id, str) else external_id
    email = (email or "").strip().lower() if isinstance(email, str) else email
    if not isinstance(external_id, str) or not isinstance(email, str):
        raise ValidationError({"external_id": ["Expected text."]})
    if bool(external_id) == bool(email):
        raise ValidationError({"external_id": ["Give exactly one of external_id or email."]})
    if len(external_id) > 200 or len(email) > 254:
        raise ValidationError({"external_id" if external_id else "email": ["Too long."]})
    if not isinstance(signature, str) or len(signature) > 128:
        raise ValidationError({"signature": ["Expected the hex HMAC-SHA256 your server made."]})
    user_id = external_id or email
    if signature or site_key.require_signed_identify:
        if not signature:
            raise PermissionDenied("This site key requires a signed identify: sign the user id on your server.")
        expected = identify_signature(secret=site_key.identify_secret, user_id=user_id)
        if not hmac.compare_digest(expected, signature.strip().lower()):
            raise PermissionDenied("The signature does not match this user id.")
    traits = {"external_id": external_id} if external_id else {"email": email}
    actor = Actor.system(f"site key {site_key.name} ({site_key.public_key[:16]}…)")
    holder = Contact.objects.filter(tenant=tenant, anonymous_id=anonymous_id).only("external_id", "email").first()
    if holder is not None and (holder.external_id or holder.email):
        # The visitor id already belongs to a known person (a shared browser, a second login):
        # merging would fold two people into one, so only the visitor moves to the new contact.
        known, _ = contact_upsert(tenant=tenant, data=traits)
    else:
        known = contact_identify(tenant=tenant, anonymous_id=anonymous_id, traits=traits, actor=actor)
    now = timezone.now()
    visitor_touch(tenant_id=tenant.pk, site_key_id=site_key.pk, anonymous_id=anonymous_id, now=now)
    Visitor.objects.filter(tenant=tenant, anonymous_id=anonymous_id).update(contact_id=known.pk, identified_at=now)
    versions.visitors_changed(tenant.pk, [anonymous_id])
    return known


def visitors_follow_merge(*, tenant_id: int, source_id: int, target_id: int) -> None:
    """A contact merged into another (inside the merge's transaction): its visitors follow, and their
    cached decisions go stale once it commits (they were made for the merged-away contact)."""
    visitors = Visitor.objects.filter(tenant_id=tenant_id, contact_id=source_id)
    anonymous_ids = list(visitors.values_list("anonymous_id", flat=True))
    visitors.update(contact_id=target_id)
    versions.visitors_changed(tenant_id, anonymous_ids)


def visitors_forget_stale(*, tenant_id: int, now: dt.datetime | None = None, batch: int = 5_000) -> int:
    """Delete the tenant's visitors not seen for ``PERSONALIZATION_VISITOR_RETENTION_DAYS``; return how many.

    A visitor row is a browser's id and the contact it was known as: kept only while the browser comes
    back (13 months by default, as long as a consent to trackers lasts). Their clicks keep their contact;
    a browser that returns later starts as a new visitor. Deleted in batches, so no long lock is held."""
    cutoff = (now or timezone.now()) - dt.timedelta(days=settings.PERSONALIZATION_VISITOR_RETENTION_DAYS)
    stale = Visitor.objects.filter(tenant_id=tenant_id, last_seen_at__lt=cutoff)
    deleted = 0
    while ids := list(stale.order_by("pk").values_list("pk", flat=True)[:batch]):
        Visitor.objects.filter(tenant_id=tenant_id, pk__in=ids).delete()
        deleted += len(ids)
    return deleted


def visitors_forget_contact(*, tenant_id: int, contact_id: int) -> None:
    """An erased contact: its visitors and the clicks' link to it go (inside the erasure's transaction)."""
    anonymous_ids = list(
        Visitor.objects.filter(tenant_id=tenant_id, contact_id=contact_id).values_list("anonymous_id", flat=True)
    )
    SlotClick.objects.filter(tenant_id=tenant_id, contact_id=contact_id).update(contact_id=None, visitor=None)
    Visitor.objects.filter(tenant_id=tenant_id, contact_id=contact_id).delete()
    versions.visitors_changed(tenant_id, anonymous_ids)
