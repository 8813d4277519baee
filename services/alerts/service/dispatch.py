"""Sending claimed deliveries and recording what happened.

Deliveries are claimed (`pending`, with a lease) before they get here. Each one is sent in its own task,
so targets proceed concurrently while the Deliverer's rate limiter serializes each target. Every attempt
and the final outcome (`sent`, `failed`, `dead_letter`) are written by one writer task in small batches.

Each pending delivery carries a short lease that its sender renews while it works on it (every
`resume_every_s`). A pending delivery whose lease has run out has lost its sender (the process stopped
or crashed before recording the outcome): the resume loop leases it again and sends it. That is the one
place where a receiver may see a message twice, see `services.alerts.entrypoints.consumer`.

Outcomes and leases are written through a `UnitOfWork` (`services.alerts.service.ports`), one short
transaction each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from services.alerts.domain.content import Notification
from services.alerts.notify.delivery import Deliverer, DeliveryResult
from services.alerts.service.ports import UnitOfWork
from services.alerts.service.records import AttemptRow, DeliveryRow, Outcome
from shared.backoff import Backoff
from shared.db_errors import ENGINE_ERRORS
from shared.errors import ChurnsignalError
from shared.metrics import AlertsMetrics, CommonMetrics

log = logging.getLogger(__name__)


class DeliveryRunner:
    def __init__(
        self,
        uow: UnitOfWork,
        *,
        clock: Callable[[], datetime],
        lease: timedelta,
        resume_every_s: float = 2.0,
        flush_every_s: float = 0.1,
        resume_batch: int = 500,
        max_in_flight: int = 5000,
        metrics: AlertsMetrics | None = None,
        common: CommonMetrics | None = None,
    ) -> None:
        self.uow = uow
        self.clock = clock
        self.lease = lease
        self.resume_every_s = resume_every_s
        self.flush_every_s = flush_every_s
        self.resume_batch = resume_batch
        self.max_in_flight = max_in_flight
        self.metrics = metrics
        self.common = common
        self.deliverer: Deliverer | None = None
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._ids: dict[str, int] = {}  # dedup key -> delivery id, while in flight
        self._attempts: dict[int, list[AttemptRow]] = {}
        self._outcomes: list[Outcome] = []
        self._unrecorded: set[int] = set()  # outcome known, not written yet
        self._flush = asyncio.Event()
        self._wake = asyncio.Event()
        self._capacity = asyncio.Event()
        self._capacity.set()
        self._accepting = True
        # Outcome writes and lease renewals update overlapping sets of rows: never both at once, so
        # they cannot deadlock each other.
        self._db_lock = asyncio.Lock()
        self.db_ok = True

    def attach(self, deliverer: Deliverer) -> None:
        self.deliverer = deliverer

    # -- Deliverer callback --------------------------------------------------------------------
    def on_attempt(
        self,
        notification: Notification,
        attempt_no: int,
        outcome: str,
        error: ChurnsignalError | None,
        duration_s: float,
    ) -> None:
        delivery_id = self._ids.get(notification.dedup_key)
        if delivery_id is None:
            return
        self._attempts.setdefault(delivery_id, []).append(
            AttemptRow(
                delivery_id=delivery_id,
                attempt_no=attempt_no,
                outcome=outcome,
                error=error.message[:1000] if error is not None else None,
                duration_ms=duration_s * 1000,
                at=self.clock(),
            )
        )

    # -- submission ----------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def busy_ids(self) -> set[int]:
        return set(self._tasks) | self._unrecorded

    def submit(self, rows: Iterable[DeliveryRow]) -> None:
        for row in rows:
            if not self._accepting or row.id in self._tasks or row.id in self._unrecorded:
                continue
            self._tasks[row.id] = asyncio.create_task(self._send(row), name=f"alerts-delivery-{row.id}")
        if len(self._tasks) >= self.max_in_flight:
            self._capacity.clear()

    async def wait_capacity(self) -> None:
        """Back-pressure for the consumer: returns once fewer than `max_in_flight` sends are running."""
        await self._capacity.wait()

    def wake(self) -> None:
        self._wake.set()

    async def _send(self, row: DeliveryRow) -> None:
        try:
            try:
                notification = Notification.from_dict(row.notification)
            except (KeyError, TypeError, ValueError) as exc:
                log.error(
                    "delivery %d: stored notification unreadable (%s); dead-lettered",
                    row.id,
                    type(exc).__name__,
                )
                if self.metrics is not None:
                    self.metrics.notifications.labels(row.channel, "dead_letter").inc()
                if self.common is not None:
                    self.common.dead_letters.labels(self.common.service, "unreadable").inc()
                self._done(
                    Outcome(
                        row.id,
                        "dead_letter",
                        error=f"stored notification unreadable: {type(exc).__name__}",
                        error_code="unreadable",
                    )
                )
                return
            assert self.deliverer is not None, "attach() a Deliverer before submitting"
            self._ids[notification.dedup_key] = row.id
            try:
                result = await self.deliverer.deliver_detailed(notification)
            finally:
                self._ids.pop(notification.dedup_key, None)
            self._done(self._outcome(row.id, result))
        finally:
            self._tasks.pop(row.id, None)
            if len(self._tasks) < self.max_in_flight:
                self._capacity.set()

    def _outcome(self, delivery_id: int, result: DeliveryResult) -> Outcome:
        error = result.error
        return Outcome(
            delivery_id,
            result.outcome,
            error=error.message[:1000] if error is not None else None,
            error_code=result.code[:64] if result.code is not None else None,
        )

    def _done(self, outcome: Outcome) -> None:
        outcome.attempts = self._attempts.pop(outcome.delivery_id, [])
        self._outcomes.append(outcome)
        self._unrecorded.add(outcome.delivery_id)
        self._flush.set()

    # -- background loops ----------------------------------------------------------------------
    async def run_writer(self) -> None:
        """Writes outcomes as they come (batched); retries with capped backoff while the DB is away."""
        backoff = Backoff(0.1, cap=5.0)
        while True:
            await self._flush.wait()
            await asyncio.sleep(self.flush_every_s)  # let a few outcomes gather into one transaction
            self._flush.clear()
            try:
                await self.flush()
                backoff.reset()
            except ENGINE_ERRORS as exc:
                delay = backoff.next()
                log.warning(
                    "recording delivery outcomes failed (%s); retrying in %.1fs", type(exc).__name__, delay
                )
                self._flush.set()
                await asyncio.sleep(delay)

    async def flush(self) -> None:
        batch, self._outcomes = self._outcomes, []
        if not batch:
            return
        try:
            now = self.clock()
            async with self._db_lock, self.uow.begin() as store:
                await store.record_outcomes(batch, now)
            self.db_ok = True
        except BaseException:
            self._outcomes[:0] = batch  # keep them, in order, for the next try
            self.db_ok = False
            raise
        for o in batch:
            self._unrecorded.discard(o.delivery_id)

    async def run_resumer(self) -> None:
        """Picks up pending deliveries whose lease ran out: at start-up, after a rebalance, periodically."""
        while True:
            try:
                await self.resume_once()
            except ENGINE_ERRORS as exc:
                log.warning("resuming pending deliveries failed (%s)", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.resume_every_s)
            self._wake.clear()

    async def resume_once(self) -> int:
        """Renew the leases of what this instance is sending, then take over expired ones."""
        if not self._accepting:
            return 0
        now = self.clock()
        busy = self.busy_ids()
        async with self._db_lock, self.uow.begin() as store:
            await store.renew(busy, now + self.lease)
            rows = await store.take_over_expired(now, now + self.lease, self.resume_batch, exclude=busy)
        if rows:
            log.info("resuming %d pending deliveries", len(rows))
            self.submit(rows)
        return len(rows)

    async def drain(self, timeout_s: float) -> None:
        """Stop taking work, let running sends finish for up to `timeout_s`, record, release the rest."""
        self._accepting = False
        abandoned: set[int] = set()
        if self._tasks:
            _, still = await asyncio.wait(list(self._tasks.values()), timeout=timeout_s)
            abandoned = {i for i, task in self._tasks.items() if task in still}
            for task in still:
                task.cancel()
            for task in still:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            await self.flush()
            if abandoned:
                async with self.uow.begin() as store:
                    await store.release(abandoned, self.clock())
        except ENGINE_ERRORS as exc:
            log.error(
                "could not record %d outcome(s) at shutdown (%s); they will be resent when their "
                "lease runs out",
                len(self._outcomes) + len(abandoned),
                type(exc).__name__,
            )
