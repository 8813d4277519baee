"""`GET /v1/accounts` by CSM, segment and renewal, sorted by score, renewal or ARR with keyset cursors; and
migration 0005, which fills the portfolio columns of existing accounts from their states."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from services.scoring.adapters import tables as t
from services.scoring.adapters.portfolio_columns import PortfolioColumns, account_portfolio
from services.scoring.adapters.queries import ScoringQueries
from services.scoring.bootstrap import build_model
from services.scoring.domain.state import AccountState, encode_state
from services.scoring.entrypoints.api import read_router
from shared.db import create_engine
from shared.http import KeyRing, install_common
from shared.metrics import new_registry
from shared.migrate import upgrade_async
from tests import conftest as root
from tests.conftest import READ_KEY
from tests.service.ui.world import CSM_EMAIL, CSM_NAME, CSM_SLACK, World, build_world

READ = {"Authorization": f"Bearer {READ_KEY}"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return asyncio.run(build_world(tmp_path_factory.mktemp("api-portfolio")))


@pytest.fixture
async def client(world: World) -> AsyncIterator[httpx.AsyncClient]:
    engine = create_engine(world.database_url, pool_size=2)
    model = build_model(world.settings)
    queries = ScoringQueries(engine)
    app = FastAPI()
    app.include_router(read_router(lambda: queries, lambda: model, KeyRing(root.test_api_keys()),
                                   now=lambda: world.now))

    async def ready() -> dict[str, bool]:
        return {"database": True}

    install_common(app, registry=new_registry(), readiness=ready)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://scoring") as c:
            yield c
    finally:
        await engine.dispose()


async def _all(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(200):
        response = await client.get("/v1/accounts", params={**params, **({"cursor": cursor} if cursor else {})},
                                    headers=READ)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


async def test_csm_matches_email_slack_id_or_name(client: httpx.AsyncClient, world: World):
    for csm in (CSM_EMAIL, CSM_SLACK, CSM_NAME):
        items = await _all(client, csm=csm, limit=2)
        assert [i["account_id"] for i in items] == world.csm_accounts
        assert all(i["csm"] == {"email": CSM_EMAIL, "slack_user_id": CSM_SLACK, "name": CSM_NAME} for i in items)
    assert await _all(client, csm="nobody@example.com") == []


async def test_segment_and_renewal_filters(client: httpx.AsyncClient, world: World):
    everyone = await _all(client, limit=500)
    segments = {i["segment"] for i in everyone}
    assert len(segments) >= 2
    for segment in segments:
        got = await _all(client, segment=segment, limit=3)
        assert [i["account_id"] for i in got] == [i["account_id"] for i in everyone if i["segment"] == segment]
    today = world.now.date()
    for days in (0, 60, 200, 3650):
        got = await _all(client, renewal_within=days)
        expected = [i["account_id"] for i in everyone if i["renewal_date"] is not None
                    and today <= date.fromisoformat(i["renewal_date"]) <= today + timedelta(days=days)]
        assert [i["account_id"] for i in got] == expected
    for bad in ({"renewal_within": -1}, {"renewal_within": "soon"}, {"sort": "name"}, {"csm": ""}):
        response = await client.get("/v1/accounts", params=bad, headers=READ)
        assert response.status_code == 422, bad


@pytest.mark.parametrize(("sort", "field", "descending"), [("score", "score", False),
                                                           ("renewal", "renewal_date", False),
                                                           ("arr", "arr", True)])
async def test_sorted_pages_walk_every_account_once(client: httpx.AsyncClient, sort: str, field: str,
                                                    descending: bool):
    everyone = await _all(client, limit=500)
    pages = await _all(client, sort=sort, limit=4)
    assert len(pages) == len(everyone) and {i["account_id"] for i in pages} == {i["account_id"] for i in everyone}
    present = [i for i in pages if i[field] is not None]
    values = [i[field] for i in present]
    assert values == sorted(values, reverse=descending)
    assert all(i[field] is None for i in pages[len(present):])     # accounts without the value come last
    # Ties are ordered by account id.
    for a, b in zip(present, present[1:], strict=False):
        if a[field] == b[field]:
            assert a["account_id"] < b["account_id"]
    filtered = await _all(client, sort=sort, csm=CSM_EMAIL, limit=1)
    assert [i["account_id"] for i in filtered] == [i["account_id"] for i in pages if i["csm"]["email"] == CSM_EMAIL]


async def test_default_order_and_cursor_are_unchanged(client: httpx.AsyncClient):
    everyone = await _all(client, limit=3)
    assert [i["account_id"] for i in everyone] == sorted(i["account_id"] for i in everyone)
    first = (await client.get("/v1/accounts", params={"limit": 2}, headers=READ)).json()
    # A cursor belongs to its order.
    response = await client.get("/v1/accounts", params={"sort": "arr", "cursor": first["next_cursor"]},
                                headers=READ)
    assert response.status_code == 422
    by_arr = (await client.get("/v1/accounts", params={"sort": "arr", "limit": 2}, headers=READ)).json()
    for params in ({"cursor": by_arr["next_cursor"]}, {"sort": "score", "cursor": by_arr["next_cursor"]}):
        response = await client.get("/v1/accounts", params=params, headers=READ)
        assert response.status_code == 422, params


# -- migration 0005 ------------------------------------------------------------------------------------------

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def _state(account_id: str, **facts: Any) -> AccountState:
    st = AccountState(account_id)
    if facts:
        st.facts_ts = int(NOW.timestamp())   # the state keeps account facts once an account event told them
    for name, value in facts.items():
        setattr(st, name, value)
    return st


async def test_migration_fills_the_portfolio_columns_of_existing_accounts(tmp_path: Path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'at-0004.db'}"
    await upgrade_async(url, "0004")
    states = [_state("a1", csm_email="maya@example.com", csm_slack="U01", csm_name="Maya", segment="enterprise",
                     arr=120000.0, renewal_day=(date(2026, 6, 30) - date(1970, 1, 1)).days),
              _state("a2", csm_name="Jonas"), _state("a3")]
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            rows = [{"account_id": s.account_id, "partition": 0, "state": encode_state(s), "tier": "unknown",
                     "updated_at": NOW} for s in states]
            rows.append({"account_id": "undecodable", "partition": 0, "state": b"not a state", "tier": "unknown",
                         "updated_at": NOW})
            await conn.execute(sa.insert(t.accounts), rows)
    finally:
        await engine.dispose()
    await upgrade_async(url)
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            c = t.accounts.c
            rows = {r[0]: (PortfolioColumns(*r[1:6]), r[6]) for r in await conn.execute(
                sa.select(c.account_id, c.csm_email, c.csm_slack, c.csm_name, c.segment, c.renewal_date, c.arr))}
    finally:
        await engine.dispose()
    assert rows["a1"] == (PortfolioColumns("maya@example.com", "U01", "Maya", "enterprise", date(2026, 6, 30)),
                          120000.0)
    assert rows["a1"][0] == account_portfolio(states[0])
    assert rows["a2"] == (PortfolioColumns(None, None, "Jonas", None, None), None)
    assert rows["a3"] == (PortfolioColumns(None, None, None, None, None), None)
    assert rows["undecodable"] == (PortfolioColumns(None, None, None, None, None), None)


async def test_every_save_writes_the_portfolio_columns(database_url: str):
    """Both stores (SQLite's statements and PostgreSQL's one-statement batch) write them at every save, with
    or without a new health snapshot, and clear them when the model tells none."""
    from services.scoring.adapters.revenue import account_revenue
    from services.scoring.adapters.store import AccountRow, BatchWrite, HealthColumns
    from services.scoring.bootstrap import build_store

    renewal = (date(2026, 6, 30) - date(1970, 1, 1)).days
    full = _state("p1", csm_email="maya@example.com", csm_slack="U01", csm_name="Maya", segment="enterprise",
                  arr=120000.0, renewal_day=renewal)
    bare = _state("p2", csm_name="Jonas", segment="smb")

    def row(st: AccountState, health: bool) -> AccountRow:
        columns = HealthColumns(80.0, "green", NOW, "v") if health else None
        return AccountRow(st.account_id, 0, encode_state(st), None, columns, account_revenue(st),
                          account_portfolio(st))

    async def saved() -> dict[str, PortfolioColumns]:
        async with engine.connect() as conn:
            c = t.accounts.c
            return {r[0]: PortfolioColumns(*r[1:]) for r in await conn.execute(
                sa.select(c.account_id, c.csm_email, c.csm_slack, c.csm_name, c.segment, c.renewal_date))}

    engine = create_engine(database_url, pool_size=2)
    try:
        store = build_store(engine)
        await store.write_batch(BatchWrite(accounts=[row(full, True), row(bare, False)]), NOW)
        assert await saved() == {
            "p1": PortfolioColumns("maya@example.com", "U01", "Maya", "enterprise", date(2026, 6, 30)),
            "p2": PortfolioColumns(None, None, "Jonas", "smb", None)}
        moved = _state("p1", csm_email="lucia@example.com", csm_name="Lucia", segment="enterprise")
        await store.write_batch(BatchWrite(accounts=[row(moved, False),
                                                     AccountRow("p2", 0, b"x", None, None, None, None)]), NOW)
        assert await saved() == {"p1": PortfolioColumns("lucia@example.com", None, "Lucia", "enterprise", None),
                                 "p2": PortfolioColumns(None, None, None, None, None)}
    finally:
        await engine.dispose()
