"""Intercom webhooks (services/ingest/sources/intercom.py): `X-Hub-Signature` (HMAC-SHA1 of the raw body), and
conversation notifications mapped onto `ticket` envelopes (fixtures: tests/fixtures/sources/intercom)."""

from __future__ import annotations

import copy
import hashlib
import hmac
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.ingest.sources import intercom
from services.ingest.sources.delivery import Delivery
from services.ingest.sources.options import IntercomOptions
from shared.errors import Unauthorized, Unprocessable
from shared.events import validate_events

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources" / "intercom"
SECRET = "intercom-client-secret"
NOW = datetime(2024, 6, 28, tzinfo=UTC)


def body(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def payload(name: str) -> Any:
    return orjson.loads(body(name))


def signed(raw: bytes, secret: str = SECRET) -> Delivery:
    signature = "sha1=" + hmac.new(secret.encode(), raw, hashlib.sha1).hexdigest()
    return Delivery("POST", "https://ingest.example.com/v1/sources/intercom", {"x-hub-signature": signature}, {}, raw)


def parse(event: Any, query: dict[str, str] | None = None, **options: Any) -> list[dict[str, Any]]:
    out = intercom.parse(event, query or {}, IntercomOptions(**options))
    events, errors = validate_events(list(out.events), now=NOW)
    assert errors == [] and len(events) == len(out.events)
    return out.events


def with_account(event: dict[str, Any], value: Any = "acme") -> dict[str, Any]:
    event = copy.deepcopy(event)
    event["data"]["item"]["custom_attributes"] = {"account_id": value}
    return event


# ------------------------------------------------------------------------------------------ signature
def test_a_signature_computed_as_intercom_documents_it_verifies():
    intercom.verify(signed(body("conversation_user_created.json")), SECRET, NOW)


def test_an_upper_case_hex_digest_verifies_too():
    delivery = signed(body("conversation_user_created.json"))
    upper = {"x-hub-signature": "sha1=" + delivery.headers["x-hub-signature"][5:].upper()}
    intercom.verify(Delivery("POST", delivery.uri, upper, {}, delivery.body), SECRET, NOW)


def test_a_bad_or_missing_signature_is_401():
    raw = body("conversation_user_created.json")
    with pytest.raises(Unauthorized, match="does not match"):
        intercom.verify(signed(raw, "wrong-secret"), SECRET, NOW)
    with pytest.raises(Unauthorized, match="does not match"):
        intercom.verify(Delivery("POST", "/", signed(raw).headers, {}, raw + b" "), SECRET, NOW)
    with pytest.raises(Unauthorized, match="missing X-Hub-Signature"):
        intercom.verify(Delivery("POST", "/", {}, {}, raw), SECRET, NOW)
    sha256 = {"x-hub-signature": "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()}
    with pytest.raises(Unauthorized):
        intercom.verify(Delivery("POST", "/", sha256, {}, raw), SECRET, NOW)


# ------------------------------------------------------------------------------------------ mapping
def test_a_conversation_started_by_a_user_is_an_opened_ticket():
    assert parse(with_account(payload("conversation_user_created.json"))) == [{
        "id": "intercom:notif_3ac27816-d27c-45fd-a65a-bbaf021cf780", "type": "ticket", "account_id": "acme",
        "occurred_at": "2024-06-27T12:53:45+00:00",
        "data": {"ticket_id": "367", "status": "opened", "priority": "high",
                 "requester_id": "667d60d88a68186f43bafde1"}}]


def test_a_conversation_closed_by_an_admin_is_closed():
    [event] = parse(payload("conversation_admin_closed.json"), {"account_id": "acme"})
    assert event["id"] == "intercom:notif_2bc4bf3a-0064-4fb0-9e17-dc44d91bcb9b"
    assert (event["data"]["status"], event["data"]["priority"]) == ("closed", "normal")


@pytest.mark.parametrize(("topic", "status"), [
    ("conversation.admin.opened", "reopened"), ("conversation.deleted", "closed"),
    ("conversation.user.replied", "updated"), ("conversation.admin.replied", "updated"),
    ("conversation.admin.assigned", "updated"), ("conversation.admin.snoozed", "updated"),
    ("conversation.priority.updated", "updated"),
])
def test_conversation_topics_map_to_ticket_statuses(topic: str, status: str):
    event = with_account(payload("conversation_user_created.json")) | {"topic": topic}
    assert parse(event)[0]["data"]["status"] == status


@pytest.mark.parametrize("topic", ["ping", "contact.user.created", "company.created", "ticket.created",
                                   "conversation.admin.single.created", "conversation_part.tag.created"])
def test_other_topics_are_ignored(topic: str):
    event = payload("ping.json") if topic == "ping" else payload("conversation_user_created.json") | {"topic": topic}
    out = intercom.parse(event, {}, IntercomOptions())
    assert (out.events, out.ignored) == ([], [topic])


def test_the_title_or_the_first_message_subject_is_the_subject():
    event = with_account(payload("conversation_user_created.json"))
    event["data"]["item"]["source"]["subject"] = "Exports fail"
    assert parse(event)[0]["data"]["subject"] == "Exports fail"
    event["data"]["item"]["title"] = "Exports fail since Monday"
    assert parse(event)[0]["data"]["subject"] == "Exports fail since Monday"


# ------------------------------------------------------------------------------------------ account
def test_the_account_is_the_conversation_attribute_mapped_or_as_is_and_the_url_wins():
    event = with_account(payload("conversation_user_created.json"), "Acme Corp")
    assert parse(event)[0]["account_id"] == "Acme Corp"
    assert parse(event, accounts={"Acme Corp": "acme"})[0]["account_id"] == "acme"
    assert parse(event, {"account_id": "globex"})[0]["account_id"] == "globex"
    renamed = payload("conversation_user_created.json")
    renamed["data"]["item"]["custom_attributes"] = {"company_id": 42}
    assert parse(renamed, account_field="company_id")[0]["account_id"] == "42"


def test_a_conversation_without_an_account_is_422_naming_the_attribute():
    with pytest.raises(Unprocessable) as caught:
        intercom.parse(payload("conversation_user_created.json"), {}, IntercomOptions())
    [error] = caught.value.details["errors"]
    assert error["loc"] == ["data", "item", "custom_attributes", "account_id"] and "no account" in error["msg"]


# ------------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize(("path", "value", "loc"), [
    (("type",), "event", ["type"]),
    (("topic",), None, ["topic"]),
    (("id",), None, ["id"]),
    (("created_at",), "yesterday", ["created_at"]),
    (("data",), None, ["data"]),
    (("data", "item"), [], ["data", "item"]),
    (("data", "item", "id"), None, ["data", "item", "id"]),
])
def test_unknown_shapes_are_422_naming_what_is_missing(path: tuple[str, ...], value: Any, loc: list[str]):
    event = with_account(payload("conversation_user_created.json"))
    parent = event
    for key in path[:-1]:
        parent = parent[key]
    if value is None:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    with pytest.raises(Unprocessable) as caught:
        intercom.parse(event, {"account_id": "acme"}, IntercomOptions())
    assert [e["loc"] for e in caught.value.details["errors"]] == [loc]
