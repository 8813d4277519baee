"""What a person can do from an alert message, in Slack (Block Kit buttons) and by e-mail (signed links).

Pure: builds the `actions` block of an alert message, reads a button click back (`parse_click`) and builds
the message that replaces the original once someone acted on it. Every button's `value` is the alert id
(`alerts_alerts.id`), the handle of `POST /v1/alerts/{alert_id}/ack`; the risk id is never used for it.

Snoozing silences the alert's account for the alert's risk type only, for `SNOOZE_DAYS` days: the click
was about that one risk, and a different risk of the same account (a champion leaving while a usage drop
is snoozed) must still be heard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

ActionName = Literal["ack", "snooze"]
ACTIONS: tuple[ActionName, ...] = ("ack", "snooze")
SNOOZE_DAYS = 7
SNOOZE = timedelta(days=SNOOZE_DAYS)

BLOCK_ID = "churnsignal_actions"
ACK_ACTION = "churnsignal_ack"
SNOOZE_ACTION = "churnsignal_snooze"
OPEN_ACCOUNT_ACTION = "churnsignal_open_account"
OPEN_CRM_ACTION = "churnsignal_open_crm"
ACTION_IDS: dict[str, ActionName] = {ACK_ACTION: "ack", SNOOZE_ACTION: "snooze"}

URL_MAX = 3000                          # Block Kit: a button's url
_ALERT_ID = re.compile(r"^[1-9][0-9]{0,18}$")
# Slack user ids (U…, W…): only such an id is ever written back into a message as a mention.
SLACK_USER_ID = re.compile(r"^[UW][A-Z0-9]{1,20}$")


def _button(text: str, action_id: str, value: str, *, url: str | None = None,
            style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "action_id": action_id, "value": value,
                              "text": {"type": "plain_text", "text": text, "emoji": True}}
    if url is not None:
        button["url"] = url
    if style is not None:
        button["style"] = style
    return button


def slack_actions(alert_id: int, account_url: str | None, crm_url: str | None = None, *,
                  block_id: str = BLOCK_ID) -> dict[str, Any]:
    """The `actions` block of one alert message: Acknowledge, Snooze 7 days, Open account and, when the
    account has one, Open in CRM. A link longer than Block Kit allows is left out rather than cut. A
    message with several alerts gives each block its own `block_id` (Slack wants them unique)."""
    value = str(int(alert_id))
    elements = [
        _button("Acknowledge", ACK_ACTION, value, style="primary"),
        _button(f"Snooze {SNOOZE_DAYS} days", SNOOZE_ACTION, value),
    ]
    if account_url and len(account_url) <= URL_MAX:
        elements.append(_button("Open account", OPEN_ACCOUNT_ACTION, value, url=account_url))
    if crm_url and len(crm_url) <= URL_MAX:
        elements.append(_button("Open in CRM", OPEN_CRM_ACTION, value, url=crm_url))
    return {"type": "actions", "block_id": block_id, "elements": elements}


@dataclass(frozen=True, slots=True)
class Click:
    """One button click of a Slack `block_actions` payload that asks us to do something."""

    action: ActionName
    alert_id: int
    user_id: str
    response_url: str | None


class BadPayload(ValueError):
    """A Slack interaction payload that is not a click we understand (answered 200, nothing done)."""


def parse_click(payload: Any) -> Click | None:
    """The Acknowledge / Snooze click of a `block_actions` payload; None for a click on a URL button (Slack
    reports those too) or an interaction of another kind. `BadPayload` when the click names no alert id."""
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        return None
    actions = payload.get("actions")
    if not isinstance(actions, list):
        return None
    for action in actions:
        if not isinstance(action, dict):
            continue
        name = ACTION_IDS.get(str(action.get("action_id")))
        if name is None:
            continue
        value = action.get("value")
        if not isinstance(value, str) or not _ALERT_ID.match(value):
            raise BadPayload("the button carries no alert id")
        user = payload.get("user")
        user_id = user.get("id") if isinstance(user, dict) else None
        if not isinstance(user_id, str) or not SLACK_USER_ID.match(user_id):
            raise BadPayload("the click carries no Slack user id")
        response_url = payload.get("response_url")
        return Click(name, int(value), user_id,
                     response_url if isinstance(response_url, str) and response_url else None)
    return None


def slack_actor(user_id: str) -> str:
    """How a Slack user is recorded (`acked_by`, a silence's `created_by`)."""
    return f"slack:{user_id}"


def mention(actor: str | None) -> str:
    """A recorded actor as Slack mrkdwn: `<@U…>` for a Slack user, the escaped name otherwise."""
    actor = actor or "someone"
    if actor.startswith("slack:") and SLACK_USER_ID.match(actor[6:]):
        return f"<@{actor[6:]}>"
    return actor.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def acted_message(original: Any, note: str, fallback_text: str) -> dict[str, Any]:
    """The message replacing the original (`response_url`, `replace_original`): its blocks without the
    Acknowledge / Snooze buttons (the links stay), then `note` (mrkdwn, already escaped)."""
    blocks: list[dict[str, Any]] = []
    text = fallback_text
    if isinstance(original, dict):
        if isinstance(original.get("text"), str) and original["text"]:
            text = original["text"]
        for block in original.get("blocks") or []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "actions" and block.get("block_id") == BLOCK_ID:
                links = [e for e in block.get("elements") or []
                         if isinstance(e, dict) and e.get("action_id") not in ACTION_IDS]
                if links:
                    blocks.append({**block, "elements": links})
                continue
            blocks.append(block)
    blocks = blocks[:48]
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": note}})
    return {"replace_original": True, "text": f"{text}\n{note}"[:3000], "blocks": blocks}


def ephemeral(text: str) -> dict[str, Any]:
    """A message only the person who clicked sees (the original stays as it is)."""
    return {"response_type": "ephemeral", "replace_original": False, "text": text}
