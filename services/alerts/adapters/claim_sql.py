"""The claim of consumed risk events in SQLAlchemy Core (any database; the consumer's path on SQLite).

`SqlClaimStore` is the `ClaimStore` on a repository's connection: some eight statements per batch, the
repository's own upserts. The asyncpg path (`claim_pg`) writes the same rows in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from services.alerts.adapters.rows import alert_values
from services.alerts.service.records import (
    ClaimReads,
    ClaimWrites,
    DeliveryRow,
    KnownAlert,
    KnownState,
    new_delivery,
)
from shared.risks import RiskEvent

if TYPE_CHECKING:  # the repository delegates its claim here: imported at run time it would be a cycle
    from services.alerts.adapters.repository import AlertsRepository


class SqlClaimStore:
    """`ClaimStore` through the repository's statements, inside the caller's transaction."""

    def __init__(self, repo: AlertsRepository) -> None:
        self.repo = repo

    async def claim_reads(self, risks: Sequence[RiskEvent], now: datetime) -> ClaimReads:
        repo = self.repo
        new_ids = await repo.mark_processed((r.event_id for r in risks), now)
        fresh = [r for r in risks if r.event_id in new_ids]
        alerts, states = await repo.alerts_with_states(r.risk_id for r in fresh)
        risk_of = {a.id: rid for rid, a in alerts.items()}
        unknown = list(dict.fromkeys(r.risk_id for r in fresh if r.risk_id not in alerts))
        reserved = dict(zip(unknown, await repo.reserve_alert_ids(len(unknown)), strict=True))
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
            silences=await repo.active_silences({r.account_id for r in fresh}, now),
            new_alert_ids=reserved,
        )

    async def claim_writes(self, writes: ClaimWrites) -> list[DeliveryRow]:
        repo = self.repo
        now = writes.now
        ids = await repo.upsert_alerts(
            [{**alert_values(r, now), "id": writes.alert_ids.get(r.risk_id)} for r in writes.alerts]
        )
        await repo.upsert_states([{"alert_id": ids[rid], **cols} for rid, cols in writes.states])
        await repo.add_digest_items([{"alert_id": ids[rid], **cols} for rid, cols in writes.digest_items])
        deliveries = await repo.claim(
            [new_delivery(n, ids[rid]) for n, rid in writes.deliveries], now, writes.lease_until
        )
        await repo.save_positions(writes.positions, now)
        return deliveries
