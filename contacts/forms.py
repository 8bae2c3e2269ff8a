"""Forms for the contacts pages. They parse input; the services own the rules and the cleaning."""

from __future__ import annotations

import zoneinfo
from collections.abc import Sequence
from typing import Any, cast

from django import forms
from django.core.exceptions import ValidationError
from django.forms.utils import flatatt
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from contacts.fields import CONTACT_FIELDS, ContactField
from contacts.models import AttributeDefinition, Channel, ConsentStatus, Contact, LegalBasis, LifecycleStage
from contacts.normalize import normalise_email, normalise_phone
from contacts.selectors import EMAIL_CONSENT_ANY, ContactFilters, Cursor, TimeCursor, country_choices, purpose_label
from tenants.models import Tenant
from tenants.web import add_service_errors

ATTRIBUTE_PREFIX = "attr_"
# Device tokens come from the app SDKs through the API; a person does not type them.
FORM_FIELDS: tuple[ContactField, ...] = tuple(f for f in CONTACT_FIELDS if f.type != "tokens")
TIME_ZONE_CHOICES = [("", "—"), *((tz, tz) for tz in sorted(zoneinfo.available_timezones()))]
BOOLEAN_CHOICES = [("", "—"), ("true", "Yes"), ("false", "No")]


class PlainSelect(forms.Select):
    """A ``<select>`` rendered in Python.

    Django renders every option through a template (~0.1 ms each); the country and time-zone
    lists have hundreds, which made them most of the contact list's time.
    """

    def render(self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None) -> SafeString:
        final_attrs = self.build_attrs(self.attrs, {**(attrs or {}), "name": name})
        if isinstance(value, list | tuple):
            value = value[0] if value else ""
        selected = "" if value is None else str(value)
        options = format_html_join(
            "",
            '<option value="{}"{}>{}</option>',
            ((key, SELECTED if str(key) == selected else "", label) for key, label in self.choices),
        )
        return format_html("<select{}>{}</select>", flatatt(final_attrs), options)


SELECTED = mark_safe(" selected")  # a constant


def _choices(form: forms.Form, name: str, choices: list[tuple[str, str]]) -> None:
    cast(forms.ChoiceField, form.fields[name]).choices = choices


class ServiceForm(forms.Form):
    """A form whose input a service checks: shows the service's ValidationError by field where it names one."""

    def add_service_errors(self, error: ValidationError) -> None:
        add_service_errors(self, error, self.field_for_error)

    def field_for_error(self, name: str, message: str) -> str | None:
        return name if name in self.fields else None


class ContactFilterForm(forms.Form):
    """The contact list's search box, filters and page cursor (all from the query string)."""

    q = forms.CharField(required=False, max_length=200, label="Search")
    lifecycle_stage = forms.ChoiceField(required=False, label="Lifecycle stage", widget=PlainSelect)
    country = forms.ChoiceField(required=False, widget=PlainSelect)
    email_consent = forms.ChoiceField(required=False, label="Email consent", widget=PlainSelect)
    cursor = forms.CharField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args: Any, tenant: Tenant, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _choices(self, "lifecycle_stage", [("", "Any stage"), *LifecycleStage.choices])
        _choices(self, "country", [("", "Any country"), *country_choices()])
        _choices(
            self,
            "email_consent",
            [
                ("", "Any"),
                (EMAIL_CONSENT_ANY, "Granted (any purpose)"),
                *((p, f"Granted: {purpose_label(p).lower()}") for p in tenant.consent_purposes),
            ],
        )
        self.fields["q"].widget.attrs.update(
            {"type": "search", "placeholder": "Email, name, phone or external id…", "autocomplete": "off"}
        )

    def clean_cursor(self) -> Cursor | None:
        raw = self.cleaned_data.get("cursor") or ""
        return Cursor.parse(raw) if raw else None

    @property
    def filters(self) -> ContactFilters:
        data = self.cleaned_data
        return ContactFilters(
            q=data.get("q") or "",
            lifecycle_stage=data.get("lifecycle_stage") or "",
            country=data.get("country") or "",
            email_consent=data.get("email_consent") or "",
        )


class TimelineCursorForm(forms.Form):
    """A ``before`` cursor for lists ordered by time (the event timeline, the audit log)."""

    before = forms.CharField(required=False)

    def clean_before(self) -> TimeCursor | None:
        raw = self.cleaned_data.get("before") or ""
        return TimeCursor.parse(raw) if raw else None


class ContactForm(ServiceForm):
    """A contact's profile and custom attributes as text inputs; contact_update/contact_upsert clean them."""

    def __init__(
        self, *args: Any, definitions: Sequence[AttributeDefinition], contact: Contact | None = None, **kwargs: Any
    ) -> None:
        if contact is not None and "initial" not in kwargs:
            kwargs["initial"] = self.initial_for(contact, definitions)
        super().__init__(*args, **kwargs)
        for field in FORM_FIELDS:
            self.fields[field.name] = self._field_for(field)
        self.definitions = list(definitions)
        for definition in self.definitions:
            self.fields[ATTRIBUTE_PREFIX + definition.key] = self._attribute_field(definition)

    @staticmethod
    def _field_for(field: ContactField) -> forms.Field:
        attrs: dict[str, Any] = {"maxlength": field.max_length}
        if field.type == "country":
            return forms.ChoiceField(
                required=False, label=field.label, choices=[("", "—"), *country_choices()], widget=PlainSelect
            )
        if field.type == "time_zone":
            return forms.ChoiceField(required=False, label=field.label, choices=TIME_ZONE_CHOICES, widget=PlainSelect)
        if field.type == "date":
            return forms.CharField(required=False, label=field.label, widget=forms.DateInput(attrs={"type": "date"}))
        if field.type == "email":
            widget: forms.Widget = forms.EmailInput(attrs=attrs)
        elif field.type == "phone":
            widget = forms.TextInput(attrs={**attrs, "type": "tel"})
        else:
            widget = forms.TextInput(attrs=attrs)
        help_text = {
            "tags": "Separate tags with commas.",
            "phone": "International form, e.g. +4915112345678.",
        }.get(field.type, "")
        return forms.CharField(required=False, strip=True, label=field.label, widget=widget, help_text=help_text)

    @staticmethod
    def _attribute_field(definition: AttributeDefinition) -> forms.Field:
        label = f"{definition.label} ({definition.key})"
        kind = definition.type
        if kind == AttributeDefinition.Type.BOOLEAN:
            return forms.ChoiceField(required=False, label=label, choices=BOOLEAN_CHOICES)
        if kind == AttributeDefinition.Type.DATE:
            return forms.CharField(required=False, label=label, widget=forms.DateInput(attrs={"type": "date"}))
        help_text = "Separate items with commas." if kind == AttributeDefinition.Type.LIST else ""
        attrs = {"inputmode": "decimal"} if kind == AttributeDefinition.Type.NUMBER else {}
        return forms.CharField(required=False, label=label, help_text=help_text, widget=forms.TextInput(attrs=attrs))

    @staticmethod
    def initial_for(contact: Contact, definitions: Sequence[AttributeDefinition]) -> dict[str, Any]:
        initial: dict[str, Any] = {}
        for field in FORM_FIELDS:
            value = getattr(contact, field.name)
            if field.type == "tags":
                value = ", ".join(value)
            elif field.type == "country":
                value = value.code or ""
            elif field.type == "date":
                value = value.isoformat() if value else ""
            initial[field.name] = value
        for definition in definitions:
            value = contact.attributes.get(definition.key)
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, list):
                value = ", ".join(map(str, value))
            initial[ATTRIBUTE_PREFIX + definition.key] = "" if value is None else value
        return initial

    def field_for_error(self, name: str, message: str) -> str | None:
        if name == "attributes":
            # The schema reports "key: message"; show it under that attribute's input.
            key = message.split(":", 1)[0]
            return ATTRIBUTE_PREFIX + key if ATTRIBUTE_PREFIX + key in self.fields else None
        return super().field_for_error(name, message)

    @property
    def attribute_fields(self) -> list[forms.BoundField]:
        return [self[ATTRIBUTE_PREFIX + d.key] for d in self.definitions]

    def grouped_fields(self) -> list[tuple[str, list[forms.BoundField]]]:
        groups: dict[str, list[forms.BoundField]] = {}
        for field in FORM_FIELDS:
            groups.setdefault(field.group, []).append(self[field.name])
        return list(groups.items())

    def update_data(self) -> dict[str, Any]:
        """Every field, blanks included (a blank clears the value); blank attributes are removed."""
        data = {field.name: self.cleaned_data.get(field.name, "") for field in FORM_FIELDS}
        data["attributes"] = {d.key: self.cleaned_data.get(ATTRIBUTE_PREFIX + d.key) or None for d in self.definitions}
        return data

    def create_data(self) -> dict[str, Any]:
        """Only what was filled in, so an upsert onto an existing contact never blanks its other fields."""
        data = {k: v for k, v in self.update_data().items() if v not in ("", None)}
        attributes = {k: v for k, v in data.pop("attributes", {}).items() if v is not None}
        if attributes:
            data["attributes"] = attributes
        return data


class ConsentChangeForm(ServiceForm):
    channel = forms.ChoiceField(choices=Channel.choices)
    purpose = forms.ChoiceField()
    status = forms.ChoiceField(
        choices=[
            (ConsentStatus.GRANTED, "Granted"),
            (ConsentStatus.WITHDRAWN, "Withdrawn"),
            (ConsentStatus.PENDING, "Ask the person to confirm by email (double opt-in)"),
        ],
        label="Change to",
    )
    legal_basis = forms.ChoiceField(choices=LegalBasis.choices, initial=LegalBasis.CONSENT)
    wording = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="What the person agreed to, and how",
        help_text="Kept in the consent ledger as evidence, e.g. “Asked by phone on 3 May to receive the newsletter”.",
    )
    wording_version = forms.CharField(required=False, max_length=50, label="Wording version")

    def __init__(self, *args: Any, tenant: Tenant, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _choices(self, "purpose", [(p, purpose_label(p)) for p in tenant.consent_purposes])

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        status = data.get("status")
        if status in (ConsentStatus.GRANTED, ConsentStatus.PENDING) and not data.get("wording"):
            self.add_error("wording", "Say what the person agreed to: it is the evidence for this consent.")
        if status == ConsentStatus.PENDING and data.get("channel") not in (None, Channel.EMAIL):
            self.add_error("status", "Confirmation by email is for the email channel only.")
        return data


class EraseForm(forms.Form):
    confirm = forms.BooleanField(
        label="I understand that this removes the person's data for good and cannot be undone.",
        error_messages={"required": "Tick the box to confirm the erasure."},
    )


class AttributeDefinitionForm(ServiceForm):
    key = forms.CharField(
        max_length=64, help_text="Used by the API and imports, e.g. plan or loyalty_tier. It cannot be changed later."
    )
    label = forms.CharField(max_length=100)
    type = forms.ChoiceField(choices=AttributeDefinition.Type.choices)


class SuppressionForm(ServiceForm):
    channel = forms.ChoiceField(choices=Channel.choices, initial=Channel.EMAIL)
    address = forms.CharField(max_length=4096, help_text="Email address, phone number or push device token.")
    note = forms.CharField(max_length=200, required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        channel, address = data.get("channel"), (data.get("address") or "").strip()
        try:
            if channel == Channel.EMAIL:
                data["address"] = normalise_email(address)
            elif channel in (Channel.SMS, Channel.WHATSAPP):
                data["address"] = normalise_phone(address)
        except ValidationError as error:
            self.add_error("address", error)
        return data


class SuppressionLookupForm(forms.Form):
    address = forms.CharField(required=False, max_length=4096, label="Look up an address")
    cursor = forms.CharField(required=False)

    def clean_cursor(self) -> Cursor | None:
        raw = self.cleaned_data.get("cursor") or ""
        return Cursor.parse(raw) if raw else None
