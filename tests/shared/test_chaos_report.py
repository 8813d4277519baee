"""The chaos command without services: its arguments, and docs/reliability.md rendered from made-up counts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chaos import report
from chaos.__main__ import DOCUMENTED_SOAK_MINUTES, parse_args
from chaos.cases import CASES
from chaos.report import CaseResult, Sample

MACHINE = {"cpu": "Test CPU", "cores": "2 usable (2 online)", "memory": "4.0 GiB", "os": "Linux 6",
           "python": "3.11.7", "commit": "abc1234"}
WHEN = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)


def test_defaults_run_every_case_with_the_documented_soak():
    args = parse_args([])
    assert args.cases == list(CASES) == ["broker", "postgres", "kill", "slack", "soak"]
    assert args.soak_minutes == DOCUMENTED_SOAK_MINUTES == 30
    assert not args.no_report


def test_soak_minutes_and_a_subset_of_cases():
    args = parse_args(["--soak-minutes", "2.5", "--only", "kill, soak"])
    assert args.soak_minutes == 2.5
    assert args.cases == ["kill", "soak"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--soak-minutes", "0"], "--soak-minutes must be above 0"),
    (["--soak-minutes", "-3"], "--soak-minutes must be above 0"),
    (["--soak-minutes", "ten"], "--soak-minutes must be a number of minutes, got 'ten'"),
    (["--only", "broker,dns"], "unknown case(s) dns; known: broker, postgres, kill, slack, soak"),
])
def test_bad_arguments_name_the_problem(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def _kill_case(duplicated: int, window: int) -> CaseResult:
    result = CaseResult("kill", "3. kill -9 of alerts mid-burst", "Kills alerts halfway.")
    result.counts.update({"notifications received": 400, "notifications duplicated (extra copies)": duplicated,
                          "deliveries recorded at the kill": "pending 31, sent 180"})
    result.summary.update(notifications_expected=400, notifications_received=400,
                          notifications_duplicated=duplicated)
    if duplicated > window:
        result.findings.append(f"{duplicated} duplicates, more than the {window} in the window")
    return result


def _soak(samples: list[Sample]) -> CaseResult:
    result = CaseResult("soak", "5. Soak", "Steady load.", samples=samples)
    result.summary.update(events_in=120_800, events_scored=120_800, events_missing=0, events_duplicated=0)
    return result


def _samples(rss: list[int], rows: list[int]) -> list[Sample]:
    return [Sample(at_s=30.0 * i, rss={"ingest": r, "scoring": 2 * r}, rows={"scoring_history": n},
                   sizes={"scoring_history": n * 100}) for i, (r, n) in enumerate(zip(rss, rows, strict=True))]


def test_the_report_holds_each_cases_counts_verdict_and_findings():
    held = _kill_case(duplicated=20, window=20)
    broken = _kill_case(duplicated=25, window=20)
    broken.title = "3b. kill again"
    failed = CaseResult("broker", "1. Broker", "", error="RuntimeError: ingest exited with 1")
    text = report.render([held, broken, failed], machine=MACHINE, when=WHEN, command="make chaos",
                         soak_minutes=30, documented_soak_minutes=30)
    assert "Generated 2026-03-01 12:30 UTC by `make chaos` on Test CPU" in text
    assert "commit abc1234." in text
    assert "| 3. kill -9 of alerts mid-burst | — | — | — | — | 400 | 400 | 20 | held |" in text
    assert "| 3b. kill again | — | — | — | — | 400 | 400 | 25 | **1 finding(s)** |" in text
    assert "| 1. Broker | — | — | — | — | — | — | — | **did not complete** |" in text
    assert "- 25 duplicates, more than the 20 in the window" in text
    assert "**Did not complete:** RuntimeError: ingest exited with 1" in text
    assert "| deliveries recorded at the kill | pending 31, sent 180 |" in text
    assert "| notifications duplicated (extra copies) | 20 |" in text
    assert "soaks for" not in text  # no soak ran


def test_a_shorter_soak_than_documented_says_so_and_tabulates_its_samples():
    mib = 1024 * 1024
    soak = _soak(_samples(rss=[100 * mib, 110 * mib, 115 * mib, 117 * mib, 118 * mib, 118 * mib, 118 * mib],
                          rows=[0, 10, 20, 30, 40, 50, 60]))
    text = report.render([soak], machine=MACHINE, when=WHEN, command='make chaos CHAOS_ARGS="--soak-minutes 5"',
                         soak_minutes=5, documented_soak_minutes=30)
    assert "The documented command soaks for 30 minutes; this file comes from a 5-minute soak" in text
    assert "| 5. Soak | 120,800 | 120,800 | 0 | 0 | — | — | — | held |" in text
    assert "| t (s) | ingest RSS (MiB) | scoring RSS (MiB) | scoring_history rows / MiB |" in text
    assert "| 30 | 110.0 | 220.0 | 10 / 0.0 |" in text
    assert "| ingest RSS | 100.0 MiB | 118.0 MiB | levels off |" in text
    assert "| scoring_history size | 0.0 MiB | 0.0 MiB | still grows (last third grew 100% of the first " in text


@pytest.mark.parametrize(("values", "verdict"), [
    ([1, 2, 3], "too few samples to tell"),
    ([100, 150, 180, 190, 195, 196, 196], "levels off"),
    ([100, 140, 160, 170, 180, 190, 205], "levels off (last third grew"),
    ([0, 10, 20, 30, 40, 50, 60], "still grows (last third grew 100%"),
    ([0, 0, 0, 0, 10, 20, 30], "still grows (flat at first"),
])
def test_trend_compares_the_last_thirds_growth_with_the_first(values, verdict):
    assert report.trend(values).startswith(verdict)
