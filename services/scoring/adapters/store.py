"""The scoring unit of work: one transaction per consumed batch, plus the loads done on assignment.

The statements that differ by database (the batch write, the processed-id check, marking the outbox
published) are a `StoreDialect` given to the store: store_postgres.py sends the whole batch as one statement
of `INSERT ... SELECT FROM unnest(...)` CTEs through asyncpg (one round trip, atomic by itself);
store_sqlite.py uses SQLAlchemy Core `INSERT ... ON CONFLICT` with executemany. Which one is the
composition root's choice (services/scoring/bootstrap.py); everything else here is portable SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scoring.adapters import tables as t
from services.scoring.adapters.errors import SchemaMissing, classified
from services.scoring.adapters.portfolio_columns import PortfolioColumns
from shared.bus.port import TopicPartition
from shared.risks import SEVERITIES


@dataclass(slots=True)
class AccountRow:
    account_id: str
    partition: int
    state: bytes
    next_due: datetime | None
    # The last health snapshot's listing columns; None when no new snapshot was recorded in this batch.
    health: HealthColumns | None = None
    # The state's revenue facts (always written: all NULL when None, e.g. a model that tells none).
    revenue: RevenueColumns | None = None
    # Its CSM, segment and renewal date, for the portfolio filters (written the same way).
    portfolio: PortfolioColumns | None = None


@dataclass(frozen=True, slots=True)
class HealthColumns:
    score: float | None
    tier: str
    as_of: datetime
    config_version: str | None


class RevenueColumns(NamedTuple):
    """An account's revenue facts as of its saved state (services/scoring/adapters/revenue.py); a named
    tuple, cheap to build for every account of every batch."""

    arr: float | None
    lifecycle: str | None            # active | churned | renewed | downgraded | expanded
    lifecycle_at: datetime | None
    risk_severity: str | None        # the highest severity among the open risks; None: no open risk
    first_seen_at: datetime | None   # start of the first event-time day with an event of the account


NO_REVENUE = RevenueColumns(None, None, None, None, None)   # what an account row without revenue writes
REVENUE_COLUMNS = RevenueColumns._fields
RETENTION_MONTHS = 13


@dataclass(frozen=True, slots=True)
class RevenueSummary:
    """What the revenue gauges show (months are "YYYY-MM", UTC, the last `RETENTION_MONTHS` up to now's)."""

    at_risk: dict[str, float]         # severity -> ARR of the accounts whose highest open risk has it
    churned: dict[str, float]         # month -> ARR of the accounts that churned in it
    retention: dict[str, float]       # month -> gross revenue retention (months with a starting ARR only)


@dataclass(frozen=True, slots=True)
class HistoryRow:
    account_id: str
    as_of: datetime
    cause: str | None
    score: float | None
    tier: str
    snapshot: str  # JSON


@dataclass(slots=True)
class RiskRow:
    risk_id: str
    account_id: str
    type: str
    severity: str
    status: str  # "open" | "resolved"
    seq: int
    summary: str
    evidence: str  # JSON
    opened_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    trigger_event_id: str | None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    event_id: str
    partition: int
    key: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class HealthFeedRow:
    """One partition's messages of one committed batch for the health topic (one JSON per line, in order)."""

    partition: int
    seq: int            # per partition, in commit order
    messages: bytes


@dataclass(slots=True)
class BatchWrite:
    """Everything one consumed batch changes, committed together."""

    accounts: list[AccountRow] = field(default_factory=list)
    processed_ids: list[str] = field(default_factory=list)
    history: list[HistoryRow] = field(default_factory=list)
    risks: list[RiskRow] = field(default_factory=list)
    outbox: list[OutboxRow] = field(default_factory=list)
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    watermarks: dict[int, datetime | None] = field(default_factory=dict)
    published: list[str] = field(default_factory=list)  # outbox rows published since the last commit
    health_feed: list[HealthFeedRow] = field(default_factory=list)
    # (partition, seq) of the health feed rows published since the last commit: deleted by this one
    health_published: list[tuple[int, int]] = field(default_factory=list)


@dataclass(slots=True)
class PartitionLoad:
    """What a consumer needs to own a partition number: states, timers, watermark, positions."""

    states: dict[str, bytes]
    timers: list[tuple[str, datetime]]
    watermark: datetime | None
    positions: dict[str, int]  # topic -> next offset
    health_seq: int = 0        # the highest seq of its health feed rows still stored (0: none)


class StoreDialect(Protocol):
    """The store's statements that differ by database. Called inside the store's error classification,
    with arguments already checked non-empty where an empty call would be a no-op."""

    async def already_processed(self, ids: Sequence[str]) -> set[str]: ...

    async def write_batch(self, batch: BatchWrite, now: datetime) -> None: ...

    async def mark_published(self, event_ids: list[str], now: datetime) -> None: ...

    async def delete_health_feed(self, keys: list[tuple[int, int]]) -> None: ...


class ScoringStore:
    """Scoring's database access on `engine`; `dialect` holds the statements written per database (the
    composition root picks it: services/scoring/bootstrap.py `build_store`)."""

    def __init__(self, engine: AsyncEngine, dialect: StoreDialect) -> None:
        self._engine = engine
        self._dialect = dialect

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    # -- checks ------------------------------------------------------------------------------
    async def ping(self) -> bool:
        with classified():
            async with self._engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        return True

    async def check_schema(self) -> None:
        """Raise SchemaMissing, naming the missing tables or account columns, when a migration has not run."""
        def inspect(sync: Any) -> tuple[set[str], set[str]]:
            inspector = sa.inspect(sync)
            names = set(inspector.get_table_names())
            if t.accounts.name not in names:
                return names, set()
            return names, {col["name"] for col in inspector.get_columns(t.accounts.name)}

        with classified():
            async with self._engine.connect() as conn:
                names, account_columns = await conn.run_sync(inspect)
        problems = []
        tables = sorted(table.name for table in t.ALL_TABLES if table.name not in names)
        if tables:
            problems.append(f"scoring tables missing ({', '.join(tables)})")
        if t.accounts.name in names:
            columns = [col.name for col in t.accounts.columns if col.name not in account_columns]
            if columns:
                problems.append(f"scoring_accounts columns missing ({', '.join(columns)})")
        if problems:
            raise SchemaMissing(f"{', '.join(problems)}: run `churnsignal migrate` against "
                                "CHURNSIGNAL_DATABASE_URL first")

    # -- assignment --------------------------------------------------------------------------
    async def load_partitions(self, numbers: Iterable[int],
                              topics: Sequence[str]) -> dict[int, PartitionLoad]:
        numbers = sorted(set(numbers))
        out = {n: PartitionLoad({}, [], None, {}) for n in numbers}
        if not numbers:
            return out
        with classified():
            async with self._engine.connect() as conn:
                rows = await conn.execute(
                    sa.select(t.accounts.c.account_id, t.accounts.c.partition, t.accounts.c.state,
                              t.accounts.c.next_due).where(t.accounts.c.partition.in_(numbers)))
                for account_id, partition, state, next_due in rows:
                    load = out[partition]
                    load.states[account_id] = bytes(state)
                    if next_due is not None:
                        load.timers.append((account_id, next_due))
                rows = await conn.execute(
                    sa.select(t.partitions.c.partition, t.partitions.c.watermark)
                    .where(t.partitions.c.partition.in_(numbers)))
                for partition, watermark in rows:
                    out[partition].watermark = watermark
                rows = await conn.execute(
                    sa.select(t.positions.c.topic, t.positions.c.partition, t.positions.c.next_offset)
                    .where(t.positions.c.partition.in_(numbers), t.positions.c.topic.in_(list(topics))))
                for topic, partition, next_offset in rows:
                    out[partition].positions[topic] = int(next_offset)
                f = t.health_feed.c
                last_seqs = await conn.execute(
                    sa.select(f.partition, sa.func.max(f.seq)).where(f.partition.in_(numbers))
                    .group_by(f.partition))
                for partition, seq in last_seqs:
                    out[partition].health_seq = int(seq)
        return out

    # -- dedup -------------------------------------------------------------------------------
    async def already_processed(self, ids: Sequence[str]) -> set[str]:
        """The subset of `ids` already recorded as processed (one query on PostgreSQL)."""
        if not ids:
            return set()
        with classified():
            return await self._dialect.already_processed(ids)

    # -- the batch transaction -----------------------------------------------------------------
    async def write_batch(self, batch: BatchWrite, now: datetime) -> None:
        """Commit one batch atomically. Raises StoreConflict / StoreUnavailable (retryable)."""
        with classified():
            await self._dialect.write_batch(batch, now)

    # -- outbox ------------------------------------------------------------------------------
    async def unpublished(self, partitions: Iterable[int]) -> list[OutboxRow]:
        numbers = sorted(set(partitions))
        if not numbers:
            return []
        o = t.outbox.c
        with classified():
            async with self._engine.connect() as conn:
                rows = await conn.execute(
                    sa.select(o.event_id, o.partition, o.key, o.payload)
                    .where(o.published_at.is_(None), o.partition.in_(numbers)).order_by(o.id))
                return [OutboxRow(r[0], r[1], r[2], bytes(r[3])) for r in rows]

    async def mark_published(self, event_ids: Sequence[str], now: datetime) -> None:
        if not event_ids:
            return
        with classified():
            await self._dialect.mark_published(list(event_ids), now)

    # -- health feed ---------------------------------------------------------------------------
    async def unpublished_health(self, partitions: Iterable[int]) -> list[HealthFeedRow]:
        """The health feed rows of these partitions still stored (not known published), in commit order."""
        numbers = sorted(set(partitions))
        if not numbers:
            return []
        f = t.health_feed.c
        with classified():
            async with self._engine.connect() as conn:
                rows = await conn.execute(
                    sa.select(f.partition, f.seq, f.messages).where(f.partition.in_(numbers))
                    .order_by(f.partition, f.seq))
                return [HealthFeedRow(r[0], int(r[1]), bytes(r[2])) for r in rows]

    async def delete_health_published(self, keys: Sequence[tuple[int, int]]) -> None:
        """Forget published health feed rows, by (partition, seq)."""
        if not keys:
            return
        with classified():
            await self._dialect.delete_health_feed(list(keys))

    async def open_risk_counts(self) -> dict[str, int]:
        r = t.risks.c
        with classified():
            async with self._engine.connect() as conn:
                rows = await conn.execute(
                    sa.select(r.type, sa.func.count()).where(r.status == "open").group_by(r.type))
                return {row[0]: int(row[1]) for row in rows}

    async def revenue(self, now: datetime) -> RevenueSummary:
        """ARR at risk by severity, churned ARR and gross revenue retention by month, in one scan of the
        accounts (docs/metrics.md defines each number). Months: the `RETENTION_MONTHS` calendar months (UTC)
        up to and including the one of `now`; the current month's numbers are month to date.

        - at risk: the ARR of every account not churned with an open risk, counted once under the highest
          severity among its open risks;
        - churned: the ARR of the accounts whose lifecycle is `churned` with `lifecycle_at` in the month;
        - retention: 1 - (ARR of the month's starting accounts that churned in the month) / (ARR of the
          month's starting accounts); starting accounts: first seen before the month's start and not churned
          before it. Downgrades are not counted (the state keeps only the current ARR). A month whose
          starting ARR is 0 has no retention.
        Each account counts with its current ARR (the last one told); accounts without ARR count for 0.
        """
        c = t.accounts.c
        months = _months(now, RETENTION_MONTHS)
        not_churned = sa.or_(c.lifecycle.is_(None), c.lifecycle != "churned")
        columns: list[Any] = [
            sa.func.sum(sa.case((sa.and_(c.risk_severity == severity, not_churned), c.arr)))
            for severity in SEVERITIES]
        for start, end in months:
            churned_in = sa.and_(c.lifecycle == "churned", c.lifecycle_at >= start, c.lifecycle_at < end)
            starting = sa.and_(c.first_seen_at < start,
                               sa.or_(not_churned, c.lifecycle_at >= start))
            columns += [sa.func.sum(sa.case((churned_in, c.arr))),
                        sa.func.sum(sa.case((starting, c.arr))),
                        sa.func.sum(sa.case((sa.and_(starting, churned_in), c.arr)))]
        with classified():
            async with self._engine.connect() as conn:
                row = (await conn.execute(sa.select(*columns))).one()
        values = [0.0 if v is None else float(v) for v in row]
        at_risk = dict(zip(SEVERITIES, values[:len(SEVERITIES)], strict=True))
        churned: dict[str, float] = {}
        retention: dict[str, float] = {}
        for i, (start, _) in enumerate(months):
            lost_all, base, lost = values[len(SEVERITIES) + 3 * i:len(SEVERITIES) + 3 * i + 3]
            label = f"{start.year:04d}-{start.month:02d}"
            churned[label] = lost_all
            if base > 0:
                retention[label] = 1.0 - lost / base
        return RevenueSummary(at_risk, churned, retention)


def _months(now: datetime, n: int) -> list[tuple[datetime, datetime]]:
    """[start, end) of the last `n` calendar months (UTC) up to the one of `now`, oldest first."""
    now = now.astimezone(UTC)
    index = now.year * 12 + now.month - 1
    out = []
    for i in range(index - n + 1, index + 1):
        start = datetime(i // 12, i % 12 + 1, 1, tzinfo=UTC)
        end = datetime((i + 1) // 12, (i + 1) % 12 + 1, 1, tzinfo=UTC)
        out.append((start, end))
    return out
