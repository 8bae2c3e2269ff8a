"""Generated engagement with a known truth, for the preferred-channel tests: who engages on which channel.

``engagement_world`` makes a few contacts of each kind below, with their consent, addresses and a
history of messages (deliveries of hidden history campaigns on each channel, their human and machine
opens and clicks) or engagements imported as contact events. ``EXPECTED`` is what the rule must choose
for each kind among email and SMS (the push kinds among email, SMS and push). ``random_history`` makes
a noisy history for many contacts, to hold the SQL recompute to the Python reference.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any

from analytics.models import MessageEvent
from campaigns.models import Campaign, CampaignRun, Delivery
from contacts.consent import ConsentEvidence, consent_change
from contacts.models import Contact, Event
from tenants.audit import Actor

ACTOR = Actor.system("test")
API = ConsentEvidence(source="api")
DAY = dt.timedelta(days=1)

# kind → (channel chosen, reason) among ["email", "sms"] (push kinds: ["email", "sms", "push"]).
EXPECTED: dict[str, tuple[str, str]] = {
    "email_fan": ("email", "most_engaged"),  # opens most emails, ignores SMS
    "sms_fan": ("sms", "most_engaged"),  # clicks SMS, ignores email (one machine open, which does not count)
    "sms_imported": ("sms", "most_engaged"),  # SMS clicks recorded by the tenant's link shortener (contact events)
    "lapsed_sms": ("email", "most_engaged"),  # clicked every SMS five months ago, opens email now: recency wins
    "quiet": ("email", "no_engagement"),  # consents to both, never engaged: the first channel
    "email_only": ("email", "only_consented"),  # clicks SMS, but consented to email only
    "no_phone": ("email", "only_consented"),  # SMS consent, but no phone number
    "no_consent": ("email", "no_consent"),  # consented to nothing: the first channel, skipped when sent
    "push_fan": ("push", "most_engaged"),  # taps pushes
}
PUSH_KINDS = frozenset({"push_fan"})


@dataclass
class History:
    """Messages of hidden history campaigns (one per channel), written directly."""

    tenant: Any
    now: dt.datetime
    campaigns: dict[str, Campaign] = field(default_factory=dict)
    runs: dict[tuple[str, int], CampaignRun] = field(default_factory=dict)
    sent: dict[tuple[int, str], int] = field(default_factory=dict)  # (contact, channel) → messages so far
    deliveries: list[Delivery] = field(default_factory=list)
    events: list[tuple[int, str, str, dt.datetime]] = field(default_factory=list)  # index, kind, machine, at
    imported: list[Event] = field(default_factory=list)

    def run(self, contact: Contact, channel: str) -> CampaignRun:
        """A run of the channel's history campaign that has no message to the contact yet."""
        if channel not in self.campaigns:
            self.campaigns[channel] = Campaign.objects.create(
                tenant=self.tenant, name=f"History by {channel}", channel=channel, kind=Campaign.Kind.JOURNEY
            )
        number = self.sent.get((contact.pk, channel), 0) + 1
        self.sent[(contact.pk, channel)] = number
        if (channel, number) not in self.runs:
            self.runs[(channel, number)] = CampaignRun.objects.create(
                tenant=self.tenant, campaign=self.campaigns[channel], number=number,
                scheduled_for=self.now - 200 * DAY + dt.timedelta(minutes=number), status=CampaignRun.Status.DONE,
            )  # fmt: skip
        return self.runs[(channel, number)]

    def message(
        self, contact: Contact, channel: str, days_ago: float, *, opened: bool = False, clicked: bool = False,
        machine_open: bool = False,
    ) -> None:  # fmt: skip
        """A message sent ``days_ago``, and what the contact (or a machine) did with it an hour later."""
        run = self.run(contact, channel)
        at = self.now - dt.timedelta(days=days_ago)
        self.deliveries.append(
            Delivery(tenant=self.tenant, run=run, contact=contact, status=Delivery.Status.SENT, sent_at=at)
        )
        index = len(self.deliveries) - 1
        if opened:
            self.events.append((index, MessageEvent.Kind.OPEN, "", at + dt.timedelta(hours=1)))
        if clicked:
            self.events.append((index, MessageEvent.Kind.CLICK, "", at + dt.timedelta(hours=1, minutes=1)))
        if machine_open:
            self.events.append((index, MessageEvent.Kind.OPEN, "apple_mpp", at + dt.timedelta(seconds=5)))

    def engaged_elsewhere(self, contact: Contact, name: str, days_ago: float, *, source: str = "api") -> None:
        """An engagement another system recorded (or, with source "tracking", our own tracking's copy)."""
        self.imported.append(
            Event(
                tenant=self.tenant,
                contact=contact,
                name=name,
                occurred_at=self.now - dt.timedelta(days=days_ago),
                source=source,
            )
        )

    def save(self) -> None:
        made = Delivery.objects.bulk_create(self.deliveries, batch_size=1_000)
        MessageEvent.objects.bulk_create(
            [
                MessageEvent(
                    tenant=self.tenant,
                    delivery_id=made[index].pk,
                    campaign_id=made[index].run.campaign_id,
                    contact_id=made[index].contact_id,
                    kind=kind,
                    machine=machine,
                    occurred_at=at,
                )
                for index, kind, machine, at in self.events
            ],
            batch_size=1_000,
        )
        Event.objects.bulk_create(self.imported, batch_size=1_000)
        self.deliveries, self.events, self.imported = [], [], []


def person(tenant: Any, name: str, *, consents: tuple[str, ...], purpose: str = "marketing", **fields: Any) -> Contact:
    contact = Contact.objects.create(tenant=tenant, first_name=name.split("-")[0].title(), **fields)
    for channel in consents:
        consent_change(contact=contact, channel=channel, purpose=purpose, status="granted", evidence=API, actor=ACTOR)
    return contact


def _addresses(name: str, index: int) -> dict[str, Any]:
    return {"email": f"{name}-{index}@example.com", "phone": f"+49151{index:08d}"}


def engagement_world(tenant: Any, now: dt.datetime, *, per_kind: int = 2) -> dict[str, list[Contact]]:
    """``per_kind`` contacts of each kind of ``EXPECTED``, with their history saved."""
    history = History(tenant, now)
    made: dict[str, list[Contact]] = {kind: [] for kind in EXPECTED}
    serial = 0
    for copy in range(per_kind):
        for kind in EXPECTED:
            serial += 1
            name = f"{kind.replace('_', '')}-{copy}"
            both = ("email", "sms")
            if kind == "email_only":
                contact = person(tenant, name, consents=("email",), **_addresses(name, serial))
            elif kind == "no_phone":
                contact = person(tenant, name, consents=both, email=f"{name}@example.com")
            elif kind == "no_consent":
                contact = person(tenant, name, consents=(), **_addresses(name, serial))
            elif kind in PUSH_KINDS:
                contact = person(
                    tenant, name, consents=("email", "sms", "push"), push_tokens=[f"token-{serial}"],
                    **_addresses(name, serial),
                )  # fmt: skip
            else:
                contact = person(tenant, name, consents=both, **_addresses(name, serial))
            made[kind].append(contact)
            _history_of(history, kind, contact)
    history.save()
    return made


def _history_of(history: History, kind: str, contact: Contact) -> None:
    message = history.message
    if kind == "email_fan":
        for day in range(8):
            message(contact, "email", 3 + day * 7, opened=day % 4 != 3, clicked=day % 3 == 0)
        for day in range(6):
            message(contact, "sms", 5 + day * 9)
    elif kind == "sms_fan":
        for day in range(8):
            message(contact, "email", 2 + day * 6, machine_open=True)
        for day in range(5):
            message(contact, "sms", 4 + day * 10, clicked=day != 2)
    elif kind == "sms_imported":
        for day in range(4):
            message(contact, "email", 3 + day * 8)
        for day in range(3):
            history.engaged_elsewhere(contact, "sms_click", 2 + day * 5)
        # Our own tracking's copies of email opens: already counted by the deliveries, not again.
        history.engaged_elsewhere(contact, "email_open", 3, source="tracking")
    elif kind == "lapsed_sms":
        for day in range(6):
            message(contact, "sms", 150 + day, clicked=True)
        for day in range(3):
            message(contact, "email", 2 + day, opened=day != 1)
    elif kind in ("email_only", "no_phone", "no_consent"):
        for day in range(4):
            message(contact, "sms", 2 + day * 3, clicked=True)
        message(contact, "email", 4)
    elif kind == "push_fan":
        for day in range(5):
            message(contact, "email", 2 + day * 4, opened=day == 0)
            message(contact, "push", 3 + day * 4, opened=day != 4)


def random_history(tenant: Any, now: dt.datetime, *, contacts: int, seed: int) -> list[Contact]:
    """Noisy histories (every channel, opens, clicks, machine opens, imported engagements, old messages)."""
    rng = random.Random(seed)
    people = Contact.objects.bulk_create(
        [Contact(tenant=tenant, first_name=f"R{i}", email=f"r{i}@example.com") for i in range(contacts)]
    )
    history = History(tenant, now)
    names = ["email_open", "email_click", "email_reply", "sms_click", "sms_reply", "push_open", "page_view"]
    for contact in people:
        for _ in range(rng.randint(0, 12)):
            channel = rng.choice(["email", "email", "sms", "push", "webhook"])
            days_ago = rng.uniform(0, 200)  # some beyond the window
            history.message(
                contact, channel, days_ago, opened=rng.random() < 0.4, clicked=rng.random() < 0.2,
                machine_open=rng.random() < 0.2,
            )  # fmt: skip
        for _ in range(rng.randint(0, 3)):
            source = rng.choice(["api", "api", "tracking"])
            history.engaged_elsewhere(contact, rng.choice(names), rng.uniform(0, 200), source=source)
    history.save()
    return people
