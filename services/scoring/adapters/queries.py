"""Read side of the scoring tables, for the read API (keyset pagination throughout)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scoring.adapters import tables as t
from services.scoring.adapters.errors import classified
from shared.codec import loads


@dataclass(frozen=True, slots=True)
class AccountRecord:
    account_id: str
    state: bytes
    score: float | None
    tier: str
    as_of: datetime | None
    config_version: str | None
    # Listing columns copied from the state at every save (revisions 0004 and 0005).
    arr: float | None = None
    risk_severity: str | None = None
    csm_email: str | None = None
    csm_slack: str | None = None
    csm_name: str | None = None
    segment: str | None = None
    renewal_date: date | None = None


# Orders of `ScoringQueries.accounts` besides the default (by account id): (column, descending). Accounts
# without the value come last; ties are broken by account id.
AccountSort = Literal["score", "renewal", "arr"]
_SORTS: dict[str, tuple[sa.ColumnElement[Any], bool]] = {
    "score": (t.accounts.c.score, False),          # lowest score first
    "renewal": (t.accounts.c.renewal_date, False),  # soonest renewal first
    "arr": (t.accounts.c.arr, True),               # largest ARR first
}


def sort_value(record: AccountRecord, sort: AccountSort) -> Any:
    """The value of `record` that `sort` orders by (what a keyset cursor of that order carries)."""
    return {"score": record.score, "renewal": record.renewal_date, "arr": record.arr}[sort]


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    id: int
    snapshot: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RiskRecord:
    id: int
    risk_id: str
    account_id: str
    type: str
    severity: str
    status: str
    seq: int
    summary: str
    evidence: dict[str, Any]
    opened_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    trigger_event_id: str | None


_ACCOUNT_COLS = (t.accounts.c.account_id, t.accounts.c.state, t.accounts.c.score, t.accounts.c.tier,
                 t.accounts.c.as_of, t.accounts.c.config_version, t.accounts.c.arr, t.accounts.c.risk_severity,
                 t.accounts.c.csm_email, t.accounts.c.csm_slack, t.accounts.c.csm_name, t.accounts.c.segment,
                 t.accounts.c.renewal_date)


def _account(row: Any) -> AccountRecord:
    return AccountRecord(row[0], bytes(row[1]), *row[2:])


class ScoringQueries:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def account(self, account_id: str) -> AccountRecord | None:
        with classified():
            async with self._engine.connect() as conn:
                row = (await conn.execute(
                    sa.select(*_ACCOUNT_COLS).where(t.accounts.c.account_id == account_id))).first()
        return None if row is None else _account(row)

    async def exists(self, account_id: str) -> bool:
        with classified():
            async with self._engine.connect() as conn:
                row = (await conn.execute(
                    sa.select(t.accounts.c.account_id).where(t.accounts.c.account_id == account_id))).first()
        return row is not None

    async def accounts(self, *, tier: str | None, limit: int, after: str | None = None,
                       csm: str | None = None, segment: str | None = None,
                       renewal_between: tuple[date, date] | None = None, sort: AccountSort | None = None,
                       after_key: tuple[Any, str] | None = None) -> list[AccountRecord]:
        """Accounts, optionally of one tier, CSM (their e-mail, Slack id or name), segment, or renewing
        between two dates (inclusive). Without `sort`: by account id, after the account id `after`. With
        it: by that column (`_SORTS`), after the keyset position `after_key` = (value, account id)."""
        c = t.accounts.c
        query = sa.select(*_ACCOUNT_COLS).limit(limit)
        if tier is not None:
            query = query.where(c.tier == tier)
        if csm is not None:
            query = query.where(sa.or_(c.csm_email == csm, c.csm_slack == csm, c.csm_name == csm))
        if segment is not None:
            query = query.where(c.segment == segment)
        if renewal_between is not None:
            query = query.where(c.renewal_date.between(*renewal_between))
        if sort is None:
            query = query.order_by(c.account_id)
            if after is not None:
                query = query.where(c.account_id > after)
        else:
            column, descending = _SORTS[sort]
            query = query.order_by(column.is_(None), column.desc() if descending else column, c.account_id)
            if after_key is not None:
                query = query.where(_after(column, descending, *after_key))
        with classified():
            async with self._engine.connect() as conn:
                return [_account(row) for row in await conn.execute(query)]

    async def history(self, account_id: str, *, limit: int, before: int | None) -> list[HistoryRecord]:
        """Snapshots of one account, newest first, older than the row id `before`."""
        c = t.history.c
        query = (sa.select(c.id, c.snapshot).where(c.account_id == account_id)
                 .order_by(c.id.desc()).limit(limit))
        if before is not None:
            query = query.where(c.id < before)
        with classified():
            async with self._engine.connect() as conn:
                return [HistoryRecord(int(row[0]), loads(row[1])) for row in await conn.execute(query)]

    async def risks(self, *, account_id: str | None, risk_type: str | None, status: str | None, limit: int,
                    before: int | None) -> list[RiskRecord]:
        """Risks, most recently opened first."""
        c = t.risks.c
        query = sa.select(t.risks).order_by(c.id.desc()).limit(limit)
        if account_id is not None:
            query = query.where(c.account_id == account_id)
        if risk_type is not None:
            query = query.where(c.type == risk_type)
        if status is not None:
            query = query.where(c.status == status)
        if before is not None:
            query = query.where(c.id < before)
        with classified():
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).mappings().all()
        return [RiskRecord(id=int(r["id"]), risk_id=r["risk_id"], account_id=r["account_id"],
                           type=r["type"], severity=r["severity"], status=r["status"], seq=r["seq"],
                           summary=r["summary"], evidence=loads(r["evidence"]), opened_at=r["opened_at"],
                           updated_at=r["updated_at"], resolved_at=r["resolved_at"],
                           trigger_event_id=r["trigger_event_id"])
                for r in rows]


def _after(column: Any, descending: bool, value: Any, account_id: str) -> Any:
    """Rows after (value, account_id) in the order `value IS NULL, value (desc), account_id`."""
    c = t.accounts.c
    if value is None:
        return sa.and_(column.is_(None), c.account_id > account_id)
    beyond = column < value if descending else column > value
    return sa.or_(beyond, sa.and_(column == value, c.account_id > account_id), column.is_(None))
