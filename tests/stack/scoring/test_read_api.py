"""The read API over what the service scored: health, accounts by tier, history, risks; auth; pages."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.scoring.bootstrap import create_app
from tests.conftest import INGEST_KEY, READ_KEY
from tests.stack.scoring.harness import Stack, produce, records_for, wait_caught_up
from tests.stack.scoring.streams import simulated

READ = {"Authorization": f"Bearer {READ_KEY}"}


@contextlib.asynccontextmanager
async def serving(stack: Stack) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The scoring app with its lifespan (consumer included) and a client on it."""
    app = create_app(stack.settings, bus=stack.bus)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://scoring") as client:
            yield client, app


@pytest.fixture
async def scored(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """16 simulated accounts over 45 days (some with churn stories), scored; a client on the API."""
    await produce(stack.bus, records_for(stack.topics, simulated(accounts=16, days=45, seed=5)))
    async with serving(stack) as (client, _):
        for _ in range(300):
            ready = await client.get("/readyz")
            if ready.status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert ready.json() == {"ready": True, "checks": {"database": True, "consumer": True}}
        await wait_caught_up(stack, None, timeout_s=120)
        yield client


async def _all_pages(client: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        query = {**params, **({"cursor": cursor} if cursor else {})}
        page = await client.get(path, params=query, headers=READ)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["items"]) <= params.get("limit", 50)
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


async def test_health_shows_score_tier_components_reasons_and_open_risks(scored: httpx.AsyncClient):
    open_risks = (await scored.get("/v1/risks", params={"status": "open"}, headers=READ)).json()["items"]
    assert open_risks, "the simulated stories leave open risks"
    account_id = open_risks[0]["account_id"]
    response = await scored.get(f"/v1/accounts/{account_id}/health", headers=READ)
    assert response.status_code == 200
    health = response.json()
    assert health["account_id"] == account_id and health["name"]
    assert health["tier"] in ("green", "yellow", "red", "unknown")
    assert health["score"] is None or 0 <= health["score"] <= 100
    assert health["as_of"] and health["config_version"]
    names = {c["name"] for c in health["components"]}
    assert {"usage_trend", "support_load", "sentiment"} <= names
    for component in health["components"]:
        assert {"score", "weight", "contribution", "reason"} <= set(component)
        assert isinstance(component["reason"], str) and component["reason"]
    assert health["reasons"] and all(isinstance(r, str) for r in health["reasons"])
    risk_ids = {r["risk_id"] for r in health["open_risks"]}
    assert risk_ids == {r["risk_id"] for r in open_risks if r["account_id"] == account_id}
    for risk in health["open_risks"]:
        assert risk["summary"] and risk["severity"] and risk["type"] and "evidence" in risk


async def test_history_says_what_changed_and_why(scored: httpx.AsyncClient):
    accounts = await _all_pages(scored, "/v1/accounts", limit=50)
    account_id = accounts[0]["account_id"]
    history = await _all_pages(scored, f"/v1/accounts/{account_id}/history", limit=3)
    assert len(history) >= 2
    as_of = [h["as_of"] for h in history]
    assert as_of == sorted(as_of, reverse=True), "newest first"
    changed = [h for h in history if h["deltas"]]
    assert changed
    for entry in changed:
        assert entry["cause"]
        for delta in entry["deltas"]:
            assert delta["component"] and isinstance(delta["change"], (int, float)) and delta["reason"]


async def test_lists_page_with_opaque_cursors_and_filter(scored: httpx.AsyncClient):
    everything = await _all_pages(scored, "/v1/accounts", limit=500)
    assert len(everything) == 16
    paged = await _all_pages(scored, "/v1/accounts", limit=3)
    assert [a["account_id"] for a in paged] == [a["account_id"] for a in everything]
    for tier in ("green", "yellow", "red", "unknown"):
        of_tier = await _all_pages(scored, "/v1/accounts", tier=tier, limit=2)
        assert of_tier == [a for a in everything if a["tier"] == tier]
    risks = await _all_pages(scored, "/v1/risks", limit=500)
    assert await _all_pages(scored, "/v1/risks", limit=2) == risks
    for status in ("open", "resolved"):
        assert await _all_pages(scored, "/v1/risks", status=status, limit=2) == \
            [r for r in risks if r["status"] == status]
    some = risks[0]
    assert await _all_pages(scored, "/v1/risks", account_id=some["account_id"], type=some["type"]) == \
        [r for r in risks if r["account_id"] == some["account_id"] and r["type"] == some["type"]]


async def test_bad_parameters_unknown_accounts_and_auth(scored: httpx.AsyncClient):
    for path, params in [("/v1/accounts", {"tier": "purple"}), ("/v1/accounts", {"limit": 0}),
                         ("/v1/accounts", {"limit": 501}), ("/v1/accounts", {"cursor": "not-a-cursor"}),
                         ("/v1/risks", {"status": "closed"}), ("/v1/risks", {"type": "weather"}),
                         ("/v1/risks", {"cursor": "eyJwIjoiYSJ9"})]:
        response = await scored.get(path, params=params, headers=READ)
        assert response.status_code == 422, (path, params, response.text)
        assert response.json()["errors"]
    for path in ("/v1/accounts/nobody/health", "/v1/accounts/nobody/history"):
        response = await scored.get(path, headers=READ)
        assert response.status_code == 404 and "nobody" in response.json()["error"]
    assert (await scored.get("/v1/accounts")).status_code == 401
    assert (await scored.get("/v1/accounts", headers={"Authorization": "Bearer wrong"})).status_code == 401
    forbidden = await scored.get("/v1/risks", headers={"Authorization": f"Bearer {INGEST_KEY}"})
    assert forbidden.status_code == 403 and "read" in forbidden.json()["error"]
    metrics = (await scored.get("/metrics")).text
    assert "churnsignal_scoring_events_total" in metrics
    assert "churnsignal_scoring_tracked_accounts 16.0" in metrics
