"""Alerts' retention (docs/retention.md): finished work of closed alerts pruned in batches, open alerts'
deliveries and pending work kept; a risk event detected before the deduplication horizon skipped and
counted; the pruner started by the composition root."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from services.alerts.adapters import tables as t
from services.alerts.adapters.retention import alerts_steps
from services.alerts.bootstrap import create_app
from shared.bus.memory import MemoryBus
from shared.bus.port import OutMessage
from shared.db import create_engine
from shared.metrics import RetentionMetrics, new_registry
from shared.migrate import upgrade_async
from shared.retention import RetentionPruner
from shared.settings import Settings
from shared.topics import Topics
from tests.stack.alerts.conftest import RunningApp, make_risk

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def days(n: float) -> timedelta:
    return timedelta(days=n)


async def _insert(url: str, table: sa.Table, rows: list[dict[str, Any]]) -> list[int]:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            ids = []
            for row in rows:
                result = await conn.execute(sa.insert(table).values(row))
                ids.append(result.inserted_primary_key[0])
            return ids
    finally:
        await engine.dispose()


async def _ids(url: str, column: sa.Column) -> list[Any]:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return sorted((await conn.execute(sa.select(column))).scalars().all())
    finally:
        await engine.dispose()


def _alert(risk_id: str, status: str) -> dict[str, Any]:
    return {"risk_id": risk_id, "account_id": "acme", "type": "usage_drop", "severity": "high", "status": status,
            "summary": "usage down", "last_event_id": f"{risk_id}:1", "last_seq": 1, "last_event": {},
            "opened_at": NOW - days(200), "updated_at": NOW - days(150)}


def _delivery(key: str, alert_id: int | None, status: str, updated_at: datetime) -> dict[str, Any]:
    return {"dedup_key": key, "alert_id": alert_id, "kind": "opened", "channel": "email", "target_key": "t",
            "status": status, "notification": {}, "attempts": 1, "created_at": updated_at,
            "updated_at": updated_at}


def _attempt(delivery_id: int) -> dict[str, Any]:
    return {"delivery_id": delivery_id, "attempt_no": 1, "outcome": "sent", "duration_ms": 5.0, "at": NOW}


def _item(key: str, consumed_at: datetime | None, delivery_id: int | None = None) -> dict[str, Any]:
    return {"dedup_key": key, "target_key": "t", "target": {}, "alert_id": None, "risk": {}, "kind": "group",
            "dedup_suffix": "x", "queued_at": NOW - days(100), "due_at": NOW - days(100),
            "consumed_at": consumed_at, "delivery_id": delivery_id}


async def test_finished_work_of_closed_alerts_goes_open_and_pending_work_stays(database_url: str):
    resolved, still_open = await _insert(database_url, t.alerts, [_alert("r", "resolved"), _alert("o", "open")])
    old, young = NOW - days(100), NOW - days(10)
    sent_resolved, sent_open, pending, failed_young, digest, dead = await _insert(database_url, t.deliveries, [
        _delivery("sent-resolved", resolved, "sent", old),
        _delivery("sent-open", still_open, "sent", old),          # its alert is open: kept
        _delivery("pending", resolved, "pending", old),           # not finished: kept
        _delivery("failed-young", resolved, "failed", young),
        _delivery("digest", None, "sent", old),
        _delivery("dead", resolved, "dead_letter", old)])
    await _insert(database_url, t.attempts, [_attempt(d) for d in (sent_resolved, sent_resolved, sent_open, dead)])
    await _insert(database_url, t.digest_items, [_item("consumed-old", old, digest), _item("consumed-young", young),
                                                 _item("waiting", None)])
    await _insert(database_url, t.processed, [{"event_id": "p40", "processed_at": NOW - days(40)},
                                              {"event_id": "p35", "processed_at": NOW - days(35.5)},
                                              {"event_id": "p1", "processed_at": NOW - days(1)}])
    await _insert(database_url, t.slack_requests, [{"signature": "v0=old", "seen_at": NOW - days(2)},
                                                   {"signature": "v0=new", "seen_at": NOW - timedelta(minutes=3)}])

    metrics = RetentionMetrics(new_registry())
    engine = create_engine(database_url, pool_size=1)
    pruner = RetentionPruner(engine, alerts_steps(Settings()), metrics=metrics, interval_s=60, clock=lambda: NOW,
                             batch_size=2, pause_s=0)
    try:
        deleted = await pruner.run_once()
    finally:
        await engine.dispose()

    assert deleted == {"alerts_processed": 1, "alerts_digest_items": 1, "alerts_attempts": 3,
                       "alerts_deliveries": 3, "alerts_slack_requests": 1}
    assert await _ids(database_url, t.deliveries.c.dedup_key) == ["failed-young", "pending", "sent-open"]
    assert await _ids(database_url, t.attempts.c.delivery_id) == [sent_open]
    assert await _ids(database_url, t.digest_items.c.dedup_key) == ["consumed-young", "waiting"]
    assert await _ids(database_url, t.processed.c.event_id) == ["p1", "p35"]   # 35-day horizon + a day
    assert await _ids(database_url, t.slack_requests.c.signature) == ["v0=new"]
    assert await _ids(database_url, t.alerts.c.risk_id) == ["o", "r"]          # alert rows are never pruned
    assert metrics.deleted.labels("alerts_deliveries")._value.get() == 3


async def test_a_risk_event_detected_before_the_horizon_is_skipped_and_counted(settings: Settings):
    bus = MemoryBus(6)
    registry = new_registry()
    running = RunningApp(create_app(settings, bus=bus, registry=registry))
    await running.start()
    try:
        await running.wait_idle()
        stale = make_risk("acct-old", csm="U100")
        stale = stale.model_copy(update={"detected_at": datetime.now(UTC) - days(40)})
        fresh = make_risk("acct-new", csm="U100")
        await bus.publisher().publish([OutMessage(Topics(settings.topic_prefix).risks, r.account_id.encode(),
                                                  r.to_json()) for r in (stale, fresh)])
        await running.wait_idle()
        alerts = (await running.http.get("/v1/alerts")).json()["items"]
        assert [a["account_id"] for a in alerts] == ["acct-new"]
        sample = registry.get_sample_value
        assert sample("churnsignal_alerts_risk_events_total", {"outcome": "expired"}) == 1
        assert sample("churnsignal_alerts_risk_events_total", {"outcome": "applied"}) == 1
    finally:
        await running.stop()


async def test_the_composition_root_runs_the_pruner(settings: Settings):
    url = settings.database_url
    await upgrade_async(url)
    now = datetime.now(UTC)
    await _insert(url, t.slack_requests, [{"signature": "v0=old", "seen_at": now - days(3)},
                                          {"signature": "v0=new", "seen_at": now}])
    registry = new_registry()
    running = RunningApp(create_app(settings.model_copy(update={"retention_interval_s": 0.2}), bus=MemoryBus(6),
                                    registry=registry))
    await running.start()
    try:
        deadline = time.monotonic() + 30
        while len(await _ids(url, t.slack_requests.c.signature)) > 1:
            assert time.monotonic() < deadline, "the pruner did not run"
            await asyncio.sleep(0.1)
    finally:
        await running.stop()
    assert await _ids(url, t.slack_requests.c.signature) == ["v0=new"]
    assert registry.get_sample_value("churnsignal_retention_deleted_total", {"table": "alerts_slack_requests"}) == 1
