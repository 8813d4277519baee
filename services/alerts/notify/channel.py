"""The one port every channel implements, and the failure classification they share.

Channels raise `RetryableFailure(msg, retry_after=seconds|None)` for 408/425/429/5xx, timeouts and connection
errors, and `PermanentFailure(msg, code=...)` for other 4xx and Slack `ok: false`. Messages name the target
by its key and never carry a secret: exceptions from the HTTP/SMTP clients are not chained (`from None`),
because their text and their request objects can contain the URL. The helpers here take plain values
(status, `Retry-After`, body text), not a client's response type.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol, runtime_checkable

from services.alerts.domain.content import Notification
from services.alerts.domain.targets import Target
from services.alerts.notify.secrets import SecretLookup
from shared.errors import PermanentFailure, RetryableFailure

MAX_RETRY_AFTER_S = 3600.0
_CODE = re.compile(r"^[a-z0-9_.-]{1,64}$")


@runtime_checkable
class Channel(Protocol):
    kind: str

    async def send(self, notification: Notification) -> None: ...


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds (delta-seconds or an HTTP date), capped; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def error_code(text: str | None, status: int) -> str:
    """A short machine code from a response body (`channel_not_found`), else `http_<status>`."""
    if text:
        candidate = text.strip().lower()
        if _CODE.match(candidate):
            return candidate
    return f"http_{status}"


def raise_for_status(what: str, status: int, *, text: str = "", retry_after: str | None = None,
                     code: str | None = None) -> None:
    """Classify a non-2xx HTTP answer from its status, body text and `Retry-After` header value (`what` is
    the target key: never the URL). `code`, when given, wins over the one read from the body."""
    if 200 <= status < 300:
        return
    code = code or error_code(text[:100], status)
    if status in (408, 425, 429) or status >= 500:
        raise RetryableFailure(f"{what}: HTTP {status} {code}", retry_after=parse_retry_after(retry_after),
                               status=status, code=code)
    raise PermanentFailure(f"{what}: HTTP {status} {code}", code=code, status=status)


def require_url(secrets: SecretLookup, target: Target) -> str:
    """The target's webhook URL, resolved from its reference; permanent when it is not configured."""
    url = secrets.get(target.url_ref)
    if url is None:
        raise PermanentFailure(f"{target.key}: webhook URL not configured ({target.url_ref})",
                               code="not_configured")
    return url


def transport_failure(exc: BaseException, what: str) -> RetryableFailure:
    """A connection error or timeout, by class name only (its message may contain the URL)."""
    return RetryableFailure(f"{what}: {type(exc).__name__}", retry_after=None, code=type(exc).__name__)
