"""Hypothesis strategies for events: arbitrary JSON, mutated (mostly invalid) events, valid events."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
VALID_DATA: dict[str, dict[str, Any]] = {
    "usage": {"feature": "login"}, "ticket": {"ticket_id": "T1", "status": "opened"},
    "sentiment": {"source": "csat", "score": 2}, "account": {"arr": 10.5}, "contact": {"contact_id": "p1"},
}
GZIP_BOMB = gzip.compress(b" " * (3 * 1024 * 1024))


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def _ago(seconds: int) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=15,
)
timestamps = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                          timezones=st.just(UTC)).map(lambda d: d.isoformat())
data_keys = st.sampled_from(["feature", "user_id", "count", "ticket_id", "status", "priority", "subject",
                             "source", "score", "text", "contact_id", "name", "csm", "renewal_date", "arr",
                             "seats", "segment", "email", "role"])
data_values = st.sampled_from(["login", "opened", "urgent", "nps", "csat", "review", "champion", "left",
                               "2026-01-31", "a@b.c"]) | json_values
mutated_events = st.fixed_dictionaries(
    {"id": st.text(max_size=130) | json_values,
     "type": st.sampled_from(["usage", "ticket", "sentiment", "account", "contact", "other"]) | json_values,
     "account_id": st.text(min_size=1, max_size=10) | json_values,
     "occurred_at": st.integers(-10**6, 600).map(_ago) | timestamps | json_values,
     "data": st.dictionaries(data_keys | st.text(max_size=5), data_values, max_size=6) | json_values},
    optional={"received_at": timestamps, "extra": json_values},
)
valid_events = st.builds(
    lambda i, account, kind: {"id": f"e-{i}", "type": kind, "account_id": account, "occurred_at": _ago(60),
                              "data": VALID_DATA[kind]},
    st.integers(0, 10**9), st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=8),
    st.sampled_from(sorted(VALID_DATA)))
some_events = st.lists(mutated_events | valid_events, max_size=6)
payloads = st.one_of(
    st.binary(max_size=300),
    json_values.map(_dumps),
    mutated_events.map(_dumps),
    some_events.map(_dumps),
    some_events.map(lambda evs: b"\n".join(_dumps(e) for e in evs)),
    valid_events.map(_dumps),
    st.lists(valid_events, min_size=1, max_size=6).map(_dumps),
    st.lists(st.binary(max_size=40), max_size=5).map(b"\n".join),
)
