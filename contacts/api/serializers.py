"""Serializers of the contacts API: they parse and render; the services validate and write.

Contact and event rows are handed to the services untouched (after a check for
unknown keys), so the API, the CSV importer and the UI share one set of rules
(contacts/fields.py, contacts/ingest.py). The declared fields document them.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django_countries import countries
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from contacts.fields import CONTACT_FIELDS, ContactField
from contacts.ingest import MAX_BATCH_EVENTS
from contacts.models import (
    AttributeDefinition,
    Channel,
    ConsentRecord,
    ConsentState,
    ConsentStatus,
    Contact,
    LegalBasis,
    LifecycleStage,
    PrivacyRequest,
    Suppression,
)
from contacts.normalize import normalise_email, normalise_phone
from contacts.services import MAX_BULK_CONTACTS

UNKNOWN_FIELD = "Unknown field."
READ_ONLY_FIELD = "This field is read-only."


def reject_unknown_keys(data: Any, allowed: Iterable[str], read_only: Iterable[str] = ()) -> Mapping[str, Any]:
    """Return ``data`` if it is a JSON object with only ``allowed`` keys; else raise a 400 naming each key."""
    if not isinstance(data, Mapping):
        raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
    allowed, read_only = set(allowed), set(read_only)
    errors = {str(key): [READ_ONLY_FIELD if key in read_only else UNKNOWN_FIELD] for key in data if key not in allowed}
    if errors:
        raise serializers.ValidationError(errors)
    return data


class StrictSerializer(serializers.Serializer):
    """An input serializer that rejects keys it does not declare: a typo is a 400, not silently ignored."""

    def to_internal_value(self, data: Any) -> Any:
        reject_unknown_keys(data, self.fields)
        return super().to_internal_value(data)


# --- contacts ------------------------------------------------------------------------------
FIELD_HELP = {
    "email": "Normalised to lower case; upserts match on it when there is no external_id.",
    "phone": "Any international form, stored as E.164 (e.g. +4915112345678).",
    "country": "ISO 3166-1 alpha-2 code (e.g. DE); an English country name is accepted.",
    "time_zone": "IANA time zone, e.g. Europe/Berlin.",
    "birth_date": "YYYY-MM-DD.",
    "push_tokens": "Device tokens for push messages.",
}


@extend_schema_field(
    {
        "oneOf": [
            {"type": "array", "items": {"type": "string"}},
            {"type": "string", "description": "Comma- or semicolon-separated."},
        ],
        "nullable": True,
        "description": "Tags: a list, or one text of comma-separated tags; blank tags are dropped, null is none.",
    }
)
class TagsField(serializers.ListField):
    """A contact's tags field as the contact services read it (contacts.fields.tags)."""

    child = serializers.CharField(allow_blank=True)


def _input_field(field: ContactField) -> serializers.Field:
    options: dict[str, Any] = {"required": False, "help_text": FIELD_HELP.get(field.name, field.label)}
    if field.type == "date":
        return serializers.DateField(allow_null=True, **options)
    if field.type == "tags":
        return TagsField(allow_null=True, **options)
    if field.type == "tokens":  # null is an empty list; a blank token is refused (contacts.fields)
        return serializers.ListField(child=serializers.CharField(), allow_null=True, **options)
    if field.type == "email":
        return serializers.EmailField(allow_blank=True, **options)
    return serializers.CharField(max_length=field.max_length, allow_blank=True, allow_null=True, **options)


def _output_field(field: ContactField) -> serializers.Field:
    if field.type == "date":
        return serializers.DateField(read_only=True, allow_null=True)
    if field.type in ("tags", "tokens"):
        return serializers.ListField(child=serializers.CharField(), read_only=True)
    return serializers.CharField(read_only=True)  # Country renders as its code


class ContactInputSerializer(serializers.Serializer):
    """A contact's writable fields. Values are validated by the contact services."""

    attributes = serializers.DictField(
        required=False,
        allow_null=True,  # null: none given (contacts.fields.AttributeSchema.clean)
        help_text="Custom attributes by key, checked against the attribute definitions.",
    )

    def get_fields(self) -> dict[str, serializers.Field]:
        return {**{f.name: _input_field(f) for f in CONTACT_FIELDS}, **super().get_fields()}

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        return dict(reject_unknown_keys(data, *_contact_field_names()))


class EngagementSerializer(serializers.Serializer):
    first_seen_at = serializers.DateTimeField(read_only=True, allow_null=True)
    last_seen_at = serializers.DateTimeField(read_only=True, allow_null=True)
    last_engaged_at = serializers.DateTimeField(read_only=True, allow_null=True)
    order_count = serializers.IntegerField(read_only=True)
    total_revenue = serializers.DecimalField(max_digits=14, decimal_places=2, read_only=True)
    last_order_at = serializers.DateTimeField(read_only=True, allow_null=True)


class ConsentStateSerializer(serializers.Serializer):
    channel = serializers.ChoiceField(choices=Channel.choices, read_only=True)
    purpose = serializers.CharField(read_only=True)
    status = serializers.ChoiceField(choices=ConsentStatus.choices, read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)


def consent_by_contact(contact_ids: list[int]) -> dict[int, list[ConsentState]]:
    """The current consent of many contacts in one query."""
    grouped: dict[int, list[ConsentState]] = defaultdict(list)
    states = ConsentState.objects.filter(contact_id__in=contact_ids).order_by("channel", "purpose")
    for state in states:
        grouped[state.contact_id].append(state)
    return grouped


class ContactListSerializer(serializers.ListSerializer):
    """Load the consent of a whole page at once (one query, not one per contact)."""

    def to_representation(self, data: Any) -> list[Any]:
        contacts = list(data.all() if hasattr(data, "all") else data)
        assert self.child is not None
        self.child.context["consent_by_contact"] = consent_by_contact([c.pk for c in contacts])
        return super().to_representation(contacts)


class ContactSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    anonymous_id = serializers.CharField(read_only=True)
    attributes = serializers.DictField(read_only=True)
    lifecycle_stage = serializers.ChoiceField(choices=LifecycleStage.choices, read_only=True)
    lifecycle_changed_at = serializers.DateTimeField(read_only=True, allow_null=True)
    engagement = EngagementSerializer(source="*", read_only=True)
    consent = serializers.SerializerMethodField()
    erased_at = serializers.DateTimeField(read_only=True, allow_null=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    class Meta:
        list_serializer_class = ContactListSerializer

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        return {"id": fields.pop("id"), **{f.name: _output_field(f) for f in CONTACT_FIELDS}, **fields}

    @extend_schema_field(ConsentStateSerializer(many=True))
    def get_consent(self, contact: Contact) -> Any:
        grouped = self.context.get("consent_by_contact")
        states = grouped.get(contact.pk, []) if grouped is not None else consent_by_contact([contact.pk])[contact.pk]
        return ConsentStateSerializer(states, many=True).data


@functools.cache
def _contact_field_names() -> tuple[frozenset[str], frozenset[str]]:
    """The writable and the read-only names of a contact (the fields are the same for every request;
    building them per request cost more than the rest of an upsert's Python)."""
    return frozenset(ContactInputSerializer().fields), frozenset(ContactSerializer().fields)


class ContactFilterSerializer(serializers.Serializer):
    email = serializers.CharField(required=False, help_text="Exact address (matched case-insensitively).")
    external_id = serializers.CharField(required=False)
    lifecycle_stage = serializers.ChoiceField(choices=LifecycleStage.choices, required=False)
    country = serializers.CharField(required=False, help_text="ISO 3166-1 alpha-2 code, e.g. DE.")
    updated_since = serializers.DateTimeField(required=False, help_text="ISO 8601; contacts changed at or after it.")

    def validate_email(self, value: str) -> str:
        try:
            return normalise_email(value)
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.messages) from None

    def validate_country(self, value: str) -> str:
        code = value.strip().upper()
        if code not in dict(countries):
            raise serializers.ValidationError(f"{value!r} is not an ISO 3166 country code.")
        return code


# --- row lists (bulk contacts, event batches) ----------------------------------------------
class RowListField(serializers.Field):
    """A JSON array of rows passed to a service as they are: the service judges each row.

    (DRF's ListField would run a child field over every one of 10,000 rows.)
    """

    noun = "rows"
    max_rows = 0
    default_error_messages = {
        "not_a_list": "Expected a list of {noun}.",
        "empty": "Send at least one.",
        "too_many": "At most {max_rows} {noun} per request; split the list.",
    }

    def to_internal_value(self, data: Any) -> list[Any]:
        if not isinstance(data, list):
            self.fail("not_a_list", noun=self.noun)
        if not data:
            self.fail("empty")
        if len(data) > self.max_rows:
            self.fail("too_many", max_rows=f"{self.max_rows:,}", noun=self.noun)
        return data

    def to_representation(self, value: Any) -> Any:
        return value


@extend_schema_field(ContactInputSerializer(many=True))
class ContactRowsField(RowListField):
    noun = "contacts"
    max_rows = MAX_BULK_CONTACTS


class BulkContactsSerializer(StrictSerializer):
    contacts = ContactRowsField(
        help_text=f"Up to {MAX_BULK_CONTACTS:,} contacts, each keyed by external_id or email (created or updated)."
    )


class ContactRowResultSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position of the row in the request.")
    status = serializers.ChoiceField(choices=["created", "updated", "error"])
    id = serializers.IntegerField(allow_null=True, help_text="The contact's id (null for an error).")
    errors = serializers.DictField(  # type: ignore[assignment]  # a field, not Serializer.errors
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Only on errors: reasons by field.",
    )


class BulkContactsCountsSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    error = serializers.IntegerField()


class BulkContactsResultSerializer(serializers.Serializer):
    counts = BulkContactsCountsSerializer()
    results = ContactRowResultSerializer(many=True)


# --- events --------------------------------------------------------------------------------
class EventInputSerializer(serializers.Serializer):
    """One event. Name exactly one of contact_id, external_id, email or anonymous_id."""

    event = serializers.CharField(max_length=100, help_text="e.g. purchase, page_view, add_to_cart.")
    occurred_at = serializers.DateTimeField(required=False, help_text="ISO 8601; defaults to the time received.")
    properties = serializers.DictField(required=False, help_text="Up to 16 KB of JSON.")
    revenue = serializers.DecimalField(max_digits=14, decimal_places=2, required=False, coerce_to_string=False)
    currency = serializers.CharField(max_length=3, required=False, help_text="ISO 4217, e.g. EUR.")
    source = serializers.CharField(  # type: ignore[assignment]  # a field, not Field.source
        max_length=50, required=False, help_text="Defaults to api."
    )
    idempotency_key = serializers.CharField(
        max_length=200, required=False, help_text="Unique per tenant; sending it again is a no-op (duplicate)."
    )
    contact_id = serializers.IntegerField(required=False)
    external_id = serializers.CharField(max_length=200, required=False)
    email = serializers.EmailField(required=False)
    anonymous_id = serializers.CharField(max_length=200, required=False)

    def to_internal_value(self, data: Any) -> Any:
        return data  # ingest validates every event (and reports per row in a batch)


@extend_schema_field(EventInputSerializer(many=True))
class EventRowsField(RowListField):
    noun = "events"
    max_rows = MAX_BATCH_EVENTS


class EventBatchSerializer(StrictSerializer):
    events = EventRowsField(help_text=f"Up to {MAX_BATCH_EVENTS:,} events.")


class EventResultSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position of the event in the request.")
    status = serializers.ChoiceField(choices=["accepted", "duplicate", "error"])
    id = serializers.IntegerField(allow_null=True, help_text="The stored event's id (accepted only).")
    errors = serializers.DictField(  # type: ignore[assignment]  # a field, not Serializer.errors
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Only on errors: reasons by field.",
    )


class EventBatchCountsSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    duplicate = serializers.IntegerField()
    error = serializers.IntegerField()


class EventBatchResultSerializer(serializers.Serializer):
    counts = EventBatchCountsSerializer()
    results = EventResultSerializer(many=True)


class IdentifySerializer(StrictSerializer):
    anonymous_id = serializers.CharField(max_length=200, help_text="The id the visitor had while anonymous.")
    traits = serializers.DictField(
        help_text="external_id or email of the known contact, plus any contact fields to set."
    )


# --- consent and suppression ---------------------------------------------------------------
class ConsentRecordSerializer(serializers.ModelSerializer):
    class Meta:
        model = ConsentRecord
        fields = (
            "id", "channel", "purpose", "status", "legal_basis", "source", "wording", "wording_version",
            "ip_address", "user_agent", "actor", "occurred_at",
        )  # fmt: skip
        read_only_fields = fields


class ConsentChangeSerializer(StrictSerializer):
    channel = serializers.ChoiceField(choices=Channel.choices)
    purpose = serializers.CharField(max_length=50, help_text="One of the workspace's consent purposes.")
    status = serializers.ChoiceField(choices=[ConsentStatus.GRANTED, ConsentStatus.WITHDRAWN])
    legal_basis = serializers.ChoiceField(choices=LegalBasis.choices, default=LegalBasis.CONSENT)
    wording = serializers.CharField(allow_blank=True, default="", help_text="What the person was shown.")
    wording_version = serializers.CharField(max_length=50, allow_blank=True, default="")
    double_opt_in = serializers.BooleanField(
        default=False,
        help_text="Email grants only: record the consent as pending and email a confirmation link; "
        "it counts once the person confirms.",
    )
    ip_address = serializers.IPAddressField(
        required=False, allow_null=True, help_text="The person's IP address; defaults to the caller's."
    )
    user_agent = serializers.CharField(
        max_length=500, required=False, allow_blank=True, help_text="The person's browser; defaults to the caller's."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["double_opt_in"] and attrs["channel"] != Channel.EMAIL:
            raise serializers.ValidationError({"double_opt_in": ["Double opt-in is only for email."]})
        if attrs["double_opt_in"] and attrs["status"] != ConsentStatus.GRANTED:
            raise serializers.ValidationError(
                {"double_opt_in": ["Only a grant is confirmed; a withdrawal counts at once."]}
            )
        return attrs


class SuppressionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Suppression
        fields = ("id", "channel", "address_hash", "reason", "note", "created_at")
        read_only_fields = fields


MANUAL_REASONS = [r for r in Suppression.Reason.choices if r[0] != Suppression.Reason.ERASURE]


def normalise_address(channel: str, address: str) -> str:
    """The form an address is suppressed (and hashed) in: the one contacts store for the channel."""
    try:
        if channel == Channel.EMAIL:
            return normalise_email(address)
        if channel in (Channel.SMS, Channel.WHATSAPP):
            return normalise_phone(address)
    except DjangoValidationError as error:
        raise serializers.ValidationError({"address": error.messages}) from None
    return address.strip()


class SuppressionCreateSerializer(StrictSerializer):
    channel = serializers.ChoiceField(choices=Channel.choices)
    address = serializers.CharField(
        max_length=4096, help_text="Email address, phone number or push token; normalised, then stored as a hash."
    )
    reason = serializers.ChoiceField(choices=MANUAL_REASONS, default=Suppression.Reason.MANUAL)
    note = serializers.CharField(max_length=200, allow_blank=True, default="")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return {**attrs, "address": normalise_address(attrs["channel"], attrs["address"])}


class SuppressionCreatedSerializer(SuppressionSerializer):
    """The create response: the only place the (normalised) address is ever shown."""

    address = serializers.CharField(read_only=True, help_text="The normalised address (only ever shown here).")

    class Meta:
        model = Suppression
        fields: tuple[str, ...] = ("id", "channel", "address_hash", "reason", "note", "created_at", "address")
        read_only_fields = fields


class SuppressionFilterSerializer(serializers.Serializer):
    channel = serializers.ChoiceField(choices=Channel.choices, required=False)
    reason = serializers.ChoiceField(choices=Suppression.Reason.choices, required=False)
    address = serializers.CharField(required=False, help_text="Find the suppression of this address (needs channel).")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "address" not in attrs:
            return attrs
        if "channel" not in attrs:
            raise serializers.ValidationError({"channel": ["Give the channel of the address."]})
        return {**attrs, "address": normalise_address(attrs["channel"], attrs["address"])}


# --- privacy ---------------------------------------------------------------------------------
class PrivacyRequestSerializer(serializers.ModelSerializer):
    contact_id = serializers.IntegerField(source="contact_ref", read_only=True)

    class Meta:
        model = PrivacyRequest
        fields = ("id", "kind", "contact_id", "requested_by", "created_at", "completed_at")
        read_only_fields = fields


class ContactExportSerializer(serializers.Serializer):
    """Everything held on one contact (GDPR art. 15)."""

    exported_at = serializers.DateTimeField()
    profile = serializers.DictField(help_text="Every field of the contact, attributes and engagement summary.")
    events = serializers.ListField(child=serializers.DictField())
    consent = serializers.ListField(child=serializers.DictField(), help_text="The whole consent ledger.")
    lifecycle = serializers.ListField(child=serializers.DictField())
    deliveries = serializers.ListField(child=serializers.DictField())


# --- attribute definitions -------------------------------------------------------------------
class AttributeDefinitionSerializer(serializers.ModelSerializer):
    class Meta:
        model = AttributeDefinition
        fields = ("id", "key", "label", "type", "created_at")
        read_only_fields = fields


class AttributeCreateSerializer(StrictSerializer):
    key = serializers.CharField(max_length=64, help_text="Letters, digits and underscores; cannot change later.")
    label = serializers.CharField(  # type: ignore[assignment]  # a field, not Field.label
        max_length=100, required=False, allow_blank=True
    )
    type = serializers.ChoiceField(choices=AttributeDefinition.Type.choices)


class AttributeUpdateSerializer(StrictSerializer):
    key = serializers.CharField(max_length=64, required=False, help_text="Cannot change; send the current key or omit.")
    label = serializers.CharField(max_length=100, required=False)  # type: ignore[assignment]
    type = serializers.ChoiceField(
        choices=AttributeDefinition.Type.choices, required=False, help_text="Cannot change; send the current type."
    )
