"""Personalisation in Liquid (python-liquid), sandboxed.

The context is a plain per-contact mapping built here (contact fields, custom attributes,
the tenant, the campaign, the links) and nothing else: no model instance, no method to
call. Loops and output are capped by the environment, HTML output is escaped unless a
template asks otherwise (the ``safe`` filter and partials are removed), and templates are
checked on save: syntax errors with their line, unknown variables as warnings.

A template's output depends only on the values of the variables it reads, so renders are
memoised per template on those values (``_RenderMemo``): a batch of a campaign renders
"Hi {{ contact.first_name | default: 'there' }}" once per distinct first name, not per contact.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

from liquid import BoundTemplate, Environment, RenderContext
from liquid.exceptions import FilterError, LiquidError, LiquidSyntaxError, ResourceLimitError
from liquid.token import Token

from contacts.fields import CONTACT_FIELDS

MAX_OUTPUT_CHARS = 500_000
MAX_LOOP_ITERATIONS = 1_000  # nested loops multiply: (1..100) inside (1..100) is 10,000
MAX_TEMPLATE_CHARS = 200_000
# One render as a whole: every loop together, the size of any value a filter makes, the time.
MAX_RENDER_ITERATIONS = 10_000
MAX_VALUE_CHARS = MAX_OUTPUT_CHARS
MAX_VALUE_ITEMS = 10_000
MAX_RENDER_SECONDS = 2.0
# What a template may name besides the contact's own fields and attributes.
CONTACT_EXTRA = ("full_name", "lifecycle_stage", "order_count", "total_revenue", "last_order_at", "id")
OTHER_ROOTS = {
    "tenant": ("name", "postal_address"),
    "campaign": ("name",),
    "links": ("unsubscribe", "preferences", "cta", "view_in_browser"),
    "cta": ("label", "url"),
}


UNSAFE_TAGS = ("include", "render")
UNSAFE_FILTERS = ("safe",)


class TemplateLimitError(ResourceLimitError):
    """A render went past one of the limits of the whole render (iterations, value size, time)."""


class _Budget:
    """What one render may still spend, shared by every context the render copies."""

    __slots__ = ("deadline", "iterations")

    def __init__(self) -> None:
        self.iterations = 0
        self.deadline = time.monotonic() + MAX_RENDER_SECONDS

    def spend(self, iterations: int, token: Token | None) -> None:
        self.iterations += iterations
        if self.iterations > MAX_RENDER_ITERATIONS:
            raise TemplateLimitError(
                f"loop iteration limit reached: at most {MAX_RENDER_ITERATIONS:,} loop iterations in one message",
                token=token,
            )
        self.check_time(token)

    def check_time(self, token: Token | None) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateLimitError(
                f"time limit reached: a message must render within {MAX_RENDER_SECONDS:g} s", token=token
            )


def _too_big(value: Any) -> str | None:
    if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
        return f"a text of more than {MAX_VALUE_CHARS:,} characters"
    if isinstance(value, list | tuple | range | dict) and len(value) > MAX_VALUE_ITEMS:
        return f"more than {MAX_VALUE_ITEMS:,} items"
    return None


def _predicted_chars(name: str, left: Any, args: tuple[Any, ...]) -> int:
    """How long the text of a multiplying filter will be, before it is made (replace, join)."""
    if name in ("replace", "replace_first", "replace_last") and args:
        text, old, new = str(left), str(args[0]), str(args[1]) if len(args) > 1 else ""
        times = (text.count(old) if old else len(text) + 1) if name == "replace" else 1
        return len(text) + times * max(0, len(new) - len(old))
    if name == "join" and isinstance(left, list | tuple | range):
        separator = str(args[0]) if args else " "
        return len(left) * len(separator)
    return 0


class _BudgetedContext(RenderContext):
    """A render context that counts every loop of the render and guards every filter call.

    Liquid's own limits see one loop nest at a time; a template of five thousand loops in a row,
    or of filters that multiply text (``replace``, ``join`` over a huge range), passes them and
    still takes a worker for minutes. Any other error a filter raises (a NaN rounded, a date out
    of range) becomes a template error with its line, never an exception the caller did not expect.
    """

    def __init__(self, template: BoundTemplate, **kwargs: Any) -> None:
        super().__init__(template, **kwargs)
        parent = kwargs.get("parent_context")
        self.budget: _Budget = parent.budget if isinstance(parent, _BudgetedContext) else _Budget()

    def raise_for_loop_limit(self, length: int = 1) -> None:
        super().raise_for_loop_limit(length)
        self.budget.spend(length, None)

    def filter(self, name: str, token: Token | None) -> Callable[..., object]:
        function = super().filter(name, token)
        budget = self.budget

        def guarded(left: Any, *args: Any, **kwargs: Any) -> object:
            budget.check_time(token)
            for value in (left, *args):
                if (problem := _too_big(value)) is not None:
                    raise TemplateLimitError(f"{name}: the value has {problem}", token=token)
            if _predicted_chars(name, left, args) > MAX_VALUE_CHARS:
                too_long = f"{name}: the result would be longer than {MAX_VALUE_CHARS:,} characters"
                raise TemplateLimitError(too_long, token=token)
            try:
                result = function(left, *args, **kwargs)
            except LiquidError:
                raise
            except Exception as error:  # any failure of a filter is the template's error
                raise FilterError(f"{name}: {error}", token=token) from error
            if (problem := _too_big(result)) is not None:
                raise TemplateLimitError(f"{name}: the result has {problem}", token=token)
            return result

        return guarded


class _BudgetedTemplate(BoundTemplate):
    context_class = _BudgetedContext


class _Sandbox(Environment):
    loop_iteration_limit = MAX_LOOP_ITERATIONS
    output_stream_limit = MAX_OUTPUT_CHARS
    context_depth_limit = 10
    local_namespace_limit = 10_000
    template_class = _BudgetedTemplate

    def setup_tags_and_filters(self, *, extra: bool = False) -> None:
        super().setup_tags_and_filters(extra=extra)
        # Nothing to include (there is no template store), and no marking contact data as HTML.
        for tag in UNSAFE_TAGS:
            self.tags.pop(tag, None)
        for name in UNSAFE_FILTERS:
            self.filters.pop(name, None)


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
    for name in sorted(set(template.filter_names(include_partials=False)) - set(environment.filters)):
        result.errors.append(f"Unknown filter: {name}.")
    allowed = known_paths(attribute_keys)
    containers = {path.rsplit(".", 1)[0] for path in allowed} | {"contact.attributes"}
    for path in sorted({str(p) for p in template.global_variable_paths(include_partials=False)}):
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


@functools.lru_cache(maxsize=512)
def _parsed(source: str, html_output: bool) -> Any:
    """Parse once per process: a batch renders each variant's templates hundreds of times."""
    return _environment(html_output).from_string(source)


_PATH_PART = re.compile(r"^[A-Za-z_][\w-]*$")
# A template that may read the clock renders differently from one minute to the next.
_CLOCK = re.compile(r"\b(?:now|today)\b")
_MISSING = object()
# Values that differ for every contact: a template reading one of them is never memoised.
_UNIQUE_PATHS = frozenset({("contact", "id"), ("contact", "email"), ("contact", "phone"), ("contact", "external_id")})
_UNIQUE_ROOTS = frozenset({"links"})


@functools.lru_cache(maxsize=512)
def _read_paths(source: str, html_output: bool) -> tuple[tuple[str, ...], ...] | None:
    """The dotted variable paths a template reads, or None when memoising it cannot pay off or be exact."""
    if _CLOCK.search(source):
        return None
    paths = []
    for path in _parsed(source, html_output).global_variable_paths(include_partials=False):
        parts = str(path).split(".")
        if not all(_PATH_PART.match(part) for part in parts):
            return None  # an index or a key computed at render time: read the whole context
        if tuple(parts[:2]) in _UNIQUE_PATHS or parts[0] in _UNIQUE_ROOTS:
            return None  # every contact's output differs: a memo would only cost
        paths.append(tuple(parts))
    return tuple(paths)


def _frozen(value: Any) -> Any:
    if isinstance(value, Mapping):  # a dict, or the ContactView of a template that reads the whole contact
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return (type(value).__name__, value)  # 1 and True and "1" render differently


def _resolve(context: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = context
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


class _RenderMemo:
    """Rendered outputs by (template, values read), least recently used out, bounded in characters."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self.chars = 0
        self.entries: OrderedDict[Any, str] = OrderedDict()

    def get(self, key: Any) -> str | None:
        found = self.entries.get(key)
        if found is not None:
            self.entries.move_to_end(key)
        return found

    def put(self, key: Any, output: str) -> None:
        if len(output) > self.max_chars // 16 or key in self.entries:
            return
        self.entries[key] = output
        self.chars += len(output) + 64
        while self.chars > self.max_chars:
            _, dropped = self.entries.popitem(last=False)
            self.chars -= len(dropped) + 64


_memo = _RenderMemo(max_chars=8_000_000)


def render(source: str, context: dict[str, Any], *, html_output: bool = False) -> str:
    """Render a template with a plain context; raise RenderError on a limit or a runtime error."""
    if not source:
        return ""
    if "{" not in source:
        return source  # no tag and no output statement: the text is its own rendering
    try:
        paths = _read_paths(source, html_output)
        key = None
        if paths is not None:
            key = (source, html_output, tuple(_frozen(_resolve(context, path)) for path in paths))
            if (found := _memo.get(key)) is not None:
                return found
        output = str(_parsed(source, html_output).render(**context))
    except LiquidError as error:
        raise RenderError(_describe(error, source)) from error
    if key is not None:
        _memo.put(key, output)
    return output


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


_CONTACT_KEYS = (
    *(f.name for f in CONTACT_FIELDS if f.name != "push_tokens"),
    *(name for name in CONTACT_EXTRA if name not in ("full_name",)),
    "full_name",
    "attributes",
)


class ContactView(Mapping[str, Any]):
    """A contact as a template sees it: plain values only, each made plain when first read.

    A template reads a handful of the forty-odd fields, so nothing is converted up front.
    """

    __slots__ = ("_get", "_values")
    keys_ = tuple(dict.fromkeys(_CONTACT_KEYS))
    _known = frozenset(keys_)

    def __init__(self, contact: Any) -> None:
        self._get = contact.get if isinstance(contact, dict) else functools.partial(getattr, contact)
        self._values: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            if key not in self._known:
                raise
        if key == "full_name":
            value: Any = " ".join(p for p in (self["first_name"], self["last_name"]) if p)
        elif key == "country":
            value = str(self._get("country", None) or "")
        elif key == "attributes":
            value = _plain(self._get("attributes", None) or {})
        else:
            value = _plain(self._get(key, None))
        self._values[key] = value
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys_)

    def __len__(self) -> int:
        return len(self.keys_)


def contact_context(contact: Any) -> dict[str, Any]:
    """A contact as a template sees it (from a model instance or a values() row), as a dict."""
    return dict(ContactView(contact))


def message_context(
    *, contact: Any, tenant: Any, campaign_name: str = "", links: dict[str, str] | None = None,
    cta: dict[str, str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    return {
        "contact": ContactView(contact),
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


def _extract_text(markup: str) -> str:
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    return "".join(parser.parts)


def _tidy(text: str) -> str:
    lines = [line.strip() for line in text.replace(" ()", "").splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_to_text(markup: str) -> str:
    """A readable text part from an HTML body: blocks become lines, links show their address."""
    return _tidy(_extract_text(markup))


# Liquid markup in a template: output statements and tags.
_LIQUID_TOKEN = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)


def _tokens(source: str) -> list[str]:
    return [" ".join(token.split()) for token in _LIQUID_TOKEN.findall(source)]


@functools.lru_cache(maxsize=256)
def _text_template(source: str) -> str | None:
    """The text part of an HTML template as a Liquid template of its own, or None when unsafe.

    Converting once per template instead of once per message is what makes a derived text part
    cheap. It is used only when every tag (``{% %}``) survives the conversion in order and no
    output statement was altered (outputs inside attributes other than links may drop out: they
    never show in text anyway). Outputs are escaped text (the sandbox has no ``safe`` filter),
    so rendered values cannot bring markup into the text.
    """
    derived = _extract_text(source)
    before, after = _tokens(source), _tokens(derived)
    tags_before = [t for t in before if t.startswith("{%")]
    tags_after = [t for t in after if t.startswith("{%")]
    outputs = [t for t in before if t.startswith("{{")]
    if tags_before != tags_after:
        return None
    for token in (t for t in after if t.startswith("{{")):
        if token not in outputs:
            return None
        outputs.remove(token)
    try:
        _parsed(derived, False)
    except LiquidError:
        return None
    return derived


def render_text_from_html(source: str, context: dict[str, Any], rendered_html: str) -> str:
    """The text part for an HTML template rendered with ``context`` (``rendered_html`` is its HTML).

    Same result as ``html_to_text(rendered_html)`` up to whitespace inside rendered values, at a
    fraction of the cost: the HTML is parsed once per template, not once per message.
    """
    derived = _text_template(source) if len(source) <= MAX_TEMPLATE_CHARS else None
    if derived is None:
        return html_to_text(rendered_html)
    return _tidy(render(derived, context))
