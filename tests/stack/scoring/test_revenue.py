"""Revenue facts stored beside the account states and the numbers of the revenue gauges, on SQLite and on
PostgreSQL: ARR at risk by highest open severity, churned ARR and gross revenue retention by month, and the
backfill of the columns by migration 0004."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from services.scoring.adapters import tables as t
from services.scoring.adapters.errors import SchemaMissing
from services.scoring.adapters.revenue import account_revenue
from services.scoring.adapters.store import (
    AccountRow,
    BatchWrite,
    HealthColumns,
    RevenueColumns,
    RevenueSummary,
    ScoringStore,
)
from services.scoring.bootstrap import build_store
from services.scoring.domain.state import DAY, SEVERITIES, AccountState, encode_state
from shared.db import create_engine
from shared.migrate import upgrade_async
from tests.conftest import PG_URL, _drop_pg_database

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
WINDOW = ["2025-12", *(f"2026-{m:02d}" for m in range(1, 13))]


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def state(account_id: str, *, arr: float | None, first_seen: str, risks: tuple[str, ...] = (),
          lifecycle: str | None = None, lifecycle_at: str | None = None) -> AccountState:
    """An account state as the engine leaves it: ARR, open risks (one per severity given), lifecycle."""
    st = AccountState(account_id)
    st.arr = arr
    st.facts_ts = int(_at(first_seen).timestamp())   # an account event told the facts
    st.first_day = int(_at(first_seen).timestamp()) // DAY
    for i, severity in enumerate(risks):
        opened = int(_at(first_seen).timestamp())
        st.risks[("usage_drop", "ticket_spike", "sentiment_drop")[i]] = [
            opened, 1, SEVERITIES.index(severity), i + 1, 0, {}]
    if lifecycle is not None:
        st.lifecycle = lifecycle
        st.lifecycle_ts = int(_at(lifecycle_at or first_seen).timestamp())
    return st


def row(st: AccountState, *, health: bool = False) -> AccountRow:
    columns = HealthColumns(50.0, "yellow", NOW, "v1") if health else None
    return AccountRow(st.account_id, 0, encode_state(st), None, columns, account_revenue(st))


STATES = [
    # two open risks: counted once, under the higher severity
    state("two-risks", arr=100_000, first_seen="2025-06-01", risks=("high", "low")),
    state("critical", arr=50_000, first_seen="2025-06-01", risks=("critical",)),
    state("medium", arr=20_000, first_seen="2026-10-15", risks=("medium",), lifecycle="renewed",
          lifecycle_at="2026-10-20"),
    # churned in November with a risk still recorded as open: not at risk, lost in November
    state("churned-nov", arr=40_000, first_seen="2025-06-01", risks=("high",), lifecycle="churned",
          lifecycle_at="2026-11-10T08:30:00"),
    state("healthy", arr=60_000, first_seen="2025-06-01", lifecycle="active", lifecycle_at="2025-06-01"),
    # churned before the months shown: in no month's starting accounts
    state("old-churn", arr=30_000, first_seen="2025-01-01", lifecycle="churned", lifecycle_at="2025-08-03"),
    # first seen and churned in November: churned ARR of November, not part of November's retention
    state("new-churn", arr=10_000, first_seen="2026-11-05", lifecycle="churned", lifecycle_at="2026-11-20"),
    # a downgrade keeps the account live (only its current ARR counts)
    state("downgraded", arr=5_000, first_seen="2025-06-01", lifecycle="downgraded", lifecycle_at="2026-11-15"),
    state("no-arr", arr=None, first_seen="2025-06-01", risks=("low",)),
]


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[ScoringStore]:
    engine = create_engine(database_url, pool_size=2)
    try:
        yield build_store(engine)
    finally:
        await engine.dispose()


async def save(store: ScoringStore, rows: list[AccountRow]) -> None:
    await store.write_batch(BatchWrite(accounts=rows), NOW)


async def columns(store: ScoringStore) -> dict[str, dict[str, Any]]:
    c = t.accounts.c
    async with store.engine.connect() as conn:
        rows = (await conn.execute(sa.select(c.account_id, c.arr, c.lifecycle, c.lifecycle_at, c.risk_severity,
                                             c.first_seen_at))).mappings().all()
    return {r["account_id"]: dict(r) for r in rows}


def test_revenue_columns_read_from_the_state():
    assert account_revenue(AccountState("new")) == RevenueColumns(None, None, None, None, None)
    assert account_revenue(STATES[0]) == RevenueColumns(100_000.0, None, None, "high", _at("2025-06-01"))
    assert account_revenue(STATES[3]) == RevenueColumns(40_000.0, "churned", _at("2026-11-10T08:30:00"), "high",
                                                        _at("2025-06-01"))


async def test_saved_columns_follow_the_state(store: ScoringStore):
    # one row with a new health snapshot, the others without: both ways of writing an account
    await save(store, [row(STATES[0], health=True), *(row(st) for st in STATES[1:])])
    saved = await columns(store)
    assert saved["two-risks"] == {"account_id": "two-risks", "arr": 100_000.0, "lifecycle": None,
                                  "lifecycle_at": None, "risk_severity": "high",
                                  "first_seen_at": _at("2025-06-01")}
    assert saved["churned-nov"]["lifecycle"] == "churned"
    assert saved["churned-nov"]["lifecycle_at"] == _at("2026-11-10T08:30:00")
    assert saved["no-arr"]["arr"] is None and saved["no-arr"]["risk_severity"] == "low"

    # the next save rewrites them (risks resolved, ARR changed); a row without revenue facts clears them
    two = state("two-risks", arr=90_000, first_seen="2025-06-01")
    await save(store, [row(two, health=True), AccountRow("critical", 0, b"x", None, None, None)])
    saved = await columns(store)
    assert saved["two-risks"]["arr"] == 90_000.0 and saved["two-risks"]["risk_severity"] is None
    assert saved["critical"] == {"account_id": "critical", "arr": None, "lifecycle": None, "lifecycle_at": None,
                                 "risk_severity": None, "first_seen_at": None}


async def test_arr_at_risk_churned_arr_and_retention(store: ScoringStore):
    assert await store.revenue(NOW) == RevenueSummary(
        {"low": 0.0, "medium": 0.0, "high": 0.0, "critical": 0.0}, dict.fromkeys(WINDOW, 0.0), {})

    await save(store, [row(st) for st in STATES])
    summary = await store.revenue(NOW)

    assert summary.at_risk == {"low": 0.0, "medium": 20_000.0, "high": 100_000.0, "critical": 50_000.0}
    assert summary.churned == {**dict.fromkeys(WINDOW, 0.0), "2026-11": 50_000.0}
    # November starts with two-risks, critical, medium (first seen in October), churned-nov, healthy,
    # downgraded and no-arr: 275,000; churned-nov's 40,000 is lost in it.
    assert summary.retention == {**dict.fromkeys(WINDOW, 1.0), "2026-11": 1 - 40_000 / 275_000}


async def test_months_roll_with_now(store: ScoringStore):
    await save(store, [row(st) for st in STATES])
    summary = await store.revenue(_at("2027-11-30T23:59:59"))
    months = ["2026-11", "2026-12", *(f"2027-{m:02d}" for m in range(1, 12))]
    assert list(summary.churned) == months
    assert summary.churned["2026-11"] == 50_000.0 and sum(summary.churned.values()) == 50_000.0
    assert list(summary.retention) == months


# -- migration 0004 backfills the columns of existing rows ---------------------------------------------------

@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def database_at_0003(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'at-0003.db'}"
        await upgrade_async(url, "0003")
        yield url
        return
    if not PG_URL:
        pytest.skip("CHURNSIGNAL_TEST_DATABASE_URL not set (run `make services`)")
    import asyncpg

    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = f"{PG_URL.rpartition('/')[0]}/{name}"
    await upgrade_async(url, "0003")
    try:
        yield url
    finally:
        await _drop_pg_database(url)


async def test_migration_backfills_existing_accounts(database_at_0003: str):
    engine = create_engine(database_at_0003, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.insert(t.accounts), [
                {"account_id": st.account_id, "partition": 0, "state": encode_state(st), "tier": "unknown",
                 "updated_at": NOW} for st in STATES[:4]])
            await conn.execute(sa.insert(t.accounts), [
                {"account_id": "undecodable", "partition": 0, "state": b"not a state", "tier": "unknown",
                 "updated_at": NOW}])
    finally:
        await engine.dispose()
    await upgrade_async(database_at_0003)

    engine = create_engine(database_at_0003, pool_size=1)
    try:
        store = build_store(engine)
        saved = await columns(store)
        assert {k: RevenueColumns(**{n: v for n, v in r.items() if n != "account_id"})
                for k, r in saved.items()} == {
            **{st.account_id: account_revenue(st) for st in STATES[:4]},
            "undecodable": RevenueColumns(None, None, None, None, None)}
        assert (await store.revenue(NOW)).at_risk == {"low": 0.0, "medium": 20_000.0, "high": 100_000.0,
                                                      "critical": 50_000.0}
    finally:
        await engine.dispose()


async def test_a_database_without_the_revenue_columns_is_reported(database_at_0003: str):
    engine = create_engine(database_at_0003, pool_size=1)
    try:
        with pytest.raises(SchemaMissing, match=r"columns missing \(arr, lifecycle, lifecycle_at, risk_severity, "
                                                r"first_seen_at, csm_email, csm_slack, csm_name, segment, "
                                                r"renewal_date\): run `churnsignal migrate`"):
            await build_store(engine).check_schema()
    finally:
        await engine.dispose()
