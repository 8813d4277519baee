"""The sparse, purchase-like mode: deterministic, rhythms within range, honest lapse truth and outcomes,
every line readable by the backtest; the dense mode unchanged."""

from __future__ import annotations

import csv
import gzip
import hashlib
import statistics
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from services.cli import main
from services.scoring.backtest.history import lifecycle_outcomes, read_events, read_outcomes
from services.simulate.cli import _write_ndjson
from services.simulate.generator import generate
from services.simulate.model import PAUSE_MARGIN_DAYS, GroundTruth, SimulationParams, SparseParams
from services.simulate.sparse import SparseSimulation, generate_sparse
from shared.events import Event, validate_event

END = datetime(2026, 1, 1, tzinfo=UTC)
PARAMS = SparseParams(now=END, seed=7, accounts=50)


@pytest.fixture(scope="module")
def sim() -> SparseSimulation:
    return generate_sparse(PARAMS)


@pytest.fixture(scope="module")
def events(sim: SparseSimulation) -> list:
    return list(sim.events())


@pytest.fixture(scope="module")
def usage(events: list) -> dict[str, list[datetime]]:
    out: dict[str, list[datetime]] = defaultdict(list)
    for e in events:
        if e.body["type"] == "usage":
            out[e.body["account_id"]].append(e.at)
    return out


def _gaps(times: list[datetime]) -> list[float]:
    """Days between visits: usage at least two days apart starts a new visit."""
    return [(b - a).total_seconds() / 86400 for a, b in zip(times, times[1:], strict=False)
            if b - a >= timedelta(days=2)]


def test_same_seed_gives_the_same_events_and_truth(events: list) -> None:
    again = generate_sparse(PARAMS)
    assert [(e.at, e.body) for e in again.events()] == [(e.at, e.body) for e in events]
    assert again.truth.to_dict() == generate_sparse(PARAMS).truth.to_dict()
    other = generate_sparse(SparseParams(now=END, seed=8, accounts=50))
    assert [e.body["data"] for e in other.events()] != [e.body["data"] for e in events]


def test_events_are_ordered_unique_valid_and_within_the_timeline(events: list) -> None:
    assert [e.at for e in events] == sorted(e.at for e in events)
    assert len({e.body["id"] for e in events}) == len(events)
    assert PARAMS.end - PARAMS.start == timedelta(days=730)
    for e in events:
        parsed = validate_event(e.body, now=END)
        assert isinstance(parsed, Event), (e.body, parsed)
        assert parsed.occurred_at == e.at
        assert PARAMS.start <= e.at <= END


def test_every_account_starts_with_an_account_event_then_its_people(sim: SparseSimulation, events: list) -> None:
    first: dict[str, dict] = {}
    for e in events:
        first.setdefault(e.body["account_id"], e.body)
    assert set(first) == set(sim.truth.accounts)
    for body in first.values():
        assert body["type"] == "account"
        assert {"name", "arr", "segment", "csm"} <= set(body["data"])
    ages = [(END - a.first_seen).days for a in sim.truth.sparse]
    assert min(ages) < 200 and max(ages) == 730          # customers of all ages, some from the start


def test_usual_gaps_and_visit_gaps_stay_within_the_configured_range(sim: SparseSimulation, usage: dict) -> None:
    never_that_long = PARAMS.declare_after_days - PAUSE_MARGIN_DAYS + 1
    medians = []
    for a in sim.truth.sparse:
        assert PARAMS.gap_min_days <= a.usual_gap_days <= PARAMS.gap_max_days
        assert (a.gamma_shape is None) == (a.regularity == "periodic") == (a.jitter_days is not None)
        if a.gamma_shape is not None:
            assert 1 <= a.gamma_shape <= 8
        if a.lapsed:
            continue
        gaps = _gaps(usage[a.account_id])
        # a gap is at most 3x the usual (a periodic one: the cadence and its jitter), plus one pause
        usual = a.usual_gap_days
        longest = max(3 * usual, usual + 2 * (a.jitter_days or 0)) + max(3 * usual, 28) + 3
        assert all(g <= min(longest, never_that_long) for g in gaps), (a, gaps)
        # an account that did not lapse never goes silent for declare_after, up to the end either
        assert (END - usage[a.account_id][-1]).total_seconds() / 86400 < never_that_long
        if len(gaps) >= 8:
            medians.append(statistics.median(gaps) / usual)
    assert 0.6 <= statistics.median(medians) <= 1.2


def test_lapsers_stop_at_their_last_activity_and_are_declared_after_it(sim: SparseSimulation, events: list,
                                                                      usage: dict) -> None:
    declare_after = timedelta(days=PARAMS.declare_after_days)
    lifecycle = {e.body["account_id"]: e for e in events
                 if e.body["type"] == "account" and "lifecycle" in e.body["data"]}
    lapsed = sim.truth.lapsed
    assert lapsed and any(a.churned_at is not None for a in lapsed)
    for a in sim.truth.sparse:
        assert a.last_activity == usage[a.account_id][-1]
        if not a.lapsed:
            assert a.declared_at is None and a.churned_at is None and a.account_id not in lifecycle
            continue
        assert a.declared_at == a.last_activity + declare_after
        assert a.churned_at == (a.declared_at if a.declared_at <= END else None)
        later = [e for e in events if e.body["account_id"] == a.account_id and e.at > a.last_activity]
        assert [e.body["type"] for e in later] == (["account"] if a.churned_at else [])
        if a.churned_at is not None:
            event = lifecycle[a.account_id]
            assert event.body["data"] == {"lifecycle": "churned", "lifecycle_at": a.churned_at.isoformat()}
            assert event.at == a.churned_at


def test_a_larger_population_lapses_in_a_plausible_share_with_pauses_and_a_few_slowing_down() -> None:
    truth = generate_sparse(SparseParams(now=END, seed=3, accounts=300)).truth
    lapsed = truth.lapsed
    assert 0.3 <= len(lapsed) / len(truth.sparse) <= 0.55
    slowed = [a for a in lapsed if a.slowed_down]
    assert 0 < len(slowed) < len(lapsed) / 2
    assert sum(1 for a in truth.sparse if a.pauses) >= 20
    assert {a.regularity for a in truth.sparse} == {"periodic", "irregular"}
    assert {a.purpose for a in truth.sparse} == {"billing_run", "reporting", "planning", "repeat_purchase"}
    assert any(2 <= a.visits <= 3 for a in truth.sparse)
    for a in truth.sparse:
        for before, after in a.pauses:
            assert before < after and a.last_activity is not None and after <= a.last_activity


def test_slowing_lapsers_space_out_their_last_visits() -> None:
    sim = generate_sparse(SparseParams(now=END, seed=5, accounts=300, slowdown_share=0.5))
    usage: dict[str, list[datetime]] = defaultdict(list)
    for e in sim.events():
        if e.body["type"] == "usage":
            usage[e.body["account_id"]].append(e.at)
    ratio: dict[bool, list[float]] = {True: [], False: []}
    for a in sim.truth.lapsed:
        gaps = _gaps(usage[a.account_id])
        if len(gaps) >= 4:
            ratio[a.slowed_down].append(statistics.mean(gaps[-2:]) / statistics.mean(gaps[:-2]))
    assert len(ratio[True]) >= 5 and len(ratio[False]) >= 5
    assert statistics.mean(ratio[True]) > 1.4 * statistics.mean(ratio[False])


@pytest.mark.parametrize("name", ["events.ndjson", "events.ndjson.gz"])
def test_every_line_passes_the_backtest_reader(sim: SparseSimulation, events: list, tmp_path: Path,
                                               name: str) -> None:
    path = tmp_path / name
    assert _write_ndjson(sim, str(path)) == len(events)
    if name.endswith(".gz"):
        assert gzip.open(path).readline().startswith(b"{")
    history = read_events(path, partitions=6)
    assert history.lines == history.kept == len(events)
    assert history.foreign_duplicates == 0 and not any(history.repeated_ids)
    assert lifecycle_outcomes(history) == dict(sim.outcome_rows())


def test_the_command_writes_events_truth_and_outcomes_that_agree(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    events, truth, outcomes = tmp_path / "e.ndjson.gz", tmp_path / "truth.json", tmp_path / "o.csv"
    argv = ["simulate", "--mode", "sparse", "--accounts", "50", "--seed", "7", "--end", "2026-01-01",
            "--output", str(events), "--truth", str(truth), "--outcomes", str(outcomes)]
    assert main(argv) == 0
    assert "50 sparse accounts" in capsys.readouterr().out
    from_csv = read_outcomes(outcomes)
    assert from_csv == lifecycle_outcomes(read_events(events, partitions=6))
    with outcomes.open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["account_id", "churned_at"] and len(rows) == 51
    parsed = GroundTruth.from_dict(orjson.loads(truth.read_bytes()))
    assert parsed.mode == "sparse" and parsed == generate_sparse(PARAMS).truth
    assert {a.account_id: a.churned_at for a in parsed.sparse} == from_csv
    first = events.read_bytes()
    assert main(argv) == 0 and events.read_bytes() == first   # the same seed and end: the same bytes


def test_the_command_refuses_mixed_up_options(tmp_path: Path) -> None:
    truth = str(tmp_path / "t.json")
    assert main(["simulate", "--mode", "sparse", "--offline", "--accounts", "3", "--truth", truth]) == 2
    assert main(["simulate", "--outcomes", str(tmp_path / "o.csv"), "--accounts", "3", "--truth", truth]) == 2
    assert main(["simulate", "--mode", "sparse", "--gap-days", "14:120", "--accounts", "3",
                 "--truth", truth]) == 2    # 2 x 120 + 7 > 180: declare-after too short for the rhythm


def test_the_dense_mode_is_unchanged() -> None:
    sim = generate(SimulationParams(now=datetime(2026, 3, 16, 12, 0, tzinfo=UTC), seed=7, accounts=30,
                                    history_days=20, live_days=5))
    digest = hashlib.sha256()
    for e in sim.events():
        digest.update(orjson.dumps(e.body) + b"\n")
    assert digest.hexdigest() == "8e9d6f37c21b5157cb81195cf42251ac71d438ad073c7d1020be72b442206a0b"
    truth = orjson.dumps(sim.truth.to_dict(), option=orjson.OPT_INDENT_2)
    assert hashlib.sha256(truth).hexdigest() == "0313c3c496439d161a34bcf5a40dff036f88ee143500f136848a011b32c04613"
    assert GroundTruth.from_dict(sim.truth.to_dict()) == sim.truth


def test_the_dense_command_defaults_are_unchanged() -> None:
    from services.cli import build_parser
    from services.simulate.cli import params_from

    args = build_parser().parse_args(["simulate"])
    assert args.mode == "dense"
    params = params_from(args, now=END)
    assert (params.history_days, params.live_days, params.churn_rate, params.accounts) == (60.0, 14.0, 0.12, 200)
