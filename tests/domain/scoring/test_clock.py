"""The event-time clock of a partition: watermark and per-account timers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.scoring.domain import PartitionClock

T0 = datetime(2026, 6, 1, tzinfo=UTC)
H = timedelta(hours=1)


def test_watermark_is_max_event_time_minus_lateness_and_never_moves_back() -> None:
    clock = PartitionClock(H)
    assert clock.watermark is None
    clock.observe(T0 + 5 * H)
    assert clock.watermark == T0 + 4 * H
    clock.observe(T0 + 2 * H)            # a late event
    assert clock.watermark == T0 + 4 * H
    clock.observe(T0 + 9 * H)
    assert clock.watermark == T0 + 8 * H


def test_a_restored_watermark_is_kept() -> None:
    clock = PartitionClock(H, watermark=T0 + 10 * H)
    clock.observe(T0 + 3 * H)
    assert clock.watermark == T0 + 10 * H


def test_negative_lateness_is_refused() -> None:
    with pytest.raises(ValueError):
        PartitionClock(-H)


def test_timers_fire_once_the_watermark_passes_them_in_due_then_account_order() -> None:
    clock = PartitionClock(H)
    clock.schedule("b", T0 + 2 * H)
    clock.schedule("a", T0 + 2 * H)
    clock.schedule("c", T0 + 1 * H)
    clock.schedule("d", T0 + 6 * H)
    assert clock.pop_due() == []          # no watermark yet
    clock.observe(T0 + 3 * H)             # watermark T0+2h
    assert clock.pop_due() == [(T0 + 1 * H, "c"), (T0 + 2 * H, "a"), (T0 + 2 * H, "b")]
    assert clock.pop_due() == []          # fired timers are gone
    assert len(clock) == 1 and clock.due_at("d") == T0 + 6 * H


def test_schedule_replaces_the_timer_and_none_cancels_it() -> None:
    clock = PartitionClock(timedelta(0))
    clock.schedule("a", T0 + 1 * H)
    clock.schedule("a", T0 + 5 * H)       # replaced: must not fire at T0+1h
    clock.schedule("b", T0 + 1 * H)
    clock.schedule("b", None)             # cancelled
    clock.observe(T0 + 2 * H)
    assert clock.pop_due() == []
    clock.schedule("a", T0 + 1 * H)       # moved back before the watermark: fires at once
    assert clock.pop_due() == [(T0 + 1 * H, "a")]
    clock.observe(T0 + 6 * H)
    assert clock.pop_due() == []          # the T0+5h entry was replaced too


def test_many_reschedules_stay_bounded() -> None:
    clock = PartitionClock(timedelta(0))
    for i in range(10_000):
        clock.schedule(f"acc-{i % 10}", T0 + timedelta(minutes=i))
    assert len(clock) == 10
    assert len(clock._heap) <= 4 * 10 + 64 + 1
    clock.observe(T0 + timedelta(days=30))
    assert [a for _, a in clock.pop_due()] == [f"acc-{i}" for i in range(10)]


def test_a_bounded_pop_leaves_the_rest_due_in_order() -> None:
    clock = PartitionClock(timedelta(0))
    for i in range(5):
        clock.schedule(f"a{i}", T0 + timedelta(minutes=i))
    clock.observe(T0 + timedelta(hours=1))
    assert clock.pop_due(2) == [(T0, "a0"), (T0 + timedelta(minutes=1), "a1")]
    assert clock.has_due()
    assert clock.pop_due(2) == [(T0 + timedelta(minutes=2), "a2"), (T0 + timedelta(minutes=3), "a3")]
    assert clock.pop_due(2) == [(T0 + timedelta(minutes=4), "a4")]
    assert not clock.has_due()
    assert clock.pop_due(2) == []


def test_an_overdue_timer_is_taken_by_its_account_alone() -> None:
    clock = PartitionClock(timedelta(0))
    clock.schedule("a", T0)
    clock.schedule("b", T0 + timedelta(minutes=1))
    clock.schedule("c", T0 + timedelta(hours=2))
    assert clock.pop_overdue("a") is None           # not due yet: the watermark has not passed it
    clock.observe(T0 + timedelta(hours=1))
    assert clock.pop_overdue("c") is None           # due later than the watermark
    assert clock.pop_overdue("b") == T0 + timedelta(minutes=1)
    assert clock.pop_overdue("b") is None           # taken once
    assert clock.pop_due() == [(T0, "a")]           # the taken timer does not fire again
    assert clock.due_at("c") == T0 + timedelta(hours=2)
    assert not clock.has_due()
