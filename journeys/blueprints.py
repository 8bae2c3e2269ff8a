"""Built-in journeys a tenant starts from, then edits: welcome, abandoned cart, post-purchase,
re-engagement and lifecycle nurture.

A blueprint is plain data (settings and steps in the shape ``journey_create`` takes) plus the
segments and attributes it needs, which ``journey_from_blueprint`` creates when the tenant lacks them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Blueprint:
    key: str
    name: str
    description: str
    settings: dict[str, Any]
    steps: list[dict[str, Any]]
    # Segments by name → rule tree, created when missing; settings refer to them as "segment:<name>".
    segments: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Custom attributes key → (label, type), defined when missing.
    attributes: dict[str, tuple[str, str]] = field(default_factory=dict)


def _email(subject: str, body: str, cta_label: str = "", cta_url: str = "", name: str = "Everyone") -> dict[str, Any]:
    return {
        "name": name, "target": "default", "subject": subject,
        "html_body": f"<p>Hi {{{{ contact.first_name | default: 'there' }}}},</p><p>{body}</p>",
        "cta_label": cta_label, "cta_url": cta_url,
    }  # fmt: skip


def _send(key: str, name: str, exits: str | None, variants: list[dict[str, Any]], channel: str = "email") -> dict:
    return {
        "key": key, "kind": "send", "name": name, "config": {"channel": channel},
        "exits": {"next": exits}, "content": {"variants": variants},
    }  # fmt: skip


def _wait(key: str, amount: int, unit: str, exits: str | None) -> dict[str, Any]:
    return {
        "key": key, "kind": "wait", "name": f"Wait {amount} {unit.removesuffix('s') if amount == 1 else unit}",
        "config": {"duration": {"amount": amount, "unit": unit}}, "exits": {"next": exits},
    }  # fmt: skip


def _branch(key: str, name: str, rules: dict[str, Any], yes: str | None, no: str | None) -> dict[str, Any]:
    return {"key": key, "kind": "branch", "name": name, "config": {"rules": rules}, "exits": {"yes": yes, "no": no}}


def _stage_is(stage: str) -> dict[str, Any]:
    return {"all": [{"type": "field", "field": "lifecycle_stage", "op": "eq", "value": stage}]}


WELCOME = Blueprint(
    key="welcome",
    name="Welcome series",
    description="New leads get three educational emails over a week: who you are, how to get started, "
    "and the best of what others learnt.",
    settings={"trigger": "stage_changed", "trigger_stage": "lead", "entry": "once", "goal_event": "purchase"},
    steps=[
        _send("s1", "Welcome", "s2", [_email("Welcome aboard", "Thanks for joining us. Here is what to expect.",
                                             "Get started", "https://example.com/start")]),
        _wait("s2", 2, "days", "s3"),
        _send("s3", "How to get started", "s4", [_email("Getting started in 3 steps", "A short guide to the "
                                                        "first things most people do.", "Read the guide",
                                                        "https://example.com/guide")]),
        _wait("s4", 5, "days", "s5"),
        _send("s5", "Tips from customers", None, [_email("What others learnt", "Three tips from customers "
                                                         "like you.", "See the tips", "https://example.com/tips")]),
    ],
)  # fmt: skip

ABANDONED_CART = Blueprint(
    key="abandoned_cart",
    name="Abandoned cart",
    description="Wait an hour for a purchase; if none, an email; a day later, if still none, an SMS to "
    "those who agreed to texts.",
    settings={"trigger": "event", "trigger_event": "cart_abandoned", "entry": "cooldown", "cooldown_days": 1,
              "goal_event": "purchase"},
    steps=[
        {"key": "s1", "kind": "wait_event", "name": "Wait 1 hour for a purchase",
         "config": {"event": "purchase", "timeout": {"amount": 1, "unit": "hours"}},
         "exits": {"happened": None, "timed_out": "s2"}},
        _send("s2", "Cart reminder email", "s3", [_email("You left something behind", "Your cart is waiting "
                                                         "for you.", "Back to my cart", "https://example.com/cart")]),
        _wait("s3", 1, "days", "s4"),
        _branch("s4", "Agreed to texts?", {"all": [{"type": "consent", "channel": "sms", "purpose": "marketing",
                                                    "status": "granted"}]}, "s5", None),
        _send("s5", "Cart reminder SMS", None, [{"name": "Everyone", "target": "default",
                                                 "sms_body": "Your cart is still waiting: https://example.com/cart"}],
              channel="sms"),
    ],
)  # fmt: skip

POST_PURCHASE = Blueprint(
    key="post_purchase",
    name="Post-purchase follow-up",
    description="A thank-you right after a purchase, a review request a week later, then a cross-sell.",
    settings={"trigger": "event", "trigger_event": "purchase", "entry": "cooldown", "cooldown_days": 14},
    steps=[
        _send("s1", "Thank you", "s2", [_email("Thank you for your order", "We are preparing it now.",
                                               "Track my order", "https://example.com/orders")]),
        _wait("s2", 7, "days", "s3"),
        _send("s3", "Review request", "s4", [_email("How was it?", "Tell us what you think in one minute.",
                                                    "Write a review", "https://example.com/review")]),
        _wait("s4", 3, "days", "s5"),
        _send("s5", "Cross-sell", None, [_email("You might also like", "Picked for you from what goes well "
                                                "with your order.", "See the picks", "https://example.com/picks")]),
    ],
)  # fmt: skip

INACTIVE_60 = "No engagement for 60 days"
RE_ENGAGEMENT = Blueprint(
    key="re_engagement",
    name="Re-engagement (win-back and sunset)",
    description="Contacts without engagement for 60 days get a win-back offer; those still inactive two "
    "weeks later are tagged sunset, which campaigns can exclude to protect deliverability.",
    settings={"trigger": "segment_entered", "trigger_segment_id": f"segment:{INACTIVE_60}", "entry": "cooldown",
              "cooldown_days": 90},
    segments={INACTIVE_60: {"all": [{"type": "field", "field": "last_engaged_at", "op": "more_than_days_ago",
                                     "value": 60}]}},
    attributes={"tags": ("Tags", "list")},
    steps=[
        _send("s1", "Win-back offer", "s2", [_email("We miss you: 20% off", "Come back and take 20% off your "
                                                    "next order.", "Claim my offer", "https://example.com/winback")]),
        _wait("s2", 14, "days", "s3"),
        _branch("s3", "Engaged since?", {"all": [{"type": "engagement", "action": "any", "op": "performed",
                                                  "window": {"within_days": 14}}]}, None, "s4"),
        {"key": "s4", "kind": "update", "name": "Sunset: stop mailing",
         "config": {"add_to_list": {"attribute": "tags", "values": ["sunset"]}}, "exits": {"next": None}},
    ],
)  # fmt: skip

_STAGE_CTAS = [
    ("new_visitor", "Learn more", "Discover what we do", "https://example.com/learn"),
    ("lead", "Start your free trial", "Try it free for 14 days", "https://example.com/trial"),
    ("first_time_buyer", "Your second order", "10% off your second order", "https://example.com/second"),
    ("repeat_customer", "Join the loyalty programme", "Points on every order", "https://example.com/loyalty"),
    ("loyal_advocate", "Refer a friend", "Give 20%, get 20%", "https://example.com/refer"),
]


def _nurture_steps() -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    for index, (stage, cta, subject, url) in enumerate(_STAGE_CTAS):
        branch, send = f"b{index + 1}", f"m{index + 1}"
        following = f"b{index + 2}" if index + 1 < len(_STAGE_CTAS) else None
        steps.append(_branch(branch, f"Stage: {stage.replace('_', ' ')}?", _stage_is(stage), send, following))
        steps.append(_send(send, cta, None, [_email(subject, f"{cta}: the next step for you.", cta, url)]))
    return steps


LIFECYCLE_NURTURE = Blueprint(
    key="lifecycle_nurture",
    name="Lifecycle nurture",
    description="On every change of lifecycle stage, the call to action of the new stage: learn more, start "
    "a free trial, a second-purchase offer, the loyalty programme, referrals.",
    settings={"trigger": "stage_changed", "trigger_stage": "", "entry": "cooldown", "cooldown_days": 1},
    steps=_nurture_steps(),
)

BLUEPRINTS: dict[str, Blueprint] = {
    b.key: b for b in (WELCOME, ABANDONED_CART, POST_PURCHASE, RE_ENGAGEMENT, LIFECYCLE_NURTURE)
}
