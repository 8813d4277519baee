"""Alerts: the next free send slot per rate-limited target (Slack webhook / DM), shared by every alerts
instance so that one target gets at most one message per interval from all of them together.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # `key` is `Target.rate_key` ("slack_dm:U123", "slack_webhook:<url reference>"): never a secret.
    op.create_table(
        "alerts_rate_slots",
        sa.Column("key", sa.String(300), primary_key=True),
        sa.Column("next_at", _TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("alerts_rate_slots")
