"""The simulator's ground truth against the real scoring domain (pure: ScoringEngine + PartitionClock).

About 200 accounts over 60 days of history and 14 live days: every scripted churner must be caught by a
risk its story explains, and at most 5 % of the healthy accounts may get a risk once baselines exist.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.simulate.evaluate import Summary, score_against_truth
from services.simulate.generator import Simulation, generate
from services.simulate.model import STORIES, SimulationParams
from services.simulate.offline import replay

NOW = datetime(2026, 11, 25, 22, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def simulation() -> Simulation:
    return generate(SimulationParams(now=NOW, seed=42, accounts=200, history_days=60, live_days=14))


@pytest.fixture(scope="module")
def risks(simulation: Simulation) -> list:
    return replay(simulation.events())


@pytest.fixture(scope="module")
def summary(simulation: Simulation, risks: list) -> Summary:
    return score_against_truth(simulation.truth, risks)


def _report(summary: Summary) -> str:
    lines = summary.lines()
    lines += [f"  false alarm on {account}: {', '.join(types)}"
              for account, types in summary.false_alarms.items()]
    return "\n".join(lines)


def test_the_replay_raises_risks_in_event_time_order_of_each_account(risks: list) -> None:
    assert risks
    last: dict[str, datetime] = {}
    for risk in risks:
        assert risk.occurred_at <= NOW
        assert risk.occurred_at >= last.get(risk.account_id, risk.occurred_at)
        last[risk.account_id] = risk.occurred_at


def test_every_scripted_churner_is_caught(summary: Summary) -> None:
    assert {d.churn.story for d in summary.detections} == set(STORIES)
    assert len(summary.detections) >= 20
    assert not summary.missed, _report(summary)
    for detection in summary.caught:
        assert detection.risk_type in detection.churn.expected_risks
        assert detection.delay is not None and detection.delay.days <= 16


def test_false_alarms_on_healthy_accounts_at_most_5_percent(summary: Summary) -> None:
    assert summary.healthy_accounts >= 170
    assert summary.false_alarm_rate <= 0.05, _report(summary)
