"""SQLAlchemy Core tables of the alerts service (migrations 0002, 0003 and 0006, tables prefixed `alerts_`)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData()

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_TS = sa.DateTime(timezone=True)

alerts = sa.Table(
    "alerts_alerts",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("risk_id", sa.String(300), nullable=False, unique=True),
    sa.Column("account_id", sa.String(128), nullable=False),
    sa.Column("type", sa.String(40), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("summary", sa.Text(), nullable=False),
    sa.Column("last_event_id", sa.String(300), nullable=False),
    sa.Column("last_seq", sa.Integer(), nullable=False),
    sa.Column("last_event", _JSON, nullable=False),
    sa.Column("opened_at", _TS, nullable=False),
    sa.Column("updated_at", _TS, nullable=False),
    sa.Column("resolved_at", _TS),
    sa.Column("acked_at", _TS),
    sa.Column("acked_by", sa.String(128)),
)

states = sa.Table(
    "alerts_states",
    metadata,
    sa.Column("alert_id", _ID, sa.ForeignKey("alerts_alerts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("target_key", sa.String(300), primary_key=True),
    sa.Column("target", _JSON, nullable=False),
    sa.Column("repeat_interval_s", sa.Float(), nullable=False),
    sa.Column("last_severity", sa.String(16)),
    sa.Column("last_kind", sa.String(16)),
    sa.Column("last_notified_at", _TS),
    sa.Column("notify_count", sa.Integer(), nullable=False),
    sa.Column("last_seq", sa.Integer(), nullable=False),
    sa.Column("resolved_notified", sa.Boolean(), nullable=False),
    sa.Column("next_repeat_at", _TS),
)

deliveries = sa.Table(
    "alerts_deliveries",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("dedup_key", sa.String(600), nullable=False, unique=True),
    sa.Column("alert_id", _ID, sa.ForeignKey("alerts_alerts.id", ondelete="SET NULL")),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("channel", sa.String(32), nullable=False),
    sa.Column("target_key", sa.String(300), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("notification", _JSON, nullable=False),
    sa.Column("source_received_at", _TS),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("error", sa.Text()),
    sa.Column("error_code", sa.String(64)),
    sa.Column("lease_until", _TS),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("updated_at", _TS, nullable=False),
    sa.Column("sent_at", _TS),
)

attempts = sa.Table(
    "alerts_attempts",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("delivery_id", _ID, sa.ForeignKey("alerts_deliveries.id", ondelete="CASCADE"), nullable=False),
    sa.Column("attempt_no", sa.Integer(), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("error", sa.Text()),
    sa.Column("duration_ms", sa.Float(), nullable=False),
    sa.Column("at", _TS, nullable=False),
)

silences = sa.Table(
    "alerts_silences",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("account_id", sa.String(128), nullable=False),
    sa.Column("types", _JSON, nullable=False),
    sa.Column("until", _TS, nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("deleted_at", _TS),
)

processed = sa.Table(
    "alerts_processed",
    metadata,
    sa.Column("event_id", sa.String(300), primary_key=True),
    sa.Column("processed_at", _TS, nullable=False),
)

positions = sa.Table(
    "alerts_positions",
    metadata,
    sa.Column("topic", sa.String(255), primary_key=True),
    sa.Column("partition", sa.Integer(), primary_key=True),
    sa.Column("next_offset", sa.BigInteger(), nullable=False),
    sa.Column("updated_at", _TS, nullable=False),
)

digest_items = sa.Table(
    "alerts_digest_items",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("dedup_key", sa.String(600), nullable=False, unique=True),
    sa.Column("target_key", sa.String(300), nullable=False),
    sa.Column("target", _JSON, nullable=False),
    sa.Column("alert_id", _ID, sa.ForeignKey("alerts_alerts.id", ondelete="SET NULL")),
    sa.Column("risk", _JSON, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("dedup_suffix", sa.String(64), nullable=False),
    sa.Column("queued_at", _TS, nullable=False),
    sa.Column("due_at", _TS, nullable=False),
    sa.Column("consumed_at", _TS),
    sa.Column("delivery_id", _ID, sa.ForeignKey("alerts_deliveries.id", ondelete="SET NULL")),
)

# Migration 0003. Written only through `services.alerts.adapters.rate_slots` (PostgreSQL).
rate_slots = sa.Table(
    "alerts_rate_slots",
    metadata,
    sa.Column("key", sa.String(300), primary_key=True),
    sa.Column("next_at", _TS, nullable=False),
)

# Migration 0006_slack_interactions: signatures of Slack interactions accepted in the replay window.
slack_requests = sa.Table(
    "alerts_slack_requests",
    metadata,
    sa.Column("signature", sa.String(128), primary_key=True),
    sa.Column("seen_at", _TS, nullable=False),
)

# The indexes the migrations create (declared here too, so the drift test compares them).
sa.Index("ix_alerts_alerts_account", alerts.c.account_id, alerts.c.id)
sa.Index("ix_alerts_alerts_status", alerts.c.status, alerts.c.id)
sa.Index("ix_alerts_states_next_repeat", states.c.next_repeat_at)
sa.Index("ix_alerts_deliveries_status", deliveries.c.status, deliveries.c.id)
sa.Index("ix_alerts_deliveries_alert", deliveries.c.alert_id)
sa.Index("ix_alerts_attempts_delivery", attempts.c.delivery_id, attempts.c.attempt_no)
sa.Index("ix_alerts_silences_account", silences.c.account_id, silences.c.until)
sa.Index("ix_alerts_processed_at", processed.c.processed_at)
sa.Index("ix_alerts_digest_items_waiting", digest_items.c.consumed_at, digest_items.c.target_key)
sa.Index("ix_alerts_slack_requests_seen_at", slack_requests.c.seen_at)
