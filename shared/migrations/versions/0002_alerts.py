"""Alerts: alerts per risk, per-target notification state, claimed deliveries and their attempts,
silences, processed risk events and consumed positions, pending digest items.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# BIGINT identity on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "alerts_alerts",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("risk_id", sa.String(300), nullable=False),
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
        sa.Column("resolved_at", _TS, nullable=True),
        sa.Column("acked_at", _TS, nullable=True),
        sa.Column("acked_by", sa.String(128), nullable=True),
        sa.UniqueConstraint("risk_id", name="uq_alerts_alerts_risk_id"),
    )
    op.create_index("ix_alerts_alerts_account", "alerts_alerts", ["account_id", "id"])
    op.create_index("ix_alerts_alerts_status", "alerts_alerts", ["status", "id"])

    op.create_table(
        "alerts_states",
        sa.Column("alert_id", _ID, sa.ForeignKey("alerts_alerts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("target_key", sa.String(300), nullable=False),
        sa.Column("target", _JSON, nullable=False),
        sa.Column("repeat_interval_s", sa.Float(), nullable=False),
        sa.Column("last_severity", sa.String(16), nullable=True),
        sa.Column("last_kind", sa.String(16), nullable=True),
        sa.Column("last_notified_at", _TS, nullable=True),
        sa.Column("notify_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_seq", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("resolved_notified", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("next_repeat_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("alert_id", "target_key", name="pk_alerts_states"),
    )
    op.create_index("ix_alerts_states_next_repeat", "alerts_states", ["next_repeat_at"])

    op.create_table(
        "alerts_deliveries",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("dedup_key", sa.String(600), nullable=False),
        sa.Column("alert_id", _ID, sa.ForeignKey("alerts_alerts.id", ondelete="SET NULL"), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("target_key", sa.String(300), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("notification", _JSON, nullable=False),
        sa.Column("source_received_at", _TS, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("lease_until", _TS, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("sent_at", _TS, nullable=True),
        sa.UniqueConstraint("dedup_key", name="uq_alerts_deliveries_dedup_key"),
    )
    op.create_index("ix_alerts_deliveries_status", "alerts_deliveries", ["status", "id"])
    op.create_index("ix_alerts_deliveries_alert", "alerts_deliveries", ["alert_id"])

    op.create_table(
        "alerts_attempts",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column(
            "delivery_id", _ID, sa.ForeignKey("alerts_deliveries.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("attempt_no", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("at", _TS, nullable=False),
    )
    op.create_index("ix_alerts_attempts_delivery", "alerts_attempts", ["delivery_id", "attempt_no"])

    op.create_table(
        "alerts_silences",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("types", _JSON, nullable=False),
        sa.Column("until", _TS, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("deleted_at", _TS, nullable=True),
    )
    op.create_index("ix_alerts_silences_account", "alerts_silences", ["account_id", "until"])

    op.create_table(
        "alerts_processed",
        sa.Column("event_id", sa.String(300), primary_key=True),
        sa.Column("processed_at", _TS, nullable=False),
    )
    op.create_index("ix_alerts_processed_at", "alerts_processed", ["processed_at"])

    op.create_table(
        "alerts_positions",
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("topic", "partition", name="pk_alerts_positions"),
    )

    op.create_table(
        "alerts_digest_items",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("dedup_key", sa.String(600), nullable=False),
        sa.Column("target_key", sa.String(300), nullable=False),
        sa.Column("target", _JSON, nullable=False),
        sa.Column("alert_id", _ID, sa.ForeignKey("alerts_alerts.id", ondelete="SET NULL"), nullable=True),
        sa.Column("risk", _JSON, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("dedup_suffix", sa.String(64), nullable=False),
        sa.Column("queued_at", _TS, nullable=False),
        sa.Column("due_at", _TS, nullable=False),
        sa.Column("consumed_at", _TS, nullable=True),
        sa.Column(
            "delivery_id", _ID, sa.ForeignKey("alerts_deliveries.id", ondelete="SET NULL"), nullable=True
        ),
        sa.UniqueConstraint("dedup_key", name="uq_alerts_digest_items_dedup_key"),
    )
    op.create_index("ix_alerts_digest_items_waiting", "alerts_digest_items", ["consumed_at", "target_key"])


def downgrade() -> None:
    op.drop_table("alerts_digest_items")
    op.drop_table("alerts_positions")
    op.drop_table("alerts_processed")
    op.drop_table("alerts_silences")
    op.drop_table("alerts_attempts")
    op.drop_table("alerts_deliveries")
    op.drop_table("alerts_states")
    op.drop_table("alerts_alerts")
