"""The key that signs the web pages' links, kept in the database when `CHURNSIGNAL_LINK_SECRET` is not set:
made once by whichever process starts first, then shared by every replica and kept across restarts (a
link in last week's alert still opens its page).

Revision ID: 0007
Revises: 0006_slack_interactions
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006_slack_interactions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "churnsignal_link_key",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("secret", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("churnsignal_link_key")
