"""Measurements kept between evaluations (`AccountState.memo`) never change an outcome.

Every measurement taken with the memo must equal one taken afresh, whatever the order in which events
arrive (late ones included); and an engine that forgets the memo before every event and clock tick
produces the same snapshots, transitions, due times and states.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.scoring.domain import AccountState, Outcome, ScoringConfig, ScoringEngine, encode_state, native
from services.scoring.domain import engine as engine_module
from services.scoring.domain.signals import Signals, measure
from shared.events import Event

from .conftest import LATENESS
from .stories import Driver, Story, at_day, event, merged_events

# These tests swap the engine's functions for counting or twice-measuring ones, which compiled modules do
# not look up: they run on the Python source (`make test` runs tests/domain on it first).
pytestmark = pytest.mark.skipif(native.COMPILED, reason="replaces domain functions: runs on the Python "
                                "source (CHURNSIGNAL_PURE_PYTHON=1, as make test does for tests/domain)")

START = datetime(2026, 1, 5, tzinfo=UTC)


class ForgetfulEngine(ScoringEngine):
    """Measures everything afresh, every time."""

    def apply(self, state: AccountState, event: Event) -> Outcome:
        state.memo = None
        return super().apply(state, event)

    def evaluate(self, state: AccountState, at: datetime) -> Outcome:
        state.memo = None
        return super().evaluate(state, at)


def _outcome(outcome: Outcome) -> dict[str, Any]:
    return {"health": None if outcome.health is None else outcome.health.to_dict(),
            "transitions": [t.to_dict() | {"health": t.health.to_dict()} for t in outcome.transitions],
            "next_due": outcome.next_due}


def _run(engine: ScoringEngine, events: list[Event], lateness: timedelta = LATENESS) -> list[Any]:
    """Every outcome (of events and of clock ticks) in order, then every account's encoded state."""
    driver = Driver(engine, lateness)
    produced: list[Any] = []
    record = driver._record

    def recording(account_id: str, outcome: Outcome) -> None:
        produced.append((account_id, _outcome(outcome)))
        record(account_id, outcome)

    driver._record = recording  # type: ignore[method-assign]
    for ev in events:
        driver.send(ev)
    driver.advance(max(ev.occurred_at for ev in events) + timedelta(days=3))
    return produced + sorted((a, encode_state(s)) for a, s in driver.run.states.items())


@pytest.fixture
def measured_twice(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every measurement the engine takes is checked against one taken afresh (without the memo)."""
    taken = [0]

    def measure_twice(state: AccountState, cfg: ScoringConfig, at_day: int) -> Signals:
        kept = measure(state, cfg, at_day)
        memo, state.memo = state.memo, None
        assert kept == measure(state, cfg, at_day), f"{state.account_id} on day {at_day}"
        state.memo = memo
        taken[0] += 1
        return kept

    monkeypatch.setattr(engine_module, "measure", measure_twice)
    return taken


def _same_with_and_without_memo(events: list[Event], lateness: timedelta = LATENESS) -> None:
    kept = _run(ScoringEngine(ScoringConfig()), events, lateness)
    afresh = _run(ForgetfulEngine(ScoringConfig()), events, lateness)
    assert len(kept) == len(afresh)
    for i, (a, b) in enumerate(zip(kept, afresh, strict=True)):
        assert a == b, f"outcome {i} differs"


def test_the_stories_come_out_the_same(stories: list[Story], stream: list[Event]) -> None:
    _same_with_and_without_memo(stream)


def test_every_measurement_of_the_stories_is_as_if_afresh(stories: list[Story], measured_twice: list[int]) -> None:
    # Arrival up to 3 hours after event time with 1 hour of allowed lateness: many events land on days the
    # clock has already judged, which is what makes the engine forget what it measured on them.
    for jitter in (None, timedelta(hours=3)):
        _run(ScoringEngine(ScoringConfig()), merged_events(stories, jitter=jitter, seed=7))
    assert measured_twice[0] > 1000


def _ticket(day: float, hour: float, ticket: str) -> Event:
    return event("ticket", "acc", at_day(day, hour), {"ticket_id": ticket, "status": "opened"})


def test_a_champion_back_after_two_months_away(measured_twice: list[int]) -> None:
    """Their last active day lies beyond the 64 days of the day mask, so it is read from their record;
    they come back between two events evaluated before the day's clock tick."""
    events = [event("contact", "acc", at_day(0, 9), {"contact_id": "c1", "name": "Ann", "role": "champion",
                                                     "user_id": "u1", "status": "active"})]
    for day in range(0, 20):
        events.append(event("usage", "acc", at_day(day, 10), {"feature": "f", "user_id": "u1"}))
    for day in range(0, 110):
        events.append(event("usage", "acc", at_day(day, 11), {"feature": "g", "user_id": "u2"}))
        if day % 9 == 0:
            events.append(_ticket(day, 12, f"t{day}"))
    events += [_ticket(110, 0.1, "t-a"), event("usage", "acc", at_day(110, 0.2), {"feature": "f", "user_id": "u1"}),
               _ticket(110, 0.3, "t-b")]
    _run(ScoringEngine(ScoringConfig()), sorted(events, key=lambda e: e.occurred_at))
    assert measured_twice[0] > 100


def test_an_account_back_after_two_months_without_usage(measured_twice: list[int]) -> None:
    """Its last active day lies beyond the 56 days of daily usage kept, so it is read from the state."""
    events = [event("usage", "acc", at_day(day, 10), {"feature": "f", "user_id": "u1"}) for day in range(12)]
    events += [_ticket(day, 12, f"t{day}") for day in range(0, 80, 5)]
    events += [_ticket(80, 0.1, "t-a"), event("usage", "acc", at_day(80, 0.2), {"feature": "f"}),
               _ticket(80, 0.3, "t-b")]
    _run(ScoringEngine(ScoringConfig()), sorted(events, key=lambda e: e.occurred_at))
    assert measured_twice[0] > 80


def test_an_early_event_arriving_days_late(measured_twice: list[int]) -> None:
    """It moves the account's first day back, which the ticket baseline counts from."""
    events = [_ticket(day, 12, f"t{day}") for day in range(20, 40, 2)]
    events += [_ticket(40, 12.5, "t-a"), event("usage", "acc", at_day(3, 10), {"feature": "f"}),
               event("contact", "acc", at_day(40, 13), {"contact_id": "c1", "role": "sponsor"})]
    _run(ScoringEngine(ScoringConfig()), events)
    assert measured_twice[0] > 20


def test_the_clock_catching_up_after_a_jump_in_time(measured_twice: list[int]) -> None:
    """An account's own event days ahead of the clock is evaluated first, then the ticks it passed."""
    events = [event("sentiment", "acc", at_day(day, 10), {"source": "nps", "score": 9}) for day in range(0, 7)]
    events.append(event("sentiment", "acc", at_day(8, 10), {"source": "nps", "score": 2}))
    _run(ScoringEngine(ScoringConfig()), events)
    assert measured_twice[0] > 8


# -- random histories ------------------------------------------------------------------------------------

_USERS = ["u1", "u2", "u3", "u4", "u5"]
_CONTACTS = ["c1", "c2", "c3"]


@st.composite
def _events(draw: st.DrawFn) -> list[Event]:
    """A few weeks of one or two accounts' events, some arriving hours or days late."""
    out: list[tuple[datetime, Event]] = []
    n = draw(st.integers(20, 120))
    for i in range(n):
        account = draw(st.sampled_from(["a", "b"]))
        when = START + timedelta(minutes=draw(st.integers(0, 70 * 24 * 60)))
        kind = draw(st.sampled_from(["usage"] * 6 + ["ticket", "sentiment", "contact", "account"]))
        data: dict[str, Any]
        if kind == "usage":
            data = {"feature": draw(st.sampled_from(["login", "report", "export"])),
                    "user_id": draw(st.sampled_from([*_USERS, None]))}
            data = {k: v for k, v in data.items() if v is not None}
        elif kind == "ticket":
            data = {"ticket_id": f"t{draw(st.integers(0, 6))}",
                    "status": draw(st.sampled_from(["opened", "opened", "updated", "solved", "reopened"])),
                    "priority": draw(st.sampled_from(["low", "normal", "high", "urgent"]))}
        elif kind == "sentiment":
            source = draw(st.sampled_from(["nps", "csat", "survey"]))
            score: float = {"nps": draw(st.integers(0, 10)), "csat": draw(st.integers(1, 5)),
                            "survey": draw(st.floats(-1, 1, allow_nan=False))}[source]
            data = {"source": source, "score": score}
            if draw(st.booleans()):
                data["contact_id"] = draw(st.sampled_from(_CONTACTS))
        elif kind == "contact":
            data = {"contact_id": draw(st.sampled_from(_CONTACTS)),
                    "role": draw(st.sampled_from(["champion", "sponsor", "user", None])),
                    "status": draw(st.sampled_from(["active", "active", "left", None])),
                    "user_id": draw(st.sampled_from([*_USERS[:3], None])), "name": "Person"}
            data = {k: v for k, v in data.items() if v is not None}
        else:
            renewal = (START + timedelta(days=draw(st.integers(20, 200)))).date().isoformat()
            data = {"name": "Acme", "renewal_date": renewal}
        late = timedelta(minutes=draw(st.sampled_from([0, 0, 0, 30, 90, 600, 3000])))
        out.append((when + late, event(kind, account, when, data, event_id=f"e{i}")))
    out.sort(key=lambda pair: pair[0])
    return [ev for _, ev in out]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(events=_events())
def test_every_measurement_of_random_histories_is_as_if_afresh(events: list[Event],
                                                                measured_twice: list[int]) -> None:
    _run(ScoringEngine(ScoringConfig()), events)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=_events())
def test_random_histories_come_out_the_same_with_and_without_memo(events: list[Event]) -> None:
    """Outcomes and states, not only measurements: this is what holds the skipped evaluations exact (an
    event that changed nothing, on a day already evaluated, is not evaluated again when the memo is kept)."""
    _same_with_and_without_memo(events)


# -- events that change nothing ------------------------------------------------------------------------------

def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    evaluate = ScoringEngine._evaluate

    def counted(self: ScoringEngine, *args: Any) -> Outcome:
        calls[0] += 1
        return evaluate(self, *args)

    monkeypatch.setattr(ScoringEngine, "_evaluate", counted)
    return calls


def _user(day: float, hour: float, contact: str) -> Event:
    return event("contact", "acc", at_day(day, hour), {"contact_id": contact, "role": "user", "name": contact})


def test_a_plain_users_contact_event_on_an_evaluated_day_is_not_evaluated(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting(monkeypatch)
    engine = ScoringEngine(ScoringConfig())
    state = engine.new_state("acc")
    for day in range(9):
        engine.apply(state, event("usage", "acc", at_day(day, 10), {"feature": "f", "user_id": "u1"}))
    engine.evaluate(state, at_day(9, 0))                   # the day's clock tick
    engine.apply(state, _ticket(9, 11, "t1"))
    assert calls[0] == 2
    outcome = engine.apply(state, _user(9, 12, "c-user"))
    assert calls[0] == 2, "a user nobody keeps changes nothing the evaluation reads"
    assert outcome.health is None and outcome.transitions == [] and outcome.next_due is not None
    assert state.eval_ts == int(at_day(9, 12).timestamp())   # as if evaluated
    # A usage event for a day already judged changes the measurements: the next event is evaluated.
    engine.apply(state, event("usage", "acc", at_day(8, 18), {"feature": "g", "user_id": "u2"}))
    engine.apply(state, _user(9, 13, "c-user-2"))
    assert calls[0] == 3
    # So is one on a day not yet evaluated, and a user who was a champion before (a real change).
    engine.apply(state, _user(10, 9, "c-user-3"))
    assert calls[0] == 4
    engine.apply(state, event("contact", "acc", at_day(10, 10), {"contact_id": "c-ch", "role": "champion"}))
    engine.apply(state, _user(10, 11, "c-ch"))
    assert calls[0] == 6
