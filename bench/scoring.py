"""Scoring benchmark: input topics -> state committed in PostgreSQL, next to a raw aiokafka consumer.

Measured in one run, on a fresh topic prefix and a fresh database:
- raw consumer: one aiokafka consumer in this process reads every input record (manual assignment,
  from the beginning, `getmany` in batches) and does nothing with it;
- scoring: the scoring worker (`python -m services.scoring.entrypoints.worker`) consumes the same
  records and commits state, processed ids, history, risks, outbox and positions per batch; once as one
  process, once as two processes in one consumer group (the way the service uses more than one core),
  each time into a fresh database. The rate is counted from the first committed batch (after the group
  join) to the batch that reaches the end of every input partition, read from the committed positions;
- memory per tracked account: 100,000 accounts with realistic states (those of the scored accounts,
  copied under new ids) are loaded by a consumer the way it loads an assigned partition, and the memory
  the process keeps for them is measured with tracemalloc (and RSS).
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as KafkaTP
from aiokafka.admin import AIOKafkaAdminClient

from bench.framework import ROOT, Context, Result, Target, broker_process, cpu_seconds
from services.scoring.adapters import tables
from services.scoring.adapters.store import AccountRow, BatchWrite
from services.scoring.bootstrap import build_model, build_store
from services.scoring.entrypoints.consumer import ConsumerOptions, ScoringConsumer
from services.simulate.generator import generate
from services.simulate.model import SimulationParams
from shared.bus.kafka import KafkaBus
from shared.bus.memory import MemoryBus
from shared.bus.port import OutMessage, partition_for
from shared.codec import encode_input
from shared.db import create_engine
from shared.metrics import CommonMetrics, ScoringMetrics, new_registry
from shared.migrate import upgrade_async
from shared.settings import Settings
from shared.topics import Topics

TITLE = "Scoring (Kafka → state committed in PostgreSQL)"
NOTES = """Method: the workload is the simulator's (`services/simulate`): accounts with daily usage rhythms,
contacts, tickets, NPS/CSAT answers and scripted churn stories, over 45 days of event time, produced to the
input topics before the run (so the figure is the catch-up rate of a backfill). About 90% of the events are
usage; every other event, and every account's daily clock tick, runs a full health evaluation. The rate is
counted from the moment the consumer group is stable with every worker in it to the commit that reaches the
end of every input partition. The scoring workers, the broker, PostgreSQL and the harness share the
machine's cores (and whatever else runs on it: see the load average); CPU shares are of one core over the
measuring window, and "events per CPU-second" is what one core fully given to a worker would score. Memory
per account counts what the consumer keeps per tracked account: the encoded state (`dict` of id -> bytes,
per partition) and its clock timer. Besides these, a consumer keeps the decoded form of up to 5,000
recently used accounts (`ConsumerOptions.live_states`), a bounded amount not counted per account."""

PARTITIONS = 6
MEMORY_ACCOUNTS = 100_000


def _events(accounts: int, seed: int, prefix: str) -> list[dict[str, Any]]:
    params = SimulationParams(now=datetime(2026, 3, 1, tzinfo=UTC), seed=seed, accounts=accounts,
                              history_days=40, live_days=5, churn_rate=0.3, account_prefix=prefix)
    return [e.body for e in generate(params).events()]


async def _produce(bus: KafkaBus, topics: Topics, events: list[dict[str, Any]]) -> None:
    received = datetime.now(UTC)
    publisher = bus.publisher()
    await publisher.start()
    try:
        messages = [OutMessage(topics.for_event(e["type"]), e["account_id"].encode(),
                               encode_input(e, received)) for e in events]
        for i in range(0, len(messages), 5000):
            await publisher.publish(messages[i:i + 5000])
    finally:
        await publisher.stop()


async def _raw_consume(bootstrap: str, topics: tuple[str, ...], total: int) -> float:
    """Events/s of a bare aiokafka consumer reading the same records (first record to last)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_poll_records=5000,
                                fetch_max_bytes=32 * 1024 * 1024, max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    try:
        consumer.assign([KafkaTP(t, p) for t in topics for p in range(PARTITIONS)])
        seen = 0
        started: float | None = None
        deadline = time.monotonic() + 300
        while seen < total:
            if time.monotonic() > deadline:
                raise RuntimeError(f"raw consumer read only {seen} of {total} records")
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            if batch and started is None:
                started = time.perf_counter()
            seen += sum(len(msgs) for msgs in batch.values())
        assert started is not None
        return total / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def _create_database(base_url: str, name: str) -> str:
    server = base_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = f"{base_url.rpartition('/')[0]}/{name}"
    await upgrade_async(url)
    return url


async def _drop_database(base_url: str, name: str) -> None:
    conn = await asyncpg.connect(base_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        for attempt in range(40):
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except asyncpg.InsufficientPrivilegeError:
                # A server process of another role (autovacuum) is still attached; it leaves soon (after a
                # million accounts' writes, it can take a minute or two).
                await asyncio.sleep(min(0.5 * (attempt + 1), 5.0))
        # (what was measured stands: a database left behind costs disk only, and says so)
        print(f"[bench] WARNING: could not drop the benchmark database {name} (autovacuum still attached); "
              f"drop it later: DROP DATABASE \"{name}\"", flush=True)
    finally:
        await conn.close()


async def _committed(conn: asyncpg.Connection) -> int:
    value = await conn.fetchval("SELECT COALESCE(SUM(next_offset), 0) FROM scoring_positions")
    return int(value)


async def _group_stable(admin: AIOKafkaAdminClient, group: str, members: int) -> bool:
    (response,) = await admin.describe_consumer_groups([group])
    (described,) = response.to_object()["groups"]
    return described["state"] == "Stable" and len(described["members"]) == members


async def _score(ctx: Context, prefix: str, url: str, total: int, log: Path,
                 workers: int) -> dict[str, float]:
    """Run `workers` scoring workers (one consumer group) over the topics; events/s from the moment the
    group is stable with every worker in it (and a batch committed) to the end."""
    group = f"bench-scoring-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS": ctx.kafka_bootstrap_servers,
           "CHURNSIGNAL_DATABASE_URL": url, "CHURNSIGNAL_TOPIC_PREFIX": prefix,
           "CHURNSIGNAL_SCORING_GROUP_ID": group, "CHURNSIGNAL_LOG_LEVEL": "warning"}
    admin = AIOKafkaAdminClient(bootstrap_servers=ctx.kafka_bootstrap_servers)
    await admin.start()
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    running: list[asyncio.subprocess.Process] = []
    try:
        with log.open("ab") as out:
            for _ in range(workers):
                running.append(await asyncio.create_subprocess_exec(
                    ctx.python, "-m", "services.scoring.entrypoints.worker", cwd=ROOT, env=env, stdout=out,
                    stderr=subprocess.STDOUT))
        procs = [psutil.Process(w.pid) for w in running]
        broker = broker_process()
        deadline = time.monotonic() + 600

        def check(what: str) -> None:
            if any(w.returncode is not None for w in running) or time.monotonic() > deadline:
                raise RuntimeError(f"scoring worker {what} (see {log})")

        first = 0
        while first == 0 or not await _group_stable(admin, group, workers):
            check("did not start")
            first = await _committed(conn)
            await asyncio.sleep(0.02)
        first = await _committed(conn)
        t0, cpu0, broker0 = time.perf_counter(), sum(map(cpu_seconds, procs)), cpu_seconds(broker)
        done = first
        while done < total:
            check(f"stopped at {done} of {total}")
            await asyncio.sleep(0.02)
            done = await _committed(conn)
        elapsed = time.perf_counter() - t0
        if total - first < total // 2:
            raise RuntimeError(f"the group took too long to settle: {first} of {total} already scored")
        used = sum(map(cpu_seconds, procs)) - cpu0
        return {"rate": (total - first) / elapsed, "cpu": used / elapsed,
                "per_cpu_second": (total - first) / used if used > 0 else 0.0,
                "broker": (cpu_seconds(broker) - broker0) / elapsed, "events": total - first,
                "load": os.getloadavg()[0]}
    finally:
        for worker in running:
            if worker.returncode is None:
                worker.terminate()
        for worker in running:
            try:
                await asyncio.wait_for(worker.wait(), timeout=60)
            except TimeoutError:
                worker.kill()
                await worker.wait()
        await conn.close()
        await admin.close()


async def _memory_per_account(url: str, prefix: str) -> dict[str, float]:
    """Bytes the consumer keeps per tracked account, at MEMORY_ACCOUNTS accounts."""
    settings = Settings(database_url=url, topic_prefix=prefix)
    model = build_model(settings)
    engine = create_engine(url)
    try:
        store = build_store(engine)
        # Realistic states: those the worker just committed, copied under new account ids.
        async with engine.begin() as conn:
            rows = (await conn.execute(tables.accounts.select())).mappings().all()
            await conn.execute(tables.accounts.delete())
        samples = [(model.decode_state(bytes(r["state"])), r["next_due"]) for r in rows]
        now = datetime.now(UTC)
        batch = BatchWrite()
        state_bytes = 0
        for i in range(MEMORY_ACCOUNTS):
            state, next_due = samples[i % len(samples)]
            account_id = f"mem-{i:06d}"
            state.account_id = account_id
            raw = model.encode_state(state)
            state_bytes += len(raw)
            batch.accounts.append(AccountRow(account_id, partition_for(account_id.encode(), PARTITIONS), raw,
                                             next_due or now + timedelta(days=1)))
            if len(batch.accounts) == 10_000:
                await store.write_batch(batch, now)
                batch = BatchWrite()
        if batch.accounts:
            await store.write_batch(batch, now)
        del samples, rows, batch
        registry = new_registry()
        metrics, common = ScoringMetrics(registry), CommonMetrics(registry, "scoring")
        consumer = ScoringConsumer(bus=MemoryBus(PARTITIONS), store=store, model=model,
                                   topics=Topics(prefix), options=ConsumerOptions(group_id="bench-memory"),
                                   metrics=metrics, common=common)
        bus = MemoryBus(PARTITIONS)
        subscriber = bus.subscriber(Topics(prefix).inputs, "bench-memory", listener=consumer)
        gc.collect()
        rss0 = psutil.Process().memory_info().rss
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        await subscriber.start()  # assignment: the consumer loads every partition's accounts and timers
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        rss = psutil.Process().memory_info().rss - rss0
        if consumer.tracked_accounts != MEMORY_ACCOUNTS or len(consumer.owned_partitions) != PARTITIONS:
            raise RuntimeError(f"loaded {consumer.tracked_accounts} accounts over "
                               f"{len(consumer.owned_partitions)} partitions")
        await subscriber.stop()
        return {"traced": kept / MEMORY_ACCOUNTS, "rss": rss / MEMORY_ACCOUNTS,
                "state": state_bytes / MEMORY_ACCOUNTS}
    finally:
        await engine.dispose()


def _throughput(workers: int, accounts: int, total: int, non_usage: float, scored: dict[str, float],
                raw: float) -> Result:
    label = "1 worker process" if workers == 1 else f"{workers} worker processes, one consumer group"
    return Result(
        f"scoring throughput, {label} ({accounts} accounts, {total:,} events)", scored["rate"],
        "events/s", baseline=raw, baseline_name="raw aiokafka consumer, same records",
        target=Target(at_least=10_000),
        notes=f"{scored['events']:,.0f} events measured once the group was stable; {non_usage:.0%} "
              f"non-usage events; CPU over the window: scoring {scored['cpu']:.0%}, broker "
              f"{scored['broker']:.0%} of one core; {scored['per_cpu_second']:,.0f} events per "
              f"CPU-second of scoring; machine load average {scored['load']:.1f} at the end")


async def _delete_topics(bootstrap: str, names: tuple[str, ...]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(list(names), timeout_ms=30_000)
    finally:
        await admin.close()


async def run(ctx: Context) -> list[Result]:
    if not ctx.test_database_url:
        raise SystemExit("CHURNSIGNAL_TEST_DATABASE_URL is not set (run `make services`)")
    accounts = 60 if ctx.quick else 200
    prefix = ctx.topic_prefix("scoring")
    topics = Topics(prefix)
    events = _events(accounts, seed=17, prefix=f"b{ctx.run_id}-")
    non_usage = sum(1 for e in events if e["type"] != "usage") / len(events)
    total = len(events)
    log = ROOT / "var" / "bench-scoring-worker.log"
    results: list[Result] = []
    memory: dict[str, float] = {}
    bus = KafkaBus(ctx.kafka_bootstrap_servers)
    try:
        await bus.ensure_topics(topics.all, partitions=PARTITIONS)
        await _produce(bus, topics, events)
        raw = await _raw_consume(ctx.kafka_bootstrap_servers, topics.inputs, total)
        for workers in (1, 2):
            db_name = f"bench_{ctx.run_id}_scoring{workers}"
            url = await _create_database(ctx.test_database_url, db_name)
            try:
                scored = await _score(ctx, prefix, url, total, log, workers)
                if workers == 1:
                    memory = await _memory_per_account(url, prefix)
            finally:
                await _drop_database(ctx.test_database_url, db_name)
            results.append(_throughput(workers, accounts, total, non_usage, scored, raw))
    finally:
        await _delete_topics(ctx.kafka_bootstrap_servers, topics.all)
    return [
        *results,
        Result(f"memory per tracked account ({MEMORY_ACCOUNTS:,} accounts)", memory["traced"], "bytes",
               target=Target(at_most=2048),
               notes=f"tracemalloc of what the consumer keeps after loading them; RSS grew "
                     f"{memory['rss']:.0f} bytes/account; encoded state {memory['state']:.0f} bytes "
                     "on average"),
    ]


def main() -> int:
    """Standalone: `python -m bench.scoring` (the harness is `python -m bench --only scoring`)."""
    from bench.framework import summary_line

    for result in asyncio.run(run(Context.from_environment())):
        print(summary_line(result))
        if result.notes:
            print(f"    {result.notes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
