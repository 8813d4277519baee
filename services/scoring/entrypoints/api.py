"""The scoring read API (scope `read`): account health, accounts by tier, history, risks.

Lists return `{"items": [...], "next_cursor": ...}`; cursors are opaque (base64 of the keyset position)
and `next_cursor` is null on the last page.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

from services.scoring.adapters.queries import AccountRecord, AccountSort, RiskRecord, ScoringQueries, sort_value
from services.scoring.entrypoints.ports import ScoringModel
from shared.codec import dumps, loads
from shared.errors import NotFound, Unprocessable
from shared.http import KeyRing, scope_dependency
from shared.risks import RiskType

TierParam = Literal["green", "yellow", "red", "unknown"]
StatusParam = Literal["open", "resolved"]
SortParam = AccountSort
Limit = Annotated[int, Query(ge=1, le=500, description="page size (1-500)")]
Cursor = Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")]


def encode_cursor(position: str | int) -> str:
    return base64.urlsafe_b64encode(dumps({"p": position})).decode().rstrip("=")


def _bad_cursor() -> Unprocessable:
    return Unprocessable("invalid cursor", errors=[{"loc": ["query", "cursor"], "msg": "invalid cursor"}])


def decode_cursor(cursor: str | None, kind: type) -> Any:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = loads(raw)["p"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise _bad_cursor() from exc
    if not isinstance(position, kind) or isinstance(position, bool):
        raise _bad_cursor()
    return position


def encode_sort_cursor(sort: AccountSort, record: AccountRecord) -> str:
    """The keyset position after `record` in the order `sort`: [sort, value, account id]."""
    value = sort_value(record, sort)
    return encode_cursor([sort, value.isoformat() if isinstance(value, date) else value,  # type: ignore[list-item]
                          record.account_id])


def decode_sort_cursor(cursor: str | None, sort: AccountSort) -> tuple[Any, str] | None:
    """(value, account id) of a cursor made by `encode_sort_cursor` for the same `sort`."""
    position = decode_cursor(cursor, list)
    if position is None:
        return None
    if len(position) != 3 or position[0] != sort or not isinstance(position[2], str):
        raise _bad_cursor()
    value = position[1]
    if value is None:
        return None, position[2]
    try:
        if sort == "renewal":
            return date.fromisoformat(value), position[2]
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value), position[2]
    except (TypeError, ValueError) as exc:
        raise _bad_cursor() from exc
    raise _bad_cursor()


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def _risk(r: RiskRecord) -> dict[str, Any]:
    return {"risk_id": r.risk_id, "account_id": r.account_id, "type": r.type, "severity": r.severity,
            "status": r.status, "seq": r.seq, "summary": r.summary, "evidence": r.evidence,
            "opened_at": _iso(r.opened_at), "updated_at": _iso(r.updated_at),
            "resolved_at": _iso(r.resolved_at), "trigger_event_id": r.trigger_event_id}


def _utcnow() -> datetime:
    return datetime.now(UTC)


def read_router(queries: Callable[[], ScoringQueries], model: Callable[[], ScoringModel],
                keyring: KeyRing, *, now: Callable[[], datetime] = _utcnow) -> APIRouter:
    """Routes of the read API; `queries` and `model` are resolved per request (built in the lifespan).
    `now` is the wall clock `renewal_within` counts from."""
    router = APIRouter(prefix="/v1", tags=["read"], dependencies=[Depends(scope_dependency(keyring, "read"))])

    def decode(record: AccountRecord) -> Any:
        return model().decode_state(record.state)

    @router.get("/accounts/{account_id}/health", summary="Current health of one account")
    async def health(account_id: str) -> dict[str, Any]:
        record = await queries().account(account_id)
        if record is None:
            raise NotFound(f"unknown account '{account_id}'")
        engine = model().engine
        state = decode(record)
        snapshot = engine.snapshot(state).to_dict()
        brief = engine.account_brief(state).model_dump(mode="json")
        return {**snapshot, "account_id": account_id, "name": brief.get("name"), "account": brief,
                "open_risks": engine.open_risks(state)}

    @router.get("/accounts", summary="Accounts, filtered by tier, CSM, segment or renewal, sorted")
    async def accounts(tier: TierParam | None = None,
                       csm: Annotated[str | None, Query(min_length=1, max_length=320,
                                                        description="the CSM's e-mail, Slack id or name")] = None,
                       segment: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
                       renewal_within: Annotated[int | None, Query(ge=0, le=3650,
                                                                   description="renewing within this many days "
                                                                               "from today (UTC)")] = None,
                       sort: SortParam | None = None, limit: Limit = 50,
                       cursor: Cursor = None) -> dict[str, Any]:
        renewal = None
        if renewal_within is not None:
            today = now().astimezone(UTC).date()
            renewal = (today, today + timedelta(days=renewal_within))
        filters: dict[str, Any] = {"tier": tier, "csm": csm, "segment": segment, "renewal_between": renewal}
        if sort is None:
            after = decode_cursor(cursor, str)
            records = await queries().accounts(**filters, limit=limit + 1, after=after)
        else:
            after_key = decode_sort_cursor(cursor, sort)
            records = await queries().accounts(**filters, limit=limit + 1, sort=sort, after_key=after_key)
        page = records[:limit]
        items = [_listed(r) for r in page]
        more = len(records) > limit
        if not more:
            next_cursor = None
        elif sort is None:
            next_cursor = encode_cursor(page[-1].account_id)
        else:
            next_cursor = encode_sort_cursor(sort, page[-1])
        return {"items": items, "next_cursor": next_cursor}

    def _listed(r: AccountRecord) -> dict[str, Any]:
        brief = model().engine.account_brief(decode(r))
        return {"account_id": r.account_id, "name": brief.name, "score": r.score, "tier": r.tier,
                "as_of": _iso(r.as_of), "config_version": r.config_version,
                "csm": None if brief.csm is None else brief.csm.model_dump(mode="json"),
                "segment": brief.segment, "arr": brief.arr, "renewal_date": _iso(brief.renewal_date)}

    @router.get("/accounts/{account_id}/history", summary="What changed in the account's health, and why")
    async def history(account_id: str, limit: Limit = 50, cursor: Cursor = None) -> dict[str, Any]:
        before = decode_cursor(cursor, int)
        if not await queries().exists(account_id):
            raise NotFound(f"unknown account '{account_id}'")
        records = await queries().history(account_id, limit=limit + 1, before=before)
        page = records[:limit]
        more = len(records) > limit
        return {"items": [r.snapshot for r in page],
                "next_cursor": encode_cursor(page[-1].id) if more else None}

    @router.get("/risks", summary="Risks, most recently opened first")
    async def risks(account_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
                    type: RiskType | None = None, status: StatusParam | None = None,  # noqa: A002
                    limit: Limit = 50, cursor: Cursor = None) -> dict[str, Any]:
        before = decode_cursor(cursor, int)
        records = await queries().risks(account_id=account_id, risk_type=type, status=status,
                                        limit=limit + 1, before=before)
        page = records[:limit]
        more = len(records) > limit
        return {"items": [_risk(r) for r in page],
                "next_cursor": encode_cursor(page[-1].id) if more else None}

    return router
