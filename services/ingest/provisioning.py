"""Creating the topics ingest writes to, with the configured (co-partitioned) partition count.

Ingest must start while Kafka is down: the first attempt is bounded, later ones run in the background
with capped backoff until the topics exist. Until then ingest answers 503 rather than let the broker
auto-create a topic with its own default partition count.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from shared.backoff import Backoff
from shared.bus.port import Bus
from shared.errors import BusUnavailable

log = logging.getLogger(__name__)


class TopicProvisioner:
    def __init__(self, bus: Bus, topics: Sequence[str], partitions: int, *, attempt_timeout_s: float = 10.0,
                 max_backoff_s: float = 5.0, configs: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self._bus = bus
        self._topics = tuple(topics)
        self._partitions = partitions
        self._configs = configs  # topic configs by topic (e.g. the compacted ones), see Bus.ensure_topics
        self._attempt_timeout_s = attempt_timeout_s
        self._max_backoff_s = max_backoff_s
        self.ready = False

    async def attempt(self) -> bool:
        """One bounded try; True once the topics exist."""
        try:
            async with asyncio.timeout(self._attempt_timeout_s):
                await self._bus.ensure_topics(self._topics, self._partitions, self._configs)
        except (BusUnavailable, TimeoutError) as exc:
            log.warning("cannot create topics yet (%s)", exc or type(exc).__name__)
            return False
        self.ready = True
        return True

    async def run(self) -> None:
        """Retry until the topics exist (meant to run as a background task)."""
        backoff = Backoff(0.25, cap=self._max_backoff_s)
        while not await self.attempt():
            delay = backoff.next()
            await asyncio.sleep(delay)
        log.info("topics ready: %s", ", ".join(self._topics))
