"""Alerts: the Slack interaction signatures accepted in the last few minutes, so that a replayed button
click is refused by every alerts instance (`POST /v1/slack/interactions`). Rows older than the 5-minute
signature window are deleted as new clicks arrive.

Who acknowledged an alert is kept in `alerts_alerts.acked_by` (since 0002): a Slack user is recorded as
`slack:<user id>`.

Revision ID: 0006_slack_interactions
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_slack_interactions"
down_revision = "0005"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # `signature` is the request's `v0=<hex HMAC-SHA256>` (71 characters): not a secret.
    op.create_table(
        "alerts_slack_requests",
        sa.Column("signature", sa.String(128), primary_key=True),
        sa.Column("seen_at", _TS, nullable=False),
    )
    op.create_index("ix_alerts_slack_requests_seen_at", "alerts_slack_requests", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_alerts_slack_requests_seen_at", table_name="alerts_slack_requests")
    op.drop_table("alerts_slack_requests")
