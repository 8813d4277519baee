"""`churnsignal calibrate`: fits weights, tiers, intensity and key features from a labelled history and writes a
scoring config whose version is stamped on the scores."""

from __future__ import annotations

import math
import random
from pathlib import Path

import orjson
import pytest

from services.cli import main
from services.scoring.backtest.calibrate import Example, fit_key_features, fit_tiers, fit_weights
from services.scoring.domain import ScoringConfig
from services.scoring.domain.config import COMPONENTS


def test_weights_are_positive_sum_to_one_and_drop_what_goes_with_churn() -> None:
    rng = random.Random(3)
    rows, labels = [], []
    for _ in range(600):
        good = rng.random() * 100          # a component that goes with staying
        bad = rng.random() * 100           # one whose high values go with churning
        row: list[float | None] = [None] * len(COMPONENTS)
        row[COMPONENTS.index("activity")] = good
        row[COMPONENTS.index("tenure")] = bad
        churn = rng.random() < 1 / (1 + math.exp(-(2.0 - 0.06 * good + 0.02 * bad)))
        rows.append(row)
        labels.append(churn)
    weights = fit_weights(rows, labels)
    assert set(weights) == {"activity"} and weights["activity"] == pytest.approx(1.0)


def test_tiers_put_red_where_the_churn_rate_reaches_the_precision() -> None:
    scores = [float(s) for s in range(100)]
    labels = [s < 20 for s in range(100)]           # everyone below 20 churns
    yellow, green = fit_tiers(scores, labels, precision=0.9)
    assert 20 <= yellow <= 23 and yellow < green <= 100   # (red up to 22: 20 of 22 churn, 91 %)


def test_key_features_keep_the_telling_ones_with_signed_weights() -> None:
    rng = random.Random(5)
    examples = []
    for _ in range(800):
        friends, fights, noise = rng.randint(0, 20), rng.randint(0, 20), rng.randint(0, 20)
        z = -2.0 - 0.8 * (math.log1p(friends) - 2) + 0.8 * (math.log1p(fights) - 2)
        examples.append(Example(rng.random() < 1 / (1 + math.exp(-z)), [None] * len(COMPONENTS), None,
                                {"newfriend": friends, "unfriend": fights, "scroll": noise}))
    rule = fit_key_features(examples, ["newfriend", "unfriend", "scroll"])
    weights = {name: weight for name, weight, _ in rule.features}
    assert weights["newfriend"] > 0.3 and weights["unfriend"] < -0.3
    assert "scroll" not in weights or abs(weights["scroll"]) < 0.2


def test_the_command_writes_a_config_that_loads_and_stamps_its_version(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    events, out, summary = tmp_path / "e.ndjson.gz", tmp_path / "fitted.yaml", tmp_path / "fit.json"
    assert main(["simulate", "--mode", "sparse", "--accounts", "300", "--seed", "3", "--end", "2026-01-01",
                 "--output", str(events), "--truth", str(tmp_path / "t.json")]) == 0
    capsys.readouterr()
    assert main(["calibrate", "--events", str(events), "--cut", "2025-01-01", "--horizon", "180d",
                 "--out", str(out), "--summary-json", str(summary), "--quiet"]) == 0
    printed = capsys.readouterr().out
    config = ScoringConfig.load(out)
    assert config.version.startswith("calibrated-") and config.version in printed
    assert "fitted by churnsignal calibrate" in config.calibration
    weights = [config.weights.of(c) for c in COMPONENTS]
    assert all(w >= 0 for w in weights) and sum(weights) == pytest.approx(1.0, abs=1e-3)
    assert config.weights.activity > 0                 # on lapsing accounts, the chance of being active counts
    fitted = orjson.loads(summary.read_bytes())
    assert fitted["examples"] > 100 and fitted["churned"] > 5
    assert 0 <= config.yellow_at < config.green_at <= 100
    report = tmp_path / "bt.json"
    assert main(["backtest", "--events", str(events), "--cut", "2025-01-01", "--horizon", "180d",
                 "--config", str(out), "--json", str(report), "--quiet"]) == 0
    doc = orjson.loads(report.read_bytes())
    assert doc["config_version"] == config.version
    assert doc["cuts"][0]["health"]["auc"] > 0.6


def test_too_little_to_fit_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = tmp_path / "e.ndjson"
    events.write_text('{"id": "e1", "type": "usage", "account_id": "a", "occurred_at": "2025-01-01T10:00:00Z", '
                      '"data": {"feature": "x"}}\n')
    assert main(["calibrate", "--events", str(events), "--cut", "2025-02-01", "--horizon", "30d",
                 "--out", str(tmp_path / "c.yaml"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("churnsignal calibrate: too little to fit") and err.count("\n") == 1
    assert not (tmp_path / "c.yaml").exists()
