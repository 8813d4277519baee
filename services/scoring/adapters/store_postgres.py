"""The scoring store's PostgreSQL statements, sent straight to the asyncpg connection under SQLAlchemy.

The whole batch is one statement of `INSERT ... SELECT FROM unnest(...)` CTEs: one round trip, atomic by
itself. Chosen over the SQLite statements by the composition root (services/scoring/bootstrap.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scoring.adapters.portfolio_columns import NO_PORTFOLIO, PORTFOLIO_COLUMNS
from services.scoring.adapters.store import NO_REVENUE, REVENUE_COLUMNS, AccountRow, BatchWrite
from shared.db import driver_connection, pooled_driver_connection


class PostgresStatements:
    """The store's dialect-specific part on PostgreSQL (see `StoreDialect` in store.py)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def already_processed(self, ids: Sequence[str]) -> set[str]:
        async with self._connection() as apg:
            rows = await apg.fetch(_ALREADY_PROCESSED, list(ids))
        return {r[0] for r in rows}

    async def write_batch(self, batch: BatchWrite, now: datetime) -> None:
        async with self._connection() as apg:
            await apg.execute(_BATCH, *_batch_args(batch, now))

    async def mark_published(self, event_ids: list[str], now: datetime) -> None:
        async with self._engine.begin() as conn:
            apg = await driver_connection(conn)
            await apg.execute("UPDATE scoring_outbox SET published_at = $2 "
                              "WHERE event_id = ANY($1::text[]) AND published_at IS NULL", event_ids, now)

    async def delete_health_feed(self, keys: list[tuple[int, int]]) -> None:
        async with self._engine.begin() as conn:
            apg = await driver_connection(conn)
            await apg.execute(_DELETE_HEALTH_FEED, [k[0] for k in keys], [k[1] for k in keys])

    def _connection(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """The asyncpg connection under a pooled one. The engine does not ping connections on checkout
        (a round trip per batch); a connection that failed here is invalidated, so the retried batch gets
        a fresh one from the pool (a unique violation leaves the connection fine: only the statement failed)."""
        return pooled_driver_connection(self._engine, keep_on=(asyncpg.UniqueViolationError,))


# One primary-key probe per id. Written as a LATERAL lookup on purpose: `event_id = ANY($1)` (or a join)
# lets the planner pick a sequential scan while the table is young or not analyzed yet, and the prepared
# statement keeps that plan as the table grows (seconds per batch at a few hundred thousand ids).
_ALREADY_PROCESSED = """
SELECT u.event_id
FROM unnest($1::text[]) AS u(event_id),
     LATERAL (SELECT 1 FROM scoring_processed_events p WHERE p.event_id = u.event_id LIMIT 1) AS hit
"""

# The whole batch is ONE statement: data-modifying CTEs, each fed by `unnest` of array parameters, all
# applied atomically by the statement's own transaction (one round trip, one commit). The CTEs touch
# disjoint rows (new processed ids; distinct accounts, risks, positions, partitions; new outbox and health
# feed rows versus earlier ones marked published or deleted), which is what PostgreSQL requires of them.
_BATCH = """
WITH processed AS (
    INSERT INTO scoring_processed_events (event_id, processed_at) SELECT unnest($1::text[]), $41::timestamptz
), accounts_full AS (
    INSERT INTO scoring_accounts (account_id, partition, state, next_due, score, tier, as_of, config_version,
                                  updated_at, arr, lifecycle, lifecycle_at, risk_severity, first_seen_at,
                                  csm_email, csm_slack, csm_name, segment, renewal_date)
    SELECT a, p, s, d, sc, tr, ao, cv, $41, ar, lc, la, rs, fs, ce, cs, cn, sg, rd
    FROM unnest($2::text[], $3::int[], $4::bytea[], $5::timestamptz[], $6::float8[], $7::text[],
                $8::timestamptz[], $9::text[], $43::float8[], $44::text[], $45::timestamptz[], $46::text[],
                $47::timestamptz[], $53::text[], $54::text[], $55::text[], $56::text[], $57::date[])
         AS u(a, p, s, d, sc, tr, ao, cv, ar, lc, la, rs, fs, ce, cs, cn, sg, rd)
    ON CONFLICT (account_id) DO UPDATE SET
        partition = EXCLUDED.partition, state = EXCLUDED.state, next_due = EXCLUDED.next_due,
        score = EXCLUDED.score, tier = EXCLUDED.tier, as_of = EXCLUDED.as_of,
        config_version = EXCLUDED.config_version, updated_at = EXCLUDED.updated_at,
        arr = EXCLUDED.arr, lifecycle = EXCLUDED.lifecycle, lifecycle_at = EXCLUDED.lifecycle_at,
        risk_severity = EXCLUDED.risk_severity, first_seen_at = EXCLUDED.first_seen_at,
        csm_email = EXCLUDED.csm_email, csm_slack = EXCLUDED.csm_slack, csm_name = EXCLUDED.csm_name,
        segment = EXCLUDED.segment, renewal_date = EXCLUDED.renewal_date
), accounts_state AS (
    INSERT INTO scoring_accounts (account_id, partition, state, next_due, tier, updated_at, arr, lifecycle,
                                  lifecycle_at, risk_severity, first_seen_at,
                                  csm_email, csm_slack, csm_name, segment, renewal_date)
    SELECT a, p, s, d, 'unknown', $41, ar, lc, la, rs, fs, ce, cs, cn, sg, rd
    FROM unnest($10::text[], $11::int[], $12::bytea[], $13::timestamptz[], $48::float8[], $49::text[],
                $50::timestamptz[], $51::text[], $52::timestamptz[], $58::text[], $59::text[], $60::text[],
                $61::text[], $62::date[]) AS u(a, p, s, d, ar, lc, la, rs, fs, ce, cs, cn, sg, rd)
    ON CONFLICT (account_id) DO UPDATE SET
        partition = EXCLUDED.partition, state = EXCLUDED.state, next_due = EXCLUDED.next_due,
        updated_at = EXCLUDED.updated_at,
        arr = EXCLUDED.arr, lifecycle = EXCLUDED.lifecycle, lifecycle_at = EXCLUDED.lifecycle_at,
        risk_severity = EXCLUDED.risk_severity, first_seen_at = EXCLUDED.first_seen_at,
        csm_email = EXCLUDED.csm_email, csm_slack = EXCLUDED.csm_slack, csm_name = EXCLUDED.csm_name,
        segment = EXCLUDED.segment, renewal_date = EXCLUDED.renewal_date
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
), health_feed AS (
    INSERT INTO scoring_health_feed (partition, seq, messages, created_at)
    SELECT p, q, m, $41 FROM unnest($63::int[], $64::int8[], $65::bytea[]) AS u(p, q, m)
), health_published AS (
    DELETE FROM scoring_health_feed f USING unnest($66::int[], $67::int8[]) AS u(p, q)
    WHERE f.partition = u.p AND f.seq = u.q
)
SELECT 1
"""

_DELETE_HEALTH_FEED = """
DELETE FROM scoring_health_feed f USING unnest($1::int[], $2::int8[]) AS u(p, q)
WHERE f.partition = u.p AND f.seq = u.q
"""


def _batch_args(b: BatchWrite, now: datetime) -> list[Any]:
    """The parameters of _BATCH, in order."""
    full = [a for a in b.accounts if a.health is not None]
    bare = [a for a in b.accounts if a.health is None]
    health = [a.health for a in full if a.health is not None]
    h, r, o, hf = b.history, b.risks, b.outbox, b.health_feed
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
        # $53-$62, their portfolio columns
        *_portfolio_args(full), *_portfolio_args(bare),
        # $63-$67, the health feed: rows written, rows published since the last batch (deleted)
        [x.partition for x in hf], [x.seq for x in hf], [x.messages for x in hf],
        [k[0] for k in b.health_published], [k[1] for k in b.health_published],
    ]


def _revenue_args(rows: list[AccountRow]) -> list[list[Any]]:
    revenue = [NO_REVENUE if a.revenue is None else a.revenue for a in rows]
    return [[getattr(x, name) for x in revenue] for name in REVENUE_COLUMNS]


def _portfolio_args(rows: list[AccountRow]) -> list[list[Any]]:
    portfolio = [NO_PORTFOLIO if a.portfolio is None else a.portfolio for a in rows]
    return [[getattr(x, name) for x in portfolio] for name in PORTFOLIO_COLUMNS]
