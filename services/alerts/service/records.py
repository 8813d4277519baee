"""The records the alerts service layer and its stores exchange: rows as read, rows to write, and what
one claim of consumed risk events reads and writes.

They belong to the service layer (the ports speak them), so the SQLAlchemy and asyncpg stores, the
in-memory test store and the HTTP API all depend on this module rather than on one another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.alerts.domain.content import Notification
from shared.bus.port import TopicPartition
from shared.risks import RiskEvent


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


@dataclass(slots=True)
class DailyReads:
    """What a daily digest check reads: alerts per target (open, or changed since a moment), the items
    waiting for a daily digest, and when each target's last daily digest was claimed."""

    tracked: list[tuple[AlertRow, StateRow]]
    items: list[DigestItemRow]
    last_sent: dict[str, datetime]  # by target key


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
    # ids reserved for the alert rows this claim will insert, by risk id (every risk of a new event id
    # that has no alert row yet), so that their messages name their alert (`actions.slack_actions`)
    new_alert_ids: dict[str, int] = field(default_factory=dict)


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
    # the id of each alert row written, by risk id: its known id, or the one reserved by the reads
    alert_ids: dict[str, int] = field(default_factory=dict)


def new_delivery(notification: Notification, alert_id: int | None) -> NewDelivery:
    """The pending delivery of a rendered notification; it is stored whole, so that whichever instance
    resumes the delivery sends exactly what was claimed."""
    return NewDelivery(
        dedup_key=notification.dedup_key,
        alert_id=alert_id,
        kind=notification.kind,
        channel=notification.target.kind,
        target_key=notification.target.key,
        notification=notification.to_dict(),
        source_received_at=notification.source_received_at,
    )
