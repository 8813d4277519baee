"""The scoring unit of work: one transaction per consumed batch, plus the loads done on assignment.

PostgreSQL writes go through the asyncpg connection underneath SQLAlchemy: the whole batch is one statement
of `INSERT ... SELECT FROM unnest(...)` CTEs (one round trip, atomic by itself); SQLite uses SQLAlchemy Core
`INSERT ... ON CONFLICT` with executemany.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.scoring.adapters import tables as t
from services.scoring.adapters.errors import SchemaMissing, classified
from shared.bus.port import TopicPartition
from shared.db import driver_connection, is_postgres, pooled_driver_connection
from shared.risks import SEVERITIES

_SQLITE_CHUNK = 500  # bound parameters per IN (...) on SQLite


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


_NO_REVENUE = RevenueColumns(None, None, None, None, None)
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


@dataclass(slots=True)
class PartitionLoad:
    """What a consumer needs to own a partition number: states, timers, watermark, positions."""

    states: dict[str, bytes]
    timers: list[tuple[str, datetime]]
    watermark: datetime | None
    positions: dict[str, int]  # topic -> next offset


class ScoringStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._pg = is_postgres(engine)

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
        missing = sorted(table.name for table in t.ALL_TABLES if table.name not in names)
        if missing:
            raise SchemaMissing(f"scoring tables missing ({', '.join(missing)}): run `churnsignal migrate` "
                                "against CHURNSIGNAL_DATABASE_URL first")
        missing = [col.name for col in t.accounts.columns if col.name not in account_columns]
        if missing:
            raise SchemaMissing(f"scoring_accounts columns missing ({', '.join(missing)}): run `churnsignal "
                                "migrate` against CHURNSIGNAL_DATABASE_URL first")

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
        return out

    # -- dedup -------------------------------------------------------------------------------
    async def already_processed(self, ids: Sequence[str]) -> set[str]:
        """The subset of `ids` already recorded as processed (one query on PostgreSQL)."""
        if not ids:
            return set()
        with classified():
            if self._pg:
                async with self._pg_connection() as apg:
                    rows = await apg.fetch(_PG_ALREADY_PROCESSED, list(ids))
                return {r[0] for r in rows}
            async with self._engine.connect() as conn:
                seen: set[str] = set()
                col = t.processed_events.c.event_id
                for i in range(0, len(ids), _SQLITE_CHUNK):
                    chunk = list(ids[i:i + _SQLITE_CHUNK])
                    seen.update(r[0] for r in await conn.execute(sa.select(col).where(col.in_(chunk))))
                return seen

    # -- the batch transaction -----------------------------------------------------------------
    async def write_batch(self, batch: BatchWrite, now: datetime) -> None:
        """Commit one batch atomically. Raises StoreConflict / StoreUnavailable (retryable)."""
        with classified():
            if self._pg:
                async with self._pg_connection() as apg:
                    await apg.execute(_PG_BATCH, *_pg_batch_args(batch, now))
            else:
                async with self._engine.begin() as conn:
                    await _sqlite_write(conn, batch, now)

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
            async with self._engine.begin() as conn:
                await _mark_published(conn, self._pg, list(event_ids), now)

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

    def _pg_connection(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """The asyncpg connection under a pooled one. The engine does not ping connections on checkout
        (a round trip per batch); a connection that failed here is invalidated, so the retried batch gets
        a fresh one from the pool (a unique violation leaves the connection fine: only the statement failed)."""
        return pooled_driver_connection(self._engine, keep_on=(asyncpg.UniqueViolationError,))


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


async def _mark_published(conn: AsyncConnection, pg: bool, event_ids: list[str], now: datetime) -> None:
    if pg:
        apg = await driver_connection(conn)
        await apg.execute("UPDATE scoring_outbox SET published_at = $2 "
                          "WHERE event_id = ANY($1::text[]) AND published_at IS NULL", event_ids, now)
        return
    o = t.outbox.c
    for i in range(0, len(event_ids), _SQLITE_CHUNK):
        await conn.execute(sa.update(t.outbox).where(o.event_id.in_(event_ids[i:i + _SQLITE_CHUNK]),
                                                     o.published_at.is_(None)).values(published_at=now))


# -- PostgreSQL ------------------------------------------------------------------------------------

# One primary-key probe per id. Written as a LATERAL lookup on purpose: `event_id = ANY($1)` (or a join)
# lets the planner pick a sequential scan while the table is young or not analyzed yet, and the prepared
# statement keeps that plan as the table grows (seconds per batch at a few hundred thousand ids).
_PG_ALREADY_PROCESSED = """
SELECT u.event_id
FROM unnest($1::text[]) AS u(event_id),
     LATERAL (SELECT 1 FROM scoring_processed_events p WHERE p.event_id = u.event_id LIMIT 1) AS hit
"""

# The whole batch is ONE statement: data-modifying CTEs, each fed by `unnest` of array parameters, all
# applied atomically by the statement's own transaction (one round trip, one commit). The CTEs touch
# disjoint rows (new processed ids; distinct accounts, risks, positions, partitions; new outbox rows
# versus earlier ones marked published), which is what PostgreSQL requires of them.
_PG_BATCH = """
WITH processed AS (
    INSERT INTO scoring_processed_events (event_id) SELECT unnest($1::text[])
), accounts_full AS (
    INSERT INTO scoring_accounts (account_id, partition, state, next_due, score, tier, as_of, config_version,
                                  updated_at, arr, lifecycle, lifecycle_at, risk_severity, first_seen_at)
    SELECT a, p, s, d, sc, tr, ao, cv, $41, ar, lc, la, rs, fs
    FROM unnest($2::text[], $3::int[], $4::bytea[], $5::timestamptz[], $6::float8[], $7::text[],
                $8::timestamptz[], $9::text[], $43::float8[], $44::text[], $45::timestamptz[], $46::text[],
                $47::timestamptz[]) AS u(a, p, s, d, sc, tr, ao, cv, ar, lc, la, rs, fs)
    ON CONFLICT (account_id) DO UPDATE SET
        partition = EXCLUDED.partition, state = EXCLUDED.state, next_due = EXCLUDED.next_due,
        score = EXCLUDED.score, tier = EXCLUDED.tier, as_of = EXCLUDED.as_of,
        config_version = EXCLUDED.config_version, updated_at = EXCLUDED.updated_at,
        arr = EXCLUDED.arr, lifecycle = EXCLUDED.lifecycle, lifecycle_at = EXCLUDED.lifecycle_at,
        risk_severity = EXCLUDED.risk_severity, first_seen_at = EXCLUDED.first_seen_at
), accounts_state AS (
    INSERT INTO scoring_accounts (account_id, partition, state, next_due, tier, updated_at, arr, lifecycle,
                                  lifecycle_at, risk_severity, first_seen_at)
    SELECT a, p, s, d, 'unknown', $41, ar, lc, la, rs, fs
    FROM unnest($10::text[], $11::int[], $12::bytea[], $13::timestamptz[], $48::float8[], $49::text[],
                $50::timestamptz[], $51::text[], $52::timestamptz[]) AS u(a, p, s, d, ar, lc, la, rs, fs)
    ON CONFLICT (account_id) DO UPDATE SET
        partition = EXCLUDED.partition, state = EXCLUDED.state, next_due = EXCLUDED.next_due,
        updated_at = EXCLUDED.updated_at,
        arr = EXCLUDED.arr, lifecycle = EXCLUDED.lifecycle, lifecycle_at = EXCLUDED.lifecycle_at,
        risk_severity = EXCLUDED.risk_severity, first_seen_at = EXCLUDED.first_seen_at
), history AS (
    INSERT INTO scoring_history (account_id, as_of, cause, score, tier, snapshot)
    SELECT a, ao, c, sc, tr, sn
    FROM unnest($14::text[], $15::timestamptz[], $16::text[], $17::float8[], $18::text[], $19::text[])
         WITH ORDINALITY AS u(a, ao, c, sc, tr, sn, ord)
    ORDER BY ord
), risks AS (
    INSERT INTO scoring_risks (risk_id, account_id, type, severity, status, seq, summary, evidence, opened_at,
                               updated_at, resolved_at, trigger_event_id)
    SELECT * FROM unnest($20::text[], $21::text[], $22::text[], $23::text[], $24::text[], $25::int[],
                         $26::text[], $27::text[], $28::timestamptz[], $29::timestamptz[], $30::timestamptz[],
                         $31::text[])
    ON CONFLICT (risk_id) DO UPDATE SET
        severity = EXCLUDED.severity, status = EXCLUDED.status, seq = EXCLUDED.seq, summary = EXCLUDED.summary,
        evidence = EXCLUDED.evidence, updated_at = EXCLUDED.updated_at, resolved_at = EXCLUDED.resolved_at,
        trigger_event_id = EXCLUDED.trigger_event_id
    WHERE scoring_risks.seq < EXCLUDED.seq
), outbox AS (
    INSERT INTO scoring_outbox (event_id, partition, key, payload, created_at)
    SELECT e, p, k, pl, $41
    FROM unnest($32::text[], $33::int[], $34::text[], $35::bytea[]) WITH ORDINALITY AS u(e, p, k, pl, ord)
    ORDER BY ord
    ON CONFLICT (event_id) DO NOTHING
), positions AS (
    INSERT INTO scoring_positions (topic, partition, next_offset, updated_at)
    SELECT tp, p, o, $41 FROM unnest($36::text[], $37::int[], $38::int8[]) AS u(tp, p, o)
    ON CONFLICT (topic, partition) DO UPDATE SET
        next_offset = EXCLUDED.next_offset, updated_at = EXCLUDED.updated_at
), watermarks AS (
    INSERT INTO scoring_partitions (partition, watermark, updated_at)
    SELECT p, w, $41 FROM unnest($39::int[], $40::timestamptz[]) AS u(p, w)
    ON CONFLICT (partition) DO UPDATE SET watermark = EXCLUDED.watermark, updated_at = EXCLUDED.updated_at
), published AS (
    UPDATE scoring_outbox SET published_at = $41
    WHERE event_id = ANY($42::text[]) AND published_at IS NULL
)
SELECT 1
"""


def _pg_batch_args(b: BatchWrite, now: datetime) -> list[Any]:
    """The parameters of _PG_BATCH, in order."""
    full = [a for a in b.accounts if a.health is not None]
    bare = [a for a in b.accounts if a.health is None]
    health = [a.health for a in full if a.health is not None]
    h, r, o = b.history, b.risks, b.outbox
    tps = sorted(b.positions)
    parts = sorted(b.watermarks)
    return [
        b.processed_ids,
        [a.account_id for a in full], [a.partition for a in full], [a.state for a in full],
        [a.next_due for a in full], [x.score for x in health], [x.tier for x in health],
        [x.as_of for x in health], [x.config_version for x in health],
        [a.account_id for a in bare], [a.partition for a in bare], [a.state for a in bare],
        [a.next_due for a in bare],
        [x.account_id for x in h], [x.as_of for x in h], [x.cause for x in h], [x.score for x in h],
        [x.tier for x in h], [x.snapshot for x in h],
        [x.risk_id for x in r], [x.account_id for x in r], [x.type for x in r], [x.severity for x in r],
        [x.status for x in r], [x.seq for x in r], [x.summary for x in r], [x.evidence for x in r],
        [x.opened_at for x in r], [x.updated_at for x in r], [x.resolved_at for x in r],
        [x.trigger_event_id for x in r],
        [x.event_id for x in o], [x.partition for x in o], [x.key for x in o], [x.payload for x in o],
        [tp.topic for tp in tps], [tp.partition for tp in tps], [b.positions[tp] for tp in tps],
        parts, [b.watermarks[p] for p in parts],
        now, b.published,
        # $43-$52, the accounts' revenue columns (numbered after the rest so the above kept their numbers)
        *_revenue_args(full), *_revenue_args(bare),
    ]


def _revenue_args(rows: list[AccountRow]) -> list[list[Any]]:
    revenue = [_NO_REVENUE if a.revenue is None else a.revenue for a in rows]
    return [[getattr(x, name) for x in revenue] for name in REVENUE_COLUMNS]


# -- SQLite ----------------------------------------------------------------------------------------

def _sqlite_upsert(table: sa.Table, keys: Sequence[str], update: Sequence[str]) -> Any:
    stmt = sqlite_dialect.insert(table)
    return stmt.on_conflict_do_update(index_elements=list(keys),
                                      set_={c: stmt.excluded[c] for c in update})


def _revenue_values(a: AccountRow) -> dict[str, Any]:
    revenue = _NO_REVENUE if a.revenue is None else a.revenue
    return {name: getattr(revenue, name) for name in REVENUE_COLUMNS}


async def _sqlite_write(conn: AsyncConnection, b: BatchWrite, now: datetime) -> None:
    if b.processed_ids:
        await conn.execute(sa.insert(t.processed_events), [{"event_id": i} for i in b.processed_ids])
    full = [a for a in b.accounts if a.health is not None]
    bare = [a for a in b.accounts if a.health is None]
    if full:
        await conn.execute(
            _sqlite_upsert(t.accounts, ["account_id"], ["partition", "state", "next_due", "score", "tier",
                                                        "as_of", "config_version", "updated_at",
                                                        *REVENUE_COLUMNS]),
            [{"account_id": a.account_id, "partition": a.partition, "state": a.state, "next_due": a.next_due,
              "score": a.health.score, "tier": a.health.tier, "as_of": a.health.as_of,
              "config_version": a.health.config_version, "updated_at": now, **_revenue_values(a)}
             for a in full if a.health is not None])
    if bare:
        await conn.execute(
            _sqlite_upsert(t.accounts, ["account_id"], ["partition", "state", "next_due", "updated_at",
                                                        *REVENUE_COLUMNS]),
            [{"account_id": a.account_id, "partition": a.partition, "state": a.state, "next_due": a.next_due,
              "tier": "unknown", "updated_at": now, **_revenue_values(a)} for a in bare])
    if b.history:
        await conn.execute(sa.insert(t.history), [
            {"account_id": h.account_id, "as_of": h.as_of, "cause": h.cause, "score": h.score, "tier": h.tier,
             "snapshot": h.snapshot} for h in b.history])
    if b.risks:
        stmt = sqlite_dialect.insert(t.risks)
        cols = ["severity", "status", "seq", "summary", "evidence", "updated_at", "resolved_at",
                "trigger_event_id"]
        stmt = stmt.on_conflict_do_update(index_elements=["risk_id"],
                                          set_={c: stmt.excluded[c] for c in cols},
                                          where=t.risks.c.seq < stmt.excluded.seq)
        await conn.execute(stmt, [
            {"risk_id": r.risk_id, "account_id": r.account_id, "type": r.type, "severity": r.severity,
             "status": r.status, "seq": r.seq, "summary": r.summary, "evidence": r.evidence,
             "opened_at": r.opened_at, "updated_at": r.updated_at, "resolved_at": r.resolved_at,
             "trigger_event_id": r.trigger_event_id} for r in b.risks])
    if b.outbox:
        stmt = sqlite_dialect.insert(t.outbox).on_conflict_do_nothing(index_elements=["event_id"])
        await conn.execute(stmt, [{"event_id": o.event_id, "partition": o.partition, "key": o.key,
                                   "payload": o.payload, "created_at": now} for o in b.outbox])
    if b.positions:
        await conn.execute(
            _sqlite_upsert(t.positions, ["topic", "partition"], ["next_offset", "updated_at"]),
            [{"topic": tp.topic, "partition": tp.partition, "next_offset": off, "updated_at": now}
             for tp, off in sorted(b.positions.items())])
    if b.watermarks:
        await conn.execute(
            _sqlite_upsert(t.partitions, ["partition"], ["watermark", "updated_at"]),
            [{"partition": p, "watermark": w, "updated_at": now} for p, w in sorted(b.watermarks.items())])
    if b.published:
        await _mark_published(conn, False, b.published, now)
