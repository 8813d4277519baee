"""Signed e-mail action links: `GET /v1/alerts/{alert_id}/actions/{ack|snooze}?t=<token>`.

The token has the form of the web pages' links (`shared/links.py`): `<payload>.<signature>`, the payload
the urlsafe base64 (unpadded) of compact JSON `{"scope": "alert_action", "al": <alert id>, "act": "ack" |
"snooze", "r": <receiver>, "exp": <epoch seconds>}`, the signature the urlsafe base64 of HMAC-SHA256 over
the payload as it appears in the token, keyed with the link secret. Its own scope keeps a page link from
acting and an action link from opening a page. A token acts on one alert, one action, until it expires
(7 days after the message was rendered).

Pure: the key (`bytes`) is passed in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import urlencode

from services.alerts.domain.actions import ACTIONS, ActionName

SCOPE = "alert_action"
TTL = timedelta(days=7)
MAX_TOKEN_CHARS = 2048
_B64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class ActionLinkError(ValueError):
    """A token that does not act; `reason` is "malformed", "forged", "expired" or "mismatch"."""

    def __init__(self, reason: Literal["malformed", "forged", "expired", "mismatch"], message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ActionClaims:
    alert_id: int
    action: ActionName
    receiver: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ActionLinks:
    """The e-mail links of one alert message."""

    ack: str
    snooze: str


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    if not text or any(ch not in _B64 for ch in text):
        raise ValueError("not urlsafe base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, payload.encode("ascii"), hashlib.sha256).digest())


def sign_action(secret: bytes, alert_id: int, action: ActionName, receiver: str, *, now: datetime,
                ttl: timedelta = TTL) -> str:
    if not secret:
        raise ValueError("empty link secret")
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    body = {"scope": SCOPE, "al": int(alert_id), "act": action, "r": receiver,
            "exp": int((now + ttl).timestamp())}
    payload = _b64(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    return f"{payload}.{_mac(secret, payload)}"


def verify_action(secret: bytes, token: str | None, *, alert_id: int, action: str, now: datetime) -> ActionClaims:
    """The claims of a token valid for this alert and action; `ActionLinkError` otherwise. The signature is
    checked (in constant time) before anything in the payload is trusted."""
    if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
        raise ActionLinkError("malformed", "the link's token is missing or not in the expected form")
    payload, signature = token.split(".")
    try:
        _unb64(payload)
        _unb64(signature)
    except (ValueError, binascii.Error) as exc:
        raise ActionLinkError("malformed", "the link's token is not valid base64") from exc
    if not secret or not hmac.compare_digest(_mac(secret, payload), signature):
        raise ActionLinkError("forged", "the link's signature does not match")
    try:
        body = json.loads(_unb64(payload))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ActionLinkError("malformed", "the link's payload is not JSON") from exc
    if not isinstance(body, dict) or body.get("scope") != SCOPE:
        raise ActionLinkError("malformed", "the link is not an alert action link")
    al, act, receiver, exp = body.get("al"), body.get("act"), body.get("r"), body.get("exp")
    if (not isinstance(al, int) or isinstance(al, bool) or act not in ACTIONS or not isinstance(receiver, str)
            or not isinstance(exp, int) or isinstance(exp, bool)):
        raise ActionLinkError("malformed", "the link's payload lacks its alert, action, receiver or expiry")
    if al != alert_id or act != action:
        raise ActionLinkError("mismatch", "the link is for another alert or action")
    try:
        expires_at = datetime.fromtimestamp(exp, UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise ActionLinkError("malformed", "the link's expiry is out of range") from exc
    if now >= expires_at:
        raise ActionLinkError("expired", f"the link expired at {expires_at.isoformat()}")
    return ActionClaims(alert_id=al, action=act, receiver=receiver, expires_at=expires_at)


def action_url(public_url: str, alert_id: int, action: ActionName, token: str) -> str:
    return f"{public_url.rstrip('/')}/v1/alerts/{int(alert_id)}/actions/{action}?{urlencode({'t': token})}"


def action_links(secret: bytes, public_url: str, alert_id: int, receiver: str, *, now: datetime) -> ActionLinks:
    """The Acknowledge and Snooze links of one alert message sent to `receiver`."""
    return ActionLinks(
        ack=action_url(public_url, alert_id, "ack", sign_action(secret, alert_id, "ack", receiver, now=now)),
        snooze=action_url(public_url, alert_id, "snooze",
                          sign_action(secret, alert_id, "snooze", receiver, now=now)),
    )
