"""Segment on ingest (docs/integrations.md, "Segment"): the HTTP Tracking API paths with the write key as an ingest
API key, and the Webhooks destination on `/v1/sources/segment`; each test on the in-process bus and on the
real Kafka broker. Payloads are Segment's documented examples (tests/fixtures/segment)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from services.ingest.bootstrap import create_app
from services.ingest.segment.directory import UserAccounts
from shared.bus.memory import MemoryBus
from shared.bus.port import Bus
from shared.errors import BusUnavailable
from shared.metrics import new_registry
from shared.settings import Settings
from shared.topics import Topics
from tests.conftest import INGEST_KEY, KAFKA, READ_KEY, USAGE_ONLY_KEY
from tests.stack.ingest.conftest import Ingest, recent, running

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "segment"
SECRET = "segment-shared-secret"
UNMAPPED = "churnsignal_ingest_segment_unmapped_total"


def basic(key: str = INGEST_KEY) -> dict[str, str]:
    """What Segment's libraries send: the write key as the user name, no password."""
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode(),
            "Content-Type": "application/json"}


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    signature = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
    return {"Content-Type": "application/json", "X-Signature": signature}


def published(records: list[Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(topic, key, value without received_at) of each record, in the order of their ids."""
    out = []
    for r in records:
        value = orjson.loads(r.value)
        assert value.pop("received_at")
        out.append((r.topic, r.key.decode(), value))
    return sorted(out, key=lambda t: t[2]["id"])


def users(ingest: Ingest) -> UserAccounts:
    return ingest.app.state.segment_users


async def ready(ingest: Ingest) -> Ingest:
    """Once the Segment user directory is loaded (the Segment paths answer 503 before)."""
    async with asyncio.timeout(60):
        await users(ingest).wait_ready()
    return ingest


@contextlib.asynccontextmanager
async def started(bus: Bus, settings: Settings) -> AsyncIterator[Ingest]:
    registry = new_registry()
    app = create_app(settings, bus=bus, registry=registry)
    async with running(app) as client:
        yield await ready(Ingest(app, client, bus, Topics(settings.topic_prefix), registry))


@pytest.fixture
async def segment(bus: Bus, settings: Settings) -> AsyncIterator[Ingest]:
    """Ingest with the Webhooks destination's shared secret configured, its user directory loaded."""
    configured = settings.model_copy(update={"source_secrets": {"segment": SecretStr(SECRET)}})
    async with started(bus, configured) as ingest:
        yield ingest


def track(message_id: str, account: str | None = "acme", user: str = "u-1", **over: Any) -> dict[str, Any]:
    context = {"library": {"name": "analytics-python", "version": "2.4.0"}}
    if account is not None:
        context["groupId"] = account
    return {"type": "track", "messageId": message_id, "userId": user, "event": "Report Exported",
            "timestamp": recent(), "context": context, **over}


# ---------------------------------------------------------------------------------------------- auth
async def test_basic_auth_with_the_write_key_publishes_the_event(segment: Ingest):
    message = track("m-1")
    resp = await segment.client.post("/v1/track", content=orjson.dumps(message), headers=basic())
    assert (resp.status_code, resp.json()) == (200, {"success": True})
    assert published(await segment.all_records()) == [
        (segment.topics.usage, "acme", {"id": "segment:m-1", "type": "usage", "account_id": "acme",
                                         "occurred_at": message["timestamp"],
                                         "data": {"feature": "Report Exported", "user_id": "u-1"}})]


async def test_a_wrong_or_missing_write_key_is_401_and_publishes_nothing(segment: Ingest):
    body = orjson.dumps({"batch": [track("m-1")]})
    resp = await segment.client.post("/v1/batch", content=body, headers=basic("not-a-key"))
    assert (resp.status_code, resp.json()) == (401, {"error": "unknown API key"})
    assert resp.headers["www-authenticate"].startswith("Basic")
    resp = await segment.client.post("/v1/batch", content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 401 and "write key" in resp.json()["error"]
    resp = await segment.client.post("/v1/batch", content=body, headers={"Authorization": "Basic %%%"})
    assert resp.status_code == 401
    assert await segment.all_records() == []


async def test_other_ways_of_giving_the_write_key(segment: Ingest):
    """Bearer like `/v1/events`, and `writeKey` in the body (older libraries, the HTTP API page's examples)."""
    resp = await segment.client.post("/v1/track", content=orjson.dumps(track("m-1")),
                                     headers={"Authorization": f"Bearer {INGEST_KEY}"})
    assert resp.status_code == 200
    resp = await segment.client.post("/v1/batch", content=orjson.dumps({"batch": [track("m-2")],
                                                                        "writeKey": INGEST_KEY}))
    assert resp.status_code == 200
    assert [v["id"] for _, _, v in published(await segment.all_records())] == ["segment:m-1", "segment:m-2"]


async def test_a_key_without_the_scope_is_403_and_publishes_nothing(segment: Ingest):
    resp = await segment.client.post("/v1/track", content=orjson.dumps(track("m-1")), headers=basic(READ_KEY))
    assert resp.status_code == 403
    # a key for usage only may send track, not group (an account event)
    group = {"type": "group", "userId": "u-1", "groupId": "acme", "messageId": "g-1", "timestamp": recent()}
    resp = await segment.client.post("/v1/batch", content=orjson.dumps({"batch": [track("m-2"), group]}),
                                     headers=basic(USAGE_ONLY_KEY))
    assert resp.status_code == 403 and resp.json()["types"] == ["account"]
    assert await segment.all_records() == []
    resp = await segment.client.post("/v1/track", content=orjson.dumps(track("m-3")), headers=basic(USAGE_ONLY_KEY))
    assert resp.status_code == 200


# ------------------------------------------------------------------------------------------- mapping
async def test_documented_calls_through_the_http_api_paths(segment: Ingest):
    """The HTTP API page's group call puts 019mr8mf4r in 8e9df332ac; its batch then maps that user's identify
    and track, and counts the other user's two messages as unmapped."""
    resp = await segment.client.post("/v1/group", content=orjson.dumps(fixture("http_api_group.json")),
                                     headers=basic())
    assert resp.status_code == 200
    resp = await segment.client.post("/v1/batch", content=orjson.dumps(fixture("batch.json")), headers=basic())
    assert (resp.status_code, resp.json()) == (200, {"success": True})
    records = published(await segment.records(segment.topics.usage, segment.topics.accounts))
    assert sorted((topic, key, v["type"], v["occurred_at"]) for topic, key, v in records) == [
        (segment.topics.accounts, "8e9df332ac", "account", "2012-12-02T00:31:38.208Z"),
        (segment.topics.accounts, "8e9df332ac", "contact", "2012-12-02T00:30:08.276Z"),
        (segment.topics.usage, "8e9df332ac", "usage", "2012-12-02T00:30:12.984Z"),
    ]
    contact = next(v for _, _, v in records if v["type"] == "contact")
    assert contact["data"] == {"contact_id": "019mr8mf4r", "user_id": "019mr8mf4r", "email": "jake@yahoo.com",
                               "name": "Jake Peterson"}
    memberships = await segment.records(segment.topics.segment_users)
    assert [(r.key, r.value) for r in memberships] == [(b"019mr8mf4r", b"8e9df332ac")]
    assert segment.metric(UNMAPPED, {"type": "identify", "reason": "no_account"}) == 1
    assert segment.metric(UNMAPPED, {"type": "track", "reason": "no_account"}) == 1


async def test_unmapped_messages_are_counted_and_answered_with_success(segment: Ingest):
    body = {"batch": [track("m-1", account=None, user="stranger"), {"type": "alias", "previousId": "a",
                                                                      "userId": "b", "messageId": "al-1"}]}
    resp = await segment.client.post("/v1/batch", content=orjson.dumps(body), headers=basic())
    assert (resp.status_code, resp.json()) == (200, {"success": True})
    resp = await segment.client.post("/v1/alias", content=orjson.dumps(fixture("http_api_alias.json")),
                                     headers=basic())
    assert resp.status_code == 200
    assert await segment.all_records() == []
    assert segment.metric(UNMAPPED, {"type": "track", "reason": "no_account"}) == 1
    assert segment.metric(UNMAPPED, {"type": "alias", "reason": "unsupported_type"}) == 2


async def test_the_users_account_is_learned_from_a_group_call(segment: Ingest):
    resp = await segment.client.post("/v1/track", content=orjson.dumps(track("m-1", account=None)), headers=basic())
    assert resp.status_code == 200 and await segment.records(segment.topics.usage) == []
    group = {"userId": "u-1", "groupId": "initech", "messageId": "g-1", "timestamp": recent(),
             "traits": {"name": "Initech", "plan": "enterprise", "mrr": 2000, "csm_email": "csm@vendor.example"}}
    assert (await segment.client.post("/v1/group", content=orjson.dumps(group), headers=basic())).status_code == 200
    resp = await segment.client.post("/v1/track", content=orjson.dumps(track("m-2", account=None)), headers=basic())
    assert resp.status_code == 200
    records = published(await segment.records(segment.topics.usage, segment.topics.accounts))
    assert [(key, v["id"]) for _, key, v in records] == [("initech", "segment:g-1"), ("initech", "segment:m-2")]
    assert records[0][2]["data"] == {"name": "Initech", "plan": "enterprise", "arr": 24000,
                                     "csm": {"email": "csm@vendor.example"}}
    # a group call that changes nothing writes no membership again
    group["messageId"] = "g-2"
    assert (await segment.client.post("/v1/group", content=orjson.dumps(group), headers=basic())).status_code == 200
    assert len(await segment.records(segment.topics.segment_users)) == 1


async def test_the_learned_accounts_survive_a_restart_and_serve_every_replica(bus: Bus, settings: Settings):
    group = {"userId": "u-1", "groupId": "initech", "messageId": "g-1", "timestamp": recent()}
    async with started(bus, settings) as first:
        assert (await first.client.post("/v1/group", content=orjson.dumps(group), headers=basic())).status_code == 200
        async with started(bus, settings) as replica:
            # the replica follows the topic: the first one's group call reaches it
            async with asyncio.timeout(60):
                while True:
                    if users(replica).account_of("u-1") is not None:
                        break
                    await asyncio.sleep(0.05)
            resp = await replica.client.post("/v1/track", content=orjson.dumps(track("m-1", account=None)),
                                             headers=basic())
            assert resp.status_code == 200
    async with started(bus, settings) as restarted:   # reads the whole topic before it answers
        assert users(restarted).account_of("u-1") == "initech"
        resp = await restarted.client.post("/v1/track", content=orjson.dumps(track("m-2", account=None)),
                                           headers=basic())
        assert resp.status_code == 200
        assert [(key, v["id"]) for _, key, v in published(await restarted.records(restarted.topics.usage))] == [
            ("initech", "segment:m-1"), ("initech", "segment:m-2")]


async def test_gzip_bodies_as_segments_libraries_send_them(segment: Ingest):
    body = gzip.compress(orjson.dumps({"batch": [track("m-1"), track("m-2")], "sentAt": recent()}))
    resp = await segment.client.post("/v1/batch", content=body, headers={**basic(), "Content-Encoding": "gzip"})
    assert resp.status_code == 200
    assert len(await segment.records(segment.topics.usage)) == 2


# ------------------------------------------------------------------------------------------- refused
async def test_what_is_no_segment_request_is_named_and_nothing_is_published(segment: Ingest):
    bad = {"batch": [track("m-1"), {"type": "track", "userId": "u", "messageId": "m-2"}]}
    resp = await segment.client.post("/v1/batch", content=orjson.dumps(bad), headers=basic())
    assert resp.status_code == 422
    assert resp.json() == {"error": "1 Segment message is invalid; nothing was accepted", "errors": [
        {"loc": ["batch", 1, "event"],
         "msg": "required: the name of the action (it becomes the usage event's feature)"}]}
    resp = await segment.client.post("/v1/batch", content=b'{"batch": [', headers=basic())
    assert resp.status_code == 400 and "not valid JSON" in resp.json()["error"]
    resp = await segment.client.post("/v1/batch", content=b'{"batch": {}}', headers=basic())
    assert resp.status_code == 422 and resp.json()["errors"][0]["loc"] == ["batch"]
    resp = await segment.client.post("/v1/batch", content=orjson.dumps({"batch": [track("x")] * 1001}),
                                     headers=basic())
    assert resp.status_code == 413
    too_long = track("m-3", event="x" * 300)
    resp = await segment.client.post("/v1/track", content=orjson.dumps(too_long), headers=basic())
    assert resp.status_code == 422 and resp.json()["errors"][0]["loc"] == ["event"]
    resp = await segment.client.get("/v1/batch", headers=basic())
    assert (resp.status_code, resp.headers["allow"]) == (405, "POST")
    assert await segment.all_records() == []


async def test_segment_paths_answer_503_until_the_user_directory_is_loaded(settings: Settings):
    app = create_app(settings, bus=MemoryBus(6), registry=new_registry())   # not started: nothing read yet
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest.test") as client:
        resp = await client.post("/v1/track", content=orjson.dumps(track("m-1")), headers=basic())
    assert resp.status_code == 503 and resp.headers["retry-after"] == "5"
    assert "loading" in resp.json()["error"]


# ------------------------------------------------------------------------------------------- webhook
async def test_a_signed_webhook_is_published(segment: Ingest):
    for name in ("webhooks_group.json", "webhooks_identify.json", "webhooks_track.json", "webhooks_alias.json"):
        body = (FIXTURES / name).read_bytes()   # signed as sent, whatever its spacing
        resp = await segment.client.post("/v1/sources/segment", content=body, headers=signed(body))
        assert (resp.status_code, resp.json()) == (200, {"success": True}), name
    records = published(await segment.records(segment.topics.usage, segment.topics.accounts))
    assert sorted((v["type"], key) for _, key, v in records) == [
        ("account", "0e8c78ea9d97a7b8185e8632"), ("contact", "0e8c78ea9d97a7b8185e8632"),
        ("usage", "0e8c78ea9d97a7b8185e8632")]
    assert segment.metric(UNMAPPED, {"type": "alias", "reason": "unsupported_type"}) == 1


async def test_a_badly_signed_webhook_is_401_and_publishes_nothing(segment: Ingest):
    body = (FIXTURES / "webhooks_group.json").read_bytes()
    for headers in (signed(body, "another-secret"), {"Content-Type": "application/json"},
                    signed(body) | {"X-Signature": "sha1=" + signed(body)["X-Signature"]}):
        resp = await segment.client.post("/v1/sources/segment", content=body, headers=headers)
        assert resp.status_code == 401, headers
        assert SECRET not in resp.text
    tampered = body.replace(b"Initech", b"Evil Co")
    resp = await segment.client.post("/v1/sources/segment", content=tampered, headers=signed(body))
    assert resp.status_code == 401
    assert await segment.all_records() == []


async def test_webhook_without_a_secret_is_503_naming_the_variable(ingest: Ingest):
    body = (FIXTURES / "webhooks_track.json").read_bytes()
    resp = await ingest.client.post("/v1/sources/segment", content=body, headers=signed(body))
    assert resp.status_code == 503 and "CHURNSIGNAL_SOURCE_SECRETS" in resp.json()["error"]
    assert await ingest.all_records() == []


# ------------------------------------------------------------------------------------------ the topic
@pytest.mark.integration
async def test_the_user_topic_is_compacted_on_kafka(settings: Settings):
    if not KAFKA:
        pytest.skip("CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS not set (run `make services`)")
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from shared.bus.kafka import KafkaBus

    bus = KafkaBus(KAFKA)
    try:
        async with started(bus, settings):
            pass
        admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
        await admin.start()
        try:
            topic = Topics(settings.topic_prefix).segment_users
            answers = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        finally:
            await admin.close()
        configs = {entry[0]: entry[1] for answer in answers for resource in answer.resources
                   for entry in resource[4]}
        assert configs["cleanup.policy"] == "compact"
    finally:
        await bus.delete_topics(Topics(settings.topic_prefix).all)


# ------------------------------------------------------------------------------------- the user directory
async def test_the_directory_serves_its_own_writes_at_once_and_the_topics_order_in_the_end():
    bus = MemoryBus(6)
    topic = "t.segment-users"
    publisher = bus.publisher()
    mine = UserAccounts(bus, publisher, topic, group_id="ingest-a")
    other = UserAccounts(bus, publisher, topic, group_id="ingest-b")
    tasks = [asyncio.create_task(d.run()) for d in (mine, other)]
    try:
        async with asyncio.timeout(10):
            await mine.wait_ready()
            await other.wait_ready()
            await mine.remember({"u-1": "acme"})
            assert mine.account_of("u-1") == "acme"            # before its copy came back from the topic
            await other.remember({"u-1": "globex"})            # a later group call, on another replica
            while True:  # both follow the topic: the newest record wins
                if mine.account_of("u-1") == other.account_of("u-1") == "globex":
                    break
                await asyncio.sleep(0.01)
        bus.available = False                                  # a write that is not acknowledged...
        with pytest.raises(BusUnavailable):
            await mine.remember({"u-2": "initech"})
        assert mine.account_of("u-2") is None                  # ...is not taken as known
        assert [(r.key, r.value) for r in bus.records(topic)] == [(b"u-1", b"acme"), (b"u-1", b"globex")]
    finally:
        for d, task in zip((mine, other), tasks, strict=True):
            d.stop()
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
