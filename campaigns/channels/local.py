"""Backends that send nothing: each message becomes one JSON line, on the console or in a folder.

For the embedded default and development: every channel works out of the box, and what
"went out" can be read back. Webhook secrets are never written.
"""

from __future__ import annotations

import dataclasses
import sys
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson

from campaigns.channels.base import OutgoingEmail, OutgoingMessage, SendResult

_NOT_WRITTEN = frozenset({"secret"})


def message_record(message: OutgoingMessage, provider_message_id: str) -> dict[str, Any]:
    """Return the JSON-ready record of a message as a local backend writes it."""
    fields = {
        field.name: getattr(message, field.name)
        for field in dataclasses.fields(message)
        if field.name not in _NOT_WRITTEN
    }
    return {
        "channel": message.channel,
        "provider_message_id": provider_message_id,
        "sent_at": datetime.now(UTC).isoformat(),
        **fields,
    }


def _provider_id(message: OutgoingMessage) -> str:
    if isinstance(message, OutgoingEmail):
        return message.all_headers()["Message-ID"]
    return f"local-{uuid.uuid4().hex}"


def _line(message: OutgoingMessage, provider_message_id: str) -> bytes:
    record = message_record(message, provider_message_id)
    return orjson.dumps(record, default=str) + b"\n"


class ConsoleBackend:
    """Write each message as a JSON line to a stream (standard output by default)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    def send_many(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        return list(self.send_each(messages))

    def send_each(self, messages: Iterable[OutgoingMessage]) -> Iterator[SendResult]:
        stream = self.stream or sys.stdout
        for message in messages:
            provider_id = _provider_id(message)
            stream.write(_line(message, provider_id).decode())
            stream.flush()
            yield SendResult.sent(provider_id)

    def close(self) -> None:
        """Nothing to release."""


class FileBackend:
    """Write each batch to its own JSON-lines file in a folder (like Django's file email backend)."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def send_many(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        if not messages:
            return []
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        path = self.directory / f"{stamp}-{uuid.uuid4().hex[:12]}.jsonl"
        provider_ids = [_provider_id(message) for message in messages]
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as out:
                for message, provider_id in zip(messages, provider_ids, strict=True):
                    out.write(_line(message, provider_id))
        except OSError as exc:  # a full disk or a missing permission can be fixed: try again later
            return [SendResult.transient(f"could not write {path.name}: {exc}") for _ in messages]
        return [SendResult.sent(provider_id) for provider_id in provider_ids]

    def send_each(self, messages: Iterable[OutgoingMessage]) -> Iterator[SendResult]:
        # A batch is one file, written whole: its results come together.
        yield from self.send_many(list(messages))

    def close(self) -> None:
        """Nothing to release: each batch's file is closed when written."""
