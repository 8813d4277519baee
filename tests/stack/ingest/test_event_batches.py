"""`validate_events` checks a request in one pass when it is all valid; the verdict, the events and the
errors must be exactly those of validating each event on its own (`validate_event`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.codec import encode_input, encode_inputs
from shared.events import Event, EventError, validate_event, validate_events
from tests.stack.ingest.strategies import mutated_events, valid_events

NOW = datetime.now(UTC)


def one_by_one(raws: list[Any]) -> tuple[list[Event], list[EventError]]:
    events: list[Event] = []
    errors: list[EventError] = []
    for i, raw in enumerate(raws):
        result = validate_event(raw, i, now=NOW)
        if isinstance(result, Event):
            events.append(result)
        else:
            errors += result
    return events, errors


@settings(max_examples=300, deadline=None)
@given(st.lists(valid_events | mutated_events, min_size=1, max_size=8))
def test_a_request_is_judged_as_each_of_its_events_alone(raws: list[Any]):
    assert validate_events(raws, now=NOW) == one_by_one(raws)


@settings(max_examples=100, deadline=None)
@given(st.lists(valid_events, min_size=1, max_size=20))
def test_valid_requests_give_every_event(raws: list[Any]):
    events, errors = validate_events(raws, now=NOW)
    assert errors == []
    assert [e.id for e in events] == [r["id"] for r in raws]
    assert (events, errors) == one_by_one(raws)


def test_a_future_event_is_located_even_among_valid_ones():
    raws = [{"id": "a", "type": "usage", "account_id": "x", "occurred_at": "2020-01-01T00:00:00Z",
             "data": {"feature": "f"}},
            {"id": "b", "type": "usage", "account_id": "x", "occurred_at": "2999-01-01T00:00:00Z",
             "data": {"feature": "f"}}]
    events, errors = validate_events(raws, now=NOW)
    assert [e.id for e in events] == ["a"]
    assert [(e.index, e.loc) for e in errors] == [(1, ("occurred_at",))]


@settings(max_examples=100, deadline=None)
@given(st.lists(valid_events | mutated_events.filter(lambda e: isinstance(e, dict)), max_size=8))
def test_a_request_encodes_each_event_as_encode_input_does(raws: list[dict[str, Any]]):
    assert encode_inputs(raws, NOW) == [encode_input(raw, NOW) for raw in raws]
