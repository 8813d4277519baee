"""The revenue facts of an account, read from its domain state for the `scoring_accounts` columns that the
revenue gauges sum (see `ScoringStore.revenue`). Called for every account of every batch: kept cheap."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

from services.scoring.adapters.store import RevenueColumns
from services.scoring.domain.state import DAY, NONE, R_SEV, SEVERITIES, AccountState


def account_revenue(state: AccountState) -> RevenueColumns:
    """ARR, lifecycle and its time, the highest severity among the open risks (None: no open risk) and the
    start of the first event-time day the account was seen."""
    severity = NONE
    for risk in state.risks.values():
        if risk[R_SEV] > severity:
            severity = risk[R_SEV]
    arr = state.arr
    return RevenueColumns(
        None if arr is None else float(arr),
        state.lifecycle,
        None if state.lifecycle is None else _at(state.lifecycle_ts),
        None if severity == NONE else SEVERITIES[severity],
        _at(state.first_day * DAY) if state.first_day != NONE else None,
    )


@lru_cache(maxsize=4096)
def _at(ts: int) -> datetime | None:
    return None if ts == NONE else datetime.fromtimestamp(ts, UTC)
