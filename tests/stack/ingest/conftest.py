"""Ingest fixtures: the app on the parametrized bus (in-process and real Kafka), an HTTP client on it,
and a way to read back what was published on either bus."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as KafkaTP
from aiokafka.admin import AIOKafkaAdminClient
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.ingest.bootstrap import create_app
from shared.bus.memory import MemoryBus
from shared.bus.port import Bus, Record
from shared.metrics import new_registry
from shared.settings import Settings
from shared.topics import Topics
from tests.conftest import INGEST_KEY, KAFKA

log = logging.getLogger(__name__)

AUTH = {"Authorization": f"Bearer {INGEST_KEY}"}
JSON = {**AUTH, "Content-Type": "application/json"}
NDJSON = {**AUTH, "Content-Type": "application/x-ndjson"}


def recent(minutes: int = 1) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat()


def usage(i: int = 0, account: str = "acme", **over: Any) -> dict[str, Any]:
    return {"id": f"u-{i}", "type": "usage", "account_id": account, "occurred_at": recent(),
            "data": {"feature": "report.export", "user_id": "u1"}, **over}


def ticket(i: int = 0, account: str = "acme") -> dict[str, Any]:
    return {"id": f"t-{i}", "type": "ticket", "account_id": account, "occurred_at": recent(),
            "data": {"ticket_id": f"T{i}", "status": "opened", "priority": "urgent"}}


def sentiment(i: int = 0, account: str = "acme") -> dict[str, Any]:
    return {"id": f"s-{i}", "type": "sentiment", "account_id": account, "occurred_at": recent(),
            "data": {"source": "nps", "score": 3, "text": "too slow"}}


def account_event(i: int = 0, account: str = "acme") -> dict[str, Any]:
    return {"id": f"a-{i}", "type": "account", "account_id": account, "occurred_at": recent(),
            "data": {"name": "Acme", "arr": 120000, "csm": {"email": "csm@example.com"}}}


def contact(i: int = 0, account: str = "acme") -> dict[str, Any]:
    return {"id": f"c-{i}", "type": "contact", "account_id": account, "occurred_at": recent(),
            "data": {"contact_id": f"p{i}", "role": "champion", "status": "left"}}


@dataclass
class Ingest:
    """The running app, its client, bus, topics and metrics registry."""

    app: FastAPI
    client: httpx.AsyncClient
    bus: Bus
    topics: Topics
    registry: CollectorRegistry

    async def post(self, body: bytes | str, headers: dict[str, str] | None = None) -> httpx.Response:
        headers = JSON if headers is None else headers
        return await self.client.post("/v1/events", content=body, headers=headers)

    async def records(self, *topics: str) -> list[Record]:
        return await read_topics(self.bus, topics)

    async def all_records(self) -> list[Record]:
        return await read_topics(self.bus, self.topics.all)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.registry.get_sample_value(name, labels or {}) or 0.0


async def read_topics(bus: Bus, topics: Sequence[str], partitions: int = 6) -> list[Record]:
    """Every record of the topics, read back from the bus itself (a plain consumer on Kafka)."""
    if isinstance(bus, MemoryBus):
        return [r for topic in topics for r in bus.records(topic)]
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [KafkaTP(topic, p) for topic in topics for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Record] = []
        for _ in range(100):  # bounded: the log is complete once publish has returned
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
            batches = await consumer.getmany(timeout_ms=200)
            for tp, msgs in batches.items():
                out += [Record(tp.topic, tp.partition, m.offset, m.key, m.value, m.timestamp) for m in msgs]
        else:
            raise AssertionError(f"could not read {topics} to their end")
        return out
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan entered, and an HTTP client on it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest.test") as client:
            yield client


async def drop_topics(prefix: str) -> None:
    """Delete the topics of a prefix (best effort: a topic that does not exist is fine)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        response = await admin.delete_topics(list(Topics(prefix).all))
    finally:
        await admin.close()
    for topic, code in response.topic_error_codes:
        if code not in (0, 3):  # 3: unknown topic
            log.warning("could not delete test topic %s (Kafka error code %d)", topic, code)


@pytest.fixture(autouse=True)
def _drop_topics_of_broker_tests(request: pytest.FixtureRequest, topic_prefix: str) -> Iterator[None]:
    """Tests that reach the real broker without the `bus` fixture (which cleans up after itself) get
    their topics dropped too, so that the shared broker does not pile up thousands of partitions."""
    yield
    if KAFKA and request.node.get_closest_marker("integration") and "bus" not in request.fixturenames:
        asyncio.run(drop_topics(topic_prefix))


@pytest.fixture
async def ingest(bus: Bus, settings: Settings) -> AsyncIterator[Ingest]:
    """Ingest on the parametrized bus: one test body, run on the in-process bus and on Kafka."""
    registry = new_registry()
    app = create_app(settings, bus=bus, registry=registry)
    async with running(app) as client:
        yield Ingest(app, client, bus, Topics(settings.topic_prefix), registry)
