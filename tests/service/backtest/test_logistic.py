"""The logistic-regression baseline: features from window counts, the fit, the folds, and its figures."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

from services.scoring.backtest import logistic, metrics
from services.scoring.backtest.history import TYPE_KEYS, Activity, read_events
from services.scoring.backtest.logistic import (
    OTHER,
    cross_validated,
    feature_names,
    features,
    fit,
    fold_of,
    standardized,
    vocabulary,
)
from services.scoring.backtest.replay import DAY_S, AccountAtCut
from services.scoring.backtest.report import evaluate_cut
from shared.events import EventType
from tests.service.backtest.histories import write_events

CUT = datetime(2026, 3, 1, tzinfo=UTC)


def _gaussian_rows(n: int, width: int, seed: int) -> list[list[float]]:
    rng = random.Random(seed)
    return [[rng.gauss(0, 1) for _ in range(width)] for _ in range(n)]


def _folds(n: int) -> list[int]:
    return [fold_of(f"acct-{i:05d}") for i in range(n)]


def test_separable_classes_are_ranked_perfectly():
    raw = _gaussian_rows(600, 8, seed=1)
    labels = [r[0] + 0.5 * r[3] > 0.2 for r in raw]
    rows, kept = standardized(raw)
    assert kept == list(range(8))
    risk = cross_validated(rows, labels, _folds(len(rows)))
    assert metrics.auc(risk, labels) > 0.99


def test_noise_ranks_at_chance():
    raw = _gaussian_rows(1_000, 20, seed=2)
    rows, _ = standardized(raw)
    folds = _folds(len(rows))
    aucs = []
    for seed in range(10, 16):
        rng = random.Random(seed)
        labels = [rng.random() < 0.3 for _ in raw]
        auc = metrics.auc(cross_validated(rows, labels, folds), labels)
        assert auc is not None and abs(auc - 0.5) < 0.1
        aucs.append(auc)
    assert abs(sum(aucs) / len(aucs) - 0.5) < 0.03


def test_the_fit_reaches_the_optimum():
    raw = _gaussian_rows(400, 5, seed=4)
    rng = random.Random(5)
    truth = [1.5, -1.0, 0.0, 0.5, 2.0]
    labels = [rng.random() < 1 / (1 + math.exp(-(0.3 + sum(w * x for w, x in zip(truth, r, strict=True)))))
              for r in raw]
    l2 = 1.0
    model = fit(raw, labels, l2=l2)
    assert model.converged
    # the gradient of the penalized log-loss vanishes at the optimum
    p = model.probabilities(raw)
    residual = [pi - (1.0 if y else 0.0) for pi, y in zip(p, labels, strict=True)]
    assert abs(sum(residual)) < 1e-3
    for j in range(5):
        g = sum(r * row[j] for r, row in zip(residual, raw, strict=True)) + l2 * model.coefficients[j]
        assert abs(g) < 1e-3
    # and the coefficients are those of the model that made the labels, within sampling error
    assert all(abs(c - w) < 0.6 for c, w in zip(model.coefficients, truth, strict=True))


def test_one_class_gets_its_rate():
    model = fit([[1.0], [2.0]], [False, False])
    assert model.probabilities([[5.0]])[0] < 1e-6
    assert all(p > 0.999 for p in cross_validated([[1.0], [2.0], [3.0]], [True, True, True], [0, 1, 2]))


def test_folds_are_stable_hashes_of_the_account_id():
    ids = [f"acct-{i:05d}" for i in range(2_000)]
    folds = [fold_of(a) for a in ids]
    assert folds == [fold_of(a) for a in ids]                 # deterministic
    assert set(folds) == set(range(logistic.FOLDS))
    assert all(300 < folds.count(k) < 500 for k in range(logistic.FOLDS))   # about a fifth each
    # the same answer as a fresh computation of the documented hash (not Python's per-process hash)
    import hashlib
    assert fold_of("acme-001") == int.from_bytes(
        hashlib.blake2b(b"acme-001", digest_size=8).digest(), "big") % logistic.FOLDS


def test_predictions_do_not_depend_on_row_order():
    raw = _gaussian_rows(300, 4, seed=6)
    labels = [r[1] > 0.3 for r in raw]
    rows, _ = standardized(raw)
    ids = [f"acct-{i:05d}" for i in range(300)]
    first = cross_validated(rows, labels, [fold_of(a) for a in ids])
    order = list(reversed(range(300)))
    second = cross_validated([rows[i] for i in order], [labels[i] for i in order], [fold_of(ids[i]) for i in order])
    assert all(abs(first[i] - second[j]) < 1e-4 for j, i in enumerate(order))


def test_features_pool_the_rare_usage_features():
    ticket = TYPE_KEYS[EventType.TICKET]
    counts = [{"report": 5, "export": 2, "rare": 1, ticket: 3}, {"report": 1, "login": 4}]
    kept = vocabulary(counts, top=2)
    assert kept == ["report", "login"]                        # 6 and 4 events; export (2) and rare (1) pooled
    names = feature_names(kept)
    assert names == ["usage", "ticket", "sentiment", "account", "contact", "usage:report", "usage:login", OTHER]
    row = features(counts[0], kept)
    assert row == [math.log1p(n) for n in (8, 3, 0, 0, 0, 5, 0, 3)]
    # a feature named like an event type does not collide with it
    assert features({"ticket": 2}, ["ticket"])[:2] == [math.log1p(2), 0.0]


def test_standardized_drops_constant_columns():
    rows, kept = standardized([[1.0, 5.0, 0.0], [3.0, 5.0, 2.0], [2.0, 5.0, 1.0]])
    assert kept == [0, 2]
    assert all(abs(sum(col)) < 1e-12 for col in zip(*rows, strict=True))
    assert all(abs(sum(x * x for x in col) / 3 - 1) < 1e-12 for col in zip(*rows, strict=True))


def test_the_reader_counts_each_cuts_window(tmp_path):
    def event(i: int, days_before: float, kind: str, data: dict) -> dict:
        at = CUT - timedelta(days=days_before)
        return {"id": f"e{i}", "type": kind, "account_id": "a", "occurred_at": at.isoformat(), "data": data}

    raws = [event(0, 40, "usage", {"feature": "report"}),     # before both windows
            event(1, 27, "usage", {"feature": "report"}),     # in the cut's window
            event(2, 5, "usage", {"feature": "export", "count": 9}),
            event(3, 3, "ticket", {"ticket_id": "t", "status": "opened"}),
            event(4, 0, "usage", {"feature": "report"})]     # at the cut: after it
    path = write_events(tmp_path / "events.ndjson", raws)
    early = CUT - timedelta(days=10)
    history = read_events(path, partitions=3, until=CUT + timedelta(days=1), cuts=[CUT, early])
    counts = history.activity["a"].window_counts
    assert counts[CUT.timestamp()] == {"report": 1, "export": 1, TYPE_KEYS[EventType.TICKET]: 1}
    assert counts[early.timestamp()] == {"report": 1}    # its window: 38 to 10 days before the cut


def _member_activity(usage: int, tickets: int) -> Activity:
    counts = {"report": usage, TYPE_KEYS[EventType.TICKET]: tickets} if usage or tickets else {}
    return Activity([CUT.timestamp() - DAY_S], [int(CUT.timestamp()) // DAY_S - 1], {CUT.timestamp(): counts})


def test_the_cut_reports_the_baseline():
    rng = random.Random(7)
    accounts, activity, outcomes = {}, {}, {}
    for i in range(200):
        account = f"acct-{i:03d}"
        churns = i % 4 == 0
        accounts[account] = AccountAtCut(account, 50.0 if i % 10 else None, "red" if i % 5 == 0 else "green", (), {})
        activity[account] = _member_activity(rng.randint(0, 3) if churns else rng.randint(6, 30), rng.randint(0, 2))
        outcomes[account] = CUT + timedelta(days=5) if churns else None
    entry, charts = evaluate_cut(CUT, accounts, activity, outcomes, timedelta(days=30), ("usage_drop",))
    lr = entry["baselines"]["logistic_counts"]
    assert set(lr) == {"window_days", "folds", "l2", "features", "usage_features", "accounts", "auc",
                       "top_decile_lift", "lift_at_red_count"}
    assert lr["accounts"] == entry["health"]["scored"] == 180     # the same accounts as the health AUC
    assert lr["window_days"] == 28 and lr["folds"] == 5 and lr["usage_features"] == 1
    assert lr["features"] == 3            # usage, ticket, usage:report; the columns that never vary are left out
    assert lr["auc"] > 0.95                                       # few recent events = churn, learned
    assert lr["lift_at_red_count"] is not None and lr["top_decile_lift"] > 2
    assert charts.auc["logistic regression on counts (5-fold CV)"] == lr["auc"] or abs(
        charts.auc["logistic regression on counts (5-fold CV)"] - lr["auc"]) < 1e-4


def test_replay_counts_what_the_reader_did_not_and_each_id_once(tmp_path):
    from services.scoring.backtest.replay import replay
    from services.scoring.domain import ScoringConfig, ScoringEngine

    def event(i: str, days_before: float, feature: str) -> dict:
        at = CUT - timedelta(days=days_before)
        return {"id": i, "type": "usage", "account_id": "a", "occurred_at": at.isoformat(),
                "data": {"feature": feature}}

    raws = [event("e1", 5, "report"), event("e2", 4, "export"), event("e1", 3, "report"), event("e3", 2, "report")]
    path = write_events(tmp_path / "events.ndjson", raws)
    engine = ScoringEngine(ScoringConfig())
    counted = read_events(path, partitions=2, until=CUT, cuts=[CUT])
    plain = read_events(path, partitions=2, until=CUT)
    for history in (counted, plain):
        result = replay(history, [CUT], engine, allowed_lateness=timedelta(hours=1))
        assert result.activity["a"].window_counts == {CUT.timestamp(): {"report": 2, "export": 1}}
