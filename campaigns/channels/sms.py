"""SMS through a Twilio-style REST API (Twilio itself, or any provider that copies its shape)."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

from campaigns.channels.base import OutgoingSms, SendResult, SendStatus, status_for_http
from campaigns.channels.http import HttpChannelBackend, OutboundHttp, provider_error_text, result_for_response

E164 = re.compile(r"^\+[1-9]\d{6,14}$")


@dataclass(frozen=True)
class SmsConfig:
    """A tenant's SMS provider account."""

    base_url: str  # e.g. https://api.twilio.com/2010-04-01
    account_sid: str
    auth_token: str = field(repr=False)
    sender: str  # default From: a number in E.164 or an alphanumeric sender id
    status_callback: str = ""  # the provider reports delivery receipts here

    @property
    def messages_url(self) -> str:
        return f"{self.base_url.rstrip('/')}/Accounts/{quote(self.account_sid, safe='')}/Messages.json"


class TwilioSmsBackend(HttpChannelBackend[OutgoingSms]):
    """POST {base_url}/Accounts/{sid}/Messages.json with To, From, Body; HTTP basic auth."""

    def __init__(self, config: SmsConfig, *, http: OutboundHttp | None = None) -> None:
        super().__init__(http=http)
        self.config = config
        credentials = f"{config.account_sid}:{config.auth_token}".encode()
        self._authorization = "Basic " + base64.b64encode(credentials).decode("ascii")

    def send_one(self, message: OutgoingSms) -> SendResult:
        if not E164.match(message.to):
            return SendResult.permanent("the recipient is not a phone number in E.164 form")
        if not message.text.strip():
            return SendResult.permanent("the message is empty")
        form = {"To": message.to, "From": message.sender or self.config.sender, "Body": message.text}
        if self.config.status_callback:
            form["StatusCallback"] = self.config.status_callback
        response = self.http.request(
            "POST",
            self.config.messages_url,
            body=urlencode(form).encode(),
            headers={
                "Authorization": self._authorization,
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
        )
        if status_for_http(response.status) is SendStatus.SENT:
            document = response.json()
            sid = document.get("sid", "") if isinstance(document, dict) else ""
            return SendResult.sent(str(sid))
        return result_for_response(response, error=provider_error_text(response))
