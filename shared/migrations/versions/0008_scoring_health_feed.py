"""The health feed's outbox: per scoring partition, the messages of each committed batch for the `health`
topic (every health change and risk transition), kept until they are published.

One row per partition a batch touched (not one per change): the messages are written with the batch's
state in its transaction, published right after, and the row is deleted by a later transaction once they
were. A row still here when a partition is loaded is published again first.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scoring_health_feed",
        sa.Column("partition", sa.Integer(), primary_key=True, autoincrement=False),
        # Per partition, in commit order: the order the rows are published again in.
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        # The batch's messages for this partition, in the order they happened: JSON, one per line.
        sa.Column("messages", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("scoring_health_feed")
