"""Zendesk webhooks (services/ingest/sources/zendesk.py): the signature over timestamp + raw body, and ticket
events mapped onto `ticket` envelopes (fixtures: Zendesk's documented payloads, tests/fixtures/sources/zendesk)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.ingest.sources import zendesk
from services.ingest.sources.delivery import Delivery
from services.ingest.sources.options import ZendeskOptions
from shared.errors import Unauthorized, Unprocessable
from shared.events import validate_events

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources" / "zendesk"
SECRET = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ=="
NOW = datetime(2025, 1, 8, 10, 12, 30, tzinfo=UTC)


def body(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def payload(name: str) -> Any:
    return orjson.loads(body(name))


def signed(raw: bytes, *, timestamp: str = "2025-01-08T10:12:10Z", secret: str = SECRET) -> Delivery:
    # Computed here the way Zendesk documents it, independently of the module's own `sign`.
    signature = base64.b64encode(hmac.new(secret.encode(), timestamp.encode() + raw, hashlib.sha256).digest())
    headers = {"x-zendesk-webhook-signature": signature.decode(), "x-zendesk-webhook-signature-timestamp": timestamp}
    return Delivery("POST", "https://ingest.example.com/v1/sources/zendesk", headers, {}, raw)


def mapped(name: str, query: dict[str, str] | None = None, **options: Any) -> list[dict[str, Any]]:
    out = zendesk.parse(payload(name), query or {}, ZendeskOptions(**options))
    assert out.ignored == []
    events, errors = validate_events(list(out.events), now=NOW + timedelta(days=1))
    assert errors == [] and len(events) == len(out.events)
    return out.events


# ------------------------------------------------------------------------------------------ signature
def test_a_signature_computed_as_zendesk_documents_it_verifies():
    zendesk.verify(signed(body("ticket_created.json")), SECRET, NOW)


def test_a_changed_body_or_another_secret_is_401():
    raw = body("ticket_created.json")
    delivery = signed(raw)
    tampered = Delivery(delivery.method, delivery.uri, delivery.headers, {}, raw.replace(b"LOW", b"URGENT"))
    with pytest.raises(Unauthorized, match="does not match"):
        zendesk.verify(tampered, SECRET, NOW)
    with pytest.raises(Unauthorized, match="does not match"):
        zendesk.verify(signed(raw, secret="another-secret"), SECRET, NOW)


def test_the_timestamp_is_signed_too():
    delivery = signed(body("ticket_created.json"))
    moved = {**delivery.headers, "x-zendesk-webhook-signature-timestamp": "2025-01-08T10:12:11Z"}
    with pytest.raises(Unauthorized, match="does not match"):
        zendesk.verify(Delivery("POST", delivery.uri, moved, {}, delivery.body), SECRET, NOW)


def test_missing_headers_are_401_naming_the_header():
    raw = body("ticket_created.json")
    with pytest.raises(Unauthorized, match="X-Zendesk-Webhook-Signature header"):
        zendesk.verify(Delivery("POST", "/", {}, {}, raw), SECRET, NOW)
    only_signature = {"x-zendesk-webhook-signature": signed(raw).headers["x-zendesk-webhook-signature"]}
    with pytest.raises(Unauthorized, match="X-Zendesk-Webhook-Signature-Timestamp header"):
        zendesk.verify(Delivery("POST", "/", only_signature, {}, raw), SECRET, NOW)


def test_a_timestamp_older_than_five_minutes_is_401_even_when_signed():
    delivery = signed(body("ticket_created.json"), timestamp="2025-01-08T10:07:00Z")
    with pytest.raises(Unauthorized, match="330 s old"):
        zendesk.verify(delivery, SECRET, NOW)
    zendesk.verify(delivery, SECRET, datetime(2025, 1, 8, 10, 11, 59, tzinfo=UTC))  # 4:59 old: fine
    ahead = signed(body("ticket_created.json"), timestamp="2025-01-08T10:20:00Z")
    with pytest.raises(Unauthorized, match="in the future"):
        zendesk.verify(ahead, SECRET, NOW)


# ------------------------------------------------------------------------------------------ mapping
def test_ticket_created_is_an_opened_ticket_of_the_organization():
    assert mapped("ticket_created.json") == [{
        "id": "zendesk:cbe4028c-7239-495d-b020-f22348516046", "type": "ticket", "account_id": "8447346622462",
        "occurred_at": "2025-01-08T10:12:07.672717+00:00",
        "data": {"ticket_id": "5158", "status": "opened", "priority": "low", "subject": "ticketinfo_2294a6e9ece2",
                 "requester_id": "8447388090494"}}]


def test_priority_changed_updates_the_priority():
    [event] = mapped("ticket_priority_changed.json")
    assert event["id"] == "zendesk:b7c8d9e0-1f2a-3b4c-5d6e-7f8a9b0c1d2e"
    assert (event["data"]["status"], event["data"]["priority"]) == ("updated", "urgent")


def test_status_changed_to_solved_solves_it():
    [event] = mapped("ticket_status_changed.json")
    assert event["data"]["status"] == "solved"
    assert event["occurred_at"] == "2025-01-08T16:45:20.987654+00:00"


@pytest.mark.parametrize(("current", "previous", "status"), [
    ("SOLVED", "OPEN", "solved"), ("CLOSED", "SOLVED", "closed"), ("DELETED", "OPEN", "closed"),
    ("OPEN", "SOLVED", "reopened"), ("NEW", "CLOSED", "reopened"), ("PENDING", "OPEN", "updated"),
    ("HOLD", "PENDING", "updated"), ("open", "new", "updated"),
])
def test_every_zendesk_status_maps_to_ours(current: str, previous: str, status: str):
    event = payload("ticket_status_changed.json")
    event["event"] = {"current": current, "previous": previous}
    [out] = zendesk.parse(event, {}, ZendeskOptions()).events
    assert out["data"]["status"] == status


@pytest.mark.parametrize(("action", "status"), [
    ("comment_added", "updated"), ("agent_assignment_changed", "updated"), ("tags_changed", "updated"),
    ("soft_deleted", "closed"), ("marked_as_spam", "closed"), ("merged", "closed"),
])
def test_other_ticket_events_touch_or_close_the_ticket(action: str, status: str):
    event = payload("ticket_created.json") | {"type": f"zen:event-type:ticket.{action}"}
    [out] = zendesk.parse(event, {}, ZendeskOptions()).events
    assert out["data"]["status"] == status and out["data"]["priority"] == "low"


def test_a_ticket_created_already_solved_is_solved():
    event = payload("ticket_created.json")
    event["detail"]["status"] = "SOLVED"
    [out] = zendesk.parse(event, {}, ZendeskOptions()).events
    assert out["data"]["status"] == "solved"


def test_user_events_are_ignored_not_errors():
    out = zendesk.parse(payload("user_active_changed.json"), {}, ZendeskOptions())
    assert (out.events, out.ignored) == ([], ["zen:event-type:user.active_changed"])


# ------------------------------------------------------------------------------------------ account
def test_the_account_comes_from_the_url_then_the_map_then_the_field_itself():
    assert mapped("ticket_created.json", {"account_id": "acme"})[0]["account_id"] == "acme"
    assert mapped("ticket_created.json", accounts={"8447346622462": "globex"})[0]["account_id"] == "globex"
    assert mapped("ticket_created.json", account_field="brand_id")[0]["account_id"] == "8447346621310"


def test_a_ticket_without_an_organization_is_422_naming_the_field():
    event = payload("ticket_created.json")
    event["detail"]["organization_id"] = None
    with pytest.raises(Unprocessable) as caught:
        zendesk.parse(event, {}, ZendeskOptions())
    [error] = caught.value.details["errors"]
    assert error["loc"] == ["detail", "organization_id"] and "no account" in error["msg"]


# ------------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize(("change", "loc"), [
    ({"type": None}, ["type"]),
    ({"type": "ticket.created"}, ["type"]),
    ({"id": None}, ["id"]),
    ({"time": "yesterday"}, ["time"]),
    ({"detail": None}, ["detail"]),
    ({"detail": "5158"}, ["detail"]),
])
def test_unknown_shapes_are_422_naming_what_is_missing(change: dict[str, Any], loc: list[str]):
    event = payload("ticket_created.json")
    for key, value in change.items():
        if value is None:
            del event[key]
        else:
            event[key] = value
    with pytest.raises(Unprocessable) as caught:
        zendesk.parse(event, {}, ZendeskOptions())
    assert [e["loc"] for e in caught.value.details["errors"]] == [loc]


def test_a_ticket_without_an_id_is_422_and_every_problem_is_named():
    event = payload("ticket_created.json")
    del event["detail"]["id"]
    del event["time"]
    with pytest.raises(Unprocessable) as caught:
        zendesk.parse(event, {}, ZendeskOptions())
    assert sorted(map(tuple, (e["loc"] for e in caught.value.details["errors"]))) == [("detail", "id"), ("time",)]
    assert "and 1 more" in caught.value.message


def test_a_payload_that_is_not_an_object_is_422():
    with pytest.raises(Unprocessable):
        zendesk.parse([payload("ticket_created.json")], {}, ZendeskOptions())
