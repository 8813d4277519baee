"""The alerts service layer's stores in memory: `ClaimStore`, `ClaimSession`, `AlertsStore` and `UnitOfWork`
(services/alerts/service/ports.py) in one object, for fast tests of the pipeline's rules.

It keeps the rules the database keeps for the SQL stores: UNIQUE dedup keys (a delivery or digest item
claimed twice is skipped), processed event ids, positions that never move backwards, upserts by risk id
and by (alert id, target key) that never touch `opened_at` or an acknowledgement, leases of pending
deliveries. `begin()` and `transaction()` roll everything back when their block raises.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from services.alerts.domain.daily import DAILY_ITEM, DAILY_KIND
from services.alerts.service.records import (
    AlertRow,
    AttemptRow,
    ClaimReads,
    ClaimWrites,
    DailyReads,
    DeliveryRow,
    DigestItemRow,
    KnownAlert,
    KnownState,
    NewDelivery,
    Outcome,
    SilenceRow,
    StateRow,
    new_delivery,
)
from shared.bus.port import TopicPartition
from shared.risks import RiskEvent


@dataclass
class _Tables:
    processed: dict[str, datetime] = field(default_factory=dict)
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    alerts: dict[str, AlertRow] = field(default_factory=dict)  # by risk id
    states: dict[tuple[int, str], StateRow] = field(default_factory=dict)
    silences: dict[str, SilenceRow] = field(default_factory=dict)
    deliveries: dict[int, DeliveryRow] = field(default_factory=dict)
    leases: dict[int, datetime | None] = field(default_factory=dict)
    attempts: list[AttemptRow] = field(default_factory=list)
    digest_items: dict[int, DigestItemRow] = field(default_factory=dict)
    consumed: dict[int, int | None] = field(default_factory=dict)  # digest item id -> delivery id
    next_id: dict[str, int] = field(default_factory=dict)

    def new_id(self, table: str) -> int:
        self.next_id[table] = self.next_id.get(table, 0) + 1
        return self.next_id[table]


class InMemoryAlertsStore:
    def __init__(self) -> None:
        self.t = _Tables()
        self.transactions = 0  # committed ones

    # -- units of work -------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[InMemoryAlertsStore]:
        saved = copy.deepcopy(self.t)
        try:
            yield self
        except BaseException:
            self.t = saved
            raise
        self.transactions += 1

    def transaction(self) -> contextlib.AbstractAsyncContextManager[InMemoryAlertsStore]:
        return self.begin()

    @property
    def connection(self) -> object | None:
        return None

    async def close(self, *, invalidate: bool = False) -> None:
        return None

    # -- positions and processed event ids -----------------------------------------------------
    async def positions(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.t.positions[tp] for tp in tps if tp in self.t.positions}

    async def save_positions(self, offsets: dict[TopicPartition, int], now: datetime) -> None:
        for tp, offset in offsets.items():
            self.t.positions[tp] = max(offset, self.t.positions.get(tp, offset))

    async def mark_processed(self, event_ids: Iterable[str], now: datetime) -> set[str]:
        new = {e for e in dict.fromkeys(event_ids) if e not in self.t.processed}
        for e in new:
            self.t.processed[e] = now
        return new


    # -- ClaimStore ----------------------------------------------------------------------------
    async def claim_reads(self, risks: Sequence[RiskEvent], now: datetime) -> ClaimReads:
        new_ids = await self.mark_processed((r.event_id for r in risks), now)
        fresh = [r for r in risks if r.event_id in new_ids]
        alerts = await self.alerts_by_risk(r.risk_id for r in fresh)
        risk_of = {a.id: rid for rid, a in alerts.items()}
        unknown = dict.fromkeys(r.risk_id for r in fresh if r.risk_id not in alerts)
        return ClaimReads(
            new_event_ids=new_ids,
            alerts={
                rid: KnownAlert(id=a.id, last_seq=a.last_seq, acked=a.acked_at is not None) for rid, a in alerts.items()
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
                for (alert_id, _), s in self.t.states.items()
                if alert_id in risk_of
            },
            silences=await self.active_silences({r.account_id for r in fresh}, now),
            new_alert_ids={rid: self.t.new_id("alerts") for rid in unknown},
        )

    async def claim_writes(self, writes: ClaimWrites) -> list[DeliveryRow]:
        now = writes.now
        ids = {
            r.risk_id: self._upsert_alert(r, now, writes.alert_ids.get(r.risk_id))
            for r in sorted(writes.alerts, key=lambda r: r.risk_id)
        }
        await self.upsert_states([{"alert_id": ids[rid], **cols} for rid, cols in writes.states])
        await self.add_digest_items([{"alert_id": ids[rid], **cols} for rid, cols in writes.digest_items])
        deliveries = await self.claim(
            [new_delivery(n, ids[rid]) for n, rid in writes.deliveries], now, writes.lease_until
        )
        await self.save_positions(writes.positions, now)
        return deliveries

    def _upsert_alert(self, risk: RiskEvent, now: datetime, reserved: int | None = None) -> int:
        old = self.t.alerts.get(risk.risk_id)
        resolved = risk.transition == "resolved"
        if old is not None:
            alert_id = old.id
        else:
            alert_id = reserved if reserved is not None else self.t.new_id("alerts")
        row = AlertRow(
            id=alert_id,
            risk_id=risk.risk_id,
            account_id=risk.account_id,
            type=risk.type,
            severity=risk.severity,
            status="resolved" if resolved else "open",
            summary=risk.summary,
            last_event_id=risk.event_id,
            last_seq=risk.seq,
            last_event=risk.model_dump(mode="json"),
            opened_at=old.opened_at if old is not None else now,
            updated_at=now,
            resolved_at=now if resolved else None,
            acked_at=old.acked_at if old is not None else None,
            acked_by=old.acked_by if old is not None else None,
        )
        self.t.alerts[risk.risk_id] = row
        return row.id

    # -- alerts, states, silences --------------------------------------------------------------
    async def alerts_by_risk(self, risk_ids: Iterable[str]) -> dict[str, AlertRow]:
        return {rid: self.t.alerts[rid] for rid in set(risk_ids) if rid in self.t.alerts}

    def alert(self, alert_id: int) -> AlertRow:
        return next(a for a in self.t.alerts.values() if a.id == alert_id)

    async def ack(self, alert_id: int, by: str, now: datetime) -> AlertRow:
        """As the API's acknowledgement: the first one is kept, and no target is reminded again."""
        alert = self.alert(alert_id)
        if alert.acked_at is None:
            self.t.alerts[alert.risk_id] = replace(alert, acked_at=now, acked_by=by)
        for key, state in self.t.states.items():
            if key[0] == alert_id:
                self.t.states[key] = replace(state, next_repeat_at=None)
        return self.alert(alert_id)

    async def upsert_states(self, values: list[dict[str, Any]]) -> None:
        for v in values:
            self.t.states[(v["alert_id"], v["target_key"])] = StateRow(**v)

    async def due_repeats(self, now: datetime, limit: int) -> list[tuple[AlertRow, StateRow]]:
        by_id = {a.id: a for a in self.t.alerts.values()}
        due = [
            (by_id[s.alert_id], s)
            for s in self.t.states.values()
            if s.next_repeat_at is not None
            and s.next_repeat_at <= now
            and by_id[s.alert_id].status == "open"
            and by_id[s.alert_id].acked_at is None
        ]
        due.sort(key=lambda pair: (pair[1].next_repeat_at, pair[1].alert_id, pair[1].target_key))
        return due[:limit]

    async def insert_silence(self, row: SilenceRow) -> None:
        self.t.silences[row.id] = row

    async def active_silences(self, account_ids: Iterable[str], now: datetime) -> list[SilenceRow]:
        ids = set(account_ids)
        return [s for s in self.t.silences.values() if s.account_id in ids and s.until > now and s.deleted_at is None]

    # -- deliveries ----------------------------------------------------------------------------
    async def claim(self, items: Sequence[NewDelivery], now: datetime, lease_until: datetime) -> list[DeliveryRow]:
        taken = {d.dedup_key for d in self.t.deliveries.values()}
        out = []
        for d in items:
            if d.dedup_key in taken:
                continue
            taken.add(d.dedup_key)
            row = DeliveryRow(
                id=self.t.new_id("deliveries"),
                dedup_key=d.dedup_key,
                alert_id=d.alert_id,
                kind=d.kind,
                channel=d.channel,
                target_key=d.target_key,
                status="pending",
                notification=d.notification,
                source_received_at=d.source_received_at,
                attempts=0,
                error=None,
                error_code=None,
                created_at=now,
                updated_at=now,
                sent_at=None,
            )
            self.t.deliveries[row.id] = row
            self.t.leases[row.id] = lease_until
            out.append(row)
        return out

    def _expired(self, delivery_id: int, now: datetime) -> bool:
        lease = self.t.leases.get(delivery_id)
        return self.t.deliveries[delivery_id].status == "pending" and (lease is None or lease <= now)

    async def take_over_expired(
        self, now: datetime, lease_until: datetime, limit: int, exclude: Iterable[int] = ()
    ) -> list[DeliveryRow]:
        skip = set(exclude)
        ids = sorted(i for i in self.t.deliveries if i not in skip and self._expired(i, now))[:limit]
        for i in ids:
            self.t.leases[i] = lease_until
        return [self.t.deliveries[i] for i in ids]

    async def renew(self, delivery_ids: Iterable[int], lease_until: datetime) -> None:
        for i in set(delivery_ids):
            if i in self.t.deliveries and self.t.deliveries[i].status == "pending":
                self.t.leases[i] = lease_until

    async def release(self, delivery_ids: Iterable[int], now: datetime) -> None:
        await self.renew(delivery_ids, now)

    async def record_outcomes(self, outcomes: Sequence[Outcome], now: datetime) -> None:
        for o in outcomes:
            row = self.t.deliveries[o.delivery_id]
            self.t.deliveries[o.delivery_id] = replace(
                row,
                status=o.status,
                attempts=row.attempts + len(o.attempts),
                error=o.error,
                error_code=o.error_code,
                updated_at=now,
                sent_at=now if o.status == "sent" else row.sent_at,
            )
            self.t.leases[o.delivery_id] = None
            self.t.attempts.extend(o.attempts)

    def deliveries(self, status: str | None = None) -> list[DeliveryRow]:
        return [d for d in self.t.deliveries.values() if status is None or d.status == status]

    # -- digests -------------------------------------------------------------------------------
    async def add_digest_items(self, values: list[dict[str, Any]]) -> None:
        taken = {i.dedup_key for i in self.t.digest_items.values()}
        for v in values:
            if v["dedup_key"] in taken:
                continue
            taken.add(v["dedup_key"])
            item_id = self.t.new_id("digest_items")
            fields = {k: v[k] for k in DigestItemRow.__dataclass_fields__ if k != "id"}
            self.t.digest_items[item_id] = DigestItemRow(id=item_id, **fields)

    def waiting_items(self) -> list[DigestItemRow]:
        return [i for i in self.t.digest_items.values() if i.id not in self.t.consumed]

    async def due_digest_items(self, now: datetime, limit: int) -> list[DigestItemRow]:
        waiting = [i for i in self.waiting_items() if i.kind != DAILY_ITEM]
        oldest: dict[str, datetime] = {}
        for item in waiting:
            oldest[item.target_key] = min(item.due_at, oldest.get(item.target_key, item.due_at))
        due = [i for i in waiting if oldest[i.target_key] <= now]
        return sorted(due, key=lambda i: (i.target_key, i.id))[:limit]

    async def consume_digest_items(self, assignments: dict[int, int | None], now: datetime) -> bool:
        done = 0
        for item_id, delivery_id in assignments.items():
            if item_id not in self.t.consumed:
                self.t.consumed[item_id] = delivery_id
                done += 1
        return done == len(assignments)

    async def daily_digest_targets(self, changed_since: datetime) -> list[str]:
        reads = self._daily_reads(changed_since, None)
        return sorted({s.target_key for _, s in reads.tracked} | {i.target_key for i in reads.items})

    async def daily_digest_reads(self, now: datetime, changed_since: datetime,
                                 targets: Sequence[str]) -> DailyReads:
        return self._daily_reads(changed_since, set(targets))

    def _daily_reads(self, changed_since: datetime, wanted: set[str] | None) -> DailyReads:
        by_id = {a.id: a for a in self.t.alerts.values()}
        tracked = [
            (by_id[s.alert_id], s)
            for s in self.t.states.values()
            if s.notify_count > 0
            and (by_id[s.alert_id].status == "open" or by_id[s.alert_id].updated_at >= changed_since)
            and (wanted is None or s.target_key in wanted)
        ]
        tracked.sort(key=lambda pair: (pair[1].target_key, pair[0].id))
        last: dict[str, datetime] = {}
        for d in self.t.deliveries.values():
            if d.kind == DAILY_KIND and d.created_at >= changed_since and (wanted is None or d.target_key in wanted):
                last[d.target_key] = max(d.created_at, last.get(d.target_key, d.created_at))
        items = [i for i in self.waiting_items()
                 if i.kind == DAILY_ITEM and (wanted is None or i.target_key in wanted)]
        return DailyReads(tracked=tracked, items=sorted(items, key=lambda i: i.id), last_sent=last)
