"""Zendesk: event-subscribed webhooks of ticket events (`zen:event-type:ticket.*`) as `ticket` events.

Signature (Zendesk, "Verifying webhook authenticity"): `X-Zendesk-Webhook-Signature` is
base64(HMAC-SHA256(signing secret, `X-Zendesk-Webhook-Signature-Timestamp` + raw body)); a timestamp more
than 5 minutes away is refused.

Payload (Zendesk, "Webhooks > Ticket events"): `{"type": "zen:event-type:ticket.<action>", "id", "time",
"subject": "zen:ticket:<id>", "detail": {the ticket: id, status, priority, subject, requester_id,
organization_id, ...}, "event": {action-specific, e.g. "current"/"previous"}}`. Statuses and priorities
come upper-case (`OPEN`, `URGENT`).

Mapping (one event per webhook, id `zendesk:<event id>`, `occurred_at` = `time`):
- `ticket.created` -> `opened` (or `solved` / `closed` when created so);
- `ticket.status_changed` -> `event.current`: SOLVED -> `solved`; CLOSED, DELETED, ARCHIVED, SCRUBBED ->
  `closed`; NEW, OPEN, PENDING, HOLD -> `reopened` after SOLVED or CLOSED, else `updated`;
- `ticket.soft_deleted`, `ticket.permanently_deleted`, `ticket.marked_as_spam`, `ticket.merged` -> `closed`;
- every other `ticket.*` (priority, comment, assignment, tags...) -> `updated`;
- priority LOW/NORMAL/HIGH/URGENT -> low/normal/high/urgent (`event.current` for `ticket.priority_changed`);
- anything not `ticket.*` (user, organization, article... events) is ignored.
Account: `detail.<account_field>` (default `organization_id`), through the `accounts` map, else as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from services.ingest.sources.delivery import (
    ACCOUNT_PARAM,
    Delivery,
    Mapped,
    Problems,
    as_id,
    as_object,
    as_text,
    kind_of,
    resolve_account,
    rfc3339,
    unprocessable,
)
from services.ingest.sources.options import ZendeskOptions
from services.ingest.sources.signing import check_fresh, hmac_sha256_base64, required_header, same
from shared.errors import Unauthorized

NAME = "zendesk"
SIGNATURE = "X-Zendesk-Webhook-Signature"
TIMESTAMP = "X-Zendesk-Webhook-Signature-Timestamp"
EVENT_PREFIX = "zen:event-type:"
TICKET_PREFIX = EVENT_PREFIX + "ticket."

_CLOSING = {"SOLVED": "solved", "CLOSED": "closed", "DELETED": "closed", "ARCHIVED": "closed",
            "SCRUBBED": "closed"}
_OPEN = frozenset({"NEW", "OPEN", "PENDING", "HOLD"})
_GONE = frozenset({"soft_deleted", "permanently_deleted", "marked_as_spam", "merged"})
_PRIORITIES = {"LOW": "low", "NORMAL": "normal", "HIGH": "high", "URGENT": "urgent"}


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return hmac_sha256_base64(secret, timestamp.encode() + body)


def verify(delivery: Delivery, secret: str, now: datetime) -> None:
    signature = required_header(delivery.headers, SIGNATURE, "Zendesk")
    timestamp = required_header(delivery.headers, TIMESTAMP, "Zendesk")
    if not same(sign(secret, timestamp, delivery.body), signature):
        raise Unauthorized(f"{SIGNATURE} does not match the body: check the webhook's signing secret")
    try:
        signed_at = datetime.fromisoformat(timestamp)
    except ValueError:
        raise Unauthorized(f"{TIMESTAMP} is not an ISO 8601 timestamp") from None
    if signed_at.tzinfo is None:
        signed_at = signed_at.replace(tzinfo=UTC)
    check_fresh(signed_at, now, TIMESTAMP)


def parse(payload: Any, query: Mapping[str, str], options: ZendeskOptions) -> Mapped:
    if not isinstance(payload, dict):
        raise unprocessable("Zendesk", [], f"a Zendesk event is a JSON object, got {kind_of(payload)}")
    kind = payload.get("type")
    if not isinstance(kind, str) or not kind.startswith(EVENT_PREFIX):
        raise unprocessable("Zendesk", ["type"], "required: a Zendesk event type, e.g. "
                            "zen:event-type:ticket.created (subscribe the webhook to ticket events)")
    if not kind.startswith(TICKET_PREFIX):
        return Mapped(ignored=[kind])
    action = kind[len(TICKET_PREFIX):]
    problems = Problems("Zendesk")
    event_id = as_id(payload.get("id"), ["id"], problems)
    occurred_at = rfc3339(payload.get("time"), ["time"], problems)
    detail = as_object(payload.get("detail"), ["detail"], problems)
    event = payload.get("event") if isinstance(payload.get("event"), dict) else {}
    ticket_id = as_id(detail.get("id"), ["detail", "id"], problems) if detail is not None else None
    account = None
    if detail is not None:
        account = resolve_account(query, _field(detail, options.account_field), options.accounts)
        if account is None:
            problems.add(["detail", options.account_field],
                         f"no account: the ticket has no {options.account_field}; set "
                         f"zendesk.account_field in CHURNSIGNAL_SOURCES_FILE or add ?{ACCOUNT_PARAM}= to the "
                         "webhook URL")
    problems.raise_if_any()
    assert detail is not None and event_id and ticket_id and occurred_at and account
    data: dict[str, Any] = {"ticket_id": ticket_id, "status": _status(action, detail, event)}
    priority = _PRIORITIES.get(_upper(event.get("current") if action == "priority_changed"
                                      else detail.get("priority")))
    if priority is not None:
        data["priority"] = priority
    subject = as_text(detail.get("subject"), 1000)
    if subject is not None:
        data["subject"] = subject
    requester = as_id(detail.get("requester_id"), [])
    if requester is not None:
        data["requester_id"] = requester[:256]
    return Mapped(events=[{"id": f"zendesk:{event_id}"[:128], "type": "ticket", "account_id": account,
                           "occurred_at": occurred_at, "data": data}])


def _status(action: str, detail: Mapping[str, Any], event: Mapping[str, Any]) -> str:
    if action == "created":
        return _CLOSING.get(_upper(detail.get("status")), "opened")
    if action == "status_changed":
        current = _upper(event.get("current")) or _upper(detail.get("status"))
        if current in _CLOSING:
            return _CLOSING[current]
        if current in _OPEN and _upper(event.get("previous")) in _CLOSING:
            return "reopened"
        return "updated"
    if action in _GONE:
        return "closed"
    return "updated"


def _field(detail: Mapping[str, Any], name: str) -> Any:
    value = detail.get(name)
    # Zendesk sends "0" (or null) for a missing organization.
    return None if value in (None, "", "0", 0) else value


def _upper(value: Any) -> str:
    return value.strip().upper() if isinstance(value, str) else ""
