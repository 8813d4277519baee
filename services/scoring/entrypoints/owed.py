"""What a publisher of committed rows owes: partitions whose stored rows are sent again before going on, and
rows published but not yet settled (marked or deleted) in the database. Shared by the risk outbox and the
health feed; each says how its rows are settled."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Generic, TypeVar

from services.scoring.adapters.errors import StoreUnavailable
from shared.bus.port import Publisher
from shared.errors import BusUnavailable

log = logging.getLogger(__name__)

K = TypeVar("K")


class Owed(Generic[K]):
    """`K`: what identifies a published row for `_settle` (an outbox id, a (partition, seq) key)."""

    what = "rows"                 # for the log line when settling fails
    forget_on_load = False        # whether a (re)load forgets the published keys of its partitions

    def __init__(self) -> None:
        self._publisher: Publisher | None = None
        self._republish: set[int] = set()     # partitions whose stored rows are sent before going on
        self._published: list[K] = []         # published, not yet settled in the database

    def attach(self, publisher: Publisher) -> None:
        self._publisher = publisher

    @property
    def publisher(self) -> Publisher:
        assert self._publisher is not None, "attach a publisher first"
        return self._publisher

    @property
    def owes_republish(self) -> bool:
        return bool(self._republish)

    @property
    def has_published(self) -> bool:
        return bool(self._published)

    def loaded(self, numbers: set[int]) -> None:
        """Partitions (re)loaded from the database: their stored rows are sent before going on."""
        self._republish |= numbers
        if self.forget_on_load:
            self._forget(numbers)

    def dropped(self, numbers: set[int]) -> None:
        """Partitions revoked: their next owner sends what they left."""
        self._republish -= numbers
        if self.forget_on_load:
            self._forget(numbers)

    def take_published(self) -> list[K]:
        """What was published since the last call, for the next batch's transaction to settle."""
        keys, self._published = self._published, []
        return keys

    async def _committed(self, send: Awaitable[None], partitions: set[int]) -> None:
        """Send a committed batch's rows; if the bus is down their partitions are owed (and it is raised)."""
        try:
            await send
        except BusUnavailable:
            # Committed but not sent: sent before anything else once the bus is back.
            self._republish |= partitions
            raise

    async def flush_published(self) -> None:
        """Settle the published rows now (idle or stopping: no next batch will)."""
        if not self._published:
            return
        keys, self._published = self._published, []
        try:
            await self._settle(keys)
        except StoreUnavailable as exc:
            # Harmless: they are published again at the next load, and readers deduplicate by id.
            log.warning("could not settle %d published %s (%s)", len(keys), self.what, exc.message)
            self._published = keys + self._published

    def _forget(self, numbers: set[int]) -> None:
        raise NotImplementedError

    async def _settle(self, keys: list[K]) -> None:
        raise NotImplementedError
