"""`churnsignal run`: ingest, scoring and alerts in one process, on one in-process bus and one SQLite file.

The composition root of the embedded mode: one `MemoryBus` shared by the three apps, three uvicorn
servers in the same event loop, and (unless told otherwise) the simulator feeding its own ingest over
HTTP with a generated API key. The terminal shows the URLs and the key, a progress line, one line per
alert as it is sent, and at the end a summary scored against the simulation's ground truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import httpx
import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from services.simulate.cli import API_KEY_ENV, RetryNotice, describe_plan, stream_simulation, write_truth
from services.simulate.evaluate import score_against_truth
from services.simulate.generator import Simulation, generate
from services.simulate.model import SimulationParams
from services.simulate.sender import IngestRejected, IngestSender, IngestUnavailable
from shared.bus.memory import MemoryBus
from shared.bus.port import Subscriber, TopicPartition
from shared.risks import RiskEvent
from shared.settings import ApiKey, Settings, hash_key
from shared.topics import Topics

log = logging.getLogger("churnsignal.run")

SUMMARY_GROUP = "churnsignal-run-summary"
SETTLE_TIMEOUT_S = 120.0
EXIT_INTERRUPTED = 130   # 128 + SIGINT, as shells report it
ALERT_LOGGER = "churnsignal.alerts.outbox"


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the embedded runner (three servers, one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class _Service:
    name: str
    port: int
    app: FastAPI
    server: _Server | None = None
    task: asyncio.Task[None] | None = None


class StartupFailed(Exception):
    pass


@dataclass
class RiskCollector:
    """Reads the `risks` topic with a group of its own, for the summary (the alerts service reads it too)."""

    subscriber: Subscriber
    risks: list[RiskEvent] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)

    async def run(self) -> None:
        await self.subscriber.start()
        try:
            while True:
                records = await self.subscriber.getmany(timeout_ms=500, max_records=5000)
                positions: dict[TopicPartition, int] = {}
                for record in records:
                    positions[record.tp] = record.offset + 1
                    try:
                        risk = RiskEvent.from_json(record.value or b"")
                    except ValidationError as exc:
                        log.warning("unreadable record on the risks topic (offset %d): %s", record.offset,
                                    exc.errors(include_url=False)[:1])
                        continue
                    if risk.event_id not in self._seen:   # at-least-once: count each transition once
                        self._seen.add(risk.event_id)
                        self.risks.append(risk)
                if positions:
                    await self.subscriber.commit(positions)
        finally:
            await self.subscriber.stop()


def _sqlite_path(url: str) -> Path | None:
    prefix = "sqlite+aiosqlite:///"
    return Path(url[len(prefix):]) if url.startswith(prefix) and url != prefix + ":memory:" else None


def _prepare_files(db_path: Path | None, outbox: Path) -> None:
    """The in-process bus starts empty each run, so stored consumer positions from an earlier run would
    point past its end: the embedded mode starts from a fresh SQLite file."""
    if db_path is not None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    outbox.mkdir(parents=True, exist_ok=True)


def _written_since(folder: Path, since: float) -> list[Path]:
    """Outbox files written by this run (the folder may hold earlier runs' files too)."""
    if not folder.is_dir():
        return []
    found = []
    for entry in os.scandir(folder):
        if entry.is_file() and not entry.name.endswith(".tmp") and entry.stat().st_mtime >= since - 1:
            found.append(Path(entry.path))
    return found


def _bind(host: str, port: int, name: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        env = f"CHURNSIGNAL_{name.upper()}_PORT"
        raise StartupFailed(f"cannot listen on {host}:{port} for {name} ({exc.strerror}); "
                            f"free the port or set {env}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _configure_output(out: TextIO, settings: Settings) -> None:
    """Alert lines read well on their own; the rest of the process logs warnings only (unless debugging)."""
    alerts = logging.getLogger(ALERT_LOGGER)
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    alerts.addHandler(handler)
    alerts.setLevel(logging.INFO)
    alerts.propagate = False
    if settings.log_level != "debug":
        logging.getLogger().setLevel(logging.WARNING)


async def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
    # uvicorn exits the process (SystemExit) when an app's start-up fails; here it is one of three.
    try:
        await server.serve(sockets=[sock])
    except SystemExit as exc:
        raise StartupFailed(f"start-up failed (exit code {exc.code}; see the error above)") from None


class EmbeddedRun:
    def __init__(self, settings: Settings, *, simulate: bool, params: SimulationParams | None,
                 duration_s: float | None, speedup: float, truth_path: str, keep_serving: bool,
                 out: TextIO) -> None:
        self.settings = settings
        self.simulate = simulate
        self.params = params
        self.duration_s = duration_s
        self.speedup = speedup
        self.truth_path = truth_path
        self.keep_serving = keep_serving
        self.out = out
        self.stop = asyncio.Event()
        self.stop_reason = ""
        self.sender: IngestSender | None = None
        self.simulation: Simulation | None = None
        self.api_key: str | None = None
        self.services: list[_Service] = []
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.first_alert_s: float | None = None
        self.collector: RiskCollector | None = None
        self.failed = False
        self.settled = False

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    # -- configuration ------------------------------------------------------------------------------
    def _keys(self) -> Settings:
        if self.settings.api_keys:
            key = os.environ.get(API_KEY_ENV)
            if self.simulate and not key:
                raise StartupFailed(f"CHURNSIGNAL_API_KEYS is set: set {API_KEY_ENV} to one of those keys "
                                    "(with the 'ingest' scope) for the simulator, or use --no-simulate")
            self.api_key = key
            return self.settings
        self.api_key = "cs_" + secrets.token_urlsafe(24)
        generated = ApiKey(name="embedded", sha256=hash_key(self.api_key), scopes=["ingest", "read", "admin"])
        return self.settings.model_copy(update={"api_keys": [generated]})

    # -- lifecycle ------------------------------------------------------------------------------------
    async def run(self) -> int:
        settings = self.settings
        db_path = _sqlite_path(settings.database_url)
        risks: list[RiskEvent] = []
        try:
            settings = self._keys()
            risks = await self._run(settings, db_path)
        except StartupFailed as exc:
            self.say(f"error: {exc}")
            self.failed = True
            self.stop_reason = "could not start"
        self._summary(settings, db_path, risks)
        return 1 if self.failed else 0

    async def _run(self, settings: Settings, db_path: Path | None) -> list[RiskEvent]:
        if not settings.embedded:
            self.say("note: `run` always uses the in-process bus; "
                     "CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS is ignored")
        _prepare_files(db_path, Path(settings.outbox_dir))
        from shared.migrate import upgrade_async  # imported late: Alembic logs at import time

        # The one migration of the run: the apps below share this database and do not migrate it again.
        await upgrade_async(settings.database_url)

        bus = MemoryBus(default_partitions=settings.topic_partitions)
        topics = Topics(settings.topic_prefix)
        await bus.ensure_topics(topics.all, settings.topic_partitions)
        self.services = self._build_services(settings, bus)
        sockets: list[socket.socket] = []
        collector = self.collector = RiskCollector(bus.subscriber([topics.risks], SUMMARY_GROUP))
        collector_task = asyncio.create_task(collector.run(), name="run-risk-collector")
        sim_task: asyncio.Task[None] | None = None
        self._install_signals()
        try:
            sockets = [_bind(settings.host, s.port, s.name) for s in self.services]
            await self._start_servers(sockets)
            self._banner(settings, db_path)
            if self.simulate and self.params is not None:
                self.simulation = generate(self.params)
                truth_file = write_truth(self.simulation.truth, self.truth_path)
                self.say(f"[simulate] {describe_plan(self.simulation)}; ground truth in {truth_file}")
                sim_task = asyncio.create_task(self._simulate(settings), name="run-simulator")
            await self._wait(bus, settings, topics, sim_task)
        finally:
            # The handlers stay until the servers have stopped: a second Ctrl-C during the graceful
            # shutdown must reach `_on_signal`, not Python's default (KeyboardInterrupt in every task).
            if sim_task is not None and not sim_task.done():
                sim_task.cancel()
                await asyncio.gather(sim_task, return_exceptions=True)
            await self._stop_servers()
            collector_task.cancel()
            await asyncio.gather(collector_task, return_exceptions=True)
            for sock in sockets:
                sock.close()
            self._remove_signals()
        return collector.risks

    def _build_services(self, settings: Settings, bus: MemoryBus) -> list[_Service]:
        from services.alerts.bootstrap import create_app as alerts_app
        from services.ingest.bootstrap import create_app as ingest_app
        from services.scoring.bootstrap import create_app as scoring_app

        # One bus for all three; each app keeps its own metrics registry (its own /metrics). The database
        # was migrated once by `_run`: the apps skip their own start-up migration.
        return [
            _Service("ingest", settings.ingest_port, ingest_app(settings, bus=bus)),
            _Service("scoring", settings.scoring_port, scoring_app(settings, bus=bus, migrate=False)),
            _Service("alerts", settings.alerts_port, alerts_app(settings, bus=bus, migrate=False,
                                                                digest_schedule=self._digest_schedule())),
        ]

    def _digest_schedule(self) -> Any:
        """Simulated, a day passes in 86,400 / speedup seconds: the daily digest of receivers without a
        `digest` of their own goes out once per simulated day. Otherwise the default (09:00 UTC)."""
        from services.alerts.domain.daily import DigestSchedule

        if not self.simulate or self.speedup <= 0:
            return None
        return DigestSchedule(every=timedelta(seconds=max(86400.0 / self.speedup, 5.0)))

    async def _start_servers(self, sockets: list[socket.socket]) -> None:
        # One after the other, each started before the next (a failure names the app that failed).
        for service, sock in zip(self.services, sockets, strict=True):
            config = uvicorn.Config(service.app, log_level="warning", access_log=False, lifespan="on",
                                    timeout_graceful_shutdown=10)
            service.server = _Server(config)
            service.task = asyncio.create_task(_serve(service.server, sock), name=f"serve-{service.name}")
            deadline = time.monotonic() + 60
            while not service.server.started:
                if service.task.done():
                    problem = service.task.exception() if not service.task.cancelled() else None
                    raise StartupFailed(f"{service.name} did not start" + (f": {problem}" if problem else ""))
                if time.monotonic() > deadline:
                    raise StartupFailed(f"{service.name} did not start within 60 s")
                if self.stop.is_set():
                    raise StartupFailed("interrupted while starting")
                await asyncio.sleep(0.02)

    async def _stop_servers(self) -> None:
        # Ingest first (no new events), then scoring, then alerts: each drains what it already took.
        for service in self.services:
            if service.server is None or service.task is None:
                continue
            service.server.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(service.task), timeout=40)
            except TimeoutError:
                service.server.force_exit = True
                await asyncio.gather(service.task, return_exceptions=True)
            except Exception as exc:  # report it and keep stopping the others
                self.say(f"warning: {service.name} stopped with an error: {exc!r}")

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)

    def _remove_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: int) -> None:
        if self.stop.is_set():  # a second Ctrl-C: no more waiting for the graceful shutdown
            self._exit_now(sig)
        self.stop_reason = f"{signal.Signals(sig).name} received"
        self.say(f"\n{self.stop_reason}: shutting down gracefully (Ctrl-C again to stop at once)")
        self.stop.set()

    def _exit_now(self, sig: int) -> None:
        """Leave the process at once, skipping the rest of the shutdown. Nothing of the embedded run outlives
        it: the SQLite file is fresh each run and outbox files are renamed into place only once written."""
        self.say(f"{signal.Signals(sig).name} again: stopped at once, without the summary")
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)

    # -- the simulator --------------------------------------------------------------------------------
    async def _simulate(self, settings: Settings) -> None:
        assert self.simulation is not None and self.api_key is not None
        url = f"http://{settings.host}:{settings.ingest_port}"
        async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0)) as client:
            self.sender = IngestSender(client, url, self.api_key, on_retry=RetryNotice(self.out, url))
            await stream_simulation(self.simulation, self.sender, speedup=self.speedup, out=self.out,
                                    progress_interval_s=10.0, overwrite=False)

    # -- waiting for the end ----------------------------------------------------------------------------
    async def _wait(self, bus: MemoryBus, settings: Settings, topics: Topics,
                    sim_task: asyncio.Task[None] | None) -> None:
        deadline = None if self.duration_s is None else self.started + self.duration_s
        settle_started: float | None = None
        quiet_checks = 0
        outbox = Path(settings.outbox_dir)
        while not self.stop.is_set():
            if self.first_alert_s is None and _written_since(outbox, self.started_wall):
                self.first_alert_s = time.monotonic() - self.started
                await asyncio.sleep(0.5)   # (the risks of that first alert reach the collector too)
                self._pages_line(self.collector.risks if self.collector is not None else [])
            if deadline is not None and time.monotonic() >= deadline:
                self.stop_reason = f"--duration {self.duration_s:g} s elapsed"
                return
            for s in self.services:
                if s.task is not None and s.task.done():
                    self.say(f"error: {s.name} stopped unexpectedly")
                    self.failed = True
                    self.stop_reason = f"{s.name} stopped"
                    return
            if sim_task is not None and sim_task.done():
                if not sim_task.cancelled() and sim_task.exception() is not None:
                    exc = sim_task.exception()
                    if isinstance(exc, IngestRejected):
                        message = exc.message
                    elif isinstance(exc, IngestUnavailable):
                        message = str(exc)
                    else:
                        message = repr(exc)
                    self.say(f"[simulate] stopped: {message}")
                    self.failed = True
                    self.stop_reason = "the simulator failed"
                    return
                if not self.keep_serving:
                    if settle_started is None:
                        settle_started = time.monotonic()
                        self.say("[simulate] all events sent; waiting for scoring and alerts to settle")
                    if await self._caught_up(bus, settings, topics):
                        quiet_checks += 1
                    else:
                        quiet_checks = 0
                    if quiet_checks >= 3:
                        self.settled = True
                        self.stop_reason = "simulation done and settled"
                        return
                    if time.monotonic() - settle_started > SETTLE_TIMEOUT_S:
                        self.stop_reason = f"simulation done (not settled after {SETTLE_TIMEOUT_S:.0f} s)"
                        return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=0.5)

    async def _caught_up(self, bus: MemoryBus, settings: Settings, topics: Topics) -> bool:
        """Scoring has committed everything on the input topics and alerts everything on `risks`."""
        for group, names in ((settings.scoring_group_id, topics.inputs), (settings.alerts_group_id,
                                                                           (topics.risks,))):
            probe = bus.subscriber(list(names), group)   # not started: only reads the group's positions
            tps = [TopicPartition(t, p) for t in names for p in range(settings.topic_partitions)]
            ends = await probe.end_offsets(tps)
            for tp in tps:
                if ends[tp] and (await probe.committed(tp) or 0) < ends[tp]:
                    return False
        return await self._no_pending_deliveries(settings)

    async def _no_pending_deliveries(self, settings: Settings) -> bool:
        if self.api_key is None:
            return True
        url = f"http://{settings.host}:{settings.alerts_port}/v1/deliveries"
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                response = await client.get(url, params={"status": "pending"},
                                            headers={"Authorization": f"Bearer {self.api_key}"})
        except httpx.HTTPError:
            return True
        if response.status_code != 200:
            return True
        body: Any = response.json()
        return not (isinstance(body, dict) and body.get("items"))

    # -- what the user reads ------------------------------------------------------------------------------
    def _banner(self, settings: Settings, db_path: Path | None) -> None:
        host = settings.host
        ingest, scoring, alerts = (f"http://{host}:{s.port}" for s in self.services)
        self.say("churnsignal is running: ingest, scoring and alerts in one process "
                 "(in-process bus, SQLite)")
        self.say(f"  ingest   {ingest}   POST /v1/events            docs {ingest}/docs")
        self.say(f"  scoring  {scoring}   GET /v1/accounts, /v1/risks docs {scoring}/docs")
        self.say(f"  alerts   {alerts}   GET /v1/alerts, /v1/deliveries docs {alerts}/docs")
        self.say(f"  pages    {alerts}/ui/accounts/<id>, {alerts}/ui/portfolio?csm=<e-mail>   (open an alert's "
                 "link, or send the API key)")
        if self.api_key is not None and not self.settings.api_keys:
            self.say(f"  API key  {self.api_key}   (scopes ingest, read, admin; new each run)")
            self.say(f'  try      curl -H "Authorization: Bearer {self.api_key}" '
                     f"'{scoring}/v1/accounts?tier=red'")
        else:
            self.say("  API keys from CHURNSIGNAL_API_KEYS")
        self.say(f"  files    database {db_path or settings.database_url}"
                 + (" (fresh each run)" if db_path else "") + f", alerts in {settings.outbox_dir}/")
        if not settings.slack_bot_token and not settings.slack_webhook_url and not settings.smtp_host:
            self.say("  no Slack or SMTP configured: alerts are written to the outbox and shown below")
        self.say("Ctrl-C stops.")

    def _summary(self, settings: Settings, db_path: Path | None, risks: list[RiskEvent]) -> None:
        elapsed = time.monotonic() - self.started
        self.say("")
        self.say(f"== churnsignal run summary ({self.stop_reason or 'stopped'}, {elapsed:.0f} s) ==")
        if self.sender is not None:
            self.say(f"events sent: {self.sender.stats.events_sent:,}")
        if self.first_alert_s is not None:
            self.say(f"first alert after: {self.first_alert_s:.1f} s")
        if self.simulation is not None:
            # Stopped early: stories that had not begun by the event time reached are not "missed".
            until = None
            if not self.settled:
                reached = self.sender.stats.last_event_at if self.sender is not None else None
                until = reached or self.simulation.truth.start
            summary = score_against_truth(self.simulation.truth, risks, until=until)
            for line in summary.lines():
                self.say(line)
        else:
            opened = Counter(r.type for r in risks if r.transition == "opened")
            by_type = ", ".join(f"{t} {n}" for t, n in opened.most_common())
            self.say(f"risks raised: {sum(opened.values())}" + (f" ({by_type})" if by_type else ""))
        self._digests_line()
        outbox = Path(settings.outbox_dir)
        files = _written_since(outbox, self.started_wall)
        slack = sum(1 for f in files if f.suffix == ".json" and not f.name.endswith(".webhook.json"))
        emails = sum(1 for f in files if f.suffix == ".eml")
        self.say(f"files: outbox {outbox}/ ({slack} Slack payloads and {emails} emails written this run); "
                 f"database {db_path or settings.database_url}"
                 + (f"; ground truth {self.truth_path}" if self.simulation is not None else ""))


    def _pages_line(self, risks: list[RiskEvent]) -> None:
        """A signed link to the portfolio of the CSM with the most risks so far (said once, at the first alert,
        while the pages are served): where to look in a browser."""
        alerts = next((s for s in self.services if s.name == "alerts"), None)
        keys = getattr(alerts.app.state, "action_keys", None) if alerts is not None else None
        csms = Counter(r.account.csm.email for r in risks if r.account.csm is not None and r.account.csm.email)
        if keys is None or not keys.link or not csms:
            return
        from shared.links import portfolio_url, sign_portfolio_link

        csm = csms.most_common(1)[0][0]
        token = sign_portfolio_link(keys.link, csm, now=datetime.now(UTC),
                                    ttl=timedelta(days=self.settings.link_ttl_days))
        self.say(f"portfolio of {csm} (a signed link, valid {self.settings.link_ttl_days:g} days): "
                 f"{portfolio_url(self.settings.public_url, csm, token)}")

    def _digests_line(self) -> None:
        alerts = next((s for s in self.services if s.name == "alerts"), None)
        periodic = getattr(alerts.app.state, "periodic", None) if alerts is not None else None
        if periodic is None:
            return
        sent = periodic.daily_sent
        total = sum(sent.values())
        targets = ", ".join(sorted(sent)[:5]) + (f" and {len(sent) - 5} more" if len(sent) > 5 else "")
        self.say(f"digests sent: {total}" + (f" (to {targets})" if total else " (none due during the run)"))


async def run_embedded(settings: Settings, *, simulate: bool = True, accounts: int = 200,
                       duration_s: float | None = None, seed: int = 42, history_days: float = 60.0,
                       live_days: float = 14.0, speedup: float = 3600.0, churn_rate: float = 0.12,
                       truth_path: str = "var/simulate-truth.json", keep_serving: bool = False,
                       out: TextIO | None = None) -> int:
    """Run all three services embedded; returns the process exit code."""
    stream = out or sys.stdout
    _configure_output(stream, settings)
    params = None
    if simulate:
        params = SimulationParams(now=datetime.now(UTC).replace(microsecond=0), seed=seed, accounts=accounts,
                                  history_days=history_days, live_days=live_days, churn_rate=churn_rate)
    runner = EmbeddedRun(settings, simulate=simulate, params=params, duration_s=duration_s, speedup=speedup,
                         truth_path=truth_path, keep_serving=keep_serving, out=stream)
    return await runner.run()
