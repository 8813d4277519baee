"""Outcomes as data: an account event with `lifecycle: churned` ends the account's risks until a newer
lifecycle says otherwise; the health is still scored."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.scoring.domain import ScoringConfig, ScoringEngine, decode_state, encode_state
from services.scoring.domain.engine import CHURNED_EVIDENCE

from .conftest import LATENESS
from .stories import Driver, at_day, event, usage_fades

ACC = "initech-003"


def _faded() -> Driver:
    """The usage_fades story run to day 60: its usage_drop (and health_drop) risks are open."""
    driver = Driver(ScoringEngine(ScoringConfig()), LATENESS)
    for ev in usage_fades().parsed:
        driver.send(ev)
    driver.advance(at_day(60))
    assert "usage_drop" in driver.state(ACC).risks
    return driver


def _lifecycle(driver: Driver, day: float, lifecycle: str, since: datetime | None = None) -> list[Any]:
    data: dict[str, Any] = {"lifecycle": lifecycle}
    if since is not None:
        data["lifecycle_at"] = since.isoformat()
    return driver.send(event("account", ACC, at_day(day, 10), data)).transitions


def test_churn_resolves_open_risks_once_then_nothing_more() -> None:
    driver = _faded()
    state = driver.state(ACC)
    was_open = set(state.risks)
    before = len(driver.run.transitions[ACC])

    resolved = _lifecycle(driver, 61, "churned", at_day(58))
    assert {t.type for t in resolved} == was_open
    assert {t.transition for t in resolved} == {"resolved"}
    usage = next(t for t in resolved if t.type == "usage_drop")
    assert usage.evidence == CHURNED_EVIDENCE
    assert usage.summary == "Usage drop on Initech: closed, the account churned."
    assert state.risks == {} and state.lifecycle == "churned" and state.lifecycle_ts == int(at_day(58).timestamp())

    # Further silence, tickets and a departing champion: no risk, no transition; no daily tick either.
    driver.advance(at_day(90))
    for i in range(8):
        driver.send(event("ticket", ACC, at_day(91, 9 + i), {"ticket_id": f"t{i}", "status": "opened",
                                                              "priority": "urgent"}))
    driver.send(event("contact", ACC, at_day(92), {"contact_id": "c-bill", "status": "left"}))
    driver.advance(at_day(120))
    assert len(driver.run.transitions[ACC]) == before + len(resolved)
    assert driver.engine.open_risks(state) == []
    assert driver.engine.evaluate(state, at_day(121)).next_due is None
    # The health is still computed (the read API shows it).
    assert driver.engine.snapshot(state).score is not None


def test_a_newer_lifecycle_brings_the_detectors_back() -> None:
    driver = _faded()
    _lifecycle(driver, 61, "churned")
    driver.advance(at_day(70))
    assert driver.state(ACC).risks == {}

    # An older lifecycle_at does not undo the churn.
    assert _lifecycle(driver, 71, "renewed", at_day(50)) == []
    assert driver.state(ACC).lifecycle == "churned"

    back = _lifecycle(driver, 72, "renewed", at_day(72))
    assert driver.state(ACC).lifecycle == "renewed"
    assert "usage_drop" in {t.type for t in back if t.transition == "opened"}   # still silent: judged again
    assert driver.engine.evaluate(driver.state(ACC), at_day(73)).next_due is not None


def test_lifecycle_without_lifecycle_at_takes_the_event_time(engine: ScoringEngine) -> None:
    state = engine.new_state("acc")
    engine.apply(state, event("account", "acc", at_day(3), {"name": "Acme", "lifecycle": "active"}))
    assert (state.lifecycle, state.lifecycle_ts) == ("active", int(at_day(3).timestamp()))
    # A late event of an older moment neither changes the lifecycle nor the other facts.
    engine.apply(state, event("account", "acc", at_day(2), {"name": "Old", "lifecycle": "churned"}))
    assert (state.name, state.lifecycle) == ("Acme", "active")


def test_state_round_trip_keeps_the_lifecycle() -> None:
    driver = _faded()
    _lifecycle(driver, 61, "churned", at_day(58))
    state = driver.state(ACC)
    back = decode_state(encode_state(state))
    assert (back.lifecycle, back.lifecycle_ts) == ("churned", int(at_day(58).timestamp()))
    assert encode_state(back) == encode_state(state)
