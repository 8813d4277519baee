"""Generic webhooks signed with HMAC-SHA256.

Headers: `X-Churnsignal-Signature: sha256=<hex of HMAC-SHA256(secret, raw body)>`,
`X-Churnsignal-Timestamp: <unix seconds>` and `X-Churnsignal-Delivery: <id>` (an idempotency key: the same
for every attempt of one notification; derived from its dedup key, which is also in the body).
The timestamp is also inside the signed body (`sent_at`), so a receiver can reject replays: verify the
signature, then check that `sent_at` equals the header and is recent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable

import aiohttp

from services.alerts.domain.content import Notification
from services.alerts.notify.channel import raise_for_status, require_url
from services.alerts.notify.http import post
from services.alerts.notify.secrets import SecretLookup
from shared.errors import PermanentFailure

SIGNATURE_HEADER = "X-Churnsignal-Signature"
TIMESTAMP_HEADER = "X-Churnsignal-Timestamp"
DELIVERY_HEADER = "X-Churnsignal-Delivery"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def delivery_id(notification: Notification) -> str:
    return hashlib.sha256(notification.dedup_key.encode()).hexdigest()[:32]


def verify(secret: str, body: bytes, signature: str | None) -> bool:
    return signature is not None and hmac.compare_digest(sign(secret, body), signature)


class WebhookChannel:
    kind = "webhook"

    def __init__(self, session: aiohttp.ClientSession, secrets: SecretLookup, *, timeout_s: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._session = session
        self._secrets = secrets
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock

    async def send(self, notification: Notification) -> None:
        target = notification.target
        what = target.key
        url = require_url(self._secrets, target)
        secret = self._secrets.get(target.secret_ref)
        if secret is None:
            raise PermanentFailure(f"{what}: webhook secret not configured ({target.secret_ref})",
                                   code="not_configured")
        timestamp = str(int(self._clock()))
        body = json.dumps({**notification.webhook_body, "sent_at": int(timestamp)}, sort_keys=True,
                          separators=(",", ":"), ensure_ascii=False, default=str).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, body),
                   TIMESTAMP_HEADER: timestamp, DELIVERY_HEADER: delivery_id(notification)}
        answer = await post(self._session, url, body, headers, client_timeout=self._timeout, what=what,
                            url_name="webhook URL")
        raise_for_status(what, answer.status, text=answer.text(), retry_after=answer.retry_after)
