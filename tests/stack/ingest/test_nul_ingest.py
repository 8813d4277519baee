"""Events carrying U+0000 are a 422 at ingest and never reach Kafka (PostgreSQL could not store them
downstream), each test on the in-process bus and on the real Kafka broker."""

from __future__ import annotations

import orjson

from shared.codec import decode_input
from shared.events import NUL_MESSAGE
from tests.stack.ingest.conftest import AUTH, NDJSON, Ingest, contact, usage


def _events_metric(ingest: Ingest, kind: str, outcome: str) -> float:
    return ingest.metric("churnsignal_ingest_events_total", {"type": kind, "outcome": outcome})


async def test_a_contact_name_with_a_nul_is_a_422_naming_the_field_and_nothing_is_published(ingest: Ingest):
    event = contact(1)
    event["data"] = {**event["data"], "name": "A\u0000B"}
    resp = await ingest.post(orjson.dumps(event))
    assert resp.status_code == 422
    assert resp.json()["errors"] == [{"index": 0, "loc": ["data", "name"], "msg": NUL_MESSAGE}]
    assert await ingest.all_records() == []
    assert _events_metric(ingest, "contact", "invalid") == 1


async def test_one_nul_anywhere_in_a_batch_rejects_the_whole_batch_with_every_location(ingest: Ingest):
    bad_id = usage(1, id="u-\u0000")
    nested = usage(2)
    nested["data"] = {**nested["data"], "meta": {"tags": ["fine", "\u0000"], "k\u0000": True}}
    body = b"\n".join(orjson.dumps(e) for e in [usage(0), bad_id, nested, usage(3)])
    resp = await ingest.post(body, NDJSON)
    assert resp.status_code == 422
    body_json = resp.json()
    assert "2 of 4 events are invalid; nothing was accepted" in body_json["error"]
    assert body_json["errors"] == [
        {"index": 1, "loc": ["id"], "msg": NUL_MESSAGE},
        {"index": 2, "loc": ["data", "meta", "tags", 1], "msg": NUL_MESSAGE},
        {"index": 2, "loc": ["data", "meta", "k\\u0000"], "msg": f"key {NUL_MESSAGE}"},
    ]
    assert await ingest.all_records() == []
    assert (_events_metric(ingest, "usage", "invalid"), _events_metric(ingest, "usage", "rejected")) == (2, 2)


async def test_the_escape_sent_as_plain_text_is_accepted_as_sent(ingest: Ingest):
    event = contact(2)
    event["data"] = {**event["data"], "name": "path C:\\u0000"}  # a backslash, then "u0000"
    resp = await ingest.post(orjson.dumps(event))
    assert (resp.status_code, resp.json()) == (202, {"accepted": 1})
    [record] = await ingest.records(ingest.topics.accounts)
    assert decode_input(record.value).data.name == "path C:\\u0000"


async def test_a_nul_in_a_query_string_or_path_is_a_400(ingest: Ingest):
    resp = await ingest.client.get("/readyz?probe=%00")
    assert resp.status_code == 400
    assert resp.json() == {"error": "the request query string must not contain a NUL character (U+0000)"}
    resp = await ingest.client.post("/v1/events%00", content=orjson.dumps(usage(0)), headers=AUTH)
    assert resp.status_code == 400
    assert resp.json() == {"error": "the request path must not contain a NUL character (U+0000)"}
    assert await ingest.all_records() == []
