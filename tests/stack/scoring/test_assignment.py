"""Consumers of one group get the same partition numbers of every input topic (co-partitioning), so
each account's state has exactly one owner whatever the number of scoring processes."""

from __future__ import annotations

import asyncio
import time

from shared.bus.port import Subscriber
from tests.stack.scoring.harness import Stack


async def _settled(subscribers: list[Subscriber], expected: int) -> list[set]:
    deadline = time.monotonic() + 120
    while True:
        for s in subscribers:  # Kafka assigns while the members poll
            await s.getmany(timeout_ms=100)
        owned = [s.assignment() for s in subscribers]
        if sum(len(o) for o in owned) == expected and all(owned):
            return owned
        assert time.monotonic() < deadline, f"assignment did not settle: {owned}"
        await asyncio.sleep(0.1)


async def test_each_member_owns_whole_partition_numbers(stack: Stack):
    topics = stack.topics.inputs
    group = stack.settings.scoring_group_id
    subscribers = [stack.bus.subscriber(topics, group) for _ in range(4)]
    try:
        for s in subscribers:
            await s.start()
        owned = await _settled(subscribers, expected=len(topics) * 6)
        numbers = []
        for tps in owned:
            by_topic = {topic: {tp.partition for tp in tps if tp.topic == topic} for topic in topics}
            first = by_topic[topics[0]]
            assert all(parts == first for parts in by_topic.values()), by_topic
            numbers.append(first)
        assert sorted(n for member in numbers for n in member) == list(range(6))
    finally:
        for s in subscribers:
            await s.stop()
