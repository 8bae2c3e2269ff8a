"""Push notifications through an FCM-style HTTP API (FCM HTTP v1 shape): one request per device token."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from campaigns.channels.base import OutgoingPush, SendResult, SendStatus, status_for_http
from campaigns.channels.http import (
    HttpChannelBackend,
    HttpResponse,
    OutboundHttp,
    OutboundHttpError,
    provider_error_text,
    result_for_error,
    result_for_response,
)


@dataclass(frozen=True)
class PushConfig:
    """A tenant's push provider project."""

    base_url: str  # e.g. https://fcm.googleapis.com/v1/projects/<project-id>
    server_key: str = field(repr=False)  # sent as a bearer token

    @property
    def send_url(self) -> str:
        return f"{self.base_url.rstrip('/')}/messages:send"


def _token_is_gone(response: HttpResponse) -> bool:
    """Return whether the provider says the device token is no longer registered."""
    if response.status == 404:
        return True
    document = response.json()
    error = document.get("error") if isinstance(document, dict) else None
    details = error.get("details", []) if isinstance(error, dict) else []
    return any(isinstance(item, dict) and item.get("errorCode") == "UNREGISTERED" for item in details)


class FcmPushBackend(HttpChannelBackend[OutgoingPush]):
    """POST {base_url}/messages:send per device token, with ``Authorization: Bearer <server key>``.

    A message counts as sent when at least one of the contact's devices accepted it: retrying
    it for the others would notify the accepted devices twice. Tokens the provider no longer
    knows come back in ``invalid_tokens``.
    """

    def __init__(self, config: PushConfig, *, http: OutboundHttp | None = None) -> None:
        super().__init__(http=http)
        self.config = config

    def payload(self, message: OutgoingPush, token: str) -> dict[str, object]:
        data = dict(message.data)
        if message.deep_link:
            data["deep_link"] = message.deep_link
        body: dict[str, object] = {"token": token, "notification": {"title": message.title, "body": message.body}}
        if data:
            body["data"] = data  # FCM wants string values only; the dataclass says so
        return {"message": body}

    def send_one(self, message: OutgoingPush) -> SendResult:
        tokens = list(dict.fromkeys(token for token in message.tokens if token))
        if not tokens:
            return SendResult.permanent("the contact has no device tokens")
        accepted: list[str] = []
        gone: list[str] = []
        failures: list[SendResult] = []
        for token in tokens:
            try:
                response = self.http.request(
                    "POST",
                    self.config.send_url,
                    body=orjson.dumps(self.payload(message, token)),
                    headers={
                        "Authorization": f"Bearer {self.config.server_key}",
                        "Content-Type": "application/json; charset=utf-8",
                    },
                )
            except OutboundHttpError as exc:
                failures.append(result_for_error(exc))
                continue
            if status_for_http(response.status) is SendStatus.SENT:
                document = response.json()
                accepted.append(str(document.get("name", "")) if isinstance(document, dict) else "")
                continue
            if _token_is_gone(response):
                gone.append(token)
            failures.append(result_for_response(response, error=provider_error_text(response)))
        errors = "; ".join(dict.fromkeys(failure.error for failure in failures))
        if accepted:
            return SendResult.sent(accepted[0], error=errors, invalid_tokens=tuple(gone))
        transient = [failure for failure in failures if failure.status is SendStatus.FAILED_TRANSIENT]
        if transient:
            retry_after = max((f.retry_after for f in transient if f.retry_after is not None), default=None)
            return SendResult.transient(errors, retry_after=retry_after, invalid_tokens=tuple(gone))
        return SendResult.permanent(errors, invalid_tokens=tuple(gone))
