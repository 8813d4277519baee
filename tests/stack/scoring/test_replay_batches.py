"""Replays: the same input log into a fresh database, with other batch boundaries, gives identical
scores, history, risks and risk events."""

from __future__ import annotations

from shared.codec import loads
from tests.stack.scoring.harness import (
    Stack,
    comparable_risk_event,
    database_contents,
    produce,
    read_topic,
    records_for,
    running,
    wait_caught_up,
)
from tests.stack.scoring.streams import simulated


async def test_replay_into_a_fresh_database_gives_identical_results(stack: Stack, fresh_database):
    events = simulated(accounts=24, days=45)
    # Some events are sent twice, one of them to another topic (same id): each counts once.
    resent = events[100:110] + [{**events[200], "type": "usage", "data": {"feature": "login"}}]
    await produce(stack.bus, records_for(stack.topics, events + resent))

    async with running(stack) as rt:
        await wait_caught_up(stack, rt, timeout_s=180)
        first_batches = rt.consumer.batches
    first = await database_contents(stack.settings.database_url)
    assert first["outbox"], "the simulated stories raise risks"
    assert len(first["processed"]) == len(events)

    # Replay the whole log into a fresh database, in much smaller batches, as another consumer group.
    replay = stack.with_database(await fresh_database()).with_group(stack.settings.scoring_group_id + "-r")
    replay.settings = replay.settings.model_copy(update={"scoring_batch_max_records": 97})
    async with running(replay) as rt:
        await wait_caught_up(replay, rt, timeout_s=180)
    second = await database_contents(replay.settings.database_url)

    assert second["accounts"] == first["accounts"]
    assert second["history"] == first["history"]
    assert second["risks"] == first["risks"]
    assert second["outbox"] == first["outbox"]
    assert second["processed"] == first["processed"]
    # On the risks topic: every risk event of the first run, and the same again from the replay.
    published = [comparable_risk_event(loads(v)) for v in await read_topic(stack.bus, stack.topics.risks)]
    expected = [e for per_account in first["outbox"].values() for e in per_account]
    assert sorted(map(repr, published)) == sorted(map(repr, expected * 2))

    # Once more with the daily sweeps bounded to one timer evaluation per batch: the sweeps are spread
    # over many batches, between live events, and every account still sees the same timers and events
    # in the same order, so everything committed is the same.
    bounded = stack.with_database(await fresh_database()).with_group(stack.settings.scoring_group_id + "-s")
    bounded.settings = bounded.settings.model_copy(update={"scoring_sweep_chunk": 1})
    async with running(bounded) as rt:
        await wait_caught_up(bounded, rt, timeout_s=300)
        batches = rt.consumer.batches
    third = await database_contents(bounded.settings.database_url)
    assert batches > first_batches, "the sweeps were spread over more batches"
    assert third == first
