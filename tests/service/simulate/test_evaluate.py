"""Scoring raised risks against the ground truth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.simulate.evaluate import format_delay, score_against_truth
from services.simulate.model import GroundTruth, ScriptedChurn
from shared.risks import HealthBrief, RiskEvent

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def truth() -> GroundTruth:
    churners = (
        ScriptedChurn("a1", "Acme", "champion_left", T0 + timedelta(days=2),
                      ("champion_left", "champion_inactive"), "champion leaves"),
        ScriptedChurn("a2", "Globex", "ticket_storm", T0 + timedelta(days=3), ("ticket_spike",), "storm"),
        ScriptedChurn("a3", "Initech", "usage_fade", T0 + timedelta(days=1), ("usage_drop", "health_drop"),
                      "fade"),
    )
    return GroundTruth(seed=1, start=T0 - timedelta(days=60), live_from=T0 + timedelta(days=7),
                       end=T0 + timedelta(days=14), evaluate_from=T0,
                       accounts=tuple(f"a{i}" for i in range(1, 11)), churners=churners)


def risk(account: str, kind: str, at: datetime, transition: str = "opened") -> RiskEvent:
    return RiskEvent(event_id=f"{account}:{kind}:{at.isoformat()}:{transition}", risk_id=f"{account}:{kind}",
                     seq=1, transition=transition, account_id=account, type=kind, severity="high",
                     summary="s", evidence={}, health=HealthBrief(score=50, tier="yellow"), occurred_at=at,
                     detected_at=at)


def test_caught_missed_false_alarms_and_delays() -> None:
    risks = [
        risk("a1", "champion_inactive", T0 + timedelta(days=9)),
        risk("a1", "champion_left", T0 + timedelta(days=4)),
        # before its signal start: does not count as catching the storm
        risk("a2", "ticket_spike", T0 + timedelta(days=1)),
        # a risk of a type the fade story does not explain
        risk("a3", "ticket_spike", T0 + timedelta(days=2)),
        risk("a4", "usage_drop", T0 + timedelta(days=5)),
        risk("a4", "usage_drop", T0 + timedelta(days=6), transition="resolved"),
        risk("a4", "health_drop", T0 + timedelta(days=5)),
        risk("a5", "ticket_spike", T0 - timedelta(days=10)),   # warm-up
    ]
    summary = score_against_truth(truth(), risks)
    assert [(d.churn.account_id, d.risk_type) for d in summary.caught] == [("a1", "champion_left")]
    assert summary.caught[0].delay == timedelta(days=2)
    assert {d.churn.account_id for d in summary.missed} == {"a2", "a3"}
    assert summary.false_alarms == {"a4": ("usage_drop", "health_drop")}
    assert summary.healthy_accounts == 7
    assert abs(summary.false_alarm_rate - 1 / 7) < 1e-9
    assert summary.warmup_risks == 1
    assert summary.risks_by_type == {"champion_inactive": 1, "champion_left": 1, "ticket_spike": 3,
                                     "usage_drop": 1, "health_drop": 1}
    assert summary.median_delay == timedelta(days=2)
    assert summary.by_story() == {"champion_left": (1, 1), "ticket_storm": (0, 1), "usage_fade": (0, 1)}
    text = "\n".join(summary.lines())
    assert "caught: 1/3" in text and "1/7 (14.3%)" in text and "missed a2 (Globex)" in text


def test_escalation_after_the_signal_counts_and_dicts_are_accepted() -> None:
    risks = [
        {"account_id": "a2", "type": "ticket_spike", "transition": "updated",
         "occurred_at": (T0 + timedelta(days=3, hours=6)).isoformat()},
        {"account_id": "a3", "type": "usage_drop", "transition": "opened",
         "occurred_at": T0 + timedelta(days=5)},
    ]
    summary = score_against_truth(truth(), risks)
    assert {d.churn.account_id: d.delay for d in summary.caught} == {"a2": timedelta(hours=6),
                                                                    "a3": timedelta(days=4)}
    assert summary.median_delay == timedelta(days=2, hours=3)
    assert summary.false_alarms == {}


def test_nothing_raised() -> None:
    summary = score_against_truth(truth(), [])
    assert len(summary.missed) == 3 and summary.median_delay is None and summary.false_alarm_rate == 0
    assert format_delay(None) == "n/a"
    assert format_delay(timedelta(hours=5)) == "5.0 h" and format_delay(timedelta(days=3)) == "3.0 days"


def test_stories_beyond_the_event_time_reached_are_not_counted_as_missed() -> None:
    risks = [risk("a3", "usage_drop", T0 + timedelta(days=2))]
    summary = score_against_truth(truth(), risks, until=T0 + timedelta(days=2, hours=12))
    assert [d.churn.account_id for d in summary.detections] == ["a1", "a3"]
    assert summary.not_started == 1 and len(summary.caught) == 1
    assert "1 more stories had not started" in "\n".join(summary.lines())
