"""The mixed load of bench/loadtest.py: event ingest, contact upsert, segment preview and page views.

Run by bench/loadtest.py (``make loadtest``), which prepares the database and passes, through the
environment, the tenant's write key (``LOAD_API_KEY``), a logged-in session (``LOAD_SESSION``), the
workspace slug (``LOAD_SLUG``), the segment ids (``LOAD_SEGMENTS``) and the size of the contact
pool (``LOAD_POOL``: external ids ``load-0`` … ``load-<n-1>`` exist).

Each simulated client is an integration or a person in the web UI: it waits 0.5–1.5 s between
requests (``LOAD_WAIT`` to change), so 200 clients offer about 200 requests per second.
"""

from __future__ import annotations

import json
import os
import random
import uuid
from datetime import UTC, datetime
from pathlib import Path

from locust import HttpUser, between, events, task

API_KEY = os.environ.get("LOAD_API_KEY", "")
SESSION = os.environ.get("LOAD_SESSION", "")
SLUG = os.environ.get("LOAD_SLUG", "")
SEGMENTS = [int(s) for s in os.environ.get("LOAD_SEGMENTS", "").split(",") if s]
POOL = int(os.environ.get("LOAD_POOL", "1000"))
WAIT = [float(s) for s in os.environ.get("LOAD_WAIT", "0.5,1.5").split(",")]
EVENTS = ("page_view", "product_view", "add_to_cart", "purchase", "email_open")
CITIES = ("Berlin", "Hamburg", "Paris", "Lyon", "Madrid", "Leeds", "Utrecht")
ROLES = ("buyer", "engineer", "founder", "marketer")
PAGES = ("", "contacts/", "segments/", "campaigns/", "journeys/", "analytics/")
PREVIEW_RULES = {
    "all": [
        {"type": "field", "field": "country", "op": "in", "value": ["DE", "FR", "GB"]},
        {"type": "event", "name": "purchase", "op": "at_least", "count": 1, "window": {"within_days": 30}},
    ]
}


ACCEPTED: list[str] = []  # idempotency keys of events answered 2xx: bench/loadtest.py finds each stored once


@events.quitting.add_listener
def write_accepted(**_: object) -> None:
    if path := os.environ.get("LOAD_ACCEPTED_FILE"):
        Path(path).write_text("\n".join(ACCEPTED))


def external_id() -> str:
    return f"load-{random.randrange(POOL)}"


def event(name: str | None = None) -> dict[str, object]:
    name = name or random.choice(EVENTS)
    row: dict[str, object] = {
        "event": name,
        "external_id": external_id(),
        "occurred_at": datetime.now(UTC).isoformat(),
        "idempotency_key": uuid.uuid4().hex,
        "properties": {"path": f"/p/{random.randrange(500)}"},
    }
    if name == "purchase":
        row["revenue"] = f"{random.randrange(500, 20000) / 100:.2f}"
        row["currency"] = "EUR"
    return row


class Integration(HttpUser):
    """An integration posting events and contacts, and a marketer previewing segments, by API key."""

    weight = 3
    wait_time = between(*WAIT)

    def on_start(self) -> None:
        self.client.headers.update({"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})

    @task(4)
    def event_batch(self) -> None:
        body = {"events": [event() for _ in range(random.randint(10, 50))]}
        response = self.client.post("/api/v1/events/batch/", data=json.dumps(body), name="POST /api/v1/events/batch/")
        if response.ok:
            ACCEPTED.extend(str(row["idempotency_key"]) for row in body["events"])

    @task(3)
    def single_event(self) -> None:
        row = event()
        response = self.client.post("/api/v1/events/", data=json.dumps(row), name="POST /api/v1/events/")
        if response.ok:
            ACCEPTED.append(str(row["idempotency_key"]))

    @task(3)
    def contact_upsert(self) -> None:
        body = {"external_id": external_id(), "city": random.choice(CITIES), "job_role": random.choice(ROLES)}
        self.client.post("/api/v1/contacts/", data=json.dumps(body), name="POST /api/v1/contacts/ (upsert)")

    @task(1)
    def segment_preview(self) -> None:
        segment = random.choice(SEGMENTS)
        self.client.post(f"/api/v1/segments/{segment}/preview/", name="POST /api/v1/segments/:id/preview/")

    @task(1)
    def rules_preview(self) -> None:
        body = {"rules": PREVIEW_RULES}
        self.client.post("/api/v1/segments/preview/", data=json.dumps(body), name="POST /api/v1/segments/preview/")


class Marketer(HttpUser):
    """A person clicking through the web UI with a session."""

    weight = 1
    wait_time = between(*WAIT)

    def on_start(self) -> None:
        self.client.cookies.set("sessionid", SESSION)

    @task
    def page(self) -> None:
        page = random.choice(PAGES)
        self.client.get(f"/t/{SLUG}/{page}", name=f"GET /t/:slug/{page}")
