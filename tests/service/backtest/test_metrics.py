"""The figures on small hand-made inputs whose answers are known."""

from __future__ import annotations

import pytest

from services.scoring.backtest import metrics


def test_auc_of_a_perfect_a_reversed_and_a_useless_ranking():
    assert metrics.auc([4, 3, 2, 1], [True, True, False, False]) == 1.0
    assert metrics.auc([1, 2, 3, 4], [True, True, False, False]) == 0.0
    assert metrics.auc([1, 1, 1, 1], [True, False, True, False]) == 0.5


def test_auc_counts_a_tie_between_a_churner_and_a_stayer_as_one_half():
    # pairs (churner, stayer): 3>2 win, 3>1 win, 2=2 half, 2>1 win -> 3.5 of 4
    assert metrics.auc([3, 2, 2, 1], [True, True, False, False]) == pytest.approx(0.875)
    # one churner tied with two of three stayers, above the third: (0.5 + 0.5 + 1) / 3
    assert metrics.auc([5, 5, 5, 1], [True, False, False, False]) == pytest.approx(2 / 3)


def test_auc_is_undefined_without_churners_or_without_stayers():
    assert metrics.auc([1, 2, 3], [False, False, False]) is None
    assert metrics.auc([1, 2, 3], [True, True, True]) is None
    assert metrics.auc([], []) is None


def test_auc_matches_the_pairwise_definition_on_a_random_case():
    import random

    rng = random.Random(3)
    risk = [rng.randint(0, 6) for _ in range(60)]
    positive = [rng.random() < 0.3 for _ in range(60)]
    pos = [r for r, p in zip(risk, positive, strict=True) if p]
    neg = [r for r, p in zip(risk, positive, strict=True) if not p]
    pairs = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    assert metrics.auc(risk, positive) == pytest.approx(pairs / (len(pos) * len(neg)))


def test_top_decile_lift():
    # ten accounts, riskiest first; two churners: the riskiest and the sixth. Base rate 0.2, decile rate 1.
    risk = list(range(10, 0, -1))
    positive = [True, False, False, False, False, True, False, False, False, False]
    assert metrics.top_lift(risk, positive, 0.1) == pytest.approx(5.0)
    # the riskiest is a stayer: nobody captured in the decile
    assert metrics.top_lift(risk, [False, True] + [False] * 3 + [True] + [False] * 4, 0.1) == 0.0


def test_top_decile_lift_splits_a_tie_at_the_boundary_pro_rata():
    # the two riskiest are tied, one of them churned; the decile (one account) takes half the tie:
    # half a churner in one account, against a base rate of 2/10 -> 2.5
    risk = [9, 9, 8, 7, 6, 5, 4, 3, 2, 1]
    positive = [False, True, False, False, True, False, False, False, False, False]
    assert metrics.top_lift(risk, positive, 0.1) == pytest.approx(2.5)
    # five accounts: the decile is half an account, the riskiest (a churner): rate 1, base 1/5 -> 5
    assert metrics.top_lift([5, 4, 3, 2, 1], [True, False, False, False, False], 0.1) == pytest.approx(5.0)


def test_lift_is_undefined_without_churners():
    assert metrics.top_lift([3, 2, 1], [False, False, False]) is None
    assert metrics.group_lift([True, False, False], [False, False, False]) is None
    assert metrics.group_lift([False, False, False], [True, False, False]) is None


def test_group_lift():
    # red accounts churn at 1/2, all at 2/5
    red = [True, True, False, False, False]
    assert metrics.group_lift(red, [True, False, True, False, False]) == pytest.approx(1.25)


def test_gains_curve_runs_straight_across_a_tie():
    points = metrics.gains([3, 2, 2, 1], [True, False, True, False])
    assert points == [(0.0, 0.0), (0.25, 0.5), (0.75, 1.0), (1.0, 1.0)]
    assert metrics.gains_at(points, 0.5) == pytest.approx(0.75)
    assert metrics.gains([1, 2], [False, False]) == []


def test_calibration_bands():
    bands = metrics.calibration([5, 15, 15, 100, 95, 90], [True, False, True, False, False, True])
    by_band = {b["band"]: b for b in bands}
    assert len(bands) == 10 and bands[0]["band"] == "0-10" and bands[-1]["band"] == "90-100"
    assert by_band["0-10"] == {"band": "0-10", "low": 0, "high": 10, "accounts": 1, "churned": 1,
                               "churn_rate": 1.0}
    assert (by_band["10-20"]["accounts"], by_band["10-20"]["churned"], by_band["10-20"]["churn_rate"]) == (2, 1, 0.5)
    assert (by_band["90-100"]["accounts"], by_band["90-100"]["churned"]) == (3, 1)   # 100 is in the last band
    assert by_band["50-60"]["accounts"] == 0 and by_band["50-60"]["churn_rate"] is None


def test_flag_figures():
    flagged = [True, True, False, False, True]
    positive = [True, False, True, False, False]
    leads = [10.0, None, 3.0, None, None]          # a lead only counts for a flagged churner
    fig = metrics.flag_figures(flagged, positive, leads, horizon_days=60)
    assert fig["flagged"] == 3 and fig["true_positives"] == 1
    assert fig["precision"] == pytest.approx(1 / 3)
    assert fig["recall"] == pytest.approx(1 / 2)
    assert fig["f1"] == pytest.approx(0.4)                    # 2 * 1 / (3 + 2)
    assert fig["median_lead_days"] == 10.0
    # 2 false alarms among 3 that stayed, over two months: 100 * 2/3 / 2
    assert fig["false_alarms_per_100_per_month"] == pytest.approx(100 / 3)


def test_flag_figures_without_churners_or_without_flags():
    none_churned = metrics.flag_figures([True, False], [False, False], [None, None], horizon_days=30)
    assert none_churned["recall"] is None and none_churned["precision"] == 0.0 and none_churned["f1"] == 0.0
    assert none_churned["median_lead_days"] is None
    assert none_churned["false_alarms_per_100_per_month"] == pytest.approx(50.0)
    nothing = metrics.flag_figures([False, False], [False, False], [None, None], horizon_days=30)
    assert nothing["precision"] is None and nothing["recall"] is None and nothing["f1"] is None
    unflagged = metrics.flag_figures([False, False], [True, False], [None, None], horizon_days=30)
    assert unflagged["precision"] is None and unflagged["recall"] == 0.0 and unflagged["f1"] == 0.0
    all_churned = metrics.flag_figures([True], [True], [4.0], horizon_days=30)
    assert all_churned["false_alarms_per_100_per_month"] is None and all_churned["median_lead_days"] == 4.0


def test_median():
    assert metrics.median([3, 1, 2]) == 2
    assert metrics.median([4, 1, 3, 2]) == 2.5
    assert metrics.median([]) is None
