from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.filter
def percent(value: Any) -> str:
    """A share (0-1) as a percentage with one decimal; "—" when unknown."""
    if value is None or value == "":
        return "—"
    return f"{float(value) * 100:.1f} %"
