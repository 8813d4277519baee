"""Read side of the scoring tables, for the read API (keyset pagination throughout)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

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
                 t.accounts.c.as_of, t.accounts.c.config_version)


def _account(row: Any) -> AccountRecord:
    return AccountRecord(row[0], bytes(row[1]), row[2], row[3], row[4], row[5])


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

    async def accounts(self, *, tier: str | None, limit: int, after: str | None) -> list[AccountRecord]:
        """Accounts by id, optionally of one tier, after the account id `after`."""
        c = t.accounts.c
        query = sa.select(*_ACCOUNT_COLS).order_by(c.account_id).limit(limit)
        if tier is not None:
            query = query.where(c.tier == tier)
        if after is not None:
            query = query.where(c.account_id > after)
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
