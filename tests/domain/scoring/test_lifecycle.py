"""Risk lifecycle: opened, updated only on material change, resolved; one open risk per type."""

from __future__ import annotations

import math
import uuid

from services.scoring.domain import AccountState, RiskTransition, ScoringEngine, risk_id

from .stories import at_day, event


def _nps(engine: ScoringEngine, state: AccountState, day: float, score: int,
         contact: str) -> list[RiskTransition]:
    ev = event("sentiment", state.account_id, at_day(day, 12), {"source": "nps", "score": score,
                                                                "contact_id": contact})
    return [t for t in engine.apply(state, ev).transitions if t.type == "sentiment_drop"]


def test_open_update_on_severity_change_resolve_and_reopen_with_a_new_id(engine: ScoringEngine) -> None:
    state = engine.new_state("acc")
    engine.apply(state, event("contact", "acc", at_day(0, 9), {"contact_id": "c-sam", "name": "Sam Park",
                                                               "role": "sponsor", "status": "active"}))
    assert _nps(engine, state, 5, 9, "c-u1") == [] and _nps(engine, state, 15, 10, "c-u2") == []
    assert _nps(engine, state, 50, 2, "c-u3") == [] and _nps(engine, state, 51, 3, "c-u4") == []

    [opened] = _nps(engine, state, 52, 2, "c-u5")          # the third bad answer: a negative trend
    assert (opened.transition, opened.seq, opened.severity) == ("opened", 1, "medium")
    assert opened.evidence["mode"] == "trend"
    assert opened.summary.startswith("Sentiment at acc is trending negative")

    [up] = _nps(engine, state, 53, 1, "c-sam")             # the sponsor is a detractor: severity rises
    assert (up.transition, up.seq, up.severity, up.risk_id) == ("updated", 2, "high", opened.risk_id)
    assert up.summary == "Sam Park (sponsor) at acc gave an NPS score of 1 (detractor)."
    assert _nps(engine, state, 53.5, 0, "c-sam") == []     # same story, new numbers: no update

    [down] = _nps(engine, state, 54, 10, "c-sam")          # the sponsor answers again, happily
    assert (down.transition, down.seq, down.severity) == ("updated", 3, "medium")
    assert [r["type"] for r in engine.open_risks(state)].count("sentiment_drop") == 1

    later = engine.evaluate(state, at_day(95))             # the bad answers age out of the trend window
    [resolved] = [t for t in later.transitions if t.type == "sentiment_drop"]
    assert (resolved.transition, resolved.seq, resolved.risk_id) == ("resolved", 4, opened.risk_id)
    assert resolved.trigger_event_id is None and resolved.occurred_at == at_day(95)
    assert "sentiment_drop" not in {r["type"] for r in engine.open_risks(state)}

    assert _nps(engine, state, 100, 2, "c-u6") == [] and _nps(engine, state, 101, 2, "c-u7") == []
    [again] = _nps(engine, state, 102, 2, "c-u8")
    assert (again.transition, again.seq) == ("opened", 1) and again.risk_id != opened.risk_id


def test_risk_ids_are_deterministic_uuid5(engine: ScoringEngine) -> None:
    state = engine.new_state("acc")
    engine.apply(state, event("contact", "acc", at_day(0, 9), {"contact_id": "c1", "name": "Dana",
                                                               "role": "champion", "status": "active"}))
    left = event("contact", "acc", at_day(3, 9), {"contact_id": "c1", "status": "left"})
    [t] = engine.apply(state, left).transitions
    assert uuid.UUID(t.risk_id).version == 5
    assert t.risk_id == risk_id("acc", "champion_left", int(at_day(3, 9).timestamp()), 1)
    assert t.event_id == f"{t.risk_id}:1"
    [listed] = engine.open_risks(state)
    assert listed["risk_id"] == t.risk_id and listed["severity"] == "critical" and listed["seq"] == 1
    assert listed["summary"] == "Dana (champion) has left acc."
    assert listed["opened_at"] == at_day(3, 9).isoformat()


def _tickets(engine: ScoringEngine, state: AccountState, day: float, n: int,
             prefix: str) -> list[RiskTransition]:
    out = []
    for i in range(n):
        ev = event("ticket", state.account_id, at_day(day, 9 + i * 0.25),
                   {"ticket_id": f"{prefix}-{i}", "status": "opened"})
        out.extend(t for t in engine.apply(state, ev).transitions if t.type == "ticket_spike")
    return out


def test_updates_only_when_the_story_changes_then_resolves_as_the_window_slides(
        engine: ScoringEngine) -> None:
    state = engine.new_state("acc")
    for week in range(5):                                  # about one ticket a week
        _tickets(engine, state, 1 + 7 * week, 1, f"w{week}")
    storm = _tickets(engine, state, 36, 12, "s")
    kinds = [(t.transition, t.evidence["opened_7d"]) for t in storm]
    assert kinds[0][0] == "opened" and all(k == "updated" for k, _ in kinds[1:])
    # An update only when the count reaches a new power of two, not for every ticket.
    bands = [int(math.log2(n)) for _, n in kinds]
    assert bands == sorted(set(bands)) and len(kinds) <= 3
    assert [t.seq for t in storm] == list(range(1, len(storm) + 1))
    assert len({t.risk_id for t in storm}) == 1
    quiet = engine.evaluate(state, at_day(44))
    [resolved] = [t for t in quiet.transitions if t.type == "ticket_spike"]
    assert resolved.transition == "resolved" and resolved.seq == len(storm) + 1
