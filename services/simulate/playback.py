"""Accelerated time: the history goes out as a backfill, the live tail at a speed-up of event time.

With a speed-up of 3600, one simulated hour passes per real second. The timeline ends at the moment
the simulation was generated, so every event's `occurred_at` is in the past when it is sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from services.simulate.model import SimEvent


class BatchSink(Protocol):
    async def submit(self, batch: Sequence[SimEvent]) -> None: ...

    async def drain(self) -> None: ...


class Player:
    def __init__(self, sink: BatchSink, live_from: datetime, *, speedup: float, batch_size: int = 500,
                 flush_every_s: float = 0.25, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._sink = sink
        self.live_from = live_from
        self.speedup = speedup
        self._batch_size = batch_size
        self._flush_every = flush_every_s
        self._clock = clock
        self._sleep = sleep
        self.phase = "history"
        self.sim_time: datetime | None = None   # event time reached so far
        self._live_started: float | None = None

    def _sim_now(self) -> datetime:
        assert self._live_started is not None
        return self.live_from + timedelta(seconds=(self._clock() - self._live_started) * self.speedup)

    async def play(self, events: Iterable[SimEvent]) -> None:
        batch: list[SimEvent] = []
        it = iter(events)
        pending: SimEvent | None = None
        for event in it:
            if event.at >= self.live_from and self.speedup > 0:
                pending = event
                break
            batch.append(event)
            self.sim_time = event.at
            if len(batch) >= self._batch_size:
                await self._sink.submit(batch)
                batch = []
        if batch:
            await self._sink.submit(batch)
            batch = []
        if pending is not None:
            await self._play_live(pending, it)
        await self._sink.drain()
        self.phase = "done"

    async def _play_live(self, first: SimEvent, rest: Iterable[SimEvent]) -> None:
        self.phase = "live"
        self._live_started = self._clock()
        last_flush = self._clock()
        batch: list[SimEvent] = []
        for event in _chain(first, rest):
            while (now := self._sim_now()) < event.at:
                self.sim_time = now
                if batch and self._clock() - last_flush >= self._flush_every:
                    await self._sink.submit(batch)
                    batch, last_flush = [], self._clock()
                wait = (event.at - now).total_seconds() / self.speedup
                await self._sleep(min(self._flush_every, max(wait, 0.001)))
            batch.append(event)
            self.sim_time = max(self.sim_time or event.at, event.at)
            if len(batch) >= self._batch_size or self._clock() - last_flush >= self._flush_every:
                await self._sink.submit(batch)
                batch, last_flush = [], self._clock()
        if batch:
            await self._sink.submit(batch)


def _chain(first: SimEvent, rest: Iterable[SimEvent]) -> Iterable[SimEvent]:
    yield first
    yield from rest
