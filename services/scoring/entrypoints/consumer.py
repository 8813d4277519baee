"""The scoring consumer: input topics -> per-account state, history, risks and risk events.

Per consumed batch (`getmany`), under one lock that rebalance callbacks also take:
  1. records are decoded into per-partition feeds (bad ones become dead letters) and merged in a
     deterministic order (see feed.py);
  2. event ids are checked against the processed set (one query), the new events are applied to the
     accounts' states and the partition clocks fire the timers of silent accounts;
  3. ONE database transaction commits the states, processed ids, history, risks, outbox rows, the
     positions and the watermarks; then the outbox is published to the risks topic; then the Kafka
     offsets are committed (advisory only: on assignment the consumer seeks to the positions stored
     in the database, which never lag behind the state).
Any retryable failure before the commit drops the in-memory state and reloads it from the database
(the same path as a new assignment), so nothing half-applied survives.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from services.scoring.adapters.errors import StoreUnavailable
from services.scoring.adapters.store import (
    AccountRow,
    BatchWrite,
    HealthColumns,
    HistoryRow,
    OutboxRow,
    RiskRow,
    ScoringStore,
)
from services.scoring.entrypoints.feed import DEFAULT_IDLE_TIMEOUT_S, Entry, PartitionFeed
from services.scoring.entrypoints.ports import Clock, Outcome, ScoringModel
from shared.backoff import Backoff
from shared.bus.port import Bus, OutMessage, Publisher, Record, Subscriber, TopicPartition
from shared.codec import BadRecord, dead_letter, decode_input, dumps
from shared.errors import BusUnavailable, RetryableFailure
from shared.events import Event
from shared.metrics import CommonMetrics, ScoringMetrics
from shared.risks import RISK_TYPES, HealthBrief, RiskEvent, Trigger
from shared.topics import Topics

log = logging.getLogger(__name__)

SERVICE = "scoring"


@dataclass(frozen=True)
class ConsumerOptions:
    group_id: str
    partitions: int = 6             # partitions of the topics, when this consumer has to create them
    max_batch: int = 5000
    allowed_lateness: timedelta = timedelta(hours=1)
    poll_timeout_ms: int = 200
    # Entries buffered (all partitions) that bound the merge's queues: a topic-partition whose queue
    # holds more than its share is paused at the fetcher until it drains to half (back-pressure; the
    # merge never goes on without a lagging topic).
    max_buffered: int = 200_000
    # How long a topic whose end the broker cannot tell may stay silent before the merge goes on
    # without it (feed.py states the rule).
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    # How long after a record was produced an empty topic's end must be asked to count as fresh: one
    # publish spanning several topics lands on Kafka in no fixed order (feed.py). 0 for a bus that
    # appends a publish at once (the in-process one).
    publish_settle_s: float = 0.1
    ends_refresh_s: float = 1.0
    # Kafka offsets follow the committed batches at most this often, and once more when idle.
    offsets_every_s: float = 0.5
    # A partition waiting this long for a lagging topic is reported (log), then again as often.
    blocked_report_s: float = 30.0
    recent_ids: int = 20_000
    # Decoded states of the accounts touched most recently, kept beside their encoded form so a busy
    # account is not decoded again for every batch (bounded: the encoded states are what scales).
    live_states: int = 5_000
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0
    # The open-risk and revenue gauges are read from the database this often.
    risk_gauge_refresh_s: float = 30.0


@dataclass
class _Owned:
    """A partition number this consumer owns: its accounts' encoded states, its clock and its feed."""

    number: int
    states: dict[str, bytes]
    clock: Clock
    feed: PartitionFeed
    blocked_since: float | None = None
    blocked_reported: float = 0.0
    # The decoded form of some of `states` (the most recently used), identical in content.
    live: OrderedDict[str, Any] = field(default_factory=OrderedDict)


@dataclass
class _Work:
    """What one batch is building before it commits."""

    states: dict[str, Any] = field(default_factory=dict)       # account -> decoded state
    partition_of: dict[str, int] = field(default_factory=dict)
    due: dict[str, datetime | None] = field(default_factory=dict)
    health: dict[str, HealthColumns] = field(default_factory=dict)
    risks: dict[str, RiskRow] = field(default_factory=dict)
    risk_counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    events: Counter[tuple[str, str]] = field(default_factory=Counter)
    dead: list[OutMessage] = field(default_factory=list)
    dead_reasons: Counter[str] = field(default_factory=Counter)
    latencies: list[datetime] = field(default_factory=list)  # received_at of the processed events


@dataclass(slots=True)
class _Built:
    """A batch applied in memory, ready for its transaction."""

    batch: BatchWrite
    work: _Work
    started: float       # perf_counter() when the batch was taken
    now: datetime


class _Poisoned(Exception):
    """The domain raised on one input: the batch is redone without it (it goes to the dead letters)."""


def _dead_letter_reason(reason: str) -> str:
    """A low-cardinality label for the metric (the record itself carries the full reason)."""
    if reason.startswith("not JSON"):
        return "not_json"
    if reason == "record has no value":
        return "no_value"
    if reason.startswith("record key"):
        return "key_mismatch"
    if reason.startswith("scoring failed"):
        return "scoring_error"
    return "schema"


class ScoringConsumer:
    """Consumer-group member over the input topics; also the rebalance listener of its subscriber."""

    def __init__(self, *, bus: Bus, store: ScoringStore, model: ScoringModel, topics: Topics,
                 options: ConsumerOptions, metrics: ScoringMetrics, common: CommonMetrics,
                 wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._bus = bus
        self._store = store
        self._model = model
        self._engine = model.engine
        self._topics = topics
        self._inputs = tuple(topics.inputs)
        self._opt = options
        self._metrics = metrics
        self._common = common
        self._now = wall_clock
        self._lock = asyncio.Lock()
        self._owned: dict[int, _Owned] = {}
        self._pending_load: set[int] = set()
        self._republish: set[int] = set()
        self._published: list[str] = []          # published outbox ids not yet marked in the database
        # Ids committed lately (two generations, each up to `recent_ids / 2`): redeliveries of recent
        # records are recognised without asking the database.
        self._recent: set[str] = set()
        self._recent_old: set[str] = set()
        self._poison: set[tuple[str, int, int]] = set()
        self._poison_timers: set[tuple[str, datetime]] = set()
        self._ends_at = 0.0
        self._offsets: dict[TopicPartition, int] = {}   # positions committed in the database, not yet in Kafka
        self._offsets_task: asyncio.Task[None] | None = None
        self._offsets_at = 0.0
        self._inflight: asyncio.Task[None] | None = None  # the commit of the last batch built
        self._paused: set[TopicPartition] = set()   # paused at the fetcher by back-pressure
        self._risk_gauge_at = 0.0
        self._backoff = Backoff(self._opt.backoff_initial_s, cap=self._opt.backoff_max_s, jitter=0.5)
        self._subscriber: Subscriber | None = None
        self._publisher: Publisher | None = None
        self._stopping = asyncio.Event()
        self._started = asyncio.Event()
        self._active = False
        self.batches = 0             # committed batches (observability for tests and the bench)
        self.committed_at = 0.0      # time.monotonic() of the last committed batch

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def owned_partitions(self) -> set[int]:
        return set(self._owned)

    @property
    def tracked_accounts(self) -> int:
        return self._tracked()

    @property
    def running(self) -> bool:
        """True while consuming (joined the group and not stopping)."""
        return self._active and not self._stopping.is_set()

    async def wait_started(self) -> None:
        await self._started.wait()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Consume until `stop()`. Retryable failures are retried with bounded backoff; others raise."""
        await self._bus.ensure_topics(self._topics.all, self._opt.partitions)
        publisher = self._bus.publisher()
        self._publisher = publisher
        await publisher.start()
        subscriber = self._bus.subscriber(self._inputs, self._opt.group_id, listener=self)
        self._subscriber = subscriber
        try:
            await subscriber.start()
            self._active = True
            self._started.set()
            log.info("scoring consumer started (group %s, topics %s)", self._opt.group_id,
                     ", ".join(self._inputs))
            while not self._stopping.is_set():
                try:
                    await self._step(subscriber)
                    self._backoff.reset()
                except (RetryableFailure, BusUnavailable) as exc:
                    delay = self._backoff.next()
                    log.warning("scoring batch not committed (%s: %s); retrying in %.2fs",
                                type(exc).__name__, exc.message, delay)
                    await self._sleep(delay)
        finally:
            self._active = False
            await self._settle_quietly()
            await self._flush_published()
            try:
                await self._drain_offsets(subscriber)
                await subscriber.stop()
            finally:
                await publisher.stop()
            log.info("scoring consumer stopped")

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return

    async def _step(self, subscriber: Subscriber) -> None:
        async with self._lock:
            await self._prepare(subscriber)
        records = await subscriber.getmany(timeout_ms=self._opt.poll_timeout_ms,
                                           max_records=self._opt.max_batch)
        async with self._lock:
            await self._prepare(subscriber)
            self._accept(records)
            self._apply_backpressure(subscriber)
        processed = 0
        # One batch per turn of the lock, so a rebalance waits for one batch, not for the whole buffer.
        while not self._stopping.is_set():
            async with self._lock:
                await self._prepare(subscriber)
                done = await self._next_batch(subscriber)
            if done is None:
                break
            processed += done
        if not processed:
            # Idle: let the last batch's commit land (its failure surfaces here), mark what it published,
            # and bring the group's Kafka offsets to the committed positions.
            async with self._lock:
                await self._settle()
            if self._published:
                await self._flush_published()
            await self._flush_offsets(subscriber)

    # -- rebalance listener --------------------------------------------------------------------
    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        async with self._lock:
            # The batch in flight lands before the partitions go: their next owner loads what it wrote.
            await self._settle_quietly()
            numbers = {tp.partition for tp in partitions if tp.topic in self._inputs}
            for n in numbers:
                self._owned.pop(n, None)
            self._paused = {tp for tp in self._paused if tp.partition not in numbers}
            self._pending_load -= numbers
            self._republish -= numbers
            if numbers:
                log.info("scoring partitions revoked: %s", sorted(numbers))
            self._metrics.tracked_accounts.set(self._tracked())

    async def on_assigned(self, partitions: set[TopicPartition], consumer: Subscriber) -> None:
        async with self._lock:
            await self._settle_quietly()
            self._subscriber = consumer
            by_number: dict[int, set[str]] = {}
            for tp in partitions:
                if tp.topic in self._inputs:
                    by_number.setdefault(tp.partition, set()).add(tp.topic)
            complete = {n for n, topics in by_number.items() if len(topics) == len(self._inputs)}
            for n in sorted(set(by_number) - complete):
                # Owning some but not all input topics of a partition would split accounts' state.
                log.error("partition %d assigned without all input topics (%s); not processing it",
                          n, sorted(by_number[n]))
            for n in complete:
                self._owned.pop(n, None)
            self._paused = {tp for tp in self._paused if tp.partition not in by_number}
            self._pending_load |= complete
            log.info("scoring partitions assigned: %s", sorted(complete))
            try:
                await self._load_pending(consumer)
            except StoreUnavailable as exc:
                log.warning("cannot load assigned partitions yet (%s); will retry", exc.message)

    # -- preparation: loads, republish, end offsets ----------------------------------------------
    async def _prepare(self, subscriber: Subscriber) -> None:
        if self._pending_load:
            await self._load_pending(subscriber)
        if self._republish:
            await self._republish_outbox()
        now = time.monotonic()
        if self._owned:
            await self._refresh_ends(subscriber, ask=now >= self._ends_at)
            if now >= self._ends_at:
                self._ends_at = now + self._opt.ends_refresh_s
        if now >= self._risk_gauge_at:
            self._risk_gauge_at = now + self._opt.risk_gauge_refresh_s
            counts = await self._store.open_risk_counts()
            for risk_type in RISK_TYPES:
                self._metrics.open_risks.labels(risk_type).set(counts.get(risk_type, 0))
            revenue = await self._store.revenue(self._now())
            self._metrics.set_revenue(revenue.at_risk, revenue.churned, revenue.retention)

    async def _load_pending(self, subscriber: Subscriber) -> None:
        numbers = set(self._pending_load)
        loads = await self._store.load_partitions(numbers, self._inputs)
        assigned = subscriber.assignment()
        for n, load in loads.items():
            positions = {topic: load.positions.get(topic, 0) for topic in self._inputs}
            clock = self._model.new_clock(self._opt.allowed_lateness, load.watermark)
            for account_id, due in load.timers:
                clock.schedule(account_id, due)
            feed = PartitionFeed(n, self._inputs, positions, idle_timeout_s=self._opt.idle_timeout_s,
                                 settle_s=self._opt.publish_settle_s, now=time.monotonic())
            self._owned[n] = _Owned(n, load.states, clock, feed)
            for topic, offset in positions.items():
                tp = TopicPartition(topic, n)
                if tp in assigned:
                    subscriber.seek(tp, offset)
        self._pending_load -= numbers
        self._republish |= numbers
        self._ends_at = 0.0
        self._metrics.tracked_accounts.set(self._tracked())

    async def _refresh_ends(self, subscriber: Subscriber, *, ask: bool) -> None:
        """The end of every owned topic-partition, for the merge and the lag metric.

        The fetcher's high watermarks (known from each fetch answer, no request) are read every turn: they
        show where records exist. Every `ends_refresh_s` (`ask`) the broker is asked for all of them: those
        answers are fresh, and also feed the lag metric."""
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

    async def _ask_wanted(self, subscriber: Subscriber) -> bool:
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

    async def _republish_outbox(self) -> None:
        numbers = self._republish & set(self._owned)
        rows = await self._store.unpublished(numbers)
        if rows:
            await self._publish_outbox(rows)
            log.info("re-published %d risk events left unpublished", len(rows))
        self._republish -= numbers

    async def _publish_outbox(self, rows: list[OutboxRow]) -> None:
        assert self._publisher is not None
        await self._publisher.publish(
            [OutMessage(self._topics.risks, row.key.encode(), row.payload) for row in rows])
        self._published.extend(row.event_id for row in rows)

    async def _flush_published(self) -> None:
        if not self._published:
            return
        ids, self._published = self._published, []
        try:
            await self._store.mark_published(ids, self._now())
        except StoreUnavailable as exc:
            # Harmless: they are published again at the next start and consumers dedup by event_id.
            log.warning("could not mark %d risk events as published (%s)", len(ids), exc.message)
            self._published = ids + self._published

    # -- intake -------------------------------------------------------------------------------
    def _accept(self, records: list[Record]) -> None:
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

    def _apply_backpressure(self, subscriber: Subscriber) -> None:
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

    def _select(self) -> list[Entry]:
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

    def _report_blocked(self, owned: _Owned, now: float) -> None:
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

    async def _next_batch(self, subscriber: Subscriber) -> int | None:
        """Build the next batch and start its commit; its size, or None when nothing is ready.

        Batches are pipelined: batch N+1 is built (decoded, applied to the in-memory states) while batch
        N's transaction and outbox publish are in flight; N+1's commit starts only once N's has landed, so
        commits, outbox publishes and offsets keep their order. Memory runs ahead of the database by at
        most the batch in flight; any failure forgets all of it and reloads from the database."""
        await self._ask_wanted(subscriber)
        entries = self._select()
        if not entries and await self._ask_wanted(subscriber):
            entries = self._select()
        self._apply_backpressure(subscriber)
        if not entries:
            return None
        try:
            built = await self._build(entries)
        except _Poisoned:
            # Redo from the committed state; the poisoned input is dead-lettered on the way.
            await self._forget_all()
            await self._load_pending(subscriber)
            return 0
        except BaseException:
            await self._forget_all()
            raise
        await self._settle()
        self._inflight = asyncio.create_task(self._commit(built, subscriber), name="scoring-commit")
        return len(entries)

    async def _settle(self) -> None:
        """Wait for the batch in flight to commit; if it failed, forget the in-memory work and raise."""
        task, self._inflight = self._inflight, None
        if task is None:
            return
        try:
            await task
        except BaseException:
            self._forget()
            raise

    async def _settle_quietly(self) -> None:
        try:
            await self._settle()
        except (RetryableFailure, BusUnavailable) as exc:
            log.warning("scoring batch not committed (%s: %s); redone from the database",
                        type(exc).__name__, exc.message)

    async def _forget_all(self) -> None:
        """After a failure: wait out the commit in flight (whatever its fate), then forget everything."""
        await self._settle_quietly()
        self._forget()

    def _forget(self) -> None:
        """Drop every owned partition's memory; they are reloaded from the database before going on."""
        self._pending_load |= set(self._owned)
        self._owned.clear()
        # Ids remembered from batches that may not have committed.
        self._recent.clear()
        self._recent_old.clear()

    def _tracked(self) -> int:
        return sum(len(o.states) for o in self._owned.values())

    # -- one batch -----------------------------------------------------------------------------
    async def _build(self, entries: list[Entry]) -> _Built:
        """Apply a batch to the in-memory states and gather everything its transaction writes."""
        started = time.perf_counter()
        now = self._now()
        batch = BatchWrite()
        work = _Work()
        seen_lately = self._seen_lately
        candidates = list(dict.fromkeys(e.event.id for e in entries
                                        if e.event is not None and not seen_lately(e.event.id)))
        seen = await self._store.already_processed(candidates)
        in_batch: set[str] = set()
        owned_by = self._owned
        apply = self._engine.apply
        poison = self._poison
        processed: Counter[str] = Counter()
        duplicates: Counter[str] = Counter()
        latencies = work.latencies
        for entry in entries:
            record = entry.record
            event = entry.event
            if event is None or (poison and (record.topic, record.partition, record.offset) in poison):
                reason = entry.reason or "scoring failed on this event"
                work.dead.append(OutMessage(self._topics.deadletter, record.key, dead_letter(
                    record.topic, record.partition, record.offset, reason, record.value, SERVICE)))
                work.events[("unknown" if event is None else event.type.value, "dead_letter")] += 1
                work.dead_reasons[_dead_letter_reason(reason)] += 1
                continue
            event_id = event.id
            if event_id in seen or event_id in in_batch or seen_lately(event_id):
                duplicates[event.type] += 1
                continue
            in_batch.add(event_id)
            owned = owned_by[record.partition]
            state = self._state(owned, event.account_id, work)
            try:
                outcome = apply(state, event)
            except Exception as exc:  # a domain failure on one event: dead-letter it, redo the batch
                log.exception("scoring failed on event %s (%s at offset %d)", event_id, record.topic,
                              record.offset)
                poison.add((record.topic, record.partition, record.offset))
                raise _Poisoned() from exc
            owned.clock.observe(event.occurred_at)
            self._record(work, batch, owned, event.account_id, state, outcome, event, now)
            self._fire_timers(work, batch, owned, now)
            processed[event.type] += 1
            if event.received_at is not None:
                latencies.append(event.received_at)
        batch.processed_ids = list(in_batch)
        for event_type, n in processed.items():
            work.events[(event_type.value, "processed")] += n
        for event_type, n in duplicates.items():
            work.events[(event_type.value, "duplicate")] += n
        # Positions: the feeds know how far this batch took each topic-partition.
        for n in {e.record.partition for e in entries}:
            owned = owned_by[n]
            batch.watermarks[n] = owned.clock.watermark
            for topic, offset in owned.feed.processed.items():
                batch.positions[TopicPartition(topic, n)] = offset
        encoded = {account: self._model.encode_state(state) for account, state in work.states.items()}
        revenue = self._model.revenue
        batch.accounts = [AccountRow(account, work.partition_of[account], raw, work.due.get(account),
                                     work.health.get(account), revenue(work.states[account]))
                          for account, raw in encoded.items()]
        batch.risks = list(work.risks.values())
        # Memory goes ahead of the database; `_forget` undoes it if this batch does not commit.
        for account, raw in encoded.items():
            owned = self._owned[work.partition_of[account]]
            owned.states[account] = raw
            owned.live[account] = work.states[account]
        self._trim_live()
        self._remember(in_batch)
        # Risk events published since the last batch are marked so in this one's transaction.
        batch.published, self._published = self._published, []
        return _Built(batch, work, started, now)

    async def _commit(self, built: _Built, subscriber: Subscriber) -> None:
        """Dead letters, then the batch transaction, then the outbox publish; offsets in the background."""
        batch, work = built.batch, built.work
        if work.dead:
            # Before the commit: a dead letter is never lost (at worst sent twice after a crash).
            assert self._publisher is not None
            await self._publisher.publish(work.dead)
        await self._store.write_batch(batch, built.now)
        self.batches += 1
        self.committed_at = time.monotonic()
        self._observe(work, built.started)
        if batch.outbox:
            try:
                await self._publish_outbox(batch.outbox)
            except BusUnavailable:
                # Committed but not sent: sent before anything else once the bus is back.
                self._republish |= {row.partition for row in batch.outbox}
                raise
        self._commit_offsets(subscriber, batch.positions)

    # -- Kafka offsets: advisory, committed in the background -----------------------------------
    def _commit_offsets(self, subscriber: Subscriber, positions: dict[TopicPartition, int]) -> None:
        """Queue committed positions for the group's offsets; one commit in flight at a time, at most
        every `offsets_every_s`. The database positions are the truth (a consumer seeks to them on
        assignment), so a late offset commit costs nothing but a less accurate lag in Kafka's tools."""
        self._offsets.update(positions)
        if self._offsets_task is not None and not self._offsets_task.done():
            return
        if time.monotonic() < self._offsets_at:
            return
        self._offsets_task = asyncio.create_task(self._send_offsets(subscriber))

    async def _send_offsets(self, subscriber: Subscriber) -> None:
        self._offsets_at = time.monotonic() + self._opt.offsets_every_s
        assigned = subscriber.assignment()
        offsets = {tp: off for tp, off in self._offsets.items() if tp in assigned}
        self._offsets.clear()
        try:
            await subscriber.commit(offsets)
        except Exception as exc:  # advisory only: positions live in the database
            log.warning("kafka offset commit failed (%s); positions are safe in the database",
                        type(exc).__name__)

    async def _flush_offsets(self, subscriber: Subscriber) -> None:
        """Send the positions not yet in Kafka now (when idle: the offsets reach the log end)."""
        if not self._offsets:
            return
        task = self._offsets_task
        if task is not None and not task.done():
            return    # the commit in flight is followed by this one at the next idle turn
        self._offsets_task = asyncio.create_task(self._send_offsets(subscriber))

    async def _drain_offsets(self, subscriber: Subscriber) -> None:
        task = self._offsets_task
        if task is not None:
            await task
        if self._offsets:
            await self._send_offsets(subscriber)

    def _state(self, owned: _Owned, account_id: str, work: _Work) -> Any:
        state = work.states.get(account_id)
        if state is None:
            state = owned.live.pop(account_id, None)
            if state is None:
                raw = owned.states.get(account_id)
                state = (self._model.decode_state(raw) if raw is not None
                         else self._engine.new_state(account_id))
            work.states[account_id] = state
            work.partition_of[account_id] = owned.number
        return state

    def _trim_live(self) -> None:
        per_partition = max(1, self._opt.live_states // max(1, len(self._owned)))
        for owned in self._owned.values():
            live = owned.live
            while len(live) > per_partition:
                live.popitem(last=False)

    def _fire_timers(self, work: _Work, batch: BatchWrite, owned: _Owned, now: datetime) -> None:
        for _ in range(1000):
            due = owned.clock.pop_due()
            if not due:
                return
            for at, account_id in due:
                if (account_id, at) in self._poison_timers:
                    continue
                state = self._state(owned, account_id, work)
                try:
                    outcome = self._engine.evaluate(state, at)
                except Exception as exc:  # a domain failure on a timer: skip that timer, redo the batch
                    log.exception("scoring failed evaluating account %s at %s", account_id, at.isoformat())
                    self._poison_timers.add((account_id, at))
                    self._common.dead_letters.labels(SERVICE, "scoring_error").inc()
                    raise _Poisoned() from exc
                self._record(work, batch, owned, account_id, state, outcome, None, now)
        log.error("partition %d: timers kept firing; left for the next event", owned.number)

    def _record(self, work: _Work, batch: BatchWrite, owned: _Owned, account_id: str, state: Any,
                outcome: Outcome, event: Event | None, now: datetime) -> None:
        owned.clock.schedule(account_id, outcome.next_due)
        work.due[account_id] = outcome.next_due
        snap = outcome.health
        if snap is not None:
            batch.history.append(HistoryRow(account_id, snap.as_of, snap.cause, snap.score, snap.tier,
                                            dumps(snap.to_dict()).decode()))
            work.health[account_id] = HealthColumns(snap.score, snap.tier, snap.as_of, snap.config_version)
        if not outcome.transitions:
            return
        brief = self._engine.account_brief(state)
        for tr in outcome.transitions:
            event_id = f"{tr.risk_id}:{tr.seq}"
            trigger = None
            if tr.trigger_event_id is not None:
                same = event is not None and event.id == tr.trigger_event_id
                received = event.received_at if same and event is not None else None
                trigger = Trigger(event_id=tr.trigger_event_id, received_at=received)
            risk_event = RiskEvent(
                event_id=event_id, risk_id=tr.risk_id, seq=tr.seq, transition=tr.transition,  # type: ignore[arg-type]
                account_id=account_id, type=tr.type, severity=tr.severity,  # type: ignore[arg-type]
                summary=tr.summary, evidence=tr.evidence,
                health=HealthBrief(score=tr.health.score, tier=tr.health.tier,  # type: ignore[arg-type]
                                   reasons=tr.health.reasons(3)),
                account=brief, occurred_at=tr.occurred_at, detected_at=now, trigger=trigger,
                config_version=tr.health.config_version)
            batch.outbox.append(OutboxRow(event_id, owned.number, account_id, risk_event.to_json()))
            previous = work.risks.get(tr.risk_id)
            resolved = tr.transition == "resolved"
            work.risks[tr.risk_id] = RiskRow(
                risk_id=tr.risk_id, account_id=account_id, type=tr.type, severity=tr.severity,
                status="resolved" if resolved else "open", seq=tr.seq, summary=tr.summary,
                evidence=dumps(tr.evidence).decode(),
                opened_at=previous.opened_at if previous is not None else tr.occurred_at,
                updated_at=tr.occurred_at, resolved_at=tr.occurred_at if resolved else None,
                trigger_event_id=tr.trigger_event_id)
            work.risk_counts[(tr.type, tr.transition)] += 1

    def _remember(self, ids: set[str]) -> None:
        self._recent |= ids
        if len(self._recent) > self._opt.recent_ids // 2:
            self._recent_old, self._recent = self._recent, set()

    def _seen_lately(self, event_id: str) -> bool:
        return event_id in self._recent or event_id in self._recent_old

    def _observe(self, work: _Work, started: float) -> None:
        m = self._metrics
        for (event_type, outcome), n in work.events.items():
            m.events.labels(event_type, outcome).inc(n)
        for reason, n in work.dead_reasons.items():
            self._common.dead_letters.labels(SERVICE, reason).inc(n)
        for (risk_type, transition), n in work.risk_counts.items():
            m.risks.labels(risk_type, transition).inc(n)
            if transition == "opened":
                m.open_risks.labels(risk_type).inc(n)
            elif transition == "resolved":
                m.open_risks.labels(risk_type).dec(n)
        committed = time.time()
        for received in work.latencies:
            m.processing_latency.observe(max(0.0, committed - received.timestamp()))
        m.batch_latency.observe(time.perf_counter() - started)
        m.tracked_accounts.set(self._tracked())
        watermarks = [o.clock.watermark for o in self._owned.values() if o.clock.watermark is not None]
        if watermarks:
            m.watermark_age.set(max(0.0, committed - max(watermarks).timestamp()))
