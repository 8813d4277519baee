"""Slack incoming webhooks: `POST <webhook url>` with `{text, blocks}`; answers `ok` or an error word."""

from __future__ import annotations

import aiohttp
import orjson

from services.alerts.domain.content import Notification
from services.alerts.notify.channel import raise_for_status, require_url
from services.alerts.notify.http import post
from services.alerts.notify.secrets import SecretLookup

_JSON = {"Content-Type": "application/json"}


class SlackWebhookChannel:
    kind = "slack_webhook"

    def __init__(self, session: aiohttp.ClientSession, secrets: SecretLookup, *,
                 timeout_s: float = 10.0) -> None:
        self._session = session
        self._secrets = secrets
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def send(self, notification: Notification) -> None:
        target = notification.target
        what = target.key
        url = require_url(self._secrets, target)
        payload = notification.slack_payload()
        if target.channel:
            payload["channel"] = target.channel
        answer = await post(self._session, url, orjson.dumps(payload), _JSON, client_timeout=self._timeout,
                            what=what, url_name="webhook URL")
        raise_for_status(what, answer.status, text=answer.text(), retry_after=answer.retry_after)
