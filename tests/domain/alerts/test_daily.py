"""The daily digest schedule (pure): local time of day in a time zone, across DST changes, and when a
target's digest is due."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from services.alerts.domain.daily import DigestSchedule, due_occurrence
from services.alerts.domain.targets import Target

BERLIN = DigestSchedule(at=time(8, 30), timezone="Europe/Berlin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_the_default_is_nine_utc_every_day() -> None:
    s = DigestSchedule()
    assert s.latest_at_or_before(utc(2026, 3, 2, 9, 0)) == utc(2026, 3, 2, 9, 0)
    assert s.latest_at_or_before(utc(2026, 3, 2, 8, 59)) == utc(2026, 3, 1, 9, 0)
    assert s.next_after(utc(2026, 3, 2, 9, 0)) == utc(2026, 3, 3, 9, 0)


def test_local_time_follows_the_zone_across_dst() -> None:
    # Berlin: CET (+1) until 29 March 2026 01:00 UTC, then CEST (+2); back on 25 October 2026.
    assert BERLIN.next_after(utc(2026, 3, 27, 12, 0)) == utc(2026, 3, 28, 7, 30)
    assert BERLIN.next_after(utc(2026, 3, 28, 12, 0)) == utc(2026, 3, 29, 6, 30)
    assert BERLIN.next_after(utc(2026, 10, 24, 12, 0)) == utc(2026, 10, 25, 7, 30)
    assert BERLIN.latest_at_or_before(utc(2026, 3, 29, 6, 29)) == utc(2026, 3, 28, 7, 30)


def test_a_time_the_dst_change_skips_moves_forward_and_a_repeated_one_is_taken_once() -> None:
    skipped = DigestSchedule(at=time(2, 30), timezone="Europe/Berlin")
    assert skipped.next_after(utc(2026, 3, 28, 12, 0)) == utc(2026, 3, 29, 1, 30)  # 03:30 CEST
    repeated = DigestSchedule(at=time(2, 30), timezone="Europe/Berlin")
    first = repeated.next_after(utc(2026, 10, 24, 12, 0))
    assert first == utc(2026, 10, 25, 0, 30)  # 02:30 CEST, the first of the two
    assert repeated.next_after(first) == utc(2026, 10, 26, 1, 30)  # not again at 02:30 CET that night


def test_a_digest_is_due_once_per_scheduled_moment_after_the_target_had_something() -> None:
    at = utc(2026, 3, 2, 7, 30)  # 08:30 Berlin
    assert due_occurrence(BERLIN, now=at, last_sent=None, first_seen=at - timedelta(hours=1)) == at
    assert due_occurrence(BERLIN, now=at - timedelta(seconds=1), last_sent=None,
                          first_seen=at - timedelta(hours=1)) is None
    assert due_occurrence(BERLIN, now=at + timedelta(hours=2), last_sent=None,
                          first_seen=at + timedelta(hours=1)) is None  # first risk after today's moment
    assert due_occurrence(BERLIN, now=at + timedelta(hours=5), last_sent=at + timedelta(seconds=2),
                          first_seen=at - timedelta(days=3)) is None  # already sent today
    # down for two days: the latest moment only, once
    assert due_occurrence(BERLIN, now=at + timedelta(days=2, hours=1), last_sent=at - timedelta(days=1),
                          first_seen=at - timedelta(days=3)) == at + timedelta(days=2)


def test_the_dedup_key_names_the_local_day() -> None:
    from services.alerts.domain.daily import daily_key

    target = Target(kind="slack_dm", address="U1", receiver="csm")
    late = DigestSchedule(at=time(0, 30), timezone="Asia/Tokyo")  # 15:30 UTC the day before
    occurrence = late.latest_at_or_before(utc(2026, 3, 2, 16, 0))
    assert occurrence == utc(2026, 3, 2, 15, 30)
    assert daily_key(target, late, occurrence) == "daily|slack_dm:U1|2026-03-03"


def test_an_embedded_period_replaces_the_day() -> None:
    every = DigestSchedule(at=time(0, 0, 5), every=timedelta(seconds=24))
    assert every.latest_at_or_before(utc(2026, 3, 2, 0, 0, 30)) == utc(2026, 3, 2, 0, 0, 29)
    assert every.next_after(utc(2026, 3, 2, 0, 0, 29)) == utc(2026, 3, 2, 0, 0, 53)
