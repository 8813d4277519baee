"""The revenue gauges on the scoring service's /metrics registry: refreshed by the consumer from the
accounts' stored revenue facts, which the real model's states fill in as account events arrive."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from services.scoring.adapters.store import AccountRow, BatchWrite, RevenueColumns
from services.scoring.bootstrap import ScoringRuntime, run_consumer, scoring_runtime
from services.scoring.entrypoints.ports import ScoringModel
from shared.metrics import ScoringMetrics, new_registry
from tests.stack.scoring.events import account, days
from tests.stack.scoring.fake_model import FakeState, encode, fake_model
from tests.stack.scoring.harness import Stack, produce, records_for, running, wait_caught_up


def _previous_month_start(now: datetime) -> datetime:
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (start - timedelta(days=1)).replace(day=1)


def _label(at: datetime) -> str:
    return f"{at.year:04d}-{at.month:02d}"


def _sample(rt: ScoringRuntime, name: str, **labels: str) -> float | None:
    return rt.registry.get_sample_value(name, labels)


@asynccontextmanager
async def consuming(rt: ScoringRuntime) -> AsyncIterator[None]:
    task = asyncio.create_task(run_consumer(rt.consumer, restart=False))
    try:
        async with asyncio.timeout(60):
            await rt.consumer.wait_started()
        yield
    finally:
        rt.consumer.stop()
        async with asyncio.timeout(60):
            await task


async def wait_for_sample(rt: ScoringRuntime, name: str, **labels: str) -> float:
    deadline = time.monotonic() + 30
    while (value := _sample(rt, name, **labels)) is None:
        assert rt.consumer.running, "the scoring consumer stopped"
        assert time.monotonic() < deadline, f"no {name}{labels} sample"
        await asyncio.sleep(0.05)
    return value


async def test_the_consumer_refresh_sets_the_revenue_gauges(stack: Stack):
    now = datetime.now(UTC)
    month = _previous_month_start(now)
    first = month - days(90)
    rows = [("two-risks", RevenueColumns(100_000.0, None, None, "high", first)),
            ("critical", RevenueColumns(50_000.0, "renewed", first, "critical", first)),
            ("churned", RevenueColumns(40_000.0, "churned", month + days(9), None, first)),
            ("healthy", RevenueColumns(60_000.0, "active", first, None, first))]
    model: ScoringModel = fake_model()
    async with scoring_runtime(stack.settings, bus=stack.bus, registry=new_registry(), model=model) as rt:
        await rt.store.write_batch(BatchWrite(accounts=[
            AccountRow(account_id, 0, encode(FakeState(account_id)), None, None, revenue)
            for account_id, revenue in rows]), now)
        async with consuming(rt):
            assert await wait_for_sample(rt, "churnsignal_arr_at_risk", severity="critical") == 50_000
            assert _sample(rt, "churnsignal_arr_at_risk", severity="high") == 100_000
            assert _sample(rt, "churnsignal_arr_at_risk", severity="medium") == 0
            assert _sample(rt, "churnsignal_arr_at_risk", severity="low") == 0
            assert _sample(rt, "churnsignal_churned_arr", month=_label(month)) == 40_000
            assert _sample(rt, "churnsignal_churned_arr", month=_label(now)) == 0
            assert _sample(rt, "churnsignal_gross_revenue_retention", month=_label(month)) == 1 - 40_000 / 250_000
            assert _sample(rt, "churnsignal_gross_revenue_retention", month=_label(now)) == 1.0
            # 13 months, up to the current one
            churned = [s for m in rt.registry.collect() if m.name == "churnsignal_churned_arr" for s in m.samples]
            assert len(churned) == 13
            assert max(s.labels["month"] for s in churned) == _label(now)


async def test_account_events_fill_the_revenue_facts_the_gauges_show(stack: Stack):
    now = datetime.now(UTC)
    month = _previous_month_start(now)
    before = month - days(40)
    events = [account("kept", before, name="Kept", arr=80_000, lifecycle="active"),
              account("lost", before, name="Lost", arr=20_000),
              account("lost", month + days(3), lifecycle="churned")]
    await produce(stack.bus, records_for(stack.topics, events))
    async with running(stack) as rt:   # the real model
        await wait_caught_up(stack, rt)
    async with scoring_runtime(stack.settings, bus=stack.bus, registry=new_registry()) as rt:
        async with consuming(rt):
            assert await wait_for_sample(rt, "churnsignal_churned_arr", month=_label(month)) == 20_000
            assert _sample(rt, "churnsignal_gross_revenue_retention", month=_label(month)) == 0.8
            assert _sample(rt, "churnsignal_gross_revenue_retention", month=_label(now)) == 1.0


def test_months_that_leave_the_window_leave_the_gauges():
    registry = new_registry()
    metrics = ScoringMetrics(registry)
    at_risk = {"low": 1.0, "medium": 2.0, "high": 3.0, "critical": 4.0}
    metrics.set_revenue(at_risk, {"2026-10": 5.0, "2026-11": 6.0}, {"2026-10": 0.5, "2026-11": 0.9})
    metrics.set_revenue(at_risk, {"2026-11": 7.0, "2026-12": 0.0}, {"2026-12": 1.0})

    def samples(name: str) -> dict[str, float]:
        return {s.labels["month"]: s.value for m in registry.collect() if m.name == name for s in m.samples}

    assert samples("churnsignal_churned_arr") == {"2026-11": 7.0, "2026-12": 0.0}
    assert samples("churnsignal_gross_revenue_retention") == {"2026-12": 1.0}
    assert registry.get_sample_value("churnsignal_arr_at_risk", {"severity": "critical"}) == 4.0
