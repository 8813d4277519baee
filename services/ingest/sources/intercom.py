"""Intercom: conversation webhooks (`conversation.*` topics) as `ticket` events.

Signature (Intercom, "Setting up webhooks > Signed notifications"): `X-Hub-Signature` is `sha1=` + the hex
HMAC-SHA1 of the raw body keyed by the app's client secret. Intercom sends no timestamp.

Payload (Intercom, "Webhook models"): a notification `{"type": "notification_event", "id": "notif_...",
"topic", "created_at" (Unix s), "data": {"item": <the conversation>}}`; a conversation has `id`, `state`,
`priority` (`priority` / `not_priority`), `title`, `source.subject`, `contacts.contacts[]`,
`custom_attributes`.

Mapping (id `intercom:<notification id>`, which stays the same across Intercom's retries; `occurred_at`
= the notification's `created_at`): `conversation.user.created` -> `opened`; `conversation.admin.closed`,
`conversation.deleted` -> `closed`; `conversation.admin.opened` -> `reopened`; every other
`conversation.*` topic (replies, assignment, snooze, notes, priority) -> `updated`, but
`conversation.admin.single.created` (an outbound message, not a request) and everything outside
`conversation.*` (`ping`, contacts, companies, Intercom tickets...) are ignored. Priority: `priority` ->
`high`, `not_priority` -> `normal`. Account: the conversation attribute `custom_attributes.<account_field>`
(default `account_id`, e.g. set by a workflow from the company), through the `accounts` map, else as is:
Intercom's conversation payload carries no company.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from services.ingest.sources.delivery import (
    ACCOUNT_PARAM,
    Delivery,
    Mapped,
    Problems,
    as_id,
    as_object,
    as_text,
    from_epoch,
    kind_of,
    resolve_account,
    unprocessable,
)
from services.ingest.sources.options import IntercomOptions
from services.ingest.sources.signing import hmac_sha1_hex, required_header, same
from shared.errors import Unauthorized

NAME = "intercom"
SIGNATURE = "X-Hub-Signature"

_STATUS = {"conversation.user.created": "opened", "conversation.admin.closed": "closed",
           "conversation.deleted": "closed", "conversation.admin.opened": "reopened"}
_NOT_TICKETS = frozenset({"conversation.admin.single.created"})
_PRIORITIES = {"priority": "high", "not_priority": "normal"}


def sign(secret: str, body: bytes) -> str:
    return "sha1=" + hmac_sha1_hex(secret, body)


def verify(delivery: Delivery, secret: str, now: datetime) -> None:
    signature = required_header(delivery.headers, SIGNATURE, "Intercom")
    if not same(sign(secret, delivery.body), signature.lower()):
        raise Unauthorized(f"{SIGNATURE} does not match the body: check the app's client secret")


def parse(payload: Any, query: Mapping[str, str], options: IntercomOptions) -> Mapped:
    if not isinstance(payload, dict):
        raise unprocessable("Intercom", [], f"an Intercom notification is a JSON object, got {kind_of(payload)}")
    if payload.get("type") != "notification_event":
        raise unprocessable("Intercom", ["type"], "must be \"notification_event\" (an Intercom webhook "
                            "notification)")
    topic = payload.get("topic")
    if not isinstance(topic, str) or not topic:
        raise unprocessable("Intercom", ["topic"], "required: the notification's topic, e.g. "
                            "conversation.user.created")
    if not topic.startswith("conversation.") or topic in _NOT_TICKETS:
        return Mapped(ignored=[topic])
    problems = Problems("Intercom")
    notification_id = as_id(payload.get("id"), ["id"], problems)
    occurred_at = from_epoch(payload.get("created_at"), ["created_at"], problems)
    data = as_object(payload.get("data"), ["data"], problems)
    item = as_object(data.get("item"), ["data", "item"], problems) if data is not None else None
    conversation_id = as_id(item.get("id"), ["data", "item", "id"], problems) if item is not None else None
    account = None
    if item is not None:
        attributes = item.get("custom_attributes") if isinstance(item.get("custom_attributes"), dict) else {}
        account = resolve_account(query, attributes.get(options.account_field), options.accounts)
        if account is None:
            problems.add(["data", "item", "custom_attributes", options.account_field],
                         f"no account: the conversation has no attribute '{options.account_field}'; set it "
                         f"(e.g. by a workflow), or add ?{ACCOUNT_PARAM}= to the webhook URL")
    problems.raise_if_any()
    assert item is not None and notification_id and conversation_id and occurred_at and account
    ticket: dict[str, Any] = {"ticket_id": conversation_id, "status": _STATUS.get(topic, "updated")}
    priority = _PRIORITIES.get(item.get("priority")) if isinstance(item.get("priority"), str) else None
    if priority is not None:
        ticket["priority"] = priority
    source = item.get("source") if isinstance(item.get("source"), dict) else {}
    subject = as_text(item.get("title"), 1000) or as_text(source.get("subject"), 1000)
    if subject is not None:
        ticket["subject"] = subject
    requester = _requester(item)
    if requester is not None:
        ticket["requester_id"] = requester[:256]
    return Mapped(events=[{"id": f"intercom:{notification_id}"[:128], "type": "ticket", "account_id": account,
                           "occurred_at": occurred_at, "data": ticket}])


def _requester(item: Mapping[str, Any]) -> str | None:
    """The contact who started the conversation: the first of `contacts` (API 2.x), else `user` (1.x)."""
    contacts = item.get("contacts")
    if isinstance(contacts, dict) and isinstance(contacts.get("contacts"), list):
        for contact in contacts["contacts"]:
            if isinstance(contact, dict):
                found = as_id(contact.get("id"), [])
                if found is not None:
                    return found
    user = item.get("user")
    return as_id(user.get("id"), []) if isinstance(user, dict) else None
