"""HubSpot webhooks (services/ingest/sources/hubspot.py): the v3 signature over method + full URI + raw body +
timestamp (ms, 5 minutes), and ticket events mapped onto `ticket` envelopes (fixtures:
tests/fixtures/sources/hubspot)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.ingest.sources import hubspot
from services.ingest.sources.delivery import Delivery
from services.ingest.sources.options import HubSpotOptions, parse_options
from shared.errors import Unauthorized, Unprocessable
from shared.events import validate_events

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources" / "hubspot"
SECRET = "hubspot-client-secret"
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
URI = "https://ingest.example.com/v1/sources/hubspot?account_id=acme"


def body(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def millis(at: datetime) -> str:
    return str(int(at.timestamp() * 1000))


def signed(raw: bytes, *, uri: str = URI, signed_uri: str | None = None, at: datetime = NOW,
           method: str = "POST", secret: str = SECRET) -> Delivery:
    timestamp = millis(at)
    # The v3 source string exactly as HubSpot documents it.
    source = method.encode() + (signed_uri or uri).encode() + raw + timestamp.encode()
    signature = base64.b64encode(hmac.new(secret.encode(), source, hashlib.sha256).digest()).decode()
    headers = {"x-hubspot-signature-v3": signature, "x-hubspot-request-timestamp": timestamp}
    return Delivery(method, uri, headers, {}, raw)


def parse(event: Any, query: dict[str, str] | None = None, **options: Any) -> list[dict[str, Any]]:
    out = hubspot.parse(event, {"account_id": "acme"} if query is None else query, HubSpotOptions(**options))
    events, errors = validate_events(list(out.events), now=NOW)
    assert errors == [] and len(events) == len(out.events)
    return out.events


# ------------------------------------------------------------------------------------------ signature
def test_a_v3_signature_computed_as_hubspot_documents_it_verifies():
    hubspot.verify(signed(body("ticket_events.json")), SECRET, NOW + timedelta(seconds=3))


def test_the_method_the_uri_and_the_body_are_all_signed():
    raw = body("ticket_events.json")
    with pytest.raises(Unauthorized, match="does not match"):
        hubspot.verify(signed(raw, signed_uri=URI.replace("acme", "globex")), SECRET, NOW)
    with pytest.raises(Unauthorized, match="does not match"):
        hubspot.verify(signed(raw, uri=URI.replace("https:", "http:"), signed_uri=URI), SECRET, NOW)
    good = signed(raw)
    with pytest.raises(Unauthorized, match="does not match"):
        hubspot.verify(Delivery("PUT", good.uri, good.headers, {}, raw), SECRET, NOW)
    with pytest.raises(Unauthorized, match="does not match"):
        hubspot.verify(Delivery("POST", good.uri, good.headers, {}, raw.replace(b"HIGH", b"LOW")), SECRET, NOW)
    with pytest.raises(Unauthorized, match="does not match"):
        hubspot.verify(signed(raw, secret="other"), SECRET, NOW)


def test_the_uri_is_signed_with_hubspots_listed_escapes_decoded():
    encoded = "https://ingest.example.com/v1/sources/hubspot?account_id=acme%3Aeu&next=%2Fa%20b"
    decoded = "https://ingest.example.com/v1/sources/hubspot?account_id=acme:eu&next=/a%20b"
    hubspot.verify(signed(body("ticket_events.json"), uri=encoded, signed_uri=decoded), SECRET, NOW)
    assert hubspot.signed_uri("a%3a%2f%3F%40%21%24%27%28%29%2A%2C%3B%20") == "a:/?@!$'()*,;%20"


def test_a_timestamp_older_than_five_minutes_is_401():
    raw = body("ticket_events.json")
    with pytest.raises(Unauthorized, match="301 s old"):
        hubspot.verify(signed(raw, at=NOW - timedelta(seconds=301)), SECRET, NOW)
    hubspot.verify(signed(raw, at=NOW - timedelta(seconds=299)), SECRET, NOW)


def test_missing_headers_are_401():
    raw = body("ticket_events.json")
    with pytest.raises(Unauthorized, match="X-HubSpot-Signature-v3"):
        hubspot.verify(Delivery("POST", URI, {"x-hubspot-request-timestamp": millis(NOW)}, {}, raw), SECRET, NOW)
    only_signature = {"x-hubspot-signature-v3": signed(raw).headers["x-hubspot-signature-v3"]}
    with pytest.raises(Unauthorized, match="X-HubSpot-Request-Timestamp"):
        hubspot.verify(Delivery("POST", URI, only_signature, {}, raw), SECRET, NOW)


# ------------------------------------------------------------------------------------------ mapping
def test_ticket_events_map_to_opened_priority_and_closed():
    assert parse(orjson.loads(body("ticket_events.json"))) == [
        {"id": "hubspot:3816279500", "type": "ticket", "account_id": "acme",
         "occurred_at": "2016-05-02T19:11:47.945000+00:00", "data": {"ticket_id": "1246990", "status": "opened"}},
        {"id": "hubspot:3816279501", "type": "ticket", "account_id": "acme",
         "occurred_at": "2016-05-02T19:11:48.945000+00:00", "data": {"ticket_id": "1246991", "status": "opened"}},
        {"id": "hubspot:3816279502", "type": "ticket", "account_id": "acme",
         "occurred_at": "2016-05-02T19:11:49.945000+00:00",
         "data": {"ticket_id": "1246990", "status": "updated", "priority": "high"}},
        {"id": "hubspot:3816279503", "type": "ticket", "account_id": "acme",
         "occurred_at": "2016-05-02T19:11:50.945000+00:00", "data": {"ticket_id": "1246991", "status": "closed"}},
    ]


def test_the_documented_contact_events_are_ignored():
    out = hubspot.parse(orjson.loads(body("contact_events.json")), {}, HubSpotOptions())
    assert (out.events, out.ignored) == ([], ["contact.propertyChange", "contact.creation"])


@pytest.mark.parametrize(("name", "value", "data"), [
    ("hs_ticket_priority", "LOW", {"status": "updated", "priority": "low"}),
    ("hs_ticket_priority", "MEDIUM", {"status": "updated", "priority": "normal"}),
    ("hs_ticket_priority", "URGENT", {"status": "updated", "priority": "urgent"}),
    ("hs_pipeline_stage", "2", {"status": "updated"}),
    ("subject", "Exports fail", {"status": "updated", "subject": "Exports fail"}),
    ("content", "more text", {"status": "updated"}),
])
def test_property_changes(name: str, value: str, data: dict[str, str]):
    event = {"objectId": 7, "propertyName": name, "propertyValue": value, "eventId": 1, "occurredAt": 1462216307945,
             "subscriptionType": "ticket.propertyChange"}
    assert parse([event])[0]["data"] == {"ticket_id": "7", **data}


def test_closed_stages_and_the_event_type_spelling_of_the_docs():
    event = {"objectId": 7, "propertyName": "hs_pipeline_stage", "propertyValue": "resolved", "eventId": 1,
             "occurredAt": 1462216307945, "eventType": "ticket.propertyChange"}
    assert parse([event])[0]["data"]["status"] == "updated"
    assert parse([event], closed_stages=["resolved", 4])[0]["data"]["status"] == "closed"
    deletion = {"objectId": 7, "eventId": 2, "occurredAt": 1462216307945, "subscriptionType": "ticket.deletion"}
    assert parse([deletion])[0]["data"]["status"] == "closed"


# ------------------------------------------------------------------------------------------ account
def test_the_account_is_the_url_or_the_ticket_map_never_the_ticket_id_itself():
    events = orjson.loads(body("ticket_events.json"))
    options = parse_options("hubspot:\n  accounts:\n    1246990: acme\n    1246991: globex\n").hubspot
    mapped = hubspot.parse(events, {}, options).events
    assert [e["account_id"] for e in mapped] == ["acme", "globex", "acme", "globex"]
    with pytest.raises(Unprocessable) as caught:
        hubspot.parse(events, {}, HubSpotOptions(accounts={"1246990": "acme"}))
    errors = caught.value.details["errors"]
    assert [e["loc"] for e in errors] == [[1, "objectId"], [3, "objectId"]]
    assert all("no account for HubSpot ticket 1246991" in e["msg"] for e in errors)


# ------------------------------------------------------------------------------------------ shapes
def test_unknown_shapes_are_422_naming_the_event_and_field():
    with pytest.raises(Unprocessable) as caught:
        hubspot.parse([{"objectId": 1}, "x", {"subscriptionType": "ticket.creation", "objectId": 2,
                                              "occurredAt": "now"}], {"account_id": "acme"}, HubSpotOptions())
    assert [e["loc"] for e in caught.value.details["errors"]] == [
        [0, "subscriptionType"], [1], [2, "eventId"], [2, "occurredAt"]]
    for payload in ([], "events", 3):
        with pytest.raises(Unprocessable):
            hubspot.parse(payload, {"account_id": "acme"}, HubSpotOptions())
