"""The scoring store's SQLite statements: SQLAlchemy Core `INSERT ... ON CONFLICT` with executemany, the
batch in one transaction. Chosen over the PostgreSQL statements by the composition root
(services/scoring/bootstrap.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.scoring.adapters import tables as t
from services.scoring.adapters.portfolio_columns import NO_PORTFOLIO, PORTFOLIO_COLUMNS
from services.scoring.adapters.store import NO_REVENUE, REVENUE_COLUMNS, AccountRow, BatchWrite

_CHUNK = 500  # bound parameters per IN (...) on SQLite


class SqliteStatements:
    """The store's dialect-specific part on SQLite (see `StoreDialect` in store.py)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def already_processed(self, ids: Sequence[str]) -> set[str]:
        async with self._engine.connect() as conn:
            seen: set[str] = set()
            col = t.processed_events.c.event_id
            for i in range(0, len(ids), _CHUNK):
                chunk = list(ids[i:i + _CHUNK])
                seen.update(r[0] for r in await conn.execute(sa.select(col).where(col.in_(chunk))))
            return seen

    async def write_batch(self, batch: BatchWrite, now: datetime) -> None:
        async with self._engine.begin() as conn:
            await _write(conn, batch, now)

    async def mark_published(self, event_ids: list[str], now: datetime) -> None:
        async with self._engine.begin() as conn:
            await _mark_published(conn, event_ids, now)

    async def delete_health_feed(self, keys: list[tuple[int, int]]) -> None:
        async with self._engine.begin() as conn:
            await _delete_health_feed(conn, keys)


async def _delete_health_feed(conn: AsyncConnection, keys: list[tuple[int, int]]) -> None:
    f = t.health_feed.c
    await conn.execute(sa.delete(t.health_feed).where(f.partition == sa.bindparam("p"), f.seq == sa.bindparam("q")),
                       [{"p": p, "q": q} for p, q in keys])


async def _mark_published(conn: AsyncConnection, event_ids: list[str], now: datetime) -> None:
    o = t.outbox.c
    for i in range(0, len(event_ids), _CHUNK):
        await conn.execute(sa.update(t.outbox).where(o.event_id.in_(event_ids[i:i + _CHUNK]),
                                                     o.published_at.is_(None)).values(published_at=now))


def _upsert(table: sa.Table, keys: Sequence[str], update: Sequence[str]) -> Any:
    stmt = sqlite_dialect.insert(table)
    return stmt.on_conflict_do_update(index_elements=list(keys),
                                      set_={c: stmt.excluded[c] for c in update})


def _revenue_values(a: AccountRow) -> dict[str, Any]:
    """The account's revenue and portfolio columns (all NULL when the model tells none)."""
    revenue = NO_REVENUE if a.revenue is None else a.revenue
    portfolio = NO_PORTFOLIO if a.portfolio is None else a.portfolio
    return {**{name: getattr(revenue, name) for name in REVENUE_COLUMNS}, **portfolio._asdict()}


async def _write(conn: AsyncConnection, b: BatchWrite, now: datetime) -> None:
    """The batch's statements, in the order the PostgreSQL statement's CTEs list them."""
    if b.processed_ids:
        await conn.execute(sa.insert(t.processed_events),
                           [{"event_id": i, "processed_at": now} for i in b.processed_ids])
    await _write_accounts(conn, b.accounts, now)
    if b.history:
        await conn.execute(sa.insert(t.history), [
            {"account_id": h.account_id, "as_of": h.as_of, "cause": h.cause, "score": h.score, "tier": h.tier,
             "snapshot": h.snapshot} for h in b.history])
    await _write_risks(conn, b)
    if b.outbox:
        stmt = sqlite_dialect.insert(t.outbox).on_conflict_do_nothing(index_elements=["event_id"])
        await conn.execute(stmt, [{"event_id": o.event_id, "partition": o.partition, "key": o.key,
                                   "payload": o.payload, "created_at": now} for o in b.outbox])
    await _write_positions(conn, b, now)
    if b.published:
        await _mark_published(conn, b.published, now)
    # Published rows first: they are always of earlier batches, never the ones this batch writes.
    if b.health_published:
        await _delete_health_feed(conn, b.health_published)
    if b.health_feed:
        await conn.execute(sa.insert(t.health_feed), [
            {"partition": x.partition, "seq": x.seq, "messages": x.messages, "created_at": now}
            for x in b.health_feed])


async def _write_accounts(conn: AsyncConnection, accounts: list[AccountRow], now: datetime) -> None:
    """Accounts with a new snapshot get their listing columns too; the others keep theirs."""
    full = [a for a in accounts if a.health is not None]
    bare = [a for a in accounts if a.health is None]
    if full:
        await conn.execute(
            _upsert(t.accounts, ["account_id"], ["partition", "state", "next_due", "score", "tier",
                                                 "as_of", "config_version", "updated_at",
                                                 *REVENUE_COLUMNS, *PORTFOLIO_COLUMNS]),
            [{"account_id": a.account_id, "partition": a.partition, "state": a.state, "next_due": a.next_due,
              "score": a.health.score, "tier": a.health.tier, "as_of": a.health.as_of,
              "config_version": a.health.config_version, "updated_at": now, **_revenue_values(a)}
             for a in full if a.health is not None])
    if bare:
        await conn.execute(
            _upsert(t.accounts, ["account_id"], ["partition", "state", "next_due", "updated_at",
                                                 *REVENUE_COLUMNS, *PORTFOLIO_COLUMNS]),
            [{"account_id": a.account_id, "partition": a.partition, "state": a.state, "next_due": a.next_due,
              "tier": "unknown", "updated_at": now, **_revenue_values(a)} for a in bare])


async def _write_risks(conn: AsyncConnection, b: BatchWrite) -> None:
    """Risk rows upserted only forward: an older transition (lower seq) never overwrites a newer one."""
    if not b.risks:
        return
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


async def _write_positions(conn: AsyncConnection, b: BatchWrite, now: datetime) -> None:
    """The topic-partitions' next offsets and the partitions' watermarks."""
    if b.positions:
        await conn.execute(
            _upsert(t.positions, ["topic", "partition"], ["next_offset", "updated_at"]),
            [{"topic": tp.topic, "partition": tp.partition, "next_offset": off, "updated_at": now}
             for tp, off in sorted(b.positions.items())])
    if b.watermarks:
        await conn.execute(
            _upsert(t.partitions, ["partition"], ["watermark", "updated_at"]),
            [{"partition": p, "watermark": w, "updated_at": now} for p, w in sorted(b.watermarks.items())])
