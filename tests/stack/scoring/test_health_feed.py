"""The health topic: every health change (a history row) and every risk transition (a risk event), keyed by
account, in the order they happened, on a compacted topic; committed messages are never lost when the bus
fails or the worker is killed, only repeated under the same id. A Standard Webhooks receiver that verifies
signatures and skips ids it has seen then gets every change once, in order."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from services.scoring.adapters import tables as t
from services.scoring.entrypoints.health_feed import health_id
from shared.bus.memory import MemoryBus
from shared.bus.port import Bus, OutMessage, Publisher
from shared.errors import BusUnavailable
from shared.metrics import new_registry
from shared.settings import Settings
from shared.topics import Topics
from tests.conftest import KAFKA, PG_URL, _create_pg_database, _drop_pg_database
from tests.stack.scoring.harness import (
    Stack,
    count,
    delete_topics,
    end_offsets,
    fetch_all,
    positions,
    produce,
    records_for,
    running,
    stage_bounds,
    wait_caught_up,
)
from tests.stack.scoring.streams import simulated
from tests.support.webhook_receiver import WebhookReceiver

ROOT = Path(__file__).resolve().parents[3]
PARTITIONS = 6


# -- reading the topic and the database ---------------------------------------------------------------
async def health_records(bus: Bus, topic: str) -> list[tuple[int, bytes | None, bytes]]:
    """Every record of the health topic as (partition, key, value), partition by partition, in offset order."""
    if isinstance(bus, MemoryBus):
        return [(r.partition, r.key, r.value) for r in bus.records(topic)]
    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as KafkaTP

    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [KafkaTP(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        out: dict[int, list[tuple[int, bytes | None, bytes]]] = {p: [] for p in range(PARTITIONS)}
        deadline = time.monotonic() + 60
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for tp, msgs in (await consumer.getmany(timeout_ms=500)).items():
                out[tp.partition].extend((tp.partition, m.key, m.value) for m in msgs)
    finally:
        await consumer.stop()
    return [r for p in range(PARTITIONS) for r in out[p]]


def once_each(records: Sequence[tuple[int, bytes | None, bytes]]) -> dict[str, list[dict[str, Any]]]:
    """Per account, the messages a reader skipping ids it has seen keeps, in topic order. Checks on the way
    that the key is the account, that an account stays on one partition, and that a repeated id repeats
    the same bytes."""
    seen: dict[str, bytes] = {}
    partition_of: dict[str, int] = {}
    out: dict[str, list[dict[str, Any]]] = {}
    for partition, key, value in records:
        message = orjson.loads(value)
        account = message["account_id"]
        assert key == account.encode()
        assert partition_of.setdefault(account, partition) == partition
        if message["id"] in seen:
            assert seen[message["id"]] == value, f"{message['id']} repeated with other content"
            continue
        seen[message["id"]] = value
        out.setdefault(account, []).append(message)
    return out


async def expected_from_the_database(url: str) -> dict[str, list[tuple[str, str]]]:
    """Per account, the (type, id) of every health change (history) and risk transition (outbox) committed,
    each risk right after the health change of the same evaluation."""
    out: dict[str, list[tuple[str, str]]] = {}
    history = await fetch_all(url, t.history, t.history.c.id)
    outbox = await fetch_all(url, t.outbox, t.outbox.c.id)
    risks_of: dict[tuple[str, datetime], list[dict[str, Any]]] = {}
    for row in outbox:
        event = orjson.loads(row["payload"])
        risks_of.setdefault((row["key"], datetime.fromisoformat(event["occurred_at"])), []).append(event)
    for row in history:
        snap = SimpleNamespace(as_of=row["as_of"], cause=row["cause"])
        out.setdefault(row["account_id"], []).append(("health.changed", health_id(row["account_id"], snap)))
        at = datetime.fromisoformat(orjson.loads(row["snapshot"])["as_of"])
        for event in risks_of.pop((row["account_id"], at), []):
            out[row["account_id"]].append((f"risk.{event['transition']}", event["event_id"]))
    assert not risks_of, "every risk transition comes with a health change"
    return out


def kinds_and_ids(per_account: dict[str, list[dict[str, Any]]]) -> dict[str, list[tuple[str, str]]]:
    return {a: [(m["type"], m["id"]) for m in ms] for a, ms in per_account.items()}


async def wait_published(stack: Stack, url: str, timeout_s: float = 120) -> dict[str, list[dict[str, Any]]]:
    """Until the health topic holds every change committed and the published rows are deleted."""
    deadline = time.monotonic() + timeout_s
    while True:
        per_account = once_each(await health_records(stack.bus, stack.topics.health))
        wanted = await count(url, t.history) + await count(url, t.outbox)
        if sum(map(len, per_account.values())) >= wanted and await count(url, t.health_feed) == 0:
            return per_account
        assert time.monotonic() < deadline, "the health topic did not get every change"
        await asyncio.sleep(0.1)


# -- the topic -------------------------------------------------------------------------------------------
async def test_every_health_change_and_risk_transition_keyed_by_account_in_order(stack: Stack):
    events = simulated(accounts=16, days=45, seed=5)
    await produce(stack.bus, records_for(stack.topics, events))
    url = stack.settings.database_url
    async with running(stack) as rt:
        await wait_caught_up(stack, rt, timeout_s=180)
        got = await wait_published(stack, url)
    expected = await expected_from_the_database(url)
    assert sum(1 for ms in expected.values() for kind, _ in ms if kind != "health.changed") >= 3, \
        "the simulated stories raise risks"
    assert kinds_and_ids(got) == expected

    outbox = {r["event_id"]: orjson.loads(r["payload"]) for r in await fetch_all(url, t.outbox, t.outbox.c.id)}
    history = {}
    for row in await fetch_all(url, t.history, t.history.c.id):
        history[health_id(row["account_id"], SimpleNamespace(as_of=row["as_of"], cause=row["cause"]))] = row
    for account, messages in got.items():
        before = {"score": None, "tier": "unknown"}
        for m in messages:
            if m["type"] == "health.changed":
                row = history[m["id"]]
                assert m["health"] == {"score": row["score"], "tier": row["tier"]}
                assert m["timestamp"] == orjson.loads(row["snapshot"])["as_of"]
                # What it was before: the account's previous health change.
                assert m["data"]["previous"] == before
                before = m["health"]
                snapshot = orjson.loads(row["snapshot"])
                assert m["data"]["reasons"] == snapshot["reasons"]
                assert m["data"]["changes"] == snapshot["deltas"]
                cause = snapshot["cause"]
                assert m["data"]["trigger"] == (None if cause == "clock" else {"event_id": cause})
                assert m["data"]["config_version"] == snapshot["config_version"]
            else:
                # A risk message carries the risk event as published on the risks topic.
                assert m["data"] == outbox[m["id"]]
                assert m["type"] == f"risk.{m['data']['transition']}"
                assert m["health"] == {"score": m["data"]["health"]["score"], "tier": m["data"]["health"]["tier"]}
                assert m["health"] == before   # the health change it came with
            assert m["account_id"] == account


async def test_the_health_topic_is_compacted_by_account(stack: Stack):
    # The stack's topics were created without configs (as ingest creates them): scoring sets them.
    async with running(stack):
        pass
    if isinstance(stack.bus, MemoryBus):
        configs = stack.bus.topic_configs[stack.topics.health]
    else:
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

        admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
        await admin.start()
        try:
            (answer,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC,
                                                                     stack.topics.health)])
            configs = {e[0]: e[1] for e in answer.resources[0][4]}
            (risks,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC,
                                                                    stack.topics.risks)])
            assert {e[0]: e[1] for e in risks.resources[0][4]}["cleanup.policy"] == "delete"
        finally:
            await admin.close()
    assert configs["cleanup.policy"] == "compact"
    assert configs["min.compaction.lag.ms"] == str(7 * 24 * 3600 * 1000)


# -- the bus failing after a commit ------------------------------------------------------------------------
class _FailingPublisher:
    """Fails the publishes that carry health messages, as the bus would: `lost` ones never reach the topic,
    `unacknowledged` ones reach it but the answer is lost (the consumer takes them for failed)."""

    def __init__(self, inner: Publisher, topic: str, plan: list[str]) -> None:
        self._inner = inner
        self._topic = topic
        self._plan = plan
        self.failed: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        if self._plan and any(m.topic == self._topic for m in messages):
            how = self._plan.pop(0)
            self.failed.append(how)
            if how == "unacknowledged":
                await self._inner.publish(messages)
            raise BusUnavailable(f"injected: {how}")
        await self._inner.publish(messages)


class _FailingBus:
    def __init__(self, inner: Bus, topic: str, plan: list[str]) -> None:
        self._inner = inner
        self.publishers: list[_FailingPublisher] = []
        self._topic = topic
        self._plan = plan

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def publisher(self) -> Publisher:
        publisher = _FailingPublisher(self._inner.publisher(), self._topic, self._plan)
        self.publishers.append(publisher)
        return publisher  # type: ignore[return-value]


async def test_messages_committed_while_the_bus_fails_are_sent_again_never_lost(stack: Stack):
    events = simulated(accounts=12, days=45, seed=9)
    bounds = stage_bounds(events, 3)
    url = stack.settings.database_url
    plan = ["lost", "unacknowledged", "lost", "unacknowledged"]
    failing = Stack(stack.kind, _FailingBus(stack.bus, stack.topics.health, plan), stack.settings)  # type: ignore[arg-type]
    for a, b in pairwise(bounds):
        await produce(stack.bus, records_for(stack.topics, events[a:b]))
        async with running(failing) as rt:
            await wait_caught_up(stack, rt, timeout_s=180)
            got = await wait_published(stack, url)
    assert plan == [], "every failure was injected"
    assert kinds_and_ids(got) == await expected_from_the_database(url)
    ids = [orjson.loads(v)["id"] for _, _, v in await health_records(stack.bus, stack.topics.health)]
    assert len(ids) > len(set(ids)), "the unacknowledged publishes were sent again"


# -- kill -9 ---------------------------------------------------------------------------------------------
async def _progress(url: str) -> int:
    return sum((await positions(url)).values())


@asynccontextmanager
async def _alerts_with_feed(settings: Settings, bus: Bus):  # type: ignore[no-untyped-def]
    from services.alerts.bootstrap import create_app

    app = create_app(settings, bus=bus, registry=new_registry())
    async with app.router.lifespan_context(app):
        yield app


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(not KAFKA or not PG_URL, reason="needs the real Kafka broker and PostgreSQL")
async def test_kill_9_repeats_messages_never_loses_them_and_a_receiver_gets_each_once_in_order(tmp_path: Path):
    """The worker is killed at progress-driven points (never wall-clock ones) while the input arrives in
    stages; the health topic then holds, per account, the clean run's messages (some repeated, same ids and
    bytes), and a receiver verifying Standard Webhooks signatures that skips ids it has seen gets exactly the
    clean run's changes, in order."""
    import random

    from shared.bus.kafka import KafkaBus

    kills = 3
    rng = random.Random(20260302)
    prefix = f"feedcrash{uuid.uuid4().hex[:8]}."
    topics = Topics(prefix)
    events = simulated(accounts=30, days=45, seed=13)
    messages = records_for(topics, events)
    bounds = stage_bounds(events, kills + 1)
    kafka = KafkaBus(KAFKA, publish_timeout_s=30.0)
    await kafka.ensure_topics(topics.all, PARTITIONS)
    clean_url, crash_url = await _create_pg_database(), await _create_pg_database()
    receiver = WebhookReceiver(os.urandom(32)).start()
    try:
        memory = MemoryBus(default_partitions=PARTITIONS)
        await produce(memory, messages)
        reference = Stack("embedded", memory, Settings(topic_prefix=prefix, database_url=clean_url,
                                                       scoring_group_id="clean"))
        async with running(reference) as rt:
            await wait_caught_up(reference, rt, timeout_s=240)
            expected = kinds_and_ids(await wait_published(reference, clean_url, timeout_s=240))
        assert sum(1 for ms in expected.values() for kind, _ in ms if kind != "health.changed") >= 5

        env = {**os.environ, "CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS": KAFKA, "CHURNSIGNAL_DATABASE_URL": crash_url,
               "CHURNSIGNAL_TOPIC_PREFIX": prefix, "CHURNSIGNAL_SCORING_GROUP_ID": f"crash-{uuid.uuid4().hex[:6]}",
               "CHURNSIGNAL_LOG_LEVEL": "warning"}
        log_path = tmp_path / "worker.log"

        async def start() -> asyncio.subprocess.Process:
            with log_path.open("ab") as log:
                return await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "services.scoring.entrypoints.worker", cwd=ROOT, env=env, stdout=log,
                    stderr=subprocess.STDOUT)

        for k in range(kills):
            await produce(kafka, messages[bounds[k]:bounds[k + 1]])
            target = bounds[k] + max(1, round(min(1.0, rng.uniform(0.1, 1.2)) * (bounds[k + 1] - bounds[k])))
            worker = await start()
            try:
                deadline = time.monotonic() + 240    # a guard against a stuck worker, not a speed limit
                while await _progress(crash_url) < target:
                    assert worker.returncode is None, log_path.read_text()[-3000:]
                    assert time.monotonic() < deadline, "the worker got stuck"
                    await asyncio.sleep(0.05)
            finally:
                if worker.returncode is None:
                    worker.send_signal(signal.SIGKILL)
                await asyncio.wait_for(worker.wait(), 60)
        await produce(kafka, messages[bounds[kills]:])
        total = sum((await end_offsets(kafka, topics.inputs)).values())
        worker = await start()
        try:
            crash = Stack("real", kafka, Settings(kafka_bootstrap_servers=KAFKA, topic_prefix=prefix,
                                                  database_url=crash_url))
            deadline = time.monotonic() + 240
            while await _progress(crash_url) < total:
                assert worker.returncode is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "the restarted worker did not finish"
                await asyncio.sleep(0.2)
            got = await wait_published(crash, crash_url, timeout_s=240)
        finally:
            worker.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(worker.wait(), 60) == 0, log_path.read_text()[-3000:]

        # The topic: per account, the clean run's messages in the clean run's order (repeats skipped).
        assert kinds_and_ids(got) == expected

        # A receiver of the Standard Webhooks: each change once (skipping ids seen), in order, all verified.
        settings = Settings(kafka_bootstrap_servers=KAFKA, topic_prefix=prefix, database_url=crash_url,
                            outbox_dir=str(tmp_path / "outbox"), feed_group_id=f"feed-{uuid.uuid4().hex[:6]}",
                            feed_webhooks=json.dumps([{"url": receiver.url, "secret": receiver.secret, "name": "crm"}]))
        wanted = sum(map(len, expected.values()))
        async with _alerts_with_feed(settings, kafka):
            deadline = time.monotonic() + 240
            while sum(map(len, receiver.once_each().values())) < wanted:
                assert time.monotonic() < deadline, "the receiver did not get every change"
                await asyncio.sleep(0.1)
        assert receiver.rejected == []
        assert {a: [(d.message["type"], d.id) for d in ds] for a, ds in receiver.once_each().items()} == expected
    finally:
        receiver.stop()
        await _drop_pg_database(clean_url)
        await _drop_pg_database(crash_url)
        await kafka.close()
        await delete_topics(topics.all)
