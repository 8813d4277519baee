"""Every account story raises exactly its expected risks, in event time, whatever the arrival order."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.scoring.domain import ScoringConfig, ScoringEngine, encode_state
from shared.events import Event

from .conftest import LATENESS
from .stories import END, WEEKS, Story, StoryRun, at_day, merged_events, run_story_pure, story_problems

STORY_NAMES = ["champion_leaves", "champion_goes_quiet", "usage_fades", "ticket_storm", "sponsor_detractor",
               "renewal_while_yellow", "steady_seasonal", "steady_low_volume", "steady_busy",
               "champion_week_off", "sponsor_checks_in", "small_team_week_off", "ticket_busy_week"]
# Healthy accounts, the last four with the everyday episodes a naive detector mistakes for churn.
HEALTHY = ["steady_seasonal", "steady_low_volume", "steady_busy", "champion_week_off", "sponsor_checks_in",
           "small_team_week_off", "ticket_busy_week"]


def _story(stories: list[Story], name: str) -> Story:
    return next(s for s in stories if s.name == name)


def test_the_library_has_every_story(stories: list[Story]) -> None:
    assert [s.name for s in stories] == STORY_NAMES
    assert len({s.account_id for s in stories}) == len(stories)
    for s in stories:
        assert s.events, s.name
        times = [e["occurred_at"] for e in s.events]
        assert all("T" in t and ("+" in t or t.endswith("Z")) for t in times)


@pytest.mark.parametrize("name", STORY_NAMES)
def test_story_raises_exactly_its_expected_risks(name: str, stories: list[Story],
                                                 story_run: StoryRun) -> None:
    story = _story(stories, name)
    assert story_problems(story, story_run.risk_records(story.account_id)) == []
    for t in story_run.transitions.get(story.account_id, []):
        assert t.summary.endswith(".") and story.account_name in t.summary, t.summary
        assert t.evidence and all(isinstance(k, str) for k in t.evidence)
        assert t.health.config_version == ScoringConfig().version


def test_summaries_read_like_a_csm_would_write_them(stories: list[Story], story_run: StoryRun) -> None:
    def summary(name: str, rtype: str) -> str:
        return story_run.opened(_story(stories, name).account_id)[rtype].summary

    assert summary("champion_leaves", "champion_left") == "Dana Smith (champion) has left Acme Corp."
    assert summary("sponsor_detractor", "sentiment_drop") == \
        "Gavin Belson (sponsor) at Hooli gave an NPS score of 3 (detractor)."
    assert summary("champion_goes_quiet", "champion_inactive").startswith(
        "Priya Singh (champion) at Globex has not used the product for ")
    assert "renews in 60 days" in summary("renewal_while_yellow", "renewal_risk")
    spike = story_run.opened(_story(stories, "ticket_storm").account_id)["ticket_spike"]
    assert spike.evidence["opened_7d"] >= 5 and spike.evidence["usual_per_week"] <= 1.5


def test_silence_is_noticed_by_the_clock_without_an_event_from_the_account(
        stories: list[Story], story_run: StoryRun, stream: list[Event]) -> None:
    story = _story(stories, "usage_fades")
    last_event = max(e.occurred_at for e in stream if e.account_id == story.account_id)
    drops = [t for t in story_run.transitions[story.account_id] if t.type == "usage_drop"]
    silent = [t for t in drops if t.evidence["mode"] == "silent"]
    assert silent, [t.summary for t in drops]
    assert silent[0].trigger_event_id is None and silent[0].occurred_at > last_event
    assert "has had no product usage for" in silent[0].summary
    # ... and the account keeps being evaluated while others move the clock: health goes to zero.
    assert story_run.snapshots[story.account_id][-1].score == 0.0


@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_accounts_stay_green_once_known(name: str, stories: list[Story], story_run: StoryRun) -> None:
    story = _story(stories, name)
    later = [s for s in story_run.snapshots[story.account_id] if s.as_of >= at_day(28)]
    assert later and all(s.tier == "green" for s in later), [(s.as_of, s.score) for s in later if
                                                               s.tier != "green"]


def test_renewal_story_is_yellow_when_the_renewal_is_announced(stories: list[Story],
                                                               story_run: StoryRun) -> None:
    story = _story(stories, "renewal_while_yellow")
    risk = story_run.opened(story.account_id)["renewal_risk"]
    assert risk.health.tier == "yellow" and risk.evidence["tier"] == "yellow"
    assert risk.trigger_event_id is not None  # the account update that announced the date


def test_the_same_stream_twice_gives_identical_outcomes(stories: list[Story], stream: list[Event],
                                                        story_run: StoryRun) -> None:
    again = run_story_pure(ScoringEngine(ScoringConfig()), stories, LATENESS, events=stream)
    for s in stories:
        a = s.account_id
        assert [t.to_dict() for t in again.transitions.get(a, [])] == \
            [t.to_dict() for t in story_run.transitions.get(a, [])]
        assert [h.to_dict() for h in again.snapshots.get(a, [])] == \
            [h.to_dict() for h in story_run.snapshots.get(a, [])]
        assert encode_state(again.states[a]) == encode_state(story_run.states[a])


def test_out_of_order_within_lateness_raises_the_same_risks(stories: list[Story], stream: list[Event],
                                                            story_run: StoryRun) -> None:
    shuffled = merged_events(stories, jitter=LATENESS, seed=7)
    ordered_ids = [e.id for e in stream]
    assert [e.id for e in shuffled] != ordered_ids and sorted(e.id for e in shuffled) == sorted(ordered_ids)
    run = run_story_pure(ScoringEngine(ScoringConfig()), stories, LATENESS, events=shuffled)
    for s in stories:
        a = s.account_id
        expected = [(t.type, t.transition, t.severity) for t in story_run.transitions.get(a, [])]
        assert [(t.type, t.transition, t.severity) for t in run.transitions.get(a, [])] == expected, s.name
        for rtype, first in story_run.opened(a).items():
            assert abs(run.opened(a)[rtype].occurred_at - first.occurred_at) <= LATENESS
        # Late events folded into their own day buckets: the windows are the same.
        assert run.states[a].usage == story_run.states[a].usage
        assert run.states[a].tickets_opened == story_run.states[a].tickets_opened
        assert run.states[a].users == story_run.states[a].users


def test_stories_run_with_a_partition_of_their_own(stories: list[Story]) -> None:
    """Each story alone, with one steady account keeping the clock moving, raises the same risks."""
    from .stories import steady_story

    engine = ScoringEngine(ScoringConfig())
    for name in ("usage_fades", "champion_goes_quiet", "ticket_storm"):
        story = _story(stories, name)
        run = run_story_pure(engine, [story, steady_story("keeper-1")], LATENESS)
        assert story_problems(story, run.risk_records(story.account_id)) == []
        assert run.transitions.get("keeper-1", []) == []


def test_timeline_covers_ten_weeks() -> None:
    assert END - at_day(0) == timedelta(weeks=WEEKS)
