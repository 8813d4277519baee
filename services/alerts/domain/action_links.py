"""Signed e-mail action links: `GET /v1/alerts/{alert_id}/actions/{ack|snooze}?t=<token>`.

The token is signed and checked by the web pages' link code (`shared/links.py`), in the same form:
`<payload>.<signature>`, the payload the urlsafe base64 (unpadded) of compact JSON `{"scope":
"alert_action", "al": <alert id>, "act": "ack" | "snooze", "r": <receiver>, "exp": <epoch seconds>}`,
the signature the urlsafe base64 of HMAC-SHA256 over
the payload as it appears in the token, keyed with the link secret. Its own scope keeps a page link from
acting and an action link from opening a page. A token acts on one alert, one action, until it expires
(7 days after the message was rendered).

Pure: the key (`bytes`) is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import urlencode

from services.alerts.domain.actions import ACTIONS, ActionName
from shared.links import MAX_TOKEN_CHARS, LinkError, expires_at, expiry, sign_payload, verified_payload

__all__ = ["MAX_TOKEN_CHARS", "ActionClaims", "ActionLinkError", "ActionLinks", "action_links", "action_url",
           "sign_action", "verify_action"]

SCOPE = "alert_action"
TTL = timedelta(days=7)


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


def sign_action(secret: bytes, alert_id: int, action: ActionName, receiver: str, *, now: datetime,
                ttl: timedelta = TTL) -> str:
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    return sign_payload(secret, {"scope": SCOPE, "al": int(alert_id), "act": action, "r": receiver,
                                 "exp": expiry(now, ttl)})


def verify_action(secret: bytes, token: str | None, *, alert_id: int, action: str, now: datetime) -> ActionClaims:
    """The claims of a token valid for this alert and action; `ActionLinkError` otherwise. The signature is
    checked (in constant time, by `shared.links.verified_payload`) before anything in the payload is trusted."""
    try:
        body = verified_payload(secret, token)
    except LinkError as exc:
        raise ActionLinkError(exc.reason, str(exc)) from exc
    if not isinstance(body, dict) or body.get("scope") != SCOPE:
        raise ActionLinkError("malformed", "the link is not an alert action link")
    al, act, receiver, exp = body.get("al"), body.get("act"), body.get("r"), body.get("exp")
    if (not isinstance(al, int) or isinstance(al, bool) or act not in ACTIONS or not isinstance(receiver, str)
            or not isinstance(exp, int) or isinstance(exp, bool)):
        raise ActionLinkError("malformed", "the link's payload lacks its alert, action, receiver or expiry")
    if al != alert_id or act != action:
        raise ActionLinkError("mismatch", "the link is for another alert or action")
    try:
        until = expires_at(exp)
    except LinkError as exc:
        raise ActionLinkError(exc.reason, str(exc)) from exc
    if now >= until:
        raise ActionLinkError("expired", f"the link expired at {until.isoformat()}")
    return ActionClaims(alert_id=al, action=act, receiver=receiver, expires_at=until)


def action_url(public_url: str, alert_id: int, action: ActionName, token: str) -> str:
    return f"{public_url.rstrip('/')}/v1/alerts/{int(alert_id)}/actions/{action}?{urlencode({'t': token})}"


def action_links(secret: bytes, public_url: str, alert_id: int, receiver: str, *, now: datetime) -> ActionLinks:
    """The Acknowledge and Snooze links of one alert message sent to `receiver`."""
    return ActionLinks(
        ack=action_url(public_url, alert_id, "ack", sign_action(secret, alert_id, "ack", receiver, now=now)),
        snooze=action_url(public_url, alert_id, "snooze",
                          sign_action(secret, alert_id, "snooze", receiver, now=now)),
    )
