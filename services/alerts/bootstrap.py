"""Composition root of alerts: routing tree, channels, Deliverer, consumer, periodic tasks and the API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.alerts.adapters.claim_session import claim_session
from services.alerts.adapters.rate_slots import PgSlotStore
from services.alerts.adapters.repository import SqlUnitOfWork
from services.alerts.adapters.retention import alerts_steps
from services.alerts.domain.content import Notification
from services.alerts.domain.daily import DigestSchedule
from services.alerts.domain.routing import SLACK_WEBHOOK_REF, RoutingTree, fallback_receiver
from services.alerts.domain.routing_config import parse_routing
from services.alerts.entrypoints.actions_api import ActionKeys, build_actions_router
from services.alerts.entrypoints.api import build_router
from services.alerts.entrypoints.consumer import RiskConsumer
from services.alerts.entrypoints.periodic import PeriodicTasks
from services.alerts.feed.config import FeedEndpoint, feed_endpoints
from services.alerts.feed.sender import FeedSender, SenderOptions
from services.alerts.notify.channel import Channel
from services.alerts.notify.console import ConsoleChannel
from services.alerts.notify.delivery import Deliverer
from services.alerts.notify.email import EmailChannel
from services.alerts.notify.http import new_session
from services.alerts.notify.secrets import SecretLookup
from services.alerts.notify.slack_api import SlackApiChannel
from services.alerts.notify.slack_response import SlackResponder
from services.alerts.notify.slack_webhook import SlackWebhookChannel
from services.alerts.notify.webhook import WebhookChannel
from services.alerts.service.dispatch import DeliveryRunner
from services.alerts.service.pipeline import AlertPipeline
from services.scoring.bootstrap import build_model as build_scoring_model
from services.ui.queries import UiReadModel
from services.ui.router import ui_router
from shared.bus import Bus, build_bus
from shared.db import create_engine
from shared.db_errors import ENGINE_ERRORS
from shared.errors import BusUnavailable
from shared.http import KeyRing, install_common
from shared.link_key import LinkKey
from shared.metrics import AlertsMetrics, CommonMetrics, FeedMetrics, new_registry
from shared.migrate import upgrade_async
from shared.process import tune_gc
from shared.retention import FIRST_RUN_S, RetentionPruner
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 10.0
# Sends in flight per channel kind (SMTP opens one connection per message).
MAX_SENDS_IN_FLIGHT = {"slack_dm": 32, "slack_webhook": 32, "webhook": 32, "email": 8}
# A claimed delivery's sender renews its lease every couple of seconds; another instance (or this one
# after a restart) resends it only once the lease has run out for this long.
DELIVERY_LEASE = timedelta(seconds=30)


def utcnow() -> datetime:
    return datetime.now(UTC)


def load_routing(settings: Settings) -> RoutingTree:
    """The routing file when configured (a bad file fails start-up, naming the key), else the default."""
    fallback = fallback_receiver(
        settings.fallback_email, SLACK_WEBHOOK_REF if settings.slack_webhook_url is not None else None
    )
    if settings.routing_file:
        try:
            return parse_routing(Path(settings.routing_file).read_text(encoding="utf-8"), fallback=fallback)
        except ValueError as exc:
            raise ValueError(f"{exc} (in {settings.routing_file})") from None
    return RoutingTree.default(fallback)


def console_mode(settings: Settings) -> bool:
    """Embedded mode with neither Slack nor SMTP configured: every alert goes to the outbox folder."""
    return settings.embedded and not (
        settings.slack_bot_token or settings.slack_webhook_url or settings.smtp_host
    )


class BoundedChannel:
    """At most `limit` sends of one channel in flight: a burst of claimed deliveries (a backlog cleared at
    once) queues here instead of flooding the receiver, which would answer late, time attempts out and
    turn retries into duplicates. The wait counts in the Deliverer's attempt timeout; a send that times
    out while waiting here was never made, so retrying it is safe."""

    def __init__(self, channel: Channel, limit: int) -> None:
        self.kind = channel.kind
        self._channel = channel
        self._slots = asyncio.Semaphore(limit)

    async def send(self, notification: Notification) -> None:
        async with self._slots:
            await self._channel.send(notification)


def build_channels(
    settings: Settings, client: aiohttp.ClientSession, secrets: SecretLookup
) -> tuple[dict[str, Channel], Channel | None]:
    """Channels by target kind, and the default channel (the console outbox) when in console mode."""
    console = ConsoleChannel(settings.outbox_dir, sender=settings.smtp_from)
    channels: dict[str, Channel] = {
        "slack_webhook": SlackWebhookChannel(client, secrets),
        "webhook": WebhookChannel(client, secrets),
        "console": console,
    }
    if settings.slack_bot_token is not None:
        channels["slack_dm"] = SlackApiChannel(
            client, settings.slack_bot_token, base_url=settings.slack_api_url
        )
    email = EmailChannel.from_settings(settings)
    if email is not None:
        channels["email"] = email
    if console_mode(settings):
        return {"console": console}, console
    return {
        kind: BoundedChannel(channel, MAX_SENDS_IN_FLIGHT.get(kind, 32)) for kind, channel in channels.items()
    }, None


async def prepare_database(settings: Settings, engine: AsyncEngine, *, migrate: bool = True) -> None:
    """SQLite: migrate at start, unless `migrate` is False (`churnsignal run` migrates the file once,
    before starting the three apps). PostgreSQL: `churnsignal migrate` must have run."""
    if settings.database_url.startswith("sqlite"):
        if migrate:
            await upgrade_async(settings.database_url)
        return
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1 FROM alerts_positions LIMIT 1"))
    except ProgrammingError as exc:
        raise RuntimeError("the alerts tables are missing: run `churnsignal migrate` first") from exc


def slack_signing_key(settings: Settings) -> bytes | None:
    """The Slack signing secret (None: Slack buttons answer 503, logged once at start)."""
    signing = settings.slack_signing_secret
    if signing is None:
        log.info("Slack buttons answer 503 until CHURNSIGNAL_SLACK_SIGNING_SECRET is set")
        return None
    return signing.get_secret_value().encode()


@dataclass(eq=False)
class _Service:
    """The alerts service's parts, wired once (`_wire`), started and stopped by the app's lifespan."""

    settings: Settings
    bus: Bus
    own_bus: bool                      # built here from the settings (closed with the app)
    metrics: AlertsMetrics
    common: CommonMetrics
    topics: Topics
    tree: RoutingTree
    engine: AsyncEngine
    runner: DeliveryRunner
    pipeline: AlertPipeline
    consumer: RiskConsumer
    periodic: PeriodicTasks
    retention: RetentionPruner
    keys: ActionKeys = field(default_factory=ActionKeys)
    responder: SlackResponder = field(default_factory=SlackResponder)
    link_key: LinkKey | None = None
    client: Any = None
    slots: PgSlotStore | None = None
    background: list[asyncio.Task[Any]] = field(default_factory=list)
    consuming: asyncio.Task[None] | None = None
    # The health feed's subscribers (none: the feed is off) and their senders, started with the consumer.
    feed_endpoints: list[FeedEndpoint] = field(default_factory=list)
    feed_metrics: FeedMetrics | None = None
    feed_senders: list[FeedSender] = field(default_factory=list)
    feed_tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def prepare(self, migrate: bool) -> None:
        """The database, the keys, the HTTP pool and the shared rate slots (before anything runs)."""
        settings = self.settings
        await prepare_database(settings, self.engine, migrate=migrate)
        self.keys.slack_signing = slack_signing_key(settings)
        # One key signs every link (pages, portfolios, e-mail actions): configured, or kept in the database.
        assert self.link_key is not None
        self.keys.link = await self.link_key.load(self.engine)
        self.pipeline.action_secret = self.keys.link
        self.pipeline.link_ttl = timedelta(days=settings.link_ttl_days)
        # One pool (128 connections) for the Slack and webhook channels and the answers to Slack clicks;
        # sends in flight are bounded per channel kind (MAX_SENDS_IN_FLIGHT).
        self.client = new_session()
        self.responder.attach(self.client)
        # Slack's per-target rate, across instances: slots shared in PostgreSQL; embedded (one process,
        # SQLite) the Deliverer's own limiter is the whole story.
        if not settings.database_url.startswith("sqlite"):
            self.slots = PgSlotStore.from_url(settings.database_url)

    async def start(self) -> None:
        """The channels, the delivery runner, the periodic tasks and the risks consumer."""
        settings, runner = self.settings, self.runner
        secrets = SecretLookup.from_settings(settings, self.tree)
        channels, default = build_channels(settings, self.client, secrets)
        runner.attach(
            Deliverer(
                channels,
                default_channel=default,
                on_attempt=runner.on_attempt,
                deadline_s=settings.alerts_delivery_deadline_s,
                metrics=self.metrics,
                common_metrics=self.common,
                rate_slots=self.slots,
            )
        )
        try:
            await self.bus.ensure_topics([self.topics.risks], settings.topic_partitions)
        except BusUnavailable as exc:
            log.warning("cannot create the risks topic yet (%s); the consumer waits for it", exc)
        periodic = self.periodic
        self.background = [
            _spawn(runner.run_writer(), "alerts-outcomes"),
            _spawn(runner.run_resumer(), "alerts-resume"),
            _spawn(periodic.run_digests(), "alerts-digests"),
            _spawn(periodic.run_daily_digests(), "alerts-daily-digests"),
            _spawn(periodic.run_repeats(), "alerts-repeats"),
            # Retention (docs/retention.md): processed ids, finished deliveries, consumed digest items...
            _spawn(self.retention.run_forever(), "alerts-retention"),
        ]
        self.consuming = _spawn(self.consumer.run_forever(), "alerts-consumer")
        await self._start_feed()
        if self.own_bus:  # its own process (`churnsignal serve alerts`)
            tune_gc()
        self.common.ready.set(1)

    async def _start_feed(self) -> None:
        """One sender per subscriber of the health feed, each in its own consumer group."""
        if not self.feed_endpoints:
            return
        settings = self.settings
        try:
            await self.bus.ensure_topics([self.topics.health, self.topics.deadletter], settings.topic_partitions,
                                         self.topics.configs)
        except BusUnavailable as exc:
            log.warning("cannot create the health topic yet (%s); the feed waits for it", exc)
        assert self.feed_metrics is not None
        options = SenderOptions(retry_deadline_s=settings.feed_retry_deadline_s)
        for endpoint in self.feed_endpoints:
            sender = FeedSender(self.bus, topic=self.topics.health, deadletter_topic=self.topics.deadletter,
                                group_id=f"{settings.feed_group_id}.{endpoint.name}", endpoint=endpoint,
                                session=self.client, metrics=self.feed_metrics, common=self.common,
                                options=options)
            self.feed_senders.append(sender)
            self.feed_tasks.append(_spawn(sender.run_forever(), f"alerts-feed-{endpoint.name}"))

    async def _stop_feed(self) -> None:
        for sender in self.feed_senders:
            sender.stop()
        for task in self.feed_tasks:
            try:
                await asyncio.wait_for(asyncio.shield(task), DRAIN_TIMEOUT_S)
            except TimeoutError:
                await _cancel(task)
            except Exception as exc:  # its own failure, already logged by _spawn
                log.debug("feed sender ended with %s", type(exc).__name__)

    async def stop(self) -> None:
        """Drain: the consumer first, then the background tasks, the deliveries in flight, the outcome writer."""
        self.common.ready.set(0)
        self.consumer.stop()
        await self._stop_feed()
        if self.consuming is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self.consuming), DRAIN_TIMEOUT_S)
            except TimeoutError:
                await _cancel(self.consuming)
            except Exception as exc:  # the consumer's own failure, already logged by _spawn
                log.debug("consumer ended with %s", type(exc).__name__)
        writer, others = self.background[:1], self.background[1:]
        for task in others:
            await _cancel(task)
        await self.runner.drain(DRAIN_TIMEOUT_S)
        for task in writer:
            await _cancel(task)
        self.responder.attach(None)
        await self.client.close()
        if self.slots is not None:
            await self.slots.close()
        await self.engine.dispose()
        if self.own_bus:
            await self.bus.close()

    async def readiness(self) -> dict[str, bool]:
        try:
            async with asyncio.timeout(2.0), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            db = True
        except ENGINE_ERRORS:  # the timeout's TimeoutError included: an OSError
            db = False
        ready = {"database": db and self.runner.db_ok, "consumer": self.consumer.healthy}
        if self.feed_senders:
            ready["feed"] = all(sender.healthy for sender in self.feed_senders)
        return ready


def _wire(settings: Settings, bus: Bus | None, registry: CollectorRegistry,
          digest_schedule: DigestSchedule | None) -> _Service:
    """Every part of the service, built and injected here, once (nothing runs yet)."""
    the_bus: Bus = build_bus(settings) if bus is None else bus
    metrics = AlertsMetrics(registry)
    common = CommonMetrics(registry, "alerts")
    topics = Topics(settings.topic_prefix)
    tree = load_routing(settings)
    engine = create_engine(settings.database_url)
    # The stores: chosen here, once, and injected (the consumer's claims by dialect, see claim_session).
    uow = SqlUnitOfWork(engine)
    lease = DELIVERY_LEASE
    runner = DeliveryRunner(uow, clock=utcnow, lease=lease, metrics=metrics, common=common)
    enabled = None if console_mode(settings) else _enabled_kinds(settings)
    pipeline = AlertPipeline(tree, public_url=settings.public_url, enabled=enabled, lease=lease, metrics=metrics,
                             clock=utcnow, digest_schedule=digest_schedule)
    consumer = RiskConsumer(the_bus, topic=topics.risks, group_id=settings.alerts_group_id,
                            claims=claim_session(engine), pipeline=pipeline, runner=runner, metrics=metrics,
                            common=common, clock=utcnow, batch_max=settings.alerts_batch_max_records,
                            dedup_horizon=settings.retention_age("alerts_processed"))
    periodic = PeriodicTasks(uow, pipeline, runner, clock=utcnow, digest_every_s=settings.alerts_digest_check_s,
                             repeat_every_s=settings.alerts_repeat_check_s)
    retention = RetentionPruner(engine, alerts_steps(settings), metrics=metrics.retention,
                                interval_s=settings.retention_interval_s,
                                first_run_s=min(FIRST_RUN_S, settings.retention_interval_s))
    return _Service(settings, the_bus, bus is None, metrics, common, topics, tree, engine, runner, pipeline,
                    consumer, periodic, retention, link_key=LinkKey(settings),
                    feed_endpoints=feed_endpoints(settings.feed_webhooks), feed_metrics=FeedMetrics(registry))


def create_app(
    settings: Settings,
    *,
    bus: Bus | None = None,
    registry: CollectorRegistry | None = None,
    migrate: bool = True,
    digest_schedule: DigestSchedule | None = None,
) -> FastAPI:
    """The alerts app. With `bus` None it builds (and owns) the bus from the settings. `migrate=False` leaves
    the SQLite migrations to the caller (embedded mode). `digest_schedule`: the daily digest schedule of
    receivers that set none (default 09:00 UTC; the embedded mode sends one per simulated day)."""
    registry = new_registry() if registry is None else registry
    service = _wire(settings, bus, registry, digest_schedule)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.prepare(migrate)
        try:
            await service.start()
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="churnsignal alerts",
        version="0.1.0",
        lifespan=lifespan,
        description="Risk events → Slack, email and signed webhooks, once; silences, "
        "acknowledgements and the delivery log.",
    )
    engine, keys = service.engine, KeyRing(settings.api_keys)
    app.include_router(build_router(engine, keys, utcnow))
    app.include_router(build_actions_router(engine, utcnow, service.keys, service.responder))
    # The web pages (services/ui) live here, at the public URL the messages link to; they read scoring's
    # tables (read only) through scoring's own codec and engine.
    app.include_router(ui_router(UiReadModel(engine, build_scoring_model(settings)), link_secret=service.link_key,
                                 keyring=keys, public_url=settings.public_url))
    app.state.consumer = service.consumer
    app.state.runner = service.runner
    app.state.periodic = service.periodic
    app.state.retention = service.retention
    app.state.pipeline = service.pipeline
    app.state.engine = engine
    app.state.action_keys = service.keys
    app.state.slack_responder = service.responder
    app.state.feed_senders = service.feed_senders
    install_common(app, registry=registry, readiness=service.readiness)
    return app


def _enabled_kinds(settings: Settings) -> set[str]:
    kinds = {"slack_webhook", "webhook", "console"}
    if settings.slack_bot_token is not None:
        kinds.add("slack_dm")
    if settings.smtp_host:
        kinds.add("email")
    return kinds


def _spawn(coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
    task = asyncio.create_task(coro, name=name)

    def done(t: asyncio.Task[Any]) -> None:
        if not t.cancelled() and t.exception() is not None:
            log.error("%s stopped: %s", name, type(t.exception()).__name__, exc_info=t.exception())

    task.add_done_callback(done)
    return task


async def _cancel(task: asyncio.Task[Any]) -> None:
    if task.done():  # ended by itself; a failure was logged when it happened
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
