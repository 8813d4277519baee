"""`churnsignal backtest` end to end on a small history written to files: the JSON shape, a scripted
churner caught by its risk, gzip input, the HTML page, and bad input told in one line with exit code 2."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from services.cli import main
from services.scoring.domain import RISK_TYPES
from tests.domain.scoring.stories import at_day
from tests.service.backtest.histories import (
    CHURNED,
    CUT_DATE,
    EARLY_CUT,
    file_order,
    stories,
    write_events,
    write_outcomes,
)

FLAG_KEYS = {"flagged", "precision", "recall", "f1", "median_lead_days", "false_alarms_per_100_per_month"}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("backtest")
    chosen = stories()
    raws = file_order(chosen)
    return {"events": write_events(root / "events.ndjson", raws),
            "gz": write_events(root / "events.ndjson.gz", raws),
            "outcomes": write_outcomes(root / "outcomes.csv", [s.account_id for s in chosen], CHURNED),
            "root": root}


def _run(files: dict[str, Path], *extra: str, events: Path | None = None) -> int:
    return main(["backtest", "--events", str(events or files["events"]), "--outcomes", str(files["outcomes"]),
                 "--cut", CUT_DATE, "--cut", EARLY_CUT.date().isoformat(), "--horizon", "30d",
                 "--quiet", *extra])


@pytest.fixture(scope="module")
def report(files: dict[str, Path]) -> dict:
    out = files["root"] / "report.json"
    assert _run(files, "--json", str(out), "--html", str(files["root"] / "report.html")) == 0
    return json.loads(out.read_text())


def test_json_has_the_documented_shape(report: dict):
    assert [c["cut"] for c in report["cuts"]] == [EARLY_CUT.date().isoformat(), CUT_DATE]   # sorted
    for cut in report["cuts"]:
        assert {"cut", "accounts", "churned", "health", "risks", "baselines"} <= set(cut)
        assert {"auc", "red_lift", "bottom_decile_lift", "calibration"} <= set(cut["health"])
        assert len(cut["health"]["calibration"]) == 10
        assert set(cut["risks"]) == set(RISK_TYPES)
        assert set(cut["baselines"]) == {"recent_volume", "silence_2x_median_gap", "logistic_counts"}
        lr = cut["baselines"]["logistic_counts"]
        assert {"auc", "top_decile_lift", "lift_at_red_count", "accounts", "features", "folds"} <= set(lr)
        assert lr["accounts"] == cut["health"]["scored"]
        for figures in cut["risks"].values():
            assert FLAG_KEYS <= set(figures)
        assert {"auc", "bottom_decile_lift"} <= set(cut["baselines"]["recent_volume"])
        assert FLAG_KEYS | {"auc"} <= set(cut["baselines"]["silence_2x_median_gap"])
    assert report["horizon_days"] == 30 and report["partitions"] == 6


def test_the_scripted_churner_is_caught_by_its_risk(report: dict):
    cut = report["cuts"][1]
    assert cut["accounts"] == 11 and cut["churned"] == 2      # acme-001 (champion left), initech-003 (fading)
    left = cut["risks"]["champion_left"]
    assert left["flagged"] == 1 and left["true_positives"] == 1 and left["precision"] == 1.0
    assert left["recall"] == 0.5
    # the champion left on day 45 at 09:30, the account churned on day 60
    assert left["median_lead_days"] == pytest.approx((at_day(60) - at_day(45, 9.5)).total_seconds() / 86400,
                                                     abs=1e-3)
    assert cut["any_risk"]["true_positives"] == 2
    early = report["cuts"][0]            # day 30, before any incident: only initech (day 55) churns within 30 days
    assert early["churned"] == 1 and early["any_risk"]["flagged"] == 0


def _lifecycle(account: str, day: float, lifecycle: str, since: float | None = None) -> dict:
    data: dict = {"lifecycle": lifecycle}
    if since is not None:
        data["lifecycle_at"] = at_day(since).isoformat()
    return {"id": f"{account}:lifecycle:{day}", "type": "account", "account_id": account,
            "occurred_at": at_day(day, 12).isoformat(), "data": data}


def test_outcomes_default_to_the_lifecycle_of_account_events(files: dict[str, Path], report: dict):
    """Without --outcomes, churn is read from account events: the same figures as the outcomes file."""
    lines = [json.loads(line) for line in files["events"].read_text().splitlines()]
    lines += [_lifecycle("acme-001", 60, "churned"),                  # churned_at: its occurred_at
              _lifecycle("initech-003", 70, "churned", since=55),    # churned_at: its lifecycle_at
              _lifecycle("initech-003", 71, "active", since=40),     # older: the churn stands
              _lifecycle("umbrella-004", 56, "churned", since=56),   # then renewed: it stayed
              _lifecycle("umbrella-004", 57, "renewed", since=57)]
    lines[-5]["occurred_at"] = at_day(60).isoformat()
    events = write_events(files["root"] / "lifecycle.ndjson", lines)
    out = files["root"] / "from-lifecycle.json"
    assert main(["backtest", "--events", str(events), "--cut", CUT_DATE, "--cut", EARLY_CUT.date().isoformat(),
                 "--horizon", "30d", "--quiet", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["cuts"] == report["cuts"]
    assert doc["outcomes_file"] is None
    assert doc["outcomes"] == {"source": "lifecycle events", "accounts": 11, "churned": 2}


def test_text_summary_on_stdout(files: dict[str, Path], capsys: pytest.CaptureFixture[str]):
    assert _run(files) == 0
    out = capsys.readouterr().out
    assert f"Cut {CUT_DATE}: 11 accounts, 2 churned within 30 days" in out
    assert "champion_left" in out and "silence" in out


def test_gzip_input_gives_the_same_figures(files: dict[str, Path], report: dict):
    out = files["root"] / "from-gz.json"
    assert _run(files, "--json", str(out), events=files["gz"]) == 0
    assert json.loads(out.read_text())["cuts"] == report["cuts"]


def test_html_page_is_self_contained(files: dict[str, Path], report: dict):
    page = (files["root"] / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 4      # two charts per cut
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "<caption>" in page and 'role="img"' in page and "<title id=" in page


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_a_bad_line_is_named(files: dict[str, Path], capsys: pytest.CaptureFixture[str]):
    lines = files["events"].read_bytes().splitlines(keepends=True)
    bad = files["root"] / "bad.ndjson"
    bad.write_bytes(b"".join(lines[:6]) + b'{"id": "x", "type": "usage", "account_id": "a", '
                    b'"occurred_at": "2026-07-01T10:00:00Z", "data": {"feature": "login", "count": 0}}\n'
                    + b"".join(lines[6:]))
    assert _run(files, events=bad) == 2
    err = _error(capsys)
    assert "line 7" in err and "data.count" in err
    broken = files["root"] / "broken.ndjson.gz"
    broken.write_bytes(gzip.compress(b"".join(lines[:3]) + b'{"id": "y", \n'))
    assert _run(files, events=broken) == 2
    err = _error(capsys)
    assert "line 4" in err and "not JSON" in err


def test_missing_files_bad_dates_and_bad_horizon(files: dict[str, Path], capsys: pytest.CaptureFixture[str]):
    assert _run(files, events=files["root"] / "nope.ndjson") == 2
    assert "nope.ndjson: file not found" in _error(capsys)
    base = ["backtest", "--events", str(files["events"]), "--outcomes", str(files["outcomes"]), "--quiet"]
    assert main([*base, "--cut", CUT_DATE, "--horizon", "30"]) == 2
    assert "--horizon" in _error(capsys)
    assert main([*base, "--cut", CUT_DATE, "--horizon", "0d"]) == 2
    assert "--horizon" in _error(capsys)
    assert main([*base, "--cut", "2026-02-30", "--horizon", "30d"]) == 2
    assert "--cut '2026-02-30'" in _error(capsys)
    assert main([*base, "--cut", "21/07/2026", "--horizon", "30d"]) == 2
    assert "YYYY-MM-DD" in _error(capsys)


def test_bad_outcomes(files: dict[str, Path], capsys: pytest.CaptureFixture[str]):
    bad = files["root"] / "bad-outcomes.csv"
    bad.write_text("account_id,churned_at\nacme-001,2026-13-01\n")
    args = ["backtest", "--events", str(files["events"]), "--outcomes", str(bad), "--cut", CUT_DATE,
            "--horizon", "30d", "--quiet"]
    assert main(args) == 2
    err = _error(capsys)
    assert "line 2" in err and "churned_at" in err
    bad.write_text("account,when\nacme-001,\n")
    assert main(args) == 2
    assert "header" in _error(capsys)
