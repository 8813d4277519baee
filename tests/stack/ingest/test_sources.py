"""Vendor webhooks on ingest (`POST /v1/sources/<source>`, services/ingest/sources/), each test on the in-process
bus and on the real Kafka broker: a validly signed vendor payload publishes exactly its mapped envelopes
through the same intake as `POST /v1/events`; a bad signature is a 401, a source without a secret a 503,
and neither publishes anything; a replayed delivery publishes the same event id."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from services.ingest.bootstrap import create_app
from services.ingest.sources import SOURCES
from services.ingest.sources.options import SourceOptions
from shared.bus.port import Bus, Record
from shared.metrics import new_registry
from shared.settings import Settings
from shared.topics import Topics
from tests.stack.ingest.conftest import Ingest, running

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources"
BASE_URL = "http://ingest.test"  # the test client's base URL: what HubSpot "called"
SECRETS = {"zendesk": "zendesk-signing-secret", "intercom": "intercom-client-secret",
           "hubspot": "hubspot-client-secret", "typeform": "typeform-webhook-secret",
           "delighted": "delighted-shared-token"}
# Every fixture that maps onto events, and how many it publishes.
PUBLISHING = {("zendesk", "ticket_created.json"): 1, ("zendesk", "ticket_priority_changed.json"): 1,
              ("zendesk", "ticket_status_changed.json"): 1, ("intercom", "conversation_user_created.json"): 1,
              ("intercom", "conversation_admin_closed.json"): 1, ("hubspot", "ticket_events.json"): 4,
              ("typeform", "form_response.json"): 1, ("typeform", "form_response_hidden.json"): 1,
              ("delighted", "survey_response_created.json"): 1, ("delighted", "survey_response_updated.json"): 1}
IGNORED = {("zendesk", "user_active_changed.json"): 1, ("intercom", "ping.json"): 1,
           ("hubspot", "contact_events.json"): 2}


def fixture(source: str, name: str) -> bytes:
    return (FIXTURES / source / name).read_bytes()


def webhook(source: str, raw: bytes, query: str = "account_id=acme", *, at: datetime | None = None,
            secret: str | None = None, base_url: str = BASE_URL) -> tuple[str, dict[str, str]]:
    """The path and headers of a delivery signed the way the vendor documents it (computed here, apart from
    the code under test). `at` is when the vendor signed it."""
    secret = SECRETS[source] if secret is None else secret
    at = at or datetime.now(UTC)
    path = f"/v1/sources/{source}" + (f"?{query}" if query else "")
    headers = {"Content-Type": "application/json"}
    if source == "zendesk":
        timestamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        digest = hmac.new(secret.encode(), timestamp.encode() + raw, hashlib.sha256).digest()
        headers |= {"X-Zendesk-Webhook-Signature": base64.b64encode(digest).decode(),
                    "X-Zendesk-Webhook-Signature-Timestamp": timestamp}
    elif source == "intercom":
        headers["X-Hub-Signature"] = "sha1=" + hmac.new(secret.encode(), raw, hashlib.sha1).hexdigest()
    elif source == "hubspot":
        timestamp = str(int(at.timestamp() * 1000))
        signed = b"POST" + (base_url + path).encode() + raw + timestamp.encode()
        digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
        headers |= {"X-HubSpot-Signature-v3": base64.b64encode(digest).decode(),
                    "X-HubSpot-Request-Timestamp": timestamp}
    elif source == "typeform":
        digest = hmac.new(secret.encode(), raw, hashlib.sha256).digest()
        headers["Typeform-Signature"] = "sha256=" + base64.b64encode(digest).decode()
    elif source == "delighted":
        path += ("&" if query else "?") + f"token={secret}"
    return path, headers


def settings_with_secrets(settings: Settings, **update: Any) -> Settings:
    secrets = {name: SecretStr(value) for name, value in SECRETS.items()}
    return settings.model_copy(update={"source_secrets": secrets, **update})


def published(records: list[Record]) -> list[tuple[str, bytes, dict[str, Any]]]:
    """(topic, key, value without received_at) of each record, in id order."""
    out = []
    for r in records:
        value = orjson.loads(r.value)
        assert value.pop("received_at")
        out.append((r.topic, r.key, value))
    return sorted(out, key=lambda t: (t[2]["id"], t[2]["occurred_at"]))


def expected(topics: Topics, source: str, name: str, query: dict[str, str]) -> list[tuple[str, bytes, dict[str, Any]]]:
    """What the pure mapping makes of the fixture, on the topic and key `POST /v1/events` would use."""
    mapped = SOURCES[source].parse(orjson.loads(fixture(source, name)), query, SourceOptions())
    return sorted([(topics.for_event(e["type"]), e["account_id"].encode(), e) for e in mapped.events],
                  key=lambda t: (t[2]["id"], t[2]["occurred_at"]))


@pytest.fixture
async def sources(bus: Bus, settings: Settings) -> AsyncIterator[Ingest]:
    """Ingest with a secret for every source."""
    registry = new_registry()
    app = create_app(settings_with_secrets(settings), bus=bus, registry=registry)
    async with running(app) as client:
        yield Ingest(app, client, bus, Topics(settings.topic_prefix), registry)


async def post(ingest: Ingest, source: str, raw: bytes, **kwargs: Any) -> Any:
    path, headers = webhook(source, raw, **kwargs)
    return await ingest.client.post(path, content=raw, headers=headers)


def requests(ingest: Ingest, source: str, status: int) -> float:
    return ingest.metric("churnsignal_ingest_source_requests_total", {"source": source, "status": str(status)})


# ------------------------------------------------------------------------------------------ accepted
async def test_every_documented_payload_publishes_its_mapped_events(sources: Ingest):
    for (source, name), count in PUBLISHING.items():
        resp = await post(sources, source, fixture(source, name))
        assert (resp.status_code, resp.json()) == (202, {"accepted": count, "ignored": 0}), (source, name)
    want = [record for (source, name) in PUBLISHING
            for record in expected(sources.topics, source, name, {"account_id": "acme"})]
    assert published(await sources.all_records()) == sorted(want, key=lambda t: (t[2]["id"], t[2]["occurred_at"]))
    for source in SECRETS:
        assert requests(sources, source, 202) >= 1
    assert sources.metric("churnsignal_ingest_source_events_total",
                          {"source": "hubspot", "outcome": "published"}) == 4
    # the same intake as /v1/events: its counters see them
    assert sources.metric("churnsignal_ingest_events_total", {"type": "ticket", "outcome": "accepted"}) == 9


async def test_a_zendesk_ticket_lands_on_the_tickets_topic_keyed_by_account(sources: Ingest):
    resp = await post(sources, "zendesk", fixture("zendesk", "ticket_created.json"), query="")
    assert resp.status_code == 202
    [(topic, key, value)] = published(await sources.all_records())
    assert (topic, key) == (sources.topics.tickets, b"8447346622462")  # the organization, by default
    assert value == {"id": "zendesk:cbe4028c-7239-495d-b020-f22348516046", "type": "ticket",
                     "account_id": "8447346622462", "occurred_at": "2025-01-08T10:12:07.672717+00:00",
                     "data": {"ticket_id": "5158", "status": "opened", "priority": "low",
                              "subject": "ticketinfo_2294a6e9ece2", "requester_id": "8447388090494"}}


async def test_survey_answers_land_on_the_sentiment_topic(sources: Ingest):
    assert (await post(sources, "typeform", fixture("typeform", "form_response.json"))).status_code == 202
    assert (await post(sources, "delighted", fixture("delighted", "survey_response_updated.json"),
                       query="account_id=globex")).status_code == 202
    records = published(await sources.records(sources.topics.sentiment))
    assert [(key, value["id"], value["data"]["source"], value["data"]["score"]) for _, key, value in records] == [
        (b"globex", "delighted:5435", "nps", 9), (b"acme", "typeform:a3a12ec67a1365927098a606107fac15", "nps", 2)]


async def test_kinds_scoring_does_not_use_are_200_and_counted_as_ignored(sources: Ingest):
    for (source, name), count in IGNORED.items():
        resp = await post(sources, source, fixture(source, name), query="")
        assert (resp.status_code, resp.json()) == (200, {"accepted": 0, "ignored": count}), (source, name)
        assert sources.metric("churnsignal_ingest_source_events_total",
                              {"source": source, "outcome": "ignored"}) == count
    assert await sources.all_records() == []


async def test_a_replayed_delivery_publishes_the_same_event_id(sources: Ingest):
    raw = fixture("intercom", "conversation_user_created.json")
    for _ in range(2):
        assert (await post(sources, "intercom", raw)).status_code == 202
    raw = fixture("delighted", "survey_response_created.json")  # then the response's update: same answer
    assert (await post(sources, "delighted", raw)).status_code == 202
    assert (await post(sources, "delighted", fixture("delighted", "survey_response_updated.json"))).status_code == 202
    ids = [value["id"] for _, _, value in published(await sources.all_records())]
    assert ids == ["delighted:5435", "delighted:5435", "intercom:notif_3ac27816-d27c-45fd-a65a-bbaf021cf780",
                   "intercom:notif_3ac27816-d27c-45fd-a65a-bbaf021cf780"]


# ------------------------------------------------------------------------------------------ rejected
async def test_a_bad_signature_is_401_and_publishes_nothing(sources: Ingest):
    for source in SECRETS:
        name = next(n for s, n in PUBLISHING if s == source)
        resp = await post(sources, source, fixture(source, name), secret="not-the-secret")
        assert resp.status_code == 401, source
        assert resp.json()["error"]
        assert "not-the-secret" not in resp.text and SECRETS[source] not in resp.text
        assert requests(sources, source, 401) == 1
    raw = fixture("typeform", "form_response.json")
    path, headers = webhook("typeform", raw)
    resp = await sources.client.post(path, content=raw.replace(b"Laura", b"Mallory"), headers=headers)
    assert resp.status_code == 401
    resp = await sources.client.post("/v1/sources/zendesk", content=fixture("zendesk", "ticket_created.json"),
                                     headers={"Content-Type": "application/json"})
    assert resp.status_code == 401 and "X-Zendesk-Webhook-Signature" in resp.json()["error"]
    assert await sources.all_records() == []


async def test_a_stale_signed_timestamp_is_401_with_a_clear_message(sources: Ingest):
    old = datetime.now(UTC) - timedelta(minutes=6)
    for source, name in (("zendesk", "ticket_created.json"), ("hubspot", "ticket_events.json")):
        resp = await post(sources, source, fixture(source, name), at=old)
        assert resp.status_code == 401
        assert "more than the 300 s accepted" in resp.json()["error"]
    assert await sources.all_records() == []


async def test_a_source_without_a_secret_is_503_naming_the_variable(bus: Bus, settings: Settings):
    registry = new_registry()
    only_zendesk = settings.model_copy(update={"source_secrets": {"zendesk": SecretStr(SECRETS["zendesk"])}})
    app = create_app(only_zendesk, bus=bus, registry=registry)
    async with running(app) as client:
        ingest = Ingest(app, client, bus, Topics(settings.topic_prefix), registry)
        resp = await post(ingest, "typeform", fixture("typeform", "form_response.json"))
        assert resp.status_code == 503
        assert "CHURNSIGNAL_SOURCE_SECRETS" in resp.json()["error"] and "typeform" in resp.json()["error"]
        assert (await post(ingest, "zendesk", fixture("zendesk", "ticket_created.json"))).status_code == 202
        assert [r.topic for r in await ingest.all_records()] == [ingest.topics.tickets]


async def test_unknown_shapes_are_422_with_loc_and_msg_and_publish_nothing(sources: Ingest):
    event = orjson.loads(fixture("zendesk", "ticket_created.json"))
    del event["detail"]["id"]
    raw = orjson.dumps(event)
    resp = await post(sources, "zendesk", raw)
    assert resp.status_code == 422
    assert resp.json()["errors"] == [{"loc": ["detail", "id"], "msg": "required: an id (string or integer)"}]
    resp = await post(sources, "typeform", fixture("typeform", "form_response_hidden.json"), query="")
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["loc"] == ["form_response", "hidden", "account_id"]
    # a mapped event the envelope rejects: a 1-5 rating sent as NPS is fine, a 9 as CSAT is not
    event = orjson.loads(fixture("delighted", "survey_response_updated.json"))
    event["event_data"]["survey_type"] = "csat"
    resp = await post(sources, "delighted", orjson.dumps(event))
    assert resp.status_code == 422 and resp.json()["errors"][0]["loc"] == ["data"]
    assert await sources.all_records() == []


async def test_a_body_that_is_not_json_is_400_once_its_signature_holds(sources: Ingest):
    resp = await post(sources, "intercom", b'{"type": "notification_event", ')
    assert resp.status_code == 400 and "not valid JSON" in resp.json()["error"]
    assert await sources.all_records() == []


async def test_hubspot_behind_a_proxy_verifies_against_the_public_url(bus: Bus, settings: Settings):
    registry = new_registry()
    public = settings_with_secrets(settings, ingest_public_url="https://hooks.example.com/churnsignal/")
    app = create_app(public, bus=bus, registry=registry)
    raw = fixture("hubspot", "ticket_events.json")
    async with running(app) as client:
        path, headers = webhook("hubspot", raw, base_url="https://hooks.example.com/churnsignal")
        assert (await client.post(path, content=raw, headers=headers)).status_code == 202
        path, headers = webhook("hubspot", raw)  # signed for the internal URL: not what HubSpot called
        assert (await client.post(path, content=raw, headers=headers)).status_code == 401


async def test_only_post_on_the_five_explicit_paths(sources: Ingest):
    assert (await sources.client.get("/v1/sources/zendesk")).status_code == 405
    assert (await sources.client.post("/v1/sources/freshdesk", content=b"{}")).status_code == 404
