"""The Bus port: what services need from a log-structured message bus.

Semantics every adapter keeps (the in-process one included):
- topics have a fixed number of partitions; a record's partition is chosen from its key, the same
  way for every topic, so topics with equal partition counts are co-partitioned;
- `Publisher.publish` returns only once every message is durably accepted, or raises BusUnavailable;
- consumers in a group share partitions; delivery is at-least-once: positions move only on `commit`,
  and a consumer that (re)joins starts from the group's committed position, or from where a
  `RebalanceListener.on_assigned` seeks it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True, order=True)
class TopicPartition:
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class OutMessage:
    topic: str
    key: bytes | None
    value: bytes


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


class Publisher(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        """Send all messages and wait until every one is acknowledged. Raises BusUnavailable."""
        ...

    async def ready(self) -> bool:
        """True when the bus can accept messages now."""
        ...


class RebalanceListener(Protocol):
    async def on_revoked(self, partitions: set[TopicPartition]) -> None: ...

    async def on_assigned(self, partitions: set[TopicPartition], consumer: Subscriber) -> None: ...


class Subscriber(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def getmany(self, timeout_ms: int = 1000, max_records: int | None = None) -> list[Record]:
        """Next records of the assigned partitions, in offset order within each partition."""
        ...

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit positions: each value is the offset of the next record to read."""
        ...

    def seek(self, tp: TopicPartition, offset: int) -> None: ...

    def assignment(self) -> set[TopicPartition]: ...

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        """Stop fetching these assigned partitions (records already fetched may be fetched again)."""
        ...

    def resume(self, partitions: Iterable[TopicPartition]) -> None: ...

    async def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]: ...

    def highwater(self, tp: TopicPartition) -> int | None:
        """The partition's end offset as of the last fetch (no request); None until one answered."""
        ...

    async def committed(self, tp: TopicPartition) -> int | None: ...


class Bus(Protocol):
    """Factory of publishers and subscribers on one bus."""

    def publisher(self) -> Publisher: ...

    def subscriber(self, topics: Sequence[str], group_id: str,
                   listener: RebalanceListener | None = None) -> Subscriber: ...

    async def ensure_topics(self, topics: Sequence[str], partitions: int,
                            configs: Mapping[str, Mapping[str, str]] | None = None) -> None:
        """Create the missing topics with `partitions` partitions; `configs` (topic name -> topic configs,
        e.g. `cleanup.policy`) also applies to those of `topics` that exist already."""
        ...

    async def close(self) -> None: ...


def partition_for(key: bytes | None, partitions: int) -> int:
    """Kafka's default partitioner (murmur2 of the key, positive, modulo the partition count)."""
    if key is None:
        return 0
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def murmur2(data: bytes) -> int:
    length = len(data)
    seed = 0x9747B28C
    m = 0x5BD1E995
    r = 24
    h = (seed ^ length) & 0xFFFFFFFF
    length4 = length // 4
    for i in range(length4):
        i4 = i * 4
        k = (data[i4] & 0xFF) + ((data[i4 + 1] & 0xFF) << 8) + ((data[i4 + 2] & 0xFF) << 16) + (
            (data[i4 + 3] & 0xFF) << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= (k % 0x100000000) >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    extra = length % 4
    if extra >= 3:
        h ^= (data[(length & ~3) + 2] & 0xFF) << 16
    if extra >= 2:
        h ^= (data[(length & ~3) + 1] & 0xFF) << 8
    if extra >= 1:
        h ^= data[length & ~3] & 0xFF
        h = (h * m) & 0xFFFFFFFF
    h ^= (h % 0x100000000) >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= (h % 0x100000000) >> 15
    return h
