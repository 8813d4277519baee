"""Alerts HTTP API (docs/api.md, scope `admin`): alerts and acknowledgements, silences, deliveries."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.ext.asyncio import AsyncEngine

from services.alerts.adapters.repository import AlertsRepository
from services.alerts.adapters.rows import utc
from services.alerts.service.records import AlertRow, AttemptRow, DeliveryRow, SilenceRow
from shared.errors import BadRequest, NotFound, Unprocessable
from shared.events import reject_nul
from shared.http import KeyRing, scope_dependency
from shared.risks import RISK_TYPES
from shared.settings import ApiKey

MAX_PAGE = 500

# Stored in PostgreSQL text columns, which cannot hold U+0000: such a string is a 422 naming the field.
StoredText = Annotated[str, AfterValidator(reject_nul)]


class SilenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_id: StoredText = Field(min_length=1, max_length=128)
    types: list[StoredText] = Field(default_factory=list, max_length=len(RISK_TYPES))
    until: AwareDatetime
    reason: StoredText = Field(min_length=1, max_length=1000)

    @field_validator("types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in RISK_TYPES]
        if unknown:
            raise ValueError(f"unknown risk type(s) {unknown}; known: {list(RISK_TYPES)}")
        return sorted(set(value))


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else utc(dt).isoformat()


def alert_json(a: AlertRow) -> dict[str, Any]:
    event = a.last_event
    account = event.get("account") or {}
    return {
        "id": a.id,
        "risk_id": a.risk_id,
        "account_id": a.account_id,
        "account_name": account.get("name"),
        "type": a.type,
        "severity": a.severity,
        "status": a.display_status,
        "summary": a.summary,
        "transition": event.get("transition"),
        "health": event.get("health"),
        "opened_at": _iso(a.opened_at),
        "updated_at": _iso(a.updated_at),
        "resolved_at": _iso(a.resolved_at),
        "acked_at": _iso(a.acked_at),
        "acked_by": a.acked_by,
    }


def silence_json(s: SilenceRow, now: datetime) -> dict[str, Any]:
    return {
        "id": s.id,
        "account_id": s.account_id,
        "types": s.types,
        "until": _iso(s.until),
        "reason": s.reason,
        "created_by": s.created_by,
        "created_at": _iso(s.created_at),
        "deleted_at": _iso(s.deleted_at),
        "active": s.deleted_at is None and s.until > now,
    }


def _attempt_json(a: AttemptRow) -> dict[str, Any]:
    return {
        "attempt": a.attempt_no,
        "outcome": a.outcome,
        "error": a.error,
        "duration_ms": round(a.duration_ms, 3),
        "at": _iso(a.at),
    }


def delivery_json(d: DeliveryRow, attempts: list[AttemptRow]) -> dict[str, Any]:
    return {
        "id": d.id,
        "alert_id": d.alert_id,
        "kind": d.kind,
        "channel": d.channel,
        "target": d.target_key,
        "status": d.status,
        "dedup_key": d.dedup_key,
        "risk_ids": d.notification.get("risk_ids", []),
        "attempt_count": d.attempts,
        "error": d.error,
        "error_code": d.error_code,
        "created_at": _iso(d.created_at),
        "updated_at": _iso(d.updated_at),
        "sent_at": _iso(d.sent_at),
        "attempts": [_attempt_json(a) for a in attempts],
    }


def _int_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.isdigit():
        raise BadRequest("invalid cursor", cursor=cursor[:64])
    return int(cursor)


def build_router(engine: AsyncEngine, keyring: KeyRing, clock: Callable[[], datetime]) -> APIRouter:
    admin = Depends(scope_dependency(keyring, "admin"))
    router = APIRouter(prefix="/v1", tags=["alerts"])

    @router.get("/alerts")
    async def list_alerts(
        account_id: Annotated[str | None, Query(max_length=128)] = None,
        status: Literal["open", "acked", "resolved"] | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
        cursor: str | None = None,
        _key: ApiKey = admin,
    ) -> dict[str, Any]:
        async with engine.connect() as conn:
            rows = await AlertsRepository(conn).list_alerts(
                account_id=account_id, status=status, before_id=_int_cursor(cursor), limit=limit + 1
            )
        page = rows[:limit]
        return {
            "items": [alert_json(a) for a in page],
            "next_cursor": str(page[-1].id) if len(rows) > limit else None,
        }

    @router.get("/alerts/{alert_id}")
    async def get_alert(alert_id: int, _key: ApiKey = admin) -> dict[str, Any]:
        async with engine.connect() as conn:
            row = await AlertsRepository(conn).alert(alert_id)
        if row is None:
            raise NotFound(f"no alert {alert_id}")
        return alert_json(row)

    @router.post("/alerts/{alert_id}/ack")
    async def ack_alert(alert_id: int, key: ApiKey = admin) -> dict[str, Any]:
        async with engine.begin() as conn:
            row = await AlertsRepository(conn).ack(alert_id, key.name, clock())
        if row is None:
            raise NotFound(f"no alert {alert_id}")
        return alert_json(row)

    @router.post("/silences", status_code=201)
    async def create_silence(body: SilenceIn, key: ApiKey = admin) -> dict[str, Any]:
        now = clock()
        if body.until <= now:
            raise Unprocessable(
                "'until' must be in the future",
                errors=[{"loc": ["body", "until"], "msg": "must be in the future"}],
            )
        row = SilenceRow(
            id=str(uuid.uuid4()),
            account_id=body.account_id,
            types=body.types,
            until=utc(body.until),
            reason=body.reason,
            created_by=key.name,
            created_at=now,
            deleted_at=None,
        )
        async with engine.begin() as conn:
            await AlertsRepository(conn).insert_silence(row)
        return silence_json(row, now)

    @router.get("/silences")
    async def list_silences(
        account_id: Annotated[str | None, Query(max_length=128)] = None,
        include_expired: bool = False,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
        cursor: Annotated[str | None, Query(max_length=36)] = None,
        _key: ApiKey = admin,
    ) -> dict[str, Any]:
        now = clock()
        async with engine.connect() as conn:
            rows = await AlertsRepository(conn).list_silences(
                account_id=account_id,
                include_expired=include_expired,
                now=now,
                before=cursor,
                limit=limit + 1,
            )
        page = rows[:limit]
        return {
            "items": [silence_json(s, now) for s in page],
            "next_cursor": page[-1].id if len(rows) > limit else None,
        }

    @router.delete("/silences/{silence_id}")
    async def delete_silence(silence_id: str, _key: ApiKey = admin) -> dict[str, Any]:
        now = clock()
        async with engine.begin() as conn:
            row = await AlertsRepository(conn).expire_silence(silence_id, now)
        if row is None:
            raise NotFound(f"no silence {silence_id[:64]}")
        return silence_json(row, now)

    @router.get("/deliveries")
    async def list_deliveries(
        status: Literal["pending", "sent", "failed", "dead_letter"] | None = None,
        alert_id: int | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
        cursor: str | None = None,
        _key: ApiKey = admin,
    ) -> dict[str, Any]:
        async with engine.connect() as conn:
            repo = AlertsRepository(conn)
            rows = await repo.list_deliveries(
                status=status, alert_id=alert_id, before_id=_int_cursor(cursor), limit=limit + 1
            )
            page = rows[:limit]
            attempts = await repo.attempts_of(d.id for d in page)
        return {
            "items": [delivery_json(d, attempts[d.id]) for d in page],
            "next_cursor": str(page[-1].id) if len(rows) > limit else None,
        }

    return router
