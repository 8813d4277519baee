"""Rebalances, database failures, an unavailable bus and a missing schema: the committed state always
ends where one clean run ends, nothing is lost, nothing counted twice."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Sequence
from datetime import datetime
from itertools import pairwise
from typing import Any

import asyncpg
import pytest

from services.scoring.adapters import tables as t
from services.scoring.adapters.errors import SchemaMissing, StoreUnavailable
from services.scoring.bootstrap import ScoringRuntime, scoring_runtime
from shared.bus.port import OutMessage, partition_for
from shared.metrics import new_registry
from tests.stack.scoring.harness import (
    Stack,
    count,
    database_contents,
    positions,
    produce,
    records_for,
    risk_events,
    running,
    stage_bounds,
    wait_caught_up,
)
from tests.stack.scoring.streams import simulated

PARTITIONS = 6  # of the test topics (the stack fixture's)


async def _clean_run(stack: Stack, fresh_database) -> dict:  # type: ignore[no-untyped-def]
    clean = stack.with_database(await fresh_database()).with_group(stack.settings.scoring_group_id + "-clean")
    async with running(clean) as rt:
        await wait_caught_up(clean, rt, timeout_s=180)
    return await database_contents(clean.settings.database_url)


async def _progress(url: str) -> int:
    return sum((await positions(url)).values())


async def _until(predicate, timeout_s: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def _stages(events: Sequence[dict[str, Any]], n: int) -> tuple[list[Sequence[dict[str, Any]]], list[int]]:
    """The stream cut into `n` contiguous slices (harness.stage_bounds), and the cumulative counts at the cuts."""
    bounds = stage_bounds(events, n)
    return [events[a:b] for a, b in pairwise(bounds)], bounds


async def _produce_while_scoring(stack: Stack, events: Sequence[dict[str, Any]]) -> None:
    """Produce a slice of the stream while consumers run, so that each partition's log is at every moment a
    prefix of its merge order ((occurred_at, topic), feed.py): records go in that order, in runs that give
    each partition records of one topic only, each run acknowledged before the next. (One publish of many
    records of several topics lands its partition batches in no set order: a consumer could fetch a later
    usage batch before an earlier ticket batch is appended, and rightly find the tickets topic caught up.)
    The logs end up the same as with one publish; only what a consumer can see meanwhile is ordered."""
    messages = records_for(stack.topics, events)
    at = [datetime.fromisoformat(e["occurred_at"]) for e in events]
    ordered = [m for _, _, m in sorted(zip(at, range(len(at)), messages, strict=True),
                                       key=lambda x: (x[0], x[2].topic, x[1]))]
    publisher = stack.bus.publisher()
    await publisher.start()
    try:
        run: list[OutMessage] = []
        topic_of: dict[int, str] = {}
        for m in ordered:
            partition = partition_for(m.key, PARTITIONS)
            if topic_of.setdefault(partition, m.topic) != m.topic:
                await publisher.publish(run)
                run, topic_of = [], {partition: m.topic}
            run.append(m)
        await publisher.publish(run)
    finally:
        await publisher.stop()


async def test_partitions_move_between_consumers_and_nothing_is_lost_or_doubled(stack: Stack, fresh_database):
    # The input is held back and produced in stages, so the partitions move while there is work left for
    # them however fast the consumers are (produced all at once, a fast consumer finished the stream before
    # the second one had joined).
    stages, bounds = _stages(simulated(accounts=24, days=45, seed=21), 5)
    small = stack.settings.model_copy(update={"scoring_batch_max_records": 300})
    first, second = Stack(stack.kind, stack.bus, small), Stack(stack.kind, stack.bus, small)
    url = stack.settings.database_url
    await produce(stack.bus, records_for(stack.topics, stages[0]))
    async with running(first) as a:
        await _until(lambda: _progress_over(url, bounds[1] - 1), timeout_s=120)
        # `second` joins while `first` scores the next stage (or once it finished it: both are fine).
        await _produce_while_scoring(stack, stages[1])
        async with running(second) as b:
            await _until(lambda: _both_own(a, b), timeout_s=120)
            await _until(lambda: _progress_over(url, bounds[2] - 1), timeout_s=120)
            # Both own partitions now, and both commit: every partition has records in the next stage.
            before = await positions(url)
            await _produce_while_scoring(stack, stages[2])
            await _until(lambda: _progress_over(url, bounds[3] - 1), timeout_s=120)
            advanced = {tp.partition for tp, end in (await positions(url)).items() if end > before.get(tp, 0)}
            assert advanced & a.consumer.owned_partitions and advanced & b.consumer.owned_partitions, advanced
            # `second` leaves with the next stage just produced (scored by then or not: both are fine).
            await _produce_while_scoring(stack, stages[3])
        # `second` left: `first` owns everything again and resumes its partitions from the database.
        await _until(lambda: _owns_all(a), timeout_s=120)
        await _produce_while_scoring(stack, stages[4])
        await wait_caught_up(stack, a, timeout_s=180)
    got = await database_contents(url)
    assert got == await _clean_run(stack, fresh_database)


async def _progress_over(url: str, n: int) -> bool:
    return await _progress(url) > n


async def _both_own(a: ScoringRuntime, b: ScoringRuntime) -> bool:
    return bool(a.consumer.owned_partitions) and bool(b.consumer.owned_partitions) and \
        not a.consumer.owned_partitions & b.consumer.owned_partitions


async def _owns_all(a: ScoringRuntime) -> bool:
    return a.consumer.owned_partitions == set(range(6))


async def test_database_failures_are_retried_and_change_nothing(stack: Stack, fresh_database, caplog):
    await produce(stack.bus, records_for(stack.topics, simulated(accounts=12, days=45, seed=8)))
    small = Stack(stack.kind, stack.bus, stack.settings.model_copy(update={"scoring_batch_max_records": 500}))
    url = stack.settings.database_url
    # Real: the service's database connections are killed while a batch is certainly in flight, whatever
    # the speed: a lock taken before the service starts holds its first batch statement (which writes the
    # positions) until the connections are terminated; its retry waits on the lock again and is killed too.
    blocker = await _lock_positions(url) if stack.kind == "real" else None
    try:
        async with running(small) as rt:
            if blocker is not None:
                killed: set[int] = set()
                for _ in range(4):
                    await _until(functools.partial(_a_new_batch_waits, blocker, killed), timeout_s=120)
                    killed.update(await _terminate_connections(blocker))
                await blocker.execute("ROLLBACK")  # the lock goes: the next retry commits
            else:
                failures = _fail_every_third_write(rt)
                await _until(lambda: _failed(failures, 4))
            await wait_caught_up(small, rt, timeout_s=180)
            assert rt.consumer.running
    finally:
        if blocker is not None:
            await blocker.close()
    assert any("scoring batch not committed" in r.message for r in caplog.records)
    assert await database_contents(url) == await _clean_run(stack, fresh_database)


def _fail_every_third_write(rt: ScoringRuntime) -> list[int]:
    failures: list[int] = []
    real = rt.store.write_batch
    calls = 0

    async def flaky(batch, now):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls % 3 == 0:
            failures.append(calls)
            raise StoreUnavailable("database unavailable: injected")
        await real(batch, now)

    rt.store.write_batch = flaky  # type: ignore[method-assign]
    return failures


async def _failed(failures: list[int], n: int) -> bool:
    return len(failures) >= n


async def _lock_positions(url: str) -> asyncpg.Connection:
    """A connection holding a lock that blocks writes to the positions table (reads still go)."""
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    await conn.execute("BEGIN")
    await conn.execute(f"LOCK TABLE {t.positions.name} IN EXCLUSIVE MODE")
    return conn


async def _a_new_batch_waits(blocker: asyncpg.Connection, killed: set[int]) -> bool:
    """Whether a connection not terminated yet waits for the positions lock (a batch in flight)."""
    rows = await blocker.fetch("SELECT DISTINCT pid FROM pg_locks WHERE NOT granted AND relation = $1::regclass",
                               t.positions.name)
    return any(r["pid"] not in killed for r in rows)


async def _terminate_connections(blocker: asyncpg.Connection) -> set[int]:
    """Terminate the other client connections of the database (the service's: mid-transaction or idle)."""
    # The activity view is a snapshot taken once per transaction, and the blocker's transaction is long.
    await blocker.execute("SELECT pg_stat_clear_snapshot()")
    rows = await blocker.fetch(
        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND usename = current_user")
    return {r["pid"] for r in rows}


async def test_risk_events_wait_for_the_bus_and_are_published_after_a_restart(stack: Stack):
    if stack.kind == "real":
        pytest.skip("the broker is shared by everyone's tests: its outage is simulated on the in-process bus")
    bus = stack.bus
    events = simulated(accounts=12, days=45, seed=8)
    await produce(bus, records_for(stack.topics, events))
    url = stack.settings.database_url
    bus.available = False  # type: ignore[attr-defined]
    async with running(stack) as rt:
        # The state commits; its risk events (or, earlier, its health feed messages) wait in their outbox
        # while the bus refuses them, and nothing after them is processed (so an account's risk events
        # never go out of order).
        await _until(lambda: _outbox_has(url), timeout_s=60)
        await asyncio.sleep(0.5)
        assert await risk_events(stack) == []
        assert rt.consumer.running
    assert (await count(url, t.outbox, t.outbox.c.published_at.is_(None))
            + await count(url, t.health_feed)) > 0
    bus.available = True  # type: ignore[attr-defined]
    async with running(stack) as rt:
        await wait_caught_up(stack, rt, timeout_s=120)
    published = [r.event_id for r in await risk_events(stack)]
    assert len(published) == len(set(published)) == await count(url, t.outbox)
    # Per account, risk events went out in the order they were decided.
    outbox = await database_contents(url)
    for account_id, expected in outbox["outbox"].items():
        assert [r.event_id for r in await risk_events(stack) if r.account_id == account_id] == \
            [e["event_id"] for e in expected]


async def _outbox_has(url: str) -> bool:
    """Something committed waits for the bus: a risk event, or a batch of health feed messages."""
    return await count(url, t.outbox) > 0 or await count(url, t.health_feed) > 0


async def test_a_database_without_the_schema_is_refused_with_a_clear_message(stack: Stack):
    if stack.kind != "real":
        pytest.skip("embedded mode migrates at start")
    base = stack.settings.database_url.rpartition("/")[0]
    name = f"empty_{int(time.time() * 1000)}"
    admin = await asyncpg.connect(stack.settings.database_url.replace("postgresql+asyncpg://", "postgresql://"))
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        settings = stack.settings.model_copy(update={"database_url": f"{base}/{name}"})
        with pytest.raises(SchemaMissing, match="run `churnsignal migrate`"):
            async with scoring_runtime(settings, bus=stack.bus, registry=new_registry()):
                pass
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
