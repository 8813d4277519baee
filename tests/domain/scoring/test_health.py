"""The health model: components, unknowns re-weighted, tiers, deltas, and when a snapshot is kept."""

from __future__ import annotations

import pytest

from services.scoring.domain import ScoringConfig, ScoringEngine
from services.scoring.domain.config import COMPONENTS

from .stories import Story, StoryRun, at_day, event


def test_an_account_with_no_data_has_no_score() -> None:
    engine = ScoringEngine(ScoringConfig())
    state = engine.new_state("empty")
    out = engine.evaluate(state, at_day(3))
    assert out.health is None and out.transitions == []   # nothing changed: unknown stays unknown
    snap = engine.snapshot(state)
    assert snap.score is None and snap.tier == "unknown"
    assert [c.name for c in snap.components] == list(COMPONENTS)
    assert all(c.score is None and c.weight == 0 and c.contribution == 0 and c.reason
               for c in snap.components)


def test_unknown_components_are_reweighted_not_neutral(engine: ScoringEngine) -> None:
    state = engine.new_state("acc")
    first = engine.apply(state, event("ticket", "acc", at_day(1, 9), {"ticket_id": "t1", "status": "opened"}))
    snap = first.health
    assert snap is not None and snap.score == 100.0 and snap.tier == "green"
    support = snap.component("support_load")
    assert support.score == 100.0 and support.weight == 1.0 and support.contribution == 100.0
    unknown = [c for c in snap.components if c.name != "support_load"]
    assert all(c.score is None and c.weight == 0.0 for c in unknown)
    assert snap.component("sentiment").reason == "no sentiment in the last 90 days"

    second = engine.apply(state, event("sentiment", "acc", at_day(1, 10), {"source": "nps", "score": 3}))
    snap = second.health
    assert snap is not None
    w = ScoringConfig().weights
    both = w.support_load + w.sentiment
    assert snap.component("support_load").weight == pytest.approx(w.support_load / both, abs=1e-4)
    assert snap.component("sentiment").weight == pytest.approx(w.sentiment / both, abs=1e-4)
    assert snap.component("sentiment").score == pytest.approx(20.0)   # NPS 3 counts as a detractor: -0.6
    assert snap.score == pytest.approx(sum(c.contribution for c in snap.components), abs=0.05)
    assert snap.tier == "yellow"
    deltas = {d.component: d for d in snap.deltas}
    assert deltas["support_load"].change < 0 and deltas["support_load"].reason.endswith("re-weighted")
    assert deltas["sentiment"].change > 0 and "sentiment -0.60" in deltas["sentiment"].reason
    assert sum(d.change for d in snap.deltas) == pytest.approx(snap.score - 100.0, abs=0.2)


def test_usage_events_alone_never_emit_a_snapshot(engine: ScoringEngine) -> None:
    state = engine.new_state("acc")
    for hour in range(8, 18):
        out = engine.apply(state, event("usage", "acc", at_day(2, hour),
                                        {"feature": "login", "user_id": "u1"}))
        assert out.health is None and out.transitions == []
        assert out.next_due == at_day(3)


def test_insignificant_changes_keep_no_history(engine: ScoringEngine) -> None:
    state = engine.new_state("acc")
    engine.apply(state, event("ticket", "acc", at_day(1, 9), {"ticket_id": "t1", "status": "opened"}))
    same = engine.apply(state, event("ticket", "acc", at_day(1, 11),
                                     {"ticket_id": "t1", "status": "updated"}))
    assert same.health is None and same.transitions == []
    worse = engine.apply(state, event("ticket", "acc", at_day(1, 12),
                                      {"ticket_id": "t1", "status": "updated", "priority": "urgent"}))
    assert worse.health is not None and worse.health.score == 85.0
    assert [d.reason for d in worse.health.deltas] == ["−15: 1 urgent ticket open"]


def test_deltas_explain_a_ticket_storm(stories: list[Story], story_run: StoryRun) -> None:
    story = next(s for s in stories if s.name == "ticket_storm")
    spike = story_run.opened(story.account_id)["ticket_spike"]
    drops = [d for s in story_run.snapshots[story.account_id] if spike.occurred_at <= s.as_of <= at_day(46)
             for d in s.deltas if d.component == "support_load" and d.change < 0]
    assert drops and all(d.reason.startswith("−") for d in drops)
    assert any("ticket spike" in d.reason for d in drops), [d.reason for d in drops]


def test_reasons_name_what_costs_the_most_points_first(stories: list[Story], story_run: StoryRun) -> None:
    story = next(s for s in stories if s.name == "renewal_while_yellow")
    snap = story_run.opened(story.account_id)["renewal_risk"].health
    worst = max((c for c in snap.components if c.score is not None), key=lambda c: c.weight * (100 - c.score))
    reasons = snap.reasons(3)
    assert len(reasons) == 3 and reasons[0].startswith(worst.name.replace("_", " "))
    assert snap.brief().reasons == reasons and snap.brief().tier == "yellow"
    as_dict = snap.to_dict()
    assert as_dict["config_version"] == ScoringConfig().version and len(as_dict["components"]) == len(COMPONENTS)


def test_renewal_weighs_in_weak_health_as_the_date_approaches(engine: ScoringEngine) -> None:
    state = engine.new_state("acc")
    engine.apply(state, event("ticket", "acc", at_day(0, 9),
                              {"ticket_id": "t1", "status": "opened", "priority": "urgent"}))
    engine.apply(state, event("ticket", "acc", at_day(0, 9), {"ticket_id": "t2", "status": "opened",
                                                              "priority": "urgent"}))
    far = engine.apply(state, event("account", "acc", at_day(0, 10), {"renewal_date": "2027-06-01"})).health
    assert far is not None and far.component("renewal").score == 100.0
    near = engine.apply(state, event("account", "acc", at_day(0, 11), {"renewal_date": "2026-06-21"})).health
    assert near is not None
    renewal = near.component("renewal")
    assert renewal.score is not None and renewal.score < near.component("support_load").score
    assert renewal.reason.startswith("renews in 20 days (2026-06-21)")
