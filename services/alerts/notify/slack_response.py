"""Answers to Slack interactions through the click's `response_url` (replace the message, or tell the person
who clicked something only they see).

Sent on the channels' aiohttp session with a timeout, a few times: a transport error, a timeout, 408/425/
429 or 5xx is retried (after `Retry-After` when given, capped), any other answer is permanent (Slack says
`expired_url` or `used_url` once the URL has served its 30 minutes or 5 uses). The `response_url` is a
bearer credential: only its host is ever logged, and client errors are reported by class name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from services.alerts.notify.channel import raise_for_status
from services.alerts.notify.http import post
from shared.backoff import Backoff
from shared.errors import PermanentFailure, RetryableFailure

log = logging.getLogger(__name__)

_JSON = {"Content-Type": "application/json; charset=utf-8"}
MAX_WAIT_S = 10.0


def url_host(url: str) -> str:
    """What may be logged of a response_url: its host (the path holds the token)."""
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


def usable(url: str) -> bool:
    """An absolute http(s) URL (Slack sends https://hooks.slack.com/actions/...)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("https", "http") and bool(parts.hostname)


class SlackResponder:
    """POSTs to response_urls. `attach` the session (made in the app's lifespan) before use."""

    def __init__(self, *, timeout_s: float = 5.0, attempts: int = 3, backoff_s: float = 0.5,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._sleep = sleep

    def attach(self, session: aiohttp.ClientSession | None) -> None:
        self._session = session

    async def respond(self, url: str, message: dict[str, Any]) -> bool:
        """Deliver `message` to `url`; True once Slack took it. Never raises for a delivery problem."""
        what = f"slack response_url ({url_host(url)})"
        if self._session is None or not usable(url):
            log.warning("%s: not answered (%s)", what, "no HTTP session" if self._session is None
                        else "not an http(s) URL")
            return False
        backoff = Backoff(self._backoff_s, cap=MAX_WAIT_S)
        body = orjson.dumps(message)
        for attempt in range(1, self._attempts + 1):
            try:
                answer = await post(self._session, url, body, _JSON, client_timeout=self._timeout, what=what,
                                    url_name="response_url")
                raise_for_status(what, answer.status, text=answer.text(), retry_after=answer.retry_after)
                _check_ok(what, answer.body)
                return True
            except PermanentFailure as exc:
                log.warning("%s: refused (%s); the message stays as it was", what, _code(exc))
                return False
            except RetryableFailure as exc:
                if attempt == self._attempts:
                    log.warning("%s: failed after %d attempts (%s)", what, attempt, _code(exc))
                    return False
                delay = backoff.next()
                retry_after = exc.details.get("retry_after")
                if isinstance(retry_after, int | float) and retry_after > 0:
                    delay = min(max(delay, float(retry_after)), MAX_WAIT_S)
                await self._sleep(delay)
        return False


def _code(exc: PermanentFailure | RetryableFailure) -> str:
    return str(exc.details.get("code") or "error")[:64]


def _check_ok(what: str, body: bytes) -> None:
    """A 2xx answer may still say `{"ok": false, "error": ...}`."""
    if not body.startswith(b"{"):
        return
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    if isinstance(parsed, dict) and parsed.get("ok") is False:
        code = str(parsed.get("error") or "error")[:64]
        raise PermanentFailure(f"{what}: Slack error {code}", code=code)
