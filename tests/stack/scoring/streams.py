"""Realistic input streams from the simulator (seeded: the same arguments give the same events)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.simulate.generator import generate
from services.simulate.model import SimulationParams

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def simulated(accounts: int, days: float = 45.0, seed: int = 7, prefix: str = "sim-") -> list[dict[str, Any]]:
    """Event bodies of `accounts` simulated accounts over `days`, in event-time order, some of them
    with scripted churn stories (so risks open, update and resolve)."""
    params = SimulationParams(now=NOW, seed=seed, accounts=accounts, history_days=days - 5, live_days=5,
                              churn_rate=0.3, account_prefix=prefix)
    return [e.body for e in generate(params).events()]
