"""Read side of the web pages: an account's page and a CSM's portfolio, from the scoring tables (through
`ScoringQueries` and the scoring engine, as the read API does) and the alerts tables (Core SELECTs here;
the alerts service owns those tables and writes them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.alerts.adapters import tables as at
from services.scoring.adapters import tables as st
from services.scoring.adapters.errors import classified
from services.scoring.adapters.queries import AccountRecord, ScoringQueries
from services.scoring.domain.state import (
    C_LEFT,
    C_NAME,
    C_ROLE,
    C_STATUS,
    C_TS,
    C_USER,
    DAY,
    K_LAST,
    NONE,
    ROLES,
    STATUSES,
)
from services.scoring.entrypoints.ports import ScoringModel
from shared.codec import loads
from shared.risks import SEVERITY_RANK

HISTORY_POINTS = 120        # health snapshots read for the sparkline (newest)
RECENT_RISKS = 20
RECENT_ALERTS = 20
RECENT_DELIVERIES = 50
PORTFOLIO_MAX = 2000        # accounts shown on one portfolio page
_PAGE = 500


@dataclass(frozen=True, slots=True)
class Contact:
    contact_id: str
    name: str | None
    role: str | None
    status: str | None
    last_activity: datetime | None
    last_use: date | None       # last product use, when the person is a tracked key user


@dataclass(frozen=True, slots=True)
class ScorePoint:
    at: datetime
    score: float


@dataclass(frozen=True, slots=True)
class Moved:
    """The latest snapshot that moved the score: when, what caused it, and its deltas."""
    at: datetime | None
    cause: str | None
    deltas: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class AlertRow:
    id: int
    type: str
    severity: str
    status: str
    summary: str
    opened_at: datetime | None
    updated_at: datetime | None
    resolved_at: datetime | None
    acked_at: datetime | None
    acked_by: str | None


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: int
    alert_id: int | None
    kind: str
    channel: str
    target: str
    status: str
    attempts: int
    error: str | None
    created_at: datetime | None
    sent_at: datetime | None


@dataclass(frozen=True, slots=True)
class AccountView:
    account_id: str
    name: str
    brief: dict[str, Any]                   # AccountBrief as JSON: name, csm, segment, arr, renewal_date
    health: dict[str, Any]                  # the current snapshot (score, tier, components, reasons, as_of)
    history: list[ScorePoint]               # oldest first
    moved: Moved | None
    open_risks: list[dict[str, Any]]        # the engine's open risks (current evidence)
    recent_risks: list[dict[str, Any]]      # resolved ones, newest first
    alerts: list[AlertRow]
    deliveries: list[DeliveryRow]
    contacts: list[Contact]
    names: dict[str, str] = field(default_factory=dict)   # contact id -> name


@dataclass(frozen=True, slots=True)
class PortfolioRow:
    account_id: str
    name: str
    score: float | None
    tier: str
    arr: float | None
    renewal_date: date | None
    segment: str | None
    risk_severity: str | None               # the highest open severity; None: no open risk

    @property
    def risk_rank(self) -> int:
        return -1 if self.risk_severity is None else SEVERITY_RANK.get(self.risk_severity, -1)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _at(ts: int) -> datetime | None:
    return None if ts is None or ts == NONE or ts < 0 else datetime.fromtimestamp(ts, UTC)


class UiReadModel:
    """What the pages show, read per request. `model` is the scoring domain (state codec and engine)."""

    def __init__(self, engine: AsyncEngine, model: ScoringModel) -> None:
        self._engine = engine
        self._model = model
        self._queries = ScoringQueries(engine)

    # -- account page ----------------------------------------------------------------------------------

    async def account(self, account_id: str) -> AccountView | None:
        record = await self._queries.account(account_id)
        if record is None:
            return None
        engine = self._model.engine
        state = self._model.decode_state(record.state)
        brief = engine.account_brief(state).model_dump(mode="json")
        health = engine.snapshot(state).to_dict()
        history, moved = await self._history(account_id)
        risks = await self._queries.risks(account_id=account_id, risk_type=None, status="resolved",
                                          limit=RECENT_RISKS, before=None)
        recent = [{"risk_id": r.risk_id, "type": r.type, "severity": r.severity, "summary": r.summary,
                   "evidence": r.evidence, "opened_at": r.opened_at, "resolved_at": r.resolved_at}
                  for r in risks]
        alerts, deliveries = await self._alerts(account_id)
        contacts = _contacts(state)
        names = {c.contact_id: c.name for c in contacts if c.name and c.name != c.contact_id}
        return AccountView(account_id=account_id, name=brief.get("name") or account_id, brief=brief,
                           health=health, history=history, moved=moved, open_risks=engine.open_risks(state),
                           recent_risks=recent, alerts=alerts, deliveries=deliveries, contacts=contacts,
                           names=names)

    async def _history(self, account_id: str) -> tuple[list[ScorePoint], Moved | None]:
        c = st.history.c
        query = (sa.select(c.as_of, c.score, c.cause, c.snapshot).where(c.account_id == account_id)
                 .order_by(c.id.desc()).limit(HISTORY_POINTS))
        with classified():
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        points = [ScorePoint(_utc(r[0]), float(r[1])) for r in reversed(rows) if r[1] is not None]
        moved = None
        for as_of, _, cause, snapshot in rows:          # newest first: the latest that moved the score
            deltas = loads(snapshot).get("deltas") or []
            if deltas:
                moved = Moved(_utc(as_of), cause, deltas)
                break
        return points, moved

    async def _alerts(self, account_id: str) -> tuple[list[AlertRow], list[DeliveryRow]]:
        a, d = at.alerts.c, at.deliveries.c
        alerts_q = (sa.select(a.id, a.type, a.severity, a.status, a.summary, a.opened_at, a.updated_at,
                              a.resolved_at, a.acked_at, a.acked_by)
                    .where(a.account_id == account_id).order_by(a.id.desc()).limit(RECENT_ALERTS))
        deliveries_q = (sa.select(d.id, d.alert_id, d.kind, d.channel, d.target_key, d.status, d.attempts,
                                  d.error, d.created_at, d.sent_at)
                        .join(at.alerts, at.alerts.c.id == d.alert_id)
                        .where(a.account_id == account_id).order_by(d.id.desc()).limit(RECENT_DELIVERIES))
        with classified():
            async with self._engine.connect() as conn:
                alert_rows = (await conn.execute(alerts_q)).all()
                delivery_rows = (await conn.execute(deliveries_q)).all()
        alerts = [AlertRow(int(r[0]), r[1], r[2], r[3], r[4], _utc(r[5]), _utc(r[6]), _utc(r[7]), _utc(r[8]),
                           r[9]) for r in alert_rows]
        deliveries = [DeliveryRow(int(r[0]), r[1], r[2], r[3], r[4], r[5], int(r[6] or 0), r[7], _utc(r[8]),
                                  _utc(r[9])) for r in delivery_rows]
        return alerts, deliveries

    # -- portfolio -------------------------------------------------------------------------------------

    async def portfolio(self, csm: str, *, tier: str | None = None, segment: str | None = None,
                        renewal_within: int | None = None, today: date | None = None) -> list[PortfolioRow]:
        """The CSM's accounts (matched on the CSM's e-mail, Slack id or name), filtered; by account id
        (the page sorts them). At most `PORTFOLIO_MAX`."""
        renewal = None
        if renewal_within is not None:
            start = today or datetime.now(UTC).date()
            renewal = (start, start + timedelta(days=renewal_within))
        out: list[PortfolioRow] = []
        after: str | None = None
        while len(out) < PORTFOLIO_MAX:
            records = await self._queries.accounts(tier=tier, limit=_PAGE, after=after, csm=csm,
                                                   segment=segment, renewal_between=renewal)
            out.extend(self._row(r) for r in records)
            if len(records) < _PAGE:
                break
            after = records[-1].account_id
        return out[:PORTFOLIO_MAX]

    def _row(self, r: AccountRecord) -> PortfolioRow:
        brief = self._model.engine.account_brief(self._model.decode_state(r.state))
        return PortfolioRow(r.account_id, brief.name or r.account_id, r.score, r.tier,
                            r.arr if r.arr is not None else brief.arr,
                            r.renewal_date if r.renewal_date is not None else brief.renewal_date,
                            r.segment if r.segment is not None else brief.segment, r.risk_severity)


def _contacts(state: Any) -> list[Contact]:
    """The account's kept contacts (champions, sponsors, people of unknown role), with their role, status
    and last activity (their newest update or, for a tracked key user, their last product use)."""
    contacts = getattr(state, "contacts", None) or {}
    key_users = getattr(state, "key_users", None) or {}
    out = []
    for cid, c in contacts.items():
        role = ROLES[c[C_ROLE]] if 0 <= c[C_ROLE] < len(ROLES) else None
        status = STATUSES[c[C_STATUS]] if 0 <= c[C_STATUS] < len(STATUSES) else None
        last = _at(c[C_TS])
        if status == "left" and c[C_LEFT] != NONE:
            last = _at(c[C_LEFT])
        rec = key_users.get(c[C_USER]) if c[C_USER] else None
        last_use = None
        if rec is not None and rec[K_LAST] not in (None, NONE):
            last_use = datetime.fromtimestamp(rec[K_LAST] * DAY, UTC).date()
            use_at = datetime.fromtimestamp(rec[K_LAST] * DAY, UTC)
            if last is None or use_at > last:
                last = use_at
        out.append(Contact(cid, c[C_NAME], role, status, last, last_use))
    out.sort(key=lambda k: (k.status == "left", k.role not in ("champion", "sponsor"), k.name or "", k.contact_id))
    return out


def sort_portfolio(rows: list[PortfolioRow], sort: str, *, descending: bool | None = None) -> list[PortfolioRow]:
    """Rows in the order `sort` (risk: worst open severity first, then lowest score; score: lowest first;
    renewal: soonest first; arr: largest first; name). Missing values last; `descending` flips the order
    of the present values."""
    def by_score(r: PortfolioRow) -> float:
        return r.score if r.score is not None else 1e9

    keys: dict[str, tuple[Callable[[PortfolioRow], Any], Callable[[PortfolioRow], bool], bool]] = {
        "risk": (lambda r: (-r.risk_rank, by_score(r)), lambda r: False, False),
        "score": (lambda r: r.score, lambda r: r.score is None, False),
        "renewal": (lambda r: r.renewal_date, lambda r: r.renewal_date is None, False),
        "arr": (lambda r: r.arr, lambda r: r.arr is None, True),
        "name": (lambda r: r.name.casefold(), lambda r: False, False),
    }
    key, missing, default_desc = keys[sort]
    flip = default_desc if descending is None else descending
    present = sorted((r for r in rows if not missing(r)), key=lambda r: r.account_id)
    present.sort(key=key, reverse=flip)
    absent = sorted((r for r in rows if missing(r)), key=lambda r: r.account_id)
    return present + absent
