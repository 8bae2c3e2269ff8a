"""Read a page's forms the way a browser submits them, so a probe can change one field and post the rest."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

SKIPPED_INPUTS = {"submit", "button", "reset", "file", "image"}


@dataclass
class HtmlForm:
    action: str
    method: str
    fields: list[tuple[str, str]] = field(default_factory=list)
    names: set[str] = field(default_factory=set)  # every named control, checked or not

    def data(self, **changes: str | list[str]) -> dict[str, str | list[str]]:
        """The submitted values as a dict for Django's test client, with ``changes`` replacing fields."""
        data: dict[str, str | list[str]] = {}
        for name, value in self.fields:
            if name in data:
                current = data[name]
                data[name] = [*current, value] if isinstance(current, list) else [current, value]
            else:
                data[name] = value
        data.update(changes)
        return data


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[HtmlForm] = []
        self.form: HtmlForm | None = None
        self.select: str | None = None
        self.select_multiple = False
        self.select_options: list[tuple[str, bool]] = []
        self.in_option = False
        self.option_value: str | None = None
        self.option_text = ""
        self.option_selected = False
        self.textarea: str | None = None
        self.textarea_text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self.form = HtmlForm(a.get("action", ""), a.get("method", "get").lower())
            self.forms.append(self.form)
        if self.form is None or "disabled" in a:
            return
        name = a.get("name")
        if tag == "input" and name:
            self.form.names.add(name)
            kind = a.get("type", "text").lower()
            if kind in SKIPPED_INPUTS or (kind in ("checkbox", "radio") and "checked" not in a):
                return
            self.form.fields.append((name, a.get("value", "on" if kind in ("checkbox", "radio") else "")))
        elif tag == "select" and name:
            self.form.names.add(name)
            self.select, self.select_multiple, self.select_options = name, "multiple" in a, []
        elif tag == "option" and self.select is not None:
            self._end_option()
            self.in_option, self.option_value = True, a.get("value")
            self.option_text, self.option_selected = "", "selected" in a
        elif tag == "textarea" and name:
            self.form.names.add(name)
            self.textarea, self.textarea_text = name, ""

    def _end_option(self) -> None:
        if self.in_option:
            value = self.option_value if self.option_value is not None else self.option_text.strip()
            self.select_options.append((value, self.option_selected))
        self.in_option, self.option_value, self.option_text = False, None, ""

    def handle_data(self, data: str) -> None:
        if self.textarea is not None:
            self.textarea_text += data
        elif self.in_option:
            self.option_text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "option":
            self._end_option()
        elif tag == "select" and self.select is not None and self.form is not None:
            self._end_option()
            chosen = [value for value, selected in self.select_options if selected]
            if not chosen and not self.select_multiple and self.select_options:
                chosen = [self.select_options[0][0]]
            self.form.fields += [(self.select, value) for value in chosen]
            self.select = None
        elif tag == "textarea" and self.textarea is not None and self.form is not None:
            self.form.fields.append((self.textarea, self.textarea_text.removeprefix("\n")))
            self.textarea = None
        elif tag == "form":
            self.form = None


def html_forms(html: str) -> list[HtmlForm]:
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


def form_with(html: str, name: str) -> HtmlForm:
    """The page's first POST form that has a control called ``name``."""
    for form in html_forms(html):
        if form.method == "post" and name in form.names:
            return form
    raise LookupError(f"no POST form with a field {name!r} on the page")
