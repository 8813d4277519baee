"""Scoring: an account's revenue facts beside its encoded state (ARR, lifecycle and its time, the highest
open risk severity, the first day it was seen), written at every save, for the revenue gauges.

Existing rows are backfilled by decoding their states here (in chunks of 1,000 accounts; a state that does
not decode keeps NULLs, logged, until the account is saved again). Decoding takes tens of microseconds per
account: about a minute per million accounts.

Revision ID: 0004
Revises: 0003
"""

import logging

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_CHUNK = 1000
_COLUMNS = ("arr", "lifecycle", "lifecycle_at", "risk_severity", "first_seen_at")

log = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    op.add_column("scoring_accounts", sa.Column("arr", sa.Float(), nullable=True))
    op.add_column("scoring_accounts", sa.Column("lifecycle", sa.String(16), nullable=True))
    op.add_column("scoring_accounts", sa.Column("lifecycle_at", _TS, nullable=True))
    op.add_column("scoring_accounts", sa.Column("risk_severity", sa.String(16), nullable=True))
    op.add_column("scoring_accounts", sa.Column("first_seen_at", _TS, nullable=True))
    _backfill()


def _backfill() -> None:
    # Imported here: only an upgrade that has rows to fill needs the domain's state codec.
    from services.scoring.adapters import tables as t
    from services.scoring.adapters.revenue import account_revenue
    from services.scoring.domain.state import decode_state

    bind = op.get_bind()
    c = t.accounts.c
    update = (sa.update(t.accounts).where(c.account_id == sa.bindparam("key"))
              .values({name: sa.bindparam(name) for name in _COLUMNS}))
    after: str | None = None
    filled = failed = 0
    while True:
        query = sa.select(c.account_id, c.state).order_by(c.account_id).limit(_CHUNK)
        if after is not None:
            query = query.where(c.account_id > after)
        rows = bind.execute(query).all()
        if not rows:
            break
        after = rows[-1][0]
        params = []
        for account_id, state in rows:
            try:
                revenue = account_revenue(decode_state(bytes(state)))
            except Exception:  # an undecodable state: NULLs until the account is saved again
                failed += 1
                continue
            params.append({"key": account_id, **{name: getattr(revenue, name) for name in _COLUMNS}})
        if params:
            bind.execute(update, params)
            filled += len(params)
    if filled or failed:
        log.info("scoring_accounts revenue columns backfilled for %d accounts (%d states did not decode)",
                 filled, failed)


def downgrade() -> None:
    with op.batch_alter_table("scoring_accounts") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
