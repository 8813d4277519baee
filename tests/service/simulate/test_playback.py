"""Accelerated time: history as a backfill, the live tail paced by the speed-up."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from services.simulate.model import SimEvent
from services.simulate.playback import Player

LIVE = datetime(2026, 3, 1, tzinfo=UTC)


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


class RecordingSink:
    def __init__(self, time: FakeTime) -> None:
        self.time = time
        self.batches: list[tuple[float, list[SimEvent]]] = []
        self.drained = False

    async def submit(self, batch: Sequence[SimEvent]) -> None:
        self.batches.append((self.time.now, list(batch)))

    async def drain(self) -> None:
        self.drained = True


def ev(at: datetime, n: int) -> SimEvent:
    return SimEvent(at, {"id": str(n)})


async def test_history_goes_at_once_in_batches_then_live_follows_event_time() -> None:
    time = FakeTime()
    sink = RecordingSink(time)
    history = [ev(LIVE - timedelta(hours=10) + timedelta(minutes=i), i) for i in range(25)]
    live = [ev(LIVE + timedelta(hours=h), 100 + h) for h in (1, 2, 5, 10)]
    player = Player(sink, LIVE, speedup=3600, batch_size=10, clock=time.clock, sleep=time.sleep)
    await player.play(history + live)
    assert sink.drained and player.phase == "done"
    sent = [e for _, batch in sink.batches for e in batch]
    assert sent == history + live
    backfill = [(t, b) for t, b in sink.batches if b[0].at < LIVE]
    assert [len(b) for _, b in backfill] == [10, 10, 5] and all(t == 0 for t, _ in backfill)
    # 1 simulated hour per second: an event 5 h into the live part is sent about 5 s after it began.
    for sent_at, batch in sink.batches[len(backfill):]:
        for e in batch:
            due = (e.at - LIVE).total_seconds() / 3600
            assert due <= sent_at <= due + 0.5
    assert player.sim_time == live[-1].at


async def test_speedup_zero_sends_everything_as_fast_as_possible() -> None:
    time = FakeTime()
    sink = RecordingSink(time)
    events = [ev(LIVE + timedelta(hours=h), h) for h in range(12)]
    await Player(sink, LIVE, speedup=0, batch_size=5, clock=time.clock, sleep=time.sleep).play(events)
    assert [len(b) for _, b in sink.batches] == [5, 5, 2] and time.now == 0
