"""Scoring: an account's portfolio facts beside its encoded state (CSM e-mail, Slack id and name, segment,
renewal date; ARR is there since 0004), written at every save, for `GET /v1/accounts?csm=&segment=&
renewal_within=&sort=` and the portfolio page.

Existing rows are backfilled by decoding their states here (`backfill_portfolio`, in chunks of 1,000
accounts, as 0004 does; a state that does not decode keeps NULLs, logged, until the account is saved
again).

Revision ID: 0005
Revises: 0004
"""

import logging

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_COLUMNS = (("csm_email", sa.String(320)), ("csm_slack", sa.String(64)), ("csm_name", sa.String(200)),
            ("segment", sa.String(64)), ("renewal_date", sa.Date()))
_INDEXES = (("ix_scoring_accounts_csm_email", "csm_email"), ("ix_scoring_accounts_csm_slack", "csm_slack"),
            ("ix_scoring_accounts_renewal_date", "renewal_date"))

log = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    for name, type_ in _COLUMNS:
        op.add_column("scoring_accounts", sa.Column(name, type_, nullable=True))
    for index, column in _INDEXES:
        op.create_index(index, "scoring_accounts", [column])
    # Imported here: only an upgrade that has rows to fill needs the domain's state codec.
    from services.scoring.adapters.portfolio_columns import backfill_portfolio

    filled, failed = backfill_portfolio(op.get_bind())
    if filled or failed:
        log.info("scoring_accounts portfolio columns backfilled for %d accounts (%d states did not decode)",
                 filled, failed)


def downgrade() -> None:
    for index, _ in reversed(_INDEXES):
        op.drop_index(index, "scoring_accounts")
    with op.batch_alter_table("scoring_accounts") as batch:
        for name, _ in reversed(_COLUMNS):
            batch.drop_column(name)
