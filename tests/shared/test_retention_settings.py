"""The retention settings (docs/retention.md): documented defaults, per-table ages, clear errors."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from shared.retention import age_days, dedup_grace, format_age
from shared.settings import RETENTION_DAYS, Settings
from shared.startup_errors import settings_problems


def _problems(**values: object) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        Settings(**values)
    return settings_problems(caught.value)


def test_defaults_and_overrides_per_table():
    settings = Settings(retention_days={"scoring_history": 730})
    assert settings.retention_age("scoring_history") == timedelta(days=730)
    assert settings.retention_age("scoring_processed_events") == timedelta(days=35)   # the horizon
    assert settings.retention_age("alerts_processed") == timedelta(days=35)
    assert settings.retention_age("alerts_slack_requests") == timedelta(days=1)
    assert Settings().retention_interval_s == 600
    assert set(RETENTION_DAYS) == {"scoring_processed_events", "scoring_outbox", "scoring_history",
                                   "alerts_processed", "alerts_deliveries", "alerts_attempts",
                                   "alerts_digest_items", "alerts_slack_requests"}


def test_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CHURNSIGNAL_RETENTION_DAYS", '{"scoring_outbox": 14}')
    monkeypatch.setenv("CHURNSIGNAL_RETENTION_INTERVAL_S", "120")
    settings = Settings()
    assert settings.retention_age("scoring_outbox") == timedelta(days=14)
    assert settings.retention_interval_s == 120


def test_ages_with_a_unit_and_plain_days(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CHURNSIGNAL_RETENTION_DAYS", '{"scoring_outbox": "10m", "scoring_history": "6h", '
                       '"alerts_digest_items": "35d", "alerts_attempts": "30", "alerts_deliveries": 8.5}')
    settings = Settings()
    assert settings.retention_age("scoring_outbox") == timedelta(minutes=10)
    assert settings.retention_age("scoring_history") == timedelta(hours=6)
    assert settings.retention_age("alerts_digest_items") == timedelta(days=35)
    assert settings.retention_age("alerts_attempts") == timedelta(days=30)       # a plain number: days
    assert settings.retention_age("alerts_deliveries") == timedelta(days=8.5)
    # Under a day, down to a minute; a horizon of minutes needs a lateness as short.
    short = Settings(scoring_allowed_lateness_s=60, retention_days={"scoring_processed_events": "5m",
                                                                    "alerts_processed": "1m", "scoring_history": 0.5})
    assert short.retention_age("scoring_processed_events") == timedelta(minutes=5)
    assert short.retention_age("alerts_processed") == timedelta(minutes=1)
    assert short.retention_age("scoring_history") == timedelta(hours=12)


@pytest.mark.parametrize(("days", "message"), [
    ({"scoring_histroy": 30}, "CHURNSIGNAL_RETENTION_DAYS: unknown table 'scoring_histroy' (known: "),
    ({"scoring_history": "30s"}, "CHURNSIGNAL_RETENTION_DAYS: scoring_history: not an age: '30s' (a number of "
                                 "days, or a number with m, h or d: 10m, 6h, 35d)"),
    ({"scoring_history": 0.0001}, "CHURNSIGNAL_RETENTION_DAYS: scoring_history: should be from 1m to 36500d "
                                  "(8.64s given)"),
    ({"scoring_outbox": float("inf")}, "CHURNSIGNAL_RETENTION_DAYS: scoring_outbox: should be from 1m to 36500d "
                                       "(inf given)"),
    ({"scoring_outbox": "-5m"}, "CHURNSIGNAL_RETENTION_DAYS: scoring_outbox: not an age: '-5m'"),
    ({"alerts_deliveries": "7d"}, "CHURNSIGNAL_RETENTION_DAYS: alerts_deliveries: should be from 8d to 36500d "
                                  "(7d given)"),
    ({"alerts_slack_requests": "5m"}, "CHURNSIGNAL_RETENTION_DAYS: alerts_slack_requests: should be from 10m"),
    ({"scoring_outbox": "soon"}, "CHURNSIGNAL_RETENTION_DAYS: scoring_outbox: not an age: 'soon'"),
    ({"scoring_outbox": [1]}, "CHURNSIGNAL_RETENTION_DAYS: scoring_outbox: not an age: this value"),
])
def test_bad_ages_name_the_table(days: dict, message: str):
    (problem,) = _problems(retention_days=days)
    assert problem.startswith(message), problem


def test_the_horizon_covers_the_allowed_lateness():
    (problem,) = _problems(scoring_allowed_lateness_s=3 * 86400, retention_days={"scoring_processed_events": 2})
    assert problem == ("CHURNSIGNAL_RETENTION_DAYS: scoring_processed_events: the deduplication horizon (2d) "
                       "should be at least CHURNSIGNAL_SCORING_ALLOWED_LATENESS_S (259200 s)")
    (problem,) = _problems(retention_days={"scoring_processed_events": "30m"})     # the lateness is an hour
    assert problem.startswith("CHURNSIGNAL_RETENTION_DAYS: scoring_processed_events: the deduplication horizon "
                              "(30m) should be at least")
    assert Settings(scoring_allowed_lateness_s=86400, retention_days={"scoring_processed_events": 1})


def test_interval_must_be_positive():
    (problem,) = _problems(retention_interval_s=0)
    assert problem.startswith("CHURNSIGNAL_RETENTION_INTERVAL_S: should be greater than 0")


def test_a_short_horizon_keeps_its_records_a_shorter_grace():
    # Beyond the horizon, a processed id is kept a day, or the horizon when shorter, never under 10 minutes.
    assert dedup_grace(timedelta(days=35)) == timedelta(days=1)
    assert dedup_grace(timedelta(hours=6)) == timedelta(hours=6)
    assert dedup_grace(timedelta(minutes=5)) == timedelta(minutes=10)


def test_ages_read_back():
    assert [format_age(age_days(v)) for v in ("10m", "6h", "35d", "35", "0.5", "1m", 36500)] == [
        "10m", "6h", "35d", "35d", "12h", "1m", "36500d"]
