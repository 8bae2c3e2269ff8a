"""One probe per place a request names an object by id: Alice (tenant A) names tenant B's object.

Each probe sends the same request three times, with A's own object, B's object and an id
nobody has, each in a savepoint that is rolled back, and reports what went wrong:

- ``refused``: B's id gets the error a missing id gets, word for word but the id (no existence
  oracle), on the field that named it; A's own id is accepted (so the error is about the id);
- ``ignored``: filters and documented skip-the-unknown lists: B's id answers exactly as a missing
  one does;
- ``identity``: upsert keys (external ids, emails, anonymous ids) are per tenant: the request
  succeeds with B's key too, and makes or changes A's contact, never B's.

Whatever the outcome, B's rows must be unchanged and no row may point across tenants
(tests/isolation/guard.py). ``covers`` names the discovered fields (references.py) a probe
tests; ``EMBEDDED`` lists the ids inside JSON that no field declares.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.forms import BaseForm
from django.forms.formsets import BaseFormSet
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from campaigns.views_feedback import twilio_signature
from tests.isolation.guard import (
    cross_tenant_references,
    fingerprint_changes,
    table_writes,
    tenant_fingerprint,
    written_since,
)
from tests.isolation.htmlforms import form_with
from tests.isolation.scene import MARKERS, Scene

MISSING_ID = 987_654_321  # no object of any tenant has this id
Body = Callable[[Scene, Any], Any]


@dataclass(frozen=True)
class Probe:
    name: str
    covers: tuple[str, ...]
    send: Callable[[Clients, Scene, Any], Any]  # makes the request naming ``value``; returns the response
    key: str = ""  # the scene id it names (A's for the own try, B's for the foreign one)
    own_key: str = ""  # when A's own object is another one (e.g. not the segment being edited)
    expect: str = "refused"
    error_at: str = ""  # the field the error is reported on (API path suffix or form field name)
    values: tuple[Any, Any, Any] | None = None  # (own, foreign, missing) when not scene ids
    own_succeeds: bool = True
    # What to compare of B's and the missing id's answers, when more than the id differs (new row ids).
    seen: Callable[[Any], Any] | None = None


@dataclass
class Clients:
    api: APIClient
    web: Client
    slug: str
    pages: dict[str, str] = field(default_factory=dict)  # HTML of the pages read in this probe


# --- requests --------------------------------------------------------------------------------
def api(method: str, path: Callable[[Scene], str], body: Body) -> Callable[[Clients, Scene, Any], Any]:
    def send(clients: Clients, a: Scene, value: Any) -> Any:
        call = getattr(clients.api, method)
        return call(path(a), body(a, value), format="json")

    return send


def api_query(method: str, path: Callable[[Scene, Any], str]) -> Callable[[Clients, Scene, Any], Any]:
    def send(clients: Clients, a: Scene, value: Any) -> Any:
        return getattr(clients.api, method)(path(a, value))

    return send


def web_form(
    page: Callable[[Scene, str], str],
    field_name: str,
    fixed: dict[str, Any] | None = None,
    action: Callable[[Scene, str], str] | None = None,
    wrap: Callable[[Any], Any] = str,
) -> Callable[[Clients, Scene, Any], Any]:
    """GET the page, fill its form as a browser would (``fixed`` sets other fields: values or functions
    of the scene), put ``wrap(value)`` in ``field_name`` and post it (to the form's action, or to
    ``action``: the composer's buttons post the same form elsewhere)."""

    def send(clients: Clients, a: Scene, value: Any) -> Any:
        url = page(a, clients.slug)
        if url not in clients.pages:  # read once per probe: refused tries change nothing
            clients.pages[url] = clients.web.get(url).content.decode()
        form = form_with(clients.pages[url], field_name)
        changes = {k: (v(a) if callable(v) else v) for k, v in (fixed or {}).items()}
        data = form.data(**changes, **{field_name: wrap(value)})
        target = action(a, clients.slug) if action is not None else form.action or url
        return clients.web.post(target, data)

    return send


def web_post(page: Callable[[Scene, str], str], body: Body) -> Callable[[Clients, Scene, Any], Any]:
    def send(clients: Clients, a: Scene, value: Any) -> Any:
        return clients.web.post(page(a, clients.slug), body(a, value))

    return send


def web_get(page: Callable[[Scene, str, Any], str]) -> Callable[[Clients, Scene, Any], Any]:
    def send(clients: Clients, a: Scene, value: Any) -> Any:
        return clients.web.get(page(a, clients.slug, value))

    return send


def page(name: str, **kwargs: str) -> Callable[[Scene, str], str]:
    """A tenant page by URL name; kwargs name scene ids, e.g. campaign_id="campaign_id"."""
    return lambda a, slug: reverse(name, kwargs={"tenant_slug": slug, **{k: a[v] for k, v in kwargs.items()}})


def segment_rule(value: Any) -> dict[str, Any]:
    return {"all": [{"type": "segment", "op": "in", "segment": value}]}


def rules_json(value: Any) -> str:
    return json.dumps(segment_rule(value))


def email_variant(**extra: Any) -> dict[str, Any]:
    return {"name": "Probe", "subject": "Hi {{ contact.first_name }}", "html_body": "<p>Hello</p>", **extra}


def send_step(**variant: Any) -> dict[str, Any]:
    return {"kind": "send", "config": {"channel": "email"}, "content": {"variants": [email_variant(**variant)]}}


def branch_step(value: Any) -> dict[str, Any]:
    return {"kind": "branch", "config": {"rules": segment_rule(value)}}


V1 = "/api/v1"
CAMPAIGNS, JOURNEYS, SEGMENTS = f"{V1}/campaigns/", f"{V1}/journeys/", f"{V1}/segments/"


def campaign_url(a: Scene) -> str:
    return f"{CAMPAIGNS}{a['campaign_id']}/"


def journey_url(a: Scene) -> str:
    return f"{JOURNEYS}{a['journey_id']}/"


def new_campaign(**data: Any) -> dict[str, Any]:
    return {"name": "Probe campaign", "channel": "email", "variants": [email_variant()], **data}


def new_journey(**data: Any) -> dict[str, Any]:
    return {"name": "Probe journey", "trigger": "event", "trigger_event": "signed_up", **data}


def journey_with(name: str, settings: dict[str, Any], new: bool = False) -> Body:
    """A journey body naming ``value`` in the setting ``name`` (a whole new journey with ``new``)."""

    def body(a: Scene, value: Any) -> dict[str, Any]:
        data = {**settings, name: value}
        return new_journey(**data) if new else data

    return body


def graph(*steps: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": f"p{i}", **step} for i, step in enumerate(steps)]


# --- the probes --------------------------------------------------------------------------------
def _api_probes() -> list[Probe]:
    segment, variant, contact = "segment_id", "variant_id", "contact_id"
    return [
        # campaigns: audience and variant targets
        Probe("campaign create: audience include", (f"POST {CAMPAIGNS} audience.include",),
              api("post", lambda a: CAMPAIGNS, lambda a, v: new_campaign(audience={"include": [v]})),
              segment, error_at="audience.include"),
        Probe("campaign create: audience exclude", (f"POST {CAMPAIGNS} audience.exclude",),
              api("post", lambda a: CAMPAIGNS,
                  lambda a, v: new_campaign(audience={"include": [a["static_segment_id"]], "exclude": [v]})),
              segment, error_at="audience.exclude"),
        Probe("campaign create: variant target segment", (f"POST {CAMPAIGNS} variants[].target_segment",),
              api("post", lambda a: CAMPAIGNS,
                  lambda a, v: new_campaign(variants=[email_variant(target="segment", target_segment=v)])),
              segment, error_at="variants[0].target_segment"),
        Probe("campaign create: variant id", (f"POST {CAMPAIGNS} variants[].id",),
              api("post", lambda a: CAMPAIGNS, lambda a, v: new_campaign(variants=[email_variant(id=v)])),
              variant, error_at="variants[0].id", own_succeeds=False),
        Probe("campaign update: audience include", (f"PATCH {CAMPAIGNS}{{campaign_id}}/ audience.include",),
              api("patch", campaign_url, lambda a, v: {"audience": {"include": [v]}}),
              segment, error_at="audience.include"),
        Probe("campaign update: audience exclude", (f"PATCH {CAMPAIGNS}{{campaign_id}}/ audience.exclude",),
              api("patch", campaign_url, lambda a, v: {"audience": {"include": [a[segment]], "exclude": [v]}}),
              segment, own_key="static_segment_id", error_at="audience.exclude"),
        Probe("campaign update: variant target segment",
              (f"PATCH {CAMPAIGNS}{{campaign_id}}/ variants[].target_segment",),
              api("patch", campaign_url,
                  lambda a, v: {"variants": [email_variant(target="segment", target_segment=v)]}),
              segment, error_at="variants[0].target_segment"),
        Probe("campaign update: variant id", (f"PATCH {CAMPAIGNS}{{campaign_id}}/ variants[].id",),
              api("patch", campaign_url, lambda a, v: {"variants": [email_variant(id=v)]}),
              variant, error_at="variants[0].id"),
        Probe("campaign preview: contact", (f"POST {CAMPAIGNS}{{campaign_id}}/preview/ contact_id",),
              api("post", lambda a: f"{campaign_url(a)}preview/", lambda a, v: {"contact_id": v}),
              contact, error_at="contact_id"),
        Probe("campaign preview: variant", (f"POST {CAMPAIGNS}{{campaign_id}}/preview/ variant_id",),
              api("post", lambda a: f"{campaign_url(a)}preview/",
                  lambda a, v: {"contact_id": a[contact], "variant_id": v}),
              variant, error_at="variant_id"),
        Probe("campaign test send: contact", (f"POST {CAMPAIGNS}{{campaign_id}}/send-test/ contact_id",),
              api("post", lambda a: f"{campaign_url(a)}send-test/",
                  lambda a, v: {"contact_id": v, "to": "alice@a.example"}),
              contact, error_at="contact_id"),
        Probe("campaign test send: variant", (f"POST {CAMPAIGNS}{{campaign_id}}/send-test/ variant_id",),
              api("post", lambda a: f"{campaign_url(a)}send-test/",
                  lambda a, v: {"contact_id": a[contact], "variant_id": v, "to": "alice@a.example"}),
              variant, error_at="variant_id"),
        # experiments: arms are variants of the campaign
        Probe("experiment: control", (f"PUT {CAMPAIGNS}{{campaign_id}}/experiment/ control",),
              api("put", lambda a: f"{campaign_url(a)}experiment/", lambda a, v: {"control": v}),
              variant, error_at="control"),
        Probe("experiment: send hours by variant", (f"PUT {CAMPAIGNS}{{campaign_id}}/experiment/ arm_send_hours",),
              api("put", lambda a: f"{campaign_url(a)}experiment/",
                  lambda a, v: {"control": a[variant], "tested": "send_time",
                                "arm_send_hours": {str(a[variant]): 9, str(v): 15}}),
              "second_variant_id", error_at="arm_send_hours"),
        Probe("experiment: channel by variant", (f"PUT {CAMPAIGNS}{{campaign_id}}/experiment/ arm_channels",),
              api("put", lambda a: f"{campaign_url(a)}experiment/",
                  lambda a, v: {"control": a[variant], "tested": "channel",
                                "arm_channels": {str(a[variant]): "email", str(v): "sms"}}),
              # A's own try needs an SMS provider and SMS content: the error is compared with a missing id's.
              "second_variant_id", error_at="arm_channels", own_succeeds=False),
        # journeys: settings segments, whole-graph writes, single steps
        *[
            Probe(f"journey create: {name}", (f"POST {JOURNEYS} {name}",),
                  api("post", lambda a: JOURNEYS, journey_with(name, trigger, new=True)),
                  segment, error_at=name)
            for name, trigger in (
                ("trigger_segment", {"trigger": "segment_entered"}), ("entry_segment", {}), ("exit_segment", {}),
            )
        ],
        *[
            Probe(f"journey update: {name}", (f"PATCH {JOURNEYS}{{journey_id}}/ {name}",),
                  api("patch", journey_url, journey_with(name, trigger)), segment, error_at=name)
            for name, trigger in (
                ("trigger_segment", {"trigger": "segment_entered"}), ("entry_segment", {}), ("exit_segment", {}),
            )
        ],
        Probe("journey create: send step variant target",
              (f"POST {JOURNEYS} steps[].content.variants[].target_segment",),
              api("post", lambda a: JOURNEYS,
                  lambda a, v: new_journey(steps=graph(send_step(target="segment", target_segment=v)))),
              segment, error_at="target_segment"),
        Probe("journey create: send step variant id", (f"POST {JOURNEYS} steps[].content.variants[].id",),
              api("post", lambda a: JOURNEYS, lambda a, v: new_journey(steps=graph(send_step(id=v)))),
              "send_variant_id", error_at="variants[0].id", own_succeeds=False),
        Probe("journey update: send step variant target",
              (f"PATCH {JOURNEYS}{{journey_id}}/ steps[].content.variants[].target_segment",),
              api("patch", journey_url,
                  lambda a, v: {"steps": graph(send_step(target="segment", target_segment=v))}),
              segment, error_at="target_segment"),
        Probe("journey update: send step variant id",
              (f"PATCH {JOURNEYS}{{journey_id}}/ steps[].content.variants[].id",),
              api("patch", journey_url, lambda a, v: {"steps": graph(send_step(id=v))}),
              "send_variant_id", error_at="variants[0].id", own_succeeds=False),
        Probe("journey create: branch rules", (), api("post", lambda a: JOURNEYS,
              lambda a, v: new_journey(steps=graph(branch_step(v)))), segment, error_at="segment"),
        Probe("journey update: branch rules", (), api("patch", journey_url,
              lambda a, v: {"steps": graph(branch_step(v))}), segment, error_at="segment"),
        Probe("journey step add: send variant target",
              (f"POST {JOURNEYS}{{journey_id}}/steps/ content.variants[].target_segment",),
              api("post", lambda a: f"{journey_url(a)}steps/",
                  lambda a, v: send_step(target="segment", target_segment=v)),
              segment, error_at="target_segment"),
        Probe("journey step add: send variant id", (f"POST {JOURNEYS}{{journey_id}}/steps/ content.variants[].id",),
              api("post", lambda a: f"{journey_url(a)}steps/", lambda a, v: send_step(id=v)),
              "send_variant_id", error_at="variants[0].id", own_succeeds=False),
        Probe("journey step add: branch rules", (),
              api("post", lambda a: f"{journey_url(a)}steps/", lambda a, v: branch_step(v)),
              segment, error_at="segment"),
        Probe("journey step update: send variant target",
              (f"PATCH {JOURNEYS}{{journey_id}}/steps/{{step_key}}/ content.variants[].target_segment",),
              api("patch", lambda a: f"{JOURNEYS}{a['send_journey_id']}/steps/{a['send_step_key']}/",
                  lambda a, v: {"content": {"variants": [email_variant(target="segment", target_segment=v)]}}),
              segment, error_at="target_segment"),
        Probe("journey step update: send variant id",
              (f"PATCH {JOURNEYS}{{journey_id}}/steps/{{step_key}}/ content.variants[].id",),
              api("patch", lambda a: f"{JOURNEYS}{a['send_journey_id']}/steps/{a['send_step_key']}/",
                  lambda a, v: {"content": {"variants": [email_variant(id=v)]}}),
              "send_variant_id", error_at="variants[0].id"),
        # segments: the edited segment, rules naming other segments, static members
        Probe("segment validate: edited segment", (f"POST {SEGMENTS}validate/ segment",),
              api("post", lambda a: f"{SEGMENTS}validate/", lambda a, v: {"rules": {"all": []}, "segment": v}),
              segment, error_at="segment"),
        Probe("segment preview: edited segment", (f"POST {SEGMENTS}preview/ segment",),
              api("post", lambda a: f"{SEGMENTS}preview/", lambda a, v: {"rules": {"all": []}, "segment": v}),
              segment, error_at="segment"),
        Probe("segment create: rules", (), api("post", lambda a: SEGMENTS,
              lambda a, v: {"name": "Probe segment", "rules": segment_rule(v)}), segment, error_at="rules"),
        Probe("segment update: rules", (), api("patch", lambda a: f"{SEGMENTS}{a[segment]}/",
              lambda a, v: {"rules": segment_rule(v)}), segment, own_key="static_segment_id", error_at="rules"),
        Probe("segment validate: rules", (), api("post", lambda a: f"{SEGMENTS}validate/",
              lambda a, v: {"rules": segment_rule(v)}), segment, expect="ignored"),
        Probe("segment preview: rules", (), api("post", lambda a: f"{SEGMENTS}preview/",
              lambda a, v: {"rules": segment_rule(v)}), segment, expect="ignored"),
        Probe("static members add", (f"POST {SEGMENTS}{{segment_id}}/members/ contact_ids",),
              api("post", lambda a: f"{SEGMENTS}{a['static_segment_id']}/members/",
                  lambda a, v: {"contact_ids": [v]}),
              "shared_contact_id", expect="ignored"),
        Probe("static members remove",
              (f"DELETE {SEGMENTS}{{segment_id}}/members/ contact_ids", "segments.api.views GET contact_ids"),
              api_query("delete", lambda a, v: f"{SEGMENTS}{a['static_segment_id']}/members/?contact_ids={v}"),
              contact, expect="ignored"),
        Probe("segment overlap", (f"GET {SEGMENTS}overlap/ ids",),
              api_query("get", lambda a, v: f"{SEGMENTS}overlap/?ids={a[segment]},{v}"),
              "static_segment_id", expect="ignored"),
        Probe("analytics by segment", (f"GET {V1}/analytics/segments/ segment", "analytics.api.views GET segment"),
              api_query("get", lambda a, v: f"{V1}/analytics/segments/?segment={v}"), segment, expect="ignored"),
        Probe("deliveries by contact", (f"GET {CAMPAIGNS}{{campaign_id}}/runs/{{run_id}}/deliveries/ contact_id",),
              api_query("get", lambda a, v: f"{campaign_url(a)}runs/{a['run_id']}/deliveries/?contact_id={v}"),
              contact, expect="ignored"),
        # events name a contact by id; identities are per tenant
        Probe("event: contact", (f"POST {V1}/events/ contact_id",),
              api("post", lambda a: f"{V1}/events/", lambda a, v: {"event": "probe", "contact_id": v}),
              contact, error_at="contact_id"),
        Probe("event batch: contact", (f"POST {V1}/events/batch/ events[].contact_id",),
              api("post", lambda a: f"{V1}/events/batch/",
                  lambda a, v: {"events": [{"event": "probe", "contact_id": v}]}),
              contact, error_at="contact_id"),
        Probe("event: external id", (), api("post", lambda a: f"{V1}/events/",
              lambda a, v: {"event": "probe", "external_id": v}), expect="identity", values=IDENTITY),
        Probe("event: email", (), api("post", lambda a: f"{V1}/events/",
              lambda a, v: {"event": "probe", "email": v}), expect="identity", values=EMAILS),
        Probe("contact create: external id", (f"POST {V1}/contacts/ external_id",),
              api("post", lambda a: f"{V1}/contacts/", lambda a, v: {"external_id": v, "first_name": "Probe"}),
              expect="identity", values=IDENTITY),
        Probe("contact update: external id", (f"PATCH {V1}/contacts/{{contact_id}}/ external_id",),
              api("patch", lambda a: f"{V1}/contacts/{a['shared_contact_id']}/", lambda a, v: {"external_id": v}),
              expect="identity", values=("shared-1", "ext-b", "ext-nobody")),
        Probe("contacts bulk: external id", (f"POST {V1}/contacts/bulk/ contacts[].external_id",),
              api("post", lambda a: f"{V1}/contacts/bulk/",
                  lambda a, v: {"contacts": [{"external_id": v, "first_name": "Probe"}]}),
              expect="identity", values=IDENTITY),
        Probe("identify: anonymous id", (f"POST {V1}/identify/ anonymous_id",),
              api("post", lambda a: f"{V1}/identify/",
                  lambda a, v: {"anonymous_id": v, "traits": {"external_id": "probe-known"}}),
              expect="identity", values=("anon-a", "anon-b", "anon-nobody")),
    ]  # fmt: skip


IDENTITY = ("ext-a", "ext-b", "ext-nobody")
EMAILS = ("contact-a@example.com", "contact-b@example.com", "nobody@example.com")


def _web_probes() -> list[Probe]:
    segment = "segment_id"
    audience = page("campaigns:audience", campaign_id="campaign_id")
    settings = page("journeys:settings", journey_id="journey_id")
    send_step_page = page("journeys:step_edit", journey_id="send_journey_id", step_key="send_step_key")
    experiment = page("analytics:experiment_settings", campaign_id="campaign_id")
    variant_page = page("campaigns:variant_edit", campaign_id="campaign_id", variant_id="variant_id")
    frame = page("campaigns:email_frame", campaign_id="campaign_id")
    preview = page("campaigns:preview", campaign_id="campaign_id")
    test_send = page("campaigns:send_test", campaign_id="campaign_id")
    return [
        Probe("web campaign audience: include", ("campaigns.forms.AudienceForm.include",),
              web_form(audience, "include"), segment, error_at="include"),
        Probe("web campaign audience: exclude", ("campaigns.forms.AudienceForm.exclude",),
              web_form(audience, "exclude", {"include": lambda a: str(a[segment])}),
              segment, own_key="static_segment_id", error_at="exclude"),
        Probe("web campaign variant: target segment", ("campaigns.forms.VariantForm.target_segment",),
              web_form(page("campaigns:variant_create", campaign_id="campaign_id"), "target_segment",
                       {"target": "segment", "name": "Probe", "subject": "Hi", "html_body": "<p>Hi</p>"}),
              segment, error_at="target_segment"),
        *[
            Probe(f"web journey settings: {name}", (f"journeys.forms.SettingsForm.{name}",),
                  web_form(settings, name, trigger), segment, error_at=name)
            for name, trigger in (
                ("trigger_segment", {"trigger": "segment_entered"}), ("entry_segment", {}), ("exit_segment", {}),
            )
        ],
        Probe("web journey send step: variant target", ("journeys.forms.StepVariantForm.target_segment",),
              web_form(send_step_page, "variants-0-target_segment", {"variants-0-target": "segment"}),
              segment, error_at="variants-0-target_segment"),
        Probe("web journey send step: variant id", ("journeys.forms.StepVariantForm.variant_id",),
              # A hidden field: the error shows above the form, which is where the person can read it.
              web_form(send_step_page, "variants-0-variant_id"), "send_variant_id", error_at="__all__"),
        Probe("web journey branch step: rules", (),
              web_form(lambda a, slug: page("journeys:step_create", journey_id="journey_id")(a, slug) + "?kind=branch",
                       "rules", wrap=rules_json),
              segment, error_at="rules"),
        Probe("web segment create: rules", (),
              web_post(page("segments:create"),
                       lambda a, v: {"name": "Probe", "kind": "dynamic", "rules": json.dumps(segment_rule(v))}),
              segment, error_at="rules"),
        Probe("web segment edit: rules", (),
              web_form(page("segments:edit", segment_id="segment_id"), "rules", wrap=rules_json),
              segment, own_key="static_segment_id", error_at="rules"),
        Probe("web segment preview: rules", (),
              lambda c, a, v: c.web.post(page("segments:preview")(a, c.slug), json.dumps({"rules": segment_rule(v)}),
                                         content_type="application/json"),
              segment, expect="ignored"),
        Probe("web static members: contact", ("segments.forms.StaticMembersForm.contact",),
              web_post(page("segments:members", segment_id="static_segment_id"),
                       lambda a, v: {"action": "add", "contact": v}),
              "shared_contact_id", expect="ignored"),
        Probe("web static members: identifiers", (),
              web_post(page("segments:members", segment_id="static_segment_id"),
                       lambda a, v: {"action": "add", "identifiers": v}),
              expect="ignored", values=IDENTITY),
        Probe("web campaign preview: contact", (),
              web_form(variant_page, "preview_contact", action=preview),
              "contact_id", error_at="preview_contact"),
        Probe("web analytics: segments compared",
              ("analytics.views.SegmentCompareForm.segment", "analytics.views GET segment"),
              web_get(lambda a, slug, v: reverse("analytics:segments", kwargs={"tenant_slug": slug}) + f"?segment={v}"),
              segment, expect="ignored"),
        Probe("web experiment: control", ("analytics.forms_experiments.ExperimentForm.control",),
              web_form(experiment, "control"), "variant_id", error_at="control"),
        Probe("web experiment: send hour by variant", (),
              web_post(experiment, lambda a, v: {"control": a["variant_id"], "tested": "send_time", "test_share": 20,
                                                 "metric": "click", "duration_hours": 24, "significance_level": "0.950",
                                                 "method": "z_test", "fallback": "control",
                                                 f"hour_{a['variant_id']}": 9, f"hour_{v}": 15}),
              "second_variant_id", expect="ignored"),
        Probe("web composer frame: variant", ("campaigns.views POST variant_id",),
              web_form(variant_page, "variant_id", action=frame), "variant_id", expect="not_found"),
        Probe("web composer test send: variant", (),
              web_form(variant_page, "variant_id", action=test_send), "variant_id", expect="not_found"),
    ]  # fmt: skip


# --- public hooks: authenticated as tenant A by A's own secrets, naming B's delivery -----------------
def feedback_hook(clients: Clients, a: Scene, value: Any) -> Any:
    event = {"type": "hard_bounce", "id": f"probe-{value}", "email": "contact-a@example.com", "delivery": str(value)}
    return Client().post(
        f"/hooks/{clients.slug}/feedback/", json.dumps([event]), content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {a['webhook_secret']}",
    )  # fmt: skip


def sms_status_hook(clients: Clients, a: Scene, value: Any) -> Any:
    path = f"/hooks/{clients.slug}/sms/status/?delivery={value}"
    params = {"MessageSid": f"SM{value}", "MessageStatus": "undelivered", "ErrorCode": "30003", "To": "+4915112345678"}
    signature = twilio_signature(
        auth_token=a["sms_token"], url=f"http://testserver{path}", params={k: [v] for k, v in params.items()}
    )
    return Client().post(path, params, HTTP_X_TWILIO_SIGNATURE=signature)


def _statuses(response: Any) -> Any:
    body = response.json()
    rows = body.get("results", []) if isinstance(body, dict) else []
    return response.status_code, [(row.get("status"), row.get("errors")) for row in rows]


def slot_click(clients: Clients, a: Scene, value: Any) -> Any:
    """The website snippet's click beacon, with A's public site key, on A's slot, naming ``value``'s variant."""
    body = {"slot": f"hero-{a['tenant_slug'][-1]}", "variant": value, "visitor_id": "probe-visitor"}
    return Client().post(
        f"/p/v1/click/?key={a['site_public_key']}", json.dumps(body), content_type="application/json",
        HTTP_ORIGIN="https://shop.example",
    )  # fmt: skip


def _hook_probes() -> list[Probe]:
    return [
        Probe("site snippet click: variant", (), slot_click, "slot_variant_id", error_at="variant"),
        Probe("feedback hook: delivery", (), feedback_hook, "delivery_id", expect="ignored", seen=_statuses),
        Probe("SMS status hook: delivery", ("campaigns.views_feedback GET delivery",), sms_status_hook,
              "delivery_id", expect="ignored", seen=lambda r: (r.status_code, r.content)),
    ]  # fmt: skip


# --- audiences and personalization (issue 8) -----------------------------------------------------------
DESTINATIONS, SLOTS = f"{V1}/audiences/destinations/", f"{V1}/slots/"


def new_destination(**data: Any) -> dict[str, Any]:
    return {"name": "Probe destination", "url": "https://hooks.example.com/probe", "secret": "s" * 32,
            "schedule": "interval", "interval_minutes": 1440, **data}  # fmt: skip


def _issue8_probes() -> list[Probe]:
    segment = "segment_id"
    destination = lambda a: f"{DESTINATIONS}{a['destination_id']}/"  # noqa: E731
    variants = lambda a: f"{SLOTS}{a['slot_id']}/variants/"  # noqa: E731
    variant_page = page("personalization:variant_edit", slot_id="slot_id", slot_variant_id="slot_variant_id")
    return [
        Probe("destination create: segment", (f"POST {DESTINATIONS} segment",),
              api("post", lambda a: DESTINATIONS, lambda a, v: new_destination(segment=v)),
              segment, error_at="segment"),
        Probe("destination update: segment", (f"PATCH {DESTINATIONS}{{destination_id}}/ segment",),
              api("patch", destination, lambda a, v: {"segment": v}), segment, error_at="segment"),
        Probe("destination replace: segment", (f"PUT {DESTINATIONS}{{destination_id}}/ segment",),
              api("put", destination, lambda a, v: new_destination(segment=v)), segment, error_at="segment"),
        Probe("exports by segment", (f"GET {V1}/audiences/exports/ segment",),
              api_query("get", lambda a, v: f"{V1}/audiences/exports/?segment={v}"), segment, expect="ignored"),
        Probe("exports by destination", (f"GET {V1}/audiences/exports/ destination",),
              api_query("get", lambda a, v: f"{V1}/audiences/exports/?destination={v}"), "destination_id",
              expect="ignored"),
        Probe("slot variant create: target segment", (f"POST {SLOTS}{{slot_id}}/variants/ target_segment",),
              api("post", variants, lambda a, v: {"name": "Probe", "target": "segment", "target_segment": v,
                                                  "headline": "Hi"}),
              segment, error_at="target_segment"),
        Probe("slot variant update: target segment",
              (f"PATCH {SLOTS}{{slot_id}}/variants/{{slot_variant_id}}/ target_segment",),
              api("patch", lambda a: f"{variants(a)}{a['slot_variant_id']}/",
                  lambda a, v: {"target": "segment", "target_segment": v}),
              segment, error_at="target_segment"),
        Probe("web destination: segment", ("audiences.forms.DestinationForm.segment",),
              web_form(page("audiences:destination_edit", destination_id="destination_id"), "segment"),
              segment, error_at="segment"),
        Probe("web destination create: segment preset", ("audiences.views GET segment",),
              web_get(lambda a, slug, v: page("audiences:destination_create")(a, slug) + f"?segment={v}"),
              segment, expect="ignored"),
        Probe("web audiences: segment to download", ("audiences.forms.SegmentChoiceForm.segment",),
              web_get(lambda a, slug, v: page("audiences:home")(a, slug) + f"?segment={v}&format=google"),
              segment, error_at="segment"),
        Probe("web slot variant: target segment", ("personalization.forms.VariantForm.target_segment",),
              web_form(variant_page, "target_segment", {"target": "segment"}), segment, error_at="target_segment"),
        Probe("web personalization preview: contact", ("personalization.forms.PreviewForm.contact",),
              web_get(lambda a, slug, v: page("personalization:preview")(a, slug) + f"?contact={v}"),
              "contact_id", error_at="contact"),
    ]  # fmt: skip


def probes() -> list[Probe]:
    return _api_probes() + _web_probes() + _hook_probes() + _issue8_probes()


# Discovered fields that are not references, each with why.
NOT_REFERENCES: dict[str, str] = {
    "campaigns.forms.SenderForm.sms_sender": "the SMS sender id shown to recipients (text), not an object",
    "personalization.forms.SiteKeyForm.require_signed_identify": "a yes/no switch (its help text speaks of user ids)",
    "personalization.public GET slots": "slot keys (slugs) looked up in the site key's own tenant only, not ids",
}


# --- running a probe -------------------------------------------------------------------------
def _ids_out(text: str, *values: Any) -> str:
    """``text`` with each value blanked where it stands alone: not inside a word, a date (2026-12-01),
    a time or a decimal, which a small id's digits would otherwise match."""
    for value in values:
        if value not in (None, ""):
            text = re.sub(rf"(?<!\w)(?<!\w[.:-]){re.escape(str(value))}(?!\w|[.:-]\w)", "<id>", text)
    return text


def form_errors(response: Any) -> dict[str, list[str]]:
    """Every error of every form (and formset) the response rendered, by the field's HTML name."""
    errors: dict[str, list[str]] = {}
    contexts = response.context or []
    forms: dict[int, BaseForm] = {}  # by id: a form is in the context of every template it is included in
    for context in contexts if isinstance(contexts, list) else [contexts]:
        for value in context.flatten().values():
            for item in value if isinstance(value, list) else [value]:
                item = getattr(item, "formset", None) or getattr(item, "form", None) or item  # the admin's wrappers
                if isinstance(item, BaseForm):
                    forms[id(item)] = item
                elif isinstance(item, BaseFormSet):
                    forms.update((id(form), form) for form in item.forms)
    for form in forms.values():
        validated = getattr(form, "_errors", None)  # None: the view never validated it; do not clean it here
        if not form.is_bound or validated is None:
            continue
        for name, messages in validated.items():
            key = "__all__" if name == "__all__" else form.add_prefix(name)
            errors.setdefault(key, []).extend(str(m) for m in messages)
    return errors


def outcome(response: Any, *values: Any) -> dict[str, Any]:
    """What the client learns, with the probed id blanked out: status, body or form errors, messages."""
    seen: dict[str, Any] = {"status": response.status_code}
    content_type = response.get("Content-Type", "")
    if "json" in content_type:
        seen["body"] = _ids_out(json.dumps(response.json(), sort_keys=True), *values)
    elif response.status_code in (301, 302, 303):
        seen["location"] = _ids_out(response["Location"], *values)
    else:
        seen["errors"] = {k: _ids_out(" ".join(v), *values) for k, v in form_errors(response).items()}
    storage = getattr(getattr(response, "wsgi_request", None), "_messages", None)
    # The messages this request added (earlier ones wait in the cookie: the probes follow no redirect).
    seen["messages"] = [_ids_out(str(m), *values) for m in getattr(storage, "_queued_messages", [])]
    return seen


def error_text(response: Any, at: str) -> str | None:
    """The error reported on ``at`` (a field path suffix), or None when the request was not refused there."""
    if "json" in response.get("Content-Type", ""):
        body = response.json()
        found: list[str] = []
        if response.status_code == 400:
            for key, messages in (body.get("error", {}).get("fields") or {}).items():
                if key.endswith(at):  # "variants[0].target_segment" ends with "target_segment"
                    found.append(json.dumps(messages, sort_keys=True))
        for row in body.get("results", []) if isinstance(body, dict) else []:  # batches: per-row errors
            if row.get("status") == "error" and at in (row.get("errors") or {}):
                found.append(json.dumps(row["errors"][at]))
        return " ".join(found) or None
    errors = form_errors(response)
    matched = [" ".join(messages) for key, messages in errors.items() if key == at or key.endswith(f"-{at}")]
    if not matched and at == "rules":  # the rule editor reports a rule's path, e.g. rules (all[0].segment)
        matched = [" ".join(m) for k, m in errors.items() if "segment" in " ".join(m)]
    return " ".join(matched) or None


def succeeded(response: Any) -> bool:
    if response.status_code in (301, 302, 303):
        return True
    return response.status_code < 300 and not form_errors(response)


def _leaks(response: Any, *sent: Any) -> list[str]:
    """B's markers in the response, but for what the client sent itself (an upsert echoes its key)."""
    body = response.content.decode(errors="replace") if not getattr(response, "streaming", False) else ""
    echoed = " ".join(str(value) for value in sent)
    return [marker for marker in MARKERS["b"] if marker in body and marker not in echoed]


def run_probe(
    probe: Probe, clients: Clients, a: Scene, b: Scene, before: dict[str, tuple[int, str]] | None = None
) -> list[str]:
    """Send the probe's three requests (in one savepoint, rolled back after); return what went wrong.

    ``before`` is B's fingerprint (the same before every probe: each one is rolled back)."""
    if probe.values is not None:
        own, foreign, missing = probe.values
    else:
        own, foreign, missing = a[probe.own_key or probe.key], b[probe.key], MISSING_ID
    problems: list[str] = []
    before = before or tenant_fingerprint(b.tenant.pk)
    responses: dict[str, Any] = {}
    clients.pages.clear()
    writes = table_writes()
    with transaction.atomic():
        # B's id and the missing one first: refused, they change nothing, and A's own try comes last.
        for label, value in (("foreign", foreign), ("missing", missing), ("own", own)):
            response = responses[label] = probe.send(clients, a, value)
            if response.status_code >= 500:
                problems.append(f"{label} id: {response.status_code}")
            leaked = _leaks(response, foreign, own, missing)
            if leaked:
                problems.append(f"{label} id: the response shows tenant B's {leaked}")
        written = written_since(writes)  # only the tables the requests wrote can hold a change
        changed = fingerprint_changes(before, tenant_fingerprint(b.tenant.pk, written))
        if changed:
            problems.append(f"tenant B's rows changed: {changed}")
        crossed = cross_tenant_references(written)
        if crossed:
            problems.append(f"rows point across tenants: {crossed}")
        transaction.set_rollback(True)
    if probe.seen is not None:
        foreign_seen, missing_seen = probe.seen(responses["foreign"]), probe.seen(responses["missing"])
    else:
        foreign_seen, missing_seen = outcome(responses["foreign"], foreign), outcome(responses["missing"], missing)
    if probe.expect == "identity":
        problems += [
            f"{label} key was not accepted: {outcome(r)}" for label, r in responses.items() if not succeeded(r)
        ]
        return problems
    if foreign_seen != missing_seen:
        problems.append(f"B's id and a missing id answer differently: {foreign_seen} vs {missing_seen}")
    if probe.expect == "refused" and error_text(responses["foreign"], probe.error_at) is None:
        problems.append(f"B's id was not refused on {probe.error_at}: {foreign_seen}")
    if probe.expect == "not_found" and responses["foreign"].status_code != 404:
        problems.append(f"B's id: {responses['foreign'].status_code}, not 404")
    if probe.own_succeeds and not succeeded(responses["own"]):
        problems.append(f"A's own id was refused (the probe's request is wrong): {outcome(responses['own'])}")
    return problems
