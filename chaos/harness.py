"""What the cases run on: service processes, broker and database outages (on the private servers of
chaos/services.py), the Slack stand-in, the event driver and the risk publisher. Loopback only; everything
started here is stopped in `finally`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as KafkaTP

from bench.framework import ROOT
from bench.scoring import _create_database, _drop_database
from chaos.services import PrivateServices
from shared.bus.kafka import KafkaBus
from shared.risks import AccountBrief, CsmRef, HealthBrief, RiskEvent, Trigger
from shared.settings import hash_key
from shared.topics import Topics
from tests.support.ports import free_port
from tests.support.slack import FakeSlack

# Where `make chaos` keeps its private servers (chaos/services.py) and the service processes' logs.
CHAOS_DIR = ROOT / "var" / "chaos"
API_KEY = "chaos-key"
SLACK_TOKEN = "xoxb-chaos"
PARTITIONS = 6
# Critical risks bypass group_wait; the rest of the routing is the default's (the account's CSM by DM).
ROUTING = "route:\n  receiver: csm\n  group_wait: 1s\n"


def log(message: str) -> None:
    print(f"[chaos {datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def pg_url(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


# ------------------------------------------------------------------------------- broker and database
def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def _hostport(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[-1].split("@")[-1].split("/")[0].split(",")[0]
    host, _, port = rest.rpartition(":")
    return host or "127.0.0.1", int(port)


class Outage:
    """Stops and starts the private broker or database (`scripts/services.sh kafka-stop`... on the second
    instance of chaos/services.py, never the shared servers); `restore()` (sync, for `finally`) starts it
    again if this outage stopped it."""

    def __init__(self, kind: str, services: PrivateServices) -> None:
        if kind not in ("kafka", "pg"):
            raise ValueError(f"unknown outage {kind!r}")
        self.kind = kind
        self.services = services
        address = services.bootstrap_servers if kind == "kafka" else services.database_url()
        self.host, self.port = _hostport(address)
        self.stopped = False
        self.stop_issued_at = self.down_at = self.start_issued_at = self.up_at = 0.0

    def _run(self, command: str) -> str:
        return self.services.run(f"{self.kind}-{command}")

    async def stop(self) -> None:
        self.stop_issued_at = time.monotonic()
        self.stopped = True
        output = await asyncio.to_thread(self._run, "stop")
        if _port_open(self.host, self.port):
            raise RuntimeError(f"{self.kind} still answers on {self.host}:{self.port} after "
                               f"`scripts/services.sh {self.kind}-stop` (not started by it?): {output[-300:]}")
        self.down_at = time.monotonic()
        log(f"{self.kind} stopped ({self.down_at - self.stop_issued_at:.1f} s to stop)")

    async def start(self) -> None:
        self.start_issued_at = time.monotonic()
        await asyncio.to_thread(self._run, "start")
        self.stopped = False
        self.up_at = time.monotonic()
        log(f"{self.kind} started again: unreachable for {self.unreachable_s:.1f} s")

    @property
    def unreachable_s(self) -> float:
        """From the stop command (the server refuses new work while it shuts down) to answering again."""
        return max(0.0, self.up_at - self.stop_issued_at) if self.up_at else 0.0

    def timings(self) -> dict[str, float]:
        name = {"kafka": "broker", "pg": "PostgreSQL"}[self.kind]
        return {f"{name}: seconds to stop (`{self.kind}-stop`)": round(self.down_at - self.stop_issued_at, 1),
                f"{name}: seconds down before the start command": round(self.start_issued_at - self.down_at, 1),
                f"{name}: seconds to start and answer (`{self.kind}-start`)":
                    round(self.up_at - self.start_issued_at, 1),
                f"{name}: unreachable, stop command to answering again (s)": round(self.unreachable_s, 1)}

    def restore(self) -> None:
        if self.stopped:
            log(f"restoring {self.kind}")
            self._run("start")
            self.stopped = False


# ---------------------------------------------------------------------------------------- the stack
@dataclass
class StackConfig:
    kafka: str
    database_url: str
    prefix: str
    run: str
    case: str
    extra_env: dict[str, str] = field(default_factory=dict)


class Stack:
    """`churnsignal serve <service>` processes on one topic prefix and one database."""

    def __init__(self, config: StackConfig, slack_api_url: str, workdir: Path, python: str) -> None:
        self.config = config
        self.python = python
        self.workdir = workdir
        routing = workdir / "routing.yaml"
        routing.write_text(ROUTING, encoding="utf-8")
        self.env = {
            **os.environ,
            "CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS": config.kafka,
            "CHURNSIGNAL_TOPIC_PREFIX": config.prefix,
            "CHURNSIGNAL_TOPIC_PARTITIONS": str(PARTITIONS),
            "CHURNSIGNAL_DATABASE_URL": config.database_url,
            "CHURNSIGNAL_API_KEYS": json.dumps([{"name": "chaos", "sha256": hash_key(API_KEY),
                                                 "scopes": ["ingest", "read", "admin"]}]),
            "CHURNSIGNAL_SCORING_GROUP_ID": f"chaos-{config.run}-scoring",
            "CHURNSIGNAL_ALERTS_GROUP_ID": f"chaos-{config.run}-alerts",
            "CHURNSIGNAL_SLACK_API_URL": slack_api_url,
            "CHURNSIGNAL_SLACK_BOT_TOKEN": SLACK_TOKEN,
            "CHURNSIGNAL_SLACK_WEBHOOK_URL": "",
            "CHURNSIGNAL_SMTP_HOST": "",
            "CHURNSIGNAL_ROUTING_FILE": str(routing),
            "CHURNSIGNAL_LOG_LEVEL": "warning",
            **config.extra_env,
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        self.starts: Counter[str] = Counter()

    def log_file(self, name: str) -> Path:
        return CHAOS_DIR / f"{self.config.case}-{name}.log"

    def start(self, name: str) -> None:
        port = self.ports.setdefault(name, free_port())
        self.log_file(name).parent.mkdir(parents=True, exist_ok=True)
        mode = "ab" if self.starts[name] else "wb"
        with self.log_file(name).open(mode) as out:
            self.procs[name] = subprocess.Popen(
                [self.python, "-m", "services.cli", "serve", name, "--host", "127.0.0.1", "--port", str(port)],
                cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.starts[name] += 1

    async def wait_ready(self, *names: str, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        waiting = set(names)
        async with httpx.AsyncClient(timeout=2.0) as client:
            while waiting:
                for name in sorted(waiting):
                    self.check_alive(name)
                    with contextlib.suppress(httpx.TransportError):
                        r = await client.get(f"http://127.0.0.1:{self.ports[name]}/readyz")
                        if r.status_code == 200:
                            waiting.discard(name)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not ready within {timeout_s:.0f} s: {sorted(waiting)} "
                                       f"(see var/chaos/{self.config.case}-*.log)")
                await asyncio.sleep(0.3)

    def check_alive(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}; see {self.log_file(name)}")

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        proc.send_signal(sig)
        proc.wait(timeout=30)

    def warnings(self, name: str) -> int:
        """WARNING and ERROR lines the service logged (its retries announce themselves this way)."""
        path = self.log_file(name)
        if not path.exists():
            return 0
        text = path.read_text(encoding="utf-8", errors="replace")
        return sum(1 for line in text.splitlines() if " WARNING " in line or " ERROR " in line)

    def count_lines(self, name: str, text: str) -> int:
        """Lines of the service's log that contain `text`."""
        path = self.log_file(name)
        if not path.exists():
            return 0
        return sum(1 for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if text in line)

    def rss(self, name: str) -> int:
        """Resident memory of the service process and its children (bytes); 0 once it is gone."""
        try:
            proc = psutil.Process(self.procs[name].pid)
            return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
        except psutil.Error:
            return 0

    async def metric(self, name: str, metric: str, **labels: str) -> float:
        """Sum of a metric's samples (filtered by labels) from the service's /metrics."""
        async with httpx.AsyncClient(timeout=10.0) as client:
            text = (await client.get(f"http://127.0.0.1:{self.ports[name]}/metrics")).text
        total = 0.0
        wanted = [f'{k}="{v}"' for k, v in labels.items()]
        for line in text.splitlines():
            if line.startswith(metric + "{") or line.startswith(metric + " "):
                if all(w in line for w in wanted):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.asynccontextmanager
async def fresh_stack(ctx: Any, case: str, slack_api_url: str, workdir: Path,
                      extra_env: dict[str, str] | None = None) -> AsyncIterator[Stack]:
    """A topic prefix and a database of the case's own, and a Stack on them; all removed afterwards."""
    run = f"{ctx.run_id}-{case}"
    prefix = f"chaos-{run}."
    db_name = f"chaos_{ctx.run_id}_{case}"
    bus = KafkaBus(ctx.kafka_bootstrap_servers)
    await bus.ensure_topics(Topics(prefix).all, partitions=PARTITIONS)
    url = await _create_database(ctx.test_database_url, db_name)
    stack = Stack(StackConfig(ctx.kafka_bootstrap_servers, url, prefix, run, case, extra_env or {}),
                  slack_api_url, workdir, ctx.python)
    try:
        yield stack
    finally:
        stack.stop_all()
        for what, cleanup in (("database", lambda: _drop_database(ctx.test_database_url, db_name)),
                              ("topics", lambda: ctx.delete_topics(prefix))):
            try:
                await cleanup()
            except Exception as exc:  # noqa: BLE001 - a cleanup failure is reported, the run goes on
                log(f"could not remove the case's {what}: {exc}")


async def fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(pg_url(url), timeout=10)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def wait_for_database(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await fetch(url, "SELECT 1")
            return
        except (OSError, asyncpg.PostgresError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def topic_records(bootstrap: str, topics: tuple[str, ...]) -> int:
    """Records on the topics (sum of end offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([KafkaTP(t, p) for t in topics for p in range(PARTITIONS)])
        return sum(ends.values())
    finally:
        await consumer.stop()


# ------------------------------------------------------------------------------------ Slack stand-in
class SlackStandIn:
    """The local Slack of the test suite, with a switch that answers every request 500 until a moment."""

    def __init__(self) -> None:
        self.fake = FakeSlack(token=SLACK_TOKEN)
        self.failing_until = 0.0
        self.failed = 0
        inner = self.fake._server._app  # the fake's own ASGI app, wrapped before the server starts

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http" and time.monotonic() < self.failing_until:
                self.failed += 1
                body = b'{"ok":false,"error":"internal_error"}'
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
            await inner(scope, receive, send)

        self.fake._server._app = app

    @property
    def api_url(self) -> str:
        return self.fake.api_url

    def fail_for(self, seconds: float) -> None:
        self.failing_until = time.monotonic() + seconds

    def tally(self, channels: set[str], marker: str) -> tuple[int, int]:
        """(channels that got the marked message, duplicate copies beyond the first per channel)."""
        per_channel = Counter(m.channel for m in self.fake.messages() if m.channel in channels and marker in m.text)
        return len(per_channel), sum(n - 1 for n in per_channel.values())


@contextlib.contextmanager
def slack_stand_in() -> Iterator[SlackStandIn]:
    slack = SlackStandIn()
    slack.fake.start()
    try:
        yield slack
    finally:
        slack.fake.stop()


# -------------------------------------------------------------------------------------- risk events
def champion_left(run: str, case: str, i: int) -> tuple[str, RiskEvent]:
    """A critical risk (it bypasses group_wait) for an account whose CSM has a Slack channel of its own."""
    now = datetime.now(UTC)
    channel = f"U{case[:3].upper()}{i:06d}"
    risk_id = f"chaos-{run}-{case}-{i}"
    risk = RiskEvent(
        event_id=f"{risk_id}:1", risk_id=risk_id, seq=1, transition="opened", account_id=f"{case}-{i}",
        type="champion_left", severity="critical", summary=f"Chaos {case} {i}: the champion left.",
        evidence={"contacts": 1}, health=HealthBrief(score=30.0, tier="red", reasons=["champion left"]),
        account=AccountBrief(name=f"Chaos {case} {i}", csm=CsmRef(slack_user_id=channel, name="CSM")),
        occurred_at=now, detected_at=now, trigger=Trigger(event_id=f"{risk_id}-trigger", received_at=now))
    return channel, risk


async def publish_risks(bootstrap: str, topic: str, risks: list[RiskEvent], per_second: float,
                        stop_early: Callable[[], bool] = lambda: False) -> int:
    """Publish the risks to the risks topic at `per_second`; returns how many the broker acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=1)
    await producer.start()
    pending = []
    try:
        start = time.monotonic()
        for n, risk in enumerate(risks):
            if stop_early():
                break
            due = start + n / per_second
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            pending.append(await producer.send(topic, risk.to_json(), key=risk.account_id.encode()))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return len(pending)


# ------------------------------------------------------------------------------------- event driver
_FEATURES = ("login", "report.export", "dashboard.view", "api.call", "search")


def usage(run: str, seq: int, j: int, account: str, now: datetime) -> dict[str, Any]:
    return {"id": f"{run}-{seq}-{j}", "type": "usage", "account_id": account, "occurred_at": now.isoformat(),
            "data": {"feature": _FEATURES[j % len(_FEATURES)], "user_id": f"u-{j % 7}", "count": 1}}


def mixed_batch(run: str, seq: int, size: int, accounts: int = 2000) -> list[dict[str, Any]]:
    """Mostly usage, some tickets and NPS answers, over `accounts` accounts (unique ids)."""
    now = datetime.now(UTC)
    out: list[dict[str, Any]] = []
    for j in range(size):
        account = f"acct-{(seq * size + j) % accounts:05d}"
        slot = (seq * size + j) % 50
        if slot == 7:
            out.append({"id": f"{run}-{seq}-{j}", "type": "ticket", "account_id": account,
                        "occurred_at": now.isoformat(),
                        "data": {"ticket_id": f"T-{seq}-{j}", "status": "opened", "priority": "normal",
                                 "subject": "Export is slow"}})
        elif slot == 23:
            out.append({"id": f"{run}-{seq}-{j}", "type": "sentiment", "account_id": account,
                        "occurred_at": now.isoformat(),
                        "data": {"source": "nps", "score": 8, "contact_id": f"c-{j % 5}"}})
        else:
            out.append(usage(run, seq, j, account, now))
    return out


@dataclass
class DriverTally:
    batches: int = 0
    events: int = 0
    answers: Counter[str] = field(default_factory=Counter)   # per HTTP attempt: "202", "503", "error", ...
    retry_after_503: int = 0                                 # 503s carrying a Retry-After header
    accepted_ids: set[str] = field(default_factory=set)
    all_ids: set[str] = field(default_factory=set)
    accepted_after_503: int = 0                              # events accepted on a retry after a 503
    abandoned: int = 0                                       # events of batches never accepted
    first_503: float | None = None
    last_503: float | None = None
    in_flight: int = 0
    unexpected: list[str] = field(default_factory=list)     # answers other than 202 and 503


class Driver:
    """Posts batches of events to ingest at a steady rate on its own clock (a slow answer never slows the
    next batch), recording each HTTP answer; a 503 is retried after its Retry-After, as a client should,
    a transport error after a second, until `retry_until`."""

    def __init__(self, port: int, *, max_connections: int = 512) -> None:
        self.url = f"http://127.0.0.1:{port}/v1/events"
        self.headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
        self.tally = DriverTally()
        self._limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self.retry_until = float("inf")

    async def _post(self, client: httpx.AsyncClient, batch: list[dict[str, Any]]) -> None:
        t = self.tally
        ids = [e["id"] for e in batch]
        body = orjson.dumps(batch)
        got_503 = False
        t.in_flight += 1
        try:
            while True:
                wait = 1.0
                try:
                    r = await client.post(self.url, content=body, headers=self.headers)
                except httpx.HTTPError:
                    t.answers["transport error or timeout"] += 1
                else:
                    t.answers[str(r.status_code)] += 1
                    if r.status_code == 202:
                        t.accepted_ids.update(ids)
                        if got_503:
                            t.accepted_after_503 += len(ids)
                        return
                    if r.status_code != 503:  # not a retryable answer: counted, the batch is given up
                        t.abandoned += len(ids)
                        t.unexpected.append(f"{r.status_code}: {r.text[:200]}")
                        return
                    got_503 = True
                    now = time.monotonic()
                    t.first_503 = t.first_503 or now
                    t.last_503 = now
                    retry_after = r.headers.get("Retry-After")
                    if retry_after is not None:
                        t.retry_after_503 += 1
                        wait = float(retry_after)
                if time.monotonic() + wait > self.retry_until:
                    t.abandoned += len(ids)
                    return
                await asyncio.sleep(wait)
        finally:
            t.in_flight -= 1

    async def run(self, seconds: float, per_second: float, batch_size: int,
                  make_batch: Callable[[int], list[dict[str, Any]]],
                  on_tick: Callable[[float], Any] | None = None) -> None:
        """Send for `seconds`, then wait for every batch to be accepted or given up."""
        interval = batch_size / per_second
        t = self.tally
        timeout = httpx.Timeout(30.0, pool=None)
        async with httpx.AsyncClient(timeout=timeout, limits=self._limits) as client:
            tasks: set[asyncio.Task[None]] = set()
            start = time.monotonic()
            next_progress = start + 5
            seq = 0
            while (now := time.monotonic()) < start + seconds:
                due = start + seq * interval
                if due > now:
                    await asyncio.sleep(due - now)
                batch = make_batch(seq)
                t.batches += 1
                t.events += len(batch)
                t.all_ids.update(e["id"] for e in batch)
                task = asyncio.create_task(self._post(client, batch))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                seq += 1
                if on_tick is not None:
                    await on_tick(time.monotonic() - start)
                if time.monotonic() >= next_progress:
                    next_progress += 5
                    log(f"  load: {time.monotonic() - start:.0f}s, {t.events:,} events sent, "
                        f"{len(t.accepted_ids):,} accepted, answers {dict(t.answers)}, {t.in_flight} in flight")
            if tasks:
                log(f"  load done; waiting for {len(tasks)} request(s) still in flight or retrying")
                await asyncio.gather(*tasks)


def setup_accounts(run: str, accounts: int, channel: Callable[[int], str]) -> list[dict[str, Any]]:
    """Accounts with a CSM (a Slack channel each) and a champion, created 30 days ago, and a first use now
    that brings each account's event-time clock to the present (the evaluations since happen here)."""
    now = datetime.now(UTC)
    long_ago = (now - timedelta(days=30)).isoformat()
    events: list[dict[str, Any]] = []
    for i in range(accounts):
        acct = f"s-{run}-{i:05d}"
        events += [
            {"id": f"{run}-acct-{i}", "type": "account", "account_id": acct, "occurred_at": long_ago,
             "data": {"name": f"Soak {i}", "segment": "mid-market", "arr": 50_000.0,
                      "csm": {"email": f"csm{i}@chaos.example", "slack_user_id": channel(i), "name": f"CSM {i}"}}},
            {"id": f"{run}-champ-{i}", "type": "contact", "account_id": acct, "occurred_at": long_ago,
             "data": {"contact_id": f"c-{i}", "name": f"Champion {i}", "email": f"champ{i}@cust.example",
                      "user_id": f"u-{i}-0", "role": "champion", "status": "active"}},
            {"id": f"{run}-first-use-{i}", "type": "usage", "account_id": acct, "occurred_at": now.isoformat(),
             "data": {"feature": "dashboard.view", "user_id": f"u-{i}-0", "count": 1}},
        ]
    return events


async def first_accepted(port: int, make_batch: Callable[[int], list[dict[str, Any]]],
                         timeout_s: float) -> tuple[float | None, Counter[str]]:
    """Post fresh batches (one at a time) until one is answered 202: the seconds that took (None if none was
    within `timeout_s`) and the answers meanwhile."""
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    answers: Counter[str] = Counter()
    start = time.monotonic()
    seq = 0
    async with httpx.AsyncClient(timeout=30.0) as client:
        while time.monotonic() - start < timeout_s:
            try:
                r = await client.post(f"http://127.0.0.1:{port}/v1/events", content=orjson.dumps(make_batch(seq)),
                                      headers=headers)
                answers[str(r.status_code)] += 1
                if r.status_code == 202:
                    return time.monotonic() - start, answers
            except httpx.HTTPError:
                answers["transport error or timeout"] += 1
            seq += 1
            await asyncio.sleep(1.0)
    return None, answers


async def post_setup(port: int, events: list[dict[str, Any]], batch: int = 500) -> None:
    """Post setup events; every request must be accepted."""
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(timeout=60.0) as client:
        for i in range(0, len(events), batch):
            r = await client.post(f"http://127.0.0.1:{port}/v1/events", content=orjson.dumps(events[i:i + batch]),
                                  headers=headers)
            if r.status_code != 202:
                raise RuntimeError(f"ingest answered {r.status_code} to the setup: {r.text[:300]}")


def departure(run: str, i: int) -> dict[str, Any]:
    return {"id": f"{run}-left-{i}", "type": "contact", "account_id": f"s-{run}-{i:05d}",
            "occurred_at": datetime.now(UTC).isoformat(),
            "data": {"contact_id": f"c-{i}", "role": "champion", "status": "left"}}
