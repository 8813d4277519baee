"""Each detector judged on small scenarios: against the account's own history, with its guards."""

from __future__ import annotations

from datetime import timedelta

from services.scoring.domain import RiskTransition, ScoringConfig, ScoringEngine
from services.scoring.domain.sentiment import text_sentiment

from .stories import Driver, at_day, event

ACC = "acc"


def _opened(transitions: list[RiskTransition]) -> list[str]:
    return [t.type for t in transitions if t.transition == "opened"]


def _contact(d: Driver, day: float, cid: str, **data: object) -> list[RiskTransition]:
    return d.send(event("contact", ACC, at_day(day, 9), {"contact_id": cid, **data})).transitions


def _use(d: Driver, day: int, user: str, n: int = 3) -> None:
    for i in range(n):
        d.send(event("usage", ACC, at_day(day, 9 + i), {"feature": "report.view", "user_id": user}))


def _driver() -> Driver:
    return Driver(ScoringEngine(ScoringConfig()), timedelta(hours=1))


def test_two_tickets_on_a_quiet_account_are_not_a_spike() -> None:
    d = _driver()
    for day in (1, 15, 29):
        d.send(event("ticket", ACC, at_day(day, 10), {"ticket_id": f"t{day}", "status": "opened"}))
    for i in range(2):
        d.send(event("ticket", ACC, at_day(40, 10 + i), {"ticket_id": f"x{i}", "status": "opened",
                                                         "priority": "urgent"}))
    assert "ticket_spike" not in _opened(d.run.transitions.get(ACC, []))


def test_a_busy_ticket_account_needs_well_above_its_own_rate() -> None:
    d = _driver()
    n = 0
    for week in range(6):                       # five tickets a week
        for day in range(5):
            n += 1
            d.send(event("ticket", ACC, at_day(7 * week + day, 10),
                         {"ticket_id": f"t{n}", "status": "opened"}))
    for i in range(9):                          # nine in one week: busy, but not a spike for this account
        d.send(event("ticket", ACC, at_day(43, 8 + i), {"ticket_id": f"x{i}", "status": "opened"}))
    assert "ticket_spike" not in _opened(d.run.transitions.get(ACC, []))
    for i in range(9, 20):                      # twenty: a spike
        d.send(event("ticket", ACC, at_day(44, i - 1), {"ticket_id": f"x{i}", "status": "opened"}))
    assert "ticket_spike" in _opened(d.run.transitions[ACC])


def test_weekday_rhythm_is_normal_and_a_long_silence_is_not() -> None:
    d = _driver()
    for day in range(56):
        if day % 7 < 5:                         # nothing at all on weekends
            _use(d, day, f"u{day % 3}", 4)
    d.advance(at_day(56))                       # through eight weekends: nothing to report
    assert d.run.transitions.get(ACC, []) == []
    d.advance(at_day(75))                       # then silence from day 54 on
    drops = [t for t in d.run.transitions[ACC] if t.type == "usage_drop"]
    assert drops[0].transition == "opened" and drops[0].trigger_event_id is None
    assert drops[0].occurred_at <= at_day(60)
    silent = [t for t in drops if t.evidence["mode"] == "silent"]
    assert silent and silent[0].evidence["usual_gap_days"] == 3 and silent[0].evidence["days_silent"] >= 9


def test_a_young_account_is_judged_on_its_rhythm_only() -> None:
    d = _driver()
    for day in range(3):
        _use(d, day, "u1")
    d.advance(at_day(12))                       # nine silent days after three daily ones: not yet
    assert "usage_drop" not in _opened(d.run.transitions.get(ACC, []))
    d.advance(at_day(40))
    drops = [t for t in d.run.transitions[ACC] if t.type == "usage_drop"]
    # No norm to fall below and no usual gap from 8 active days: only the lapse model judges it.
    assert [t.evidence["mode"] for t in drops] == ["lapsed"]
    # (the second day carries the first visit over: two visits, a day apart)
    assert drops[0].evidence["visits"] == 2 and drops[0].evidence["p_active"] <= 0.5   # (rounded)
    state = d.run.states[ACC]
    assert d.engine.snapshot(state).component("usage_trend").score is not None  # silent: judged as 0 ...
    assert d.engine.snapshot(state).component("usage_trend").score == 0.0


def test_champion_inactive_needs_the_account_active_and_clears_when_they_return() -> None:
    d = _driver()
    _contact(d, 0, "c-kim", name="Kim Lee", user_id="kim", role="champion", status="active")
    for day in range(35):
        _use(d, day, "colleague")
        if day % 2 == 0:
            _use(d, day, "kim", 1)
    for day in range(35, 50):
        _use(d, day, "colleague")
    quiet = [t for t in d.run.transitions[ACC] if t.type == "champion_inactive"]
    assert [t.transition for t in quiet] == ["opened"]
    assert quiet[0].evidence["contacts"][0]["usual_gap_days"] == 2
    assert quiet[0].summary.startswith("Kim Lee (champion) at acc has not used the product for ")
    _use(d, 50, "kim", 2)
    _use(d, 51, "colleague")
    d.advance(at_day(52))
    assert [t.transition for t in d.run.transitions[ACC] if t.type == "champion_inactive"] == \
        ["opened", "resolved"]


def test_champion_left_only_for_a_departure_we_saw_happen() -> None:
    d = _driver()
    # Someone the CRM lists as gone from the start left long ago: no alert.
    assert _contact(d, 1, "c-old", name="Old Timer", role="champion", status="left") == []
    _contact(d, 1, "c-a", name="Ann", role="champion", status="active")
    _contact(d, 1, "c-b", name="Bob", role="sponsor", status="active")
    [opened] = _contact(d, 5, "c-a", status="left")
    assert (opened.type, opened.severity, opened.seq) == ("champion_left", "critical", 1)
    assert opened.trigger_event_id is not None
    [updated] = _contact(d, 6, "c-b", status="left")
    assert (updated.transition, updated.seq, updated.risk_id) == ("updated", 2, opened.risk_id)
    assert updated.summary == "Bob (sponsor) and Ann (champion) have left acc."  # latest first
    assert _contact(d, 7, "c-a", name="Ann Smith") == []          # a detail, not news
    [resolved] = _contact(d, 8, "c-new", name="Cy", role="champion", status="active")
    assert (resolved.transition, resolved.seq) == ("resolved", 3)


def test_champion_left_out_of_order_within_lateness() -> None:
    d = _driver()
    left = event("contact", ACC, at_day(3, 9, ), {"contact_id": "c-a", "status": "left"})
    created = event("contact", ACC, at_day(3, 8.5), {"contact_id": "c-a", "name": "Ann", "role": "champion",
                                                     "status": "active"})
    assert d.send(left).transitions == []                         # not known yet: could be an old departure
    [opened] = d.send(created).transitions                        # now we know she was there before
    assert opened.type == "champion_left" and opened.evidence["contacts"][0]["name"] == "Ann"
    assert d.run.states[ACC].contacts["c-a"][3] == 1              # status stays "left"


def test_text_without_a_score_is_scored_offline() -> None:
    negative = "This is awful, the export is broken again and we are very frustrated."
    assert text_sentiment(negative) == text_sentiment(negative) < -0.5
    assert text_sentiment("Great support, thanks for the quick fix!") > 0.5
    d = _driver()
    _contact(d, 0, "c-sp", name="Pat", role="sponsor", status="active")
    out = d.send(event("sentiment", ACC, at_day(2, 9), {"source": "conversation", "text": negative,
                                                        "contact_id": "c-sp"}))
    [risk] = out.transitions
    assert (risk.type, risk.severity, risk.evidence["source"]) == ("sentiment_drop", "high", "conversation")
    assert risk.evidence["score"] < -0.5
    assert out.health is not None and out.health.component("sentiment").score is not None


def test_renewal_risk_opens_near_renewal_when_not_green_and_clears_when_renewed() -> None:
    d = _driver()
    for i in range(4):
        d.send(event("ticket", ACC, at_day(1, 9 + i), {"ticket_id": f"t{i}", "status": "opened",
                                                        "priority": "urgent"}))
    assert d.engine.snapshot(d.run.states[ACC]).tier != "green"
    far = d.send(event("account", ACC, at_day(2, 9), {"renewal_date": "2026-12-01"}))
    assert far.transitions == []                                  # 180 days away
    [opened] = d.send(event("account", ACC, at_day(2, 10), {"renewal_date": "2026-08-01"})).transitions
    assert opened.type == "renewal_risk" and opened.evidence["days_to_renewal"] == 59
    [resolved] = d.send(event("account", ACC, at_day(3, 9), {"renewal_date": "2027-08-01"})).transitions
    assert resolved.transition == "resolved" and resolved.risk_id == opened.risk_id


def test_no_health_drop_while_an_account_is_brand_new() -> None:
    d = _driver()
    d.send(event("sentiment", ACC, at_day(0, 9), {"source": "nps", "score": 10}))
    for i in range(5):
        d.send(event("ticket", ACC, at_day(1, 9 + i), {"ticket_id": f"t{i}", "status": "opened",
                                                        "priority": "urgent"}))
    assert "health_drop" not in _opened(d.run.transitions.get(ACC, []))
    assert d.engine.snapshot(d.run.states[ACC]).score < 60


def test_before_four_weeks_of_history_usage_is_judged_on_its_rhythm_only() -> None:
    d = _driver()
    for day in range(12):
        if day % 7 < 5:
            _use(d, day, f"u{day % 3}", 4)
    d.advance(at_day(20))                       # two weeks of use, then a week off: nothing to report
    assert "usage_drop" not in _opened(d.run.transitions.get(ACC, []))
    d.advance(at_day(27))                       # no norm yet, but silent far beyond its own rhythm
    [opened] = [t for t in d.run.transitions[ACC] if t.type == "usage_drop"]
    assert opened.evidence["mode"] == "lapsed" and opened.occurred_at > at_day(20)
    d.advance(at_day(30))                       # four weeks of history: the silence rule takes over
    drops = [t for t in d.run.transitions[ACC] if t.type == "usage_drop"]
    assert [(t.transition, t.evidence["mode"]) for t in drops] == [("opened", "lapsed"), ("updated", "silent")]
    assert drops[1].occurred_at == at_day(28)


def _team_day(d: Driver, day: int, users: list[str]) -> None:
    for user in users:
        d.send(event("usage", ACC, at_day(day, 10), {"feature": "task.update", "user_id": user}))


def test_a_broad_team_is_judged_on_one_week_a_small_team_on_two() -> None:
    broad = [f"b{i}" for i in range(14)]
    d = _driver()
    for day in range(42):
        if day % 7 < 5:
            _team_day(d, day, broad if day < 35 else broad[:6])     # week 6: fewer than half show up
    d.advance(at_day(42))
    [drop] = [t for t in d.run.transitions[ACC] if t.type == "usage_drop"]
    assert at_day(36) <= drop.occurred_at <= at_day(42) and drop.evidence["judged_days"] == 7
    assert drop.evidence["level"] < 0.5 and drop.summary.startswith("Usage at acc fell to ")

    small = ["s1", "s2", "s3"]
    d = _driver()
    for day in range(42):
        if day % 7 < 5:
            _team_day(d, day, small if day < 35 else small[2:])     # two of three away for a week ...
    d.advance(at_day(42))
    assert d.run.transitions.get(ACC, []) == []                    # ... is an ordinary week off,
    for day in range(42, 47):
        _team_day(d, day, small[2:])
    d.advance(at_day(49))                                          # ... but two weeks are a drop
    [drop] = [t for t in d.run.transitions[ACC] if t.type == "usage_drop"]
    assert at_day(43) <= drop.occurred_at <= at_day(49) and drop.evidence["judged_days"] == 14
    assert drop.evidence["level"] < 0.4 and "has stayed low for two weeks" in drop.summary


def test_a_trend_needs_several_negative_answers() -> None:
    d = _driver()
    def nps(day: int, score: int) -> list[RiskTransition]:
        return d.send(event("sentiment", ACC, at_day(day, 12), {"source": "nps", "score": score,
                                                                 "contact_id": f"c{day}"})).transitions

    for day, score in ((2, 9), (10, 10), (20, 9)):
        nps(day, score)
    for day, score in ((60, 8), (61, 3), (62, 2)):             # two detractors among three: chance
        nps(day, score)
    assert "sentiment_drop" not in _opened(d.run.transitions.get(ACC, []))
    [trend] = nps(63, 4)                                       # a third: the answers are turning
    assert (trend.type, trend.severity, trend.evidence["mode"]) == ("sentiment_drop", "medium", "trend")


def test_a_burst_of_tickets_is_a_spike_at_once_a_few_more_than_usual_is_not() -> None:
    d = _driver()
    for week in range(5):                       # about one ticket a week
        d.send(event("ticket", ACC, at_day(7 * week + 1, 10), {"ticket_id": f"w{week}", "status": "opened"}))
    spikes = []
    for i in range(6):                          # six in one morning
        ticket = event("ticket", ACC, at_day(38, 8 + i * 0.5), {"ticket_id": f"b{i}", "status": "opened"})
        spikes += [t for t in d.send(ticket).transitions if t.type == "ticket_spike"]
    [spike] = spikes
    assert spike.transition == "opened" and spike.occurred_at == at_day(38, 10.5)
    assert spike.evidence["opened_7d"] == 6
