"""The health feed's sender (services/alerts/feed/sender.py) on the in-process bus, against a local receiver that
verifies Standard Webhooks signatures: every message once and in order per account, retried on 5xx and 429,
dead-lettered on a 4xx or past its retry deadline, offsets committed only after that; a stopped sender's
successor sends what was not committed again, under the same webhook-id."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from services.alerts.feed.config import FeedEndpoint
from services.alerts.feed.sender import FeedSender, SenderOptions
from services.alerts.notify.http import new_session
from shared.bus.memory import MemoryBus
from shared.bus.port import OutMessage, TopicPartition
from shared.metrics import CommonMetrics, FeedMetrics, new_registry
from shared.topics import Topics
from tests.support.webhook_receiver import WebhookReceiver

TOPICS = Topics("feedtest.")
ACCOUNTS = [f"acct-{i}" for i in range(12)]
PER_ACCOUNT = 6
FAST = SenderOptions(poll_ms=20, retry_initial_s=0.02, retry_max_s=0.1, lag_every_s=0.0)


def feed_messages() -> list[dict[str, Any]]:
    """Health feed messages as scoring writes them: per account a health change, then now and then a risk."""
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    out = []
    for n in range(PER_ACCOUNT):
        for i, account in enumerate(ACCOUNTS):
            at = (t0 + timedelta(hours=n, minutes=i)).isoformat()
            kind = "health.changed" if n % 3 else "risk.opened"
            out.append({"id": f"m-{account}-{n}", "type": kind, "timestamp": at, "account_id": account,
                        "health": {"score": 80.0 - n, "tier": "green"}, "data": {"n": n}})
    return out


async def publish(bus: MemoryBus, messages: list[dict[str, Any]] | list[bytes], key: bytes | None = None) -> None:
    await bus.ensure_topics(TOPICS.all, 6, TOPICS.configs)
    publisher = bus.publisher()
    out = []
    for m in messages:
        if isinstance(m, bytes):
            out.append(OutMessage(TOPICS.health, key, m))
        else:
            out.append(OutMessage(TOPICS.health, m["account_id"].encode(), json.dumps(m).encode()))
    await publisher.publish(out)


@pytest.fixture
def receiver() -> AsyncIterator[WebhookReceiver]:
    r = WebhookReceiver(os.urandom(32)).start()
    yield r
    r.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    s = new_session()
    yield s
    await s.close()


class Harness:
    def __init__(self, bus: MemoryBus, receiver: WebhookReceiver, session: aiohttp.ClientSession) -> None:
        self.bus = bus
        self.receiver = receiver
        self.session = session
        self.registry: CollectorRegistry = new_registry()
        self.metrics = FeedMetrics(self.registry)
        self.common = CommonMetrics(self.registry, "alerts")

    def endpoint(self, name: str = "crm", types: frozenset[str] = frozenset(),
                 families: tuple[str, ...] = ()) -> FeedEndpoint:
        from shared.standard_webhooks import decode_secret

        return FeedEndpoint(name, self.receiver.url, (decode_secret(self.receiver.secret),), types, families)

    @contextlib.asynccontextmanager
    async def sender(self, endpoint: FeedEndpoint | None = None,
                     options: SenderOptions = FAST) -> AsyncIterator[FeedSender]:
        endpoint = endpoint or self.endpoint()
        sender = FeedSender(self.bus, topic=TOPICS.health, deadletter_topic=TOPICS.deadletter,
                            group_id=f"feed.{endpoint.name}", endpoint=endpoint, session=self.session,
                            metrics=self.metrics, common=self.common, options=options)
        task = asyncio.create_task(sender.run_forever())
        try:
            yield sender
        finally:
            sender.stop()
            await asyncio.wait_for(task, 30)

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    async def committed_to_the_end(self, group: str) -> bool:
        if group not in self.bus._groups:
            return False
        committed = self.bus._groups[group].committed
        ends = {TopicPartition(TOPICS.health, p): len(log)
                for p, log in enumerate(self.bus._topic(TOPICS.health).partitions)}
        return all(committed.get(tp, 0) == end for tp, end in ends.items())


@pytest.fixture
def harness(receiver: WebhookReceiver, session: aiohttp.ClientSession) -> Harness:
    return Harness(MemoryBus(6), receiver, session)


async def until(check: Callable[[], Any], what: str, timeout_s: float = 30.0) -> None:
    """Wait for a condition (a guard against a stuck sender, not a speed limit)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def in_order(messages: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in messages:
        out.setdefault(m["account_id"], []).append(m["id"])
    return out


def received_in_order(receiver: WebhookReceiver) -> dict[str, list[str]]:
    return {account: [d.id for d in ds] for account, ds in receiver.once_each().items()}


async def test_every_message_once_in_order_signed_and_committed(harness: Harness):
    messages = feed_messages()
    await publish(harness.bus, messages)
    async with harness.sender():
        await until(lambda: len(harness.receiver.accepted()) >= len(messages), "every message")
        await until(lambda: harness.committed_to_the_end("feed.crm"), "offsets committed")
    r = harness.receiver
    assert r.rejected == []
    assert len(r.accepted()) == len(messages)                     # once each: nothing failed, nothing resent
    assert received_in_order(r) == in_order(messages)
    by_id = {m["id"]: m for m in messages}
    for d in r.accepted():
        assert d.message == by_id[d.id]                           # the record's value, as is
        assert abs(d.timestamp - time.time()) < 300               # the attempt's time, not the event's
    assert harness.sample("churnsignal_feed_deliveries_total", subscriber="crm", outcome="delivered") == len(messages)


async def test_5xx_and_429_are_retried_with_the_same_webhook_id(harness: Harness):
    messages = feed_messages()
    harness.receiver.fail_next(6, 500)
    harness.receiver.fail_next(2, 503, {"Retry-After": "0"})
    harness.receiver.fail_next(2, 429, {"Retry-After": "0"})
    await publish(harness.bus, messages)
    async with harness.sender():
        await until(lambda: sum(map(len, harness.receiver.once_each().values())) >= len(messages), "every message")
        await until(lambda: harness.committed_to_the_end("feed.crm"), "offsets committed")
    r = harness.receiver
    failed = [d.id for d, status in zip(r.deliveries(), r.answered, strict=True) if status >= 400]
    assert len(failed) == 10
    accepted = [d.id for d in r.accepted()]
    assert all(i in accepted for i in failed)                    # each failed attempt retried under its id
    assert len(accepted) == len(messages)
    assert received_in_order(r) == in_order(messages)
    assert harness.sample("churnsignal_feed_retries_total", subscriber="crm") == 10
    assert harness.sample("churnsignal_dead_letters_total", service="alerts", reason="feed_rejected") == 0


async def test_a_4xx_goes_to_the_dead_letters_and_the_rest_goes_on(harness: Harness,
                                                                   caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO)
    messages = feed_messages()
    harness.receiver.refuse_account("acct-3", 400)
    harness.receiver.refuse_account("acct-7", 410)
    await publish(harness.bus, messages)
    async with harness.sender():
        await until(lambda: harness.committed_to_the_end("feed.crm"), "offsets committed")
    r = harness.receiver
    refused = [m for m in messages if m["account_id"] in ("acct-3", "acct-7")]
    kept = [m for m in messages if m not in refused]
    assert received_in_order(r) == in_order(kept)
    assert len(r.deliveries()) == len(messages)                  # a 4xx is never retried
    dead = [json.loads(x.value) for x in harness.bus.records(TOPICS.deadletter)]
    assert sorted(json.loads(d["value"])["id"] for d in dead) == sorted(m["id"] for m in refused)
    for d in dead:
        assert d["service"] == "alerts" and d["source_topic"] == TOPICS.health
        assert d["reason"].startswith("feed subscriber crm: HTTP 4")
    assert harness.sample("churnsignal_dead_letters_total", service="alerts", reason="feed_rejected") == len(refused)
    assert harness.sample("churnsignal_feed_deliveries_total", subscriber="crm", outcome="dead_letter") == len(refused)
    said = caplog.text + json.dumps(dead)
    assert "s3cr3t-url-token" not in said and r.secret not in said and r.secret[6:] not in said


async def test_a_message_still_failing_at_its_deadline_is_dead_lettered(harness: Harness):
    messages = [m for m in feed_messages() if m["account_id"] in ("acct-1", "acct-2")]
    harness.receiver.refuse_account("acct-2", 503)
    await publish(harness.bus, messages)
    options = SenderOptions(poll_ms=20, retry_initial_s=0.01, retry_max_s=0.02, retry_deadline_s=0.1)
    async with harness.sender(options=options):
        await until(lambda: harness.committed_to_the_end("feed.crm"), "offsets committed")
    dead = [json.loads(x.value) for x in harness.bus.records(TOPICS.deadletter)]
    assert sorted(json.loads(d["value"])["id"] for d in dead) == [m["id"] for m in messages
                                                                   if m["account_id"] == "acct-2"]
    assert all("HTTP 503" in d["reason"] and "still failing after" in d["reason"] for d in dead)
    assert harness.sample("churnsignal_dead_letters_total", service="alerts", reason="feed_gave_up") == PER_ACCOUNT
    assert received_in_order(harness.receiver)["acct-1"] == [m["id"] for m in messages if m["account_id"] == "acct-1"]


async def test_only_the_types_a_subscriber_asked_for(harness: Harness):
    messages = feed_messages()
    await publish(harness.bus, messages)
    async with harness.sender(harness.endpoint("risks", families=("risk.",))):
        await until(lambda: harness.committed_to_the_end("feed.risks"), "offsets committed")
    risks = [m for m in messages if m["type"].startswith("risk.")]
    assert received_in_order(harness.receiver) == in_order(risks)
    assert harness.sample("churnsignal_feed_deliveries_total", subscriber="risks",
                          outcome="filtered") == len(messages) - len(risks)


async def test_a_record_that_is_no_feed_message_is_dead_lettered(harness: Harness):
    await publish(harness.bus, [b"not json", b'{"id": "x"}'], key=b"acct-1")
    await publish(harness.bus, feed_messages()[:3])
    async with harness.sender():
        await until(lambda: harness.committed_to_the_end("feed.crm"), "offsets committed")
    dead = [json.loads(x.value) for x in harness.bus.records(TOPICS.deadletter)]
    assert [d["reason"] for d in dead] == ["feed subscriber crm: not a health feed message"] * 2
    assert len(harness.receiver.accepted()) == 3
    assert harness.sample("churnsignal_dead_letters_total", service="alerts",
                          reason="feed_invalid_message") == 2


async def test_a_stopped_sender_is_followed_by_one_that_sends_the_rest_once_in_order(harness: Harness):
    messages = feed_messages()
    await publish(harness.bus, messages)
    harness.receiver.delay_s = 0.02       # a slow receiver: the stop finds deliveries in flight
    async with harness.sender():
        await until(lambda: len(harness.receiver.accepted()) >= len(messages) // 3, "a third of the messages")
    first = len(harness.receiver.accepted())
    assert first < len(messages)
    harness.receiver.delay_s = 0.0
    async with harness.sender():
        await until(lambda: harness.committed_to_the_end("feed.crm"), "offsets committed")
    r = harness.receiver
    assert r.rejected == []
    assert received_in_order(r) == in_order(messages)           # deduplicated by webhook-id: once, in order
    assert {d.id for d in r.accepted()} == {m["id"] for m in messages}
