"""`POST /v1/events` behaviour (docs/events.md), each test on the in-process bus and on the real Kafka broker."""

from __future__ import annotations

import asyncio
import gzip
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from shared.bus.memory import MemoryBus
from shared.bus.port import partition_for
from shared.codec import decode_input
from shared.events import EventType
from tests.conftest import ADMIN_KEY, READ_KEY, USAGE_ONLY_KEY
from tests.stack.ingest.conftest import (
    AUTH,
    JSON,
    NDJSON,
    Ingest,
    account_event,
    contact,
    sentiment,
    ticket,
    usage,
)


async def assert_nothing_published(ingest: Ingest) -> None:
    assert await ingest.all_records() == []


# ------------------------------------------------------------------------------------------ accepted
async def test_accepted_events_land_on_their_topics_keyed_by_account_in_the_documented_json(ingest: Ingest):
    events = [usage(1, "acme"), ticket(2, "globex"), sentiment(3, "acme"), account_event(4, "initech"),
              contact(5, "acme")]
    before = datetime.now(UTC)
    resp = await ingest.post(orjson.dumps(events))
    after = datetime.now(UTC)
    assert resp.status_code == 202
    assert resp.json() == {"accepted": 5}

    topics = ingest.topics
    expected_topic = {"usage": topics.usage, "ticket": topics.tickets, "sentiment": topics.sentiment,
                      "account": topics.accounts, "contact": topics.accounts}
    records = await ingest.all_records()
    assert len(records) == 5
    by_id = {orjson.loads(r.value)["id"]: r for r in records}
    for sent in events:
        record = by_id[sent["id"]]
        assert record.topic == expected_topic[sent["type"]]
        assert record.key == sent["account_id"].encode()
        # co-partitioned: the key alone decides the partition, the same on every input topic
        assert record.partition == partition_for(record.key, 6)
        value = orjson.loads(record.value)
        received_at = datetime.fromisoformat(value.pop("received_at"))
        assert value == sent  # the event JSON exactly as sent ...
        assert before <= received_at <= after  # ... plus when ingest received it
        assert decode_input(record.value).id == sent["id"]


async def test_one_event_as_a_json_object(ingest: Ingest):
    resp = await ingest.post(orjson.dumps(usage(7)))
    assert (resp.status_code, resp.json()) == (202, {"accepted": 1})
    [record] = await ingest.records(ingest.topics.usage)
    assert orjson.loads(record.value)["id"] == "u-7"


async def test_ndjson_one_event_per_line_blank_lines_and_crlf_allowed(ingest: Ingest):
    body = b"\r\n".join(orjson.dumps(usage(i)) for i in range(3)) + b"\r\n\r\n"
    resp = await ingest.post(body, NDJSON)
    assert (resp.status_code, resp.json()) == (202, {"accepted": 3})
    records = await ingest.records(ingest.topics.usage)
    assert sorted(orjson.loads(r.value)["id"] for r in records) == ["u-0", "u-1", "u-2"]


async def test_gzip_encoded_body(ingest: Ingest):
    body = gzip.compress(orjson.dumps([usage(i) for i in range(10)]))
    resp = await ingest.post(body, {**JSON, "Content-Encoding": "gzip"})
    assert (resp.status_code, resp.json()) == (202, {"accepted": 10})
    assert len(await ingest.records(ingest.topics.usage)) == 10


async def test_concurrent_requests_are_all_acknowledged_and_published(ingest: Ingest):
    bodies = [orjson.dumps([usage(r * 100 + i, f"acct-{i}") for i in range(20)]) for r in range(15)]
    responses = await asyncio.gather(*(ingest.post(b) for b in bodies))
    assert [r.status_code for r in responses] == [202] * 15
    records = await ingest.records(ingest.topics.usage)
    assert sorted(orjson.loads(r.value)["id"] for r in records) == sorted(
        f"u-{r * 100 + i}" for r in range(15) for i in range(20))


async def test_scoped_key_may_send_its_own_type(ingest: Ingest):
    resp = await ingest.post(orjson.dumps(usage()), {**JSON, "Authorization": f"Bearer {USAGE_ONLY_KEY}"})
    assert resp.status_code == 202
    resp = await ingest.post(orjson.dumps(ticket()), {**JSON, "Authorization": f"Bearer {ADMIN_KEY}"})
    assert resp.status_code == 202


# ------------------------------------------------------------------------------------------ rejected
async def test_body_that_is_not_json_is_400_saying_where(ingest: Ingest):
    resp = await ingest.post(b'[{"id": "x",\n  "type": usage}]')
    assert resp.status_code == 400
    body = resp.json()
    assert "not valid JSON" in body["error"] and "line 2" in body["error"]
    assert (body["line"], body["column"]) == (2, 11)
    await assert_nothing_published(ingest)


async def test_ndjson_with_a_broken_line_is_400_naming_the_line(ingest: Ingest):
    body = orjson.dumps(usage(1)) + b"\n" + orjson.dumps(usage(2)) + b"\n{oops\n"
    resp = await ingest.post(body, NDJSON)
    assert resp.status_code == 400
    assert "NDJSON line 3" in resp.json()["error"] and resp.json()["line"] == 3
    await assert_nothing_published(ingest)


@pytest.mark.parametrize(("body", "headers", "says"), [
    (b"", JSON, "empty"),
    (b"  \n", JSON, "empty"),
    (b"[]", JSON, "array is empty"),
    (b"\n\n", NDJSON, "no events"),
    (b"not gzip", {**JSON, "Content-Encoding": "gzip"}, "not valid gzip"),
    (gzip.compress(b"[1, 2, 3]")[:-6], {**JSON, "Content-Encoding": "gzip"}, "truncated"),
], ids=["empty", "blank", "empty-array", "blank-ndjson", "not-gzip", "truncated-gzip"])
async def test_bodies_without_events_are_400(ingest: Ingest, body: bytes, headers: dict[str, str], says: str):
    resp = await ingest.post(body, headers)
    assert resp.status_code == 400
    assert says in resp.json()["error"]
    await assert_nothing_published(ingest)


@pytest.mark.parametrize(("authorization", "says"), [
    (None, "missing Authorization"),
    ("Bearer not-a-known-key", "unknown API key"),
    ("Basic dXNlcjpwYXNz", "must be 'Bearer"),
    ("Bearer ", "must be 'Bearer"),
])
async def test_missing_or_unknown_key_is_401(ingest: Ingest, authorization: str | None, says: str):
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    resp = await ingest.post(orjson.dumps(usage()), headers)
    assert resp.status_code == 401
    assert says in resp.json()["error"]
    assert resp.headers["www-authenticate"] == "Bearer"
    await assert_nothing_published(ingest)


async def test_key_without_the_scope_of_an_event_type_is_403_naming_the_type(ingest: Ingest):
    headers = {**JSON, "Authorization": f"Bearer {USAGE_ONLY_KEY}"}
    resp = await ingest.post(orjson.dumps([usage(1), ticket(2), contact(3)]), headers)
    assert resp.status_code == 403
    body = resp.json()
    assert body["types"] == ["contact", "ticket"]
    assert "'ticket'" in body["error"] and "'ingest:ticket'" in body["error"]
    assert "usage-only" in body["error"]  # the key's name, never the key
    assert USAGE_ONLY_KEY not in resp.text
    await assert_nothing_published(ingest)


async def test_key_without_any_ingest_scope_is_403(ingest: Ingest):
    resp = await ingest.post(orjson.dumps(usage()), {**JSON, "Authorization": f"Bearer {READ_KEY}"})
    assert resp.status_code == 403
    assert "lacks the 'ingest' scope" in resp.json()["error"]
    await assert_nothing_published(ingest)


async def test_body_over_the_limit_is_413(ingest: Ingest):
    limit = 1024 * 1024
    filler = "x" * 1100
    events = [usage(i, data={"feature": "f", "note": filler}) for i in range(1000)]
    body = orjson.dumps(events)
    assert len(body) > limit
    resp = await ingest.post(body)
    assert resp.status_code == 413
    assert "over the limit of 1048576 bytes" in resp.json()["error"]
    await assert_nothing_published(ingest)


async def test_gzip_bomb_is_413_on_its_decompressed_size(ingest: Ingest):
    bomb = gzip.compress(b"[" + b" " * (20 * 1024 * 1024) + b"]")
    assert len(bomb) < 64 * 1024
    resp = await ingest.post(bomb, {**JSON, "Content-Encoding": "gzip"})
    assert resp.status_code == 413
    assert "decompressed body is over the limit" in resp.json()["error"]
    await assert_nothing_published(ingest)


@pytest.mark.parametrize("fmt", ["json", "ndjson"])
async def test_more_than_1000_events_is_413(ingest: Ingest, fmt: str):
    events = [usage(i) for i in range(1001)]
    if fmt == "json":
        resp = await ingest.post(orjson.dumps(events))
    else:
        resp = await ingest.post(b"\n".join(orjson.dumps(e) for e in events), NDJSON)
    assert resp.status_code == 413
    assert "the limit is 1000" in resp.json()["error"]
    await assert_nothing_published(ingest)


async def test_exactly_1000_events_are_accepted(ingest: Ingest):
    resp = await ingest.post(orjson.dumps([usage(i, f"acct-{i % 50}") for i in range(1000)]))
    assert (resp.status_code, resp.json()) == (202, {"accepted": 1000})
    assert len(await ingest.records(ingest.topics.usage)) == 1000


@pytest.mark.parametrize(("headers", "says"), [
    ({**AUTH, "Content-Type": "text/plain"}, "unsupported content type 'text/plain'"),
    ({**AUTH, "Content-Type": "application/x-www-form-urlencoded"}, "unsupported content type"),
    (AUTH, "missing Content-Type"),
    ({**JSON, "Content-Type": "application/json; charset=latin-1"}, "unsupported charset"),
    ({**JSON, "Content-Encoding": "br"}, "unsupported Content-Encoding 'br'"),
])
async def test_unsupported_media_is_415(ingest: Ingest, headers: dict[str, str], says: str):
    resp = await ingest.post(orjson.dumps(usage()), headers)
    assert resp.status_code == 415
    assert says in resp.json()["error"]
    await assert_nothing_published(ingest)


async def test_invalid_events_are_422_each_located_and_nothing_is_published(ingest: Ingest):
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    events = [
        usage(0),
        usage(1, acount_id="typo"),
        {**usage(2), "occurred_at": future},
        {**ticket(3), "data": {"ticket_id": "T3", "status": "pending"}},
        "not an event",
        {**usage(5), "data": {"count": "5"}},
        sentiment(6),
    ]
    resp = await ingest.post(orjson.dumps(events))
    assert resp.status_code == 422
    body = resp.json()
    assert "5 of 7 events are invalid" in body["error"]
    located = {(e["index"], tuple(e["loc"])) for e in body["errors"]}
    assert (1, ("acount_id",)) in located
    assert (2, ("occurred_at",)) in located
    assert (3, ("data", "status")) in located
    assert (4, ()) in located
    assert {(5, ("data", "feature")), (5, ("data", "count"))} <= located
    assert {e["index"] for e in body["errors"]} == {1, 2, 3, 4, 5}
    messages = {(e["index"], tuple(e["loc"])): e["msg"] for e in body["errors"]}
    assert messages[(1, ("acount_id",))] == "unknown field 'acount_id'"
    assert "future" in messages[(2, ("occurred_at",))]
    await assert_nothing_published(ingest)


async def test_received_at_is_set_by_ingest_not_by_senders(ingest: Ingest):
    resp = await ingest.post(orjson.dumps({**usage(), "received_at": "2026-01-01T00:00:00Z"}))
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["loc"] == ["received_at"]
    await assert_nothing_published(ingest)


async def test_unavailable_bus_is_503_with_retry_after_never_202(ingest: Ingest):
    if not isinstance(ingest.bus, MemoryBus):
        pytest.skip("the real broker is stopped in tests/stack/ingest/test_outage.py")
    ingest.bus.available = False
    resp = await ingest.post(orjson.dumps(usage()))
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "5"
    assert "retry later" in resp.json()["error"]
    assert (await ingest.client.get("/readyz")).status_code == 503
    ingest.bus.available = True
    assert (await ingest.post(orjson.dumps(usage()))).status_code == 202


# ------------------------------------------------------------------------------------ operations
async def test_metrics_count_events_by_type_and_outcome(ingest: Ingest):
    await ingest.post(orjson.dumps([usage(1), usage(2), ticket(3)]))
    await ingest.post(orjson.dumps([usage(4), {**ticket(5), "data": {}}]))
    await ingest.post(orjson.dumps(ticket(6)), {**JSON, "Authorization": f"Bearer {USAGE_ONLY_KEY}"})

    def events(kind: str, outcome: str) -> float:
        return ingest.metric("churnsignal_ingest_events_total", {"type": kind, "outcome": outcome})

    assert events("usage", "accepted") == 2
    assert events("ticket", "accepted") == 1
    assert events("ticket", "invalid") == 1
    assert events("usage", "rejected") == 1
    assert events("ticket", "forbidden") == 1
    assert ingest.metric("churnsignal_ingest_requests_total", {"status": "202"}) == 1
    assert ingest.metric("churnsignal_ingest_requests_total", {"status": "422"}) == 1
    assert ingest.metric("churnsignal_ingest_requests_total", {"status": "403"}) == 1
    assert ingest.metric("churnsignal_ingest_request_duration_seconds_count") == 3
    assert ingest.metric("churnsignal_ingest_batch_events_sum") == 6
    text = (await ingest.client.get("/metrics")).text
    assert 'churnsignal_ingest_events_total{outcome="accepted",type="usage"} 2.0' in text
    assert "churnsignal_ingest_producer_errors_total 0.0" in text


async def test_health_readiness_and_docs(ingest: Ingest):
    assert (await ingest.client.get("/healthz")).json() == {"status": "ok"}
    ready = await ingest.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "checks": {"kafka": True, "topics": True}}
    assert (await ingest.client.get("/docs")).status_code == 200
    schema = (await ingest.client.get("/openapi.json")).json()
    operation = schema["paths"]["/v1/events"]["post"]
    assert set(operation["requestBody"]["content"]) == {"application/json", "application/x-ndjson"}
    assert {"202", "400", "401", "403", "413", "415", "422", "503"} <= set(operation["responses"])
    assert "Retry-After" in operation["responses"]["503"]["headers"]
    assert {f"{t.value.capitalize()}Event" for t in EventType} <= set(schema["components"]["schemas"])
