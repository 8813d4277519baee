"""The risk events' way from the outbox table to the risks topic.

Outbox rows commit with their batch and are published right after it. Ids published are marked so in the
next batch's transaction (or on their own when the consumer is idle or stopping). Rows committed but not
published (bus down, crash) are sent again, before anything else, once their partition is loaded: the
alerts consumer deduplicates by event_id, so sending one twice is harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from services.scoring.adapters.store import OutboxRow, ScoringStore
from services.scoring.entrypoints.owed import Owed
from shared.bus.port import OutMessage

log = logging.getLogger(__name__)


class RiskOutbox(Owed[str]):
    """Publishes outbox rows and keeps what is owed: partitions to re-publish, ids to mark published."""

    what = "risk events"

    def __init__(self, *, store: ScoringStore, topic: str, wall_clock: Callable[[], datetime]) -> None:
        super().__init__()
        self._store = store
        self._topic = topic
        self._now = wall_clock

    async def republish(self, owned: set[int]) -> None:
        """Send the unpublished rows of the owned partitions that are owed."""
        numbers = self._republish & owned
        rows = await self._store.unpublished(numbers)
        if rows:
            await self.publish(rows)
            log.info("re-published %d risk events left unpublished", len(rows))
        self._republish -= numbers

    async def publish_committed(self, rows: list[OutboxRow]) -> None:
        """Publish a committed batch's rows; if the bus is down they are owed (and the failure raised)."""
        await self._committed(self.publish(rows), {row.partition for row in rows})

    async def publish(self, rows: list[OutboxRow]) -> None:
        await self.publisher.publish([OutMessage(self._topic, row.key.encode(), row.payload) for row in rows])
        self._published.extend(row.event_id for row in rows)

    async def _settle(self, keys: list[str]) -> None:
        await self._store.mark_published(keys, self._now())
