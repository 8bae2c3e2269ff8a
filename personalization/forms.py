"""Forms of the personalisation pages: they parse; personalization/services.py judges and writes.

Content fields (headline, body, CTA label and link, image URL) are taken from the models, so their
lengths and the link check (``validate_content_url``) are the models' own.
"""

from __future__ import annotations

import re
from typing import Any

from django import forms

from analytics.selectors import DEFAULT_PERIOD_DAYS
from analytics.views import PeriodForm
from contacts.models import LifecycleStage
from personalization.figures import FigurePeriod
from personalization.models import CONTENT_FIELDS, Slot, SlotVariant
from segments.models import Segment
from tenants.models import Tenant

MAX_ORIGINS_TEXT = 4000


def _content_fields() -> dict[str, forms.Field]:
    fields: dict[str, Any] = forms.fields_for_model(
        Slot,
        fields=CONTENT_FIELDS,
        widgets={"body": forms.Textarea(attrs={"rows": 4})},
        labels={"cta_label": "Button label", "cta_url": "Button link", "image_url": "Image URL"},
        help_texts={
            "cta_url": "https://shop.example/sale or a path on your site (/sale).",
            "image_url": "https://… or a path on your site.",
        },
    )
    return fields


def split_origins(text: str) -> list[str]:
    """One origin a line (commas and spaces separate too); blank lines dropped."""
    return [part for part in re.split(r"[\s,]+", text or "") if part]


class OriginsField(forms.CharField):
    widget = forms.Textarea(attrs={"rows": 3, "placeholder": "https://shop.example\nhttps://www.shop.example"})

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("label", "Allowed origins")
        kwargs.setdefault("help_text", "One a line: scheme and host (and port) exactly as the browser shows them.")
        super().__init__(max_length=MAX_ORIGINS_TEXT, **kwargs)

    def prepare_value(self, value: Any) -> Any:
        return "\n".join(value) if isinstance(value, list | tuple) else value


class SiteKeyForm(forms.Form):
    """A new site key: its name and origins, and whether identify must be signed."""

    name = forms.CharField(max_length=100)
    allowed_origins = OriginsField()
    require_signed_identify = forms.BooleanField(
        required=False,
        initial=True,
        label="Require signed identify",
        help_text="Your server signs the user id with the key's identify secret; unsigned identify calls are refused.",
    )

    def origins(self) -> list[str]:
        return split_origins(self.cleaned_data["allowed_origins"])


class SiteKeyEditForm(forms.Form):
    name = forms.CharField(max_length=100)
    allowed_origins = OriginsField()

    def origins(self) -> list[str]:
        return split_origins(self.cleaned_data["allowed_origins"])


class SlotForm(forms.Form):
    """A slot: its key in the page, its name, whether it is active, and its default content."""

    key = forms.SlugField(
        max_length=64, label="Key", help_text='The name in the page: <div data-segmentor-slot="hero">.'
    )
    name = forms.CharField(max_length=100, required=False, help_text="For you; the key when blank.")
    active = forms.BooleanField(
        required=False, initial=True, help_text="An inactive slot keeps the page's own content."
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields.update(_content_fields())

    @staticmethod
    def initial_for(slot: Slot) -> dict[str, Any]:
        return {name: getattr(slot, name) for name in ("key", "name", "active", *CONTENT_FIELDS)}

    def data_for_service(self) -> dict[str, Any]:
        return dict(self.cleaned_data)


class VariantForm(forms.Form):
    """A variant: whom it is for (a segment or a lifecycle stage), whether it is active, its content."""

    name = forms.CharField(max_length=100)
    target = forms.ChoiceField(
        choices=SlotVariant.Target.choices, widget=forms.RadioSelect, initial=SlotVariant.Target.SEGMENT, label="For"
    )
    target_segment = forms.ModelChoiceField(
        queryset=Segment.all_tenants.none(), required=False, label="Segment", empty_label="— choose a segment —"
    )
    target_stage = forms.ChoiceField(
        choices=[("", "— choose a stage —"), *LifecycleStage.choices], required=False, label="Lifecycle stage"
    )
    active = forms.BooleanField(required=False, initial=True)

    def __init__(self, *args: Any, tenant: Tenant, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["target_segment"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = Segment.objects.filter(tenant=tenant).order_by("name")
        self.fields.update(_content_fields())

    @staticmethod
    def initial_for(variant: SlotVariant) -> dict[str, Any]:
        names = ("name", "target", "target_segment", "target_stage", "active", *CONTENT_FIELDS)
        return {name: getattr(variant, name) for name in names}

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        target = data.get("target")
        if (
            target == SlotVariant.Target.SEGMENT
            and data.get("target_segment") is None
            and "target_segment" not in self.errors
        ):
            self.add_error("target_segment", "Choose the segment this variant is for.")
        if target == SlotVariant.Target.STAGE and not data.get("target_stage"):
            self.add_error("target_stage", "Choose the lifecycle stage this variant is for.")
        return data

    def data_for_service(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        if data["target"] == SlotVariant.Target.SEGMENT:
            data["target_stage"] = ""
        else:
            data["target_segment"] = None
        return data


class PreviewForm(forms.Form):
    """Whom to preview as: a search (email, external id, name) and the chosen contact's id."""

    q = forms.CharField(
        required=False, max_length=254, label="Find a contact",
        widget=forms.TextInput(attrs={"placeholder": "Email, external id or last name", "autocomplete": "off"}),
    )  # fmt: skip
    contact = forms.IntegerField(required=False, min_value=1, max_value=2**63 - 1, widget=forms.HiddenInput)


class FigurePeriodForm(PeriodForm):
    """The analytics pages' period (last 7, 30, 90 or 365 days, or two dates), in UTC days as slots count them."""

    def figure_period(self) -> FigurePeriod:
        """The chosen period; the last 30 days when nothing (or nothing valid) was chosen."""
        if self.is_valid():
            if self.cleaned_data.get("start") and self.cleaned_data.get("end"):
                return FigurePeriod(self.cleaned_data["start"], self.cleaned_data["end"])
            if self.cleaned_data.get("days"):
                return FigurePeriod.last_days(self.cleaned_data["days"])
        return FigurePeriod.last_days(DEFAULT_PERIOD_DAYS)
