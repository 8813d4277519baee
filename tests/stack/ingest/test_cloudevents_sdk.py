"""The CloudEvents Python SDK (`cloudevents` on PyPI) as a client of `POST /v1/events` (docs/events.md,
"CloudEvents"): requests the SDK builds in structured and binary mode, and a batch of events the SDK
serializes (the SDK has no batch helper: the array is built as the JSON Event Format's batch section says),
are accepted and reach scoring on the real Kafka and PostgreSQL.

Both of the SDK's APIs are used: `cloudevents.core` (its current one: `CloudEvent`, the HTTP binding's
`to_structured` / `to_binary` with `JSONFormat`) and `cloudevents.v1` (the one older code uses:
`cloudevents.v1.http.CloudEvent` with `to_structured` / `to_binary`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cloudevents.core.bindings.http import to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from cloudevents.v1 import conversion as v1_conversion
from cloudevents.v1.http import CloudEvent as V1CloudEvent

from services.ingest.bootstrap import create_app
from services.scoring.adapters import tables as t
from shared.bus.kafka import KafkaBus
from shared.metrics import new_registry
from shared.settings import Settings
from tests.conftest import INGEST_KEY, KAFKA
from tests.conftest import test_api_keys as api_keys
from tests.stack.ingest.conftest import running as ingest_running
from tests.stack.scoring.harness import Stack, fetch_all, wait_caught_up
from tests.stack.scoring.harness import running as scoring_running

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {INGEST_KEY}"}
BATCH = "application/cloudevents-batch+json"
ACCOUNT = "globex-ce"


def attributes(event_id: str, kind: str, at: datetime) -> dict[str, Any]:
    return {"id": event_id, "source": "/product", "type": kind, "time": at, "accountid": ACCOUNT,
            "datacontenttype": "application/json"}


def core_event(event_id: str, kind: str, at: datetime, data: dict[str, Any]) -> CloudEvent:
    return CloudEvent(attributes(event_id, kind, at), data)


async def test_cloudevents_sdk_requests_are_accepted_and_scored(topic_prefix: str, pg_database_url: str):
    if not KAFKA:
        pytest.skip("CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS not set (run `make services`)")
    settings = Settings(kafka_bootstrap_servers=KAFKA, topic_prefix=topic_prefix, database_url=pg_database_url,
                        api_keys=api_keys(), scoring_group_id=f"scoring-{uuid.uuid4().hex[:8]}")
    bus = KafkaBus(KAFKA, publish_timeout_s=10.0)
    stack = Stack("real", bus, settings)
    run = uuid.uuid4().hex[:8]
    at = datetime.now(UTC) - timedelta(hours=1)
    json_format = JSONFormat()

    structured = to_structured(core_event(f"{run}-account", "account", at,
                                          {"name": "Globex", "arr": 96000, "segment": "enterprise"}), json_format)
    binary = to_binary(core_event(f"{run}-ticket", "ticket", at + timedelta(minutes=1),
                                  {"ticket_id": "T-7", "status": "opened", "priority": "urgent"}), json_format)
    batch = [core_event(f"{run}-usage-{i}", "usage", at + timedelta(minutes=2 + i),
                        {"feature": "report.export", "user_id": f"u-{i % 2}"}) for i in range(5)]
    batch_body = b"[" + b",".join(json_format.write(event) for event in batch) + b"]"
    legacy = V1CloudEvent({"id": f"{run}-legacy-1", "source": "/survey", "type": "sentiment",
                           "time": (at + timedelta(minutes=8)).isoformat(), "accountid": ACCOUNT,
                           "datacontenttype": "application/json"}, {"source": "nps", "score": 9})
    legacy_headers, legacy_body = v1_conversion.to_structured(legacy)
    legacy_binary = V1CloudEvent({"id": f"{run}-legacy-2", "source": "/product", "type": "usage",
                                  "time": (at + timedelta(minutes=9)).isoformat(), "accountid": ACCOUNT,
                                  "datacontenttype": "application/json"}, {"feature": "login"})
    legacy_binary_headers, legacy_binary_body = v1_conversion.to_binary(legacy_binary)

    requests = [(structured.headers, structured.body, 1), (binary.headers, binary.body, 1),
                ({"Content-Type": BATCH}, batch_body, 5), (legacy_headers, legacy_body, 1),
                (legacy_binary_headers, legacy_binary_body, 1)]
    expected_ids = {f"{run}-account", f"{run}-ticket", *(f"{run}-usage-{i}" for i in range(5)),
                    f"{run}-legacy-1", f"{run}-legacy-2"}

    app = create_app(settings, bus=bus, registry=new_registry())
    async with scoring_running(stack) as rt, ingest_running(app) as client:
        for headers, body, count in requests:
            resp = await client.post("/v1/events", content=body, headers={**headers, **AUTH})
            assert (resp.status_code, resp.json()) == (202, {"accepted": count}), (headers, resp.text)
        await wait_caught_up(stack, rt, timeout_s=120)
        processed = {r["event_id"] for r in await fetch_all(pg_database_url, t.processed_events,
                                                            t.processed_events.c.event_id)}
        assert processed == expected_ids
        record = await rt.queries.account(ACCOUNT)
    assert record is not None
    assert (record.arr, record.segment) == (96000, "enterprise")
    state = rt.model.decode_state(record.state)
    assert state.display_name() == "Globex"
