"""End to end with Segment's own Python library (`segment-analytics-python`, `segment.analytics`): a team's
existing Segment instrumentation pointed at ingest (`host=`, the write key an ingest API key) sends group,
identify and track calls, one by one (`sync_mode`) and batched and gzipped by the library's own consumer
thread; the events reach scoring on the real Kafka and PostgreSQL and show in the account's health and
history through scoring's read API."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from services.ingest.bootstrap import create_app as ingest_app
from services.scoring.adapters import tables as t
from services.scoring.bootstrap import create_app as scoring_app
from shared.bus.kafka import KafkaBus
from shared.metrics import new_registry
from shared.settings import Settings
from tests.conftest import INGEST_KEY, KAFKA, READ_KEY
from tests.conftest import test_api_keys as api_keys
from tests.stack.scoring.harness import Stack, fetch_all, wait_caught_up

pytestmark = pytest.mark.integration

ACCOUNT = "acme-segment"
USER = "user-1042"
DAYS = 35   # of history sent with past timestamps (a backfill), so that scoring has whole days to judge


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """The app on a loopback socket (uvicorn, this event loop, lifespan on); yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", ws="none", http="h11",
                            loop="asyncio")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(60):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
            await app.state.segment_users.wait_ready()
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def send_with_the_segment_library(host: str) -> tuple[list[str], str]:
    """What a product backend instrumented with Segment does; returns the messageIds it sent and the renewal
    date its group call gave."""
    from segment.analytics import Client

    errors: list[Any] = []
    sent: list[str] = []
    start = datetime.now(UTC) - timedelta(days=DAYS)
    renewal = (datetime.now(UTC) + timedelta(days=200)).date().isoformat()
    # One call per request, as `sync_mode` does: the group call first, so that ingest knows the user's account.
    one_by_one = Client(write_key=INGEST_KEY, host=host, sync_mode=True, max_retries=0)
    _, message = one_by_one.group(USER, ACCOUNT, {"name": "Acme Corp", "plan": "enterprise", "arr": 48000,
                                                  "csm_email": "jordan@vendor.example", "segment": "mid-market",
                                                  "renewal_date": renewal}, timestamp=start)
    sent.append(message["messageId"])
    # Batched and gzipped by the library's consumer thread (100 messages per request), then flushed.
    batched = Client(write_key=INGEST_KEY, host=host, gzip=True, on_error=lambda e, _: errors.append(e),
                     upload_interval=0.1, max_retries=0)
    try:
        _, message = batched.identify(USER, {"email": "dana@acme.example", "firstName": "Dana", "lastName": "Smith",
                                             "role": "Champion", "title": "Head of Analytics"},
                                      timestamp=start + timedelta(minutes=1))
        sent.append(message["messageId"])
        for day in range(DAYS):
            for n, feature in enumerate(("Report Exported", "Dashboard Viewed", "Report Exported")):
                at = start + timedelta(days=day, hours=2 + n)
                _, message = batched.track(USER, feature, {"format": "csv"}, timestamp=at)
                sent.append(message["messageId"])
        batched.flush()
    finally:
        batched.join()
    assert errors == []
    return sent, renewal


async def test_segment_library_to_scoring(topic_prefix: str, pg_database_url: str):
    if not KAFKA:
        pytest.skip("CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS not set (run `make services`)")
    settings = Settings(kafka_bootstrap_servers=KAFKA, topic_prefix=topic_prefix, database_url=pg_database_url,
                        api_keys=api_keys(), scoring_group_id=f"scoring-{uuid.uuid4().hex[:8]}")
    bus = KafkaBus(KAFKA, publish_timeout_s=10.0)
    ingest = ingest_app(settings, bus=bus, registry=new_registry())
    scoring = scoring_app(settings, bus=bus, registry=new_registry())
    async with serving(ingest) as host, scoring.router.lifespan_context(scoring):
        sent, renewal = await asyncio.to_thread(send_with_the_segment_library, host)
        await wait_caught_up(Stack("real", bus, settings), None, timeout_s=120)
        processed = {r["event_id"] for r in await fetch_all(pg_database_url, t.processed_events,
                                                            t.processed_events.c.event_id)}
        assert processed == {f"segment:{message_id}" for message_id in sent}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=scoring), base_url="http://scoring.test",
                                     headers={"Authorization": f"Bearer {READ_KEY}"}) as client:
            health = (await client.get(f"/v1/accounts/{ACCOUNT}/health")).json()
            history = (await client.get(f"/v1/accounts/{ACCOUNT}/history")).json()
    assert health["account_id"] == ACCOUNT
    assert health["name"] == "Acme Corp"
    assert health["account"]["arr"] == 48000
    assert health["account"]["segment"] == "mid-market"
    assert health["account"]["csm"]["email"] == "jordan@vendor.example"
    assert health["score"] is not None and health["tier"] in ("green", "yellow", "red")
    assert health["account"]["renewal_date"] == renewal
    # the champion of the identify call, judged on the usage of the track calls (same user id)
    key_contacts = next(c for c in health["components"] if c["name"] == "key_contacts")
    assert key_contacts["score"] == 100 and key_contacts["reason"].startswith("1 key contact active")
    assert history["items"], "no health history for the account"
    causes = {item["cause"] for item in history["items"]}
    assert causes <= {"clock"} | {f"segment:{message_id}" for message_id in sent}
