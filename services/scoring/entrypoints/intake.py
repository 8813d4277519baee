"""The scoring consumer's intake: fetched records -> the owned partitions' feeds -> entries in merge order.

Records are decoded into their partition's feed (bad ones become entries carrying a reason, for the dead
letters); the feeds merge the input topics in event-time order (feed.py states the rule), which needs each
topic-partition's end offset; topic-partitions whose queue outgrows its share are paused at the fetcher
(back-pressure: the merge never goes on without a lagging topic, so this is what bounds memory).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence

from services.scoring.entrypoints.feed import Entry
from services.scoring.entrypoints.options import ConsumerOptions
from services.scoring.entrypoints.partitions import SERVICE, OwnedPartition
from shared.bus.port import Record, Subscriber, TopicPartition
from shared.codec import BadRecord, decode_input
from shared.metrics import ScoringMetrics

log = logging.getLogger(__name__)


class Intake:
    """Feeds the owned partitions (shared with the consumer, which loads and drops them)."""

    def __init__(self, *, owned: dict[int, OwnedPartition], inputs: Sequence[str], options: ConsumerOptions,
                 metrics: ScoringMetrics) -> None:
        self._owned = owned
        self._inputs = tuple(inputs)
        self._opt = options
        self._metrics = metrics
        self._paused: set[TopicPartition] = set()   # paused at the fetcher by back-pressure
        self._ends_at = 0.0                         # time.monotonic() of the next ask for every end

    # -- records -> feeds ---------------------------------------------------------------------
    def accept(self, records: list[Record]) -> None:
        """Decode fetched records into their feeds; records of partitions not owned (or not expected by
        their feed, e.g. fetched before a seek) are left out."""
        now, wall = time.monotonic(), time.time()
        for record in records:
            owned = self._owned.get(record.partition)
            if owned is None or record.topic not in owned.feed.fetched or not owned.feed.accepts(record):
                continue
            try:
                event = decode_input(record.value)
            except BadRecord as exc:
                owned.feed.add(Entry(record, None, exc.reason), now, wall)
                continue
            if record.key != event.account_id.encode():
                shown = record.key.decode(errors="replace") if record.key is not None else None
                owned.feed.add(Entry(record, None, f"record key {shown!r} is not the account_id "
                                                   f"{event.account_id!r}"), now, wall)
                continue
            owned.feed.add(Entry(record, event), now, wall)

    def apply_backpressure(self, subscriber: Subscriber) -> None:
        """Pause fetching topic-partitions whose queue outgrew its share of `max_buffered`; resume those
        drained to half of it. (The merge never skips a lagging topic, so this is what bounds memory.)"""
        share = max(1000, self._opt.max_buffered // max(1, len(self._owned) * len(self._inputs)))
        pause: list[TopicPartition] = []
        resume: list[TopicPartition] = []
        for n, owned in self._owned.items():
            for topic in self._inputs:
                tp = TopicPartition(topic, n)
                queued = owned.feed.queued(topic)
                if tp in self._paused:
                    if queued <= share // 2:
                        resume.append(tp)
                elif queued > share:
                    pause.append(tp)
        if pause:
            subscriber.pause(pause)
            self._paused.update(pause)
        if resume:
            subscriber.resume(resume)
            self._paused.difference_update(resume)
        if pause or resume:
            self._metrics.paused_partitions.set(len(self._paused))

    def release(self, numbers: set[int]) -> None:
        """Partition numbers revoked or assigned anew: their pauses are the fetcher's past."""
        self._paused = {tp for tp in self._paused if tp.partition not in numbers}

    # -- feeds -> entries ------------------------------------------------------------------------
    def select(self) -> list[Entry]:
        """Up to max_batch entries in merge order, across the owned partitions."""
        limit = self._opt.max_batch
        out: list[Entry] = []
        now = time.monotonic()
        for owned in self._owned.values():
            feed = owned.feed
            while len(out) < limit:
                entry = feed.pop(now)
                if entry is None:
                    break
                out.append(entry)
            if feed.idle:
                log.warning("partition %d: the end of %s could not be read for %.0fs; going on without "
                            "waiting for it", owned.number, ", ".join(sorted(feed.idle)),
                            self._opt.idle_timeout_s)
                self._metrics.idle_topics.inc(len(feed.idle))
                feed.idle.clear()
            self._report_blocked(owned, now)
            if len(out) >= limit:
                break
        return out

    def _report_blocked(self, owned: OwnedPartition, now: float) -> None:
        feed = owned.feed
        if not (feed.buffered and feed.blocked_on()):
            owned.blocked_since = None
            return
        if owned.blocked_since is None:
            owned.blocked_since = owned.blocked_reported = now
        elif now - owned.blocked_reported >= self._opt.blocked_report_s:
            owned.blocked_reported = now
            log.warning("partition %d: waiting %.0fs for %s to deliver (records exist past what was fetched)",
                        owned.number, now - owned.blocked_since, ", ".join(feed.blocked_on()))

    # -- end offsets -------------------------------------------------------------------------------
    def ask_ends_soon(self) -> None:
        """Newly loaded partitions: ask the broker for every end at the next refresh."""
        self._ends_at = 0.0

    async def refresh_ends(self, subscriber: Subscriber, now: float) -> None:
        """The end of every owned topic-partition, for the merge and the lag metric (`now`: monotonic).

        The fetcher's high watermarks (known from each fetch answer, no request) are read every turn: they
        show where records exist. Every `ends_refresh_s` the broker is asked for all of them: those answers
        are fresh, and also feed the lag metric."""
        if not self._owned:
            return
        ask = now >= self._ends_at
        ends: dict[int, dict[str, int]] = {}
        for n in self._owned:
            for topic in self._inputs:
                end = subscriber.highwater(TopicPartition(topic, n))
                if end is not None:
                    ends.setdefault(n, {})[topic] = end
        for n, owned in self._owned.items():
            owned.feed.set_ends(ends.get(n, {}))
        if ask and await self._ask_ends(subscriber, [TopicPartition(topic, n) for n in self._owned
                                                     for topic in self._inputs]):
            lag: Counter[str] = Counter()
            for owned in self._owned.values():
                lag.update(owned.feed.lag())
            for topic in self._inputs:
                self._metrics.consumer_lag.labels(SERVICE, topic).set(lag.get(topic, 0))
        if ask:
            self._ends_at = now + self._opt.ends_refresh_s

    async def ask_wanted(self, subscriber: Subscriber) -> bool:
        """Ask the ends the feeds need before they can go on; whether any were wanted."""
        tps = [TopicPartition(topic, n) for n, owned in self._owned.items() for topic in owned.feed.wanted]
        if not tps:
            return False
        # Records produced a moment ago: let the publish that carried them settle first (bounded).
        after = max(owned.feed.ask_after for owned in self._owned.values() if owned.feed.wanted)
        wait = min(after - time.time(), self._opt.publish_settle_s)
        if wait > 0:
            await asyncio.sleep(wait)
        await self._ask_ends(subscriber, tps)
        return True

    async def _ask_ends(self, subscriber: Subscriber, tps: list[TopicPartition]) -> bool:
        """Ask the broker for the end offsets of `tps` (one request) and give them to the feeds as fresh."""
        if not tps:
            return True
        asked_at, asked_wall = time.monotonic(), time.time()
        try:
            answer = await subscriber.end_offsets(tps)
        except Exception as exc:  # the merge waits (or, past the idleness timeout, goes on): try again
            log.warning("could not read the end offsets (%s)", type(exc).__name__)
            return False
        by_number: dict[int, dict[str, int]] = {}
        for tp, end in answer.items():
            by_number.setdefault(tp.partition, {})[tp.topic] = end
        for n, ends in by_number.items():
            owned = self._owned.get(n)
            if owned is not None:
                owned.feed.confirm_ends(ends, asked_at, asked_wall)
        return True
