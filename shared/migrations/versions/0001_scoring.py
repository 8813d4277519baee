"""Scoring tables: account state, processed events and positions, history, risks, outbox.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# A 64-bit auto-increment key on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY.
_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # One row per account: the encoded domain state (the source of truth, reloaded on partition
    # assignment), its clock timer, and the last recorded health for listing by tier.
    op.create_table(
        "scoring_accounts",
        sa.Column("account_id", sa.String(128), primary_key=True),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("next_due", _TS, nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("tier", sa.String(16), nullable=False, server_default="unknown"),
        sa.Column("as_of", _TS, nullable=True),
        sa.Column("config_version", sa.String(128), nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
    )
    op.create_index("ix_scoring_accounts_partition", "scoring_accounts", ["partition"])
    op.create_index("ix_scoring_accounts_tier", "scoring_accounts", ["tier", "account_id"])

    # Every event id that changed state, whatever topic or partition it came from.
    op.create_table(
        "scoring_processed_events",
        sa.Column("event_id", sa.String(128), primary_key=True),
    )

    # Next offset to process per input topic-partition (committed with the state it produced).
    op.create_table(
        "scoring_positions",
        sa.Column("topic", sa.String(255), primary_key=True),
        sa.Column("partition", sa.Integer(), primary_key=True),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    )

    # The event-time watermark of each partition number (the four input topics merged).
    op.create_table(
        "scoring_partitions",
        sa.Column("partition", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("watermark", _TS, nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
    )

    # Health snapshots when the score moved, with per-component deltas (what changed and why).
    op.create_table(
        "scoring_history",
        sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("as_of", _TS, nullable=False),
        sa.Column("cause", sa.String(160), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("snapshot", sa.Text(), nullable=False),
    )
    op.create_index("ix_scoring_history_account", "scoring_history", ["account_id", "id"])

    # Current state of every risk (one row per risk_id), for the read API.
    op.create_table(
        "scoring_risks",
        sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
        sa.Column("risk_id", sa.String(64), nullable=False, unique=True),
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column("opened_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("resolved_at", _TS, nullable=True),
        sa.Column("trigger_event_id", sa.String(128), nullable=True),
    )
    op.create_index("ix_scoring_risks_account", "scoring_risks", ["account_id", "id"])
    op.create_index("ix_scoring_risks_status", "scoring_risks", ["status", "type", "id"])

    # Transactional outbox of risk events: written with the state, published to the risks topic after.
    op.create_table(
        "scoring_outbox",
        sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(200), nullable=False, unique=True),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("published_at", _TS, nullable=True),
    )
    op.create_index("ix_scoring_outbox_unpublished", "scoring_outbox", ["partition", "id"],
                    postgresql_where=sa.text("published_at IS NULL"),
                    sqlite_where=sa.text("published_at IS NULL"))


def downgrade() -> None:
    op.drop_index("ix_scoring_outbox_unpublished", table_name="scoring_outbox")
    op.drop_table("scoring_outbox")
    op.drop_index("ix_scoring_risks_status", table_name="scoring_risks")
    op.drop_index("ix_scoring_risks_account", table_name="scoring_risks")
    op.drop_table("scoring_risks")
    op.drop_index("ix_scoring_history_account", table_name="scoring_history")
    op.drop_table("scoring_history")
    op.drop_table("scoring_partitions")
    op.drop_table("scoring_positions")
    op.drop_table("scoring_processed_events")
    op.drop_index("ix_scoring_accounts_tier", table_name="scoring_accounts")
    op.drop_index("ix_scoring_accounts_partition", table_name="scoring_accounts")
    op.drop_table("scoring_accounts")
