"""The publisher ingest relies on: concurrent publishes each return only once all their messages are
acknowledged, keyed messages keep their partition and order, and a stopped publisher refuses."""

from __future__ import annotations

import asyncio

import pytest

from shared.bus.port import Bus, OutMessage, partition_for
from shared.errors import BusUnavailable
from shared.topics import Topics
from tests.stack.ingest.conftest import read_topics


async def test_concurrent_publishes_all_land_once_on_their_key_partition(bus: Bus, topic_prefix: str):
    topics = Topics(topic_prefix)
    publisher = bus.publisher()
    await publisher.start()
    try:
        calls = [[OutMessage(topics.usage if i % 3 else topics.tickets, f"acct-{i % 17}".encode(),
                             f"{c}:{i}".encode()) for i in range(1 + c * 7)] for c in range(40)]
        await asyncio.gather(*(publisher.publish(messages) for messages in calls))
    finally:
        await publisher.stop()
    records = await read_topics(bus, [topics.usage, topics.tickets])
    assert sorted(r.value for r in records) == sorted(m.value for messages in calls for m in messages)
    for r in records:
        assert r.key is not None and r.partition == partition_for(r.key, 6)


async def test_one_key_keeps_its_order_across_many_full_batches(bus: Bus, topic_prefix: str):
    topic = Topics(topic_prefix).usage
    publisher = bus.publisher()
    await publisher.start()
    try:
        filler = b"x" * 900
        # ~1.8 MB for one partition: several producer batches, sent by two concurrent calls
        first = [OutMessage(topic, b"acme", b"a%05d" % i + filler) for i in range(1000)]
        second = [OutMessage(topic, b"acme", b"b%05d" % i + filler) for i in range(1000)]
        await asyncio.gather(publisher.publish(first), publisher.publish(second))
    finally:
        await publisher.stop()
    records = sorted(await read_topics(bus, [topic]), key=lambda r: r.offset)
    assert len(records) == 2000
    for prefix in (b"a", b"b"):
        mine = [r.value[:6] for r in records if r.value.startswith(prefix)]
        assert mine == [prefix + b"%05d" % i for i in range(1000)]


async def test_a_stopped_publisher_refuses_with_bus_unavailable(bus: Bus, topic_prefix: str):
    from shared.bus.memory import MemoryBus

    if isinstance(bus, MemoryBus):
        pytest.skip("the in-process publisher has no connection to lose")
    publisher = bus.publisher()
    await publisher.start()
    await publisher.stop()
    with pytest.raises(BusUnavailable):
        await publisher.publish([OutMessage(Topics(topic_prefix).usage, b"k", b"v")])
