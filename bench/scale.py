"""Scale benchmark: one scoring worker at 10k, 100k and 1M accounts, the daily sweep, and scale-out.

Measured in one run, each size on a fresh topic prefix (12 partitions) and a fresh database:
- the workload: N accounts with one usage event each (compact events, `occurred_at` spread over one
  event-time day, keyed by account), produced to the input topics before the worker starts;
- raw consumer (the baseline): `bench.scoring._raw_consume` reads the same records and does nothing;
- catch-up: ONE scoring worker (`python -m services.scoring.entrypoints.worker`) scores them; the rate
  counts from the first committed batch to the commit that reaches the end of every input partition
  (read from `scoring_positions`), and its CPU time gives events per CPU-second;
- memory: the worker's RSS once idle after the catch-up, and its peak (`VmHWM`) before and after the
  sweeps (/proc/<pid>/status);
- the daily sweep: one event per partition a day later (past the next midnight plus the allowed
  lateness), so every partition's watermark passes that midnight, when every account's daily tick falls;
  the sweep is over when every partition's watermark has passed the midnight and no row of
  `scoring_accounts` has `next_due` at or before it. Those ticks are quiet (an account seen once has no
  score to move for three weeks), so the worker skips them (`ScoringEngine.skip_to`): the figure is what
  a midnight costs when nothing can change;
- the sweep of first scores: the same at the first midnight a tick can change something (day 21, when
  three weeks of history let usage trend and breadth be judged): every account is evaluated and gets
  its first snapshot, the sweep of real evaluations;
- live latency: while each sweep runs, a trickle of live usage events (LIVE_RATE/s) on accounts of every
  partition; each one's latency is from its publish to the first poll of `scoring_processed_events`
  that sees it committed;
- rebalance cost: the time a consumer takes to load the partitions' states from the database (what a
  newly assigned worker does), measured in this process on the largest size's database;
- scale-out: 1, 2 and 4 worker processes in one consumer group over the 100k workload, each with the
  partitions the group assigned it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import asyncpg
import psutil
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

import bench.scoring as scoring_bench
from bench.framework import ROOT, Context, Result, Target, broker_process, cpu_seconds, postgres_process
from bench.scoring import _committed, _create_database, _drop_database, _group_stable, _produce
from services.scoring.bootstrap import build_model, build_store
from services.scoring.entrypoints.consumer import ConsumerOptions, ScoringConsumer
from shared.bus.kafka import KafkaBus, KafkaPublisher
from shared.bus.memory import MemoryBus
from shared.bus.port import OutMessage, partition_for
from shared.codec import encode_input
from shared.db import create_engine
from shared.metrics import CommonMetrics, ScoringMetrics, new_registry
from shared.settings import Settings
from shared.topics import Topics

TITLE = "Scoring at scale (10k–1M accounts, the daily sweep, scale-out)"

PARTITIONS = 12
SIZES = (10_000, 100_000, 1_000_000)
# The flatness check: the first and the last this many events of the largest catch-up (`_flatness`).
FLAT_WINDOW = 100_000
# The same workload at every size, after its catch-up: STEADY_EVENTS usage events to STEADY_ACCOUNTS of the
# accounts every size has, so its rate at 1M tracked accounts is read against the rate at 10k.
STEADY_ACCOUNTS = 10_000
STEADY_EVENTS = 200_000
# The 1M case takes about 4 of the section's 5-6 minutes on the 2-core machine of the report (producing,
# the raw read, the catch-up, the 2-3 minute sweep, loading the states); False leaves it out.
RUN_1M = True
SCALE_OUT_WORKERS = (1, 2, 4)
SCALE_OUT_ACCOUNTS = 100_000
LIVE_RATE = 200                       # live events per second during the sweep
LIVE_ACCOUNTS = 1_000                 # (at most) the accounts they go to, spread over every partition
SMALL_CHUNK = 2000                    # the sweeps again at SMALL_CHUNK_ACCOUNTS with this chunk (live latency)
SMALL_CHUNK_ACCOUNTS = 100_000
DAY = datetime(2026, 11, 2, tzinfo=UTC)           # the event-time day of the accounts' events
MIDNIGHT = DAY + timedelta(days=1)                # the midnight the daily sweep is for
LATENESS = timedelta(hours=1)                     # the worker's CHURNSIGNAL_SCORING_ALLOWED_LATENESS_S
TICK_AT = MIDNIGHT + LATENESS + timedelta(minutes=30)
# The first midnight a tick of these accounts can change something (three weeks of usage history: usage
# trend and breadth can be judged), when every account is scored for the first time: the sweep of real
# evaluations (ScoringEngine.skip_to sets their timers there).
SCORED = DAY + timedelta(days=21)
SCORED_TICK_AT = SCORED + LATENESS + timedelta(minutes=30)
STEADY_AT = DAY + timedelta(seconds=86_399)      # the steady workload's event time: no tick falls before it
PRODUCE_SLICE = 100_000                           # events generated and published at a time
MIB = 1024 * 1024

NOTES = f"""Method: N accounts with one usage event each (`occurred_at` spread over one event-time day, keyed
by account) are produced to fresh input topics of {PARTITIONS} partitions before the run, then ONE scoring
worker process (`python -m services.scoring.entrypoints.worker`, `CHURNSIGNAL_TOPIC_PARTITIONS={PARTITIONS}`,
default settings: batches of up to 5,000 records, sweep chunks of `CHURNSIGNAL_SCORING_SWEEP_CHUNK` = 500
timer evaluations) scores them into a fresh PostgreSQL database. The catch-up rate counts from the first
committed batch to the commit that reaches the end of every input partition (read from
`scoring_positions`), next to a raw aiokafka consumer reading the same records in the same run; "events per
CPU-second" is the worker's own CPU time over that window, the fair per-process figure on a shared machine.
At 10,000 accounts that window is a single 5,000-record batch (the first one is before it), so that rate
swings by a factor of two or three between runs (15,000 to 41,000 events/s while this section was written).
Whether throughput stays flat as accounts accumulate is therefore read two other ways. The steady
workload: after each size's catch-up, the idle worker is sent the same {STEADY_EVENTS:,} usage events for the
same {STEADY_ACCOUNTS:,} accounts ({STEADY_EVENTS // STEADY_ACCOUNTS} each, round robin, at the last second of the
accounts' day, so no tick falls), timed from the first committed batch of them to the commit of the last:
identical work at every size, only the number of accounts tracked (and stored) differs. And inside the
largest run: its last {FLAT_WINDOW:,} events (nearly every account tracked) against its first {FLAT_WINDOW:,}
after the first committed batch (committed positions and the worker's CPU polled every 50 ms). RSS is the
worker's `VmRSS` once idle after the catch-up ("steady") and `VmHWM` (peak) before and after the sweep
(/proc/<pid>/status); memory per account is the growth of the steady RSS between the smallest and the largest size.

The daily sweep: one event per partition a day later (event time {TICK_AT:%H:%M} of the next day, past midnight
plus the allowed lateness of 1 h), so every partition's watermark passes midnight, when all N daily ticks
fall. None of them can change anything (no account has a score yet, nor can it have one before three weeks
of usage history), so the worker has set each account's timer at day 21 instead (`ScoringEngine.skip_to`)
and the midnight evaluates, encodes and writes none of them ("due" and "rows written" in the notes). Its
time runs from publishing those events to the first poll of the database that finds every partition's
watermark past midnight and no `scoring_accounts.next_due` at or before it (a count over the table,
repeated seldom while much is left and every 0.1 s near the end); its CPU is the worker's over that time,
per account. The sweep of first scores is the same at day 21 (event time {SCORED_TICK_AT:%H:%M}): every
account is due and evaluated, and its score, known for the first time, makes a snapshot, a history row and
a health-topic message each (the note also gives when the last sweep batch was built, from the accounts'
`updated_at`). Meanwhile {LIVE_RATE} live usage events a second go to up to {LIVE_ACCOUNTS:,} accounts of every
partition; an event's latency runs from publishing it to the first poll of `scoring_processed_events` (every
50 ms) that sees its id committed, for the events published before the sweep was seen done (so it includes
the producer's ack, up to 50 ms of polling, and the wait behind sweep batches: every batch, a live event's
included, evaluates up to a chunk of due timers, and batches are pipelined, so a live event waits for about
two chunks' evaluation and commit). Both sweeps are then run again at {SMALL_CHUNK_ACCOUNTS:,} accounts with chunks
of {SMALL_CHUNK:,} (the default is 500): the trade between live latency and the sweep's length.

The rebalance cost is the time a consumer takes to load its partitions' states, clocks and positions from
the database when they are assigned (`ScoringConsumer` on an in-process bus, in the harness process, over
the largest size's database after its run): a worker taking over partitions pays this before it scores
again. Scale-out runs {', '.join(map(str, SCALE_OUT_WORKERS))} worker processes in one consumer group over the
{SCALE_OUT_ACCOUNTS:,}-account workload (before its sweep; each into a fresh database), counted from the moment
the group is stable with every worker in it, and lists each member's partitions as the group assigned them
(`describe_consumer_groups`).

The machine of the report has 2 cores shared by the workers, the broker, PostgreSQL and the harness (and
whatever else runs on it: see the load average in the notes), so 2 and 4 worker processes cannot show
linear scaling here. The figure to compare across process counts is events per CPU-second of the workers
(its ratio to the single process's is the per-process efficiency): it stayed within 15% of the single
process's (86-109% over the runs made while writing this section), so the work per event does not grow
with the process count. The aggregate rate varies from run to run (2 processes 60-80% of the single
process's rate, 4 processes 80-134%): in most 2-process runs the workers together used less CPU than the
single one did, with PostgreSQL and the broker far from a core each, so they wait more than they compute
(not profiled further here). Live latency varies with the machine's load too. Before quiet ticks were
skipped, the daily sweep of these accounts evaluated every one of them (70-95 µs of CPU each: 133 s for 1M,
live p99 0.8-2.3 s with chunks of 2,000). Over the runs made while skipping them, the sweep of first scores
cost 86-107 µs of worker CPU per account (half of it the first snapshot: its reasons, history row and
health-topic message), and live p99 during it was 0.29-0.39 s at 100,000 accounts and 0.73-1.07 s at
1,000,000 (where a batch's commit takes longer and the collector pauses longer), at load averages of 2.5-3.3.
Chunks of 2,000 made that sweep no shorter (sweep batches no longer wait for end offsets to be asked while
live records settle) and live p99 about four times longer.
Sizing from these figures: deploy/RUNBOOK.md, "Sizing scoring"."""


# ---------------------------------------------------------------------------------------------- workload
def _account(i: int) -> str:
    return f"acct-{i:07d}"


def _usage(event_id: str, account_id: str, at: datetime) -> dict[str, Any]:
    return {"id": event_id, "type": "usage", "account_id": account_id,
            "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "data": {"feature": "login"}}


async def _produce_accounts(bus: KafkaBus, topics: Topics, accounts: int) -> float:
    """One usage event per account, spread over DAY in account order; the seconds it took."""
    started = time.perf_counter()
    step = 86_400 / accounts
    for first in range(0, accounts, PRODUCE_SLICE):
        events = [_usage(f"u{i}", _account(i), DAY + timedelta(seconds=int(i * step)))
                  for i in range(first, min(accounts, first + PRODUCE_SLICE))]
        await _produce(bus, topics, events)
    return time.perf_counter() - started


def _tick_accounts() -> list[str]:
    """One account id per partition (the keys hash to every partition once)."""
    out: dict[int, str] = {}
    i = 0
    while len(out) < PARTITIONS:
        name = f"tick-{i}"
        out.setdefault(partition_for(name.encode(), PARTITIONS), name)
        i += 1
    return [out[p] for p in range(PARTITIONS)]


def _live_accounts(accounts: int) -> list[str]:
    count = min(LIVE_ACCOUNTS, accounts // 10)
    stride = accounts // count
    return [_account(i * stride + stride // 2) for i in range(count)]


# ----------------------------------------------------------------------------------------------- workers
def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    if len(out) != 2:
        raise RuntimeError(f"process {pid} has exited (a scoring worker: see var/bench-scale-worker.log)")
    return out


@dataclass
class Workers:
    """Scoring worker processes of one consumer group."""

    group: str
    log: Path
    env: dict[str, str] = field(default_factory=dict)      # settings beyond the defaults
    running: list[asyncio.subprocess.Process] = field(default_factory=list)

    @property
    def procs(self) -> list[psutil.Process]:
        return [psutil.Process(w.pid) for w in self.running]

    def check(self, deadline: float, what: str) -> None:
        if any(w.returncode is not None for w in self.running):
            raise RuntimeError(f"a scoring worker exited: {what} (see {self.log})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"scoring workers too slow: {what} (see {self.log})")

    async def start(self, ctx: Context, prefix: str, url: str, count: int) -> None:
        env = {**os.environ, "CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS": ctx.kafka_bootstrap_servers,
               "CHURNSIGNAL_DATABASE_URL": url, "CHURNSIGNAL_TOPIC_PREFIX": prefix,
               "CHURNSIGNAL_TOPIC_PARTITIONS": str(PARTITIONS), "CHURNSIGNAL_SCORING_GROUP_ID": self.group,
               "CHURNSIGNAL_LOG_LEVEL": "warning", **self.env}
        with self.log.open("ab") as out:
            for _ in range(count):
                self.running.append(await asyncio.create_subprocess_exec(
                    ctx.python, "-m", "services.scoring.entrypoints.worker", cwd=ROOT, env=env, stdout=out,
                    stderr=subprocess.STDOUT))

    async def stop(self) -> None:
        for worker in self.running:
            if worker.returncode is None:
                worker.terminate()
        for worker in self.running:
            try:
                await asyncio.wait_for(worker.wait(), timeout=60)
            except TimeoutError:
                worker.kill()
                await worker.wait()


async def _assignment(admin: AIOKafkaAdminClient, group: str, topic: str) -> list[list[int]]:
    """Each member's partitions of `topic`, as the group assigned them."""
    (response,) = await admin.describe_consumer_groups([group])
    (described,) = response.to_object()["groups"]
    members = []
    for member in described["members"]:
        assigned = ConsumerProtocolMemberAssignment.decode(member["member_assignment"])
        members.append(sorted(p for t, parts in assigned.assignment if t == topic for p in parts))
    return sorted(members)


@dataclass
class CatchUp:
    rate: float
    events: int
    cpu: float            # share of one core, the workers together
    per_cpu_second: float
    broker: float
    postgres: float
    assignment: list[list[int]]
    load: float
    # (seconds, events committed, CPU-seconds of the workers) polled during the catch-up: the rate of any
    # stretch of it (`window`)
    samples: list[tuple[float, int, float]] = field(default_factory=list)

    def window(self, lo: int, hi: int) -> tuple[float, float]:
        """(events/s, events per CPU-second of the workers) while the committed count went from `lo` to `hi`
        (from the first sample at or past each)."""
        start = next(x for x in self.samples if x[1] >= lo)
        end = next(x for x in self.samples if x[1] >= hi)
        events, seconds, cpu = end[1] - start[1], end[0] - start[0], end[2] - start[2]
        return events / seconds, (events / cpu if cpu > 0 else 0.0)


async def _catch_up(conn: asyncpg.Connection, admin: AIOKafkaAdminClient, workers: Workers, topic: str,
                    total: int) -> CatchUp:
    """Wait for the group to be stable with every worker (and a batch committed), then time the rest of
    the catch-up from the committed positions."""
    deadline = time.monotonic() + 1200
    count = len(workers.running)
    first = 0
    while first == 0 or not await _group_stable(admin, workers.group, count):
        workers.check(deadline, "the group did not settle")
        first = await _committed(conn)
        await asyncio.sleep(0.02)
    first = await _committed(conn)
    procs, broker, postgres = workers.procs, broker_process(), postgres_process()
    t0, cpu0, broker0 = time.perf_counter(), sum(map(cpu_seconds, procs)), cpu_seconds(broker)
    postgres0 = cpu_seconds(postgres)
    assignment = await _assignment(admin, workers.group, topic)
    done = first
    samples = [(t0, first, cpu0)]
    while done < total:
        workers.check(deadline, f"catch-up stopped at {done} of {total}")
        await asyncio.sleep(0.05)
        done = await _committed(conn)
        if done > samples[-1][1]:
            samples.append((time.perf_counter(), done, sum(map(cpu_seconds, procs))))
    elapsed = time.perf_counter() - t0
    if done != total:
        raise RuntimeError(f"committed positions reach {done}, {total} events were produced")
    if total - first < total // 3:
        raise RuntimeError(f"the group took too long to settle: {first} of {total} already scored")
    used = sum(map(cpu_seconds, procs)) - cpu0
    return CatchUp(rate=(total - first) / elapsed, events=total - first, cpu=used / elapsed,
                   per_cpu_second=(total - first) / used if used > 0 else 0.0,
                   broker=(cpu_seconds(broker) - broker0) / elapsed,
                   postgres=(cpu_seconds(postgres) - postgres0) / elapsed, assignment=assignment,
                   load=os.getloadavg()[0], samples=samples)


# ------------------------------------------------------------------------------------------ steady workload
@dataclass
class Steady:
    rate: float              # events/s from the first committed batch of the workload to its end
    per_cpu_second: float    # events per CPU-second of the worker over that window
    events: int              # events in the window
    cpu: float               # the worker's share of one core
    load: float


def _steady_events() -> list[dict[str, Any]]:
    """STEADY_EVENTS usage events over the first STEADY_ACCOUNTS accounts (round robin), all at STEADY_AT:
    the last second of the accounts' day, so no account's event is older than its own and no tick falls."""
    return [_usage(f"steady-{i}", _account(i % STEADY_ACCOUNTS), STEADY_AT) for i in range(STEADY_EVENTS)]


async def _steady(conn: asyncpg.Connection, bus: KafkaBus, topics: Topics, worker: psutil.Process,
                  workers: Workers) -> Steady:
    """Publish the steady workload to the running (idle) worker; its rate from the first committed batch
    of it to the commit of its last event (committed positions polled every 50 ms)."""
    base = await _committed(conn)
    total = base + STEADY_EVENTS
    producing = asyncio.create_task(_produce(bus, topics, _steady_events()))
    deadline = time.monotonic() + 900
    try:
        first = base
        while first == base:
            workers.check(deadline, "the steady workload was not scored")
            await asyncio.sleep(0.02)
            first = await _committed(conn)
        t0, cpu0 = time.perf_counter(), cpu_seconds(worker)
        done = first
        while done < total:
            workers.check(deadline, f"the steady workload stopped at {done - base} of {STEADY_EVENTS}")
            await asyncio.sleep(0.05)
            done = await _committed(conn)
        elapsed, used = time.perf_counter() - t0, cpu_seconds(worker) - cpu0
        await producing
    finally:
        if not producing.done():
            producing.cancel()
    if done != total:
        raise RuntimeError(f"committed positions reach {done - base} of the {STEADY_EVENTS} steady events")
    events = total - first
    return Steady(rate=events / elapsed, per_cpu_second=events / used if used > 0 else 0.0, events=events,
                  cpu=used / elapsed, load=os.getloadavg()[0])


# ------------------------------------------------------------------------------------------------- sweep
@dataclass
class Sweep:
    seconds: float
    last_batch_s: float          # from publishing the ticks to the build of the last sweep batch
    cpu_per_account: float       # worker CPU-seconds per account
    cpu: float                   # share of one core
    postgres: float              # PostgreSQL's share of one core (all its backends)
    load: float
    hwm_before: int
    hwm_after: int
    rss_max: int                 # highest VmRSS sampled during the sweep
    latencies: list[float]       # of the live events published during the sweep
    live_sent: int
    polls: int
    due: int                     # accounts whose timer was at or before the midnight when the sweep began
    written: int                 # accounts (live ones aside) whose row the sweep wrote (evaluated)


class LiveTrickle:
    """LIVE_RATE usage events a second on the live accounts, each id's publish time kept; a poller notes
    when each id is seen committed in `scoring_processed_events`."""

    def __init__(self, publisher: KafkaPublisher, topics: Topics, accounts: list[str], start: datetime,
                 prefix: str) -> None:
        self._publisher = publisher
        self._topic = topics.usage
        self._accounts = accounts
        self._start = start        # event time of the first live event
        self._prefix = prefix      # of their ids
        self.sent: dict[str, float] = {}
        self.seen: dict[str, float] = {}
        self._stop = asyncio.Event()
        self._sends: set[asyncio.Task[None]] = set()

    async def produce(self) -> None:
        per_tick, interval = LIVE_RATE // 10, 0.1
        n = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            now = time.time()
            messages = []
            for _ in range(per_tick):
                account = self._accounts[n % len(self._accounts)]
                event_id = f"{self._prefix}{n}"
                at = self._start + timedelta(seconds=n % 3600)
                messages.append(OutMessage(self._topic, account.encode(),
                                           encode_input(_usage(event_id, account, at), datetime.now(UTC))))
                self.sent[event_id] = now
                n += 1
            task = asyncio.create_task(self._publisher.publish(messages))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)
            next_at += interval
            try:
                await asyncio.wait_for(self._stop.wait(), max(0.0, next_at - time.monotonic()))
            except TimeoutError:
                pass
        if self._sends:
            await asyncio.gather(*self._sends)

    async def poll(self, conn: asyncpg.Connection, until: asyncio.Event) -> None:
        while True:
            pending = [i for i in self.sent if i not in self.seen]
            if not pending and until.is_set():
                return
            asked = time.time()
            if pending:
                for (event_id,) in await conn.fetch(
                        "SELECT event_id FROM scoring_processed_events WHERE event_id = ANY($1::text[])",
                        pending):
                    self.seen[event_id] = asked
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()


async def _sweep(url: str, bus: KafkaBus, topics: Topics, worker: psutil.Process, accounts: int,
                 live_accounts: list[str], workers: Workers, midnight: datetime, tick_at: datetime,
                 name: str) -> Sweep:
    """Publish one event per partition at `tick_at` (past `midnight` plus the lateness) and the live
    trickle; time the sweep for that midnight and the live events' latency. The sweep is over once every
    partition's watermark has passed the midnight and no account's timer is at or before it."""
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    poll_conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    publisher = bus.publisher()
    await publisher.start()
    tasks: list[asyncio.Task[None]] = []
    try:
        due = await conn.fetchval("SELECT count(*) FROM scoring_accounts WHERE next_due <= $1", midnight)
        processed_before = await conn.fetchval("SELECT count(*) FROM scoring_processed_events")
        ticks = [OutMessage(topics.usage, a.encode(), encode_input(_usage(f"{name}-tick-{p}", a, tick_at),
                                                                   datetime.now(UTC)))
                 for p, a in enumerate(_tick_accounts())]
        hwm_before = _proc_status(worker.pid)["VmHWM"]
        live = LiveTrickle(publisher, topics, live_accounts, tick_at, f"{name}-live-")
        postgres = postgres_process()
        cpu0, postgres0 = cpu_seconds(worker), cpu_seconds(postgres)
        t0 = time.time()
        started = datetime.now(UTC)
        await publisher.publish(ticks)
        tasks.append(asyncio.create_task(live.produce()))
        done = asyncio.Event()
        tasks.append(asyncio.create_task(live.poll(poll_conn, done)))
        rss_max, polls = 0, 0
        deadline = time.monotonic() + 1800
        while True:
            workers.check(deadline, "the sweep did not finish")
            rss_max = max(rss_max, _proc_status(worker.pid)["VmRSS"])
            asked = time.time()
            passed = await conn.fetchval("SELECT count(*) FROM scoring_partitions WHERE watermark >= $1", midnight)
            left = await conn.fetchval("SELECT count(*) FROM scoring_accounts WHERE next_due <= $1", midnight)
            polls += 1
            if passed == PARTITIONS and left == 0:
                end = asked
                break
            # The count is a scan of the table: poll seldom while much is left, often near the end.
            done_per_s = (due - left) / (asked - t0)
            await asyncio.sleep(max(0.1, min(5.0, 0.5 * left / done_per_s if done_per_s > 0 else 1.0)))
        cpu = cpu_seconds(worker) - cpu0
        postgres_cpu = cpu_seconds(postgres) - postgres0
        live.stop()
        await tasks[0]
        done.set()
        await asyncio.wait_for(tasks[1], timeout=120)
        hwm_after = _proc_status(worker.pid)["VmHWM"]
        swept = ("account_id LIKE 'acct-%' AND NOT (account_id = ANY($1::text[])) AND updated_at >= $2")
        last_build = await conn.fetchval(f"SELECT max(updated_at) FROM scoring_accounts WHERE {swept}",
                                         live_accounts, started)
        written = await conn.fetchval(f"SELECT count(*) FROM scoring_accounts WHERE {swept}", live_accounts, started)
        ticked = await conn.fetchval("SELECT count(*) FROM scoring_accounts WHERE next_due > $1", midnight)
        if ticked < accounts:
            raise RuntimeError(f"only {ticked} of {accounts} accounts have their timer past {midnight}")
        processed = await conn.fetchval("SELECT count(*) FROM scoring_processed_events")
        expected = processed_before + PARTITIONS + len(live.sent)
        if processed != expected:
            raise RuntimeError(f"{processed} events processed, {expected} produced")
        during = [live.seen[i] - sent for i, sent in live.sent.items() if sent <= end]
        return Sweep(seconds=end - t0,
                     last_batch_s=last_build.timestamp() - t0 if last_build is not None else 0.0,
                     cpu_per_account=cpu / accounts, cpu=cpu / (end - t0), postgres=postgres_cpu / (end - t0),
                     load=os.getloadavg()[0], hwm_before=hwm_before, hwm_after=hwm_after, rss_max=rss_max,
                     latencies=during, live_sent=len(live.sent), polls=polls, due=due, written=written)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await publisher.stop()
        await poll_conn.close()
        await conn.close()


# ----------------------------------------------------------------------------------------------- loading
async def _load_rate(url: str, prefix: str, expected: int) -> tuple[float, float]:
    """Seconds a consumer takes to load every partition's states from the database, and accounts/s."""
    settings = Settings(database_url=url, topic_prefix=prefix, topic_partitions=PARTITIONS)
    model = build_model(settings)
    engine = create_engine(url)
    try:
        store = build_store(engine)
        registry = new_registry()
        topics = Topics(prefix)
        consumer = ScoringConsumer(bus=MemoryBus(PARTITIONS), store=store, model=model, topics=topics,
                                   options=ConsumerOptions(group_id="bench-load", partitions=PARTITIONS),
                                   metrics=ScoringMetrics(registry), common=CommonMetrics(registry, "scoring"))
        subscriber = MemoryBus(PARTITIONS).subscriber(topics.inputs, "bench-load", listener=consumer)
        started = time.perf_counter()
        await subscriber.start()  # assignment: the consumer loads every partition's accounts and timers
        elapsed = time.perf_counter() - started
        loaded = consumer.tracked_accounts
        await subscriber.stop()
        if loaded != expected:
            raise RuntimeError(f"loaded {loaded} accounts, {expected} expected")
        return elapsed, loaded / elapsed
    finally:
        await engine.dispose()


# ------------------------------------------------------------------------------------------------- sizes
@dataclass
class SizeRun:
    accounts: int
    raw: float
    produce_s: float
    catch_up: CatchUp
    steady_rss: int
    hwm_catch_up: int
    sweep: Sweep                    # the midnight after the accounts' day: their ticks are quiet
    scored: Sweep                   # three weeks later: every account scored for the first time
    steady: Steady | None = None    # the same workload at every size, after the catch-up
    load: tuple[float, float] | None = None
    chunk: int | None = None        # CHURNSIGNAL_SCORING_SWEEP_CHUNK, when not the default


async def _raw_rate(ctx: Context, topics: Topics, total: int) -> float:
    # bench.scoring's raw consumer reads partitions 0..PARTITIONS-1 of its own topics (6): here 12.
    with mock.patch.object(scoring_bench, "PARTITIONS", PARTITIONS):
        return await scoring_bench._raw_consume(ctx.kafka_bootstrap_servers, topics.inputs, total)


async def _run_size(ctx: Context, accounts: int, *, load: bool, log: Path, chunk: int | None = None,
                    scale_out_too: bool = False) -> tuple[SizeRun, dict[int, CatchUp]]:
    """One size: produce, raw read, (scale-out,) catch-up and sweep; its topics are deleted after."""
    name = f"n{accounts}" if chunk is None else f"n{accounts}c{chunk}"
    prefix = f"{ctx.topic_prefix('scale')}{name}."
    topics = Topics(prefix)
    bus = KafkaBus(ctx.kafka_bootstrap_servers)
    await bus.ensure_topics(topics.all, partitions=PARTITIONS, configs=topics.configs)
    print(f"[scale] {accounts:,} accounts: producing ...", flush=True)
    produce_s = await _produce_accounts(bus, topics, accounts)
    raw = await _raw_rate(ctx, topics, accounts)
    scale_out: dict[int, CatchUp] = {}
    if scale_out_too:
        # Before the sweep's events: the topics hold the catch-up workload alone.
        for count in SCALE_OUT_WORKERS:
            if count != 1:
                print(f"[scale] scale-out: {count} workers ...", flush=True)
                scale_out[count] = await _scale_out(ctx, prefix, topics, count, log)
    db_name = f"bench_{ctx.run_id}_scale{name}"
    url = await _create_database(ctx.test_database_url, db_name)
    env = {} if chunk is None else {"CHURNSIGNAL_SCORING_SWEEP_CHUNK": str(chunk)}
    workers = Workers(f"bench-scale-{uuid.uuid4().hex[:6]}", log, env)
    admin = AIOKafkaAdminClient(bootstrap_servers=ctx.kafka_bootstrap_servers)
    await admin.start()
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await workers.start(ctx, prefix, url, 1)
        print(f"[scale] {accounts:,} accounts: catch-up ({produce_s:.0f}s to produce) ...", flush=True)
        caught = await _catch_up(conn, admin, workers, topics.usage, accounts)
        (worker,) = workers.procs
        await asyncio.sleep(3.0)   # idle: the last commits and Kafka offsets land
        status = _proc_status(worker.pid)
        stored = await conn.fetchval("SELECT count(*) FROM scoring_accounts")
        if stored != accounts:
            raise RuntimeError(f"{stored} accounts stored after the catch-up, {accounts} expected")
        steady = None
        if chunk is None:
            print(f"[scale] {accounts:,} accounts: the steady workload ({STEADY_EVENTS:,} events to "
                  f"{STEADY_ACCOUNTS:,} accounts) ...", flush=True)
            steady = await _steady(conn, bus, topics, worker, workers)
        live = _live_accounts(accounts)
        print(f"[scale] {accounts:,} accounts: sweep ...", flush=True)
        swept = await _sweep(url, bus, topics, worker, accounts, live, workers, MIDNIGHT, TICK_AT, "daily")
        print(f"[scale] {accounts:,} accounts: sweep {swept.seconds:.1f}s ({swept.due:,} due); the sweep of "
              "first scores ...", flush=True)
        scored = await _sweep(url, bus, topics, worker, accounts, live, workers, SCORED, SCORED_TICK_AT, "scored")
        await workers.stop()
        loaded = await _load_rate(url, prefix, accounts + PARTITIONS) if load else None
        run = SizeRun(accounts, raw, produce_s, caught, status["VmRSS"], status["VmHWM"], swept, scored, steady,
                      loaded, chunk)
        print(f"[scale] {accounts:,} accounts: {caught.rate:,.0f} events/s, sweep {swept.seconds:.1f}s, sweep of "
              f"first scores {scored.seconds:.1f}s, peak RSS {scored.hwm_after / MIB:,.0f} MiB", flush=True)
        if scale_out:
            scale_out[1] = caught
        return run, scale_out
    finally:
        await workers.stop()
        await conn.close()
        await admin.close()
        await _drop_database(ctx.test_database_url, db_name)
        await ctx.delete_topics(prefix)


async def _scale_out(ctx: Context, prefix: str, topics: Topics, count: int, log: Path) -> CatchUp:
    db_name = f"bench_{ctx.run_id}_scaleout{count}"
    url = await _create_database(ctx.test_database_url, db_name)
    workers = Workers(f"bench-scaleout-{uuid.uuid4().hex[:6]}", log)
    admin = AIOKafkaAdminClient(bootstrap_servers=ctx.kafka_bootstrap_servers)
    await admin.start()
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await workers.start(ctx, prefix, url, count)
        return await _catch_up(conn, admin, workers, topics.usage, SCALE_OUT_ACCOUNTS)
    finally:
        await workers.stop()
        await conn.close()
        await admin.close()
        await _drop_database(ctx.test_database_url, db_name)


# ------------------------------------------------------------------------------------------------ report
def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _domain() -> str:
    """Which scoring domain the workers import: mypyc-compiled or the Python source (and why)."""
    from services.scoring.domain import native

    return "compiled (mypyc)" if native.COMPILED else f"Python source ({native.REASON})"


def _size_results(run: SizeRun) -> list[Result]:
    n, c, s, f = run.accounts, run.catch_up, run.sweep, run.scored
    label = f"{n:,} accounts"
    at_1m = n >= 1_000_000
    return [
        Result(f"catch-up throughput, 1 worker, {label}", c.rate, "events/s", baseline=run.raw,
               baseline_name="raw aiokafka consumer, same records",
               notes=f"{c.events:,} events measured from the first committed batch; {c.per_cpu_second:,.0f} "
                     f"events per CPU-second of the worker; CPU over the window: worker {c.cpu:.0%}, PostgreSQL "
                     f"{c.postgres:.0%}, broker {c.broker:.0%} of one core; {n:,} events produced in "
                     f"{run.produce_s:.0f}s; load average {c.load:.1f}"),
        Result(f"worker peak RSS (VmHWM over the run), {label}", f.hwm_after / MIB, "MiB",
               target=Target(at_most=2048) if at_1m else None,
               notes=f"steady RSS after the catch-up {run.steady_rss / MIB:,.0f} MiB; VmHWM "
                     f"{run.hwm_catch_up / MIB:,.0f} MiB before the sweeps, {s.hwm_after / MIB:,.0f} MiB after the "
                     f"daily one, {f.hwm_after / MIB:,.0f} MiB after the first scores (highest VmRSS sampled "
                     f"during them {max(s.rss_max, f.rss_max) / MIB:,.0f} MiB)"),
        Result(f"daily sweep: the midnight after every account's day, {label}", s.seconds, "s",
               target=Target(at_most=10) if at_1m else None,
               notes=f"{s.due:,} of {n:,} accounts had their timer at that midnight ({n - s.due:,} skipped it: "
                     f"their ticks are quiet until day 21), {s.written:,} rows written; "
                     f"{s.cpu_per_account * 1e6:,.1f} µs of worker CPU per account; CPU over the sweep: worker "
                     f"{s.cpu:.0%}, PostgreSQL {s.postgres:.0%} of one core; {s.polls} polls; load average "
                     f"{s.load:.1f}"),
        _latency(s, f"live event latency p99 during the daily sweep, {label}"),
        Result(f"sweep of first scores: every account's tick evaluated (day 21), {label}", f.seconds, "s",
               notes=f"{f.due:,} accounts due, {f.written:,} rows written (each with a first snapshot); "
                     f"{n / f.seconds:,.0f} accounts/s; {f.cpu_per_account * 1e6:,.0f} µs of worker CPU per "
                     f"account; CPU over the sweep: worker {f.cpu:.0%}, PostgreSQL {f.postgres:.0%} of one core; "
                     f"the last sweep batch was built {f.last_batch_s:.1f}s after the ticks were published "
                     f"(its `updated_at`); {f.polls} polls; load average {f.load:.1f}"),
        _latency(f, f"live event latency p99 during the sweep of first scores, {label}"),
    ]


def _latency(sweep: Sweep, name: str) -> Result:
    lat = sweep.latencies
    return Result(name, _percentile(lat, 0.99) * 1000, "ms", target=Target(at_most=1000),
                  notes=f"{len(lat):,} live events published during the sweep ({LIVE_RATE}/s); p50 "
                        f"{_percentile(lat, 0.5) * 1000:,.0f} ms, max {max(lat, default=float('nan')) * 1000:,.0f} ms")


async def run(ctx: Context) -> list[Result]:
    if not ctx.test_database_url:
        raise SystemExit("CHURNSIGNAL_TEST_DATABASE_URL is not set (run `make services`)")
    sizes = [n for n in SIZES if not (n >= 1_000_000 and (ctx.quick or not RUN_1M))]
    largest = max(sizes)
    log = ROOT / "var" / "bench-scale-worker.log"
    domain = _domain()
    runs: list[SizeRun] = []
    variant: SizeRun | None = None
    scale_out: dict[int, CatchUp] = {}
    try:
        for n in sizes:
            size_run, outs = await _run_size(ctx, n, load=n == largest, log=log,
                                             scale_out_too=n == SCALE_OUT_ACCOUNTS)
            runs.append(size_run)
            scale_out.update(outs)
        if SMALL_CHUNK_ACCOUNTS in sizes:
            print(f"[scale] sweep chunks of {SMALL_CHUNK}:", flush=True)
            variant, _ = await _run_size(ctx, SMALL_CHUNK_ACCOUNTS, load=False, log=log, chunk=SMALL_CHUNK)
    finally:
        await ctx.delete_topics(ctx.topic_prefix("scale"))
    if _domain() != domain:
        raise RuntimeError(f"the scoring domain changed during the run: {domain}, then {_domain()}")
    results: list[Result] = []
    for size_run in runs:
        results += _size_results(size_run)
    results[0].notes += f"; scoring domain: {domain}"
    if variant is not None:
        default = next(r for r in runs if r.accounts == variant.accounts)
        scored = variant.scored
        result = _latency(scored, f"live event latency p99 during the sweep of first scores, {variant.accounts:,} "
                                  f"accounts, `CHURNSIGNAL_SCORING_SWEEP_CHUNK={SMALL_CHUNK}`")
        result.notes += (f"; that sweep took {scored.seconds:.1f}s ({scored.cpu_per_account * 1e6:,.0f} µs of CPU per "
                         f"account), {default.scored.seconds:.1f}s with the default 500")
        results.append(result)
    first, last = runs[0], runs[-1]
    steady = _steady_results(runs)
    results += steady
    flat = _flatness(last)
    if flat is not None:
        results.append(flat)
    results.append(Result(f"catch-up throughput at {last.accounts:,} accounts vs {first.accounts:,}",
                          last.catch_up.rate, "events/s", baseline=first.catch_up.rate,
                          baseline_name=f"{first.accounts:,} accounts (separate run)",
                          target=None if flat is not None or steady else Target(min_ratio=0.8),
                          notes=f"events per CPU-second {last.catch_up.per_cpu_second:,.0f} vs "
                                f"{first.catch_up.per_cpu_second:,.0f} "
                                f"({last.catch_up.per_cpu_second / first.catch_up.per_cpu_second:.0%}); at "
                                f"{first.accounts:,} accounts the window is {first.catch_up.events:,} events"
                                + "".join(f"; {r.accounts:,} accounts: {r.catch_up.rate:,.0f} events/s, "
                                          f"{last.catch_up.rate / r.catch_up.rate:.0%} of it"
                                          for r in runs[1:-1])))
    extra = last.accounts - first.accounts
    results.append(Result(f"worker memory per account, {first.accounts:,} → {last.accounts:,} accounts",
                          (last.steady_rss - first.steady_rss) / extra, "bytes",
                          notes=f"steady RSS growth per added account; peak (VmHWM) growth "
                                f"{(last.sweep.hwm_after - first.sweep.hwm_after) / extra:,.0f} bytes per account; "
                                f"steady RSS at {first.accounts:,} accounts {first.steady_rss / MIB:,.0f} MiB (the "
                                "process, its libraries and bounded buffers); one usage event per account, "
                                "so small states (see the scoring section for realistic ones)"))
    if last.load is not None:
        seconds, per_second = last.load
        results.append(Result(f"rebalance cost: states loaded at assignment ({last.accounts + PARTITIONS:,} "
                              f"accounts, {PARTITIONS} partitions)", per_second, "accounts/s",
                              notes=f"{seconds:.1f}s to load them all (states, timers, positions) before "
                                    "scoring again"))
    results += _scale_out_results(scale_out)
    return results


def _steady_results(runs: list[SizeRun]) -> list[Result]:
    """The steady workload's rate at each larger size against the smallest's: the same events to the same
    accounts, only the number of accounts tracked differs."""
    measured = [r for r in runs if r.steady is not None]
    if len(measured) < 2:
        return []
    base = measured[0]
    assert base.steady is not None
    out = []
    for r in measured[1:]:
        assert r.steady is not None
        st, b = r.steady, base.steady
        out.append(Result(
            f"steady throughput, the same {STEADY_EVENTS:,} events to {STEADY_ACCOUNTS:,} accounts, with "
            f"{r.accounts:,} accounts tracked vs {base.accounts:,}", st.rate, "events/s", baseline=b.rate,
            baseline_name=f"{base.accounts:,} accounts tracked", target=Target(min_ratio=0.8),
            notes=f"{st.events:,} events from the first committed batch of them; events per CPU-second of the "
                  f"worker {st.per_cpu_second:,.0f} vs {b.per_cpu_second:,.0f} "
                  f"({st.per_cpu_second / b.per_cpu_second:.0%}); worker CPU {st.cpu:.0%} vs {b.cpu:.0%} of one "
                  f"core; load average {st.load:.1f} vs {b.load:.1f}"))
    return out


def _flatness(run: SizeRun) -> Result | None:
    """The largest run's catch-up, its last FLAT_WINDOW events (every account but those tracked) against its
    first FLAT_WINDOW (from the first committed batch): the same workload in the same process, only the
    number of tracked accounts differs. None when the run is too small to tell."""
    c, n = run.catch_up, run.accounts
    lo = c.samples[0][1]
    if n - lo < 4 * FLAT_WINDOW:
        return None
    early, early_cpu = c.window(lo, lo + FLAT_WINDOW)
    late, late_cpu = c.window(n - FLAT_WINDOW, n)
    return Result(f"catch-up throughput with {n - FLAT_WINDOW:,}-{n:,} accounts tracked vs {lo:,}-"
                  f"{lo + FLAT_WINDOW:,}, same run", late, "events/s", baseline=early,
                  baseline_name=f"{lo:,}-{lo + FLAT_WINDOW:,} accounts tracked", target=Target(min_ratio=0.8),
                  notes=f"the {n:,}-account catch-up (one new account per event), its last {FLAT_WINDOW:,} events "
                        f"against its first {FLAT_WINDOW:,} after the first committed batch, from the committed "
                        f"positions polled every 50 ms; events per CPU-second of the worker {late_cpu:,.0f} vs "
                        f"{early_cpu:,.0f} ({late_cpu / early_cpu:.0%})")


def _scale_out_results(scale_out: dict[int, CatchUp]) -> list[Result]:
    single = scale_out.get(1)
    if single is None:
        return []
    cores = len(os.sched_getaffinity(0))
    results = []
    for count, caught in sorted(scale_out.items()):
        members = "; ".join(",".join(map(str, parts)) for parts in caught.assignment)
        results.append(Result(
            f"scale-out: {count} worker process{'es' if count > 1 else ''} in one group, {PARTITIONS} "
            f"partitions ({SCALE_OUT_ACCOUNTS:,} accounts)", caught.rate, "events/s", baseline=single.rate,
            baseline_name="1 worker process",
            notes=f"partitions of each member: {members}; {caught.per_cpu_second:,.0f} events per CPU-second of "
                  f"the workers ({caught.per_cpu_second / single.per_cpu_second:.0%} of one process's: the "
                  f"per-process efficiency); aggregate rate per process {caught.rate / (count * single.rate):.0%}"
                  f" of one process's, per core used {caught.rate / (min(count, cores) * single.rate):.0%} "
                  f"({cores} cores); CPU: workers {caught.cpu:.0%}, PostgreSQL {caught.postgres:.0%}, broker "
                  f"{caught.broker:.0%} of one core; {caught.events:,} events measured once the group was "
                  f"stable; load average {caught.load:.1f}"))
    return results


def main() -> int:
    """Standalone: `python -m bench.scale` (the harness is `python -m bench --only scale`)."""
    from bench.framework import summary_line

    for result in asyncio.run(run(Context.from_environment())):
        print(summary_line(result))
        if result.notes:
            print(f"    {result.notes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
