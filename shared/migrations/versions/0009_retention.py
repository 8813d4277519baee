"""Retention (docs/retention.md): when each processed event id was recorded, and indexes for pruning by age.

`scoring_processed_events.processed_at` is NOT NULL, defaulting to the current time: rows that exist at the
upgrade get the upgrade's time (so they are kept a full deduplication horizon from then), and a replica still
running the previous code, which writes the id alone, keeps working during a rolling upgrade.

On PostgreSQL (11 and later) adding the column with that default does not rewrite the table. SQLite cannot
add a NOT NULL column whose default is the current time: the table is copied with it (batch mode).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    column = sa.Column("processed_at", _TS, nullable=False, server_default=sa.func.current_timestamp())
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("scoring_processed_events", recreate="always") as batch:
            batch.add_column(column)
    else:
        op.add_column("scoring_processed_events", column)
    op.create_index("ix_scoring_processed_events_processed_at", "scoring_processed_events", ["processed_at"])
    op.create_index("ix_scoring_outbox_published_at", "scoring_outbox", ["published_at"])
    op.create_index("ix_scoring_history_as_of", "scoring_history", ["as_of"])


def downgrade() -> None:
    op.drop_index("ix_scoring_history_as_of", table_name="scoring_history")
    op.drop_index("ix_scoring_outbox_published_at", table_name="scoring_outbox")
    op.drop_index("ix_scoring_processed_events_processed_at", table_name="scoring_processed_events")
    with op.batch_alter_table("scoring_processed_events") as batch:
        batch.drop_column("processed_at")
