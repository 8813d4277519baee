"""CloudEvents 1.0 on `POST /v1/events` (docs/events.md, "CloudEvents"): structured, batch and binary mode,
each test on the in-process bus and on the real Kafka broker. A CloudEvent publishes exactly the record its
native envelope would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from services.ingest.bootstrap import create_app
from shared.bus.port import Bus
from shared.metrics import new_registry
from shared.settings import Settings
from shared.topics import Topics
from tests.stack.ingest.conftest import AUTH, JSON, Ingest, running, ticket, usage

STRUCTURED = {**AUTH, "Content-Type": "application/cloudevents+json"}
BATCH = {**AUTH, "Content-Type": "application/cloudevents-batch+json"}
PREFIX = "com.example."


def as_cloudevent(native: dict[str, Any], *, prefix: str = "", subject: bool = False) -> dict[str, Any]:
    """The structured CloudEvent of a native event."""
    account = {"subject": native["account_id"]} if subject else {"accountid": native["account_id"]}
    return {"specversion": "1.0", "id": native["id"], "source": "/tests", "type": prefix + native["type"],
            "time": native["occurred_at"], **account, "datacontenttype": "application/json",
            "data": native["data"]}


def binary_headers(native: dict[str, Any], *, prefix: str = "") -> dict[str, str]:
    return {**JSON, "ce-specversion": "1.0", "ce-id": native["id"], "ce-source": "/tests",
            "ce-type": prefix + native["type"], "ce-time": native["occurred_at"],
            "ce-accountid": native["account_id"]}


def published(records: list[Any]) -> list[tuple[str, bytes, dict[str, Any]]]:
    """(topic, key, value without received_at) of each record, by event id."""
    out = []
    for r in records:
        value = orjson.loads(r.value)
        assert value.pop("received_at")
        out.append((r.topic, r.key, value))
    return sorted(out, key=lambda t: t[2]["id"])


def expected(ingest: Ingest, natives: list[dict[str, Any]]) -> list[tuple[str, bytes, dict[str, Any]]]:
    topic = {"usage": ingest.topics.usage, "ticket": ingest.topics.tickets}
    return sorted([(topic[n["type"]], n["account_id"].encode(), n) for n in natives], key=lambda t: t[2]["id"])


@pytest.fixture
async def prefixed(bus: Bus, settings: Settings) -> AsyncIterator[Ingest]:
    """Ingest with `CHURNSIGNAL_CLOUDEVENTS_TYPE_PREFIX=com.example.`."""
    registry = new_registry()
    app = create_app(settings.model_copy(update={"cloudevents_type_prefix": PREFIX}), bus=bus, registry=registry)
    async with running(app) as client:
        yield Ingest(app, client, bus, Topics(settings.topic_prefix), registry)


# ------------------------------------------------------------------------------------------ accepted
async def test_structured_event_publishes_what_the_native_envelope_would(ingest: Ingest):
    native = usage(1, "acme")
    resp = await ingest.post(orjson.dumps(as_cloudevent(native)), STRUCTURED)
    assert (resp.status_code, resp.json()) == (202, {"accepted": 1})
    assert published(await ingest.all_records()) == expected(ingest, [native])


async def test_batch_publishes_every_event(ingest: Ingest):
    natives = [usage(1, "acme"), ticket(2, "globex"), usage(3, "initech")]
    body = orjson.dumps([as_cloudevent(natives[0]), as_cloudevent(natives[1], subject=True),
                         as_cloudevent(natives[2])])
    resp = await ingest.post(body, BATCH)
    assert (resp.status_code, resp.json()) == (202, {"accepted": 3})
    assert published(await ingest.all_records()) == expected(ingest, natives)


async def test_binary_event_publishes_what_the_native_envelope_would(ingest: Ingest):
    native = ticket(4, "globex")
    resp = await ingest.post(orjson.dumps(native["data"]), binary_headers(native))
    assert (resp.status_code, resp.json()) == (202, {"accepted": 1})
    assert published(await ingest.all_records()) == expected(ingest, [native])


async def test_cloudevents_and_native_requests_publish_the_same_records(ingest: Ingest):
    native = usage(5, "acme")
    assert (await ingest.post(orjson.dumps(native))).status_code == 202
    assert (await ingest.post(orjson.dumps(as_cloudevent(native)), STRUCTURED)).status_code == 202
    first, second = published(await ingest.all_records())
    assert first == second


async def test_type_prefix_is_stripped_in_every_mode(prefixed: Ingest):
    natives = [usage(1), usage(2), usage(3)]
    assert (await prefixed.post(orjson.dumps(as_cloudevent(natives[0], prefix=PREFIX)), STRUCTURED)).status_code == 202
    assert (await prefixed.post(orjson.dumps([as_cloudevent(natives[1], prefix=PREFIX)]), BATCH)).status_code == 202
    resp = await prefixed.post(orjson.dumps(natives[2]["data"]), binary_headers(natives[2], prefix=PREFIX))
    assert resp.status_code == 202
    assert published(await prefixed.all_records()) == expected(prefixed, natives)
    resp = await prefixed.post(orjson.dumps(as_cloudevent(usage(9))), STRUCTURED)  # no prefix
    assert resp.status_code == 422 and resp.json()["errors"][0]["loc"] == ["type"]


# ------------------------------------------------------------------------------------------ rejected
async def test_bad_specversion_is_422_and_nothing_is_published(ingest: Ingest):
    event = as_cloudevent(usage(1)) | {"specversion": "0.3"}
    resp = await ingest.post(orjson.dumps(event), STRUCTURED)
    assert resp.status_code == 422
    assert [(e["index"], e["loc"]) for e in resp.json()["errors"]] == [(0, ["specversion"])]
    native = usage(2)
    resp = await ingest.post(orjson.dumps(native["data"]), binary_headers(native) | {"ce-specversion": "0.3"})
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["loc"] == ["header", "ce-specversion"]
    assert await ingest.all_records() == []


async def test_one_bad_event_of_a_batch_publishes_nothing(ingest: Ingest):
    good, bad = as_cloudevent(usage(1)), as_cloudevent(usage(2))
    del bad["time"]
    resp = await ingest.post(orjson.dumps([good, bad]), BATCH)
    assert resp.status_code == 422
    body = resp.json()
    assert body["error"].startswith("1 of 2 event is invalid")  # worded as for native events
    [error] = body["errors"]
    assert (error["index"], error["loc"]) == (1, ["time"]) and "required" in error["msg"]
    assert await ingest.all_records() == []


async def test_envelope_errors_are_named_by_cloudevents_attribute(ingest: Ingest):
    event = as_cloudevent(usage(1)) | {"time": "yesterday", "data": {"count": 2}}
    resp = await ingest.post(orjson.dumps(event), STRUCTURED)
    assert resp.status_code == 422
    assert sorted(tuple(e["loc"]) for e in resp.json()["errors"]) == [("data", "feature"), ("time",)]
    native = usage(2)
    resp = await ingest.post(orjson.dumps({"count": 2}), binary_headers(native) | {"ce-time": "yesterday"})
    assert resp.status_code == 422
    assert sorted(tuple(e["loc"]) for e in resp.json()["errors"]) == [("body", "feature"), ("header", "ce-time")]
    assert await ingest.all_records() == []


async def test_a_cloudevent_never_falls_into_the_plain_json_path(ingest: Ingest):
    # a native envelope sent as a structured CloudEvent is not a CloudEvent: 422 naming specversion etc.
    resp = await ingest.post(orjson.dumps(usage(1)), STRUCTURED)
    assert resp.status_code == 422
    assert ["specversion"] in [e["loc"] for e in resp.json()["errors"]]
    # an array sent as one structured event is a 400 pointing at the batch type
    resp = await ingest.post(orjson.dumps([as_cloudevent(usage(2))]), STRUCTURED)
    assert resp.status_code == 400 and "cloudevents-batch+json" in resp.json()["error"]
    assert await ingest.all_records() == []


async def test_binary_data_that_is_not_json_is_415(ingest: Ingest):
    native = usage(1)
    resp = await ingest.post(b"feature=x", binary_headers(native) | {"Content-Type": "text/plain"})
    assert resp.status_code == 415
    assert await ingest.all_records() == []
