"""What the scoring consumer reports to its metrics: each committed batch, and the gauges read from the
database.

A batch is counted only once it committed, so a batch redone after a failure counts once; the open-risk
and revenue gauges span every partition (other consumers' too), hence read from the database, not summed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime

from services.scoring.adapters.store import ScoringStore
from services.scoring.entrypoints.batches import BatchWork
from services.scoring.entrypoints.partitions import SERVICE, OwnedPartition, tracked
from shared.metrics import CommonMetrics, ScoringMetrics
from shared.risks import RISK_TYPES


def observe_batch(m: ScoringMetrics, common: CommonMetrics, work: BatchWork, started: float,
                  owned: Mapping[int, OwnedPartition]) -> None:
    """The metrics of a committed batch (`started`: perf_counter() when it was taken)."""
    for (event_type, outcome), n in work.events.items():
        m.events.labels(event_type, outcome).inc(n)
    for reason, n in work.dead_reasons.items():
        common.dead_letters.labels(SERVICE, reason).inc(n)
    for (risk_type, transition), n in work.risk_counts.items():
        m.risks.labels(risk_type, transition).inc(n)
        if transition == "opened":
            m.open_risks.labels(risk_type).inc(n)
        elif transition == "resolved":
            m.open_risks.labels(risk_type).dec(n)
    committed = time.time()
    for received in work.latencies:
        m.processing_latency.observe(max(0.0, committed - received.timestamp()))
    m.batch_latency.observe(time.perf_counter() - started)
    m.tracked_accounts.set(tracked(owned))
    watermarks = [o.clock.watermark for o in owned.values() if o.clock.watermark is not None]
    if watermarks:
        m.watermark_age.set(max(0.0, committed - max(watermarks).timestamp()))


async def refresh_gauges(store: ScoringStore, m: ScoringMetrics, wall_clock: Callable[[], datetime]) -> None:
    """The open-risk and revenue gauges, read from the database (revenue months as of `wall_clock()`)."""
    counts = await store.open_risk_counts()
    for risk_type in RISK_TYPES:
        m.open_risks.labels(risk_type).set(counts.get(risk_type, 0))
    revenue = await store.revenue(wall_clock())
    m.set_revenue(revenue.at_risk, revenue.churned, revenue.retention)
