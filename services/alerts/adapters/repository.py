"""The alerts service's repository: typed reads and writes on one connection (one unit of work).

The caller owns the transaction (`engine.begin()`); methods only execute statements. Times are stored
in UTC and come back timezone-aware on both PostgreSQL and SQLite.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.alerts.adapters import tables as t
from services.alerts.domain.content import Notification
from shared.bus.port import TopicPartition
from shared.risks import RiskEvent


def utc(dt: datetime) -> datetime:
    """Timezone-aware UTC (SQLite hands naive datetimes back)."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def opt_utc(dt: datetime | None) -> datetime | None:
    return None if dt is None else utc(dt)


def _insert(conn: AsyncConnection, table: sa.Table) -> Any:
    """INSERT with the dialect's ON CONFLICT support (PostgreSQL and SQLite share the syntax)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


@dataclass(frozen=True, slots=True)
class AlertRow:
    id: int
    risk_id: str
    account_id: str
    type: str
    severity: str
    status: str
    summary: str
    last_event_id: str
    last_seq: int
    last_event: dict[str, Any]
    opened_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    acked_at: datetime | None
    acked_by: str | None

    @property
    def display_status(self) -> str:
        if self.status == "open" and self.acked_at is not None:
            return "acked"
        return self.status


@dataclass(frozen=True, slots=True)
class StateRow:
    alert_id: int
    target_key: str
    target: dict[str, Any]
    repeat_interval_s: float
    last_severity: str | None
    last_kind: str | None
    last_notified_at: datetime | None
    notify_count: int
    last_seq: int
    resolved_notified: bool
    next_repeat_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewDelivery:
    dedup_key: str
    alert_id: int | None
    kind: str
    channel: str
    target_key: str
    notification: dict[str, Any]
    source_received_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: int
    dedup_key: str
    alert_id: int | None
    kind: str
    channel: str
    target_key: str
    status: str
    notification: dict[str, Any]
    source_received_at: datetime | None
    attempts: int
    error: str | None
    error_code: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None


@dataclass(frozen=True, slots=True)
class AttemptRow:
    delivery_id: int
    attempt_no: int
    outcome: str
    error: str | None
    duration_ms: float
    at: datetime


@dataclass(slots=True)
class Outcome:
    """How one delivery ended, with its attempts."""

    delivery_id: int
    status: str
    attempts: list[AttemptRow] = field(default_factory=list)
    error: str | None = None
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class SilenceRow:
    id: str
    account_id: str
    types: list[str]
    until: datetime
    reason: str
    created_by: str
    created_at: datetime
    deleted_at: datetime | None


@dataclass(frozen=True, slots=True)
class DigestItemRow:
    id: int
    dedup_key: str
    target_key: str
    target: dict[str, Any]
    alert_id: int | None
    risk: dict[str, Any]
    kind: str
    dedup_suffix: str
    queued_at: datetime
    due_at: datetime


# -- one claim of consumed risk events: what it reads, what it writes --------------------------------
@dataclass(frozen=True, slots=True)
class KnownAlert:
    """What a claim needs of an existing alert row."""

    id: int
    last_seq: int
    acked: bool


@dataclass(frozen=True, slots=True)
class KnownState:
    """What a claim needs of an existing per-target state row."""

    last_severity: str | None
    last_kind: str | None
    last_notified_at: datetime | None
    notify_count: int
    last_seq: int
    resolved_notified: bool


@dataclass(slots=True)
class ClaimReads:
    """Read inside the claim transaction, after recording the batch's event ids as processed."""

    new_event_ids: set[str]  # not processed before this transaction (the rest are redeliveries)
    alerts: dict[str, KnownAlert]  # by risk id (at least every risk of a new event id)
    states: dict[tuple[str, str], KnownState]  # by (risk id, target key)
    silences: list[SilenceRow]  # active, of (at least) every account of a new event id


@dataclass(slots=True)
class ClaimWrites:
    """Everything a claim changes besides the processed ids. Rows refer to their alert by risk id: the
    alert row may be new, its id is only known once it is written."""

    now: datetime
    lease_until: datetime
    alerts: list[RiskEvent]  # the last applied event of each risk, one per risk id
    states: list[tuple[str, dict[str, Any]]]  # (risk id, alerts_states columns but alert_id)
    digest_items: list[tuple[str, dict[str, Any]]]  # (risk id, alerts_digest_items columns but alert_id)
    deliveries: list[tuple[Notification, str]]  # (notification, risk id)
    positions: dict[TopicPartition, int]


def alert_values(risk: RiskEvent, now: datetime) -> dict[str, Any]:
    """The alerts_alerts row of a risk after applying `risk` (opened_at only counts on insert)."""
    resolved = risk.transition == "resolved"
    return {
        "risk_id": risk.risk_id,
        "account_id": risk.account_id,
        "type": risk.type,
        "severity": risk.severity,
        "status": "resolved" if resolved else "open",
        "summary": risk.summary,
        "last_event_id": risk.event_id,
        "last_seq": risk.seq,
        "last_event": risk.model_dump(mode="json"),
        "opened_at": now,
        "updated_at": now,
        "resolved_at": now if resolved else None,
    }


def new_delivery(notification: Notification, alert_id: int | None) -> NewDelivery:
    return NewDelivery(
        dedup_key=notification.dedup_key,
        alert_id=alert_id,
        kind=notification.kind,
        channel=notification.target.kind,
        target_key=notification.target.key,
        notification=notification.to_dict(),
        source_received_at=notification.source_received_at,
    )


def delivery_values(d: NewDelivery, now: datetime, lease_until: datetime) -> dict[str, Any]:
    """The alerts_deliveries row of a newly claimed delivery."""
    return {
        "dedup_key": d.dedup_key,
        "alert_id": d.alert_id,
        "kind": d.kind,
        "channel": d.channel,
        "target_key": d.target_key,
        "status": "pending",
        "notification": d.notification,
        "source_received_at": d.source_received_at,
        "attempts": 0,
        "error": None,
        "error_code": None,
        "lease_until": lease_until,
        "created_at": now,
        "updated_at": now,
        "sent_at": None,
    }


def claimed_delivery(values: dict[str, Any], delivery_id: int, alert_id: int | None) -> DeliveryRow:
    """The row just inserted from `delivery_values`, as handed to the sender."""
    return DeliveryRow(
        id=delivery_id,
        dedup_key=values["dedup_key"],
        alert_id=alert_id,
        kind=values["kind"],
        channel=values["channel"],
        target_key=values["target_key"],
        status="pending",
        notification=values["notification"],
        source_received_at=values["source_received_at"],
        attempts=0,
        error=None,
        error_code=None,
        created_at=values["created_at"],
        updated_at=values["updated_at"],
        sent_at=None,
    )


def _digest_item(row: Any) -> DigestItemRow:
    m = row._mapping
    return DigestItemRow(
        id=m["id"],
        dedup_key=m["dedup_key"],
        target_key=m["target_key"],
        target=m["target"],
        alert_id=m["alert_id"],
        risk=m["risk"],
        kind=m["kind"],
        dedup_suffix=m["dedup_suffix"],
        queued_at=utc(m["queued_at"]),
        due_at=utc(m["due_at"]),
    )


def _alert(row: Any) -> AlertRow:
    m = row._mapping
    return AlertRow(
        id=m["id"],
        risk_id=m["risk_id"],
        account_id=m["account_id"],
        type=m["type"],
        severity=m["severity"],
        status=m["status"],
        summary=m["summary"],
        last_event_id=m["last_event_id"],
        last_seq=m["last_seq"],
        last_event=m["last_event"],
        opened_at=utc(m["opened_at"]),
        updated_at=utc(m["updated_at"]),
        resolved_at=opt_utc(m["resolved_at"]),
        acked_at=opt_utc(m["acked_at"]),
        acked_by=m["acked_by"],
    )


def _state(row: Any, prefix: str = "") -> StateRow:
    m = row._mapping
    return StateRow(
        alert_id=m[f"{prefix}alert_id"],
        target_key=m[f"{prefix}target_key"],
        target=m[f"{prefix}target"],
        repeat_interval_s=m[f"{prefix}repeat_interval_s"],
        last_severity=m[f"{prefix}last_severity"],
        last_kind=m[f"{prefix}last_kind"],
        last_notified_at=opt_utc(m[f"{prefix}last_notified_at"]),
        notify_count=m[f"{prefix}notify_count"],
        last_seq=m[f"{prefix}last_seq"],
        resolved_notified=bool(m[f"{prefix}resolved_notified"]),
        next_repeat_at=opt_utc(m[f"{prefix}next_repeat_at"]),
    )


def _delivery(row: Any) -> DeliveryRow:
    m = row._mapping
    return DeliveryRow(
        id=m["id"],
        dedup_key=m["dedup_key"],
        alert_id=m["alert_id"],
        kind=m["kind"],
        channel=m["channel"],
        target_key=m["target_key"],
        status=m["status"],
        notification=m["notification"],
        source_received_at=opt_utc(m["source_received_at"]),
        attempts=m["attempts"],
        error=m["error"],
        error_code=m["error_code"],
        created_at=utc(m["created_at"]),
        updated_at=utc(m["updated_at"]),
        sent_at=opt_utc(m["sent_at"]),
    )


def _silence(row: Any) -> SilenceRow:
    m = row._mapping
    return SilenceRow(
        id=m["id"],
        account_id=m["account_id"],
        types=list(m["types"] or []),
        until=utc(m["until"]),
        reason=m["reason"],
        created_by=m["created_by"],
        created_at=utc(m["created_at"]),
        deleted_at=opt_utc(m["deleted_at"]),
    )


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
        ins = _insert(self.conn, t.positions)
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
            _insert(self.conn, t.processed)
            .on_conflict_do_nothing(index_elements=[t.processed.c.event_id])
            .returning(t.processed.c.event_id)
        )
        return {row[0] for row in (await self.conn.execute(stmt, values)).all()}

    # -- one claim of consumed risk events (the SQLAlchemy path; PostgreSQL has claim_pg) ----------
    async def claim_reads(self, risks: Sequence[RiskEvent], now: datetime) -> ClaimReads:
        new_ids = await self.mark_processed((r.event_id for r in risks), now)
        fresh = [r for r in risks if r.event_id in new_ids]
        alerts, states = await self.alerts_with_states(r.risk_id for r in fresh)
        risk_of = {a.id: rid for rid, a in alerts.items()}
        return ClaimReads(
            new_event_ids=new_ids,
            alerts={
                rid: KnownAlert(id=a.id, last_seq=a.last_seq, acked=a.acked_at is not None)
                for rid, a in alerts.items()
            },
            states={
                (risk_of[s.alert_id], s.target_key): KnownState(
                    last_severity=s.last_severity,
                    last_kind=s.last_kind,
                    last_notified_at=s.last_notified_at,
                    notify_count=s.notify_count,
                    last_seq=s.last_seq,
                    resolved_notified=s.resolved_notified,
                )
                for s in states.values()
            },
            silences=await self.active_silences({r.account_id for r in fresh}, now),
        )

    async def claim_writes(self, writes: ClaimWrites) -> list[DeliveryRow]:
        now = writes.now
        ids = await self.upsert_alerts([alert_values(r, now) for r in writes.alerts])
        await self.upsert_states([{"alert_id": ids[rid], **cols} for rid, cols in writes.states])
        await self.add_digest_items([{"alert_id": ids[rid], **cols} for rid, cols in writes.digest_items])
        deliveries = await self.claim(
            [new_delivery(n, ids[rid]) for n, rid in writes.deliveries], now, writes.lease_until
        )
        await self.save_positions(writes.positions, now)
        return deliveries

    async def prune_processed(self, before: datetime) -> int:
        res = await self.conn.execute(sa.delete(t.processed).where(t.processed.c.processed_at < before))
        return res.rowcount or 0

    # -- alerts and per-target state -----------------------------------------------------------
    async def alerts_by_risk(self, risk_ids: Iterable[str]) -> dict[str, AlertRow]:
        ids = set(risk_ids)
        if not ids:
            return {}
        rows = await self.conn.execute(sa.select(t.alerts).where(t.alerts.c.risk_id.in_(ids)))
        return {a.risk_id: a for a in map(_alert, rows)}

    async def alert(self, alert_id: int) -> AlertRow | None:
        row = (await self.conn.execute(sa.select(t.alerts).where(t.alerts.c.id == alert_id))).first()
        return None if row is None else _alert(row)

    async def upsert_alerts(self, values: list[dict[str, Any]]) -> dict[str, int]:
        """Insert or update alert rows by risk id in one statement (never touching opened_at or an
        acknowledgement); returns their ids by risk id."""
        if not values:
            return {}
        ins = _insert(self.conn, t.alerts)
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
                alerts[row.risk_id] = _alert(row)
            if row._mapping["s_alert_id"] is not None:
                state = _state(row, "s_")
                states[(state.alert_id, state.target_key)] = state
        return alerts, states

    async def upsert_states(self, values: list[dict[str, Any]]) -> None:
        if not values:
            return
        ins = _insert(self.conn, t.states)
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
        return [(_alert(row), _state(row, "s_")) for row in rows]

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
        return [_alert(r) for r in await self.conn.execute(q)]

    # -- silences ------------------------------------------------------------------------------
    async def active_silences(self, account_ids: Iterable[str], now: datetime) -> list[SilenceRow]:
        ids = set(account_ids)
        if not ids:
            return []
        s = t.silences
        rows = await self.conn.execute(
            sa.select(s).where(s.c.account_id.in_(ids), s.c.until > now, s.c.deleted_at.is_(None))
        )
        return [_silence(r) for r in rows]

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
        return [_silence(r) for r in await self.conn.execute(q)]

    async def expire_silence(self, silence_id: str, now: datetime) -> SilenceRow | None:
        s = t.silences
        await self.conn.execute(
            sa.update(s).where(s.c.id == silence_id, s.c.deleted_at.is_(None)).values(deleted_at=now)
        )
        row = (await self.conn.execute(sa.select(s).where(s.c.id == silence_id))).first()
        return None if row is None else _silence(row)

    # -- deliveries and attempts ---------------------------------------------------------------
    async def claim(
        self, items: Sequence[NewDelivery], now: datetime, lease_until: datetime
    ) -> list[DeliveryRow]:
        """Insert pending deliveries; a dedup key seen before is skipped. Returns the new rows only."""
        if not items:
            return []
        values = [delivery_values(d, now, lease_until) for d in items]
        stmt = (
            _insert(self.conn, t.deliveries)
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
        for row in [_delivery(r) for r in await self.conn.execute(q)]:
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
        return [_delivery(r) for r in await self.conn.execute(q)]

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
                _insert(self.conn, t.digest_items).on_conflict_do_nothing(
                    index_elements=[t.digest_items.c.dedup_key]
                ),
                values,
            )

    async def due_digest_items(self, now: datetime, limit: int) -> list[DigestItemRow]:
        """Waiting items of every target whose oldest waiting item is due (held for group_wait)."""
        di = t.digest_items
        due_targets = (
            sa.select(di.c.target_key)
            .where(di.c.consumed_at.is_(None))
            .group_by(di.c.target_key)
            .having(sa.func.min(di.c.due_at) <= now)
        )
        rows = await self.conn.execute(
            sa.select(di)
            .where(di.c.consumed_at.is_(None), di.c.target_key.in_(due_targets))
            .order_by(di.c.target_key, di.c.id)
            .limit(limit)
        )
        return [_digest_item(r) for r in rows]

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


def _newest_first(table: sa.Table, before_id: int | None, limit: int) -> sa.Select[Any]:
    """One page of `table` by descending id, starting below the cursor `before_id` when given."""
    q = sa.select(table).order_by(table.c.id.desc()).limit(limit)
    return q if before_id is None else q.where(table.c.id < before_id)
