"""Forms for the segment pages. They parse input; segments/services.py owns the rules."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from segments.models import Segment
from segments.services import MAX_STATIC_IDS

# A paste of identifiers is one request; bigger lists belong in the API or an import.
MAX_PASTED_LINES = 10_000
MAX_RULES_CHARS = 200_000


EMPTY_RULES: dict[str, Any] = {"all": []}


def rules_text(rules: Any) -> str:
    """The rule tree as the JSON textarea shows it."""
    return json.dumps(rules if rules else EMPTY_RULES, indent=2, ensure_ascii=False)


class SegmentForm(forms.Form):
    """Name, description, kind and the rule tree (JSON: the builder writes it, or a person does)."""

    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    kind = forms.ChoiceField(choices=Segment.Kind.choices, initial=Segment.Kind.DYNAMIC, widget=forms.RadioSelect)
    rules = forms.CharField(
        required=False,
        label="Rules (JSON)",
        max_length=MAX_RULES_CHARS,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 14, "spellcheck": "false", "class": "rules-json"}),
        help_text='A rule tree such as {"all": [{"type": "field", "field": "country", "op": "eq", "value": "DE"}]}.',
    )

    def __init__(self, *args: Any, segment: Segment | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.segment = segment
        if segment is not None:
            # A segment keeps its kind: its members came either from rules or from a list.
            self.fields["kind"].disabled = True
            self.fields["kind"].initial = segment.kind

    def clean_rules(self) -> Any:
        text = (self.cleaned_data.get("rules") or "").strip()
        if not text:
            return dict(EMPTY_RULES)
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise ValidationError(
                "This is not valid JSON (line %(line)s, column %(column)s: %(message)s).",
                code="invalid_json",
                params={"line": error.lineno, "column": error.colno, "message": error.msg},
            ) from None
        except RecursionError:  # nested deeper than Python's decoder goes (not a ValueError)
            raise ValidationError("This JSON nests too deep.", code="invalid_json") from None


class MembersCursorForm(forms.Form):
    """Where the members table continues: below this contact id."""

    before = forms.IntegerField(required=False, min_value=1)


class StaticMembersForm(forms.Form):
    """Add or remove members of a static segment: pasted emails or external ids, or one contact."""

    ACTIONS = (("add", "Add"), ("remove", "Remove"))

    action = forms.ChoiceField(choices=ACTIONS)
    identifiers = forms.CharField(
        required=False,
        label="Emails or external ids, one per line (or separated by commas)",
        widget=forms.Textarea(attrs={"rows": 5, "spellcheck": "false"}),
    )
    contact = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def clean_identifiers(self) -> list[str]:
        seen: dict[str, None] = {}
        for line in (self.cleaned_data.get("identifiers") or "").splitlines():
            for part in line.split(","):
                value = part.strip()
                if value:
                    seen.setdefault(value, None)
        if len(seen) > min(MAX_PASTED_LINES, MAX_STATIC_IDS):
            raise ValidationError(f"At most {MAX_PASTED_LINES:,} lines at a time; use the API for longer lists.")
        return list(seen)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not data.get("identifiers") and not data.get("contact") and not self.errors:
            raise ValidationError("Paste at least one email or external id.")
        return data
