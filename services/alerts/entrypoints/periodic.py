"""Wall-clock work of the alerts service: group flushes, daily digests, repeat notifications, housekeeping.

Each tick is one transaction that claims deliveries exactly like the consumer does (dedup-keyed), then
hands them to the `DeliveryRunner`. A failed tick is logged and retried on the next one.

The group flush runs every `digest_every_s` and also wakes up when a newly queued group is due (the
pipeline tells it), so a group goes out right after its `group_wait`. The daily digest check runs at start
and after each receiver's scheduled moment (the schedule is pure: `services.alerts.domain.daily`); it wakes
at least every `daily_every_s` but reads the tables only when a scheduled moment passed since its last
complete check.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime

from services.alerts.service.dispatch import DeliveryRunner
from services.alerts.service.pipeline import AlertPipeline, DigestRace
from services.alerts.service.ports import UnitOfWork
from shared.db_errors import ENGINE_ERRORS

log = logging.getLogger(__name__)


class PeriodicTasks:
    def __init__(
        self,
        uow: UnitOfWork,
        pipeline: AlertPipeline,
        runner: DeliveryRunner,
        *,
        clock: Callable[[], datetime],
        digest_every_s: float = 0.5,
        repeat_every_s: float = 5.0,
        daily_every_s: float = 300.0,
    ) -> None:
        self.uow = uow
        self.pipeline = pipeline
        self.runner = runner
        self.clock = clock
        self.digest_every_s = digest_every_s
        self.repeat_every_s = repeat_every_s
        self.daily_every_s = daily_every_s
        self.daily_sent: Counter[str] = Counter()  # daily digests claimed by this instance, per target key
        self._group_due: list[datetime] = []  # a heap of due times of queued groups
        self._group_wake = asyncio.Event()
        pipeline.on_digest_due = self.wake_digests_at

    def wake_digests_at(self, due: datetime) -> None:
        """A queued group becomes due at `due`: flush then, not only on the next regular tick."""
        if len(self._group_due) > 10_000:  # bounded: the regular tick catches up anyway
            return
        if not self._group_due or due < self._group_due[0]:
            self._group_wake.set()
        heapq.heappush(self._group_due, due)

    async def flush_digests_once(self) -> int:
        try:
            async with self.uow.begin() as store:
                result = await self.pipeline.claim_digests(store)
        except DigestRace as exc:
            log.info("%s", exc)
            return 0
        self.runner.submit(result.deliveries)
        return len(result.deliveries)

    async def daily_digests_once(self) -> int | None:
        """Claim the due daily digests; how many, or None when another instance raced (retried later)."""
        try:
            async with self.uow.begin() as store:
                result = await self.pipeline.claim_daily_digests(store)
        except DigestRace as exc:
            log.info("%s", exc)
            return None
        self.runner.submit(result.deliveries)
        self.daily_sent.update(d.target_key for d in result.deliveries)
        return len(result.deliveries)

    async def repeat_once(self) -> int:
        async with self.uow.begin() as store:
            result = await self.pipeline.claim_repeats(store)
        self.runner.submit(result.deliveries)
        return len(result.deliveries)

    async def run_digests(self) -> None:
        while True:
            now = self.clock()
            while self._group_due and self._group_due[0] <= now:
                heapq.heappop(self._group_due)
            try:
                await self.flush_digests_once()
            except ENGINE_ERRORS as exc:
                log.warning("alerts digest flush failed (%s); next try in %.1fs", type(exc).__name__,
                            self.digest_every_s)
            timeout = self.digest_every_s
            if self._group_due:
                timeout = min(timeout, max((self._group_due[0] - self.clock()).total_seconds(), 0.0) + 0.005)
            self._group_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._group_wake.wait(), timeout)

    async def run_daily_digests(self) -> None:
        checked_at: datetime | None = None  # when the last complete check began
        while True:
            now = self.clock()
            moment = self.pipeline.latest_daily_moment(now)
            # A check that began at or after the latest scheduled moment saw every digest due by now: the
            # next one is needed only after another moment passes (what arrives meanwhile waits for it).
            if checked_at is None or moment is None or moment > checked_at:
                try:
                    if await self.daily_digests_once() is not None:
                        checked_at = now
                except ENGINE_ERRORS as exc:
                    log.warning("alerts daily digest check failed (%s); next try in 5s", type(exc).__name__)
                    await asyncio.sleep(5.0)
                    continue
            now = self.clock()
            due = self.pipeline.next_daily_due(now)
            wait = self.daily_every_s if due is None else (due - now).total_seconds() + 0.01
            await asyncio.sleep(min(max(wait, 0.01), self.daily_every_s))

    async def run_repeats(self) -> None:
        await self._every(self.repeat_every_s, self.repeat_once, "repeat check")

    @staticmethod
    async def _every(interval_s: float, tick: Callable[[], Awaitable[int]], what: str) -> None:
        while True:
            try:
                await tick()
            except ENGINE_ERRORS as exc:
                log.warning("alerts %s failed (%s); next try in %.1fs", what, type(exc).__name__, interval_s)
            await asyncio.sleep(interval_s)
