"""In-process bus with Kafka's semantics, for `churnsignal run` and fast tests.

Keyed partitions (Kafka's partitioner), per-group committed positions, partitions shared among the
consumers of a group with revoke/assign callbacks, at-least-once: a consumer that stops without
committing leaves its records to be read again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from shared.bus.port import (
    OutMessage,
    RebalanceListener,
    Record,
    TopicPartition,
    partition_for,
)
from shared.errors import BusUnavailable


@dataclass
class _Topic:
    partitions: list[list[Record]]


@dataclass
class _Group:
    members: list[MemorySubscriber] = field(default_factory=list)
    committed: dict[TopicPartition, int] = field(default_factory=dict)


class MemoryBus:
    def __init__(self, default_partitions: int = 6) -> None:
        self.default_partitions = default_partitions
        self._topics: dict[str, _Topic] = {}
        self._groups: dict[str, _Group] = {}
        self._changed = asyncio.Condition()
        self.topic_configs: dict[str, dict[str, str]] = {}
        self.available = True  # tests flip this to simulate an outage

    # -- topics -----------------------------------------------------------------------------
    def _topic(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = _Topic([[] for _ in range(self.default_partitions)])
        return topic

    async def ensure_topics(self, topics: Sequence[str], partitions: int,
                            configs: Mapping[str, Mapping[str, str]] | None = None) -> None:
        for name in topics:
            if name not in self._topics:
                self._topics[name] = _Topic([[] for _ in range(partitions)])
            if configs and name in configs:
                # Kept for inspection only: the in-process log keeps every record (no compaction).
                self.topic_configs[name] = {**self.topic_configs.get(name, {}), **configs[name]}

    def records(self, topic: str) -> list[Record]:
        """Every record of a topic (test helper), partition by partition."""
        return [r for part in self._topic(topic).partitions for r in part]

    async def _append(self, messages: Sequence[OutMessage]) -> None:
        if not self.available:
            raise BusUnavailable("message bus unavailable")
        now = int(time.time() * 1000)
        for msg in messages:
            topic = self._topic(msg.topic)
            p = partition_for(msg.key, len(topic.partitions))
            log = topic.partitions[p]
            log.append(Record(msg.topic, p, len(log), msg.key, msg.value, now))
        async with self._changed:
            self._changed.notify_all()

    # -- groups -----------------------------------------------------------------------------
    def _partitions_of(self, topics: Sequence[str]) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t in topics for p in range(len(self._topic(t).partitions))]

    async def _rebalance(self, group_id: str) -> None:
        group = self._groups[group_id]
        for member in group.members:
            await member._revoke_all()
        members = list(group.members)
        for member in members:
            # Range assignment, like the Kafka adapter: per topic, contiguous partition ranges in member
            # order, so a member gets the same partition numbers of co-partitioned topics.
            mine: set[TopicPartition] = set()
            for topic in member.topics:
                sharing = [m for m in members if topic in m.topics]
                count = len(self._topic(topic).partitions)
                per, extra = divmod(count, len(sharing))
                k = sharing.index(member)
                start = k * per + min(k, extra)
                mine.update(TopicPartition(topic, p) for p in range(start, start + per + (k < extra)))
            await member._assign(mine)

    async def _join(self, member: MemorySubscriber) -> None:
        group = self._groups.setdefault(member.group_id, _Group())
        group.members.append(member)
        await self._rebalance(member.group_id)

    async def _leave(self, member: MemorySubscriber) -> None:
        group = self._groups[member.group_id]
        if member in group.members:
            group.members.remove(member)
            await member._revoke_all()
            await self._rebalance(member.group_id)

    # -- factory ----------------------------------------------------------------------------
    def publisher(self) -> MemoryPublisher:
        return MemoryPublisher(self)

    def subscriber(self, topics: Sequence[str], group_id: str,
                   listener: RebalanceListener | None = None) -> MemorySubscriber:
        return MemorySubscriber(self, tuple(topics), group_id, listener)

    async def close(self) -> None:
        return None


class MemoryPublisher:
    def __init__(self, bus: MemoryBus) -> None:
        self._bus = bus

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        await self._bus._append(messages)

    async def ready(self) -> bool:
        return self._bus.available


class MemorySubscriber:
    def __init__(self, bus: MemoryBus, topics: tuple[str, ...], group_id: str,
                 listener: RebalanceListener | None) -> None:
        self._bus = bus
        self.topics = topics
        self.group_id = group_id
        self._listener = listener
        self._positions: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._started = False

    async def start(self) -> None:
        self._started = True
        await self._bus._join(self)

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._bus._leave(self)

    async def _revoke_all(self) -> None:
        if self._positions:
            revoked = set(self._positions)
            self._positions.clear()
            if self._listener is not None:
                await self._listener.on_revoked(revoked)

    async def _assign(self, partitions: set[TopicPartition]) -> None:
        committed = self._bus._groups[self.group_id].committed
        self._positions = {tp: committed.get(tp, 0) for tp in partitions}
        self._paused.clear()
        if self._listener is not None:
            await self._listener.on_assigned(set(partitions), self)

    def assignment(self) -> set[TopicPartition]:
        return set(self._positions)

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        self._paused |= set(partitions) & set(self._positions)

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        self._paused -= set(partitions)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if tp not in self._positions:
            raise ValueError(f"{tp} is not assigned to this consumer")
        self._positions[tp] = offset

    def _available(self, max_records: int | None) -> list[Record]:
        out: list[Record] = []
        for tp, pos in self._positions.items():
            if tp in self._paused:
                continue
            log = self._bus._topic(tp.topic).partitions[tp.partition]
            if pos < len(log):
                room = None if max_records is None else max_records - len(out)
                if room is not None and room <= 0:
                    break
                chunk = log[pos:] if room is None else log[pos:pos + room]
                out.extend(chunk)
                self._positions[tp] = pos + len(chunk)
        return out

    async def getmany(self, timeout_ms: int = 1000, max_records: int | None = None) -> list[Record]:
        records = self._available(max_records)
        if records or timeout_ms <= 0:
            return records
        cond = self._bus._changed
        try:
            async with cond:
                await asyncio.wait_for(cond.wait(), timeout_ms / 1000)
        except TimeoutError:
            return []
        return self._available(max_records)

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        committed = self._bus._groups[self.group_id].committed
        for tp, offset in offsets.items():
            committed[tp] = offset

    async def committed(self, tp: TopicPartition) -> int | None:
        group = self._bus._groups.get(self.group_id)
        return None if group is None else group.committed.get(tp)

    async def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self._end(tp) for tp in partitions}

    def highwater(self, tp: TopicPartition) -> int | None:
        return self._end(tp)

    def _end(self, tp: TopicPartition) -> int:
        return len(self._bus._topic(tp.topic).partitions[tp.partition])
