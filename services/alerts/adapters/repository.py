"""The alerts service's repository: typed reads and writes on one connection (one unit of work).

The caller owns the transaction (`engine.begin()`, or `SqlUnitOfWork.begin()`); methods only execute
statements. It is the `AlertsStore` of the service layer's ports; the claim of consumed risk events
itself lives in `claim_sql` (SQLAlchemy Core) and `claim_pg` (asyncpg).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.alerts.adapters import tables as t
from services.alerts.adapters.claim_sql import SqlClaimStore
from services.alerts.adapters.rows import (
    alert_row,
    claimed_delivery,
    delivery_row,
    delivery_values,
    digest_item_row,
    insert_for,
    silence_row,
    state_row,
    utc,
)
from services.alerts.domain.daily import DAILY_ITEM, DAILY_KIND
from services.alerts.service.records import (
    AlertRow,
    AttemptRow,
    ClaimReads,
    ClaimWrites,
    DailyReads,
    DeliveryRow,
    DigestItemRow,
    NewDelivery,
    Outcome,
    SilenceRow,
    StateRow,
)
from shared.bus.port import TopicPartition
from shared.risks import RiskEvent


class AlertsRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    # -- consumed positions and processed risk events ------------------------------------------
    async def positions(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        tps = list(tps)
        if not tps:
            return {}
        topics = {tp.topic for tp in tps}
        rows = await self.conn.execute(
            sa.select(t.positions.c.topic, t.positions.c.partition, t.positions.c.next_offset).where(
                t.positions.c.topic.in_(topics)
            )
        )
        wanted = set(tps)
        out = {}
        for topic, partition, offset in rows:
            tp = TopicPartition(topic, partition)
            if tp in wanted:
                out[tp] = int(offset)
        return out

    async def save_positions(self, offsets: dict[TopicPartition, int], now: datetime) -> None:
        """Upsert, never moving a position backwards (a rewound consumer re-reads, it does not forget)."""
        if not offsets:
            return
        ins = insert_for(self.conn, t.positions)
        stmt = ins.on_conflict_do_update(
            index_elements=[t.positions.c.topic, t.positions.c.partition],
            set_={
                "next_offset": sa.func.max(ins.excluded.next_offset, t.positions.c.next_offset)
                if self.conn.dialect.name == "sqlite"
                else sa.func.greatest(ins.excluded.next_offset, t.positions.c.next_offset),
                "updated_at": ins.excluded.updated_at,
            },
        )
        await self.conn.execute(
            stmt,
            [
                {"topic": tp.topic, "partition": tp.partition, "next_offset": off, "updated_at": now}
                for tp, off in sorted(offsets.items())
            ],
        )

    async def mark_processed(self, event_ids: Iterable[str], now: datetime) -> set[str]:
        """Record risk event ids as processed; returns those not seen before (the rest are redeliveries)."""
        values = [{"event_id": e, "processed_at": now} for e in dict.fromkeys(event_ids)]
        if not values:
            return set()
        stmt = (
            insert_for(self.conn, t.processed)
            .on_conflict_do_nothing(index_elements=[t.processed.c.event_id])
            .returning(t.processed.c.event_id)
        )
        return {row[0] for row in (await self.conn.execute(stmt, values)).all()}

    # -- one claim of consumed risk events (`ClaimStore`) ----------------------------------------
    async def claim_reads(self, risks: Sequence[RiskEvent], now: datetime) -> ClaimReads:
        """See `SqlClaimStore`: a repository is the claim store of the transaction it runs in."""
        return await SqlClaimStore(self).claim_reads(risks, now)

    async def claim_writes(self, writes: ClaimWrites) -> list[DeliveryRow]:
        return await SqlClaimStore(self).claim_writes(writes)

    # -- alerts and per-target state -----------------------------------------------------------
    async def alerts_by_risk(self, risk_ids: Iterable[str]) -> dict[str, AlertRow]:
        ids = set(risk_ids)
        if not ids:
            return {}
        rows = await self.conn.execute(sa.select(t.alerts).where(t.alerts.c.risk_id.in_(ids)))
        return {a.risk_id: a for a in map(alert_row, rows)}

    async def alert(self, alert_id: int) -> AlertRow | None:
        row = (await self.conn.execute(sa.select(t.alerts).where(t.alerts.c.id == alert_id))).first()
        return None if row is None else alert_row(row)

    async def reserve_alert_ids(self, count: int) -> list[int]:
        """`count` ids for alert rows this transaction is about to insert, drawn in order, so that their
        messages can name their alert before the rows exist. PostgreSQL: from the table's sequence;
        SQLite (one writer, whose transaction already holds the write lock): the next rowids."""
        if count <= 0:
            return []
        if self.conn.dialect.name == "postgresql":
            rows = await self.conn.execute(
                sa.text("SELECT nextval(pg_get_serial_sequence('alerts_alerts', 'id')) FROM generate_series(1, :n)"),
                {"n": count},
            )
            return [int(r[0]) for r in rows]
        top = (await self.conn.execute(sa.select(sa.func.max(t.alerts.c.id)))).scalar()
        return list(range(int(top or 0) + 1, int(top or 0) + 1 + count))

    async def upsert_alerts(self, values: list[dict[str, Any]]) -> dict[str, int]:
        """Insert or update alert rows by risk id in one statement (never touching opened_at or an
        acknowledgement); returns their ids by risk id. A value may carry its `id` (a known or reserved
        one, see `reserve_alert_ids`): a new row takes it; an existing row keeps its own."""
        if not values:
            return {}
        with_id = [v for v in values if v.get("id") is not None]
        if with_id and len(with_id) < len(values):  # one statement per shape of row
            ids = await self.upsert_alerts(with_id)
            ids.update(await self.upsert_alerts([v for v in values if v.get("id") is None]))
            return ids
        if not with_id:
            values = [{k: v for k, v in row.items() if k != "id"} for row in values]
        ins = insert_for(self.conn, t.alerts)
        mutable = (
            "account_id",
            "type",
            "severity",
            "status",
            "summary",
            "last_event_id",
            "last_seq",
            "last_event",
            "updated_at",
            "resolved_at",
        )
        stmt = ins.on_conflict_do_update(
            index_elements=[t.alerts.c.risk_id], set_={c: ins.excluded[c] for c in mutable}
        ).returning(t.alerts.c.id, t.alerts.c.risk_id)
        rows = (await self.conn.execute(stmt, sorted(values, key=lambda v: v["risk_id"]))).all()
        return {row.risk_id: int(row.id) for row in rows}

    async def alerts_with_states(
        self, risk_ids: Iterable[str]
    ) -> tuple[dict[str, AlertRow], dict[tuple[int, str], StateRow]]:
        """The alert rows of these risks and every per-target state of them, in one query."""
        ids = set(risk_ids)
        if not ids:
            return {}, {}
        a, s = t.alerts, t.states
        rows = await self.conn.execute(
            sa.select(a, *[c.label(f"s_{c.name}") for c in s.c])
            .outerjoin(s, s.c.alert_id == a.c.id)
            .where(a.c.risk_id.in_(ids))
        )
        alerts: dict[str, AlertRow] = {}
        states: dict[tuple[int, str], StateRow] = {}
        for row in rows:
            if row.risk_id not in alerts:
                alerts[row.risk_id] = alert_row(row)
            if row._mapping["s_alert_id"] is not None:
                state = state_row(row, "s_")
                states[(state.alert_id, state.target_key)] = state
        return alerts, states

    async def upsert_states(self, values: list[dict[str, Any]]) -> None:
        if not values:
            return
        ins = insert_for(self.conn, t.states)
        cols = (
            "target",
            "repeat_interval_s",
            "last_severity",
            "last_kind",
            "last_notified_at",
            "notify_count",
            "last_seq",
            "resolved_notified",
            "next_repeat_at",
        )
        stmt = ins.on_conflict_do_update(
            index_elements=[t.states.c.alert_id, t.states.c.target_key],
            set_={c: ins.excluded[c] for c in cols},
        )
        # a stable order: concurrent writers of the same rows lock them in the same order (no deadlock)
        await self.conn.execute(stmt, sorted(values, key=lambda v: (v["alert_id"], v["target_key"])))

    async def ack(self, alert_id: int, by: str, now: datetime) -> AlertRow | None:
        """Acknowledge (idempotent: the first acknowledgement is kept); stops repeats of every target."""
        await self.conn.execute(
            sa.update(t.alerts)
            .where(t.alerts.c.id == alert_id, t.alerts.c.acked_at.is_(None))
            .values(acked_at=now, acked_by=by)
        )
        await self.conn.execute(
            sa.update(t.states).where(t.states.c.alert_id == alert_id).values(next_repeat_at=None)
        )
        return await self.alert(alert_id)

    async def due_repeats(self, now: datetime, limit: int) -> list[tuple[AlertRow, StateRow]]:
        """Open, unacknowledged alerts whose repeat time has come, oldest first."""
        a, s = t.alerts, t.states
        rows = await self.conn.execute(
            sa.select(a, *[c.label(f"s_{c.name}") for c in s.c])
            .join(s, s.c.alert_id == a.c.id)
            .where(
                s.c.next_repeat_at.is_not(None),
                s.c.next_repeat_at <= now,
                a.c.status == "open",
                a.c.acked_at.is_(None),
            )
            .order_by(s.c.next_repeat_at, s.c.alert_id, s.c.target_key)  # ties in a stable order
            .limit(limit)
        )
        return [(alert_row(row), state_row(row, "s_")) for row in rows]

    async def list_alerts(
        self, *, account_id: str | None, status: str | None, before_id: int | None, limit: int
    ) -> list[AlertRow]:
        a = t.alerts
        q = _newest_first(a, before_id, limit)
        if account_id is not None:
            q = q.where(a.c.account_id == account_id)
        if status == "open":
            q = q.where(a.c.status == "open", a.c.acked_at.is_(None))
        elif status == "acked":
            q = q.where(a.c.status == "open", a.c.acked_at.is_not(None))
        elif status == "resolved":
            q = q.where(a.c.status == "resolved")
        return [alert_row(r) for r in await self.conn.execute(q)]

    # -- Slack interactions -------------------------------------------------------------------
    async def remember_signature(self, signature: str, now: datetime, *, forget_before: datetime) -> bool:
        """Record a Slack request signature; False when it was seen before (a replay). Signatures older
        than `forget_before` (outside the timestamp window, so refused as stale anyway) are dropped."""
        r = t.slack_requests
        await self.conn.execute(sa.delete(r).where(r.c.seen_at < forget_before))
        stmt = (
            insert_for(self.conn, r)
            .values(signature=signature, seen_at=now)
            .on_conflict_do_nothing(index_elements=[r.c.signature])
            .returning(r.c.signature)
        )
        return (await self.conn.execute(stmt)).first() is not None

    # -- silences ------------------------------------------------------------------------------
    async def active_silences(self, account_ids: Iterable[str], now: datetime) -> list[SilenceRow]:
        ids = set(account_ids)
        if not ids:
            return []
        s = t.silences
        rows = await self.conn.execute(
            sa.select(s).where(s.c.account_id.in_(ids), s.c.until > now, s.c.deleted_at.is_(None))
        )
        return [silence_row(r) for r in rows]

    async def insert_silence(self, row: SilenceRow) -> None:
        await self.conn.execute(
            sa.insert(t.silences).values(
                id=row.id,
                account_id=row.account_id,
                types=row.types,
                until=row.until,
                reason=row.reason,
                created_by=row.created_by,
                created_at=row.created_at,
                deleted_at=None,
            )
        )

    async def list_silences(
        self, *, account_id: str | None, include_expired: bool, now: datetime, before: str | None, limit: int
    ) -> list[SilenceRow]:
        s = t.silences
        q = sa.select(s).order_by(s.c.created_at.desc(), s.c.id.desc()).limit(limit)
        if account_id is not None:
            q = q.where(s.c.account_id == account_id)
        if not include_expired:
            q = q.where(s.c.until > now, s.c.deleted_at.is_(None))
        if before is not None:
            pivot = (await self.conn.execute(sa.select(s.c.created_at).where(s.c.id == before))).scalar()
            if pivot is not None:
                q = q.where(sa.or_(s.c.created_at < pivot, sa.and_(s.c.created_at == pivot, s.c.id < before)))
        return [silence_row(r) for r in await self.conn.execute(q)]

    async def expire_silence(self, silence_id: str, now: datetime) -> SilenceRow | None:
        s = t.silences
        await self.conn.execute(
            sa.update(s).where(s.c.id == silence_id, s.c.deleted_at.is_(None)).values(deleted_at=now)
        )
        row = (await self.conn.execute(sa.select(s).where(s.c.id == silence_id))).first()
        return None if row is None else silence_row(row)

    # -- deliveries and attempts ---------------------------------------------------------------
    async def claim(
        self, items: Sequence[NewDelivery], now: datetime, lease_until: datetime
    ) -> list[DeliveryRow]:
        """Insert pending deliveries; a dedup key seen before is skipped. Returns the new rows only."""
        if not items:
            return []
        values = [delivery_values(d, now, lease_until) for d in items]
        stmt = (
            insert_for(self.conn, t.deliveries)
            .on_conflict_do_nothing(index_elements=[t.deliveries.c.dedup_key])
            .returning(t.deliveries.c.id, t.deliveries.c.dedup_key)
        )
        # executemany + RETURNING: only the rows actually inserted come back, matched by their key
        ids = {row.dedup_key: int(row.id) for row in (await self.conn.execute(stmt, values)).all()}
        return [claimed_delivery(v, ids[v["dedup_key"]], v["alert_id"]) for v in values if v["dedup_key"] in ids]

    async def take_over_expired(
        self, now: datetime, lease_until: datetime, limit: int, exclude: Iterable[int] = ()
    ) -> list[DeliveryRow]:
        """Pending deliveries whose lease ran out (their sender stopped or crashed): lease them to us."""
        d = t.deliveries
        q = (
            sa.select(d)
            .where(d.c.status == "pending", sa.or_(d.c.lease_until.is_(None), d.c.lease_until <= now))
            .order_by(d.c.id)
            .limit(limit)
        )
        skip = set(exclude)
        if skip:
            q = q.where(d.c.id.not_in(skip))
        taken = []
        for row in [delivery_row(r) for r in await self.conn.execute(q)]:
            res = await self.conn.execute(
                sa.update(d)
                .where(
                    d.c.id == row.id,
                    d.c.status == "pending",
                    sa.or_(d.c.lease_until.is_(None), d.c.lease_until <= now),
                )
                .values(lease_until=lease_until)
            )
            if res.rowcount == 1:
                taken.append(row)
        return taken

    async def renew(self, delivery_ids: Iterable[int], lease_until: datetime) -> None:
        """Extend the leases of deliveries this instance is still working on."""
        ids = set(delivery_ids)
        if ids:
            d = t.deliveries
            await self.conn.execute(
                sa.update(d).where(d.c.id.in_(ids), d.c.status == "pending").values(lease_until=lease_until)
            )

    async def release(self, delivery_ids: Iterable[int], now: datetime) -> None:
        ids = set(delivery_ids)
        if ids:
            d = t.deliveries
            await self.conn.execute(
                sa.update(d).where(d.c.id.in_(ids), d.c.status == "pending").values(lease_until=now)
            )

    async def record_outcomes(self, outcomes: Sequence[Outcome], now: datetime) -> None:
        """Final status of deliveries and every attempt they made: two statements whatever the count."""
        if not outcomes:
            return
        d = t.deliveries
        stmt = (
            sa.update(d)
            .where(d.c.id == sa.bindparam("b_id"))
            .values(
                status=sa.bindparam("b_status"),
                attempts=d.c.attempts + sa.bindparam("b_attempts", type_=sa.Integer()),
                error=sa.bindparam("b_error"),
                error_code=sa.bindparam("b_error_code"),
                updated_at=now,
                lease_until=None,
                sent_at=sa.case((sa.bindparam("b_status") == "sent", now), else_=d.c.sent_at),
            )
        )
        await self.conn.execute(
            stmt,
            [
                {
                    "b_id": o.delivery_id,
                    "b_status": o.status,
                    "b_attempts": len(o.attempts),
                    "b_error": o.error,
                    "b_error_code": o.error_code,
                }
                for o in sorted(outcomes, key=lambda o: o.delivery_id)
            ],
        )
        attempts = [
            {
                "delivery_id": a.delivery_id,
                "attempt_no": a.attempt_no,
                "outcome": a.outcome,
                "error": a.error,
                "duration_ms": a.duration_ms,
                "at": a.at,
            }
            for o in outcomes
            for a in o.attempts
        ]
        if attempts:
            await self.conn.execute(sa.insert(t.attempts), attempts)

    async def list_deliveries(
        self, *, status: str | None, alert_id: int | None, before_id: int | None, limit: int
    ) -> list[DeliveryRow]:
        d = t.deliveries
        q = _newest_first(d, before_id, limit)
        if status is not None:
            q = q.where(d.c.status == status)
        if alert_id is not None:
            q = q.where(d.c.alert_id == alert_id)
        return [delivery_row(r) for r in await self.conn.execute(q)]

    async def attempts_of(self, delivery_ids: Iterable[int]) -> dict[int, list[AttemptRow]]:
        ids = set(delivery_ids)
        out: dict[int, list[AttemptRow]] = {i: [] for i in ids}
        if not ids:
            return out
        a = t.attempts
        rows = await self.conn.execute(
            sa.select(a).where(a.c.delivery_id.in_(ids)).order_by(a.c.delivery_id, a.c.attempt_no, a.c.id)
        )
        for r in rows:
            m = r._mapping
            out[m["delivery_id"]].append(
                AttemptRow(
                    delivery_id=m["delivery_id"],
                    attempt_no=m["attempt_no"],
                    outcome=m["outcome"],
                    error=m["error"],
                    duration_ms=m["duration_ms"],
                    at=utc(m["at"]),
                )
            )
        return out

    async def count_deliveries(self) -> dict[str, int]:
        d = t.deliveries
        rows = await self.conn.execute(sa.select(d.c.status, sa.func.count()).group_by(d.c.status))
        return {status: int(n) for status, n in rows}

    # -- digests -------------------------------------------------------------------------------
    async def add_digest_items(self, values: list[dict[str, Any]]) -> None:
        if values:
            await self.conn.execute(
                insert_for(self.conn, t.digest_items).on_conflict_do_nothing(
                    index_elements=[t.digest_items.c.dedup_key]
                ),
                values,
            )

    async def due_digest_items(self, now: datetime, limit: int) -> list[DigestItemRow]:
        """Waiting items of every target whose oldest waiting item is due (held for group_wait)."""
        di = t.digest_items
        grouped = di.c.kind != DAILY_ITEM  # items waiting for a daily digest are not flushed here
        due_targets = (
            sa.select(di.c.target_key)
            .where(di.c.consumed_at.is_(None), grouped)
            .group_by(di.c.target_key)
            .having(sa.func.min(di.c.due_at) <= now)
        )
        rows = await self.conn.execute(
            sa.select(di)
            .where(di.c.consumed_at.is_(None), grouped, di.c.target_key.in_(due_targets))
            .order_by(di.c.target_key, di.c.id)
            .limit(limit)
        )
        return [digest_item_row(r) for r in rows]

    async def daily_digest_targets(self, changed_since: datetime) -> list[str]:
        a, s, di = t.alerts, t.states, t.digest_items
        told = (
            sa.select(s.c.target_key)
            .join(a, s.c.alert_id == a.c.id)
            .where(s.c.notify_count > 0, sa.or_(a.c.status == "open", a.c.updated_at >= changed_since))
        )
        waiting = sa.select(di.c.target_key).where(di.c.consumed_at.is_(None), di.c.kind == DAILY_ITEM)
        keys = sa.union(told, waiting).subquery()
        rows = await self.conn.execute(sa.select(keys.c.target_key).order_by(keys.c.target_key))
        return [key for (key,) in rows]

    async def daily_digest_reads(self, now: datetime, changed_since: datetime,
                                 targets: Sequence[str]) -> DailyReads:
        a, s, di, d = t.alerts, t.states, t.digest_items, t.deliveries
        keys = list(targets)
        rows = await self.conn.execute(
            sa.select(a, *[c.label(f"s_{c.name}") for c in s.c])
            .join(s, s.c.alert_id == a.c.id)
            .where(s.c.target_key.in_(keys), s.c.notify_count > 0,
                   sa.or_(a.c.status == "open", a.c.updated_at >= changed_since))
            .order_by(s.c.target_key, a.c.id)
        )
        tracked = [(alert_row(row), state_row(row, "s_")) for row in rows]
        items = await self.conn.execute(
            sa.select(di)
            .where(di.c.target_key.in_(keys), di.c.consumed_at.is_(None), di.c.kind == DAILY_ITEM)
            .order_by(di.c.id)
        )
        last = await self.conn.execute(
            sa.select(d.c.target_key, sa.func.max(d.c.created_at))
            .where(d.c.target_key.in_(keys), d.c.kind == DAILY_KIND, d.c.created_at >= changed_since)
            .group_by(d.c.target_key)
        )
        return DailyReads(
            tracked=tracked,
            items=[digest_item_row(r) for r in items],
            last_sent={key: _aware(at) for key, at in last},
        )

    async def consume_digest_items(self, assignments: dict[int, int | None], now: datetime) -> bool:
        """Mark items consumed (with the delivery that carries them); False when another flusher was first."""
        di = t.digest_items
        by_delivery: dict[int | None, list[int]] = {}
        for item_id, delivery_id in assignments.items():
            by_delivery.setdefault(delivery_id, []).append(item_id)
        done = 0
        for delivery_id, ids in by_delivery.items():
            res = await self.conn.execute(
                sa.update(di)
                .where(di.c.id.in_(ids), di.c.consumed_at.is_(None))
                .values(consumed_at=now, delivery_id=delivery_id)
            )
            done += res.rowcount or 0
        return done == len(assignments)


def _aware(at: datetime) -> datetime:
    """SQLite hands back an aggregate's timestamp without its zone: it was stored in UTC."""
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _newest_first(table: sa.Table, before_id: int | None, limit: int) -> sa.Select[Any]:
    """One page of `table` by descending id, starting below the cursor `before_id` when given."""
    q = sa.select(table).order_by(table.c.id.desc()).limit(limit)
    return q if before_id is None else q.where(table.c.id < before_id)


class SqlUnitOfWork:
    """`UnitOfWork` on an engine: one transaction per `begin()`, the repository on its connection."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AlertsRepository]:
        async with self.engine.begin() as conn:
            yield AlertsRepository(conn)
