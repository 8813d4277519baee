"""The shared event schema (docs/events.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.codec import BadRecord, decode_input, encode_input
from shared.events import (
    Event,
    EventError,
    EventType,
    _checked_event,
    _plain_event,
    event_to_dict,
    validate_event,
    validate_events,
)

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


def test_account_lifecycle_and_its_time():
    base = {"id": "a", "type": "account", "account_id": "a", "occurred_at": "2026-06-01T11:00:00Z"}
    ok = validate_event({**base, "data": {"lifecycle": "churned", "lifecycle_at": "2026-05-31T23:00:00-02:00"}},
                        now=NOW)
    assert isinstance(ok, Event)
    assert ok.data.lifecycle == "churned" and ok.data.lifecycle_at == datetime(2026, 6, 1, 1, tzinfo=UTC)
    assert validate_event({**base, "data": {"lifecycle": "renewed"}}, now=NOW).data.lifecycle_at is None
    [alone] = validate_event({**base, "data": {"lifecycle_at": "2026-05-31T00:00:00Z"}}, now=NOW)
    assert alone.loc == ("data",) and "'lifecycle_at'" in alone.msg and "'lifecycle'" in alone.msg
    [bad] = validate_event({**base, "data": {"lifecycle": "lost"}}, now=NOW)
    assert bad.loc == ("data", "lifecycle")
    [naive] = validate_event({**base, "data": {"lifecycle": "churned", "lifecycle_at": "2026-05-31"}}, now=NOW)
    assert naive.loc == ("data", "lifecycle_at") and "RFC 3339" in naive.msg
    # Both fields, in the wire form and back.
    assert event_to_dict(ok)["data"] == {"lifecycle": "churned", "lifecycle_at": "2026-05-31T23:00:00-02:00"}


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


# -- the shortcut for plain events -----------------------------------------------------------------------

_TIMESTAMPS = ["2026-06-01T11:00:00+00:00", "2026-06-01T11:00:00Z", "2026-06-01t11:00:00z",
               "2026-06-01T11:00:00.123456789+02:00", "2026-06-01T11:00:00.5-05:30", "2026-06-01 11:00:00Z",
               "2026-06-01T11:00Z", "2026-02-30T00:00:00Z", "2026-06-01T25:00:00Z", "2026-06-01T11:00:60Z",
               "2026-06-01T11:00:00+24:00", "2026-06-01T11:00:00", "1717239600", 1717239600, None,
               "２０２６-06-01T11:00:00Z", "2026-06-01T11:00:00Z\n"]
_IDS = ["e1", "x" * 128, "x" * 129, "", "é", "a b", 5, None, True]
_DATA = {
    "usage": [{"feature": "login"}, {"feature": "login", "user_id": "u", "count": 3},
              {"feature": "login", "count": 5.0}, {"feature": "login", "count": 5.5},
              {"feature": "login", "count": True}, {"feature": "login", "count": "5"},
              {"feature": "login", "count": 0}, {"feature": "login", "count": 10**9 + 1},
              {"feature": "login", "browser": {"name": "firefox"}}, {"feature": ""}, {}, {"feature": 5},
              {"feature": "login", "user_id": None}],
    "ticket": [{"ticket_id": "t", "status": "opened"}, {"ticket_id": "t", "status": "opened", "priority": "high"},
               {"ticket_id": "t", "status": "lost"}, {"ticket_id": "t"}],
    "sentiment": [{"source": "nps", "score": 9}, {"source": "nps", "score": 9.5}, {"source": "csat", "score": 7},
                  {"source": "survey", "score": -0.5, "contact_id": "c"}, {"source": "conversation", "text": "ok"},
                  {"source": "nps"}, {"source": "nps", "score": "9"}],
    "account": [{"name": "Acme", "renewal_date": "2026-12-31", "arr": 1000, "seats": 5.0,
                 "csm": {"email": "a@b.c", "slack_user_id": "U1"}}, {"renewal_date": "2026-13-01"},
                {"renewal_date": 20261231}, {"csm": {"email": "not an address"}}, {"arr": -1}, {},
                {"lifecycle": "churned", "lifecycle_at": "2026-05-01T00:00:00Z"}, {"lifecycle": "renewed"},
                {"lifecycle_at": "2026-05-01T00:00:00Z"}, {"lifecycle": "gone"},
                {"lifecycle": "active", "lifecycle_at": "2026-05-01"}],
    "contact": [{"contact_id": "c", "role": "champion", "status": "left", "user_id": "u"},
                {"contact_id": "c", "role": "boss"}, {"role": "champion"}],
}


_VALID_TIMESTAMPS = _TIMESTAMPS[:5]


@st.composite
def _raw_events(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly plain events, with a few of their parts swapped for something odd (valid or not)."""
    kind = draw(st.sampled_from(list(_DATA)))
    raw: dict[str, Any] = {
        "id": draw(st.sampled_from(_IDS[:2])), "type": kind, "account_id": draw(st.sampled_from(_IDS[:2])),
        "occurred_at": draw(st.sampled_from(_VALID_TIMESTAMPS)),
        "data": dict(draw(st.sampled_from(_DATA[kind]))),
    }
    if draw(st.booleans()):
        raw["received_at"] = draw(st.sampled_from(_VALID_TIMESTAMPS))
    for part in draw(st.lists(st.sampled_from(["id", "type", "account_id", "occurred_at", "received_at",
                                               "data", "missing", "extra"]), max_size=2)):
        if part in ("id", "account_id"):
            raw[part] = draw(st.sampled_from(_IDS))
        elif part == "type":
            raw[part] = draw(st.sampled_from([*_DATA, "Usage", "other", 3, None]))
        elif part in ("occurred_at", "received_at"):
            raw[part] = draw(st.sampled_from(_TIMESTAMPS))
        elif part == "data":
            raw[part] = dict(draw(st.sampled_from(_DATA[draw(st.sampled_from(list(_DATA)))])))
        elif part == "missing":
            raw.pop(draw(st.sampled_from(sorted(raw))))
        else:
            raw[draw(st.sampled_from(["extra", "acount_id"]))] = "x"
    return raw


def _same(a: Event | list[EventError], b: Event | list[EventError]) -> bool:
    if isinstance(a, Event) and isinstance(b, Event):
        return repr(a) == repr(b) and a.data.model_fields_set == b.data.model_fields_set
    return a == b


@settings(max_examples=500, deadline=None)
@given(_raw_events(), st.booleans())
def test_the_shortcut_for_plain_events_decides_like_the_models(raw: dict[str, Any], allow_received_at: bool):
    plain = _plain_event(raw, allow_received_at)
    checked = _checked_event(raw, 0, now=NOW, allow_received_at=allow_received_at, check_future=False)
    if plain is not None:
        assert isinstance(checked, Event) and _same(plain, checked)
    # and what validate_event answers, errors included, is the models' answer
    assert _same(validate_event(raw, 0, now=NOW, allow_received_at=allow_received_at, check_future=False),
                 checked)
    assert _same(validate_event(raw, 0, now=NOW, allow_received_at=allow_received_at),
                 _checked_event(raw, 0, now=NOW, allow_received_at=allow_received_at, check_future=True))


def test_plain_records_take_the_shortcut():
    value = encode_input(usage(data={"feature": "login", "user_id": "u1", "count": 2}), NOW)
    raw = orjson.loads(value)
    assert _plain_event(raw, True) is not None
    assert _same(decode_input(value), _checked_event(raw, 0, now=NOW, allow_received_at=True, check_future=False))


def test_bad_records_name_the_problem():
    value = encode_input(usage(occurred_at="2026-06-01 11:00:00Z", data={"feature": "", "count": 1.5}), NOW)
    try:
        decode_input(value)
    except BadRecord as exc:
        assert exc.reason == ("occurred_at: must be an RFC 3339 timestamp with offset, e.g. 2026-01-31T12:00:00Z; "
                              "data.feature: String should have at least 1 character; "
                              "data.count: Input should be a valid integer, got a number with a fractional part")
    else:
        raise AssertionError("accepted a bad record")


def _account(data: dict[str, Any]) -> dict[str, Any]:
    return {"id": "a1", "type": "account", "account_id": "acme", "occurred_at": "2026-06-01T11:00:00+00:00",
            "data": data}


def test_crm_url_must_be_an_http_url_of_at_most_2048_characters() -> None:
    ok = validate_event(_account({"crm_url": "https://crm.example.com/accounts/42?tab=1"}), now=NOW)
    assert isinstance(ok, Event) and ok.data.crm_url == "https://crm.example.com/accounts/42?tab=1"
    for bad in ("javascript:alert(1)", "ftp://crm.example.com/a", "https://", "crm.example.com/a",
                "https://crm.example.com/a b", 'https://x.example/"><script>', 42):
        errors = validate_event(_account({"crm_url": bad}), now=NOW)
        assert isinstance(errors, list) and errors[0].loc == ("data", "crm_url"), bad
        if isinstance(bad, str):
            assert "http:// or https:// URL" in errors[0].msg
    errors = validate_event(_account({"crm_url": "https://crm.example.com/" + "a" * 2048}), now=NOW)
    assert isinstance(errors, list) and errors[0].msg == "must be at most 2048 characters"
