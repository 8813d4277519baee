"""The portfolio facts of an account (its CSM, segment, renewal date and ARR), read from its domain state
for the `scoring_accounts` columns that `GET /v1/accounts` and the portfolio page filter and sort on
(revision 0005). Called for every account of every batch, like `revenue.account_revenue`: kept cheap.

Wiring (the store's row mapping): `PortfolioColumns` is written beside `RevenueColumns` at every account
save, all NULL when the model tells none (`NO_PORTFOLIO`); `PORTFOLIO_COLUMNS` are the column names in
order. `arr` is not repeated here: it is written from `RevenueColumns.arr` (revision 0004).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa

from services.scoring.domain.state import AccountState


class PortfolioColumns(NamedTuple):
    csm_email: str | None
    csm_slack: str | None
    csm_name: str | None
    segment: str | None
    renewal_date: date | None


NO_PORTFOLIO = PortfolioColumns(None, None, None, None, None)
PORTFOLIO_COLUMNS = PortfolioColumns._fields
_EPOCH = date(1970, 1, 1)


def account_portfolio(state: AccountState) -> PortfolioColumns:
    """Who looks after the account, its segment and its renewal date, as the latest account event told."""
    day = state.renewal_day
    return PortfolioColumns(state.csm_email, state.csm_slack, state.csm_name, state.segment,
                            None if day is None else _EPOCH + timedelta(days=day))


def backfill_portfolio(bind: Any, *, chunk: int = 1000) -> tuple[int, int]:
    """Fill the portfolio columns (and `arr`) of every stored account by decoding its state, in chunks of
    account ids; returns (filled, states that did not decode). `bind` is a synchronous Connection (Alembic's
    `op.get_bind()`, or `AsyncConnection.run_sync`'s argument). An undecodable state keeps NULLs until the
    account is saved again."""
    from services.scoring.adapters import tables as t
    from services.scoring.domain.state import decode_state

    c = t.accounts.c
    names = (*PORTFOLIO_COLUMNS, "arr")
    update = (sa.update(t.accounts).where(c.account_id == sa.bindparam("key"))
              .values({name: sa.bindparam(name) for name in names}))
    filled = failed = 0
    for rows in _chunks(bind, chunk):
        params = []
        for account_id, raw in rows:
            try:
                state = decode_state(bytes(raw))
            except Exception:  # an undecodable state: NULLs until the account is saved again
                failed += 1
                continue
            params.append({"key": account_id, **account_portfolio(state)._asdict(),
                           "arr": None if state.arr is None else float(state.arr)})
        if params:
            bind.execute(update, params)
            filled += len(params)
    return filled, failed


def _chunks(bind: Any, size: int) -> Iterator[list[Any]]:
    from services.scoring.adapters import tables as t

    c = t.accounts.c
    after: str | None = None
    while True:
        query = sa.select(c.account_id, c.state).order_by(c.account_id).limit(size)
        if after is not None:
            query = query.where(c.account_id > after)
        rows = bind.execute(query).all()
        if not rows:
            return
        after = rows[-1][0]
        yield rows
