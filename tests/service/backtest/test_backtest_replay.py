"""The backtest's accounts at a cut are what the scoring domain, driven like the service, gives for the
events before the cut: the pure `Driver` of the scoring tests, fed each partition's events in the order
the consumer's own merge (`PartitionFeed`) takes them, then advanced to the cut."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from services.scoring.backtest.history import read_events
from services.scoring.backtest.replay import AccountAtCut, replay
from services.scoring.domain import ScoringConfig, ScoringEngine
from shared.events import Event
from tests.domain.scoring.stories import Driver, at_day, parse
from tests.service.backtest.histories import CUT, EARLY_CUT, file_order, service_order, stories, write_events

LATENESS = timedelta(hours=1)


def _driver_view(events: list[Event], cut: Any) -> dict[str, tuple[Any, ...]]:
    """Per account: score, tier and open risks (type -> opened at) from the pure driver at `cut`."""
    engine = ScoringEngine(ScoringConfig())
    out = {}
    for ordered in service_order([e for e in events if e.occurred_at < cut]).values():
        driver = Driver(engine, LATENESS)
        for event in ordered:
            driver.send(event)
        driver.advance(cut)
        for account, state in driver.run.states.items():
            snap = engine.snapshot(state)
            out[account] = (snap.score, snap.tier,
                            {r["type"]: r["opened_at"] for r in engine.open_risks(state)})
    return out


def _backtest_view(accounts: dict[str, AccountAtCut]) -> dict[str, tuple[Any, ...]]:
    return {a: (x.score, x.tier, {t: x.risks[t].isoformat() for t in x.open_risks})
            for a, x in accounts.items()}


def _replayed(tmp_path: Path, raws: list[dict[str, Any]], cuts: list[Any]):
    history = read_events(write_events(tmp_path / "events.ndjson", raws), partitions=6, until=max(cuts))
    return replay(history, cuts, ScoringEngine(ScoringConfig()), allowed_lateness=LATENESS)


def _across_the_cuts(account: str) -> list[dict[str, Any]]:
    """Usage events of `account` around both cuts, each written just after one past the cut (so the
    events before a cut are not a prefix of that topic-partition)."""
    out = []
    for n, cut in enumerate((EARLY_CUT, CUT)):
        for minutes in (20, -20):
            when = cut + timedelta(minutes=minutes)
            out.append({"id": f"{account}:late:{n}:{minutes}", "type": "usage", "account_id": account,
                        "occurred_at": when.isoformat(), "data": {"feature": "login", "user_id": "acme-u2"}})
    return out


@pytest.mark.parametrize("jitter", [None, timedelta(minutes=50)], ids=["in-order", "out-of-order"])
def test_accounts_at_each_cut_equal_the_pure_driver(tmp_path: Path, jitter: timedelta | None):
    raws = file_order(stories(), jitter=jitter)
    if jitter is not None:
        raws += _across_the_cuts("acme-001")
    events = parse(raws)
    result = _replayed(tmp_path, raws, [EARLY_CUT, CUT])
    for i, cut in enumerate((EARLY_CUT, CUT)):
        expected = _driver_view(events, cut)
        got = _backtest_view(result.accounts[i])
        assert got == expected, cut
    assert result.applied == sum(1 for e in events if e.occurred_at < CUT)
    assert any(scores[2] for scores in _backtest_view(result.accounts[1]).values()), "no risk open at the cut"
    if jitter is None:
        assert result.separate_replays == 0
    else:   # an event before a cut written after one past it: that partition is replayed alone
        assert result.separate_replays > 0


def test_a_repeated_event_id_is_applied_once(tmp_path: Path):
    raws = file_order(stories())
    tickets = [r for r in raws if r["type"] == "ticket" and r["account_id"] == "umbrella-004"][:40]
    repeated = raws + [dict(r) for r in tickets]               # resent at the end of the file
    result = _replayed(tmp_path, repeated, [CUT])
    expected = _driver_view(parse(raws), CUT)
    assert _backtest_view(result.accounts[0]) == expected
    assert result.duplicates == sum(1 for r in tickets if r["occurred_at"] < CUT.isoformat())


def test_lookback_counts_a_risk_opened_and_resolved_before_the_cut(tmp_path: Path):
    raws = file_order(stories())
    cut = at_day(54)
    history = read_events(write_events(tmp_path / "events.ndjson", raws), partitions=6, until=cut)
    engine = ScoringEngine(ScoringConfig())
    at_cut = replay(history, [cut], engine, allowed_lateness=LATENESS).accounts[0]["umbrella-004"]
    fortnight = replay(history, [cut], engine, allowed_lateness=LATENESS,
                       lookback=timedelta(days=14)).accounts[0]["umbrella-004"]
    # the ticket storm opens a risk on day 44, resolved by day 52: counted only with the lookback
    assert "ticket_spike" not in at_cut.risks and "ticket_spike" not in at_cut.open_risks
    assert at_day(44) <= fortnight.risks["ticket_spike"] < at_day(45)
