"""The health feed out as Standard Webhooks, end to end: events scored into the health topic, sent by the alerts
service to a local receiver that verifies every signature. Across a scoring restart, a sender restart with
deliveries in flight and a receiver answering 500 for a while, the receiver (skipping ids it has seen) gets
every health change and risk transition once, in order per account; an account the receiver refuses with a 400
goes to the dead letters, not into endless retries."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid

import orjson

from shared.settings import Settings
from tests.stack.alerts.conftest import Stack
from tests.stack.scoring.harness import Stack as ScoringStack
from tests.stack.scoring.harness import produce, read_topic, records_for, running, stage_bounds, wait_caught_up
from tests.stack.scoring.streams import simulated
from tests.stack.scoring.test_health_feed import health_records, kinds_and_ids, once_each
from tests.support.webhook_receiver import WebhookReceiver


async def _until(check, what: str, timeout_s: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s    # a guard against a stuck service, not a speed limit
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_a_verifying_receiver_gets_every_change_once_in_order(stack: Stack):
    receiver = WebhookReceiver(os.urandom(32)).start()
    try:
        await _scenario(stack, receiver)
    finally:
        receiver.stop()


async def _scenario(stack: Stack, receiver: WebhookReceiver) -> None:
    events = simulated(accounts=12, days=45, seed=21)
    first, middle, end = stage_bounds(events, 2)
    scoring = ScoringStack(stack.kind, stack.bus, Settings(
        kafka_bootstrap_servers=stack.settings().kafka_bootstrap_servers, topic_prefix=stack.topic_prefix,
        database_url=stack.database_url, scoring_group_id=f"scoring-{uuid.uuid4().hex[:6]}"))
    feed = {"feed_webhooks": json.dumps([{"url": receiver.url, "secret": receiver.secret, "name": "crm"}]),
            "feed_group_id": f"feed-{uuid.uuid4().hex[:6]}"}

    async def topic() -> dict[str, list[dict]]:
        return once_each(await health_records(stack.bus, stack.topics.health))

    async def score(a: int, b: int) -> None:
        """Scoring started, fed a stage of events and stopped again (a restart between stages)."""
        await produce(stack.bus, records_for(stack.topics, events[a:b]))
        async with running(scoring) as rt:
            await wait_caught_up(scoring, rt, timeout_s=180)
            wanted = await _committed_changes(stack.database_url)
            await _until(lambda: _count(topic, wanted), "the health topic")

    await score(first, middle)
    refused = sorted(await topic())[0]
    receiver.refuse_account(refused, 400)
    receiver.fail_next(3, 500)
    receiver.fail_next(2, 503, {"Retry-After": "0"})

    # The sender stops with deliveries in flight (a slow receiver), then a new one takes over.
    receiver.delay_s = 0.01
    app = await stack.start(**feed)
    total = sum(map(len, (await topic()).values()))
    await _until(lambda: _received_at_least(receiver, total // 3), "a third of the changes")
    await app.stop()
    receiver.delay_s = 0.0

    await score(middle, end)
    expected = kinds_and_ids(await topic())
    wanted = sum(len(v) for a, v in expected.items() if a != refused)
    app = await stack.start(**feed)
    await _until(lambda: _received_at_least(receiver, wanted), "every change")
    await _until(lambda: _dead_lettered(stack, len(expected[refused])), "the refused account's dead letters")
    await app.stop()

    assert receiver.rejected == []
    got = {a: [(d.message["type"], d.id) for d in ds] for a, ds in receiver.once_each().items()}
    assert got == {a: v for a, v in expected.items() if a != refused}
    assert sum(1 for status in receiver.answered if status >= 500) == 5       # each retried until 2xx
    dead = await _dead_letters(stack)
    # (at least once: a dead letter whose offset the stopped sender had not committed yet comes again)
    assert {orjson.loads(d["value"])["id"] for d in dead} == {i for _, i in expected[refused]}
    for d in dead:
        assert d["service"] == "alerts" and d["reason"] == "feed subscriber crm: HTTP 400 nope"
        assert "s3cr3t-url-token" not in d["reason"]


async def _committed_changes(url: str) -> int:
    from services.scoring.adapters import tables as t
    from tests.stack.scoring.harness import count

    return await count(url, t.history) + await count(url, t.outbox)


async def _count(topic, wanted: int) -> bool:  # type: ignore[no-untyped-def]
    return sum(map(len, (await topic()).values())) >= wanted


async def _received_at_least(receiver: WebhookReceiver, n: int) -> bool:
    return sum(map(len, receiver.once_each().values())) >= n


async def _dead_letters(stack: Stack) -> list[dict]:
    records = [orjson.loads(v) for v in await read_topic(stack.bus, stack.topics.deadletter)]
    return [r for r in records if r.get("source_topic") == stack.topics.health]


async def _dead_lettered(stack: Stack, n: int) -> bool:
    return len({orjson.loads(d["value"])["id"] for d in await _dead_letters(stack)}) >= n
