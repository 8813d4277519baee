"""Shared, computed-once fixtures of the scoring domain tests: the stories and one run over all of them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.scoring.domain import ScoringConfig, ScoringEngine
from shared.events import Event

from .stories import Story, StoryRun, all_stories, merged_events, run_story_pure

LATENESS = timedelta(hours=1)


@pytest.fixture(scope="session")
def stories() -> list[Story]:
    return all_stories()


@pytest.fixture(scope="session")
def stream(stories: list[Story]) -> list[Event]:
    return merged_events(stories)


@pytest.fixture(scope="session")
def story_run(stories: list[Story], stream: list[Event]) -> StoryRun:
    return run_story_pure(ScoringEngine(ScoringConfig()), stories, LATENESS, events=stream)


@pytest.fixture
def engine() -> ScoringEngine:
    return ScoringEngine(ScoringConfig())
