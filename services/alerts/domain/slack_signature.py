"""Slack request signatures (https://api.slack.com/authentication/verifying-requests-from-slack).

`X-Slack-Signature` is `v0=` + the hex HMAC-SHA256 of `v0:{X-Slack-Request-Timestamp}:{raw body}`, keyed
with the app's signing secret. A request is accepted only when the signature matches (compared in constant
time) and its timestamp is within `MAX_AGE` of now, either way; replays inside that window are the caller's
to refuse (it remembers the signatures it accepted for `MAX_AGE`).

Pure: no clock, no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Literal

MAX_AGE_S = 300
VERSION = "v0"


class SignatureError(ValueError):
    """Why a request is refused: "missing", "stale" or "mismatch" (the message never holds the secret)."""

    def __init__(self, reason: Literal["missing", "stale", "mismatch"], message: str) -> None:
        super().__init__(message)
        self.reason = reason


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The `X-Slack-Signature` value Slack sends for `body` at `timestamp`."""
    base = f"{VERSION}:{timestamp}:".encode() + body
    return f"{VERSION}=" + hmac.new(secret, base, hashlib.sha256).hexdigest()


def verify(secret: bytes, timestamp: str | None, signature: str | None, body: bytes, *, now: float,
           max_age_s: int = MAX_AGE_S) -> None:
    """Raises `SignatureError` unless `signature` signs `body` at `timestamp` and `timestamp` is within
    `max_age_s` seconds of `now` (epoch seconds)."""
    if not secret:
        raise SignatureError("missing", "no signing secret")
    if not timestamp or not signature:
        raise SignatureError("missing", "X-Slack-Request-Timestamp and X-Slack-Signature are required")
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise SignatureError("stale", "X-Slack-Request-Timestamp is not epoch seconds")
    if abs(now - int(timestamp)) > max_age_s:
        raise SignatureError("stale", "X-Slack-Request-Timestamp is more than 5 minutes away from now")
    if not hmac.compare_digest(sign(secret, timestamp, body).encode(), signature.encode("utf-8", "replace")):
        raise SignatureError("mismatch", "X-Slack-Signature does not match the request")
