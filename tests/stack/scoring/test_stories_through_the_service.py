"""The scenario stories of the scoring domain, run through the whole service: input topics -> scoring ->
risks topic, on the embedded default and on the real Kafka + PostgreSQL. Each story raises exactly its
expected risk events, with a readable summary and evidence; the healthy ones raise none."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from services.scoring.adapters import tables as t
from tests.domain.scoring.stories import Story, all_stories, steady_story, story_problems
from tests.stack.scoring.events import accounts_on_partition
from tests.stack.scoring.harness import (
    Stack,
    fetch_all,
    produce,
    records_for,
    risk_events,
    running,
    wait_caught_up,
)


def _with_fillers() -> list[Story]:
    """The stories, plus one steady account per partition so every partition's clock keeps moving to the
    end of the stories' ten weeks (a silent account is noticed by its partition's clock)."""
    fillers = [steady_story(accounts_on_partition(p, 1, prefix="steady")[0], seed=30 + p) for p in range(6)]
    return all_stories() + fillers


def _arrival_order(stories: list[Story]) -> list[dict[str, Any]]:
    """Every story's raw events, each story in its own order, interleaved by event time as they would
    arrive (the same order as the domain tests' merged stream)."""
    keyed: list[tuple[datetime, int, int, dict[str, Any]]] = []
    for s_index, story in enumerate(stories):
        latest: datetime | None = None
        for raw in story.events:
            when = datetime.fromisoformat(raw["occurred_at"])
            latest = when if latest is None or when > latest else latest
            keyed.append((latest, s_index, len(keyed), raw))
    keyed.sort(key=lambda k: (k[0], k[1], k[2]))
    return [k[3] for k in keyed]


@pytest.fixture
async def story_results(stack: Stack) -> tuple[list[Story], dict[str, list[dict[str, Any]]]]:
    stories = _with_fillers()
    await produce(stack.bus, records_for(stack.topics, _arrival_order(stories)))
    async with running(stack) as rt:
        await wait_caught_up(stack, rt, timeout_s=180)
    by_account: dict[str, list[dict[str, Any]]] = {}
    for risk in await risk_events(stack):
        by_account.setdefault(risk.account_id, []).append(risk.model_dump(mode="json"))
    return stories, by_account


async def test_every_story_raises_exactly_its_expected_risk_events(story_results, stack: Stack):
    stories, by_account = story_results
    for story in stories:
        records = by_account.get(story.account_id, [])
        assert story_problems(story, records) == [], story.name
        if not story.expect:  # a healthy story
            assert records == [], f"{story.name} is healthy: {[r['summary'] for r in records]}"
        else:
            assert records, story.name
    raised = {r["type"] for records in by_account.values() for r in records}
    assert {"champion_left", "champion_inactive", "usage_drop", "ticket_spike", "sentiment_drop",
            "renewal_risk"} <= raised


async def test_risk_events_read_well_and_carry_their_evidence(story_results, stack: Stack):
    stories, by_account = story_results
    names = {s.account_id: s.account_name for s in stories}
    for account_id, records in by_account.items():
        seqs: dict[str, int] = {}
        for r in records:
            assert r["event_id"] == f"{r['risk_id']}:{r['seq']}"
            assert r["seq"] == seqs.get(r["risk_id"], 0) + 1, "transitions of a risk arrive in order"
            seqs[r["risk_id"]] = r["seq"]
            assert r["summary"].endswith(".") and names[account_id] in r["summary"], r["summary"]
            assert r["evidence"] and r["health"]["tier"] in ("green", "yellow", "red", "unknown")
            assert r["health"]["reasons"] and r["account"]["name"] == names[account_id]
            assert r["account"]["csm"]["email"], "alerts route on the account's CSM"
            assert r["config_version"] and r["detected_at"]
            if r["trigger"] is not None:
                assert r["trigger"]["received_at"], "the source event's ingest time travels along"
    acme = next(s for s in stories if s.name == "champion_leaves").account_id
    opened = next(r for r in by_account[acme] if r["type"] == "champion_left")
    assert opened["summary"] == "Dana Smith (champion) has left Acme Corp."
    assert opened["severity"] == "critical" and opened["trigger"]["event_id"]
    fades = next(s for s in stories if s.name == "usage_fades").account_id
    silence = next(r for r in by_account[fades] if r["type"] == "usage_drop")
    assert silence["trigger"] is None, "a silent account is noticed by the clock"
    # The risks table agrees with the risk events (what the read API serves).
    rows = {r["risk_id"]: r for r in await fetch_all(stack.settings.database_url, t.risks, t.risks.c.id)}
    last = {r["risk_id"]: r for records in by_account.values() for r in records}
    assert set(rows) == set(last)
    for risk_id, r in last.items():
        assert rows[risk_id]["status"] == ("resolved" if r["transition"] == "resolved" else "open")
        assert rows[risk_id]["seq"] == r["seq"] and rows[risk_id]["severity"] == r["severity"]
