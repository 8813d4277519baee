"""Scoring's retention (docs/retention.md): old rows pruned in batches, what is still needed kept, the
processed-at column of migration 0009, the deduplication horizon in the consumer, and the pruner started by
the composition root."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command

from services.scoring.adapters import tables as t
from services.scoring.adapters.retention import scoring_steps
from services.scoring.bootstrap import create_app
from shared.db import create_engine
from shared.metrics import RetentionMetrics, new_registry
from shared.migrate import _LOCK, alembic_config, upgrade_async
from shared.retention import PruneStep, RetentionPruner
from shared.settings import Settings
from tests.stack.scoring.events import T0, days, ticket
from tests.stack.scoring.harness import Stack, count, produce, records_for, running, wait_caught_up

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _pruner(url: str, settings: Settings, *, batch_size: int = 2) -> tuple[RetentionPruner, RetentionMetrics]:
    metrics = RetentionMetrics(new_registry())
    engine = create_engine(url, pool_size=1)
    pruner = RetentionPruner(engine, scoring_steps(settings), metrics=metrics, interval_s=60, clock=lambda: NOW,
                             batch_size=batch_size, pause_s=0)
    return pruner, metrics


async def _insert(url: str, table: sa.Table, rows: list[dict]) -> None:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.insert(table), rows)
    finally:
        await engine.dispose()


async def _column(url: str, column: sa.Column, *where: sa.ColumnElement[bool]) -> list:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return sorted((await conn.execute(sa.select(column).where(*where))).scalars().all())
    finally:
        await engine.dispose()


def _history(account_id: str, as_of: datetime) -> dict:
    return {"account_id": account_id, "as_of": as_of, "cause": None, "score": 50.0, "tier": "yellow",
            "snapshot": "{}"}


def _outbox(event_id: str, created_at: datetime, published_at: datetime | None) -> dict:
    return {"event_id": event_id, "partition": 0, "key": "acme", "payload": b"{}", "created_at": created_at,
            "published_at": published_at}


async def test_old_rows_go_in_batches_and_what_is_still_needed_stays(database_url: str):
    settings = Settings()   # the documented defaults: 35-day horizon, outbox 7 days, history 400 days
    await _insert(database_url, t.partitions, [{"partition": 0, "watermark": NOW - days(1), "updated_at": NOW}])
    await _insert(database_url, t.processed_events,
                  [{"event_id": f"old-{i}", "processed_at": NOW - days(40 + i)} for i in range(5)]
                  + [{"event_id": "young", "processed_at": NOW - days(30)}])
    await _insert(database_url, t.outbox, [_outbox("published-long-ago", NOW - days(30), NOW - days(30)),
                                           _outbox("published-lately", NOW - days(2), NOW - days(2)),
                                           _outbox("never-published", NOW - days(90), None)])
    await _insert(database_url, t.history, [_history("acme", NOW - days(500)), _history("acme", NOW - days(450)),
                                            _history("acme", NOW - days(10)), _history("dormant", NOW - days(600)),
                                            _history("dormant", NOW - days(500))])
    pruner, metrics = _pruner(database_url, settings)
    batches: list[str] = []
    original = PruneStep.batch

    def counted(step: PruneStep, cutoff: datetime, size: int) -> sa.Delete:
        batches.append(step.table)
        return original(step, cutoff, size)

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(PruneStep, "batch", counted)
            deleted = await pruner.run_once()
    finally:
        await pruner._engine.dispose()

    assert deleted == {"scoring_processed_events": 5, "scoring_outbox": 1, "scoring_history": 3}
    # batches of 2 rows: 5 processed ids take three statements; every table ends on a short batch
    assert batches.count("scoring_processed_events") == 3
    assert await _column(database_url, t.processed_events.c.event_id) == ["young"]
    assert await _column(database_url, t.outbox.c.event_id) == ["never-published", "published-lately"]
    kept = await _column(database_url, t.history.c.as_of)
    assert kept == [NOW - days(500), NOW - days(10)]   # dormant's latest snapshot stays, however old
    assert await _column(database_url, t.history.c.account_id) == ["acme", "dormant"]
    assert metrics.deleted.labels("scoring_processed_events")._value.get() == 5
    assert metrics.deleted.labels("scoring_history")._value.get() == 3
    assert metrics.last_run._value.get() > 0

    # A second run (another replica, the next interval) finds nothing more to delete.
    again, _ = _pruner(database_url, settings)
    try:
        assert await again.run_once() == {"scoring_processed_events": 0, "scoring_outbox": 0, "scoring_history": 0}
    finally:
        await again._engine.dispose()


async def test_a_partition_clock_behind_holds_processed_ids_back(database_url: str):
    """Ids are pruned relative to the oldest partition watermark: a partition still 60 days behind could
    still see copies of events processed 40 days ago within its horizon."""
    await _insert(database_url, t.partitions, [{"partition": 0, "watermark": NOW - days(1), "updated_at": NOW},
                                               {"partition": 1, "watermark": NOW - days(60), "updated_at": NOW}])
    await _insert(database_url, t.processed_events, [{"event_id": "e40", "processed_at": NOW - days(40)},
                                                     {"event_id": "e100", "processed_at": NOW - days(100)}])
    pruner, _ = _pruner(database_url, Settings())
    try:
        deleted = await pruner.run_once()
    finally:
        await pruner._engine.dispose()
    assert deleted["scoring_processed_events"] == 1
    assert await _column(database_url, t.processed_events.c.event_id) == ["e40"]


async def test_the_ages_are_configurable(database_url: str):
    settings = Settings(retention_days={"scoring_outbox": 60, "scoring_history": 30})
    await _insert(database_url, t.outbox, [_outbox("published-30d", NOW - days(30), NOW - days(30))])
    await _insert(database_url, t.history, [_history("acme", NOW - days(45)), _history("acme", NOW - days(1))])
    pruner, _ = _pruner(database_url, settings, batch_size=5000)
    try:
        deleted = await pruner.run_once()
    finally:
        await pruner._engine.dispose()
    assert deleted["scoring_outbox"] == 0 and deleted["scoring_history"] == 1


def _downgrade(url: str, revision: str) -> None:
    with _LOCK:
        command.downgrade(alembic_config(url), revision)


async def test_migration_0009_gives_existing_processed_ids_the_upgrade_time(database_url: str):
    await asyncio.to_thread(_downgrade, database_url, "0008")
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("INSERT INTO scoring_processed_events (event_id) VALUES ('a'), ('b')"))
        before = datetime.now(UTC) - timedelta(minutes=5)
        await upgrade_async(database_url)
        async with engine.begin() as conn:
            rows = (await conn.execute(sa.select(t.processed_events.c.event_id, t.processed_events.c.processed_at)
                                       .order_by(t.processed_events.c.event_id))).all()
            # a replica still on the previous code writes the id alone: the column's default fills it in
            await conn.execute(sa.text("INSERT INTO scoring_processed_events (event_id) VALUES ('c')"))
            (c_at,) = (await conn.execute(sa.select(t.processed_events.c.processed_at)
                                          .where(t.processed_events.c.event_id == "c"))).one()
            indexes = await conn.run_sync(lambda sync: {i["name"] for i in sa.inspect(sync).get_indexes(
                "scoring_processed_events")})
    finally:
        await engine.dispose()
    after = datetime.now(UTC) + timedelta(minutes=5)
    assert [r[0] for r in rows] == ["a", "b"]
    assert all(before <= r[1] <= after for r in rows), rows
    assert before <= c_at <= after
    assert "ix_scoring_processed_events_processed_at" in indexes


async def test_an_event_older_than_the_horizon_is_counted_as_expired_not_applied(stack: Stack):
    stack = Stack(stack.kind, stack.bus, stack.settings.model_copy(
        update={"retention_days": {"scoring_processed_events": 10}}))
    late = ticket("acme", T0, "t-late")                      # 30 days behind the clock when it arrives
    events = [ticket("acme", T0 + days(30), "t1"), late, ticket("acme", T0 + days(25), "t-within")]
    await produce(stack.bus, records_for(stack.topics, events))
    async with running(stack) as rt:
        await wait_caught_up(stack, rt)
        sample = rt.registry.get_sample_value
        assert sample("churnsignal_scoring_events_total", {"type": "ticket", "outcome": "expired"}) == 1
        assert sample("churnsignal_scoring_events_total", {"type": "ticket", "outcome": "processed"}) == 2
    url = stack.settings.database_url
    assert await count(url, t.processed_events) == 2
    assert await count(url, t.processed_events, t.processed_events.c.event_id == late["id"]) == 0
    ages = await _column(url, t.processed_events.c.processed_at)
    assert all(abs(datetime.now(UTC) - at) < timedelta(hours=1) for at in ages)   # written with the batch


async def test_the_composition_root_runs_the_pruner(settings: Settings):
    url = settings.database_url
    await upgrade_async(url)
    now = datetime.now(UTC)
    await _insert(url, t.processed_events, [{"event_id": "old", "processed_at": now - days(90)},
                                            {"event_id": "new", "processed_at": now}])
    settings = settings.model_copy(update={"retention_interval_s": 0.2})
    registry = new_registry()
    app = create_app(settings, registry=registry)
    async with app.router.lifespan_context(app):
        deadline = time.monotonic() + 30
        while await count(url, t.processed_events) > 1:
            assert time.monotonic() < deadline, "the pruner did not run"
            await asyncio.sleep(0.1)
        assert app.state.retention.interval_s == 0.2
    assert await _column(url, t.processed_events.c.event_id) == ["new"]
    assert registry.get_sample_value("churnsignal_retention_deleted_total",
                                     {"table": "scoring_processed_events"}) == 1
