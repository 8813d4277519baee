"""Sending to the real ingest app (in-process bus): batches, retries on 503, clear 4xx errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.ingest.bootstrap import create_app
from services.simulate.cli import send_simulation
from services.simulate.generator import generate
from services.simulate.model import SimEvent, SimulationParams
from services.simulate.sender import IngestRejected, IngestSender, IngestUnavailable, retry_after_seconds
from shared.bus.memory import MemoryBus
from shared.settings import Settings
from shared.topics import Topics
from tests.conftest import INGEST_KEY, READ_KEY

NOW = datetime(2026, 3, 16, 12, tzinfo=UTC)


@pytest.fixture
def ingest_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"ingest_retry_after_s": 2})


@pytest.fixture
def memory_bus() -> MemoryBus:
    return MemoryBus(default_partitions=6)


@pytest.fixture
async def client(ingest_settings: Settings, memory_bus: MemoryBus) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(ingest_settings, bus=memory_bus)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as http:
            yield http


def published(bus: MemoryBus, settings: Settings) -> int:
    return sum(len(bus.records(t)) for t in Topics(settings.topic_prefix).inputs)


def events(n: int) -> list[SimEvent]:
    base = NOW - timedelta(days=1)
    return [SimEvent(base + timedelta(minutes=i),
                     {"id": f"ev-{i}", "type": "usage", "account_id": f"acct-{i % 7}",
                      "occurred_at": (base + timedelta(minutes=i)).isoformat(),
                      "data": {"feature": "login", "user_id": "u1"}}) for i in range(n)]


async def test_a_whole_simulation_reaches_the_bus(client: httpx.AsyncClient, memory_bus: MemoryBus,
                                                  ingest_settings: Settings) -> None:
    sim = generate(SimulationParams(now=datetime.now(UTC).replace(microsecond=0), accounts=8,
                                    history_days=10, live_days=0.05, baseline_days=5))
    n = sum(1 for _ in sim.events())
    sender = await send_simulation(sim, url="http://ingest", api_key=INGEST_KEY, speedup=3600, batch_size=300,
                                   client=client, progress_interval_s=60)
    assert sender.stats.events_sent == n == published(memory_bus, ingest_settings)
    assert sender.stats.requests >= n // 300


async def test_503_is_retried_after_retry_after(client: httpx.AsyncClient, memory_bus: MemoryBus,
                                                ingest_settings: Settings) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        memory_bus.available = True   # the broker comes back while we wait

    memory_bus.available = False
    sender = IngestSender(client, "http://ingest", INGEST_KEY, sleep=sleep)
    await sender.submit(events(40))
    await sender.drain()
    assert waits == [2.0]
    assert sender.stats.events_sent == 40 and sender.stats.retries == 1
    assert published(memory_bus, ingest_settings) == 40


async def test_gives_up_when_ingest_stays_unavailable(client: httpx.AsyncClient,
                                                      memory_bus: MemoryBus) -> None:
    async def sleep(seconds: float) -> None:
        return None

    memory_bus.available = False
    sender = IngestSender(client, "http://ingest", INGEST_KEY, sleep=sleep, retry_deadline_s=1.0)
    await sender.submit(events(3))
    with pytest.raises(IngestUnavailable, match="still failing"):
        await sender.drain()


async def test_unknown_key_and_missing_scope_are_reported_clearly(client: httpx.AsyncClient) -> None:
    sender = IngestSender(client, "http://ingest", "not-a-key")
    await sender.submit(events(2))
    with pytest.raises(IngestRejected) as err:
        await sender.drain()
    assert err.value.status == 401 and "--api-key" in err.value.message
    assert "not-a-key" not in err.value.message

    sender = IngestSender(client, "http://ingest", READ_KEY)
    await sender.submit(events(2))
    with pytest.raises(IngestRejected) as err:
        await sender.drain()
    assert err.value.status == 403 and "ingest" in err.value.message


async def test_invalid_events_are_named(client: httpx.AsyncClient, memory_bus: MemoryBus,
                                        ingest_settings: Settings) -> None:
    batch = events(3)
    bad = SimEvent(batch[1].at, {**batch[1].body, "data": {"user_id": "u1"}})
    sender = IngestSender(client, "http://ingest", INGEST_KEY)
    await sender.submit([batch[0], bad, batch[2]])
    with pytest.raises(IngestRejected) as err:
        await sender.drain()
    assert err.value.status == 422
    assert "event ev-1 data.feature" in err.value.message
    assert published(memory_bus, ingest_settings) == 0


async def max_in_flight(spacing: timedelta) -> int:
    """Send ten 2-event batches `spacing` apart in event time; how many requests overlapped at most."""
    current = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal current, peak
        current += 1
        peak = max(peak, current)
        # Stay in flight for a number of event-loop turns, not a wall-clock time: every request the sender
        # lets go meanwhile enters too, however slow the machine (nothing here waits for I/O).
        for _ in range(100):
            await asyncio.sleep(0)
        current -= 1
        return httpx.Response(202, json={"accepted": 2})

    base = NOW - timedelta(days=2)
    evs = [SimEvent(base + i * spacing, {"id": str(i)}) for i in range(20)]
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        sender = IngestSender(http, "http://x", INGEST_KEY, concurrency=3, max_skew=timedelta(minutes=5))
        for i in range(0, 20, 2):
            await sender.submit(evs[i:i + 2])
        await sender.drain()
    assert sender.stats.events_sent == 20 and sender.stats.requests == 10
    return peak


async def test_only_batches_close_in_event_time_are_in_flight_together() -> None:
    assert await max_in_flight(timedelta(seconds=10)) == 3      # bounded by the concurrency
    assert await max_in_flight(timedelta(hours=1)) == 1         # a later hour waits for the earlier one


def test_retry_after_forms() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("600") == 30.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    when = datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)
    assert retry_after_seconds("Thu, 01 Jan 2026 12:00:10 GMT", now=when - timedelta(seconds=4)) == 4.0
