"""Slack incoming webhooks: `POST <webhook url>` with `{text, blocks}`; answers `ok` or an error word."""

from __future__ import annotations

import httpx
import orjson

from services.alerts.domain.content import Notification
from services.alerts.notify.channel import raise_for_status, require_url, transport_failure
from services.alerts.notify.secrets import SecretLookup
from shared.errors import PermanentFailure

_JSON = {"Content-Type": "application/json"}


class SlackWebhookChannel:
    kind = "slack_webhook"

    def __init__(self, client: httpx.AsyncClient, secrets: SecretLookup, *, timeout_s: float = 10.0) -> None:
        self._client = client
        self._secrets = secrets
        self._timeout = timeout_s

    async def send(self, notification: Notification) -> None:
        target = notification.target
        what = target.key
        url = require_url(self._secrets, target)
        payload = notification.slack_payload()
        if target.channel:
            payload["channel"] = target.channel
        try:
            response = await self._client.post(url, content=orjson.dumps(payload), headers=_JSON,
                                               timeout=self._timeout)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL):
            raise PermanentFailure(f"{what}: webhook URL is not a valid http(s) URL",
                                   code="invalid_url") from None
        except httpx.HTTPError as exc:
            raise transport_failure(exc, what) from None
        raise_for_status(response, what)
