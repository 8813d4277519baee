"""Rebalances, database failures, an unavailable bus and a missing schema: the committed state always
ends where one clean run ends, nothing is lost, nothing counted twice."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from services.scoring.adapters import tables as t
from services.scoring.adapters.errors import SchemaMissing, StoreUnavailable
from services.scoring.bootstrap import ScoringRuntime, scoring_runtime
from shared.metrics import new_registry
from tests.scoring_service.harness import (
    Stack,
    count,
    database_contents,
    positions,
    produce,
    records_for,
    risk_events,
    running,
    wait_caught_up,
)
from tests.scoring_service.streams import simulated


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


async def test_partitions_move_between_consumers_and_nothing_is_lost_or_doubled(stack: Stack, fresh_database):
    await produce(stack.bus, records_for(stack.topics, simulated(accounts=24, days=45, seed=21)))
    small = stack.settings.model_copy(update={"scoring_batch_max_records": 300})
    first, second = Stack(stack.kind, stack.bus, small), Stack(stack.kind, stack.bus, small)
    url = stack.settings.database_url
    async with running(first) as a:
        await _until(lambda: _progress_over(url, 2000))
        async with running(second) as b:
            # Both own partitions now, and both keep committing.
            await _until(lambda: _both_own(a, b))
            await _until(lambda: _progress_over(url, 6000))
        # `second` left: `first` owns everything again and resumes its partitions from the database.
        await _until(lambda: _owns_all(a))
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
    async with running(small) as rt:
        if stack.kind == "real":
            # Kill the service's database connections (mid-transaction or idle) while it works.
            await _until(lambda: _progress_over(url, 0))
            for _ in range(8):
                await _terminate_connections(url)
                await asyncio.sleep(0.25)
        else:
            failures = _fail_every_third_write(rt)
            await _until(lambda: _failed(failures, 4))
        await wait_caught_up(small, rt, timeout_s=180)
        assert rt.consumer.running
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


async def _terminate_connections(url: str) -> None:
    name = url.rpartition("/")[2]
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
    finally:
        await conn.close()


async def test_risk_events_wait_for_the_bus_and_are_published_after_a_restart(stack: Stack):
    if stack.kind == "real":
        pytest.skip("the broker is shared by everyone's tests: its outage is simulated on the in-process bus")
    bus = stack.bus
    events = simulated(accounts=12, days=45, seed=8)
    await produce(bus, records_for(stack.topics, events))
    url = stack.settings.database_url
    bus.available = False  # type: ignore[attr-defined]
    async with running(stack) as rt:
        # The state commits; its risk events wait in the outbox while the bus refuses them, and nothing
        # after them is processed (so an account's risk events never go out of order).
        await _until(lambda: _outbox_has(url), timeout_s=60)
        await asyncio.sleep(0.5)
        assert await risk_events(stack) == []
        assert rt.consumer.running
    assert await count(url, t.outbox, t.outbox.c.published_at.is_(None)) > 0
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
    return await count(url, t.outbox) > 0


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
