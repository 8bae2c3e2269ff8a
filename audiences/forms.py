"""Forms of the audience pages: a destination, and what to download. The services judge the values."""

from __future__ import annotations

from typing import Any, cast

from django import forms

from audiences.models import AudienceDestination, AudienceFormat, ExportKind
from audiences.services import MIN_INTERVAL_MINUTES, MIN_SECRET_LENGTH
from segments.models import Segment
from tenants.models import Tenant


def _tenant_segments(tenant: Tenant) -> Any:
    return Segment.objects.filter(tenant=tenant).order_by("name")


class DestinationForm(forms.Form):
    name = forms.CharField(max_length=120)
    segment = forms.ModelChoiceField(queryset=Segment.all_tenants.none(), empty_label="Choose a segment…")
    kind = forms.ChoiceField(choices=ExportKind.choices, initial=ExportKind.AUDIENCE, label="Export")
    format = forms.ChoiceField(choices=AudienceFormat.choices, initial=AudienceFormat.GOOGLE)
    url = forms.CharField(
        max_length=500, label="URL", help_text="The HTTPS endpoint that receives the file (signed, in parts)."
    )
    secret = forms.CharField(
        required=False,
        max_length=500,
        strip=True,
        label="Signing secret",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=f"HMAC-SHA256 key, at least {MIN_SECRET_LENGTH} characters. Write-only.",
    )
    schedule = forms.ChoiceField(choices=AudienceDestination.Schedule.choices, widget=forms.RadioSelect)
    # Bounds are the service's to check, so every refusal shows at once (audiences.services).
    interval_minutes = forms.IntegerField(
        required=False, label="Every (minutes)", help_text=f"At least {MIN_INTERVAL_MINUTES}, at most 31 days."
    )
    crontab = forms.CharField(
        required=False,
        max_length=100,
        help_text="minute hour day-of-month month day-of-week, e.g. “0 6 * * *” for 06:00 every day.",
    )
    enabled = forms.BooleanField(required=False, initial=True, label="On (runs on its schedule)")

    def __init__(self, *args: Any, tenant: Tenant, editing: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ModelChoiceField, self.fields["segment"]).queryset = _tenant_segments(tenant)
        if editing:
            self.fields["secret"].help_text = "Write-only: leave empty to keep the stored secret."

    @staticmethod
    def initial_for(destination: AudienceDestination) -> dict[str, Any]:
        return {
            "name": destination.name, "segment": destination.segment_id, "kind": destination.kind,
            "format": destination.format, "url": destination.url, "schedule": destination.schedule,
            "interval_minutes": destination.interval_minutes, "crontab": destination.crontab,
            "enabled": destination.enabled,
        }  # fmt: skip

    def service_data(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        if not data.get("secret"):
            data.pop("secret", None)
        return data


class DownloadForm(forms.Form):
    """The query of a download: which format and which kind of export."""

    format = forms.ChoiceField(choices=AudienceFormat.choices, initial=AudienceFormat.GOOGLE, required=False)
    kind = forms.ChoiceField(choices=ExportKind.choices, initial=ExportKind.AUDIENCE, required=False)

    def clean_format(self) -> str:
        return self.cleaned_data.get("format") or AudienceFormat.GOOGLE

    def clean_kind(self) -> str:
        return self.cleaned_data.get("kind") or ExportKind.AUDIENCE


class SegmentChoiceForm(forms.Form):
    """Pick the segment to download or to describe as a lookalike seed."""

    segment = forms.ModelChoiceField(queryset=Segment.all_tenants.none(), empty_label="Choose a segment…")
    format = forms.ChoiceField(choices=AudienceFormat.choices, initial=AudienceFormat.GOOGLE, required=False)

    def __init__(self, *args: Any, tenant: Tenant, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ModelChoiceField, self.fields["segment"]).queryset = _tenant_segments(tenant)
