"""The retention settings (docs/retention.md): documented defaults, per-table ages, clear errors."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

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


@pytest.mark.parametrize(("days", "message"), [
    ({"scoring_histroy": 30}, "CHURNSIGNAL_RETENTION_DAYS: unknown table 'scoring_histroy' (known: "),
    ({"scoring_history": 0.5}, "CHURNSIGNAL_RETENTION_DAYS: scoring_history: should be from 1 to 36500 days "
                               "(0.5 given)"),
    ({"scoring_outbox": float("inf")}, "CHURNSIGNAL_RETENTION_DAYS: scoring_outbox: should be from 1 to 36500"),
    ({"alerts_deliveries": 7}, "CHURNSIGNAL_RETENTION_DAYS: alerts_deliveries: should be from 8 to 36500 days"),
    ({"scoring_outbox": "soon"}, "CHURNSIGNAL_RETENTION_DAYS.scoring_outbox: not a valid number"),
])
def test_bad_ages_name_the_table(days: dict, message: str):
    (problem,) = _problems(retention_days=days)
    assert problem.startswith(message), problem


def test_the_horizon_covers_the_allowed_lateness():
    (problem,) = _problems(scoring_allowed_lateness_s=3 * 86400, retention_days={"scoring_processed_events": 2})
    assert problem == ("CHURNSIGNAL_RETENTION_DAYS: scoring_processed_events: the deduplication horizon (2 days) "
                       "should be at least CHURNSIGNAL_SCORING_ALLOWED_LATENESS_S (259200 s)")
    assert Settings(scoring_allowed_lateness_s=86400, retention_days={"scoring_processed_events": 1})


def test_interval_must_be_positive():
    (problem,) = _problems(retention_interval_s=0)
    assert problem.startswith("CHURNSIGNAL_RETENTION_INTERVAL_S: should be greater than 0")
