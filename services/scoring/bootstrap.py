"""Composition root of scoring: database, domain model, store, consumer and the read API.

The database's dialect is decided here, once: `build_store` gives the store the PostgreSQL or the SQLite
statements, so the adapters never ask which database they are on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scoring.adapters.errors import StoreUnavailable
from services.scoring.adapters.queries import ScoringQueries
from services.scoring.adapters.retention import scoring_steps
from services.scoring.adapters.store import ScoringStore, StoreDialect
from services.scoring.adapters.store_postgres import PostgresStatements
from services.scoring.adapters.store_sqlite import SqliteStatements
from services.scoring.entrypoints.api import read_router
from services.scoring.entrypoints.consumer import ScoringConsumer
from services.scoring.entrypoints.options import ConsumerOptions
from services.scoring.entrypoints.ports import ScoringModel
from shared.backoff import Backoff
from shared.bus import Bus, build_bus
from shared.bus.memory import MemoryBus
from shared.db import create_engine, is_postgres
from shared.http import KeyRing, install_common
from shared.metrics import CommonMetrics, ScoringMetrics, new_registry
from shared.migrate import upgrade_async
from shared.process import tune_gc
from shared.retention import FIRST_RUN_S, RetentionPruner
from shared.settings import Settings
from shared.topics import Topics

log = logging.getLogger(__name__)


def build_model(settings: Settings) -> ScoringModel:
    """The real domain: engine with the configured scoring, the state codec, the partition clock."""
    from services.scoring.adapters.portfolio_columns import account_portfolio
    from services.scoring.adapters.revenue import account_revenue
    from services.scoring.domain.clock import PartitionClock
    from services.scoring.domain.config import ScoringConfig
    from services.scoring.domain.engine import ScoringEngine
    from services.scoring.domain.state import decode_state, encode_state

    config = ScoringConfig.load(settings.scoring_config_file)
    return ScoringModel(engine=ScoringEngine(config), encode_state=encode_state, decode_state=decode_state,
                        new_clock=PartitionClock, config_version=config.version, revenue=account_revenue,
                        portfolio=account_portfolio, previous_health=last_recorded_health)


def last_recorded_health(state: Any) -> tuple[float | None, str]:
    """A domain state's last recorded snapshot: its score (kept in tenths of a point, as scores are rounded)
    and tier; (None, "unknown") before the first one."""
    last = state.last_score
    return (None if last is None else last / 10, state.last_tier)


def build_store(engine: AsyncEngine) -> ScoringStore:
    """The store on `engine`, with the statements of its database: PostgreSQL's one-statement batch
    through asyncpg, or SQLite's executemany (the one place that tells the two apart)."""
    dialect: StoreDialect = PostgresStatements(engine) if is_postgres(engine) else SqliteStatements(engine)
    return ScoringStore(engine, dialect)


@dataclass
class ScoringRuntime:
    engine: AsyncEngine
    store: ScoringStore
    queries: ScoringQueries
    model: ScoringModel
    consumer: ScoringConsumer
    metrics: ScoringMetrics
    common: CommonMetrics
    registry: CollectorRegistry


async def prepare_database(settings: Settings, engine: AsyncEngine, store: ScoringStore, *,
                           migrate: bool = True) -> None:
    """SQLite: migrate at start, unless `migrate` is False (`churnsignal run` migrates the file once,
    before starting the three apps). PostgreSQL: `churnsignal migrate` must have run."""
    if settings.database_url.startswith("sqlite"):
        if migrate:
            await upgrade_async(settings.database_url)
    else:
        await store.check_schema()


@contextlib.asynccontextmanager
async def scoring_runtime(settings: Settings, *, bus: Bus | None = None,
                          registry: CollectorRegistry | None = None,
                          model: ScoringModel | None = None,
                          migrate: bool = True) -> AsyncIterator[ScoringRuntime]:
    """Everything scoring needs, started; the consumer is built but not running (see `run_consumer`).
    `migrate=False`: the caller has migrated the SQLite database already (see `prepare_database`)."""
    own_bus = bus is None
    the_bus: Bus = build_bus(settings) if bus is None else bus
    registry = new_registry() if registry is None else registry
    metrics = ScoringMetrics(registry)
    common = CommonMetrics(registry, "scoring")
    # No ping per checkout: the store invalidates a broken connection and the batch is retried.
    engine = create_engine(settings.database_url, pre_ping=False)
    try:
        store = build_store(engine)
        await prepare_database(settings, engine, store, migrate=migrate)
        the_model = build_model(settings) if model is None else model
        options = ConsumerOptions(group_id=settings.scoring_group_id, partitions=settings.topic_partitions,
                                  max_batch=settings.scoring_batch_max_records,
                                  allowed_lateness=timedelta(seconds=settings.scoring_allowed_lateness_s),
                                  idle_timeout_s=settings.scoring_idle_timeout_s,
                                  sweep_chunk=settings.scoring_sweep_chunk,
                                  dedup_horizon=settings.retention_age("scoring_processed_events"),
                                  publish_settle_s=(0.0 if isinstance(the_bus, MemoryBus)
                                                    else ConsumerOptions.publish_settle_s))
        consumer = ScoringConsumer(bus=the_bus, store=store, model=the_model,
                                   topics=Topics(settings.topic_prefix), options=options, metrics=metrics,
                                   common=common)
        yield ScoringRuntime(engine, store, ScoringQueries(engine), the_model, consumer, metrics, common,
                             registry)
    finally:
        await engine.dispose()
        if own_bus:
            await the_bus.close()


async def run_consumer(consumer: ScoringConsumer, *, restart: bool) -> None:
    """Run the consumer until stopped. With `restart`, a failure is logged and the consumer restarted
    after a growing pause (the service stays up and reports not ready meanwhile)."""
    backoff = Backoff(0.5, cap=30.0)
    while True:
        try:
            await consumer.run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            if not restart:
                raise
            delay = backoff.next()
            log.exception("scoring consumer failed; restarting in %.1fs", delay)
            await asyncio.sleep(delay)


def retention_pruner(settings: Settings, rt: ScoringRuntime) -> RetentionPruner:
    """Scoring's retention (docs/retention.md): first run shortly after start, then every interval."""
    return RetentionPruner(rt.engine, scoring_steps(settings), metrics=rt.metrics.retention,
                           interval_s=settings.retention_interval_s,
                           first_run_s=min(FIRST_RUN_S, settings.retention_interval_s))


def create_app(settings: Settings, *, bus: Bus | None = None, registry: CollectorRegistry | None = None,
               model: ScoringModel | None = None, migrate: bool = True) -> FastAPI:
    """The scoring service: consumer in the background, read API on top. `model` replaces the domain
    (tests only); `migrate=False` leaves the SQLite migrations to the caller (embedded mode)."""
    registry = new_registry() if registry is None else registry
    holder: dict[str, ScoringRuntime] = {}

    def runtime() -> ScoringRuntime:
        found = holder.get("runtime")
        if found is None:
            raise StoreUnavailable("scoring is starting")
        return found

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with scoring_runtime(settings, bus=bus, registry=registry, model=model, migrate=migrate) as rt:
            holder["runtime"] = rt
            task = asyncio.create_task(run_consumer(rt.consumer, restart=True), name="scoring-consumer")
            # Retention, off the hot path: old processed ids, published outbox rows and history.
            pruner = retention_pruner(settings, rt)
            app.state.retention = pruner
            pruning = asyncio.create_task(pruner.run_forever(), name="scoring-retention")
            if bus is None:  # its own process (`churnsignal serve scoring`)
                tune_gc()
            rt.common.ready.set(1)
            try:
                yield
            finally:
                rt.common.ready.set(0)
                pruning.cancel()
                await asyncio.gather(pruning, return_exceptions=True)
                rt.consumer.stop()
                try:
                    await asyncio.wait_for(task, timeout=30)
                except TimeoutError:
                    log.error("scoring consumer did not stop within 30s; cancelled")
                holder.clear()

    async def readiness() -> dict[str, bool]:
        rt = holder.get("runtime")
        if rt is None:
            return {"database": False, "consumer": False}
        try:
            database = await rt.store.ping()
        except StoreUnavailable:
            database = False
        # (a consumer stuck without progress is not ready: its Kafka subscriber is being replaced)
        return {"database": database, "consumer": rt.consumer.running and rt.consumer.progressing}

    app = FastAPI(title="churnsignal scoring", version="0.1.0", lifespan=lifespan,
                  description="Live, explainable account health and churn risks.")
    app.include_router(read_router(lambda: runtime().queries, lambda: runtime().model,
                                   KeyRing(settings.api_keys)))
    install_common(app, registry=registry, readiness=readiness)
    return app
