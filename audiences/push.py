"""Pushing an audience file to a destination: parts, signatures and the answer's meaning.

A file goes in parts of ``AUDIENCE_PUSH_PART_ROWS`` rows (each a complete CSV with the header
row), one signed POST per part, so a million rows never sit in memory and a failed push resumes at
the part that failed. Signed as the webhook channel signs (campaigns/channels/webhook.py):
``X-Segmentor-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`` with
``X-Segmentor-Timestamp``; ``X-Segmentor-Delivery`` names the export and part, so a receiver can
drop a repeat. Requests go through the SSRF-safe client (campaigns/channels/http.py): only public
addresses, also after redirects.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from django.conf import settings

from audiences.models import AudienceExport
from campaigns.channels.base import SendResult, SendStatus
from campaigns.channels.http import (
    OutboundHttp,
    OutboundHttpError,
    Timeouts,
    provider_error_text,
    result_for_error,
    result_for_response,
)
from campaigns.channels.webhook import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, webhook_signature

EXPORT_HEADER = "X-Segmentor-Export"
PART_HEADER = "X-Segmentor-Part"
FORMAT_HEADER = "X-Segmentor-Format"
KIND_HEADER = "X-Segmentor-Kind"
SEGMENT_HEADER = "X-Segmentor-Segment"
SEGMENT_VERSION_HEADER = "X-Segmentor-Segment-Version"
FILE_SHA_HEADER = "X-Segmentor-File-Sha256"
# A part is megabytes: the receiver gets longer to answer than a webhook does.
PUSH_TIMEOUTS = Timeouts(connect=5.0, read=60.0, total=120.0)


def part_rows() -> int:
    return max(1, int(getattr(settings, "AUDIENCE_PUSH_PART_ROWS", 50_000)))


def parts_for(rows: int) -> int:
    """How many parts a file of ``rows`` rows goes in (an empty audience is one part: the header)."""
    size = part_rows()
    return max(1, -(-rows // size))


def file_parts(stream: IO[bytes], *, skip_parts: int = 0) -> Iterator[bytes]:
    """The parts of a stored file (header row first in each), from part ``skip_parts + 1`` on.

    Rows are single lines: every value is hex, an ISO code or a cleaned postal code.
    """
    header = stream.readline()
    size = part_rows()
    for _ in range(skip_parts * size):
        if not stream.readline():
            break
    first = True
    while True:
        lines = [line for line in (stream.readline() for _ in range(size)) if line]
        if not lines and not (first and skip_parts == 0):
            return
        yield header + b"".join(lines)
        first = False
        if len(lines) < size:
            return


@dataclass(frozen=True)
class PartAnswer:
    """What became of one part: sent, or why not and whether trying again can help."""

    result: SendResult

    @property
    def sent(self) -> bool:
        return self.result.ok

    @property
    def transient(self) -> bool:
        return self.result.status is SendStatus.FAILED_TRANSIENT


def push_part(
    http: OutboundHttp,
    *,
    export: AudienceExport,
    url: str,
    secret: str,
    body: bytes,
    number: int,
    total: int,
    now: float | None = None,
) -> PartAnswer:
    """POST one part, signed; never raises for the destination's failure."""
    timestamp = str(int(time.time() if now is None else now))
    headers = {
        "Content-Type": "text/csv; charset=utf-8",
        SIGNATURE_HEADER: webhook_signature(secret=secret, timestamp=timestamp, body=body),
        TIMESTAMP_HEADER: timestamp,
        DELIVERY_HEADER: f"audience-export-{export.pk}-part-{number}",
        EXPORT_HEADER: str(export.pk),
        PART_HEADER: f"{number}/{total}",
        FORMAT_HEADER: export.format,
        KIND_HEADER: export.kind,
        SEGMENT_HEADER: str(export.segment_id or ""),
        SEGMENT_VERSION_HEADER: str(export.segment_version),
        FILE_SHA_HEADER: export.file_sha256,
    }
    try:
        response = http.request("POST", url, body=body, headers=headers)
    except OutboundHttpError as exc:
        return PartAnswer(result_for_error(exc))
    error = provider_error_text(response) if response.status >= 300 else ""
    return PartAnswer(result_for_response(response, error=error))
