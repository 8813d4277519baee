"""The `risks` consumer: batches of risk events -> one claim transaction -> offsets -> deliveries.

Exactly-once effects, at-least-once consumption:

1. `getmany` a batch; records below the position stored in the database are skipped (already applied).
2. One transaction (`AlertPipeline.claim_risks`): alert rows, per-target state, digest items, the pending
   deliveries (UNIQUE dedup key), the processed risk `event_id`s and the consumed positions. A redelivered
   record (Kafka redelivery, a rewind, a duplicate publish) is a no-op: its `event_id` is already there.
   The transaction runs in the injected `ClaimSession` (`services.alerts.adapters.claim_session`): four
   round trips on the asyncpg connection under the kept one on PostgreSQL, SQLAlchemy Core on SQLite.
3. Hand the claimed deliveries to the `DeliveryRunner` and go on polling; sending never blocks consumption.
4. Commit the Kafka offsets, in the background and only up to claims already durable; the database
   positions stay the truth, so a late or failed offset commit costs a re-read, never a duplicate.

A record that is not a risk event (not JSON, invalid, no value) is written to the `deadletter` topic with
its reason, as scoring does with bad input, before the claim that moves past it: it is never lost (at worst
written twice after a crash) and never stalls its partition.

The one window where a receiver can get a message twice: a delivery was handed to the receiver (Slack
answered 200, SMTP accepted the mail) and the process died before the outcome was written. The delivery
is still `pending` in the database, and whichever instance finds its lease run out (30 s after its
sender stopped renewing it: at start-up, after a rebalance, or on the periodic check) sends it again.
The window is one receiver round trip plus the outcome writer's flush interval (~100 ms): outcomes are
written in small batches as soon as they are known. (The same ambiguity exists inside a single attempt
that times out after the receiver accepted it: the Deliverer retries it. Emails carry a Message-ID
derived from the dedup key, so mail clients fold either kind of duplicate.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.alerts.adapters.claim_session import claim_session
from services.alerts.service.dispatch import DeliveryRunner
from services.alerts.service.pipeline import AlertPipeline, ClaimResult
from services.alerts.service.ports import ClaimSession
from shared.backoff import Backoff
from shared.bus.port import Bus, OutMessage, Publisher, Record, Subscriber, TopicPartition
from shared.codec import dead_letter
from shared.db_errors import DATABASE_ERRORS
from shared.metrics import AlertsMetrics, CommonMetrics
from shared.risks import RiskEvent

log = logging.getLogger(__name__)

LAG_EVERY_S = 5.0
COMMIT_EVERY_S = 0.2
EXPIRED_LOG_EVERY_S = 60.0   # expired risk events are logged at most this often (all are counted)
NUL = "\x00"


@dataclass
class DecodedBatch:
    """A consumed batch, read: the risk events to claim, the positions it reaches, its dead letters."""

    risks: list[RiskEvent] = field(default_factory=list)
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    skipped: int = 0                                   # below the stored position: applied already
    expired: int = 0                                   # detected before the deduplication horizon: skipped
    dead: list[OutMessage] = field(default_factory=list)
    dead_reasons: Counter[str] = field(default_factory=Counter)


def poison_reason(value: bytes | None, exc: Exception | None) -> tuple[str, str]:
    """Why a record is not a risk event: the text for the dead letter, and a low-cardinality metric label."""
    if value is None:
        return "record has no value", "no_value"
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False)
        if errors and errors[0]["type"] == "json_invalid":
            return f"not JSON: {errors[0]['msg']}", "not_json"
        parts = [f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}" for e in errors[:5]]
        reason = "invalid risk event: " + "; ".join(parts)
    else:
        reason = f"invalid risk event: {exc}"
    return reason.replace(NUL, "\\u0000"), "invalid_risk_event"


def deadletter_topic_for(risks_topic: str) -> str:
    """The dead-letter topic beside a risks topic (`<prefix>risks` -> `<prefix>deadletter`, shared/topics.py)."""
    return risks_topic.removesuffix("risks") + "deadletter"


class RiskConsumer:
    def __init__(
        self,
        bus: Bus,
        *,
        topic: str,
        group_id: str,
        pipeline: AlertPipeline,
        runner: DeliveryRunner,
        metrics: AlertsMetrics,
        common: CommonMetrics,
        clock: Callable[[], datetime],
        batch_max: int = 250,
        poll_ms: int = 100,
        max_backoff_s: float = 5.0,
        claims: ClaimSession | None = None,
        engine: AsyncEngine | None = None,
        deadletter_topic: str | None = None,
        deadletter_partitions: int = 6,
        dedup_horizon: timedelta | None = None,
    ) -> None:
        """`claims` is injected by the composition root; a consumer built on an `engine` alone gets the
        session the composition root would choose for it. Records that are not risk events go to
        `deadletter_topic` (default: the one beside `topic`), created with `deadletter_partitions` partitions
        when missing."""
        if claims is None:
            if engine is None:
                raise TypeError("RiskConsumer needs `claims` (or an `engine` to open them on)")
            claims = claim_session(engine)
        self.bus = bus
        self.topic = topic
        self.group_id = group_id
        self.claims = claims
        self.pipeline = pipeline
        self.runner = runner
        self.metrics = metrics
        self.common = common
        self.clock = clock
        self.batch_max = batch_max
        self.poll_ms = poll_ms
        self.max_backoff_s = max_backoff_s
        self.deadletter_topic = deadletter_topic or deadletter_topic_for(topic)
        self.deadletter_partitions = deadletter_partitions
        # Risk events detected longer ago than this are skipped and counted (`expired`): their ids may have
        # been pruned from alerts_processed (docs/retention.md). None: every event is claimed.
        self.dedup_horizon = dedup_horizon
        self._expired_logged = -EXPIRED_LOG_EVERY_S
        self.subscriber: Subscriber | None = None
        self._dead_publisher: Publisher | None = None
        self._healthy = False
        self._positions: dict[TopicPartition, int] = {}  # next offset to apply, as stored in the database
        self._stopping = asyncio.Event()
        self._to_commit: dict[TopicPartition, int] = {}
        self._commit_wake = asyncio.Event()
        self._lag_at = 0.0

    @property
    def healthy(self) -> bool:
        """Consuming, its last claim went through, and its Kafka subscriber makes progress (a subscriber stuck
        without any for a while is replaced: shared/bus/kafka.py, `healthy`); /readyz reports it."""
        return self._healthy and bool(getattr(self.subscriber, "healthy", True))

    @healthy.setter
    def healthy(self, value: bool) -> None:
        self._healthy = value

    # -- rebalance listener --------------------------------------------------------------------
    async def on_assigned(self, partitions: set[TopicPartition], consumer: Subscriber) -> None:
        """Resume from the positions committed with the claims (the database is the source of truth)."""
        stored = await self.claims.positions(partitions)
        for tp, offset in stored.items():
            consumer.seek(tp, offset)
            self._positions[tp] = offset
        log.info("alerts consumer assigned %d partition(s)", len(partitions))
        self.runner.wake()  # pending deliveries whose sender went away are resumed now

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self._positions.pop(tp, None)

    # -- loop ----------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stopping.set()

    async def run_forever(self) -> None:
        """`run`, restarted with capped backoff when the bus fails under it (broker down at start-up...)."""
        backoff = Backoff(0.5, cap=self.max_backoff_s)
        while not self._stopping.is_set():
            try:
                await self.run()
            except Exception as exc:  # any bus client error: logged, then the consumer starts over
                self.healthy = False
                delay = backoff.next()
                # the class only: a client error's text may carry a connection URL
                log.error("alerts consumer failed (%s); restarting in %.1fs", type(exc).__name__, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)

    async def run(self) -> None:
        sub = self.bus.subscriber([self.topic], self.group_id, listener=self)
        self.subscriber = sub
        await sub.start()
        committer = asyncio.create_task(self._commit_offsets(sub), name="alerts-offset-commits")
        try:
            self.healthy = True
            while not self._stopping.is_set():
                await self.runner.wait_capacity()
                records = await sub.getmany(timeout_ms=self.poll_ms, max_records=self.batch_max)
                if records:
                    await self._handle_with_retry(sub, records)
                await self._update_lag(sub)
        finally:
            self.healthy = False
            committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committer
            await self._commit_now(sub)
            await self._close_connection()
            await self._stop_dead_publisher()
            await sub.stop()

    async def _commit_offsets(self, sub: Subscriber) -> None:
        """Kafka offsets follow the claims in the background: they only save re-reads on a restart
        (the database positions decide where to resume), so the hot path never waits for them."""
        while True:
            await self._commit_wake.wait()
            self._commit_wake.clear()
            await self._commit_now(sub)
            await asyncio.sleep(COMMIT_EVERY_S)  # at most one commit request per interval

    async def _commit_now(self, sub: Subscriber) -> None:
        offsets, self._to_commit = self._to_commit, {}
        if not offsets:
            return
        try:
            await sub.commit(offsets)
        except Exception as exc:  # any client error: the database positions already hold
            log.warning(
                "kafka offset commit failed (%s); positions are safe in the database", type(exc).__name__
            )

    @property
    def _conn(self) -> object | None:
        """The connection the claims are kept on (None when none is kept)."""
        return self.claims.connection

    async def _close_connection(self, *, invalidate: bool = False) -> None:
        """Give the kept claim connection back; `invalidate` after a failed claim (it may be broken)."""
        await self.claims.close(invalidate=invalidate)

    async def claim(self, risks: list[RiskEvent], positions: dict[TopicPartition, int]) -> ClaimResult:
        """One claim transaction of the batch, on the kept connection."""
        async with self.claims.transaction() as store:
            return await self.pipeline.claim_risks(store, risks, positions)

    async def _handle_with_retry(self, sub: Subscriber, records: list[Record]) -> None:
        batch = self.decode(records)
        await self._dead_letter(batch)  # once per batch, whatever retries the claim needs
        backoff = Backoff(0.1, cap=self.max_backoff_s)
        while True:
            try:
                await self.apply(batch)
                self.healthy = True
                return
            except DATABASE_ERRORS as exc:
                # The database is unreachable or refused the transaction: nothing was claimed, nothing
                # committed; the batch is retried (capped backoff) on a new connection and the partitions
                # wait for it.
                self.healthy = False
                await self._close_connection(invalidate=True)
                delay = backoff.next()
                log.warning(
                    "alerts claim failed (%s); retrying the batch in %.1fs", type(exc).__name__, delay
                )
                if self._stopping.is_set():
                    raise
                await asyncio.sleep(delay)

    async def handle(self, sub: Subscriber, records: list[Record]) -> None:
        batch = self.decode(records)
        await self._dead_letter(batch)
        await self.apply(batch)

    def decode(self, records: list[Record]) -> DecodedBatch:
        """The risk events of a batch; records that are not risk events become dead letters."""
        batch = DecodedBatch()
        positions = batch.positions
        oldest = None if self.dedup_horizon is None else self.clock() - self.dedup_horizon
        for rec in records:
            tp = rec.tp
            positions[tp] = max(positions.get(tp, 0), rec.offset + 1)
            if rec.offset < self._positions.get(tp, 0):
                batch.skipped += 1
                continue
            try:
                if rec.value is None:
                    raise ValueError("record has no value")
                risk = RiskEvent.from_json(rec.value)
            except (ValidationError, ValueError) as exc:
                # A record scoring could not have written: dead-lettered with the reason, never stalls.
                reason, label = poison_reason(rec.value, exc)
                batch.dead.append(OutMessage(self.deadletter_topic, rec.key, dead_letter(
                    tp.topic, tp.partition, rec.offset, reason, rec.value, self.common.service)))
                batch.dead_reasons[label] += 1
                log.error("invalid risk event at %s[%d]@%d dead-lettered: %s", tp.topic, tp.partition,
                          rec.offset, label)
                continue
            if oldest is not None and risk.detected_at < oldest:
                batch.expired += 1
                self._log_expired(risk, rec)
                continue
            batch.risks.append(risk)
        return batch

    def _log_expired(self, risk: RiskEvent, rec: Record) -> None:
        now = time.monotonic()
        if now - self._expired_logged < EXPIRED_LOG_EVERY_S:
            return
        self._expired_logged = now
        log.warning("risk event %s at %s[%d]@%d was detected at %s, before the deduplication horizon (%s): not "
                    "applied, counted as expired (further ones are only counted for %.0fs)", risk.event_id,
                    rec.tp.topic, rec.tp.partition, rec.offset, risk.detected_at.isoformat(), self.dedup_horizon,
                    EXPIRED_LOG_EVERY_S)

    async def _dead_letter(self, batch: DecodedBatch) -> None:
        """Publish the batch's dead letters (before its claim moves the positions past them) and count them.
        A bus failure propagates: the consumer starts over from the stored positions and writes them then."""
        if not batch.dead:
            return
        if self._dead_publisher is None:
            await self.bus.ensure_topics([self.deadletter_topic], self.deadletter_partitions)
            publisher = self.bus.publisher()
            await publisher.start()
            self._dead_publisher = publisher
        await self._dead_publisher.publish(batch.dead)
        self.metrics.risk_events.labels("invalid").inc(len(batch.dead))
        for label, n in batch.dead_reasons.items():
            self.common.dead_letters.labels(self.common.service, label).inc(n)

    async def _stop_dead_publisher(self) -> None:
        publisher, self._dead_publisher = self._dead_publisher, None
        if publisher is not None:
            try:
                await publisher.stop()
            except Exception as exc:  # any client error while closing: nothing is left to send
                log.warning("dead-letter publisher did not stop cleanly (%s)", type(exc).__name__)

    async def apply(self, batch: DecodedBatch) -> None:
        """One claim transaction for the batch's risk events and positions; then hand over the deliveries."""
        positions = batch.positions
        if batch.skipped:
            self.metrics.risk_events.labels("duplicate").inc(batch.skipped)
        if batch.expired:
            self.metrics.risk_events.labels("expired").inc(batch.expired)
        result = await self.claim(batch.risks, positions)
        self.runner.submit(result.deliveries)
        for tp, offset in positions.items():
            self._positions[tp] = max(self._positions.get(tp, 0), offset)
            self._to_commit[tp] = max(self._to_commit.get(tp, 0), offset)
        self._commit_wake.set()
        for outcome, n in result.outcomes.items():
            self.metrics.risk_events.labels(outcome).inc(n)

    async def _update_lag(self, sub: Subscriber) -> None:
        now = time.monotonic()
        if now - self._lag_at < LAG_EVERY_S:
            return
        self._lag_at = now
        assigned = sorted(sub.assignment())
        if not assigned:
            return
        try:
            ends = await sub.end_offsets(assigned)
        except Exception as exc:  # lag is best effort; the loop must go on
            log.debug("end offsets unavailable (%s)", type(exc).__name__)
            return
        lag = sum(max(ends.get(tp, 0) - self._positions.get(tp, 0), 0) for tp in assigned)
        self.metrics.consumer_lag.labels("alerts", self.topic).set(lag)
