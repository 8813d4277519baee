"""Scoring gives the same answer however the events arrive (on the embedded default and on the real Kafka
and PostgreSQL).

One history (ten weeks, 37 accounts, about six per partition, usage about 90 times the volume of tickets:
the story accounts' churn stories and healthy controls of several shapes, plus steady accounts) is scored
four ways, each on its own topics and database:
  (a) backfill: every record produced first, then scored;
  (b) live: posted through ingest in time order, 500 events per request, as fast as ingest takes them,
      while scoring runs;
  (c) lagging usage: posted like (b), while scoring's fetches of the usage topic are held back for many
      times the idleness timeout (a usage backlog, as after an outage, a redeploy or a rebalance, while
      tickets and account changes are small and current), then let go;
  (d) catch-up: posted like (b); scoring is stopped halfway, the rest is posted while it is down, and it
      is started again on the backlog.
All four end with identical scores, health history, risk rows and risk events, and no risk at all on the
healthy controls. On Kafka, the consumer group's committed offsets (read through the admin client) reach
the log end within 10 s of scoring going idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import httpx
import pytest

from services.ingest.bootstrap import create_app
from shared.bus.port import Bus, RebalanceListener, Record, Subscriber
from shared.codec import loads
from shared.metrics import new_registry
from shared.topics import Topics
from tests.conftest import INGEST_KEY, KAFKA
from tests.domain.scoring.stories import Story, all_stories, steady_story
from tests.stack.scoring.events import accounts_on_partition
from tests.stack.scoring.harness import (
    Stack,
    comparable_risk_event,
    database_contents,
    delete_topics,
    end_offsets,
    produce,
    read_topic,
    records_for,
    running,
    wait_caught_up,
)
from tests.stack.scoring.test_stories_through_the_service import _arrival_order

pytestmark = pytest.mark.slow

REQUEST = 500             # events per ingest request
IDLE_TIMEOUT_S = 3.0      # the idleness timeout of these runs
HOLD_S = 45.0             # how long (c) holds the usage topic back: 15 idleness timeouts
HEADERS = {"Authorization": f"Bearer {INGEST_KEY}", "Content-Type": "application/json"}


def _history() -> tuple[list[Story], list[dict[str, Any]]]:
    controls = [steady_story(account_id, seed=40 + i)
                for i, account_id in enumerate(a for p in range(6) for a in accounts_on_partition(p, 4, "ctl"))]
    stories = all_stories() + controls
    return stories, _arrival_order(stories)


class _HoldingSubscriber:
    """A subscriber whose fetches of one topic stay paused until `release` is set (the consumer's own
    pauses and resumes pass through; this one is applied again before every fetch while holding)."""

    def __init__(self, inner: Subscriber, topic: str, release: asyncio.Event) -> None:
        self._inner = inner
        self._topic = topic
        self._release = release
        self._held = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def getmany(self, timeout_ms: int = 1000, max_records: int | None = None) -> list[Record]:
        held = [tp for tp in self._inner.assignment() if tp.topic == self._topic]
        if self._release.is_set():
            if self._held:
                self._held = False
                self._inner.resume(held)
        else:
            self._inner.pause(held)
        return await self._inner.getmany(timeout_ms=timeout_ms, max_records=max_records)


class _HoldingBus:
    def __init__(self, inner: Bus, topic: str, release: asyncio.Event) -> None:
        self._inner = inner
        self._topic = topic
        self._release = release

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def subscriber(self, topics: Sequence[str], group_id: str,
                   listener: RebalanceListener | None = None) -> Subscriber:
        inner = self._inner.subscriber(topics, group_id, listener=listener)
        return _HoldingSubscriber(inner, self._topic, self._release)  # type: ignore[return-value]


@contextlib.asynccontextmanager
async def _ingest(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(stack.settings, bus=stack.bus, registry=new_registry())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest.test") as client:
            yield client


async def _post(client: httpx.AsyncClient, events: Iterable[dict[str, Any]]) -> None:
    """Post in order, one request of REQUEST events after the other, each as soon as the last was accepted."""
    events = list(events)
    for i in range(0, len(events), REQUEST):
        response = await client.post("/v1/events", json=events[i:i + REQUEST], headers=HEADERS)
        assert response.status_code == 202, response.text


async def _committed_offsets_reach_the_end(stack: Stack) -> float:
    """Seconds until the group's committed offsets, read through the Kafka admin client, equal the ends."""
    from aiokafka import TopicPartition as KafkaTP
    from aiokafka.admin import AIOKafkaAdminClient

    ends = {KafkaTP(tp.topic, tp.partition): end
            for tp, end in (await end_offsets(stack.bus, stack.topics.inputs)).items()}
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    started = time.monotonic()
    try:
        while True:
            offsets = await admin.list_consumer_group_offsets(stack.settings.scoring_group_id)
            committed = {tp: meta.offset for tp, meta in offsets.items() if tp in ends}
            behind = {f"{tp.topic}[{tp.partition}]": end - committed.get(tp, 0)
                      for tp, end in ends.items() if end and committed.get(tp, 0) < end}
            waited = time.monotonic() - started
            if not behind:
                return waited
            assert waited < 10, f"committed offsets still behind the log end after 10 s idle: {behind}"
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def _outcome(stack: Stack) -> dict[str, Any]:
    contents = await database_contents(stack.settings.database_url)
    on_topic: dict[str, list[Any]] = {}
    for value in await read_topic(stack.bus, stack.topics.risks):
        event = comparable_risk_event(loads(value))
        on_topic.setdefault(event["account_id"], []).append(event)
    contents["risk_events"] = on_topic
    return contents


async def _score(stack: Stack, way: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    if way == "backfill":
        await produce(stack.bus, records_for(stack.topics, events))
        async with running(stack) as rt:
            await wait_caught_up(stack, rt, timeout_s=300)
    elif way == "live":
        async with running(stack) as rt, _ingest(stack) as client:
            await _post(client, events)
            await wait_caught_up(stack, rt, timeout_s=300)
            if stack.kind == "real":
                await _committed_offsets_reach_the_end(stack)
    elif way == "lagging_usage":
        release = asyncio.Event()
        held = Stack(stack.kind, _HoldingBus(stack.bus, stack.topics.usage, release), stack.settings)  # type: ignore[arg-type]
        async with running(held) as rt, _ingest(stack) as client:
            started = time.monotonic()
            await _post(client, events)
            # Everything is in the log; scoring has all of it but usage: it must not race ahead meanwhile.
            await asyncio.sleep(max(0.0, HOLD_S - (time.monotonic() - started)))
            assert rt.consumer.running
            release.set()
            await wait_caught_up(stack, rt, timeout_s=300)
    elif way == "catch_up":
        half = len(events) // 2
        async with _ingest(stack) as client:
            async with running(stack) as rt:
                await _post(client, events[:half])
            await _post(client, events[half:])      # scoring is down: a backlog builds up
            async with running(stack) as rt:
                await wait_caught_up(stack, rt, timeout_s=300)
                if stack.kind == "real":
                    await _committed_offsets_reach_the_end(stack)
    else:
        raise AssertionError(way)
    return await _outcome(stack)


@contextlib.asynccontextmanager
async def _way(stack: Stack, fresh_database: Any, way: str) -> AsyncIterator[Stack]:
    prefix = f"arr{uuid.uuid4().hex[:6]}.{way}."
    url = await fresh_database()
    settings = stack.settings.model_copy(update={
        "topic_prefix": prefix, "database_url": url, "scoring_idle_timeout_s": IDLE_TIMEOUT_S,
        "scoring_group_id": f"arrival-{way}-{uuid.uuid4().hex[:6]}"})
    await stack.bus.ensure_topics(Topics(prefix).all, 6)
    try:
        yield Stack(stack.kind, stack.bus, settings)
    finally:
        if stack.kind == "real":
            await delete_topics(Topics(prefix).all)


async def test_backfill_live_lagging_usage_and_catch_up_score_the_same(stack: Stack, fresh_database):
    stories, events = _history()
    healthy = {s.account_id for s in stories if not s.expect}
    assert sum(e["type"] == "usage" for e in events) >= 50 * sum(e["type"] == "ticket" for e in events)

    outcomes: dict[str, dict[str, Any]] = {}
    for way in ("backfill", "live", "lagging_usage", "catch_up"):
        async with _way(stack, fresh_database, way) as run:
            outcomes[way] = await _score(run, way, events)

    backfill = outcomes["backfill"]
    assert len(backfill["processed"]) == len(events)
    raised = {e["account_id"] for per in backfill["risk_events"].values() for e in per}
    assert raised, "the churn stories raise risks"
    assert not raised & healthy, f"risks on healthy controls: {sorted(raised & healthy)}"
    for way, got in outcomes.items():
        for part in ("accounts", "history", "risks", "outbox", "risk_events", "processed"):
            assert got[part] == backfill[part], f"{way}: {part} differs from the backfill"
