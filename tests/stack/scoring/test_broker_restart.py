"""The scoring consumer on a broker that goes away and comes back, and on topics its first metadata does not
list yet: it resumes by itself, and every event is scored once.

These stop and start a broker: a private one (chaos/services.py: scripts/services.sh as a second instance on
free ports, deleted afterwards), never the shared broker of `make services` every other test uses. The
database is a fresh one on the test PostgreSQL.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos.services import PrivateServices, private_services
from services.scoring.adapters import tables as t
from services.scoring.bootstrap import ScoringRuntime
from shared.bus.kafka import KafkaBus
from shared.settings import Settings
from shared.topics import Topics
from tests.conftest import PG_URL, _create_pg_database, _drop_pg_database
from tests.conftest import test_api_keys as api_keys
from tests.stack.scoring.harness import Stack, count, produce, records_for, running
from tests.stack.scoring.streams import simulated

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not PG_URL, reason="CHURNSIGNAL_TEST_DATABASE_URL not set (run `make services`)"),
    pytest.mark.skipif(shutil.which("java") is None, reason="the private broker needs java"),
]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateServices]:
    """A Kafka broker of this module's own (no PostgreSQL), stopped and deleted at the end."""
    with private_services(Path(tmp_path_factory.mktemp("broker")) / "services", postgres=False) as services:
        yield services


@pytest.fixture
async def private_stack(broker: PrivateServices) -> AsyncIterator[Stack]:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    url = await _create_pg_database()
    settings = Settings(kafka_bootstrap_servers=broker.bootstrap_servers, topic_prefix=prefix, database_url=url,
                        api_keys=api_keys(), scoring_group_id=f"scoring-{uuid.uuid4().hex[:8]}")
    try:
        yield Stack("real", KafkaBus(broker.bootstrap_servers, publish_timeout_s=10.0), settings)
    finally:
        await _drop_pg_database(url)


def _applied(rt: ScoringRuntime) -> int:
    """Events applied by the consumer (counted once per committed batch: a redone batch counts once)."""
    total = 0.0
    for metric in rt.registry.collect():
        for sample in metric.samples:
            if sample.name == "churnsignal_scoring_events_total" and sample.labels.get("outcome") == "processed":
                total += sample.value
    return int(total)


async def _scored(stack: Stack, expected: int, timeout_s: float) -> int:
    """Wait until `expected` events are in the dedupe record (or the time is up); how many are."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = await count(stack.settings.database_url, t.processed_events)
        if got >= expected or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.5)


async def _produce(stack: Stack, events: list[dict[str, Any]]) -> None:
    """Publish, retrying while the broker is still settling after its start."""
    deadline = time.monotonic() + 120
    while True:
        try:
            await produce(stack.bus, records_for(stack.topics, events))
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)


async def test_scoring_resumes_after_the_broker_restarts_and_scores_every_event_once(
        broker: PrivateServices, private_stack: Stack) -> None:
    stack = private_stack
    events = simulated(accounts=12, days=30, seed=5)
    half = len(events) // 2
    await stack.bus.ensure_topics(Topics(stack.settings.topic_prefix).all, partitions=6)
    await _produce(stack, events[:half])
    async with running(stack) as rt:
        assert await _scored(stack, half, timeout_s=120) == half
        # Down longer than the group session (10 s): the broker forgets the member, the member loses its
        # coordinator (what `make chaos` saw).
        await asyncio.to_thread(broker.run, "kafka-stop")
        await asyncio.sleep(15)
        await asyncio.to_thread(broker.run, "kafka-start")
        await _produce(stack, events[half:])
        scored = await _scored(stack, len(events), timeout_s=240)
        assert scored == len(events), f"{len(events) - scored} of {len(events)} events not scored after the restart"
        assert rt.consumer.running
        assert _applied(rt) == len(events)     # each applied once


async def test_scoring_takes_its_partitions_when_its_topics_appear_after_it_joined(
        broker: PrivateServices, private_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its first metadata does not list the input topics (the broker creates them as they are first asked
    for, as a busy broker can be late to list new ones): the group gives it no partition, and it must take
    them once they exist, not at aiokafka's next periodic refresh (5 minutes)."""
    stack = private_stack

    async def topics_not_created(*_: Any, **__: Any) -> None:
        return None

    monkeypatch.setattr(stack.bus, "ensure_topics", topics_not_created)
    events = simulated(accounts=6, days=20, seed=9)
    async with running(stack) as rt:
        await _produce(stack, events)
        scored = await _scored(stack, len(events), timeout_s=90)
        assert scored == len(events), f"{len(events) - scored} of {len(events)} events not scored"
        assert rt.consumer.owned_partitions
        assert _applied(rt) == len(events)
