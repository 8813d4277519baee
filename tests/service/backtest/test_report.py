"""The figures of one cut from hand-made account states and activity: who is counted, and how."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.scoring.backtest.history import Activity
from services.scoring.backtest.replay import DAY_S, AccountAtCut
from services.scoring.backtest.report import evaluate_cut, text_summary

CUT = datetime(2026, 3, 1, tzinfo=UTC)
CUT_DAY = int(CUT.timestamp()) // DAY_S
RISK_TYPES = ("usage_drop", "champion_left")


def _account(account_id: str, score: float | None, tier: str, **risks: datetime) -> AccountAtCut:
    return AccountAtCut(account_id, score, tier, tuple(risks), dict(risks))


def _activity(events_days_ago: list[float], usage_days_ago: list[int]) -> Activity:
    times = sorted(CUT.timestamp() - d * DAY_S for d in events_days_ago)
    return Activity(times, sorted(CUT_DAY - d for d in usage_days_ago))


@pytest.fixture
def cut_figures():
    accounts = {
        "a": _account("a", 20.0, "red", usage_drop=CUT - timedelta(days=5)),
        "b": _account("b", 80.0, "green"),
        "c": _account("c", 50.0, "yellow", usage_drop=CUT - timedelta(days=1)),
        "d": _account("d", None, "unknown"),
        "e": _account("e", 30.0, "red"),
        "f": _account("f", 10.0, "red"),
    }
    outcomes = {
        "a": CUT + timedelta(days=10),     # churned within the horizon, flagged 15 days ahead
        "b": None,                         # stayed
        "c": CUT + timedelta(days=40),     # churned, but after the 30-day horizon: counts as stayed
        "d": CUT + timedelta(days=1),      # churned, no score yet
        "e": CUT - timedelta(days=1),      # churned before the cut: not counted
        "zzz": None,                       # not in the history at the cut: ignored
    }                                      # f: no outcome row
    activity = {
        "a": _activity([1.5, 20.5, 40], [20, 18, 16]),
        "b": _activity([d + 0.5 for d in range(10)] + [30, 31], list(range(1, 12))),
        "c": _activity([3, 5, 6, 7, 8, 50], [10, 5]),
    }
    entry, charts = evaluate_cut(CUT, accounts, activity, outcomes, timedelta(days=30), RISK_TYPES)
    return entry, charts


def test_population_and_outcome_window(cut_figures):
    entry, _ = cut_figures
    assert entry["cut"] == "2026-03-01"
    assert entry["accounts"] == 4 and entry["churned"] == 2          # a and d; c churned too late
    assert entry["excluded"] == {"churned_before_cut": 1, "no_outcome": 1}
    assert entry["base_rate"] == 0.5


def test_health_figures(cut_figures):
    health = cut_figures[0]["health"]
    assert health["scored"] == 3 and health["unscored"] == {"accounts": 1, "churned": 1}
    assert health["auc"] == 1.0                       # the churner has the lowest score
    assert health["red_lift"] == 3.0                  # red churn rate 1 over a base rate of 1/3
    assert health["bottom_decile_lift"] == 3.0        # the lowest score is a churner
    bands = {b["band"]: (b["accounts"], b["churned"]) for b in health["calibration"]}
    assert bands["20-30"] == (1, 1) and bands["50-60"] == (1, 0) and bands["80-90"] == (1, 0)
    assert health["tiers"]["red"] == {"accounts": 1, "churned": 1}


def test_risk_figures(cut_figures):
    entry, _ = cut_figures
    usage = entry["risks"]["usage_drop"]
    assert usage == {"flagged": 2, "true_positives": 1, "precision": 0.5, "recall": 0.5, "f1": 0.5,
                     "median_lead_days": 15.0, "false_alarms_per_100_per_month": 50.0}
    left = entry["risks"]["champion_left"]
    assert left["flagged"] == 0 and left["precision"] is None and left["recall"] == 0.0
    assert entry["any_risk"]["flagged"] == 2


def test_baselines(cut_figures):
    entry, charts = cut_figures
    volume = entry["baselines"]["recent_volume"]
    assert volume["accounts"] == 4 and volume["auc"] == 1.0   # the churners sent the fewest events lately
    silence = entry["baselines"]["silence_2x_median_gap"]
    # a: active every other day, silent 16 days > 2 x 2 since day -11; b: daily, c: gap 5, silent 5; d: no usage
    assert silence["flagged"] == 1 and silence["true_positives"] == 1 and silence["recall"] == 0.5
    assert silence["median_lead_days"] == 21.0
    assert silence["ranked"] == 3 and silence["auc"] == 1.0
    assert set(charts.gains) == {"health score", "recent volume (28 days)", "silence / median gap",
                                 "logistic regression on counts (5-fold CV)"}


def test_a_cut_without_churners_has_undefined_figures():
    accounts = {"a": _account("a", 20.0, "red", usage_drop=CUT), "b": _account("b", 90.0, "green")}
    entry, charts = evaluate_cut(CUT, accounts, {}, {"a": None, "b": None}, timedelta(days=30), RISK_TYPES)
    assert entry["churned"] == 0
    assert entry["health"]["auc"] is None and entry["health"]["red_lift"] is None
    assert entry["health"]["bottom_decile_lift"] is None
    assert entry["risks"]["usage_drop"]["recall"] is None and entry["risks"]["usage_drop"]["precision"] == 0.0
    assert entry["baselines"]["recent_volume"]["auc"] is None
    assert charts.gains["health score"] == []
    doc = {"horizon_days": 30.0, "lookback_days": 0.0, "cuts": [entry]}
    assert "Cut 2026-03-01: 2 accounts, 0 churned" in text_summary(doc)
