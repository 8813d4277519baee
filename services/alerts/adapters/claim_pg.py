"""The claim of consumed risk events on PostgreSQL, straight on asyncpg: four round trips per batch.

`SqlClaimStore.claim_reads/claim_writes` (SQLAlchemy Core) issue some eight statements per batch and
spend most of their client time building them. Here the same reads and writes are two statements,
prepared once per connection, on the asyncpg connection under the consumer's kept SQLAlchemy connection:

    BEGIN    (with SET LOCAL plan_cache_mode, in the same message)
    _READS   record the event ids as processed (ON CONFLICT DO NOTHING RETURNING: the new ones) and return
             the alert rows and per-target states of the batch's risks and the active silences of its
             accounts, as arrays of rows, and ids drawn for the alert rows still to be inserted (their
             messages name them)
    _WRITES  data-modifying CTEs fed by one jsonb document: upsert the alerts (RETURNING id, risk_id), the
             states, digest items and deliveries joined to them by risk id, and the positions (never
             backwards); RETURNING the deliveries actually inserted
    COMMIT

The rows written are built by the same functions as `SqlClaimStore.claim_writes` uses (`rows`), written in
the same order (alerts by risk id, states by (alert id, target key) in code point order, the rest as
planned), so they lock rows in the same order and draw ids from the sequences in the same order. Foreign
keys from the states, digest items and deliveries to a new alert row are checked at the end of the
statement, once the sibling CTE's rows are there. JSON is encoded with orjson, times are timezone-aware.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from services.alerts.adapters.rows import alert_values, claimed_delivery, delivery_values, utc
from services.alerts.service.records import (
    ClaimReads,
    ClaimWrites,
    DeliveryRow,
    KnownAlert,
    KnownState,
    SilenceRow,
    new_delivery,
)
from shared.db import driver_connection
from shared.db_errors import DATABASE_ERRORS
from shared.risks import RiskEvent

log = logging.getLogger(__name__)

_BEGIN = "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan"

# The lookups are LATERAL subqueries fenced with OFFSET 0: one index probe per risk id / alert / account,
# whatever plan the prepared statement settles on while the tables are young (a join on `= ANY($n)` may
# keep a sequential scan plan as they grow).
_READS = """
WITH fresh AS (
    INSERT INTO alerts_processed (event_id, processed_at)
    SELECT e, $2::timestamptz FROM unnest($1::text[]) WITH ORDINALITY AS u(e, ord) ORDER BY ord
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
), known AS (
    SELECT a.id, a.risk_id, a.last_seq, a.acked_at IS NOT NULL AS acked
    FROM unnest($3::text[]) AS u(risk_id),
         LATERAL (SELECT id, risk_id, last_seq, acked_at FROM alerts_alerts
                  WHERE risk_id = u.risk_id OFFSET 0) AS a
), reserved AS (
    -- ids for the alert rows this claim will insert, drawn in the batch's order (as SqlClaimStore does)
    SELECT n.risk_id, nextval(pg_get_serial_sequence('alerts_alerts', 'id')) AS id
    FROM (SELECT u.risk_id FROM unnest($3::text[]) WITH ORDINALITY AS u(risk_id, ord)
          WHERE NOT EXISTS (SELECT 1 FROM known k WHERE k.risk_id = u.risk_id)
          ORDER BY u.ord OFFSET 0) AS n
)
SELECT
    ARRAY(SELECT event_id FROM fresh) AS fresh,
    ARRAY(SELECT ROW(k.id, k.risk_id, k.last_seq, k.acked) FROM known k) AS alerts,
    ARRAY(SELECT ROW(k.risk_id, s.target_key, s.last_severity, s.last_kind, s.last_notified_at, s.notify_count,
                     s.last_seq, s.resolved_notified)
          FROM known k,
               LATERAL (SELECT * FROM alerts_states WHERE alert_id = k.id OFFSET 0) AS s) AS states,
    ARRAY(SELECT ROW(s.id, s.account_id, s.types::text, s.until, s.reason, s.created_by, s.created_at)
          FROM unnest($4::text[]) AS u(account_id),
               LATERAL (SELECT * FROM alerts_silences
                        WHERE account_id = u.account_id AND until > $2 AND deleted_at IS NULL
                        OFFSET 0) AS s) AS silences,
    ARRAY(SELECT ROW(r.risk_id, r.id) FROM reserved r) AS reserved
"""

# The writes take ONE jsonb document (rows as objects, built by the same functions as the SQLAlchemy path):
# binding it costs the client one orjson call, where some forty array parameters cost about as much as the
# round trip itself. Order: alerts by risk id (as given), states by (alert id, target key), the rest as given.
_WRITES = """
WITH upserted AS (
    INSERT INTO alerts_alerts AS a (id, risk_id, account_id, type, severity, status, summary, last_event_id,
                                    last_seq, last_event, opened_at, updated_at, resolved_at)
    SELECT coalesce(id, nextval(pg_get_serial_sequence('alerts_alerts', 'id'))), risk_id, account_id, type,
           severity, status, summary, last_event_id, last_seq, last_event, opened_at, updated_at, resolved_at
    FROM ROWS FROM (jsonb_to_recordset($1::jsonb -> 'alerts') AS (
             id bigint, risk_id text, account_id text, type text, severity text, status text, summary text,
             last_event_id text, last_seq int, last_event jsonb, opened_at timestamptz, updated_at timestamptz,
             resolved_at timestamptz)) WITH ORDINALITY AS u
    ORDER BY u.ordinality
    ON CONFLICT (risk_id) DO UPDATE SET
        account_id = EXCLUDED.account_id, type = EXCLUDED.type, severity = EXCLUDED.severity,
        status = EXCLUDED.status, summary = EXCLUDED.summary, last_event_id = EXCLUDED.last_event_id,
        last_seq = EXCLUDED.last_seq, last_event = EXCLUDED.last_event, updated_at = EXCLUDED.updated_at,
        resolved_at = EXCLUDED.resolved_at
    RETURNING a.id, a.risk_id
), states AS (
    INSERT INTO alerts_states AS s (alert_id, target_key, target, repeat_interval_s, last_severity, last_kind,
                                    last_notified_at, notify_count, last_seq, resolved_notified, next_repeat_at)
    SELECT a.id, u.target_key, u.target, u.repeat_interval_s, u.last_severity, u.last_kind, u.last_notified_at,
           u.notify_count, u.last_seq, u.resolved_notified, u.next_repeat_at
    FROM jsonb_to_recordset($1::jsonb -> 'states') AS u(
             risk_id text, target_key text, target jsonb, repeat_interval_s float8, last_severity text,
             last_kind text, last_notified_at timestamptz, notify_count int, last_seq int,
             resolved_notified bool, next_repeat_at timestamptz)
    JOIN upserted a ON a.risk_id = u.risk_id
    ORDER BY a.id, u.target_key COLLATE "C"
    ON CONFLICT (alert_id, target_key) DO UPDATE SET
        target = EXCLUDED.target, repeat_interval_s = EXCLUDED.repeat_interval_s,
        last_severity = EXCLUDED.last_severity, last_kind = EXCLUDED.last_kind,
        last_notified_at = EXCLUDED.last_notified_at, notify_count = EXCLUDED.notify_count,
        last_seq = EXCLUDED.last_seq, resolved_notified = EXCLUDED.resolved_notified,
        next_repeat_at = EXCLUDED.next_repeat_at
), digest AS (
    INSERT INTO alerts_digest_items (dedup_key, target_key, target, alert_id, risk, kind, dedup_suffix,
                                     queued_at, due_at, consumed_at, delivery_id)
    SELECT u.dedup_key, u.target_key, u.target, a.id, u.risk, u.kind, u.dedup_suffix, u.queued_at, u.due_at,
           u.consumed_at, u.delivery_id
    FROM ROWS FROM (jsonb_to_recordset($1::jsonb -> 'digest_items') AS (
             risk_id text, dedup_key text, target_key text, target jsonb, risk jsonb, kind text,
             dedup_suffix text, queued_at timestamptz, due_at timestamptz, consumed_at timestamptz,
             delivery_id bigint)) WITH ORDINALITY AS u
    JOIN upserted a ON a.risk_id = u.risk_id
    ORDER BY u.ordinality
    ON CONFLICT (dedup_key) DO NOTHING
), deliveries AS (
    INSERT INTO alerts_deliveries (dedup_key, alert_id, kind, channel, target_key, status, notification,
                                   source_received_at, attempts, error, error_code, lease_until, created_at,
                                   updated_at, sent_at)
    SELECT u.dedup_key, a.id, u.kind, u.channel, u.target_key, u.status, u.notification, u.source_received_at,
           u.attempts, u.error, u.error_code, u.lease_until, u.created_at, u.updated_at, u.sent_at
    FROM ROWS FROM (jsonb_to_recordset($1::jsonb -> 'deliveries') AS (
             risk_id text, dedup_key text, kind text, channel text, target_key text, status text,
             notification jsonb, source_received_at timestamptz, attempts int, error text, error_code text,
             lease_until timestamptz, created_at timestamptz, updated_at timestamptz, sent_at timestamptz))
         WITH ORDINALITY AS u
    JOIN upserted a ON a.risk_id = u.risk_id
    ORDER BY u.ordinality
    ON CONFLICT (dedup_key) DO NOTHING
    RETURNING id, dedup_key, alert_id
), positions AS (
    INSERT INTO alerts_positions AS p (topic, partition, next_offset, updated_at)
    SELECT topic, partition, next_offset, updated_at
    FROM jsonb_to_recordset($1::jsonb -> 'positions')
         AS u(topic text, partition int, next_offset bigint, updated_at timestamptz)
    ON CONFLICT (topic, partition) DO UPDATE SET
        next_offset = GREATEST(EXCLUDED.next_offset, p.next_offset), updated_at = EXCLUDED.updated_at
)
SELECT id, dedup_key, alert_id FROM deliveries
"""


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_NAIVE_UTC).decode()
    except TypeError:  # an integer beyond 64 bits inside evidence: the standard library encodes it
        return json.dumps(value, default=_iso)


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return utc(value).isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class PgClaimStore:
    """`ClaimStore` on one asyncpg connection; its statements are prepared once per connection."""

    def __init__(self, apg: asyncpg.Connection) -> None:
        self._apg = apg
        self._reads: asyncpg.prepared_stmt.PreparedStatement | None = None
        self._writes: asyncpg.prepared_stmt.PreparedStatement | None = None

    @classmethod
    async def under(cls, conn: AsyncConnection) -> PgClaimStore:
        """The store on the asyncpg connection under a SQLAlchemy one (kept as long as that one is)."""
        apg = await driver_connection(conn)
        if not isinstance(apg, asyncpg.Connection):
            raise TypeError("the PostgreSQL claim store needs a postgresql+asyncpg engine")
        return cls(apg)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[PgClaimStore]:
        """BEGIN ... COMMIT, or ROLLBACK when the block raises.

        The two statements run on generic plans (SET LOCAL: this transaction only). Left to choose, the
        server plans them anew on every execution, since a custom plan sees the real, small arrays: that
        planning costs several times their execution, and the client waits for it."""
        apg = self._apg
        await apg.execute(_BEGIN)  # one round trip for both commands (simple query protocol)
        try:
            yield self
        except BaseException:
            if not apg.is_closed():
                try:
                    await apg.execute("ROLLBACK")
                except DATABASE_ERRORS as exc:  # the block's own error is the one that matters
                    log.warning("rolling back a failed claim failed too (%s)", type(exc).__name__)
            raise
        await apg.execute("COMMIT")

    async def claim_reads(self, risks: Sequence[RiskEvent], now: datetime) -> ClaimReads:
        if not risks:
            return ClaimReads(new_event_ids=set(), alerts={}, states={}, silences=[])
        if self._reads is None:
            self._reads = await self._apg.prepare(_READS)
        row = await self._reads.fetchrow(
            list(dict.fromkeys(r.event_id for r in risks)),
            now,
            list(dict.fromkeys(r.risk_id for r in risks)),
            list(dict.fromkeys(r.account_id for r in risks)),
        )
        fresh, alerts, states, silences, reserved = row
        return ClaimReads(
            new_event_ids=set(fresh),
            alerts={rid: KnownAlert(id=aid, last_seq=seq, acked=acked) for aid, rid, seq, acked in alerts},
            states={
                (rid, key): KnownState(
                    last_severity=sev,
                    last_kind=kind,
                    last_notified_at=notified,
                    notify_count=count,
                    last_seq=seq,
                    resolved_notified=resolved,
                )
                for rid, key, sev, kind, notified, count, seq, resolved in states
            },
            silences=[
                SilenceRow(
                    id=sid,
                    account_id=account,
                    types=list(orjson.loads(types) or []),
                    until=until,
                    reason=reason,
                    created_by=by,
                    created_at=created,
                    deleted_at=None,
                )
                for sid, account, types, until, reason, by, created in silences
            ],
            new_alert_ids={rid: int(aid) for rid, aid in reserved},
        )

    async def claim_writes(self, writes: ClaimWrites) -> list[DeliveryRow]:
        now = writes.now
        if self._writes is None:
            self._writes = await self._apg.prepare(_WRITES)
        deliveries = [
            (rid, delivery_values(new_delivery(n, None), now, writes.lease_until)) for n, rid in writes.deliveries
        ]
        document = {
            "alerts": [
                {**alert_values(r, now), "id": writes.alert_ids.get(r.risk_id)}
                for r in sorted(writes.alerts, key=lambda r: r.risk_id)
            ],
            "states": [{"risk_id": rid, **cols} for rid, cols in writes.states],
            "digest_items": [{"risk_id": rid, **cols} for rid, cols in writes.digest_items],
            "deliveries": [{"risk_id": rid, **values} for rid, values in deliveries],
            "positions": [
                {"topic": tp.topic, "partition": tp.partition, "next_offset": offset, "updated_at": now}
                for tp, offset in sorted(writes.positions.items())
            ],
        }
        rows = await self._writes.fetch(_json(document))
        inserted = {key: (int(did), aid) for did, key, aid in rows}
        # as AlertsRepository.claim: the new rows only, in claim order, matched by their dedup key
        return [
            claimed_delivery(values, *inserted[values["dedup_key"]])
            for _, values in deliveries
            if values["dedup_key"] in inserted
        ]
