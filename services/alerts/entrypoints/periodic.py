"""Wall-clock work of the alerts service: digest flushes, repeat notifications, housekeeping.

Each tick is one transaction that claims deliveries exactly like the consumer does (dedup-keyed), then
hands them to the `DeliveryRunner`. A failed tick is logged and retried on the next one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

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
        prune_every_s: float = 3600.0,
        processed_retention: timedelta = timedelta(days=30),
    ) -> None:
        self.uow = uow
        self.pipeline = pipeline
        self.runner = runner
        self.clock = clock
        self.digest_every_s = digest_every_s
        self.repeat_every_s = repeat_every_s
        self.prune_every_s = prune_every_s
        self.processed_retention = processed_retention

    async def flush_digests_once(self) -> int:
        try:
            async with self.uow.begin() as store:
                result = await self.pipeline.claim_digests(store)
        except DigestRace as exc:
            log.info("%s", exc)
            return 0
        self.runner.submit(result.deliveries)
        return len(result.deliveries)

    async def repeat_once(self) -> int:
        async with self.uow.begin() as store:
            result = await self.pipeline.claim_repeats(store)
        self.runner.submit(result.deliveries)
        return len(result.deliveries)

    async def prune_once(self) -> int:
        async with self.uow.begin() as store:
            return await store.prune_processed(self.clock() - self.processed_retention)

    async def run_digests(self) -> None:
        await self._every(self.digest_every_s, self.flush_digests_once, "digest flush")

    async def run_repeats(self) -> None:
        await self._every(self.repeat_every_s, self.repeat_once, "repeat check")

    async def run_pruning(self) -> None:
        await self._every(self.prune_every_s, self.prune_once, "pruning")

    @staticmethod
    async def _every(interval_s: float, tick: Callable[[], Awaitable[int]], what: str) -> None:
        while True:
            try:
                await tick()
            except ENGINE_ERRORS as exc:
                log.warning("alerts %s failed (%s); next try in %.1fs", what, type(exc).__name__, interval_s)
            await asyncio.sleep(interval_s)
