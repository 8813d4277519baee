"""The shared event schema (SPEC §2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.codec import BadRecord, decode_input, encode_input
from shared.events import Event, EventType, validate_event, validate_events

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def usage(**over):
    base = {"id": "e1", "type": "usage", "account_id": "acme", "occurred_at": "2026-06-01T11:00:00+00:00",
            "data": {"feature": "login"}}
    base.update(over)
    return base


def test_valid_usage_keeps_extra_data_keys_and_defaults_count():
    ev = validate_event(usage(data={"feature": "login", "browser": "firefox"}), now=NOW)
    assert isinstance(ev, Event)
    assert ev.type is EventType.USAGE
    assert ev.data.count == 1
    assert ev.data.model_extra == {"browser": "firefox"}


def test_unknown_top_level_field_is_named():
    errs = validate_event(usage(acount_id="typo"), now=NOW)
    assert [(e.loc, e.msg) for e in errs] == [(("acount_id",), "unknown field 'acount_id'")]


def test_future_beyond_five_minutes_rejected_but_past_accepted():
    future = (NOW + timedelta(minutes=6)).isoformat()
    errs = validate_event(usage(occurred_at=future), now=NOW)
    assert errs[0].loc == ("occurred_at",)
    assert isinstance(validate_event(usage(occurred_at="2001-01-01T00:00:00Z"), now=NOW), Event)


def test_timestamp_without_offset_rejected():
    errs = validate_event(usage(occurred_at="2026-06-01T11:00:00"), now=NOW)
    assert errs and errs[0].loc == ("occurred_at",)


def test_sentiment_needs_score_or_text_and_score_in_range_for_source():
    base = {"id": "s", "type": "sentiment", "account_id": "a", "occurred_at": "2026-06-01T11:00:00Z"}
    assert validate_event({**base, "data": {"source": "nps"}}, now=NOW)[0].loc == ("data",)
    assert "outside 1..5" in validate_event({**base, "data": {"source": "csat", "score": 7}}, now=NOW)[0].msg
    ok = validate_event({**base, "data": {"source": "nps", "score": 0}}, now=NOW)
    assert ok.data.normalized_score() == -1


def test_every_invalid_event_of_a_batch_is_located():
    events, errors = validate_events([usage(), usage(id=""), "nope", usage(data={})], now=NOW)
    assert len(events) == 1
    assert {e.index for e in errors} == {1, 2, 3}
    assert any(e.loc == ("data", "feature") for e in errors)


def test_wire_round_trip_and_bad_records():
    value = encode_input(usage(), NOW)
    ev = decode_input(value)
    assert ev.received_at == NOW and ev.account_id == "acme"
    for bad in (b"not json", b'{"id": "x"}', None):
        try:
            decode_input(bad)
        except BadRecord as exc:
            assert exc.reason
        else:
            raise AssertionError("accepted a bad record")
