"""kill -9 of the scoring worker at random points of its progress while it scores 100,000 events (real
Kafka and PostgreSQL), restarted each time, ends exactly where one clean run ends: same states, health,
history and risks, and the same risk events on the risks topic (none lost; the same transition never
appears as two different risk events).

The test is driven by progress, never by wall-clock time, so a fast or a slow worker meets the same crash
points: the input is held back and produced in KILLS + 1 stages (contiguous slices of the event-time
ordered stream); while stage k is the end of the log the worker is killed once its committed positions
have gone a seeded random fraction into stage k (a fraction of 1 is a kill once it finished the stage and
sits idle), and only then is stage k + 1 produced."""

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
from itertools import pairwise
from pathlib import Path

import pytest

from shared.bus.memory import MemoryBus
from shared.codec import loads
from shared.settings import Settings
from shared.topics import Topics
from tests.conftest import KAFKA, PG_URL, _create_pg_database, _drop_pg_database
from tests.stack.scoring.harness import (
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
    stage_bounds,
    wait_caught_up,
)
from tests.stack.scoring.streams import simulated

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
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
    """Input records the worker committed (the stored next offsets of every input topic-partition)."""
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
    total = len(messages)

    from shared.bus.kafka import KafkaBus

    # The stages, produced one by one (each entirely before the next, so every topic-partition gets the
    # same records at the same offsets as producing them all at once, as the reference run does).
    bounds = stage_bounds(events, KILLS + 1)
    stages = [messages[a:b] for a, b in pairwise(bounds)]

    kafka = KafkaBus(KAFKA, publish_timeout_s=30.0)
    await kafka.ensure_topics(topics.all, partitions=6)

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
        log_path = tmp_path / "worker.log"
        crash_points: list[int] = []
        for k in range(KILLS):
            # Stage k is now the end of the log: the worker cannot get past bounds[k + 1] before this kill.
            await produce(kafka, stages[k])
            available = bounds[k + 1]
            assert sum((await end_offsets(kafka, topics.inputs)).values()) == available
            # Kill once the committed positions went this far into stage k (1.0: it finished the stage
            # and is idle, waiting for more input, which is a crash point as well).
            fraction = min(1.0, rng.uniform(0.05, 1.25))
            target = bounds[k] + max(1, round(fraction * (available - bounds[k])))
            worker = await _start_worker(env, log_path)
            try:
                start = await _progress(crash_url)
                assert start <= bounds[k] < target <= available
                deadline = time.monotonic() + 240  # a guard against a stuck worker, not a speed limit
                while (done := await _progress(crash_url)) < target:
                    assert worker.returncode is None, log_path.read_text()[-3000:]
                    assert time.monotonic() < deadline, (
                        f"the worker got stuck at {done} of {available} records (kill {k + 1}, "
                        f"waiting for {target})")
                    await asyncio.sleep(0.05)
            finally:
                await _stop(worker, signal.SIGKILL)
            crash_points.append(await _progress(crash_url))
            assert target <= crash_points[-1] <= available < total

        await produce(kafka, stages[KILLS])
        assert sum((await end_offsets(kafka, topics.inputs)).values()) == total
        worker = await _start_worker(env, log_path)
        try:
            crash = Stack("real", kafka, Settings(kafka_bootstrap_servers=KAFKA, topic_prefix=prefix,
                                                  database_url=crash_url))
            deadline = time.monotonic() + 240
            while await _progress(crash_url) < total:
                assert worker.returncode is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, (
                    f"the restarted worker did not finish (killed at {crash_points} of {bounds})")
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
