"""End-to-end alert latency: ingest's 202 -> scoring -> risks topic -> alerts -> Slack, at 2,000 events/s.

`churnsignal serve ingest|scoring|alerts` run as three processes on real Kafka and a fresh PostgreSQL
database; the local Slack (`tests/support/slack.py`) runs in a process of its own and records when each
message arrives. Setup: N accounts, each with its own CSM (own Slack user id, so Slack's 1 message/s
per channel never queues one alert behind another) and a champion contact. Then, for the measuring
window, batches of 50 events go to ingest every 25 ms (2,000 events/s): 49 usage events spread over the
accounts and one `contact` event saying that account's champion left. The latency of one alert is the
Slack arrival of its `champion_left` DM minus the moment ingest answered 202 to the batch that carried
the departure.

Baseline, measured in the same run: a raw aiokafka producer (idempotent, acks=all, like the services)
and consumer in this process, one message every 0.5 ms, each carrying its send time; latency = receipt
minus send.

`python -m bench.alerts` runs this section alone (same as `python -m bench --only alerts --no-report`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import orjson
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.framework import ROOT, Context, Result, Target, broker_process, cpu_seconds, postgres_process
from bench.loadgen import KeepAliveConnection
from shared.migrate import upgrade_async
from shared.settings import hash_key
from shared.topics import Topics
from tests.support.ports import free_port

if TYPE_CHECKING:
    from shared.risks import RiskEvent

TITLE = "Alerts (ingest 202 → Slack, end to end)"
NOTES = """Method: `churnsignal serve ingest`, `serve scoring` and `serve alerts` as three processes on the real Kafka
and a fresh PostgreSQL database; the local Slack of `tests/support/slack.py` runs in a process of its own and
timestamps each message on arrival (CLOCK_MONOTONIC, the same clock as the load driver that records ingest's
202; the driver sends on raw keep-alive connections, like `bench/loadgen.py`, so its own CPU stays small on
the shared 2 cores). The load is 2,000 events/s to ingest (batches of 50 every 25 ms, each batch with one
champion departure, i.e. 40 champion_left alerts/s, each to its own CSM's Slack DM), after a setup that
creates the accounts and brings their event-time clocks to now, and 5 s of the same load that are not
measured. Latency = Slack arrival of the alert − ingest's 202 for the batch carrying the departure. The
baseline is a raw aiokafka producer → consumer round trip (acks=all, idempotent) at 2,000 messages/s measured
in the same run. Email is not configured here: the figure is the Slack path. The alerts process routes with
`group_wait: 1s`: critical risks (every champion_left, and the risks-topic hop) bypass the wait; the grouping
figure publishes three high risks per account to the risks topic and times the one DM that lists them."""

BENCH_KEY = "bench-alerts-key"
SLACK_TOKEN = "xoxb-bench"
RATE_EVENTS_S = 2000
BATCH = 50
INTERVAL_S = BATCH / RATE_EVENTS_S  # 25 ms
MAX_IN_FLIGHT = 64
PARTITIONS = 6
SETTLE_S = 15.0
WARMUP_S = 5.0  # the same load, not measured, before the measuring window
HOP_RATE_S = 40
GROUP_WAIT_S = 1.0  # the alerts process's routing: risks of one account within 1 s go out as one message
GROUP_ACCOUNTS = 40  # accounts that each open three (non-critical) risks at once, after the hop run
ROUTING = f"route:\n  receiver: csm\n  group_wait: {GROUP_WAIT_S:g}s\n"


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


# ----------------------------------------------------------------------------------- raw baseline
async def raw_round_trip(
    bootstrap: str, topic: str, seconds: float, rate: int = RATE_EVENTS_S
) -> list[float]:
    """Producer -> broker -> consumer latencies (ms) of messages sent at `rate` per second."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=1)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="latest",
    )
    await producer.start()
    await consumer.start()
    latencies: list[float] = []
    try:
        # Assignment and metadata settled before the clock starts.
        await producer.send_and_wait(topic, b"warm-up", key=b"0")
        for _ in range(100):
            if consumer.assignment():
                break
            await consumer.getmany(timeout_ms=100)
        await consumer.seek_to_end()
        stop = asyncio.Event()

        async def consume() -> None:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=100)
                now = time.perf_counter()
                for messages in batches.values():
                    for m in messages:
                        if m.value and m.value.startswith(b"t="):
                            latencies.append((now - float(m.value[2:])) * 1000)

        reader = asyncio.create_task(consume())
        start = time.perf_counter()
        n = 0
        pending = []
        while (now := time.perf_counter()) < start + seconds:
            due = start + n / rate
            if due > now:
                await asyncio.sleep(due - now)
            pending.append(
                await producer.send(topic, f"t={time.perf_counter()!r}".encode(), key=str(n % 97).encode())
            )
            n += 1
        await asyncio.gather(*pending)
        await asyncio.sleep(1.0)
        stop.set()
        await reader
    finally:
        await consumer.stop()
        await producer.stop()
    return latencies


# ------------------------------------------------------------------------------ the Slack receiver
def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def serve_slack(port_file: Path, out_file: Path, channels: int) -> None:
    """`python -m bench.alerts --slack-receiver PORT_FILE OUT_FILE N`: the local Slack in a process of its
    own (so the load driver never starves it), appending one JSON line per accepted message (channel,
    monotonic arrival time, text) to OUT_FILE until its stdin closes. CLOCK_MONOTONIC is system-wide, so
    arrival times compare with the driver's.

    The fake's own app (validation, rate limits, recording) is served by uvicorn on uvloop + httptools in
    this process's main thread, on a socket with TCP_NODELAY: the test fixture's server (h11, in a thread,
    on a socket asyncio does not set TCP_NODELAY on) adds ~40 ms of delayed-ACK wait to every answer and
    serializes concurrent requests, which would be measured instead of the service."""
    import uvicorn

    from tests.support.slack import FakeSlack  # the local Slack of the test suite

    slack = FakeSlack(token=SLACK_TOKEN)  # not started: its app is served below
    slack.add_channel(*(_csm(i) for i in range(channels)))
    app = slack._server._app  # the fake's own ASGI app, served by a faster server
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app, loop="uvloop", http="httptools", lifespan="off", log_level="warning", access_log=False
        )
    )

    async def main() -> None:
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        for _ in range(3000):  # up to 30 s
            if server.started:
                break
            await asyncio.sleep(0.01)
        _write_text(port_file, f"http://127.0.0.1:{port}/api/")
        stdin_closed = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        written = 0
        with out_file.open("a", encoding="utf-8") as out:
            while True:
                done = stdin_closed.done()
                messages = slack.messages()
                for m in messages[written:]:
                    out.write(
                        json.dumps({"channel": m.channel, "at": m.arrived_at, "text": m.text[:200]}) + "\n"
                    )
                written = len(messages)
                out.flush()
                if done:
                    break
                await asyncio.sleep(0.05)
        server.should_exit = True
        await serving

    asyncio.run(main())


@contextlib.contextmanager
def _slack_receiver(ctx: Context, workdir: Path, channels: int) -> Iterator[tuple[str, Path, int]]:
    port_file, out_file = workdir / "slack.url", workdir / "slack.jsonl"
    proc = subprocess.Popen(
        [ctx.python, "-m", "bench.alerts", "--slack-receiver", str(port_file), str(out_file), str(channels)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the Slack receiver did not start")
            time.sleep(0.05)
        yield port_file.read_text(), out_file, proc.pid
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _arrivals(out_file: Path) -> list[dict[str, Any]]:
    if not out_file.exists():
        return []
    return [
        json.loads(line) for line in out_file.read_text(encoding="utf-8").splitlines() if line.endswith("}")
    ]


# ------------------------------------------------------------------------------------- the stack
async def _fresh_database(test_url: str, name: str) -> str:
    base = test_url.rpartition("/")[0]
    conn = await asyncpg.connect(test_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = f"{base}/{name}"
    await upgrade_async(url)
    return url


async def _drop_database(test_url: str, name: str) -> None:
    conn = await asyncpg.connect(test_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@contextlib.contextmanager
def _services(
    ctx: Context, env: dict[str, str], logdir: Path
) -> Iterator[tuple[dict[str, int], dict[str, int]]]:
    """ingest, scoring and alerts as `churnsignal serve` processes; yields their ports and pids once all
    are ready."""
    ports = {name: free_port() for name in ("ingest", "scoring", "alerts")}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, port in ports.items():
            with (logdir / f"bench-alerts-{name}.log").open("wb") as out:
                procs[name] = subprocess.Popen(
                    [
                        ctx.python,
                        "-m",
                        "services.cli",
                        "serve",
                        name,
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                    ],
                    cwd=ROOT,
                    env={**os.environ, **env},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
        deadline = time.monotonic() + 90
        waiting = set(ports)
        while waiting:
            for name in list(waiting):
                if procs[name].poll() is not None:
                    raise RuntimeError(f"{name} exited with {procs[name].returncode}; see {logdir}")
                try:
                    if httpx.get(f"http://127.0.0.1:{ports[name]}/readyz", timeout=2).status_code == 200:
                        waiting.discard(name)
                except httpx.TransportError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready within 90 s: {sorted(waiting)}; see {logdir}")
            time.sleep(0.2)
        yield ports, {name: proc.pid for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class _Driver:
    """The load: POSTs on raw keep-alive connections (bench.loadgen's protocol), up to MAX_IN_FLIGHT at once.

    An HTTP client library costs this process a few milliseconds of CPU per request; on a 2-core machine
    that CPU is taken from the services being measured, so the driver stays as lean as the load generator."""

    def __init__(self, host: str, port: int, path: str, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self._head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                      + "".join(f"{k}: {v}\r\n" for k, v in headers.items())).encode("latin-1")
        self._idle: list[KeepAliveConnection] = []
        self._all: list[KeepAliveConnection] = []
        self._gate = asyncio.Semaphore(MAX_IN_FLIGHT)

    async def post(self, body: bytes) -> int:
        raw = self._head + f"Content-Length: {len(body)}\r\n\r\n".encode("latin-1") + body
        async with self._gate:
            conn = self._idle.pop() if self._idle else None
            if conn is None or conn.transport is None or conn.transport.is_closing():
                _, conn = await asyncio.get_running_loop().create_connection(KeepAliveConnection, self.host, self.port)
                self._all.append(conn)
            status = await conn.request(raw)
            self._idle.append(conn)
            return status

    def close(self) -> None:
        for conn in self._all:
            if conn.transport is not None:
                conn.transport.close()


def _csm(i: int) -> str:
    return f"UB{i:05d}"


def _setup_events(run: str, accounts: int, now: datetime) -> list[dict[str, Any]]:
    long_ago = (now - timedelta(days=30)).isoformat()
    events: list[dict[str, Any]] = []
    for i in range(accounts):
        acct = f"b-{run}-{i:05d}"
        events.append(
            {
                "id": f"{run}-acct-{i}",
                "type": "account",
                "account_id": acct,
                "occurred_at": long_ago,
                "data": {
                    "name": f"Bench Account {i}",
                    "segment": "mid-market",
                    "arr": 50_000.0,
                    "csm": {"email": f"csm{i}@bench.example", "slack_user_id": _csm(i), "name": f"CSM {i}"},
                },
            }
        )
        events.append(
            {
                "id": f"{run}-champ-{i}",
                "type": "contact",
                "account_id": acct,
                "occurred_at": long_ago,
                "data": {
                    "contact_id": f"c-{i}",
                    "name": f"Champion {i}",
                    "email": f"champ{i}@cust.example",
                    "user_id": f"u-{i}-0",
                    "role": "champion",
                    "status": "active",
                },
            }
        )
        # Brings the account's event-time clock to now during setup: the daily evaluations of the 30
        # days since its creation run here, not inside the measured window.
        events.append(
            {
                "id": f"{run}-first-use-{i}",
                "type": "usage",
                "account_id": acct,
                "occurred_at": now.isoformat(),
                "data": {"feature": "dashboard.view", "user_id": f"u-{i}-0", "count": 1},
            }
        )
    return events


def _batch(run: str, seq: int, accounts: int, left: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC).isoformat()
    out: list[dict[str, Any]] = [
        {
            "id": f"{run}-u-{seq}-{j}",
            "type": "usage",
            "account_id": f"b-{run}-{(seq * 7 + j) % accounts:05d}",
            "occurred_at": now,
            "data": {"feature": "dashboard.view", "user_id": f"u-{j % 5}", "count": 1},
        }
        for j in range(BATCH - 1)
    ]
    out.append(
        {
            "id": f"{run}-left-{left}",
            "type": "contact",
            "account_id": f"b-{run}-{left:05d}",
            "occurred_at": now,
            "data": {"contact_id": f"c-{left}", "role": "champion", "status": "left"},
        }
    )
    return out


async def _scoring_processed(client: httpx.AsyncClient, port: int) -> float:
    text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("churnsignal_scoring_events_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def end_to_end(ctx: Context, seconds: float) -> dict[str, Any]:
    run = ctx.run_id
    prefix = ctx.topic_prefix("alerts")
    warmup = int(WARMUP_S / INTERVAL_S)  # batches sent before the measuring window
    accounts = warmup + int(seconds / INTERVAL_S) + 10
    hop_count = int(min(seconds, 10.0) * HOP_RATE_S)
    group_first = accounts + hop_count
    db_name = f"bench_alerts_{run}"
    database_url = await _fresh_database(ctx.test_database_url, db_name)
    headers = {"Authorization": f"Bearer {BENCH_KEY}", "Content-Type": "application/json"}
    sent_at: dict[int, float] = {}
    statuses: dict[int, int] = {}
    window_start = 0.0
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-alerts-") as tmp,
            _slack_receiver(ctx, Path(tmp), accounts + hop_count + GROUP_ACCOUNTS) as (
                slack_api_url,
                arrivals_file,
                slack_pid,
            ),
        ):
            routing_file = Path(tmp) / "routing.yaml"
            routing_file.write_text(ROUTING, encoding="utf-8")
            env = {
                "CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS": ctx.kafka_bootstrap_servers,
                "CHURNSIGNAL_TOPIC_PREFIX": prefix,
                "CHURNSIGNAL_TOPIC_PARTITIONS": str(PARTITIONS),
                "CHURNSIGNAL_DATABASE_URL": database_url,
                "CHURNSIGNAL_API_KEYS": json.dumps(
                    [{"name": "bench", "sha256": hash_key(BENCH_KEY), "scopes": ["ingest", "read", "admin"]}]
                ),
                "CHURNSIGNAL_SCORING_GROUP_ID": f"bench-{run}-scoring",
                "CHURNSIGNAL_ALERTS_GROUP_ID": f"bench-{run}-alerts",
                "CHURNSIGNAL_SLACK_API_URL": slack_api_url,
                "CHURNSIGNAL_SLACK_BOT_TOKEN": SLACK_TOKEN,
                "CHURNSIGNAL_LOG_LEVEL": "warning",
                "CHURNSIGNAL_SMTP_HOST": "",
                "CHURNSIGNAL_ROUTING_FILE": str(routing_file),
                "CHURNSIGNAL_SLACK_WEBHOOK_URL": "",
            }
            with _services(ctx, env, ROOT / "var") as (ports, pids):
                ingest = f"http://127.0.0.1:{ports['ingest']}/v1/events"
                limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=MAX_IN_FLIGHT)
                async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:
                    setup = _setup_events(run, accounts, datetime.now(UTC))
                    for i in range(0, len(setup), 500):
                        r = await client.post(
                            ingest, content=orjson.dumps(setup[i : i + 500]), headers=headers
                        )
                        r.raise_for_status()
                    deadline = time.monotonic() + 60
                    while await _scoring_processed(client, ports["scoring"]) < len(setup):
                        if time.monotonic() > deadline:
                            raise RuntimeError("scoring did not process the setup events within 60 s")
                        await asyncio.sleep(0.2)
                    await asyncio.sleep(1.0)
                    setup_messages = len(_arrivals(arrivals_file))

                    driver = _Driver("127.0.0.1", ports["ingest"], "/v1/events", headers)

                    async def post(seq: int, measured: bool) -> None:
                        status = await driver.post(orjson.dumps(_batch(run, seq, accounts, seq)))
                        if not measured:
                            if status != 202:
                                raise RuntimeError(f"ingest answered {status} during the warm-up")
                            return
                        statuses[status] = statuses.get(status, 0) + 1
                        if status == 202:
                            sent_at[seq] = time.monotonic()

                    meters = {
                        **{name: psutil.Process(pid) for name, pid in pids.items()},
                        "Slack stand-in": psutil.Process(slack_pid),
                        "Kafka broker": broker_process(),
                        "PostgreSQL": postgres_process(),
                    }
                    harness = psutil.Process()  # this process; the services are its children
                    cpu_before: dict[str, float] = {}
                    tasks = []
                    start = time.monotonic()
                    seq = 0
                    while (now := time.monotonic()) < start + WARMUP_S + seconds:
                        due = start + seq * INTERVAL_S
                        if due > now:
                            await asyncio.sleep(due - now)
                        measured = seq >= warmup
                        if seq == warmup:
                            window_start = time.monotonic()
                            cpu_before = {name: cpu_seconds(p) for name, p in meters.items()}
                            cpu_before["load driver"] = cpu_seconds(harness, children=False)
                        tasks.append(asyncio.create_task(post(seq, measured)))
                        seq += 1
                    await asyncio.gather(*tasks)
                    send_window = time.monotonic() - window_start
                    cpu_after = {name: cpu_seconds(p) for name, p in meters.items()}
                    cpu_after["load driver"] = cpu_seconds(harness, children=False)
                    driver.close()
                    cpu_share = {
                        name: (cpu_after[name] - cpu_before.get(name, 0.0)) / send_window for name in cpu_after
                    }
                    load_average = os.getloadavg()[0]
                    settle = time.monotonic() + SETTLE_S
                    while time.monotonic() < settle:
                        arrived = {
                            a["channel"] for a in _arrivals(arrivals_file) if "Champion left" in a["text"]
                        }
                        if all(_csm(s) in arrived for s in sent_at):
                            break
                        await asyncio.sleep(0.2)
                    await asyncio.sleep(1.0)  # anything arriving late (a duplicate) is counted too
                    metrics = {}
                    for name in ("scoring", "alerts"):
                        metrics[name] = (await client.get(f"http://127.0.0.1:{ports[name]}/metrics")).text
                    (ROOT / "var" / "bench-alerts-metrics.txt").write_text(
                        "\n".join(f"# ---- {name}\n{text}" for name, text in metrics.items())
                    )
                    # The alerts service alone: risk events published straight to its topic.
                    hop_sent = await _publish_risks(ctx, prefix, accounts, hop_count, arrivals_file)
                    # Grouping: three high risks at once per account -> one DM after group_wait.
                    group_sent = await _publish_groups(ctx, prefix, group_first, arrivals_file)
            arrivals = _arrivals(arrivals_file)
    finally:
        await _drop_database(ctx.test_database_url, db_name)

    first: dict[str, float] = {}
    champion = [a for a in arrivals if "Champion left" in a["text"]]
    for a in champion:
        first.setdefault(a["channel"], a["at"])
    latencies = [(first[_csm(s)] - t) * 1000 for s, t in sent_at.items() if _csm(s) in first]
    hop_first: dict[str, float] = {}
    for a in arrivals:
        if "Bench hop" in a["text"]:
            hop_first.setdefault(a["channel"], a["at"])
    hop = [(hop_first[c] - t) * 1000 for c, t in hop_sent.items() if c in hop_first]
    grouped = [a for a in arrivals if "Bench group" in a["text"]]
    group_first_at: dict[str, float] = {}
    for a in grouped:
        group_first_at.setdefault(a["channel"], a["at"])
    return {
        "group_latencies": [(group_first_at[c] - t) * 1000 for c, t in group_sent.items() if c in group_first_at],
        "group_expected": len(group_sent),
        "group_messages": len(grouped),
        "hop_latencies": hop,
        "hop_expected": len(hop_sent),
        "scoring_avg_s": _histogram_avg(metrics["scoring"], "churnsignal_scoring_processing_latency_seconds"),
        "signal_avg_s": _histogram_avg(metrics["alerts"], "churnsignal_signal_to_notification_seconds"),
        "slack_attempt_avg_s": _histogram_avg(
            metrics["alerts"], "churnsignal_notification_delivery_duration_seconds"
        ),
        "latencies": latencies,
        "expected": len(sent_at),
        "delivered": len(latencies),
        "batches": seq - warmup,
        "send_window_s": send_window,
        "statuses": statuses,
        "events_per_s": len(sent_at) * BATCH / send_window,
        "setup_messages": setup_messages,
        "duplicates": len(champion) - len(first),
        "cpu_share": cpu_share,
        "load_average": load_average,
    }


def _histogram_avg(text: str, name: str) -> float:
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{name}_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total / count if count else float("nan")


async def _publish_risks(
    ctx: Context, prefix: str, first: int, count: int, arrivals_file: Path
) -> dict[str, float]:
    """`count` critical risk events, one per new CSM, at HOP_RATE_S per second, straight to the risks
    topic; returns when each was acknowledged by Kafka, by Slack channel. Waits for their arrival."""
    def hop(i: int, _: str, now: datetime) -> RiskEvent:
        return _risk(f"hop-{ctx.run_id}-{i}", f"hop-{i}", "champion_left", "critical",
                     f"Bench hop {i}: the champion left.", {"contacts": 1}, 30.0, "champion left",
                     f"Bench hop {i}", _csm(i), f"hop-src-{i}", now)

    return await _publish(ctx, prefix, arrivals_file, range(first, first + count), ("champion_left",),
                          HOP_RATE_S, hop, "Bench hop")


async def _publish_groups(ctx: Context, prefix: str, first: int, arrivals_file: Path) -> dict[str, float]:
    """GROUP_ACCOUNTS accounts, each with its own CSM, each opening three high risks at once (published
    back to back), 10 accounts per second; returns when the first risk of each was acknowledged by Kafka,
    by Slack channel. Waits for their arrival."""
    def opening(i: int, type_: str, now: datetime) -> RiskEvent:
        return _risk(f"grp-{ctx.run_id}-{i}-{type_}", f"grp-{i}", type_, "high", f"Bench group {i}: {type_}.",
                     {"bench": 1}, 40.0, "bench", f"Bench group {i}", _csm(i), f"grp-src-{i}-{type_}", now)

    sent = await _publish(ctx, prefix, arrivals_file, range(first, first + GROUP_ACCOUNTS),
                          ("usage_drop", "ticket_spike", "sentiment_drop"), 10, opening, "Bench group")
    await asyncio.sleep(GROUP_WAIT_S + 0.5)  # a second message per account would arrive by now
    return sent


def _risk(risk_id: str, account_id: str, type_: str, severity: str, summary: str, evidence: dict[str, Any],
          score: float, reason: str, name: str, csm: str, trigger: str, now: datetime) -> RiskEvent:
    from shared.risks import AccountBrief, CsmRef, HealthBrief, RiskEvent, Trigger

    return RiskEvent(
        event_id=f"{risk_id}:1", risk_id=risk_id, seq=1, transition="opened", account_id=account_id, type=type_,
        severity=severity, summary=summary, evidence=evidence,
        health=HealthBrief(score=score, tier="red", reasons=[reason]),
        account=AccountBrief(name=name, csm=CsmRef(slack_user_id=csm, name="CSM")),
        occurred_at=now, detected_at=now, trigger=Trigger(event_id=trigger, received_at=now))


async def _publish(ctx: Context, prefix: str, arrivals_file: Path, accounts: range, types: tuple[str, ...],
                   per_second: float, make: Callable[[int, str, datetime], RiskEvent],
                   text: str) -> dict[str, float]:
    """For each account, `per_second` accounts a second, the risks `make(i, type, now)` of each of `types`,
    published back to back straight to the risks topic; returns when the first of each account's was
    acknowledged by Kafka, by Slack channel (the account's CSM), once every channel got a message whose
    text holds `text` (or SETTLE_S passed)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=ctx.kafka_bootstrap_servers, enable_idempotence=True, acks="all", linger_ms=1
    )
    await producer.start()
    sent: dict[str, float] = {}
    try:
        start = time.monotonic()
        for n, i in enumerate(accounts):
            due = start + n / per_second
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            for type_ in types:
                risk = make(i, type_, datetime.now(UTC))
                await producer.send_and_wait(Topics(prefix).risks, risk.to_json(), key=risk.account_id.encode())
                sent.setdefault(_csm(i), time.monotonic())
    finally:
        await producer.stop()
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        arrived = {a["channel"] for a in _arrivals(arrivals_file) if text in a["text"]}
        if all(c in arrived for c in sent):
            break
        await asyncio.sleep(0.2)
    return sent


async def run(ctx: Context) -> list[Result]:
    seconds = ctx.seconds(25.0)
    raw_topic = f"{ctx.topic_prefix('alerts-raw')}roundtrip"
    admin_topics = Topics(ctx.topic_prefix("alerts"))
    from shared.bus.kafka import KafkaBus

    bus = KafkaBus(ctx.kafka_bootstrap_servers)
    await bus.ensure_topics([raw_topic, *admin_topics.all], partitions=PARTITIONS)
    raw = await raw_round_trip(ctx.kafka_bootstrap_servers, raw_topic, min(seconds, 10.0))
    e2e = await end_to_end(ctx, seconds)
    lat = e2e["latencies"]
    missing = e2e["expected"] - e2e["delivered"]
    summary = (
        f"{e2e['delivered']}/{e2e['expected']} alerts delivered, {e2e['duplicates']} duplicates; "
        f"{e2e['events_per_s']:,.0f} events/s accepted over {e2e['send_window_s']:.1f} s; "
        f"ingest statuses {e2e['statuses']}; max {max(lat, default=float('nan')):.0f} ms"
    )
    if missing:
        summary += f"; {missing} alert(s) not received within {SETTLE_S:.0f} s after the load"
    summary += (
        f"; averages from the services' metrics: scoring ingest→committed "
        f"{e2e['scoring_avg_s'] * 1000:,.0f} ms, "
        f"alerts signal→Slack {e2e['signal_avg_s'] * 1000:,.0f} ms, one Slack attempt "
        f"{e2e['slack_attempt_avg_s'] * 1000:,.0f} ms"
    )
    summary += "; CPU over the window (share of one core): " + ", ".join(
        f"{name} {share:.0%}" for name, share in e2e["cpu_share"].items()
    ) + f"; machine load average {e2e['load_average']:.1f} at the end"
    hop = e2e["hop_latencies"]
    hop_notes = (
        f"{len(hop)}/{e2e['hop_expected']} delivered; {HOP_RATE_S} risk events/s published to the risks "
        f"topic (Kafka ack → Slack arrival), after the end-to-end run; critical: they bypass group_wait"
    )
    grp = e2e["group_latencies"]
    group_notes = (
        f"{len(grp)}/{e2e['group_expected']} accounts notified with {e2e['group_messages']} Slack messages "
        f"(one expected per account); three high risk events per account published back to back to the "
        f"risks topic, 10 accounts/s; latency = first risk's Kafka ack → the grouped DM's arrival"
    )
    return [
        Result(
            "raw aiokafka produce → consume p50",
            _pct(raw, 0.50),
            "ms",
            notes=f"{len(raw)} messages at {RATE_EVENTS_S}/s",
        ),
        Result("raw aiokafka produce → consume p99", _pct(raw, 0.99), "ms"),
        Result(
            "ingest 202 → Slack DM p50",
            _pct(lat, 0.50),
            "ms",
            baseline=_pct(raw, 0.50),
            baseline_name="raw produce → consume p50",
            notes=summary,
        ),
        Result(
            "ingest 202 → Slack DM p99",
            _pct(lat, 0.99),
            "ms",
            baseline=_pct(raw, 0.99),
            baseline_name="raw produce → consume p99",
            target=Target(at_most=250.0),
        ),
        Result(
            "risks topic → Slack DM (the alerts service alone) p50",
            _pct(hop, 0.50),
            "ms",
            baseline=_pct(raw, 0.50),
            baseline_name="raw produce → consume p50",
            notes=hop_notes,
        ),
        Result(
            "risks topic → Slack DM (the alerts service alone) p99",
            _pct(hop, 0.99),
            "ms",
            baseline=_pct(raw, 0.99),
            baseline_name="raw produce → consume p99",
            target=Target(at_most=250.0),
        ),
        Result(
            f"3 risks of one account → one Slack DM after group_wait {GROUP_WAIT_S:g} s p50",
            _pct(grp, 0.50),
            "ms",
            notes=group_notes,
        ),
        Result(
            f"3 risks of one account → one Slack DM after group_wait {GROUP_WAIT_S:g} s p99",
            _pct(grp, 0.99),
            "ms",
            target=Target(at_most=GROUP_WAIT_S * 1000 + 250.0),
        ),
        Result(
            "events/s sustained during the measurement",
            e2e["events_per_s"],
            "events/s",
            target=Target(at_least=RATE_EVENTS_S * 0.95),
        ),
    ]


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--slack-receiver":
        serve_slack(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
        return 0
    ctx = Context.from_environment(quick="--quick" in sys.argv)
    for result in asyncio.run(run(ctx)):
        extra = f" (baseline {result.baseline:.1f})" if result.baseline is not None else ""
        met = "" if result.met is None else (" target met" if result.met else " TARGET MISSED")
        print(f"{result.name}: {result.value:,.1f} {result.unit}{extra}{met} {result.notes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
