"""One subscriber's Standard Webhooks out of the health topic, in its own consumer group.

Each fetched partition's records are handed to a task and the partition is paused until the task is done:
the task delivers them in offset order per account (the accounts of a partition side by side, at most
`concurrency` at once), each message until the subscriber answers 2xx, or it goes to the dead letters (a
permanent answer, or retries past the deadline), or it is of a type the subscriber did not ask for; then the
partition's offset is committed and it is resumed. A revoked partition's task is cancelled before the
revocation completes, so its next owner never races it. Anything not committed (a crash, a stop, a
revocation) is sent again with the same `webhook-id`: delivery is at least once, in order per account,
and a receiver that skips ids it has seen gets every change once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import aiohttp

from services.alerts.feed.config import FeedEndpoint
from services.alerts.feed.delivery import deliver
from shared.backoff import Backoff
from shared.bus.port import Bus, OutMessage, Publisher, Record, Subscriber, TopicPartition
from shared.codec import dead_letter
from shared.errors import BusUnavailable, PermanentFailure, RetryableFailure
from shared.health_feed import read_head
from shared.metrics import CommonMetrics, FeedMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SenderOptions:
    concurrency: int = 16              # accounts of one partition in flight at once
    batch_max: int = 500               # records fetched at once
    poll_ms: int = 200
    timeout_s: float = 15.0            # one attempt (Standard Webhooks recommends 15 to 30 s)
    retry_initial_s: float = 1.0
    retry_max_s: float = 300.0         # the longest pause between two attempts (a Retry-After may ask more)
    retry_deadline_s: float = 3 * 24 * 3600.0   # then the message goes to the dead letters
    lag_every_s: float = 5.0
    restart_max_s: float = 5.0         # the longest pause before the consumer starts over after a failure


class FeedSender:
    """Delivers the health topic to one subscriber; also the rebalance listener of its subscriber."""

    def __init__(self, bus: Bus, *, topic: str, deadletter_topic: str, group_id: str, endpoint: FeedEndpoint,
                 session: aiohttp.ClientSession, metrics: FeedMetrics, common: CommonMetrics,
                 options: SenderOptions | None = None, clock: Callable[[], float] = time.time) -> None:
        self.endpoint = endpoint
        self.group_id = group_id
        self._bus = bus
        self._topic = topic
        self._deadletter = deadletter_topic
        self._session = session
        self._metrics = metrics
        self._common = common
        self._opt = options or SenderOptions()
        self._timeout = aiohttp.ClientTimeout(total=self._opt.timeout_s)
        self._clock = clock
        self._stopping = asyncio.Event()
        self._tasks: dict[TopicPartition, asyncio.Task[None]] = {}
        self._done: dict[TopicPartition, int] = {}     # next offset to deliver, as committed by this sender
        self._publisher: Publisher | None = None
        self._lag_at = 0.0
        self._subscriber: Subscriber | None = None
        self._healthy = False
        self.delivered = 0      # messages the subscriber answered 2xx (observability for tests)

    @property
    def healthy(self) -> bool:
        """Consuming, and its Kafka subscriber makes progress (one stuck without any for a while is replaced:
        shared/bus/kafka.py, `healthy`); /readyz reports it."""
        return self._healthy and bool(getattr(self._subscriber, "healthy", True))

    @healthy.setter
    def healthy(self, value: bool) -> None:
        self._healthy = value

    # -- lifecycle -------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stopping.set()

    async def run_forever(self) -> None:
        """`run`, started over with capped backoff when the bus fails under it."""
        backoff = Backoff(0.5, cap=self._opt.restart_max_s)
        while not self._stopping.is_set():
            try:
                await self.run()
                backoff.reset()
            except Exception as exc:  # any bus client error: logged (its class only), then start over
                self.healthy = False
                delay = backoff.next()
                log.error("feed subscriber %s: consumer failed (%s); restarting in %.1fs", self.endpoint.name,
                          type(exc).__name__, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)

    async def run(self) -> None:
        publisher = self._bus.publisher()
        self._publisher = publisher
        await publisher.start()
        sub = self._bus.subscriber([self._topic], self.group_id, listener=self)
        self._subscriber = sub
        try:
            await sub.start()
            self.healthy = True
            log.info("feed subscriber %s: sending the health topic (group %s)", self.endpoint.name, self.group_id)
            while not self._stopping.is_set():
                self._raise_failures()
                records = await sub.getmany(timeout_ms=self._opt.poll_ms, max_records=self._opt.batch_max)
                self._dispatch(sub, records)
                await self._update_lag(sub)
        finally:
            self.healthy = False
            # Deliveries in flight are dropped: not committed, they are sent again (same webhook-id).
            await _cancel(self._tasks.values())
            self._tasks.clear()
            try:
                await sub.stop()
            finally:
                await publisher.stop()

    def _raise_failures(self) -> None:
        for task in list(self._tasks.values()):
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    # -- rebalance listener ----------------------------------------------------------------------
    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        """Stop delivering the revoked partitions before their next owner starts on them."""
        await _cancel([self._tasks.pop(tp) for tp in partitions if tp in self._tasks])
        for tp in partitions:
            self._done.pop(tp, None)

    async def on_assigned(self, partitions: set[TopicPartition], consumer: Subscriber) -> None:
        log.info("feed subscriber %s: %d partition(s) assigned", self.endpoint.name, len(partitions))

    # -- delivering ------------------------------------------------------------------------------
    def _dispatch(self, sub: Subscriber, records: list[Record]) -> None:
        by_tp: dict[TopicPartition, list[Record]] = {}
        for record in records:
            by_tp.setdefault(record.tp, []).append(record)
        for tp, batch in by_tp.items():
            sub.pause([tp])  # its next records wait until these are delivered
            self._tasks[tp] = asyncio.create_task(self._deliver_partition(sub, tp, batch),
                                                  name=f"feed-{self.endpoint.name}-{tp.partition}")

    async def _deliver_partition(self, sub: Subscriber, tp: TopicPartition, records: list[Record]) -> None:
        lanes: dict[bytes | None, list[Record]] = {}
        for record in records:
            lanes.setdefault(record.key, []).append(record)
        slots = asyncio.Semaphore(self._opt.concurrency)
        async with asyncio.TaskGroup() as group:
            for lane in lanes.values():
                group.create_task(self._deliver_lane(lane, slots))
        offset = records[-1].offset + 1
        try:
            await sub.commit({tp: offset})
            self._done[tp] = offset
        except Exception as exc:  # a commit refused by a rebalance: the records are sent again (same ids)
            log.warning("feed subscriber %s: offset commit failed (%s)", self.endpoint.name, type(exc).__name__)
        if self._tasks.get(tp) is asyncio.current_task():
            del self._tasks[tp]
            if tp in sub.assignment():
                sub.resume([tp])

    async def _deliver_lane(self, records: list[Record], slots: asyncio.Semaphore) -> None:
        """One account's records, one after the other."""
        async with slots:
            for record in records:
                await self._deliver(record)

    async def _deliver(self, record: Record) -> None:
        name = self.endpoint.name
        head = read_head(record.value)
        if head is None:
            await self._dead_letter(record, f"feed subscriber {name}: not a health feed message",
                                    "feed_invalid_message")
            return
        if not self.endpoint.wants(head.type):
            self._metrics.deliveries.labels(name, "filtered").inc()
            return
        backoff = Backoff(self._opt.retry_initial_s, cap=self._opt.retry_max_s, jitter=0.5)
        give_up_at = time.monotonic() + self._opt.retry_deadline_s
        while True:
            started = time.perf_counter()
            try:
                await deliver(self._session, self.endpoint, head.id, record.value, timestamp=int(self._clock()),
                              client_timeout=self._timeout)
            except PermanentFailure as exc:
                self._metrics.attempt_latency.labels(name).observe(time.perf_counter() - started)
                await self._dead_letter(record, exc.message, "feed_rejected", head.id)
                return
            except RetryableFailure as exc:
                self._metrics.attempt_latency.labels(name).observe(time.perf_counter() - started)
                retry_after = exc.details.get("retry_after")
                if retry_after is not None:
                    delay = float(retry_after)
                    backoff.skip()
                else:
                    delay = backoff.next()
                if time.monotonic() + delay > give_up_at:
                    await self._dead_letter(record, f"{exc.message}; still failing after "
                                            f"{self._opt.retry_deadline_s:.0f}s of retries", "feed_gave_up", head.id)
                    return
                self._metrics.retries.labels(name).inc()
                log.warning("feed subscriber %s: message %s not delivered (%s); retrying in %.1fs", name, head.id,
                            exc.message, delay)
                await asyncio.sleep(delay)
                continue
            self._metrics.attempt_latency.labels(name).observe(time.perf_counter() - started)
            self._metrics.deliveries.labels(name, "delivered").inc()
            self.delivered += 1
            return

    async def _dead_letter(self, record: Record, reason: str, label: str, msg_id: str | None = None) -> None:
        """Publish the record to the dead letters (retried until the bus takes it), then count it."""
        assert self._publisher is not None
        value = dead_letter(record.topic, record.partition, record.offset, reason, record.value, self._common.service)
        backoff = Backoff(0.2, cap=5.0)
        while True:
            try:
                await self._publisher.publish([OutMessage(self._deadletter, record.key, value)])
                break
            except BusUnavailable as exc:
                delay = backoff.next()
                log.warning("feed subscriber %s: dead letter not published (%s); retrying in %.1fs",
                            self.endpoint.name, exc.message, delay)
                await asyncio.sleep(delay)
        self._metrics.deliveries.labels(self.endpoint.name, "dead_letter").inc()
        self._common.dead_letters.labels(self._common.service, label).inc()
        log.error("feed message %s dead-lettered at %s[%d]@%d: %s", msg_id or "(unreadable)", record.topic,
                  record.partition, record.offset, reason)

    # -- lag -------------------------------------------------------------------------------------
    async def _update_lag(self, sub: Subscriber) -> None:
        now = time.monotonic()
        if now - self._lag_at < self._opt.lag_every_s:
            return
        self._lag_at = now
        assigned = sorted(sub.assignment())
        if not assigned:
            return
        try:
            ends = await sub.end_offsets(assigned)
            for tp in assigned:
                if tp not in self._done:
                    self._done[tp] = await sub.committed(tp) or 0
        except Exception as exc:  # lag is best effort; delivering goes on
            log.debug("feed lag unavailable (%s)", type(exc).__name__)
            return
        lag = sum(max(ends.get(tp, 0) - self._done.get(tp, 0), 0) for tp in assigned)
        self._metrics.lag.labels(self.endpoint.name).set(lag)


async def _cancel(tasks: Iterable[asyncio.Task[None]]) -> None:
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
