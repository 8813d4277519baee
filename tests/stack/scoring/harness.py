"""Helpers to run the scoring service against a bus and a database and look at what it did."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from services.scoring.adapters import tables as t
from services.scoring.bootstrap import ScoringRuntime, run_consumer, scoring_runtime
from services.scoring.entrypoints.ports import ScoringModel
from shared.bus.memory import MemoryBus
from shared.bus.port import Bus, OutMessage, TopicPartition
from shared.codec import encode_input
from shared.db import create_engine
from shared.errors import BusUnavailable
from shared.metrics import new_registry
from shared.risks import RiskEvent
from shared.settings import Settings
from shared.topics import Topics
from tests.conftest import KAFKA


@dataclass
class Stack:
    """One way to run scoring: the embedded default (MemoryBus + SQLite) or the real Kafka + PostgreSQL."""

    kind: str
    bus: Bus
    settings: Settings

    @property
    def topics(self) -> Topics:
        return Topics(self.settings.topic_prefix)

    def with_database(self, url: str) -> Stack:
        return Stack(self.kind, self.bus, self.settings.model_copy(update={"database_url": url}))

    def with_group(self, group_id: str) -> Stack:
        return Stack(self.kind, self.bus, self.settings.model_copy(update={"scoring_group_id": group_id}))


def stage_bounds(events: Sequence[dict[str, Any]], stages: int) -> list[int]:
    """Where an event-time ordered stream is cut into `stages` contiguous slices: [0, b1, ..., len(events)],
    each cut near an even share and moved forward to where `occurred_at` strictly increases. The merge
    orders a partition's records by (occurred_at, topic, offset), so a tie across a cut could be merged in
    another order when the later slice arrives after the earlier one was scored; without ties, a slice's
    records all come after the previous slice's in a clean run's merge order too."""
    at = [datetime.fromisoformat(e["occurred_at"]) for e in events]
    bounds = [0]
    for i in range(1, stages):
        cut = len(events) * i // stages
        while at[cut - 1] == at[cut]:
            cut += 1
        assert bounds[-1] < cut < len(events)
        bounds.append(cut)
    return [*bounds, len(events)]


def records_for(topics: Topics, events: Iterable[dict[str, Any]],
                received_at: datetime | None = None) -> list[OutMessage]:
    received = received_at or datetime.now(UTC)
    return [OutMessage(topics.for_event(e["type"]), e["account_id"].encode(), encode_input(e, received))
            for e in events]


async def produce(bus: Bus, messages: Sequence[OutMessage], chunk: int = 5000) -> None:
    publisher = bus.publisher()
    await publisher.start()
    try:
        for i in range(0, len(messages), chunk):
            await publisher.publish(messages[i:i + chunk])
    finally:
        await publisher.stop()


async def end_offsets(bus: Bus, topics: Sequence[str], partitions: int = 6) -> dict[TopicPartition, int]:
    tps = [TopicPartition(topic, p) for topic in topics for p in range(partitions)]
    if isinstance(bus, MemoryBus):
        await bus.ensure_topics(topics, partitions)
        return {tp: len(bus._topic(tp.topic).partitions[tp.partition]) for tp in tps}
    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as KafkaTP

    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([KafkaTP(tp.topic, tp.partition) for tp in tps])
    finally:
        await consumer.stop()
    return {TopicPartition(tp.topic, tp.partition): off for tp, off in ends.items()}


async def read_topic(bus: Bus, topic: str, partitions: int = 6) -> list[bytes]:
    """Every record value of a topic, partition by partition, in offset order."""
    if isinstance(bus, MemoryBus):
        return [r.value for r in bus.records(topic)]
    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as KafkaTP

    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [KafkaTP(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        out: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
        deadline = time.monotonic() + 60
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            batch = await consumer.getmany(timeout_ms=500)
            for tp, msgs in batch.items():
                out[tp.partition].extend(m.value for m in msgs)
    finally:
        await consumer.stop()
    return [v for p in range(partitions) for v in out[p]]


async def risk_events(stack: Stack) -> list[RiskEvent]:
    return [RiskEvent.from_json(v) for v in await read_topic(stack.bus, stack.topics.risks)]


@contextlib.asynccontextmanager
async def running(stack: Stack, model: ScoringModel | None = None) -> AsyncIterator[ScoringRuntime]:
    """The scoring runtime with its consumer running (stopped cleanly on exit)."""
    async with scoring_runtime(stack.settings, bus=stack.bus, registry=new_registry(), model=model) as rt:
        task = asyncio.create_task(run_consumer(rt.consumer, restart=False))
        try:
            async with asyncio.timeout(60):
                await asyncio.wait({task, asyncio.ensure_future(rt.consumer.wait_started())},
                                   return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()
            yield rt
        finally:
            rt.consumer.stop()
            async with asyncio.timeout(60):
                await task


async def positions(database_url: str) -> dict[TopicPartition, int]:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(sa.select(t.positions.c.topic, t.positions.c.partition,
                                                t.positions.c.next_offset))
            return {TopicPartition(r[0], r[1]): int(r[2]) for r in rows}
    finally:
        await engine.dispose()


async def wait_caught_up(stack: Stack, rt: ScoringRuntime | None, timeout_s: float = 90) -> None:
    """Until the committed positions reach the end of every input partition and the outbox is published."""
    ends = await end_offsets(stack.bus, stack.topics.inputs)
    deadline = time.monotonic() + timeout_s
    while True:
        done = await positions(stack.settings.database_url)
        behind = {tp: end for tp, end in ends.items() if end > done.get(tp, 0)}
        if not behind and not (rt is not None and rt.consumer.sweeping):
            outbox = await count(stack.settings.database_url, t.outbox)
            if len(await read_topic(stack.bus, stack.topics.risks)) >= outbox:
                return
        assert rt is None or rt.consumer.running, "the scoring consumer stopped"
        assert time.monotonic() < deadline, f"scoring did not catch up: behind on {behind}"
        await asyncio.sleep(0.1)


async def count(database_url: str, table: sa.Table, *where: Any) -> int:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            query = sa.select(sa.func.count()).select_from(table)
            if where:
                query = query.where(*where)
            return int((await conn.execute(query)).scalar_one())
    finally:
        await engine.dispose()


async def fetch_all(database_url: str, table: sa.Table, order_by: Any) -> list[dict[str, Any]]:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.select(table).order_by(order_by))).mappings().all()
            return [dict(r) for r in rows]
    finally:
        await engine.dispose()


def new_id() -> str:
    return uuid.uuid4().hex[:12]


async def database_contents(database_url: str) -> dict[str, Any]:
    """Everything scoring committed, in a form two runs can be compared by (no wall-clock fields, no
    surrogate ids; per-account orders kept)."""
    from shared.codec import loads

    accounts = {r["account_id"]: {k: v for k, v in r.items() if k != "updated_at"}
                for r in await fetch_all(database_url, t.accounts, t.accounts.c.account_id)}
    history: dict[str, list[Any]] = {}
    for r in await fetch_all(database_url, t.history, t.history.c.id):
        history.setdefault(r["account_id"], []).append(loads(r["snapshot"]))
    risks = {r["risk_id"]: {k: v for k, v in r.items() if k != "id"}
             for r in await fetch_all(database_url, t.risks, t.risks.c.id)}
    outbox: dict[str, list[Any]] = {}
    for r in await fetch_all(database_url, t.outbox, t.outbox.c.id):
        outbox.setdefault(r["key"], []).append(comparable_risk_event(loads(r["payload"])))
    processed = {r["event_id"] for r in await fetch_all(database_url, t.processed_events,
                                                          t.processed_events.c.event_id)}
    return {"accounts": accounts, "history": history, "risks": risks, "outbox": outbox,
            "processed": processed}


def comparable_risk_event(payload: dict[str, Any]) -> dict[str, Any]:
    """A risk event without its wall-clock fields (detected_at, trigger.received_at)."""
    out = {k: v for k, v in payload.items() if k != "detected_at"}
    if out.get("trigger"):
        out["trigger"] = {k: v for k, v in out["trigger"].items() if k != "received_at"}
    return out


async def delete_topics(names: Sequence[str]) -> None:
    """Remove a test's topics from the shared broker (every test makes its own; they add up)."""
    import logging

    from shared.bus.kafka import KafkaBus

    try:
        await KafkaBus(KAFKA).delete_topics(names)
    except BusUnavailable as exc:  # cleanup only: a broker hiccup must not fail the test
        logging.getLogger(__name__).warning("could not delete test topics (%s)", exc.message)
