"""Ingest benchmark: HTTP → Kafka through the real service, next to a raw aiokafka producer.

Measured in one run, each on a fresh topic prefix of the real broker:
- the raw producer (the baseline): one aiokafka producer (idempotent, acks=all, the service's
  settings) in this process sends the very record values and keys ingest would write, with `send()`
  per message, either 500 per batch with 8 batches in flight, or one message per send with 64 in
  flight; measured before and after the service, the better run being the baseline;
- the service's publisher alone (`KafkaPublisher`, no HTTP), 500-event calls, 8 in flight;
- ingest over HTTP, as `churnsignal serve ingest` runs it (one uvicorn process) and with two worker
  processes (`uvicorn --factory services.ingest.bootstrap:app_from_environment --workers 2`), fed by
  `bench/loadgen.py` in its own process: JSON arrays of 500 events (8 in flight), then one event per
  request (64 connections);
- Segment's `/v1/batch` on the one-process server: the usage events of the mix as the `track` calls that map
  to them (Segment's Python library's message shape, 500 per request, Basic auth), beside `/v1/events` with
  the very same usage events as envelopes, the two alternated twice and the better run of each counted (the
  ratio of the two is the cost of the Segment mapping).
Only acknowledged events count (HTTP 202, or 200 for Segment; producer ack), and afterwards the topics must
hold at least every event that was acknowledged.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as KafkaTP

from bench.framework import ROOT, Context, Result, Target, broker_process, cpu_seconds, fmt_number
from bench.loadgen import write_bodies
from shared.bus.kafka import KafkaBus
from shared.bus.port import OutMessage
from shared.codec import encode_input
from shared.settings import hash_key
from shared.topics import Topics
from tests.support.ports import free_port

TITLE = "Ingest (HTTP → Kafka)"
NOTES = """Method: the server runs in a subprocess and is driven by `bench/loadgen.py` (raw asyncio HTTP/1.1
keep-alive client) in another; the raw baseline is one aiokafka producer (idempotent, `acks=all`,
`send()` per message) in the harness, writing the same record values and keys. Server, load
generator, broker and baseline share the machine's cores (and, on a shared machine, with whatever
else runs), so each figure's note gives the CPU each process used (share of one core, over the
measuring window) and the ingest CPU time per event or request: the throughput one ingest core
sustains is about 1 / that figure, and it varies less between runs than the rates do.

What limits it (profiled with pyinstrument and cProfile under this load):
- Batch ingest is CPU-bound in the ingest process, at 25–30 µs per event: validation (one pydantic
  pass over the whole request, building the event models) is about half of it, JSON decoding and
  record encoding (orjson) about a tenth, publishing about a tenth (the publisher alone sustains
  100,000+ events/s: it builds one record batch per partition for all requests in flight, where the
  raw producer's `send()` costs a coroutine and a future per message), the rest HTTP and asyncio.
  Python's cyclic garbage collector took a third of the CPU until the serving process froze its
  start-up objects (`gc.freeze()`) and requests released their decoded events before awaiting Kafka.
- Single-event ingest is bound by per-request overhead, 290–370 µs of CPU per request: uvicorn's
  HTTP handling and its two socket writes per response (about a quarter), an asyncio task per
  request, the handler itself (~100 µs: key check, parse, validation, metrics) and a Kafka flush
  shared by all requests that arrived meanwhile. One process therefore tops out near 3,400
  requests/s (2,600 in earlier runs on a busier machine); a second worker process adds what the other
  core can spare.
- `churnsignal serve ingest` runs one process. More throughput on one host comes from worker
  processes (`uvicorn --factory services.ingest.bootstrap:app_from_environment --workers N`) or
  more replicas behind a load balancer; ingest keeps no state, so they scale out as they are."""

BATCH_EVENTS = 500
BATCH_IN_FLIGHT = 8
SINGLE_CONNECTIONS = 64
PARTITIONS = 6
BENCH_KEY = "bench-ingest-key"
_FEATURES = ("login", "report.export", "dashboard.view", "api.call", "invite.sent", "search")
Records = list[tuple[str, bytes, bytes]]


def _event(run_id: str, i: int, now: datetime) -> dict[str, Any]:
    """A realistic mix: mostly usage, some tickets, sentiment and account updates."""
    account = f"acct-{i % 5000:05d}"
    base: dict[str, Any] = {"id": f"{run_id}-{i}", "account_id": account,
                            "occurred_at": (now - timedelta(milliseconds=i)).isoformat()}
    slot = i % 100
    if slot < 85:
        return {**base, "type": "usage", "data": {"feature": _FEATURES[i % len(_FEATURES)],
                                                  "user_id": f"user-{i % 40}", "count": 1 + i % 3}}
    if slot < 93:
        return {**base, "type": "ticket", "data": {"ticket_id": f"T-{i}", "status": "opened",
                                                   "priority": "high", "subject": "Export is failing"}}
    if slot < 97:
        return {**base, "type": "sentiment", "data": {"source": "nps", "score": i % 11,
                                                      "contact_id": f"c-{i % 7}"}}
    return {**base, "type": "account", "data": {"name": f"Account {account}", "arr": 24000.0, "seats": 40,
                                                "segment": "mid-market"}}


def _events(run_id: str, count: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [_event(run_id, i, now) for i in range(count)]


def _segment_track(usage: dict[str, Any]) -> dict[str, Any]:
    """The Segment `track` call that maps to a usage event, as Segment's Python library sends it."""
    return {"type": "track", "messageId": usage["id"], "userId": usage["data"]["user_id"],
            "event": usage["data"]["feature"], "properties": {"count": usage["data"]["count"]},
            "timestamp": usage["occurred_at"], "integrations": {},
            "context": {"library": {"name": "analytics-python", "version": "2.4.0"},
                        "groupId": usage["account_id"]}}


def _segment_bodies(usage: list[dict[str, Any]]) -> tuple[list[bytes], list[bytes]]:
    """The same usage events, BATCH_EVENTS per request: as `/v1/events` envelopes (each with the id the
    Segment mapping gives its twin), and as Segment `/v1/batch` bodies of `track` calls."""
    envelopes = [{**e, "id": f"segment:{e['id']}"} for e in usage]
    chunks = range(0, len(usage) - len(usage) % BATCH_EVENTS, BATCH_EVENTS)
    native = [orjson.dumps(envelopes[i:i + BATCH_EVENTS]) for i in chunks]
    segment = [orjson.dumps({"batch": [_segment_track(e) for e in usage[i:i + BATCH_EVENTS]],
                             "sentAt": datetime.now(UTC).isoformat()}) for i in chunks]
    return native, segment


# ------------------------------------------------------------------------------------ raw producer
def _producer(bootstrap: str) -> AIOKafkaProducer:
    # The same producer settings as the service's publisher (shared.bus.kafka.KafkaPublisher).
    return AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=1,
                            max_batch_size=256 * 1024, request_timeout_ms=10_000)


async def _warm_up(producer: AIOKafkaProducer, records: Records) -> None:
    """Metadata, connections and partition leaders settled before the clock starts."""
    await asyncio.gather(*[await producer.send(t, v, key=k) for t, k, v in records[:2000]])


async def _timed_lanes(lanes: int, seconds: float, step: Any) -> float:
    """Run `step(lane, i)` (returns messages acknowledged) in `lanes` concurrent loops; rate per second."""
    stop_at = time.perf_counter() + seconds
    done = 0

    async def lane(n: int) -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < stop_at:
            acknowledged = await step(n, i)  # not `done += await ...`: that reads `done` before awaiting
            done += acknowledged
            i += 1

    started = time.perf_counter()
    await asyncio.gather(*(lane(n) for n in range(lanes)))
    return done / (time.perf_counter() - started)


async def _raw_batches(bootstrap: str, records: Records, seconds: float) -> float:
    producer = _producer(bootstrap)
    await producer.start()
    try:
        await _warm_up(producer, records)

        async def step(lane: int, i: int) -> int:
            start = (i * BATCH_IN_FLIGHT + lane) * BATCH_EVENTS
            chunk = [records[(start + j) % len(records)] for j in range(BATCH_EVENTS)]
            await asyncio.gather(*[await producer.send(t, v, key=k) for t, k, v in chunk])
            return len(chunk)

        return await _timed_lanes(BATCH_IN_FLIGHT, seconds, step)
    finally:
        await producer.stop()


async def _raw_single(bootstrap: str, records: Records, seconds: float) -> float:
    producer = _producer(bootstrap)
    await producer.start()
    try:
        await _warm_up(producer, records)

        async def step(lane: int, i: int) -> int:
            topic, key, value = records[(i * SINGLE_CONNECTIONS + lane) % len(records)]
            await (await producer.send(topic, value, key=key))
            return 1

        return await _timed_lanes(SINGLE_CONNECTIONS, seconds, step)
    finally:
        await producer.stop()


async def _publisher_alone(bootstrap: str, records: Records, seconds: float) -> float:
    publisher = KafkaBus(bootstrap).publisher()
    await publisher.start()
    try:
        messages = [OutMessage(t, k, v) for t, k, v in records]
        await publisher.publish(messages[:2000])

        async def step(lane: int, i: int) -> int:
            start = ((i * BATCH_IN_FLIGHT + lane) * BATCH_EVENTS) % len(messages)
            chunk = messages[start:start + BATCH_EVENTS]
            await publisher.publish(chunk)
            return len(chunk)

        return await _timed_lanes(BATCH_IN_FLIGHT, seconds, step)
    finally:
        await publisher.stop()


# -------------------------------------------------------------------------------------- the server
@contextmanager
def _ingest_server(ctx: Context, prefix: str, workers: int,
                   log: Path) -> Iterator[tuple[int, psutil.Process]]:
    port = free_port()
    env = {**os.environ,
           "CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS": ctx.kafka_bootstrap_servers,
           "CHURNSIGNAL_TOPIC_PREFIX": prefix,
           "CHURNSIGNAL_API_KEYS": json.dumps([{"name": "bench", "sha256": hash_key(BENCH_KEY),
                                                "scopes": ["ingest"]}]),
           "CHURNSIGNAL_LOG_LEVEL": "warning"}
    if workers == 1:
        cmd = [ctx.python, "-m", "services.cli", "serve", "ingest", "--host", "127.0.0.1",
               "--port", str(port)]
    else:
        cmd = [ctx.python, "-m", "uvicorn", "--factory", "services.ingest.bootstrap:app_from_environment",
               "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
               "--log-level", "warning", "--no-access-log"]
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ingest exited with {proc.returncode}; see {log}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"ingest not ready within 60s; see {log}")
            time.sleep(0.2)
        time.sleep(1.0 if workers > 1 else 0.0)  # every worker up, not just the first to answer
        yield port, psutil.Process(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class _Run:
    report: dict[str, Any]
    cpu: dict[str, float]  # share of one core over the window, by process
    server_cpu_seconds: float

    def ok(self, status: str = "202") -> int:
        return int(self.report["statuses"].get(status, 0))


async def _drive(ctx: Context, port: int, server: psutil.Process, bodies: list[bytes], connections: int,
                 warmup: float, window: float, workdir: Path, path: str = "/v1/events",
                 authorization: str = f"Bearer {BENCH_KEY}") -> _Run:
    """Run the load generator against the server; its report and who used how much CPU meanwhile."""
    body_file = workdir / f"bodies-{port}-{connections}-{path.strip('/').replace('/', '-')}"
    write_bodies(body_file, bodies)
    cmd = [ctx.python, "-m", "bench.loadgen", "--port", str(port), "--bodies", str(body_file),
           "--concurrency", str(connections), "--warmup", str(warmup), "--duration", str(window),
           "--path", path, "--header", f"Authorization: {authorization}",
           "--header", "Content-Type: application/json"]
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    loadgen, broker = psutil.Process(proc.pid), broker_process()
    await asyncio.sleep(0.2 + warmup)
    before = (cpu_seconds(server), cpu_seconds(loadgen), cpu_seconds(broker), time.perf_counter())
    await asyncio.sleep(window)
    after = (cpu_seconds(server), cpu_seconds(loadgen), cpu_seconds(broker), time.perf_counter())
    stdout, _ = await asyncio.wait_for(proc.communicate(), timeout=window + warmup + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed with {proc.returncode}")
    elapsed = after[3] - before[3]
    names = ("ingest", "loadgen", "broker")
    shares = {name: (after[i] - before[i]) / elapsed for i, name in enumerate(names)}
    return _Run(json.loads(stdout), shares, after[0] - before[0])


async def _records_on(bootstrap: str, topics: tuple[str, ...]) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([KafkaTP(t, p) for t in topics for p in range(PARTITIONS)])
        return sum(ends.values())
    finally:
        await consumer.stop()


def _notes(run: _Run, per: str, units: int, ok: str = "202") -> str:
    cpu = ", ".join(f"{name} {share:.0%}" for name, share in run.cpu.items())
    cost = run.server_cpu_seconds / units * 1e6 if units else 0.0
    others = {k: v for k, v in run.report["statuses"].items() if k != ok}
    extra = f"; answers other than {ok}: {others}" if others else ""
    return (f"p50 {run.report['p50_ms']:.1f} ms, p99 {run.report['p99_ms']:.1f} ms per request; "
            f"CPU: {cpu}; ingest CPU {fmt_number(cost)} µs per {per}{extra}")


async def run(ctx: Context) -> list[Result]:
    try:
        return await _measure(ctx)
    finally:
        await ctx.delete_topics(ctx.topic_prefix("ingest"))


async def _measure(ctx: Context) -> list[Result]:
    window = ctx.seconds(10.0)
    warmup = 1.0 if ctx.quick else 2.0
    bus = KafkaBus(ctx.kafka_bootstrap_servers)
    raw_prefix = ctx.topic_prefix("ingest") + "raw."
    await bus.ensure_topics(Topics(raw_prefix).all, partitions=PARTITIONS)

    events = _events(ctx.run_id, 20 * BATCH_EVENTS)
    received = datetime.now(UTC)
    raw_topics = Topics(raw_prefix)
    records = [(raw_topics.for_event(e["type"]), e["account_id"].encode(), encode_input(e, received))
               for e in events]
    bootstrap = ctx.kafka_bootstrap_servers
    # The raw baselines run before and after the service (the machine is shared; the better of the two
    # counts, so the ratio is never flattered by a slow moment of the baseline).
    raw_batch_runs = [await _raw_batches(bootstrap, records, window)]
    raw_single_runs = [await _raw_single(bootstrap, records, window)]
    publisher_alone = await _publisher_alone(bootstrap, records, window)

    batch_bodies = [orjson.dumps(events[i:i + BATCH_EVENTS]) for i in range(0, len(events), BATCH_EVENTS)]
    single_bodies = [orjson.dumps(e) for e in events[:2000]]
    usage_bodies, segment_bodies = _segment_bodies([e for e in events if e["type"] == "usage"])
    segment_auth = "Basic " + base64.b64encode(f"{BENCH_KEY}:".encode()).decode()
    segment_runs: tuple[_Run, _Run] | None = None
    log = ROOT / "var" / "bench-ingest-server.log"
    log.parent.mkdir(exist_ok=True)
    log.write_bytes(b"")
    runs: list[tuple[str, _Run, _Run]] = []
    for workers, label in ((1, "`churnsignal serve ingest`, 1 process"), (2, "2 uvicorn workers")):
        prefix = ctx.topic_prefix("ingest") + f"w{workers}."
        await bus.ensure_topics(Topics(prefix).all, partitions=PARTITIONS)
        with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp, \
                _ingest_server(ctx, prefix, workers, log) as (port, server):
            batch = await _drive(ctx, port, server, batch_bodies, BATCH_IN_FLIGHT, warmup, window, Path(tmp))
            single = await _drive(ctx, port, server, single_bodies, SINGLE_CONNECTIONS, warmup, window,
                                  Path(tmp))
            if workers == 1:  # Segment's /v1/batch beside /v1/events, the same usage events, alternated twice
                pairs = []
                for _ in range(2):
                    usage_run = await _drive(ctx, port, server, usage_bodies, BATCH_IN_FLIGHT, warmup, window,
                                             Path(tmp))
                    segment_run = await _drive(ctx, port, server, segment_bodies, BATCH_IN_FLIGHT, warmup, window,
                                               Path(tmp), path="/v1/batch", authorization=segment_auth)
                    pairs.append((usage_run, segment_run))
                accepted_segment = sum(u.ok() + s.ok("200") for u, s in pairs) * BATCH_EVENTS
                # the better run of each counts (the machine is shared: a slow moment flatters neither)
                segment_runs = (max((u for u, _ in pairs), key=lambda r: r.ok()),
                                max((s for _, s in pairs), key=lambda r: r.ok("200")))
        accepted = batch.ok() * BATCH_EVENTS + single.ok()
        if workers == 1 and segment_runs is not None:
            accepted += accepted_segment
        stored = await _records_on(bootstrap, Topics(prefix).inputs)
        if stored < accepted:
            raise RuntimeError(f"{stored} records on the topics for {accepted} acknowledged events")
        for r in (batch, single):
            if set(r.report["statuses"]) - {"202"}:
                print(f"[bench] ingest answered other than 202: {r.report['statuses']}", file=sys.stderr)
        if workers == 1 and segment_runs is not None and set(segment_runs[1].report["statuses"]) - {"200"}:
            print(f"[bench] /v1/batch answered other than 200: {segment_runs[1].report['statuses']}",
                  file=sys.stderr)
        runs.append((label, batch, single))
    raw_batch_runs.append(await _raw_batches(bootstrap, records, window))
    raw_single_runs.append(await _raw_single(bootstrap, records, window))

    raw_batch, raw_single = max(raw_batch_runs), max(raw_single_runs)
    both = "raw producer measured before and after the service: {} (the better one is the baseline)"
    results = [Result("ingest's publisher alone, no HTTP (500-event calls, 8 in flight)", publisher_alone,
                      "events/s", baseline=raw_batch, baseline_name="raw producer, 500-message batches",
                      notes="the Kafka side of ingest: coalesced record batches (see shared/bus/kafka.py)")]
    for label, batch, single in runs:
        results.append(Result(
            f"batch ingest, {label} ({BATCH_EVENTS} events/request, {BATCH_IN_FLIGHT} in flight)",
            batch.ok() * BATCH_EVENTS / window, "events/s", baseline=raw_batch,
            baseline_name="raw producer, 500-message batches", target=Target(at_least=30_000, min_ratio=0.40),
            notes=_notes(batch, "event", batch.ok() * BATCH_EVENTS) + "; "
            + both.format(" and ".join(fmt_number(r) for r in raw_batch_runs))))
        results.append(Result(
            f"single-event ingest, {label} ({SINGLE_CONNECTIONS} connections)", single.ok() / window,
            "requests/s", baseline=raw_single, baseline_name="raw producer, one message per awaited send",
            target=Target(at_least=3_000), notes=_notes(single, "request", single.ok()) + "; "
            + both.format(" and ".join(fmt_number(r) for r in raw_single_runs))))
    if segment_runs is not None:
        usage_run, segment_run = segment_runs
        usage_rate = usage_run.ok() * BATCH_EVENTS / window
        results.append(Result(
            f"Segment batch ingest, `/v1/batch` ({BATCH_EVENTS} track calls/request, {BATCH_IN_FLIGHT} in flight)",
            segment_run.ok("200") * BATCH_EVENTS / window, "events/s", baseline=usage_rate,
            baseline_name=f"`/v1/events`, the same {BATCH_EVENTS} usage events per request",
            target=Target(min_ratio=0.70),
            notes=_notes(segment_run, "event", segment_run.ok("200") * BATCH_EVENTS, ok="200")
            + f"; `/v1/events` with the same events: {fmt_number(usage_rate)} events/s, "
            + _notes(usage_run, "event", usage_run.ok() * BATCH_EVENTS)))
    return results
