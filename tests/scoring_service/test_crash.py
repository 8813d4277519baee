"""kill -9 of the scoring worker at random moments while it scores 100,000 events (real Kafka and
PostgreSQL), restarted each time, ends exactly where one clean run ends: same states, health, history
and risks, and the same risk events on the risks topic (none lost; the same transition never appears
as two different risk events)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

from shared.bus.memory import MemoryBus
from shared.codec import loads
from shared.settings import Settings
from shared.topics import Topics
from tests.conftest import KAFKA, PG_URL, _create_pg_database, _drop_pg_database
from tests.scoring_service.harness import (
    Stack,
    comparable_risk_event,
    database_contents,
    delete_topics,
    end_offsets,
    positions,
    produce,
    read_topic,
    records_for,
    running,
    wait_caught_up,
)
from tests.scoring_service.streams import simulated

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
KILLS = 5
WORKER = "services.scoring.entrypoints.worker"


async def _start_worker(env: dict[str, str], log_path: Path) -> asyncio.subprocess.Process:
    with log_path.open("ab") as log:
        return await asyncio.create_subprocess_exec(sys.executable, "-m", WORKER, cwd=ROOT, env=env,
                                                    stdout=log, stderr=subprocess.STDOUT)


async def _stop(worker: asyncio.subprocess.Process, sig: int) -> int:
    if worker.returncode is None:
        worker.send_signal(sig)
    return await asyncio.wait_for(worker.wait(), timeout=60)


async def _progress(url: str) -> int:
    return sum((await positions(url)).values())


@pytest.mark.skipif(not KAFKA or not PG_URL, reason="needs the real Kafka broker and PostgreSQL")
async def test_kill_9_at_random_points_ends_like_one_clean_run(tmp_path: Path):
    rng = random.Random(20260301)
    prefix = f"crash{uuid.uuid4().hex[:8]}."
    topics = Topics(prefix)
    events = simulated(accounts=200, days=45, seed=11)
    assert len(events) >= 100_000
    events = events[:100_000]
    messages = records_for(topics, events)

    from shared.bus.kafka import KafkaBus

    kafka = KafkaBus(KAFKA, publish_timeout_s=30.0)
    await kafka.ensure_topics(topics.all, partitions=6)
    await produce(kafka, messages)

    clean_url, crash_url = await _create_pg_database(), await _create_pg_database()
    try:
        # The reference: one clean run over the same records (same partitions, same offsets).
        memory = MemoryBus(default_partitions=6)
        await produce(memory, messages)
        reference = Stack("embedded", memory, Settings(topic_prefix=prefix, database_url=clean_url,
                                                       scoring_group_id="clean"))
        async with running(reference) as rt:
            await wait_caught_up(reference, rt, timeout_s=240)
        expected = await database_contents(clean_url)
        assert sum(len(v) for v in expected["outbox"].values()) >= 20, "the stream raises risk events"

        # Every restart joins the same consumer group again, as a restarted pod would.
        env = {**os.environ, "CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS": KAFKA,
               "CHURNSIGNAL_DATABASE_URL": crash_url, "CHURNSIGNAL_TOPIC_PREFIX": prefix,
               "CHURNSIGNAL_SCORING_GROUP_ID": f"crash-{uuid.uuid4().hex[:6]}",
               "CHURNSIGNAL_LOG_LEVEL": "warning"}
        total = sum((await end_offsets(kafka, topics.inputs)).values())
        log_path = tmp_path / "worker.log"
        kills = 0
        while kills < KILLS:
            worker = await _start_worker(env, log_path)
            try:
                start = await _progress(crash_url)
                deadline = time.monotonic() + 60
                while await _progress(crash_url) == start:
                    assert worker.returncode is None, log_path.read_text()[-3000:]
                    assert time.monotonic() < deadline, "the worker made no progress"
                    await asyncio.sleep(0.05)
                await asyncio.sleep(rng.uniform(0.0, 0.8))
            finally:
                await _stop(worker, signal.SIGKILL)
            kills += 1
            assert await _progress(crash_url) < total, "the stream ended before every kill happened"

        worker = await _start_worker(env, log_path)
        try:
            crash = Stack("real", kafka, Settings(kafka_bootstrap_servers=KAFKA, topic_prefix=prefix,
                                                  database_url=crash_url))
            deadline = time.monotonic() + 240
            while await _progress(crash_url) < total:
                assert worker.returncode is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "the restarted worker did not finish"
                await asyncio.sleep(0.2)
        finally:
            assert await _stop(worker, signal.SIGTERM) == 0, log_path.read_text()[-3000:]

        got = await database_contents(crash_url)
        assert got["processed"] == expected["processed"]
        assert got["accounts"] == expected["accounts"]
        assert got["history"] == expected["history"]
        assert got["risks"] == expected["risks"]
        assert got["outbox"] == expected["outbox"]

        # The risks topic: every expected risk event, and never two different events for one transition.
        by_id: dict[str, set[str]] = defaultdict(set)
        for value in await read_topic(crash.bus, topics.risks):
            event = comparable_risk_event(loads(value))
            by_id[event["event_id"]].add(repr(event))
        conflicting = {k: v for k, v in by_id.items() if len(v) > 1}
        assert not conflicting
        wanted = {e["event_id"]: repr(e) for per_account in expected["outbox"].values() for e in per_account}
        assert set(by_id) == set(wanted)
        assert all(by_id[k] == {v} for k, v in wanted.items())
    finally:
        await _drop_pg_database(clean_url)
        await _drop_pg_database(crash_url)
        await kafka.close()
        await delete_topics(topics.all)
