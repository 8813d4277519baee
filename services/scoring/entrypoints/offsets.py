"""The consumer group's Kafka offsets, committed in the background after the batches' transactions.

They are advisory: the database positions are the truth (a consumer seeks to them on assignment), so a
late or failed offset commit costs nothing but a less accurate lag in Kafka's tools. That is why they are
sent at most every `every_s`, one commit in flight at a time, instead of once per batch.
"""

from __future__ import annotations

import asyncio
import logging
import time

from shared.bus.port import Subscriber, TopicPartition

log = logging.getLogger(__name__)


class KafkaOffsets:
    """Positions committed in the database and not yet in Kafka, and the commit that sends them."""

    def __init__(self, every_s: float) -> None:
        self._every_s = every_s
        self._pending: dict[TopicPartition, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._next_at = 0.0     # time.monotonic() before which no new commit starts

    def committed(self, subscriber: Subscriber, positions: dict[TopicPartition, int]) -> None:
        """Queue a committed batch's positions; start a commit unless one is in flight or it is too soon."""
        self._pending.update(positions)
        if self._task is not None and not self._task.done():
            return
        if time.monotonic() < self._next_at:
            return
        self._task = asyncio.create_task(self._send(subscriber))

    async def flush(self, subscriber: Subscriber) -> None:
        """Send the positions not yet in Kafka now (when idle: the offsets reach the log end)."""
        if not self._pending:
            return
        task = self._task
        if task is not None and not task.done():
            return    # the commit in flight is followed by this one at the next idle turn
        self._task = asyncio.create_task(self._send(subscriber))

    async def drain(self, subscriber: Subscriber) -> None:
        """On stop: let the commit in flight finish, then send whatever is left."""
        task = self._task
        if task is not None:
            await task
        if self._pending:
            await self._send(subscriber)

    async def _send(self, subscriber: Subscriber) -> None:
        self._next_at = time.monotonic() + self._every_s
        assigned = subscriber.assignment()
        offsets = {tp: off for tp, off in self._pending.items() if tp in assigned}
        self._pending.clear()
        try:
            await subscriber.commit(offsets)
        except Exception as exc:  # advisory only: positions live in the database
            log.warning("kafka offset commit failed (%s); positions are safe in the database",
                        type(exc).__name__)
