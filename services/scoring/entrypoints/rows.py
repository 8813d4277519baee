"""What the domain's outcomes become in the batch transaction: history rows, the accounts' health
columns, risk events for the outbox (docs/events.md) and risk rows.

Kept apart from the batch loop so the mapping from a transition to what is stored and published reads in
one place, and so the loop only decides *when* a row is written, not *what* it holds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.scoring.adapters.store import HealthColumns, HistoryRow, OutboxRow, RiskRow
from services.scoring.entrypoints.ports import Snapshot, Transition
from shared.codec import dumps
from shared.events import Event
from shared.risks import AccountBrief, HealthBrief, RiskEvent, Trigger


def history_row(account_id: str, snap: Snapshot, as_dict: dict[str, Any] | None = None) -> HistoryRow:
    """One health snapshot, appended to the account's history with the snapshot itself as JSON (`as_dict`:
    its `to_dict()` when the caller made it already)."""
    return HistoryRow(account_id, snap.as_of, snap.cause, snap.score, snap.tier,
                      dumps(snap.to_dict() if as_dict is None else as_dict).decode())


def health_columns(snap: Snapshot) -> HealthColumns:
    """The account listing's columns of its newest snapshot (what the read API filters and sorts on)."""
    return HealthColumns(snap.score, snap.tier, snap.as_of, snap.config_version)


def risk_event(tr: Transition, account_id: str, brief: AccountBrief, event: Event | None,
               now: datetime) -> RiskEvent:
    """The risk event a transition publishes. Its trigger carries `received_at` only when the triggering
    event is the one being applied (a timer or an older trigger has no arrival time at hand)."""
    trigger = None
    if tr.trigger_event_id is not None:
        same = event is not None and event.id == tr.trigger_event_id
        received = event.received_at if same and event is not None else None
        trigger = Trigger(event_id=tr.trigger_event_id, received_at=received)
    return RiskEvent(
        event_id=f"{tr.risk_id}:{tr.seq}", risk_id=tr.risk_id, seq=tr.seq,
        transition=tr.transition,  # type: ignore[arg-type]
        account_id=account_id, type=tr.type, severity=tr.severity,  # type: ignore[arg-type]
        summary=tr.summary, evidence=tr.evidence,
        health=HealthBrief(score=tr.health.score, tier=tr.health.tier,  # type: ignore[arg-type]
                           reasons=tr.health.reasons(3)),
        account=brief, occurred_at=tr.occurred_at, detected_at=now, trigger=trigger,
        config_version=tr.health.config_version)


def outbox_row(tr: Transition, partition: int, account_id: str, brief: AccountBrief, event: Event | None,
               now: datetime) -> OutboxRow:
    """The outbox row of a transition: committed with the state, published to the risks topic after."""
    published = risk_event(tr, account_id, brief, event, now)
    return OutboxRow(published.event_id, partition, account_id, published.to_json())


def risk_row(tr: Transition, account_id: str, previous: RiskRow | None) -> RiskRow:
    """The risk's row after a transition. `previous`: its row earlier in the same batch, whose opening
    time it keeps (the stored row keeps its own: the upsert does not overwrite `opened_at`)."""
    resolved = tr.transition == "resolved"
    return RiskRow(
        risk_id=tr.risk_id, account_id=account_id, type=tr.type, severity=tr.severity,
        status="resolved" if resolved else "open", seq=tr.seq, summary=tr.summary,
        evidence=dumps(tr.evidence).decode(),
        opened_at=previous.opened_at if previous is not None else tr.occurred_at,
        updated_at=tr.occurred_at, resolved_at=tr.occurred_at if resolved else None,
        trigger_event_id=tr.trigger_event_id)
