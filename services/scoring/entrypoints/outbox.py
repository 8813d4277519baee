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

from services.scoring.adapters.errors import StoreUnavailable
from services.scoring.adapters.store import OutboxRow, ScoringStore
from shared.bus.port import OutMessage, Publisher
from shared.errors import BusUnavailable

log = logging.getLogger(__name__)


class RiskOutbox:
    """Publishes outbox rows and keeps what is owed: partitions to re-publish, ids to mark published."""

    def __init__(self, *, store: ScoringStore, topic: str, wall_clock: Callable[[], datetime]) -> None:
        self._store = store
        self._topic = topic
        self._now = wall_clock
        self._publisher: Publisher | None = None
        self._republish: set[int] = set()     # partitions whose unpublished rows are sent before going on
        self._published: list[str] = []       # published outbox ids not yet marked in the database

    def attach(self, publisher: Publisher) -> None:
        self._publisher = publisher

    # -- what is owed ------------------------------------------------------------------------------
    @property
    def owes_republish(self) -> bool:
        return bool(self._republish)

    @property
    def has_published(self) -> bool:
        return bool(self._published)

    def loaded(self, numbers: set[int]) -> None:
        """Partitions (re)loaded from the database: their unpublished rows are sent before going on."""
        self._republish |= numbers

    def dropped(self, numbers: set[int]) -> None:
        """Partitions revoked: their next owner sends what they left unpublished."""
        self._republish -= numbers

    def take_published(self) -> list[str]:
        """The ids published since the last call, for the next batch's transaction to mark."""
        ids, self._published = self._published, []
        return ids

    # -- publishing --------------------------------------------------------------------------------
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
        try:
            await self.publish(rows)
        except BusUnavailable:
            # Committed but not sent: sent before anything else once the bus is back.
            self._republish |= {row.partition for row in rows}
            raise

    async def publish(self, rows: list[OutboxRow]) -> None:
        assert self._publisher is not None
        await self._publisher.publish(
            [OutMessage(self._topic, row.key.encode(), row.payload) for row in rows])
        self._published.extend(row.event_id for row in rows)

    async def flush_published(self) -> None:
        """Mark the published ids in the database now (idle or stopping: no next batch will)."""
        if not self._published:
            return
        ids, self._published = self._published, []
        try:
            await self._store.mark_published(ids, self._now())
        except StoreUnavailable as exc:
            # Harmless: they are published again at the next start and consumers dedup by event_id.
            log.warning("could not mark %d risk events as published (%s)", len(ids), exc.message)
            self._published = ids + self._published
