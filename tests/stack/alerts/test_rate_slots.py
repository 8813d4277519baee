"""Slack's one message per second per target, held across alerts instances by the PostgreSQL rate slots.

Each "instance" is a Deliverer with its own limiter and its own `PgSlotStore` (its own connection pool) on
one real database; the channels record the monotonic time of every send.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import asyncpg
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from services.alerts.adapters.rate_slots import MAX_KEY, PgSlotStore, slot_key
from services.alerts.domain.content import Notification, render
from services.alerts.domain.targets import Target
from services.alerts.notify.delivery import Deliverer, SlotStoreUnavailable
from shared.db import create_engine
from shared.errors import RetryableFailure
from shared.metrics import AlertsMetrics
from tests.domain.alerts.factories import make_risk
from tests.support.ports import free_port

TOLERANCE_S = 0.05  # scheduling and round-trip jitter between two sends' clocks
DANA = Target(kind="slack_dm", address="U0DANA", receiver="csm")
OMAR = Target(kind="slack_dm", address="U0OMAR", receiver="csm")


class RecordingChannel:
    """Records (dedup key, target key, monotonic time) of every send; raises the scripted errors first."""

    def __init__(self, sends: list[tuple[str, str, float]], script: list[BaseException] | None = None) -> None:
        self.kind = "slack_dm"
        self.sends = sends
        self.script = list(script or [])

    async def send(self, notification: Notification) -> None:
        self.sends.append((notification.dedup_key, notification.target.key, time.monotonic()))
        if self.script:
            raise self.script.pop(0)


def note(target: Target, risk_id: str) -> Notification:
    return render(make_risk(risk_id=risk_id), target, "http://cs.example")


def times_of(sends: list[tuple[str, str, float]], target: Target) -> list[float]:
    return sorted(at for _, key, at in sends if key == target.key)


def spaced(times: list[float], interval: float) -> bool:
    return all(b - a >= interval - TOLERANCE_S for a, b in zip(times, times[1:], strict=False))


@pytest.fixture
async def stores(pg_database_url: str):
    """Two instances' stores on one database."""
    made = [PgSlotStore.from_url(pg_database_url), PgSlotStore.from_url(pg_database_url)]
    yield made
    for store in made:
        await store.close()


@pytest.mark.integration
async def test_two_instances_send_one_message_per_second_to_a_target_and_each_message_once(
    stores: list[PgSlotStore],
) -> None:
    sends: list[tuple[str, str, float]] = []
    instances = [Deliverer({"slack_dm": RecordingChannel(sends)}, rate_slots=store, deadline_s=30.0)
                 for store in stores]
    # Each store's connections are made first (on another key): what is timed below is the slots, not how
    # long a machine takes to open connections.
    await asyncio.gather(*(store.reserve(f"slack_dm:U0WARM{i}", 1.0) for i, store in enumerate(stores)))
    start = time.monotonic()
    outcomes = await asyncio.gather(
        *(d.deliver(note(DANA, f"{i}:{n}")) for n in range(2) for i, d in enumerate(instances)),
        instances[1].deliver(note(OMAR, "omar")),
    )
    assert outcomes == ["sent"] * 5
    assert sorted(key for key, _, _ in sends) == sorted({key for key, _, _ in sends})  # each once
    dana = times_of(sends, DANA)
    assert len(dana) == 4 and spaced(dana, 1.0), [b - a for a, b in zip(dana, dana[1:], strict=False)]
    # The first send to each target goes at once (within one slot interval: it waited for no slot), and
    # OMAR does not queue behind DANA's slots.
    omar = times_of(sends, OMAR)
    assert dana[0] - start < 1.0 - TOLERANCE_S and omar[0] - start < 1.0 - TOLERANCE_S
    assert omar[0] < dana[1]


@pytest.mark.integration
async def test_a_retry_after_one_instance_got_holds_back_the_other(stores: list[PgSlotStore]) -> None:
    sends: list[tuple[str, str, float]] = []
    throttled = RecordingChannel(sends, [RetryableFailure("429", code="http_429", retry_after=1.5)])
    told_to_wait = asyncio.Event()

    def on_attempt(notification: Notification, attempt: int, outcome: str, error: object, d: float) -> None:
        if outcome == "retry":
            told_to_wait.set()

    first = Deliverer({"slack_dm": throttled}, rate_slots=stores[0], on_attempt=on_attempt, deadline_s=30.0,
                      rng=lambda: 0.0)
    second = Deliverer({"slack_dm": RecordingChannel(sends)}, rate_slots=stores[1], deadline_s=30.0)
    retried = asyncio.create_task(first.deliver(note(DANA, "throttled")))
    await asyncio.wait_for(told_to_wait.wait(), 10.0)
    assert await second.deliver(note(DANA, "other")) == "sent"
    assert await retried == "sent"
    throttled_at, *_ = times_of(sends, DANA)
    other_at = next(at for key, _, at in sends if "other" in key)
    assert other_at - throttled_at >= 1.5 - TOLERANCE_S   # the other instance honoured the Retry-After
    dana = times_of(sends, DANA)
    assert len(dana) == 3 and spaced(dana, 1.0)


async def test_deliveries_go_out_spaced_locally_when_the_database_is_unreachable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = PgSlotStore.from_url(f"postgresql+asyncpg://churnsignal:churnsignal@127.0.0.1:{free_port()}/none")
    registry = CollectorRegistry()
    sends: list[tuple[str, str, float]] = []
    deliverer = Deliverer({"slack_dm": RecordingChannel(sends)}, rate_slots=store, deadline_s=30.0,
                          metrics=AlertsMetrics(registry))
    try:
        outcomes = await asyncio.gather(*(deliverer.deliver(note(DANA, f"r{i}")) for i in range(3)))
    finally:
        await store.close()
    assert outcomes == ["sent"] * 3
    dana = times_of(sends, DANA)
    assert len(dana) == 3 and spaced(dana, 1.0)
    assert (registry.get_sample_value("churnsignal_alerts_rate_slot_fallbacks_total") or 0) == 3
    assert caplog.text.count("shared rate slots unavailable") == 1
    assert "churnsignal:churnsignal" not in caplog.text


# --- the store itself -------------------------------------------------------------------------------------


@pytest.mark.integration
async def test_reserve_hands_out_consecutive_slots_per_key_and_defer_pushes_them(
    stores: list[PgSlotStore],
) -> None:
    a, b = stores
    due = _since(time.monotonic())
    assert due(await a.reserve("slack_dm:U1", 1.0), 0.0)                  # a new key: now
    assert due(await b.reserve("slack_dm:U1", 1.0), 1.0)                  # the other instance: next second
    assert due(await a.reserve("slack_dm:U1", 1.0), 2.0)
    assert due(await b.reserve("slack_dm:U2", 1.0), 0.0)                  # keys are independent
    await b.defer("slack_dm:U2", 5.0)
    assert due(await a.reserve("slack_dm:U2", 1.0), 5.0)
    await a.defer("slack_dm:U1", 0.5)                                     # never pulls a slot earlier
    assert due(await b.reserve("slack_dm:U1", 1.0), 3.0)


def _since(started: float) -> Callable[[float, float], bool]:
    """A check that a reservation's wait is `expected` seconds less the time gone since `started` (the
    slots count from the database's clock when they were taken: a slow machine makes the waits shorter,
    so the time gone is measured instead of assumed to be small)."""
    def due(wait: float, expected: float) -> bool:
        gone = time.monotonic() - started
        return expected - gone - TOLERANCE_S < wait <= expected
    return due


@pytest.mark.integration
async def test_concurrent_reservations_are_batched_and_each_gets_its_own_slot(
    stores: list[PgSlotStore], pg_database_url: str,
) -> None:
    store = stores[0]
    keys = [f"slack_dm:U{i:03d}" for i in range(40)]
    due = _since(time.monotonic())
    waits = await asyncio.gather(*(store.reserve(k, 1.0) for k in keys), *(store.reserve("slack_dm:U000", 1.0)
                                                                           for _ in range(3)))
    assert all(due(w, 0.0) for w in waits[1:40])
    same_key = sorted([waits[0], *waits[40:]])
    assert all(due(w, float(slot)) for slot, w in enumerate(same_key)), same_key
    assert store.statements < 20                                          # not one round trip each
    engine = create_engine(pg_database_url)
    try:
        async with engine.connect() as conn:
            count = await conn.scalar(sa.text("SELECT count(*) FROM alerts_rate_slots"))
    finally:
        await engine.dispose()
    assert count == 40


@pytest.mark.integration
async def test_connections_the_server_dropped_are_replaced_without_failing_a_call(
    stores: list[PgSlotStore], pg_database_url: str,
) -> None:
    store = stores[0]
    filled = time.monotonic()
    await asyncio.gather(*(store.reserve(f"slack_dm:U{i}", 1.0) for i in range(20)))   # pool filled
    dsn = pg_database_url.replace("postgresql+asyncpg://", "postgresql://")
    admin = await asyncpg.connect(dsn)
    try:
        killed = await admin.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                      "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    finally:
        await admin.close()
    assert killed >= 1
    statements = store.statements
    # (the waits are measured against the time that passed, however slow the machine: the slot U1 took
    # when the pool was filled is still held, less what has elapsed since)
    wait = await store.reserve("slack_dm:U1", 1.0)
    assert 1.0 - (time.monotonic() - filled) - 0.05 <= wait <= 1.0
    deferred = time.monotonic()
    await store.defer("slack_dm:U2", 3.0)
    assert store.statements - statements == 3            # one retry, then the new pool serves both
    wait = await store.reserve("slack_dm:U2", 1.0)
    assert 3.0 - (time.monotonic() - deferred) - 0.05 <= wait <= 3.0


async def test_an_unreachable_database_is_reported_as_unavailable() -> None:
    store = PgSlotStore.from_url(f"postgresql+asyncpg://churnsignal:churnsignal@127.0.0.1:{free_port()}/none")
    try:
        with pytest.raises(SlotStoreUnavailable) as reserve_error:
            await store.reserve("slack_dm:U1", 1.0)
        with pytest.raises(SlotStoreUnavailable):
            await store.defer("slack_dm:U1", 1.0)
    finally:
        await store.close()
    assert "churnsignal:churnsignal" not in str(reserve_error.value)


async def test_long_rate_keys_fit_the_table_and_stay_distinct() -> None:
    long_a, long_b = "slack_webhook:" + "a" * 400, "slack_webhook:" + "a" * 399 + "b"
    assert len(slot_key(long_a)) <= MAX_KEY and slot_key(long_a) != slot_key(long_b)
    assert slot_key("slack_dm:U1") == "slack_dm:U1"


async def test_the_store_needs_postgresql(sqlite_database_url: str) -> None:
    engine = create_engine(sqlite_database_url)
    try:
        with pytest.raises(ValueError, match="postgresql"):
            PgSlotStore(engine)
        async with engine.connect() as conn:   # the table exists on SQLite too (migration 0003)
            assert await conn.scalar(sa.text("SELECT count(*) FROM alerts_rate_slots")) == 0
    finally:
        await engine.dispose()
