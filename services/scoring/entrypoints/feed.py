"""The merge of one partition number's input topics, and with it the partition's event-time clock.

The input topics are co-partitioned: everything about an account lands on the same partition number of
each topic. Records of one topic-partition are taken in offset order; across the topics, the next record
is the one with the smallest (occurred_at, topic, offset) among the heads of the topics' queues.

The rule. A head is taken only when every other input topic of the partition has *delivered* everything
before it. A topic has delivered when one of these holds:
  1. it has a record buffered here (its head comes later in the merge order, so everything the topic
     holds before that head has been taken already);
  2. it is caught up to an end offset known to be fresh: everything fetched up to an end offset that was
     asked of the broker after the head being taken was fetched, and at least `settle_s` after the head
     was produced (its record timestamp, or when it was fetched if the producer's clock is ahead). An end
     remembered from an older fetch does not count: records may have arrived since. The settling time
     covers one publish that spans several topics: Kafka appends its partition batches in no fixed order,
     so a record of one topic can be readable a moment before an earlier one of another topic sent in the
     same publish (0.1 s on Kafka; none on the in-process bus, which appends a publish at once). When no
     such answer is at hand, the feed says which topics it needs asked (`wanted`, and from when:
     `ask_after`), and the consumer asks the broker for all of them in one request;
  3. it is idle: the broker could not say where its end is (no fresh answer and no record) for
     `idle_timeout_s` of processing time, the one setting of this rule (`CHURNSIGNAL_SCORING_IDLE_TIMEOUT_S`,
     30 s by default), in the spirit of Flink's source idleness. A topic with records known to exist past
     what was fetched is never idle: it is lagging, and the merge waits for it.

Events reach the partition clock (clock.py) only in this order, so the clock's watermark, and with it
the silence timers and daily ticks of the partition's accounts, never passes a moment before every
input topic has delivered everything before that moment. A lagging topic (a usage backlog after an
outage, a redeploy or a rebalance, while tickets and account changes are small and current) holds the
clock back; tickets and clock ticks cannot race ahead of it. The order in which an account's events are
applied therefore depends only on the logs, not on how fetches were batched or how the topics arrived:
a backfill, live arrival, a catch-up after downtime, a restart after a crash or a rebalance apply the
same events in the same order and raise the same risks.

The merge never goes on without a lagging topic. Memory stays bounded by back-pressure instead: the
consumer pauses fetching a topic-partition whose queue here is long (see `queued`) until it drains.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from shared.bus.port import Record, TopicPartition
from shared.events import Event

DEFAULT_IDLE_TIMEOUT_S = 30.0


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
    def __init__(self, partition: int, topics: Iterable[str], positions: dict[str, int], *,
                 idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S, settle_s: float = 0.0, now: float = 0.0) -> None:
        self.partition = partition
        self.topics = tuple(sorted(topics))
        self.idle_timeout_s = idle_timeout_s
        self.settle_s = settle_s
        self._queues: dict[str, deque[Entry]] = {tp: deque() for tp in self.topics}
        # Next offset expected from the fetcher, and the next offset to process, per topic.
        self.fetched: dict[str, int] = {tp: positions.get(tp, 0) for tp in self.topics}
        self.processed: dict[str, int] = dict(self.fetched)
        self.ends: dict[str, int] = {}
        self.buffered = 0
        # Processing times (the caller's monotonic clock): when each topic's latest record was added,
        # when its end was last asked (fresh), and when it was last heard of (a record or a fresh end).
        self._added: dict[str, float] = dict.fromkeys(self.topics, -math.inf)
        self._asked: dict[str, float] = dict.fromkeys(self.topics, -math.inf)
        self._heard: dict[str, float] = dict.fromkeys(self.topics, now)
        # Wall-clock seconds: when the latest record of each topic was added, when its end was last asked.
        self._added_wall: dict[str, float] = dict.fromkeys(self.topics, -math.inf)
        self._asked_wall: dict[str, float] = dict.fromkeys(self.topics, -math.inf)
        self.wanted: set[str] = set()      # topics whose end must be asked before the merge can go on
        self.ask_after = -math.inf         # ... by a request sent at this wall-clock time or later
        self.idle: set[str] = set()        # topics newly passed as idle (for the caller's log and metric)
        self._idle_now: set[str] = set()

    def accepts(self, record: Record) -> bool:
        """False for a record already buffered or processed (fetched again after a seek)."""
        return record.offset >= self.fetched[record.topic]

    def add(self, entry: Entry, now: float, wall: float) -> None:
        """Buffer a fetched record; `now` is the caller's monotonic clock, `wall` the time of day (s)."""
        rec = entry.record
        if entry.event is not None:
            entry.key = (entry.event.occurred_at, rec.topic, rec.offset)
        topic = rec.topic
        self._queues[topic].append(entry)
        self.fetched[topic] = rec.offset + 1
        self._added[topic] = self._heard[topic] = now
        self._added_wall[topic] = wall
        self._idle_now.discard(topic)
        self.buffered += 1

    def set_ends(self, ends: dict[str, int]) -> None:
        """Ends as last seen by the fetcher: they show that records exist, never that none do."""
        for topic, end in ends.items():
            if end > self.ends.get(topic, -1):
                self.ends[topic] = end

    def confirm_ends(self, ends: dict[str, int], asked_at: float, asked_wall: float) -> None:
        """Ends the broker gave for a request sent at `asked_at` (monotonic) and `asked_wall`: fresh."""
        self.set_ends(ends)
        for topic in ends:
            self._asked[topic] = self._heard[topic] = asked_at
            self._asked_wall[topic] = asked_wall
            self.wanted.discard(topic)
            self._idle_now.discard(topic)

    def queued(self, topic: str) -> int:
        return len(self._queues[topic])

    def blocked_on(self) -> list[str]:
        """Topics with nothing buffered although records exist past what was fetched."""
        return [tp for tp, q in self._queues.items() if not q and self.fetched[tp] < self.ends.get(tp, 0)]

    def lag(self) -> dict[str, int]:
        return {tp: max(0, self.ends.get(tp, 0) - self.processed[tp]) for tp in self.topics}

    def pop(self, now: float) -> Entry | None:
        """The next entry in merge order, or None when empty or waiting for a topic to deliver."""
        best: Entry | None = None
        best_key: tuple[datetime, str, int] | None = None
        for queue in self._queues.values():
            if not queue:
                continue
            head = queue[0]
            key = head.key
            if key is None:  # a bad record changes no state: let it through at once
                best = head
                best_key = None
                break
            if best_key is None or key < best_key:
                best, best_key = head, key
        if best is None:
            return None
        topic = best.record.topic
        if best_key is not None:
            since = self._added[topic]
            settled = min(best.record.timestamp_ms / 1000, self._added_wall[topic]) + self.settle_s
            ready = True
            for other, queue in self._queues.items():
                if not queue and other != topic and not self._delivered(other, since, settled, now):
                    ready = False     # (all of them looked at: one request asks every wanted end)
            if not ready:
                return None
        self._queues[topic].popleft()
        self.buffered -= 1
        self.processed[topic] = best.record.offset + 1
        return best

    def _delivered(self, topic: str, since: float, settled: float, now: float) -> bool:
        """Whether an empty topic has delivered everything before a head fetched at `since` (monotonic)
        and settled at `settled` (wall clock)."""
        end = self.ends.get(topic)
        if end is not None and self.fetched[topic] < end:
            return False                      # lagging: its records are on their way
        if end is not None and self._asked[topic] >= since and self._asked_wall[topic] >= settled:
            return True                       # caught up to a fresh end
        if now - self._heard[topic] >= self.idle_timeout_s:
            if topic not in self._idle_now:
                self._idle_now.add(topic)
                self.idle.add(topic)
            return True                       # idle: the broker could not say, for too long
        if not self.wanted or settled > self.ask_after:
            self.ask_after = settled
        self.wanted.add(topic)
        return False
