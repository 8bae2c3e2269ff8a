"""Personalisation in Liquid (python-liquid), sandboxed.

The context is a plain per-contact mapping built here (contact fields, custom attributes,
the tenant, the campaign, the links) and nothing else: no model instance, no method to
call. Loops and output are capped by the environment, HTML output is escaped unless a
template asks otherwise with ``| raw`` (not offered), and templates are checked on save:
syntax errors with their line, unknown variables as warnings.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass, field
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

from liquid import Environment
from liquid.exceptions import LiquidError, LiquidSyntaxError

from contacts.fields import CONTACT_FIELDS

MAX_OUTPUT_CHARS = 500_000
MAX_LOOP_ITERATIONS = 1_000
MAX_TEMPLATE_CHARS = 200_000
# What a template may name besides the contact's own fields and attributes.
CONTACT_EXTRA = ("full_name", "lifecycle_stage", "order_count", "total_revenue", "last_order_at", "id")
OTHER_ROOTS = {
    "tenant": ("name", "postal_address"),
    "campaign": ("name",),
    "links": ("unsubscribe", "preferences", "cta", "view_in_browser"),
    "cta": ("label", "url"),
}


class _Sandbox(Environment):
    loop_iteration_limit = MAX_LOOP_ITERATIONS
    output_stream_limit = MAX_OUTPUT_CHARS
    context_depth_limit = 10
    local_namespace_limit = 10_000


@functools.cache
def _environment(autoescape: bool) -> Environment:
    return _Sandbox(autoescape=autoescape)


class RenderError(ValueError):
    """A template failed to render for a contact (a resource limit or a runtime error)."""


@dataclass
class TemplateCheck:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def known_paths(attribute_keys: list[str] | tuple[str, ...] = ()) -> set[str]:
    paths = {f"contact.{f.name}" for f in CONTACT_FIELDS} | {f"contact.{name}" for name in CONTACT_EXTRA}
    paths |= {f"contact.attributes.{key}" for key in attribute_keys}
    paths |= {f"{root}.{name}" for root, names in OTHER_ROOTS.items() for name in names}
    return paths


def check_template(
    source: str, *, attribute_keys: list[str] | tuple[str, ...] = (), html_output: bool = False
) -> TemplateCheck:
    """Parse a template: syntax errors (with the line) and unknown variables (as warnings)."""
    result = TemplateCheck()
    if len(source) > MAX_TEMPLATE_CHARS:
        result.errors.append(f"At most {MAX_TEMPLATE_CHARS:,} characters.")
        return result
    try:
        template = _environment(html_output).from_string(source)
    except LiquidSyntaxError as error:
        result.errors.append(_describe(error, source))
        return result
    except LiquidError as error:
        result.errors.append(_describe(error, source))
        return result
    environment = _environment(html_output)
    for name in sorted(set(template.filter_names()) - set(environment.filters)):
        result.errors.append(f"Unknown filter: {name}.")
    allowed = known_paths(attribute_keys)
    containers = {path.rsplit(".", 1)[0] for path in allowed} | {"contact.attributes"}
    for path in sorted({str(p) for p in template.global_variable_paths()}):
        if path in allowed or path in containers or any(path.startswith(p + ".") for p in allowed):
            continue
        what = "custom attribute" if path.startswith("contact.attributes.") else "variable"
        result.warnings.append(f"Unknown {what}: {{{{ {path} }}}} renders empty.")
    return result


def _describe(error: LiquidError, source: str) -> str:
    message = str(getattr(error, "message", "") or error).splitlines()[0]
    token = getattr(error, "token", None)
    start = getattr(token, "start_index", -1) if token is not None else -1
    if isinstance(start, int) and start >= 0:
        return f"Line {source.count(chr(10), 0, start) + 1}: {message}"
    return f"At the end (line {source.count(chr(10)) + 1}): {message}"


def render(source: str, context: dict[str, Any], *, html_output: bool = False) -> str:
    """Render a template with a plain context; raise RenderError on a limit or a runtime error."""
    if not source:
        return ""
    try:
        return str(_environment(html_output).from_string(source).render(**context))
    except LiquidError as error:
        raise RenderError(_describe(error, source)) from error


def _plain(value: Any) -> Any:
    """Only plain values reach a template: text, numbers, booleans, lists and mappings of them."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value[:100]]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def contact_context(contact: Any) -> dict[str, Any]:
    """A contact as a template sees it (from a model instance or a values() row)."""
    get = contact.get if isinstance(contact, dict) else functools.partial(getattr, contact)
    data = {f.name: _plain(get(f.name, None)) for f in CONTACT_FIELDS if f.name != "push_tokens"}
    for name in CONTACT_EXTRA:
        if name != "full_name":
            data[name] = _plain(get(name, None))
    data["country"] = str(data.get("country") or "")
    data["full_name"] = " ".join(p for p in (data.get("first_name"), data.get("last_name")) if p)
    data["attributes"] = _plain(get("attributes", None) or {})
    return data


def message_context(
    *, contact: Any, tenant: Any, campaign_name: str = "", links: dict[str, str] | None = None,
    cta: dict[str, str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    return {
        "contact": contact_context(contact),
        "tenant": {"name": tenant.name, "postal_address": tenant.postal_address},
        "campaign": {"name": campaign_name},
        "links": dict(links or {}),
        "cta": dict(cta or {}),
    }


# --- text from HTML ------------------------------------------------------------------------------
_BLOCKS = {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "hr", "section"}


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.href: str | None = None
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script", "head", "title"):
            self.skip += 1
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag in _BLOCKS:
            self.parts.append("\n")
        if tag == "a":
            self.href = dict(attrs).get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "head", "title"):
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCKS and tag != "li":
            self.parts.append("\n")
        if tag == "a" and self.href:
            if not self.href.startswith(("#", "mailto:")):
                self.parts.append(f" ({self.href})")
            self.href = None

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_to_text(markup: str) -> str:
    """A readable text part from an HTML body: blocks become lines, links show their address."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    text = "".join(parser.parts)
    lines = [line.strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
