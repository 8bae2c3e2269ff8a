"""The whole site, walked once with hostile text in every field: headers, script, XSS, CSRF, CSV.

Tenant A's every text field holds markup that is also a spreadsheet formula (see
tests/security/hostile_data.py). Then every page of the URLConf (tests/security/site.py) is
fetched by the person it is for — tenant pages by Alice, the admin by platform staff, allauth
pages signed in and out, the public pages with their signed tokens, the API with a key — and:

- every response carries the strict Content-Security-Policy and the security headers;
- no HTML page carries inline script, an event-handler attribute or a ``javascript:`` link;
- no HTML page shows a seeded value raw, and the values the pages exist to show were seen
  (escaped), so the walk proves something;
- every CSV the site serves has no cell a spreadsheet would run as a formula;
- every ``<form method=post>`` and htmx write found is refused (403) without the CSRF token;
- every search and filter form (``<form method=get>``) sent back with markup in each field
  shows it escaped (reflected XSS).

Pages added later are walked without editing this file.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from typing import Any
from urllib.parse import urlencode, urljoin

import pytest

from tests.conftest import World
from tests.security.hostile_data import FORMULA_STARTS, RAW, SEEN, payload, seed_hostile_text
from tests.security.site import (
    body_of,
    every_page,
    header_problems,
    inspect,
    is_html,
    markup_problems,
    route_name,
    route_values,
    strict_client,
    visitors,
)
from tests.security.test_csrf import exempt

pytestmark = pytest.mark.django_db

# What the pages exist to show: each must have been seen (escaped) somewhere in the walk.
MUST_BE_SHOWN = [
    "tenants.Tenant.name", "tenants.User.full_name", "tenants.ApiKey.name",
    "contacts.Contact.first_name", "contacts.Contact.last_name", "contacts.Contact.company", "contacts.Contact.city",
    "contacts.Contact.job_role", "Contact.attributes", "Contact.interests", "Event.properties",
    "contacts.AttributeDefinition.label", "contacts.ImportJob.original_name", "contacts.ConsentRecord.wording",
    "contacts.Suppression.note", "AuditLog.data", "ImportJob.headers",
    "segments.Segment.name", "segments.Segment.description", "Segment.rules value",
    "campaigns.Campaign.name", "campaigns.Campaign.description", "campaigns.Variant.name", "campaigns.Variant.subject",
    "campaigns.Campaign.sender_name", "campaigns.Delivery.error", "campaigns.DeliveryFeedback.detail",
    "journeys.Journey.name", "journeys.Journey.description", "journeys.Step.name", "Journey.trigger_filters value",
    "personalization.Slot.name", "personalization.SlotVariant.headline", "personalization.SiteKey.name",
    "audiences.AudienceDestination.name",
]  # fmt: skip
MUST_BE_IN_A_CSV = ["contacts.Contact.first_name", "contacts.Contact.company", "Contact.attributes"]
_NUMBER = re.compile(r"^[-+]?\d+(\.\d+)?([eE][-+]?\d+)?$")


def formula_cells(text: str) -> list[str]:
    """Cells a spreadsheet would run: starting with = + - @ TAB or CR, and not a plain number."""
    rows = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    return [cell[:40] for row in rows for cell in row if cell.startswith(FORMULA_STARTS) and not _NUMBER.match(cell)]


class Walk:
    """What the walk found, by kind of problem."""

    def __init__(self, seeded: Any) -> None:
        self.seeded = seeded
        self.problems: dict[str, list[str]] = defaultdict(list)
        self.shown: set[int] = set()
        self.in_csv: set[int] = set()
        self.writes: dict[tuple[str, str, str], dict[str, str]] = {}
        self.searches: dict[tuple[str, str], list[str]] = {}
        self.fetched: set[tuple[str, str]] = set()
        self.downloads: set[tuple[str, str]] = set()
        self.ok_pages = 0

    def raw(self, where: str, text: str) -> None:
        for number in self.seeded.numbers(text, RAW):
            self.problems["stored XSS"].append(f"{where}: {self.seeded.fields.get(number, number)} shown raw")

    def page(self, who: str, url: str, response: Any) -> None:
        self.fetched.add((who, url))
        where = f"{who} GET {url} ({response.status_code})"
        if response.status_code >= 500:
            self.problems["server errors"].append(where)
        self.problems["headers"] += [f"{where}: {p}" for p in header_problems(response)]
        content_type = response.get("Content-Type", "")
        if content_type.startswith("text/csv"):
            text = body_of(response)
            self.in_csv |= self.seeded.numbers(text, SEEN)
            self.problems["CSV formulas"] += [f"{where}: {c!r}" for c in formula_cells(text)]
            return
        if not is_html(response):
            return
        html = body_of(response)
        self.ok_pages += response.status_code == 200
        self.problems["inline script"] += [f"{where}: {p}" for p in markup_problems(html)]
        self.raw(where, html)
        self.shown |= self.seeded.numbers(html, SEEN)
        found = inspect(html)
        for form in found.forms:
            action = urljoin(url, form.action or url)
            if form.method == "post":
                self.writes.setdefault((who, "post", action), form.fields)
                if not form.has_token and not exempt(route_name(action)):
                    self.problems["forms without a token"].append(f"{url}: form to {action}")
            elif form.fields:
                self.searches.setdefault((who, action), sorted(form.fields))
        for verb, target in found.htmx:
            self.writes.setdefault((who, verb, urljoin(url, target)), {})
        self.downloads |= {(who, urljoin(url, href)) for href in found.downloads}

    def follow_downloads(self, people: Any) -> None:
        """The CSV tables the pages link to (``?table=…``), which the URLConf alone does not name."""
        for who, url in sorted(self.downloads - self.fetched):
            self.page(who, url, people.get(who).get(url))


def test_the_whole_site_walked_with_hostile_text_in_every_field(world: World):
    values = route_values(world)
    seeded = seed_hostile_text(world, values)
    people = visitors(world)
    walk = Walk(seeded)
    for page in every_page(world, values):
        walk.page(page.who, page.url, people.get(page.who).get(page.url))
    walk.follow_downloads(people)

    # CSRF: every write the pages offer, sent again without the token by the same person.
    for (who, verb, action), fields in walk.writes.items():
        if exempt(route_name(action)):
            continue
        client = strict_client(world, who, people.staff)
        response = getattr(client, verb)(action, fields) if verb == "post" else getattr(client, verb)(action)
        if response.status_code != 403:
            walk.problems["CSRF"].append(f"{who} {verb.upper()} {action} without a token: {response.status_code}")

    # Reflected XSS: every search and filter form, each field holding markup.
    for (who, action), names in walk.searches.items():
        query = {name: payload(9000 + i) for i, name in enumerate(names)}
        seeded.fields.update({9000 + i: f"?{name}= on {action}" for i, name in enumerate(names)})
        url = f"{action}{'&' if '?' in action else '?'}{urlencode(query)}"
        response = people.get(who).get(url)
        if response.status_code >= 500:
            walk.problems["server errors"].append(f"{who} GET {url}")
        if is_html(response):
            walk.raw(f"{who} GET {action} (search)", body_of(response))

    assert {kind: found for kind, found in walk.problems.items() if found} == {}
    # The walk went where the data is.
    assert walk.ok_pages > 200 and len(walk.writes) > 100 and len(walk.searches) > 5
    shown = {seeded.fields[n] for n in walk.shown if n in seeded.fields}
    assert [name for name in MUST_BE_SHOWN if name not in shown] == []
    in_csv = {seeded.fields[n] for n in walk.in_csv if n in seeded.fields}
    assert [name for name in MUST_BE_IN_A_CSV if name not in in_csv] == []


def test_the_walk_notices_a_raw_value_a_formula_and_a_form_without_a_token():
    from django.http import HttpResponse

    from tests.security.hostile_data import Seeded

    seeded = Seeded()
    number = seeded.next("contacts.Contact.first_name")
    walk = Walk(seeded)
    html = HttpResponse(f'<p>{payload(number)}</p><form method="post" action="/x/"><input name="a"></form>')
    walk.page("alice", "/t/a/contacts/", html)
    sheet = HttpResponse(f"name\r\n{payload(number)}\r\n-12.5\r\n", content_type="text/csv")
    walk.page("alice", "/t/a/contacts/export.csv", sheet)
    assert walk.problems["stored XSS"] == ["alice GET /t/a/contacts/ (200): contacts.Contact.first_name shown raw"]
    [formula] = walk.problems["CSV formulas"]  # the number is a number, not a formula
    assert formula.startswith("alice GET /t/a/contacts/export.csv (200): '+\"><img src=x onerror=alert(1)>")
    assert walk.problems["forms without a token"] == ["/t/a/contacts/: form to /x/"]
    assert "no Content-Security-Policy" in walk.problems["headers"][0]
