"""HubSpot: webhook events of tickets (`ticket.creation`, `ticket.propertyChange`, `ticket.deletion`) as
`ticket` events.

Signature (HubSpot, "Validating requests", v3): `X-HubSpot-Signature-v3` is base64(HMAC-SHA256(app client
secret, method + URI + raw body + `X-HubSpot-Request-Timestamp`)), the URI being the full one HubSpot called
(scheme, host, path, query; behind a proxy, `CHURNSIGNAL_INGEST_PUBLIC_URL` gives its base) with the
characters HubSpot lists (`%3A %2F %3F %40 %21 %24 %27 %28 %29 %2A %2C %3B`) decoded. The timestamp is in
milliseconds; one more than 5 minutes away is refused.

Payload (HubSpot, "Webhooks API"): a JSON array of up to 100 events `{"eventId", "subscriptionType" (or
`eventType`), "objectId", "propertyName", "propertyValue", "occurredAt" (ms), "portalId", ...}`. The events
carry ids and the changed property only: no subject, no requester, no company.

Mapping (one event per HubSpot event, id `hubspot:<eventId>`, `occurred_at` = `occurredAt`, `ticket_id` =
`objectId`): `ticket.creation` -> `opened`; `ticket.deletion` -> `closed`; `ticket.restore` -> `reopened`;
`ticket.propertyChange` of `hs_pipeline_stage` -> `closed` for a closed stage (`closed_stages`, default "4",
the help desk pipeline's Closed) else `updated`; of `hs_ticket_priority` -> `updated` with the priority
(LOW, MEDIUM, HIGH, URGENT -> low, normal, high, urgent); of `subject` -> `updated` with the subject; of any
other property -> `updated`. Other subscription types (contacts, companies, deals, merges, associations) are
ignored. Account: `?account_id=` on the webhook URL, else the ticket's `objectId` in the `accounts` map;
an unmapped ticket is a 422.
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
    as_text,
    from_epoch,
    kind_of,
    resolve_account,
    unprocessable,
)
from services.ingest.sources.options import HubSpotOptions
from services.ingest.sources.signing import check_fresh, hmac_sha256_base64, required_header, same
from shared.errors import Unauthorized

NAME = "hubspot"
SIGNATURE = "X-HubSpot-Signature-v3"
TIMESTAMP = "X-HubSpot-Request-Timestamp"

# HubSpot decodes these in the URI before signing it.
_DECODED = {"%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$", "%27": "'", "%28": "(",
            "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";"}
_PRIORITIES = {"LOW": "low", "MEDIUM": "normal", "HIGH": "high", "URGENT": "urgent"}
_STATUS = {"ticket.creation": "opened", "ticket.deletion": "closed", "ticket.restore": "reopened",
           "ticket.propertyChange": "updated"}


def signed_uri(uri: str) -> str:
    """The URI as HubSpot signs it: its listed percent-escapes decoded (in either case)."""
    out = []
    i = 0
    while i < len(uri):
        escape = uri[i:i + 3].upper()
        if escape in _DECODED:
            out.append(_DECODED[escape])
            i += 3
        else:
            out.append(uri[i])
            i += 1
    return "".join(out)


def sign(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    return hmac_sha256_base64(secret, method.upper().encode() + signed_uri(uri).encode() + body + timestamp.encode())


def verify(delivery: Delivery, secret: str, now: datetime) -> None:
    signature = required_header(delivery.headers, SIGNATURE, "HubSpot")
    timestamp = required_header(delivery.headers, TIMESTAMP, "HubSpot")
    if not same(sign(secret, delivery.method, delivery.uri, delivery.body, timestamp), signature):
        raise Unauthorized(f"{SIGNATURE} does not match the request: check the app's client secret, and that "
                           "CHURNSIGNAL_INGEST_PUBLIC_URL is the URL HubSpot calls when ingest is behind a proxy")
    if not timestamp.isdigit():
        raise Unauthorized(f"{TIMESTAMP} is not a Unix time in milliseconds")
    check_fresh(datetime.fromtimestamp(int(timestamp) / 1000, UTC), now, TIMESTAMP)


def parse(payload: Any, query: Mapping[str, str], options: HubSpotOptions) -> Mapped:
    if isinstance(payload, dict):
        payload = [payload]
    if not isinstance(payload, list) or not payload:
        raise unprocessable("HubSpot", [], "HubSpot sends a JSON array of events"
                            + ("" if isinstance(payload, list) else f", got {kind_of(payload)}"))
    problems = Problems("HubSpot")
    out = Mapped()
    for index, event in enumerate(payload):
        if not isinstance(event, dict):
            problems.add([index], f"a HubSpot event is an object, got {kind_of(event)}")
            continue
        kind = event.get("subscriptionType", event.get("eventType"))
        if not isinstance(kind, str) or not kind:
            problems.add([index, "subscriptionType"], "required: the event's subscription type, e.g. "
                                                      "ticket.creation")
            continue
        if kind not in _STATUS:
            out.ignored.append(kind)
            continue
        mapped = _ticket(index, kind, event, query, options, problems)
        if mapped is not None:
            out.events.append(mapped)
    problems.raise_if_any()
    return out


def _ticket(index: int, kind: str, event: Mapping[str, Any], query: Mapping[str, str], options: HubSpotOptions,
            problems: Problems) -> dict[str, Any] | None:
    before = len(problems.errors)
    event_id = as_id(event.get("eventId"), [index, "eventId"], problems)
    ticket_id = as_id(event.get("objectId"), [index, "objectId"], problems)
    occurred_at = from_epoch(event.get("occurredAt"), [index, "occurredAt"], problems, millis=True)
    account = resolve_account(query, ticket_id, options.accounts, passthrough=False)
    if ticket_id is not None and account is None:
        problems.add([index, "objectId"],
                     f"no account for HubSpot ticket {ticket_id}: HubSpot's webhook carries no company; add "
                     f"?{ACCOUNT_PARAM}= to the webhook URL or map the ticket in hubspot.accounts "
                     "(CHURNSIGNAL_SOURCES_FILE)")
    if len(problems.errors) > before:
        return None
    assert event_id and ticket_id and occurred_at and account
    data: dict[str, Any] = {"ticket_id": ticket_id, "status": _STATUS[kind]}
    if kind == "ticket.propertyChange":
        name, value = event.get("propertyName"), event.get("propertyValue")
        if name == "hs_pipeline_stage" and as_id(value, []) in options.closed_stages:
            data["status"] = "closed"
        elif name == "hs_ticket_priority" and isinstance(value, str) and value.upper() in _PRIORITIES:
            data["priority"] = _PRIORITIES[value.upper()]
        elif name == "subject" and as_text(value, 1000) is not None:
            data["subject"] = as_text(value, 1000)
    return {"id": f"hubspot:{event_id}"[:128], "type": "ticket", "account_id": account,
            "occurred_at": occurred_at, "data": data}
