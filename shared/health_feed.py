"""The health topic's messages (docs/events.md, "The health topic"): their types, and the head every message
has. Scoring writes them (services/scoring/entrypoints/health_feed.py); the alerts service sends them out as
Standard Webhooks (services/alerts/feed/).

Every message is one JSON object: `id` (unique per change, the same on every resend), `type`, `timestamp`
(event time of the change), `account_id`, `health` (the account's score and tier after it) and `data`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

import orjson

from shared.risks import Transition

HEALTH_CHANGED = "health.changed"
RISK_MESSAGE_TYPES: tuple[str, ...] = tuple(f"risk.{t}" for t in get_args(Transition))
MESSAGE_TYPES: tuple[str, ...] = (HEALTH_CHANGED, *RISK_MESSAGE_TYPES)
# A subscriber may ask for a whole family of types.
FAMILIES: tuple[str, ...] = ("health.*", "risk.*")


def risk_message_type(transition: str) -> str:
    return f"risk.{transition}"


@dataclass(frozen=True, slots=True)
class MessageHead:
    id: str
    type: str
    account_id: str


def read_head(value: bytes | None) -> MessageHead | None:
    """The head of a health topic record; None when the record is not a health feed message."""
    if value is None:
        return None
    try:
        message = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(message, dict):
        return None
    msg_id, msg_type, account_id = message.get("id"), message.get("type"), message.get("account_id")
    if not (isinstance(msg_id, str) and isinstance(msg_type, str) and isinstance(account_id, str)):
        return None
    if not (msg_id and msg_type and account_id):
        return None
    return MessageHead(msg_id, msg_type, account_id)
