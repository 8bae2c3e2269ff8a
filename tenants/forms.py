from __future__ import annotations

import zoneinfo
from typing import Any

from django import forms
from django.http import HttpRequest

from tenants.models import TENANT_SETTINGS_FIELDS, ApiKey, Tenant, User
from tenants.roles import Role
from tenants.services import tenant_create

TIME_ZONE_CHOICES = [(tz, tz) for tz in sorted(zoneinfo.available_timezones())]


class SignupForm(forms.Form):
    """Extra sign-up field: the first workspace, created with the user as owner."""

    company = forms.CharField(max_length=120, label="Company or workspace name")

    def signup(self, request: HttpRequest, user: User) -> None:
        tenant = tenant_create(name=self.cleaned_data["company"], owner=user)
        request.session["last_tenant"] = tenant.slug


class TenantCreateForm(forms.Form):
    name = forms.CharField(max_length=120, label="Workspace name")
    time_zone = forms.ChoiceField(choices=TIME_ZONE_CHOICES, initial="UTC")


class PurposesField(forms.Field):
    """Consent purposes as comma-separated keys (``marketing, newsletter``)."""

    def prepare_value(self, value: Any) -> Any:
        return ", ".join(value) if isinstance(value, list) else value

    def to_python(self, value: Any) -> list[str]:
        text = str(value or "")
        purposes = list(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
        bad = [p for p in purposes if not p.replace("_", "").isalnum() or len(p) > 50]
        if bad:
            raise forms.ValidationError(f"Use letters, digits and underscores: {', '.join(bad)}")
        if not purposes:
            raise forms.ValidationError("Keep at least one purpose.")
        return purposes


class TenantSettingsForm(forms.ModelForm[Tenant]):
    time_zone = forms.ChoiceField(choices=TIME_ZONE_CHOICES)
    consent_purposes = PurposesField(
        help_text="What people can consent to, comma-separated, e.g. marketing, newsletter, product_updates."
    )

    class Meta:
        model = Tenant
        fields = TENANT_SETTINGS_FIELDS
        widgets = {
            "quiet_hours_start": forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
            "quiet_hours_end": forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
            "postal_address": forms.Textarea(attrs={"rows": 3}),
        }
        help_texts = {
            "quiet_hours_start": "No messages are sent from this local time…",
            "quiet_hours_end": "…until this one, in each recipient's time zone.",
            "frequency_cap_messages": "At most this many marketing messages per contact…",
            "frequency_cap_days": "…within this many days.",
        }

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("frequency_cap_days") == 0:
            self.add_error("frequency_cap_days", "The window must be at least one day.")
        return cleaned


class InvitationForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Where the key is used, e.g. “Shop backend”.")
    scope = forms.ChoiceField(choices=ApiKey.Scope.choices, initial=ApiKey.Scope.READ)


class TenantDeleteForm(forms.Form):
    confirm_slug = forms.CharField(label="Type the workspace's slug to confirm")
