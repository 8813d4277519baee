"""Rows of the alerts tables <-> the service layer's records, shared by the SQLAlchemy repository and the
asyncpg claim store so that both write the very same values.

Times are stored in UTC and come back timezone-aware on both PostgreSQL and SQLite.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.alerts.service.records import (
    AlertRow,
    DeliveryRow,
    DigestItemRow,
    NewDelivery,
    SilenceRow,
    StateRow,
)
from shared.risks import RiskEvent


def utc(dt: datetime) -> datetime:
    """Timezone-aware UTC (SQLite hands naive datetimes back)."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def opt_utc(dt: datetime | None) -> datetime | None:
    return None if dt is None else utc(dt)


def insert_for(conn: AsyncConnection, table: sa.Table) -> Any:
    """INSERT with the dialect's ON CONFLICT support (PostgreSQL and SQLite share the syntax)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


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


# -- result rows -> records ------------------------------------------------------------------------
def digest_item_row(row: Any) -> DigestItemRow:
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


def alert_row(row: Any) -> AlertRow:
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


def state_row(row: Any, prefix: str = "") -> StateRow:
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


def delivery_row(row: Any) -> DeliveryRow:
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


def silence_row(row: Any) -> SilenceRow:
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
