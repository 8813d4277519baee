"""Account state: a faithful byte encoding, small, and bounded however busy the account is."""

from __future__ import annotations

import sys
import uuid
from datetime import timedelta

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.scoring.domain import AccountState, ScoringConfig, ScoringEngine, decode_state, encode_state
from services.scoring.domain.state import (
    MAX_CONTACTS,
    MAX_KEY_USERS,
    MAX_OPEN_TICKETS,
    MAX_SENTIMENTS,
    STATE_FIELDS,
)
from shared.events import Event

from .conftest import LATENESS
from .stories import _FEATURES, Driver, Story, StoryRun, at_day, event, run_story_pure


def _fields(state: AccountState) -> dict[str, object]:
    return {name: getattr(state, name) for name in STATE_FIELDS}


def test_round_trip_keeps_every_field(stories: list[Story], story_run: StoryRun) -> None:
    for story in stories:
        state = story_run.states[story.account_id]
        raw = encode_state(state)
        back = decode_state(raw)
        assert _fields(back) == _fields(state), story.name
        assert encode_state(back) == raw


def test_states_scored_by_every_component_round_trip(stories: list[Story], stream: list[Event]) -> None:
    """A configuration weighing the newer components (as `churnsignal calibrate` writes them) makes more
    than eight components known: the state keeps the whole mask."""
    config = ScoringConfig.from_dict({
        "weights": {"intensity": 0.2, "key_features": 0.5, "tenure": 0.1, "usage_trend": 0.2},
        "intensity": {"typical": 3.0},
        "key_features": {"features": {f: {"weight": 0.5, "typical": 4.0} for f in _FEATURES[:3]}},
    })
    run = run_story_pure(ScoringEngine(config), stories, LATENESS, events=stream)
    masks = {run.states[s.account_id].known_mask for s in stories}
    assert max(masks) > 0xFF, "the configuration should make more than eight components known"
    for story in stories:
        state = run.states[story.account_id]
        raw = encode_state(state)
        assert raw[0] == 2
        back = decode_state(raw)
        assert _fields(back) == _fields(state), story.name


def test_a_state_of_the_previous_format_is_read(story_run: StoryRun) -> None:
    """Format 1 (an 8-bit component mask) is what states stored before format 2 hold."""
    import struct

    v2 = struct.Struct("<B" "qqqq" "iiiiii" "HHI" "HB" "BBBBBBBBBB")
    v1 = struct.Struct("<B" "qqqq" "iiiiii" "HBI" "HB" "BBBBBBBBBB")
    for state in story_run.states.values():
        raw = encode_state(state)
        fields = list(v2.unpack_from(raw, 0))
        assert fields[12] <= 0xFF   # (the default configuration knows at most eight components)
        fields[0] = 1
        old = v1.pack(*fields) + raw[v2.size:]
        assert _fields(decode_state(old)) == _fields(state)


def test_a_fresh_state_round_trips() -> None:
    state = AccountState("new")
    assert _fields(decode_state(encode_state(state))) == _fields(state)


def test_continuing_from_decoded_states_changes_nothing(stories: list[Story], stream: list[Event],
                                                       story_run: StoryRun) -> None:
    """As if the service stored every state half-way and reloaded it: the same outcomes."""
    driver = Driver(ScoringEngine(ScoringConfig()), LATENESS)
    half = len(stream) // 2
    for ev in stream[:half]:
        driver.send(ev)
    for account_id, state in list(driver.run.states.items()):
        driver.run.states[account_id] = decode_state(encode_state(state))
    for ev in stream[half:]:
        driver.send(ev)
    for story in stories:
        a = story.account_id
        assert [t.to_dict() for t in driver.run.transitions.get(a, [])] == \
            [t.to_dict() for t in story_run.transitions.get(a, [])], story.name
        assert encode_state(driver.run.states[a]) == encode_state(story_run.states[a])


def test_garbage_is_refused() -> None:
    with pytest.raises(ValueError):
        decode_state(b"")
    with pytest.raises(ValueError):
        decode_state(b"\x09rest")


def test_states_are_small(stories: list[Story], story_run: StoryRun) -> None:
    sizes = {s.name: len(encode_state(story_run.states[s.account_id])) for s in stories}
    assert max(sizes.values()) <= 1_100, sizes
    assert sum(sizes.values()) / len(sizes) <= 900, sizes


def test_a_busy_account_stays_within_its_memory_budget(stories: list[Story], story_run: StoryRun) -> None:
    busy = next(s for s in stories if s.name == "steady_busy")
    raw = encode_state(story_run.states[busy.account_id])
    assert len(raw) <= 1_536
    # What the service holds: account id -> encoded bytes, for many accounts.
    template = decode_state(raw)
    held: dict[str, bytes] = {}
    for i in range(1_000):
        template.account_id = f"massive-{i:06d}"
        held[template.account_id] = encode_state(template)
    per_account = (sys.getsizeof(held) + sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in held.items())) \
        / len(held)
    assert per_account <= 2_048, per_account


def test_everything_is_capped_on_an_extreme_account() -> None:
    d = Driver(ScoringEngine(ScoringConfig()), timedelta(hours=1))
    acc = "acct-extreme"
    d.send(event("account", acc, at_day(0, 1), {
        "name": "Very Long Company Name Holdings International Group Ltd",
        "csm": {"name": "Maya Patel-Smithson", "email": "maya.patel-smithson@customer-success.example.com",
                "slack_user_id": "U01MAYAPATEL"},
        "arr": 1234567.89, "seats": 5000, "segment": "enterprise-emea", "renewal_date": "2026-08-20"}))
    for i in range(20):
        d.send(event("contact", acc, at_day(0, 2), {
            "contact_id": str(uuid.UUID(int=i)), "name": f"Firstname{i} Lastname-Longerfamily " * 3,
            "user_id": f"user-{i:04d}", "role": "champion" if i % 2 else "sponsor", "status": "active"}))
    for day in range(60):
        for u in range(150):
            if (u + day) % 3 == 0:
                d.send(event("usage", acc, at_day(day, 8 + u / 20), {
                    "feature": f"feature.{u % 40}", "user_id": f"user-{u:04d}", "count": 70_000}))
    for t in range(60):
        d.send(event("ticket", acc, at_day(50, 8 + t / 10), {"ticket_id": f"TCK-{t:08d}", "status": "opened",
                                                             "priority": "urgent"}))
    for s in range(40):
        d.send(event("sentiment", acc, at_day(40 + s / 4, 8), {"source": "nps", "score": 2,
                                                              "contact_id": str(uuid.UUID(int=s % 20))}))
    d.advance(at_day(59))
    state = d.run.states[acc]
    assert len(state.contacts) == MAX_CONTACTS and len(state.key_users) == MAX_KEY_USERS
    assert len(state.open_tickets) == MAX_OPEN_TICKETS and len(state.sentiments) == MAX_SENTIMENTS
    assert all(len(c[0]) <= 48 for c in state.contacts.values())
    raw = encode_state(state)
    assert len(raw) <= 2_330, len(raw)   # (the lifelong rhythm adds about 26 bytes)
    assert _fields(decode_state(raw)) == _fields(state)


def test_account_facts_merge_partial_updates_and_make_the_brief() -> None:
    engine = ScoringEngine(ScoringConfig())
    state = engine.new_state("acme")
    engine.apply(state, event("account", "acme", at_day(1, 9), {
        "name": "Acme Corp", "csm": {"name": "Maya Patel", "email": "maya@example.com"}, "arr": 48000,
        "segment": "mid-market"}))
    engine.apply(state, event("account", "acme", at_day(2, 9), {"renewal_date": "2026-12-01",
                                                                "csm": {"slack_user_id": "U01MAYA"}}))
    # An older update arriving late only fills what is unknown.
    engine.apply(state, event("account", "acme", at_day(0, 9), {"name": "ACME (old name)", "seats": 40}))
    brief = engine.account_brief(state)
    assert brief.name == "Acme Corp" and brief.segment == "mid-market" and brief.arr == 48000
    assert brief.csm is not None and (brief.csm.name, brief.csm.email, brief.csm.slack_user_id) == \
        ("Maya Patel", "maya@example.com", "U01MAYA")
    assert brief.renewal_date is not None and brief.renewal_date.isoformat() == "2026-12-01"
    assert state.seats == 40
    assert engine.account_brief(engine.new_state("nobody")).model_dump() == \
        {"name": None, "csm": None, "segment": None, "arr": None, "renewal_date": None, "crm_url": None}


_KINDS = st.sampled_from(["usage", "usage", "usage", "ticket", "sentiment", "contact", "account"])


@st.composite
def _random_event(draw: st.DrawFn) -> tuple[str, float, dict[str, object]]:
    kind = draw(_KINDS)
    day = draw(st.floats(min_value=0, max_value=120, allow_nan=False))
    if kind == "usage":
        data: dict[str, object] = {"feature": draw(st.sampled_from(["a", "b", "c"])),
                                   "user_id": draw(st.sampled_from(["u1", "u2", "u3"])),
                                   "count": draw(st.integers(1, 5))}
    elif kind == "ticket":
        data = {"ticket_id": draw(st.sampled_from(["t1", "t2", "t3", "t4"])),
                "status": draw(st.sampled_from(["opened", "reopened", "updated", "solved", "closed"])),
                "priority": draw(st.sampled_from(["low", "normal", "high", "urgent"]))}
    elif kind == "sentiment":
        data = {"source": "nps", "score": draw(st.integers(0, 10)),
                "contact_id": draw(st.sampled_from(["c1", "c2", "c3"]))}
    elif kind == "contact":
        data = {"contact_id": draw(st.sampled_from(["c1", "c2", "c3"])), "user_id": "u1",
                "role": draw(st.sampled_from(["champion", "sponsor", "user"])),
                "status": draw(st.sampled_from(["active", "left"]))}
    else:
        data = {"renewal_date": draw(st.sampled_from(["2026-07-01", "2026-09-01", "2027-01-01"]))}
    return kind, day, data


@settings(max_examples=40, deadline=None)
@given(st.lists(_random_event(), min_size=1, max_size=60))
def test_random_streams_are_deterministic_and_round_trip(
        raw: list[tuple[str, float, dict[str, object]]]) -> None:
    """Any mix of events, in any order (even later than the lateness): no crash, same result twice."""
    events = [event(kind, "acc", at_day(day), data, event_id=f"e{i}")
              for i, (kind, day, data) in enumerate(raw)]

    def run() -> tuple[list[dict[str, object]], bytes]:
        d = Driver(ScoringEngine(ScoringConfig()), timedelta(hours=1))
        for ev in events:
            d.send(ev)
            state = d.run.states["acc"]
            assert _fields(decode_state(encode_state(state))) == _fields(state)
        d.advance(at_day(130))
        return [t.to_dict() for t in d.run.transitions.get("acc", [])], encode_state(d.run.states["acc"])

    first = run()
    assert run() == first
    opened: set[str] = set()
    for t in first[0]:
        if t["transition"] == "opened":
            assert t["type"] not in opened   # at most one open risk per type
            opened.add(str(t["type"]))
        elif t["transition"] == "resolved":
            opened.discard(str(t["type"]))


def test_a_state_without_lifecycle_facts_decodes() -> None:
    """States written before lifecycles existed hold 8 facts in their JSON tail: they still decode."""
    engine = ScoringEngine(ScoringConfig())
    state = engine.new_state("acc")
    engine.apply(state, event("account", "acc", at_day(3), {"name": "Acme", "arr": 1200, "seats": 4,
                                                            "renewal_date": "2026-12-31",
                                                            "lifecycle": "expanded"}))
    raw = encode_state(state)
    start = raw.rindex(orjson.dumps(["acc"])[:-1])   # the JSON tail: [account_id, facts, contacts, risks]
    tail = orjson.loads(raw[start:])
    assert len(tail[1]) == 10 and tail[1][8:] == ["expanded", int(at_day(3).timestamp())]
    tail[1] = tail[1][:8]
    old = decode_state(raw[:start] + orjson.dumps(tail))
    assert (old.lifecycle, old.lifecycle_ts) == (None, -1)
    assert {k: v for k, v in _fields(old).items() if not k.startswith("lifecycle")} == \
        {k: v for k, v in _fields(state).items() if not k.startswith("lifecycle")}
    # And a state that never had a lifecycle still encodes as before: 8 facts.
    state.lifecycle, state.lifecycle_ts = None, -1
    assert encode_state(state) == raw[:start] + orjson.dumps(tail)


CRM = "https://crm.vendor.example/accounts/acme"


def test_the_crm_url_merges_like_the_other_facts_and_reaches_the_brief() -> None:
    engine = ScoringEngine(ScoringConfig())
    state = engine.new_state("acme")
    engine.apply(state, event("account", "acme", at_day(1, 9), {"name": "Acme Corp", "crm_url": CRM}))
    engine.apply(state, event("account", "acme", at_day(2, 9), {"arr": 1000}))   # not given: kept
    assert state.crm_url == CRM and engine.account_brief(state).crm_url == CRM
    # An older event only fills it when unknown; a newer one replaces it.
    engine.apply(state, event("account", "acme", at_day(0, 9), {"crm_url": "https://old.example/a"}))
    assert state.crm_url == CRM
    engine.apply(state, event("account", "acme", at_day(3, 9), {"crm_url": CRM + "/v2"}))
    assert engine.account_brief(state).crm_url == CRM + "/v2"
    late = engine.new_state("late")
    engine.apply(late, event("account", "late", at_day(2, 9), {"name": "Late"}))
    engine.apply(late, event("account", "late", at_day(1, 9), {"crm_url": CRM}))
    assert late.crm_url == CRM


@pytest.mark.parametrize("lifecycle", [None, "renewed"])
def test_a_crm_url_round_trips_with_or_without_a_lifecycle(lifecycle: str | None) -> None:
    engine = ScoringEngine(ScoringConfig())
    state = engine.new_state("acc")
    data: dict[str, object] = {"name": "Acme", "crm_url": CRM}
    if lifecycle is not None:
        data["lifecycle"] = lifecycle
    engine.apply(state, event("account", "acc", at_day(3), data))
    decoded = decode_state(encode_state(state))
    assert decoded.crm_url == CRM and decoded.lifecycle == lifecycle
    assert _fields(decoded) == _fields(state)


def test_a_state_written_before_crm_urls_decodes_without_one() -> None:
    """States written before `crm_url` hold 8 or 10 facts: they decode with `crm_url` None, and a state
    without a CRM URL still encodes exactly as before."""
    engine = ScoringEngine(ScoringConfig())
    for data in ({"name": "Acme", "arr": 1200}, {"name": "Acme", "lifecycle": "expanded"}):
        state = engine.new_state("acc")
        engine.apply(state, event("account", "acc", at_day(3), data))
        raw = encode_state(state)
        start = raw.rindex(orjson.dumps(["acc"])[:-1])
        facts = orjson.loads(raw[start:])[1]
        assert len(facts) == (10 if "lifecycle" in data else 8)
        old = decode_state(raw)
        assert old.crm_url is None and _fields(old) == _fields(state)
        state.crm_url = CRM
        assert len(orjson.loads(encode_state(state)[start:])[1]) == 11
