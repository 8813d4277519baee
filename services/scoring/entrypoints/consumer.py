"""The scoring consumer: input topics -> per-account state, history, risks and risk events.

Per consumed batch (`getmany`), under one lock that rebalance callbacks also take:
  1. records are decoded into per-partition feeds (bad ones become dead letters) and merged in a
     deterministic order (intake.py, feed.py);
  2. event ids are checked against the processed set (one query), the new events are applied to the
     accounts' states and the partition clocks fire the timers of silent accounts (batches.py; what the
     outcomes become in rows.py);
  3. ONE database transaction commits the states, processed ids, history, risks, outbox rows, the
     health feed rows, the positions and the watermarks; then the outbox is published to the risks topic
     (outbox.py) and the health feed to the health topic (health_feed.py); then the
     Kafka offsets are committed (offsets.py; advisory only: on assignment the consumer seeks to the
     positions stored in the database, which never lag behind the state).
Any retryable failure before the commit drops the in-memory state and reloads it from the database
(the same path as a new assignment), so nothing half-applied survives.

This module keeps the loop: lifecycle, the rebalance listener, loading partitions, and the pipelining of
one batch's build with the previous batch's commit (its metrics: observe.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from services.scoring.adapters.errors import StoreUnavailable
from services.scoring.adapters.store import ScoringStore
from services.scoring.entrypoints.batches import BatchBuilder, BuiltBatch, Poisoned
from services.scoring.entrypoints.feed import PartitionFeed
from services.scoring.entrypoints.health_feed import HealthFeed
from services.scoring.entrypoints.intake import Intake
from services.scoring.entrypoints.observe import observe_batch, refresh_gauges
from services.scoring.entrypoints.offsets import KafkaOffsets
from services.scoring.entrypoints.options import ConsumerOptions
from services.scoring.entrypoints.outbox import RiskOutbox
from services.scoring.entrypoints.partitions import OwnedPartition, tracked
from services.scoring.entrypoints.ports import ScoringModel
from shared.backoff import Backoff
from shared.bus.port import Bus, Publisher, Subscriber, TopicPartition
from shared.errors import BusUnavailable, RetryableFailure
from shared.metrics import CommonMetrics, ScoringMetrics
from shared.topics import Topics

# ConsumerOptions is defined in options.py and named here too: callers build a consumer from this module.
__all__ = ["ConsumerOptions", "ScoringConsumer"]

log = logging.getLogger(__name__)

# While a sweep goes on, the ends the merge wants are asked once every record waiting for them has settled
# (no wait), or once the one waiting longest settled this long ago (the ask then waits for the others).
_SWEEP_ASK_LATE_S = 0.1


class ScoringConsumer:
    """Consumer-group member over the input topics; also the rebalance listener of its subscriber."""

    def __init__(self, *, bus: Bus, store: ScoringStore, model: ScoringModel, topics: Topics,
                 options: ConsumerOptions, metrics: ScoringMetrics, common: CommonMetrics,
                 wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._bus = bus
        self._store = store
        self._model = model
        self._topics = topics
        self._inputs = tuple(topics.inputs)
        self._opt = options
        self._metrics = metrics
        self._common = common
        self._now = wall_clock
        self._lock = asyncio.Lock()
        # The owned partitions, one dict shared with the intake and the batch builder.
        self._owned: dict[int, OwnedPartition] = {}
        self._intake = Intake(owned=self._owned, inputs=self._inputs, options=options, metrics=metrics)
        self._builder = BatchBuilder(store=store, model=model, owned=self._owned,
                                     deadletter_topic=topics.deadletter, common=common,
                                     recent_ids=options.recent_ids, live_states=options.live_states,
                                     wall_clock=wall_clock, sweep_chunk=options.sweep_chunk,
                                     dedup_horizon=options.dedup_horizon,
                                     health_topic=topics.health)
        self._offsets = KafkaOffsets(options.offsets_every_s)
        self._outbox = RiskOutbox(store=store, topic=topics.risks, wall_clock=wall_clock)
        self._health = HealthFeed(store=store, topic=topics.health)
        self._pending_load: set[int] = set()
        self._inflight: asyncio.Task[None] | None = None  # the commit of the last batch built
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
        return tracked(self._owned)

    @property
    def running(self) -> bool:
        """True while consuming (joined the group and not stopping)."""
        return self._active and not self._stopping.is_set()

    @property
    def progressing(self) -> bool:
        """False while its Kafka subscriber makes no progress (shared/bus/kafka.py, `healthy`: no fetch
        answer, no partition it should have, for a while): /readyz answers 503 meanwhile."""
        return bool(getattr(self._subscriber, "healthy", True))

    async def wait_started(self) -> None:
        await self._started.wait()

    @property
    def sweeping(self) -> bool:
        """Whether due timers are left for later batches (a bounded sweep) or its last batch is in flight."""
        return self._builder.sweep_pending or (self._inflight is not None and not self._inflight.done())

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Consume until `stop()`. Retryable failures are retried with bounded backoff; others raise."""
        await self._bus.ensure_topics(self._topics.all, self._opt.partitions, self._topics.configs)
        publisher = self._bus.publisher()
        self._publisher = publisher
        self._outbox.attach(publisher)
        self._health.attach(publisher)
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
            await self._outbox.flush_published()
            await self._health.flush_published()
            try:
                await self._offsets.drain(subscriber)
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
        # (no waiting for records while a bounded sweep has more to do: it goes on between fetches)
        sweeping = self._builder.sweep_pending
        records = await subscriber.getmany(timeout_ms=0 if sweeping else self._opt.poll_timeout_ms,
                                           max_records=self._opt.max_batch)
        async with self._lock:
            await self._prepare(subscriber)
            self._intake.accept(records)
            self._intake.apply_backpressure(subscriber)
        processed = 0
        # One batch per turn of the lock, so a rebalance waits for one batch, not for the whole buffer.
        while not self._stopping.is_set():
            async with self._lock:
                await self._prepare(subscriber)
                done = await self._next_batch(subscriber)
            if done is None:
                break
            processed += done
        if not processed and self._builder.sweep_pending and not self._stopping.is_set():
            # No event is ready: one batch of the sweep, then back to fetching.
            async with self._lock:
                await self._prepare(subscriber)
                if await self._next_batch(subscriber, sweep=True) is not None:
                    return
        if not processed:
            # Idle: let the last batch's commit land (its failure surfaces here), mark what it published,
            # and bring the group's Kafka offsets to the committed positions.
            async with self._lock:
                await self._settle()
            if self._outbox.has_published:
                await self._outbox.flush_published()
            if self._health.has_published:
                await self._health.flush_published()
            await self._offsets.flush(subscriber)

    # -- rebalance listener --------------------------------------------------------------------
    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        async with self._lock:
            # The batch in flight lands before the partitions go: their next owner loads what it wrote.
            await self._settle_quietly()
            numbers = {tp.partition for tp in partitions if tp.topic in self._inputs}
            for n in numbers:
                self._owned.pop(n, None)
            self._intake.release(numbers)
            self._pending_load -= numbers
            self._outbox.dropped(numbers)
            self._health.dropped(numbers)
            if numbers:
                log.info("scoring partitions revoked: %s", sorted(numbers))
            self._metrics.tracked_accounts.set(tracked(self._owned))

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
            self._intake.release(set(by_number))
            self._pending_load |= complete
            log.info("scoring partitions assigned: %s", sorted(complete))
            try:
                await self._load_pending(consumer)
            except StoreUnavailable as exc:
                log.warning("cannot load assigned partitions yet (%s); will retry", exc.message)

    # -- preparation: loads, republish, end offsets, gauges -------------------------------------
    async def _prepare(self, subscriber: Subscriber) -> None:
        if self._pending_load:
            await self._load_pending(subscriber)
        if self._outbox.owes_republish:
            await self._outbox.republish(set(self._owned))
        if self._health.owes_republish:
            await self._health.republish(set(self._owned))
        now = time.monotonic()
        await self._intake.refresh_ends(subscriber, now)
        if now >= self._risk_gauge_at:
            self._risk_gauge_at = now + self._opt.risk_gauge_refresh_s
            await refresh_gauges(self._store, self._metrics, self._now)

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
            self._owned[n] = OwnedPartition(n, load.states, clock, feed, health_seq=load.health_seq)
            for topic, offset in positions.items():
                tp = TopicPartition(topic, n)
                if tp in assigned:
                    subscriber.seek(tp, offset)
        self._pending_load -= numbers
        self._outbox.loaded(numbers)
        self._health.loaded(numbers)
        self._intake.ask_ends_soon()
        self._metrics.tracked_accounts.set(tracked(self._owned))

    async def _next_batch(self, subscriber: Subscriber, *, sweep: bool = False) -> int | None:
        """Build the next batch and start its commit; its size, or None when nothing is ready.

        Batches are pipelined: batch N+1 is built (decoded, applied to the in-memory states) while batch
        N's transaction and outbox publish are in flight; N+1's commit starts only once N's has landed, so
        commits, outbox publishes and offsets keep their order. Memory runs ahead of the database by at
        most the batch in flight; any failure forgets all of it and reloads from the database.
        With `sweep`, a batch of due timers (and the entries ready without asking the broker anything: the
        call before it asked, or chose not to wait) when no entry was ready (a bounded sweep goes on).
        While a sweep goes on, the ends the merge wants are asked only once the records waiting for them
        have settled (`_may_ask`): a chunk of the sweep is built meanwhile, instead of sleeping."""
        if self._may_ask(sweep):
            await self._intake.ask_wanted(subscriber)
        entries = self._intake.select()
        if not entries and self._may_ask(sweep) and await self._intake.ask_wanted(subscriber):
            entries = self._intake.select()
        self._intake.apply_backpressure(subscriber)
        if not entries and not (sweep and self._builder.sweep_pending):
            return None
        try:
            built = await self._builder.build(entries)
        except Poisoned:
            # Redo from the committed state; the poisoned input is dead-lettered on the way.
            await self._forget_all()
            await self._load_pending(subscriber)
            return 0
        except BaseException:
            await self._forget_all()
            raise
        # Risk events published since the last batch are marked so in this one's transaction, and the
        # health feed rows published are deleted by it.
        built.batch.published = self._outbox.take_published()
        built.batch.health_published = self._health.take_published()
        await self._settle()
        self._inflight = asyncio.create_task(self._commit(built, subscriber), name="scoring-commit")
        return len(entries)

    def _may_ask(self, sweep: bool) -> bool:
        """Whether to ask the ends the feeds want (intake.py `ask_wanted`, which first waits for the
        records waiting for them to settle: `PartitionFeed.ask_after`). Not for a sweep batch (the batch
        before it asked); while a sweep goes on, when they have all settled (no wait), or when the one
        waiting longest settled `_SWEEP_ASK_LATE_S` ago (live records wait a bounded time)."""
        if sweep:
            return False
        if not self._builder.sweep_pending:
            return True
        after = [owned.feed.ask_after for owned in self._owned.values() if owned.feed.wanted]
        if not after:
            return False
        now = time.time()
        return max(after) <= now or min(after) <= now - _SWEEP_ASK_LATE_S

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
        self._builder.forget()

    # -- one batch's commit -----------------------------------------------------------------------
    async def _commit(self, built: BuiltBatch, subscriber: Subscriber) -> None:
        """Dead letters, then the batch transaction, then the outbox publish; offsets in the background."""
        batch, work = built.batch, built.work
        if work.dead:
            # Before the commit: a dead letter is never lost (at worst sent twice after a crash).
            assert self._publisher is not None
            await self._publisher.publish(work.dead)
        await self._store.write_batch(batch, built.now)
        self.batches += 1
        self.committed_at = time.monotonic()
        observe_batch(self._metrics, self._common, work, built.started, self._owned)
        if batch.outbox or batch.health_feed:
            # Both in one round trip (the publisher sends concurrent calls together); each owes its own
            # republish if the bus fails.
            sends = [self._outbox.publish_committed(batch.outbox)] if batch.outbox else []
            if batch.health_feed:
                sends.append(self._health.publish_committed(work.health_out, batch.health_feed))
            results = await asyncio.gather(*sends, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        # Kafka offsets: advisory, committed in the background (offsets.py).
        self._offsets.committed(subscriber, batch.positions)
