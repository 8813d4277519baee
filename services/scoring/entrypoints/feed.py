"""The deterministic merge of one partition number's input topics.

The four input topics are co-partitioned: everything about an account lands on the same partition
number of each topic. Records of one topic-partition are taken in offset order; across the topics, the
next record is the one with the smallest (occurred_at, topic, offset) among the heads of the four
queues, and a head is taken only while every other topic either has a buffered record or has been read
to its end. The order in which an account's events are applied therefore depends only on the logs, not
on how fetches happened to be batched: a replay, a restart after a crash or a rebalance apply the same
events in the same order and reach the same state and the same risk events.

When a topic lags behind (its records exist but have not been fetched yet) the merge waits for them;
`force` lifts that wait (used when the buffer grows too large or the wait lasts too long).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from shared.bus.port import Record, TopicPartition
from shared.events import Event


@dataclass(slots=True)
class Entry:
    """One input record: decoded into an event, or bad (with the reason for the dead letter)."""

    record: Record
    event: Event | None
    reason: str | None = None
    key: tuple[datetime, str, int] | None = None  # merge order, set when buffered

    @property
    def tp(self) -> TopicPartition:
        return self.record.tp


class PartitionFeed:
    def __init__(self, partition: int, topics: Iterable[str], positions: dict[str, int]) -> None:
        self.partition = partition
        self.topics = tuple(sorted(topics))
        self._queues: dict[str, deque[Entry]] = {tp: deque() for tp in self.topics}
        # Next offset expected from the fetcher, and the next offset to process, per topic.
        self.fetched: dict[str, int] = {tp: positions.get(tp, 0) for tp in self.topics}
        self.processed: dict[str, int] = dict(self.fetched)
        self.ends: dict[str, int] = {}
        self.buffered = 0

    def accepts(self, record: Record) -> bool:
        """False for a record already buffered or processed (fetched again after a seek)."""
        return record.offset >= self.fetched[record.topic]

    def add(self, entry: Entry) -> None:
        rec = entry.record
        if entry.event is not None:
            entry.key = (entry.event.occurred_at, rec.topic, rec.offset)
        self._queues[rec.topic].append(entry)
        self.fetched[rec.topic] = rec.offset + 1
        self.buffered += 1

    def set_ends(self, ends: dict[str, int]) -> None:
        self.ends.update(ends)

    def blocked_on(self) -> list[str]:
        """Topics with nothing buffered although records exist past what was fetched."""
        return [tp for tp, q in self._queues.items() if not q and self.fetched[tp] < self.ends.get(tp, 0)]

    def lag(self) -> dict[str, int]:
        return {tp: max(0, self.ends.get(tp, 0) - self.processed[tp]) for tp in self.topics}

    def pop(self, force: bool = False) -> Entry | None:
        """The next entry in merge order, or None when empty or waiting for a lagging topic."""
        best: Entry | None = None
        best_key: tuple[datetime, str, int] | None = None
        for topic, queue in self._queues.items():
            if not queue:
                if not force and self.fetched[topic] < self.ends.get(topic, 0):
                    return None
                continue
            head = queue[0]
            key = head.key
            if key is None:  # a bad record changes no state: let it through at once
                best = head
                break
            if best_key is None or key < best_key:
                best, best_key = head, key
        if best is None:
            return None
        self._queues[best.record.topic].popleft()
        self.buffered -= 1
        self.processed[best.record.topic] = best.record.offset + 1
        return best
