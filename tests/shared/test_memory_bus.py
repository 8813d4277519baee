"""The in-process bus keeps Kafka's semantics: keyed partitions, committed positions, at-least-once."""

from __future__ import annotations

from shared.bus.memory import MemoryBus
from shared.bus.port import OutMessage, TopicPartition, partition_for


async def test_same_key_same_partition_across_topics():
    bus = MemoryBus(6)
    pub = bus.publisher()
    await pub.publish([OutMessage("a", b"acct-1", b"1"), OutMessage("b", b"acct-1", b"2")])
    (ra,), (rb,) = bus.records("a"), bus.records("b")
    assert ra.partition == rb.partition == partition_for(b"acct-1", 6)


async def test_uncommitted_records_are_redelivered_to_the_next_consumer():
    bus = MemoryBus(2)
    await bus.publisher().publish([OutMessage("t", f"k{i}".encode(), b"v") for i in range(10)])
    first = bus.subscriber(["t"], "g")
    await first.start()
    got = await first.getmany(timeout_ms=10)
    assert len(got) == 10
    # commit only one partition
    tp = got[0].tp
    last = max(r.offset for r in got if r.tp == tp)
    await first.commit({tp: last + 1})
    await first.stop()
    second = bus.subscriber(["t"], "g")
    await second.start()
    again = await second.getmany(timeout_ms=10)
    assert {r.tp for r in again} == {TopicPartition("t", p) for p in range(2)} - {tp}
    assert len(again) == 10 - sum(1 for r in got if r.tp == tp)
    await second.stop()


async def test_partitions_are_shared_in_a_group():
    bus = MemoryBus(4)
    await bus.ensure_topics(["t"], 4)
    c1, c2 = bus.subscriber(["t"], "g"), bus.subscriber(["t"], "g")
    await c1.start()
    await c2.start()
    assert c1.assignment().isdisjoint(c2.assignment())
    assert len(c1.assignment() | c2.assignment()) == 4
