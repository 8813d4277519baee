"""Skipping quiet ticks (`ScoringEngine.skip_to` / `owed`) changes nothing anyone sees, nor any later behaviour.

The same event streams run through two drivers: the plain one evaluates every account at every daily tick
(`Outcome.next_due`); the skipping one sets an account's timer at `skip_to(state)` when there is one, and,
as the scoring service does, evaluates an account at its owed tick (`owed`) before applying an event to it.
At the end the skipping driver evaluates every owed tick too, and both must have produced the same
snapshots and transitions, account by account in the same order, and the same encoded states. The
streams: the domain's stories, random streams (hypothesis) under several configurations, and the cases
skipping is for (accounts with one day of usage, a few early days of usage, facts alone).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.scoring.domain import AccountState, Outcome, ScoringConfig, ScoringEngine, encode_state
from services.scoring.domain.state import DAY
from shared.events import Event

from .conftest import LATENESS
from .stories import Driver, Story, at_day, event, merged_events


class SkippingDriver(Driver):
    """Sets timers past quiet ticks and evaluates the owed tick before an account's event (as the service's
    batch builder does)."""

    def send(self, event: Event) -> Outcome:
        self.owe(event.account_id)
        return super().send(event)

    def owe(self, account_id: str) -> None:
        state = self.run.states.get(account_id)
        if state is None:
            return
        at = self.engine.owed(state, self.clock.watermark)
        if at is not None:
            self.run.evaluations += 1
            self._record(account_id, self.engine.evaluate(state, at))

    def _record(self, account_id: str, outcome: Outcome) -> None:
        later = None if outcome.next_due is None else self.engine.skip_to(self.run.states[account_id])
        if later is not None:
            assert later > outcome.next_due   # type: ignore[operator]
            outcome = Outcome(outcome.health, outcome.transitions, later)
        super()._record(account_id, outcome)

    def settle(self) -> None:
        for account_id in sorted(self.run.states):
            self.owe(account_id)


def _seen(outcome: Outcome) -> dict[str, Any]:
    return {"health": None if outcome.health is None else outcome.health.to_dict(),
            "transitions": [t.to_dict() | {"health": t.health.to_dict()} for t in outcome.transitions]}


def _run(driver: Driver, events: list[Event], until: datetime) -> tuple[dict[str, list[Any]], dict[str, bytes]]:
    """Every snapshot and transition per account, in order, and every account's encoded state at `until`."""
    seen: dict[str, list[Any]] = {}
    record = driver._record

    def recording(account_id: str, outcome: Outcome) -> None:
        if outcome.health is not None or outcome.transitions:
            seen.setdefault(account_id, []).append(_seen(outcome))
        record(account_id, outcome)

    driver._record = recording  # type: ignore[method-assign]
    for ev in events:
        driver.send(ev)
    driver.advance(until)
    if isinstance(driver, SkippingDriver):
        driver.settle()
    return seen, {a: encode_state(s) for a, s in driver.run.states.items()}


def _both(events: list[Event], config: ScoringConfig | None = None, *, days_after: float = 30,
          lateness: timedelta = LATENESS) -> tuple[Driver, SkippingDriver]:
    """Both drivers over `events`, then `days_after` days of clock; asserts they agree."""
    config = config or ScoringConfig()
    until = max(ev.occurred_at for ev in events) + timedelta(days=days_after)
    plain = Driver(ScoringEngine(config), lateness)
    skipping = SkippingDriver(ScoringEngine(config), lateness)
    seen_plain, states_plain = _run(plain, events, until)
    seen_skipping, states_skipping = _run(skipping, events, until)
    assert seen_skipping.keys() == seen_plain.keys()
    for account in seen_plain:
        assert seen_skipping[account] == seen_plain[account], account
    assert states_skipping.keys() == states_plain.keys()
    for account in states_plain:
        assert states_skipping[account] == states_plain[account], account
    return plain, skipping


def test_the_stories_come_out_the_same(stories: list[Story], stream: list[Event]) -> None:
    _both(stream)
    _both(merged_events(stories, jitter=timedelta(hours=3), seed=11))


def test_accounts_seen_once_are_not_ticked_until_a_baseline_can_form() -> None:
    """The scale benchmark's accounts: one usage event each. Daily ticks change nothing for three weeks;
    the skipping driver evaluates each account once, on the day its usage trend can first be judged."""
    events = [event("usage", f"acc-{i}", at_day(0, 1 + i / 10), {"feature": "login"}) for i in range(40)]
    events.append(event("usage", "clock", at_day(40), {"feature": "login"}))   # moves the watermark on
    plain, skipping = _both(events, days_after=0)
    assert plain.run.evaluations >= 40 * 30
    for i in range(40):
        state = skipping.run.states[f"acc-{i}"]
        assert state.eval_day == at_day(40).timestamp() // DAY
    # each account: once on day 21 (usage trend known: a snapshot), then daily
    assert skipping.run.evaluations < plain.run.evaluations - 40 * 19


def test_a_skipped_account_is_caught_up_before_its_next_event() -> None:
    """Events arriving during the skipped days (a ticket, another day of usage, a contact) see the state
    of the daily tick before them, late arrivals within the lateness included."""
    events = [event("usage", "a", at_day(0, 9), {"feature": "f", "user_id": "u1"}),
              event("usage", "b", at_day(0, 9), {"feature": "f"}),
              event("usage", "c", at_day(0, 9), {"feature": "f"}),
              event("usage", "clock", at_day(6, 5), {"feature": "f"}),
              event("ticket", "a", at_day(6, 0.5), {"ticket_id": "t1", "status": "opened"}),
              event("usage", "b", at_day(5, 23.5), {"feature": "g"}),
              event("contact", "c", at_day(7, 2), {"contact_id": "x", "role": "champion", "user_id": "u1"}),
              event("usage", "clock", at_day(50, 5), {"feature": "f"})]
    _both(events)


def test_early_days_of_usage_and_a_lapse() -> None:
    """Accounts with a few days of usage early on: their rhythm is known, so a lapse can open after ten
    silent days; usage trend and breadth wait for three weeks of history."""
    events = []
    for name, days in {"dense": (0, 1, 2, 4), "gappy": (0, 3, 6, 9, 12), "pair": (0, 5), "late": (0, 20)}.items():
        for day in days:
            events.append(event("usage", name, at_day(day, 10), {"feature": "f", "user_id": f"{name}-u"}))
    events.append(event("usage", "clock", at_day(60), {"feature": "f"}))
    events.sort(key=lambda e: e.occurred_at)
    plain, skipping = _both(events)
    opened = [t for t in plain.run.transitions.get("pair", []) if t.transition == "opened"]
    assert [t.type for t in opened] == ["usage_drop"]   # lapsed: the same in both runs (compared above)
    assert skipping.run.evaluations < plain.run.evaluations


def test_accounts_with_facts_alone_until_they_stop_being_live() -> None:
    """No usage at all: no score ever; ticked daily while live (100 days after the last event), then from the
    renewal's proximity (180 days before it) to the renewal. Skipping, the account is evaluated once at
    the end of each."""
    events = [event("account", "near", at_day(0, 8), {"name": "Near", "arr": 1000.0,
                                                       "renewal_date": at_day(150).date().isoformat()}),
              event("account", "far", at_day(0, 8), {"name": "Far", "renewal_date": at_day(400).date().isoformat()}),
              event("account", "plain", at_day(1, 8), {"name": "Plain"}),
              event("usage", "clock", at_day(300), {"feature": "f"})]
    plain, skipping = _both(events, days_after=0)
    skipped = {a: s.eval_day for a, s in skipping.run.states.items()}
    assert skipped == {a: s.eval_day for a, s in plain.run.states.items()}
    assert skipping.run.evaluations < 20 and plain.run.evaluations > 300


def test_no_skipping_when_the_configuration_scores_young_accounts() -> None:
    """With a calibrated intensity weighed, an account is scored from its first tick: no tick is quiet."""
    config = _CONFIGS["intensity calibrated"]
    events = [event("usage", "a", at_day(0, 9), {"feature": "f"}),
              event("usage", "clock", at_day(30), {"feature": "f"})]
    plain, skipping = _both(events, config)
    assert skipping.run.evaluations == plain.run.evaluations


def test_skip_to_and_owed() -> None:
    engine = ScoringEngine(ScoringConfig())
    state = engine.new_state("a")
    out = engine.apply(state, event("usage", "a", at_day(3, 10), {"feature": "f"}))
    assert out.next_due == at_day(4)
    assert engine.skip_to(state) == at_day(3 + 21)   # the first day usage trend and breadth can be judged
    assert engine.owed(state, at_day(3, 23)) is None
    assert engine.owed(state, at_day(4, 0)) == at_day(4)
    assert engine.owed(state, at_day(9, 5)) == at_day(9)
    engine.evaluate(state, at_day(9))
    assert engine.owed(state, at_day(9, 5)) is None and engine.skip_to(state) == at_day(3 + 21)
    scored = engine.new_state("s")
    engine.apply(scored, event("ticket", "s", at_day(3, 10), {"ticket_id": "t", "status": "opened"}))
    assert engine.skip_to(scored) is None


# -- random streams ------------------------------------------------------------------------------------

_FEATURES = ("login", "report", "export")
_USERS = (None, "u1", "u2", "u3")


@st.composite
def _account_events(draw: st.DrawFn, account: str) -> list[tuple[float, str, dict[str, Any]]]:
    """One account's events as (day, kind, data): mostly a few days of usage, sometimes facts, a ticket, an
    answer or a contact (which make it non-quiet), over 80 days."""
    out: list[tuple[float, str, dict[str, Any]]] = []
    first = draw(st.integers(0, 40))
    days = draw(st.lists(st.integers(0, 40), max_size=draw(st.sampled_from((0, 1, 2, 3, 6, 10)))))
    for d in sorted({first + d for d in days}):
        for _ in range(draw(st.integers(1, 3))):
            out.append((d + draw(st.floats(0, 0.999)), "usage",
                        {"feature": draw(st.sampled_from(_FEATURES)), "user_id": draw(st.sampled_from(_USERS)),
                         "count": draw(st.integers(1, 5))}))
    if draw(st.booleans()):
        renewal = date.fromordinal(at_day(0).date().toordinal() + draw(st.integers(10, 200)))
        facts: dict[str, Any] = {"name": account, "renewal_date": renewal.isoformat(), "arr": 100.0}
        if draw(st.integers(0, 9)) == 0:
            facts["lifecycle"] = "churned"
        out.append((draw(st.floats(0, 60)), "account", facts))
    extra = draw(st.integers(0, 5))
    if extra == 1:
        out.append((draw(st.floats(0, 80)), "ticket", {"ticket_id": "t1", "status": "opened"}))
    elif extra == 2:
        out.append((draw(st.floats(0, 80)), "sentiment", {"source": "nps", "score": draw(st.integers(0, 10))}))
    elif extra == 3:
        out.append((draw(st.floats(0, 80)), "contact", {"contact_id": "c1", "role": "champion", "user_id": "u1"}))
    elif extra == 4:
        out.append((draw(st.floats(0, 80)), "contact", {"contact_id": "c2", "role": "user"}))
    return out


@st.composite
def _streams(draw: st.DrawFn) -> list[Event]:
    accounts = draw(st.integers(1, 6))
    keyed: list[tuple[float, int, Event]] = []
    for a in range(accounts):
        for day, kind, data in draw(_account_events(f"acc-{a}")):
            ev = event(kind, f"acc-{a}", at_day(day), data)
            delay = draw(st.sampled_from((0.0, 0.0, 0.02, 0.1)))   # days: up to 2.4 h late
            keyed.append((day + delay, len(keyed), ev))
    keyed.append((90.0, len(keyed), event("usage", "clock", at_day(90), {"feature": "login"})))
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [ev for _, _, ev in keyed]


_CONFIGS = {
    "default": ScoringConfig(),
    "activity weighed": ScoringConfig.from_dict({"weights": {"activity": 0.2}}),
    "short windows": ScoringConfig.from_dict({"usage_drop": {"recent_days": 3, "min_history_days": 5,
                                                            "min_norm_windows": 1, "min_active_days": 3},
                                              "lapse": {"min_silent_days": 4}}),
    "intensity calibrated": ScoringConfig.from_dict({"weights": {"intensity": 0.1},
                                                     "intensity": {"typical": 3.0}}),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=_streams(), config=st.sampled_from(sorted(_CONFIGS)))
def test_random_streams_come_out_the_same(events: list[Event], config: str) -> None:
    _both(events, _CONFIGS[config], days_after=40)


def test_skipping_state_is_what_the_daily_ticks_leave() -> None:
    """The state after one evaluation at the end of the skipped days equals the state after every one."""
    engine = ScoringEngine(ScoringConfig())
    daily, once = AccountState("a"), AccountState("a")
    for state in (daily, once):
        engine.apply(state, event("usage", "a", at_day(0, 10), {"feature": "f", "user_id": "u"}))
        engine.apply(state, event("usage", "a", at_day(2, 10), {"feature": "f", "user_id": "u"}))
    engine.evaluate(daily, at_day(3))
    engine.evaluate(once, at_day(3))
    until = engine.skip_to(daily)
    assert until is not None
    for day in range(4, (until - at_day(0)).days):
        quiet = engine.evaluate(daily, at_day(day))
        assert quiet.health is None and quiet.transitions == []
    last = engine.evaluate(daily, until)
    skipped = engine.evaluate(once, until)
    assert _seen(skipped) == _seen(last) and skipped.next_due == last.next_due
    assert encode_state(once) == encode_state(daily)
