"""Segment messages as churnsignal events (services/ingest/segment/mapping.py), on Segment's own documented
example payloads (tests/fixtures/segment/README.md says which page each comes from): pure, no I/O.

Every mapped event is checked against the one event schema (`validate_events`), so what the mapping makes is
what ingest accepts."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest.segment.config import SegmentMapping, SegmentMappingError
from services.ingest.segment.mapping import Mapped, Reason, event_id, map_messages, parse_time
from shared.errors import Unprocessable
from shared.events import validate_events

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "segment"
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
DEFAULTS = SegmentMapping.load()


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def nobody(_: str) -> str | None:
    return None


def knows(accounts: Mapping[str, str]) -> Callable[[str], str | None]:
    return accounts.get


def mapped(messages: list[Any], accounts: Callable[[str], str | None] = nobody, *, mapping: SegmentMapping = DEFAULTS,
           batch: bool = True, **kwargs: Any) -> Mapped:
    out = map_messages(messages, mapping, accounts, now=NOW, batch=batch, **kwargs)
    events, errors = validate_events(copy.deepcopy(out.events), now=NOW)
    assert errors == [] and len(events) == len(out.events), errors
    return out


def problems(messages: list[Any], **kwargs: Any) -> list[tuple[list[Any], str]]:
    with pytest.raises(Unprocessable) as caught:
        map_messages(messages, DEFAULTS, nobody, now=NOW, batch=True, **kwargs)
    return [(e["loc"], e["msg"]) for e in caught.value.details["errors"]]


# ------------------------------------------------------------------------------------- the Spec examples
def test_track_of_the_spec_is_a_usage_event_of_the_users_account():
    out = mapped([fixture("track.json")], knows({"AiUGstSDIg": "acme"}))
    assert out.events == [{
        "id": "segment:ajs-f8ca1e4de5024d9430b3928bd8ac6b96", "type": "usage", "account_id": "acme",
        "occurred_at": "2015-12-12T19:11:01.249Z",
        "data": {"feature": "Course Clicked", "user_id": "AiUGstSDIg"}}]
    assert out.memberships == {} and not out.unmapped


def test_track_without_any_account_is_unmapped_not_an_error():
    out = mapped([fixture("track.json")])
    assert out.events == []
    assert out.unmapped == {("track", Reason.NO_ACCOUNT): 1}


def test_context_group_id_names_the_account_before_the_users_membership():
    message = fixture("track.json")
    message["context"]["groupId"] = "globex"
    out = mapped([message], knows({"AiUGstSDIg": "acme"}))
    assert [e["account_id"] for e in out.events] == ["globex"]
    message = fixture("track.json")
    message["properties"]["groupId"] = 42  # a whole number is an id too
    assert [e["account_id"] for e in mapped([message]).events] == ["42"]


def test_group_of_the_spec_is_an_account_event_and_a_membership():
    out = mapped([fixture("group.json")])
    assert out.events == [{
        "id": "segment:022bb90c-bbac-11e4-8dfc-aa07a5b093db", "type": "account",
        "account_id": "0e8c78ea9d97a7b8185e8632", "occurred_at": "2015-02-23T22:28:55.111Z",
        "data": {"name": "Initech", "plan": "enterprise"}}]   # employees are not seats: not mapped
    assert out.memberships == {"97980cfea0067": "0e8c78ea9d97a7b8185e8632"}


def test_identify_of_the_spec_is_a_contact_of_the_account_its_group_call_named():
    # The Spec's group, identify and page examples are the same user (and share one messageId).
    out = mapped([fixture("group.json"), fixture("identify.json")])
    assert out.events[1] == {
        "id": "segment:022bb90c-bbac-11e4-8dfc-aa07a5b093db", "type": "contact",
        "account_id": "0e8c78ea9d97a7b8185e8632", "occurred_at": "2015-02-23T22:28:55.111Z",
        "data": {"contact_id": "97980cfea0067", "user_id": "97980cfea0067", "email": "peter@example.com",
                 "name": "Peter Gibbons"}}


def test_identify_alone_finds_the_account_a_former_group_call_named():
    out = mapped([fixture("identify.json")], knows({"97980cfea0067": "initech"}))
    assert [(e["type"], e["account_id"]) for e in out.events] == [("contact", "initech")]
    assert mapped([fixture("identify.json")]).unmapped == {("identify", Reason.NO_ACCOUNT): 1}


def test_page_of_the_spec_is_usage_of_the_page_name():
    out = mapped([fixture("page.json")], knows({"97980cfea0067": "initech"}))
    assert [(e["type"], e["data"]) for e in out.events] == [
        ("usage", {"feature": "Home", "user_id": "97980cfea0067"})]
    unnamed = fixture("page.json")
    del unnamed["name"]
    assert mapped([unnamed], knows({"97980cfea0067": "initech"})).events[0]["data"]["feature"] == "page"


def test_batch_of_the_http_api_page():
    body = fixture("batch.json")
    # The HTTP API page's group call put 019mr8mf4r in 8e9df332ac; 971mj8mk7p is in no known account.
    out = mapped(body["batch"], knows({"019mr8mf4r": "8e9df332ac"}), context=body["context"])
    assert [(e["type"], e["account_id"], e["occurred_at"], e["data"]) for e in out.events] == [
        ("contact", "8e9df332ac", "2012-12-02T00:30:08.276Z",
         {"contact_id": "019mr8mf4r", "user_id": "019mr8mf4r", "email": "jake@yahoo.com", "name": "Jake Peterson"}),
        ("usage", "8e9df332ac", "2012-12-02T00:30:12.984Z", {"feature": "Song Played", "user_id": "019mr8mf4r"}),
    ]
    assert out.unmapped == {("identify", Reason.NO_ACCOUNT): 1, ("track", Reason.NO_ACCOUNT): 1}
    # No messageId in these: each id is a digest of the message, the same on every delivery.
    ids = [e["id"] for e in out.events]
    assert len(set(ids)) == 2 and all(i.startswith("segment:sha256-") for i in ids)
    again = mapped(body["batch"], knows({"019mr8mf4r": "8e9df332ac"}), context=body["context"],
                   sent_at="2012-12-02T00:31:00Z")
    assert [e["id"] for e in again.events] == ids


def test_one_digit_months_of_the_batch_example_become_rfc3339():
    body = fixture("batch.json")
    out = mapped(body["batch"], knows({"019mr8mf4r": "a", "971mj8mk7p": "b"}))
    assert [e["occurred_at"] for e in out.events if e["account_id"] == "b"] == [
        "2015-02-02T00:30:08.276000+00:00", "2015-02-02T00:30:12.984000+00:00"]


def test_http_api_single_calls_take_their_type_from_the_path():
    group, track = fixture("http_api_group.json"), fixture("http_api_track.json")
    out = mapped([group], batch=False, kind="group")
    assert [(e["type"], e["account_id"], e["data"]) for e in out.events] == [
        ("account", "8e9df332ac", {"name": "Initech"})]
    assert out.memberships == {"019mr8mf4r": "8e9df332ac"}
    out = mapped([track], knows(out.memberships), batch=False, kind="track")
    assert [(e["type"], e["account_id"], e["data"]) for e in out.events] == [
        ("usage", "8e9df332ac", {"feature": "Item Purchased", "user_id": "019mr8mf4r"})]
    out = mapped([fixture("http_api_identify.json")], knows({"019mr8mf4r": "8e9df332ac"}), batch=False,
                 kind="identify")
    assert out.events[0]["data"] == {"contact_id": "019mr8mf4r", "user_id": "019mr8mf4r",
                                     "email": "pgibbons@example.com", "name": "Peter Gibbons"}


def test_alias_and_other_types_are_unmapped():
    out = mapped([fixture("http_api_alias.json")], knows({"019mr8mf4r": "a"}), batch=False, kind="alias")
    assert out.events == [] and out.unmapped == {("alias", Reason.UNSUPPORTED_TYPE): 1}
    out = mapped([fixture("webhooks_alias.json"), {"type": "delete", "userId": "019mr8mf4r"}])
    assert out.unmapped == {("alias", Reason.UNSUPPORTED_TYPE): 1, ("other", Reason.UNSUPPORTED_TYPE): 1}


def test_webhooks_destination_examples():
    out = mapped([fixture("webhooks_group.json"), fixture("webhooks_identify.json"), fixture("webhooks_track.json")])
    assert [(e["type"], e["account_id"], e["data"]) for e in out.events] == [
        ("account", "0e8c78ea9d97a7b8185e8632", {"name": "Initech", "plan": "Enterprise"}),
        ("contact", "0e8c78ea9d97a7b8185e8632",
         {"contact_id": "019mr8mf4r", "user_id": "019mr8mf4r", "email": "achilles@segment.com", "name": "Achilles"}),
        ("usage", "0e8c78ea9d97a7b8185e8632", {"feature": "Purchased an Item", "user_id": "019mr8mf4r"}),
    ]


# ---------------------------------------------------------------------------------------- memberships
def test_a_group_call_earlier_in_the_request_wins_over_what_was_known():
    group = {"type": "group", "userId": "u1", "groupId": "new-account", "messageId": "g1"}
    track = {"type": "track", "userId": "u1", "event": "login", "messageId": "t1"}
    out = mapped([track, group, track | {"messageId": "t2"}], knows({"u1": "old-account"}))
    assert [(e["id"], e["account_id"]) for e in out.events] == [
        ("segment:t1", "old-account"), ("segment:g1", "new-account"), ("segment:t2", "new-account")]
    assert out.memberships == {"u1": "new-account"}


def test_anonymous_users_join_and_use_accounts_too():
    group = {"type": "group", "anonymousId": "anon-7", "groupId": "acme", "messageId": "g"}
    track = {"type": "track", "anonymousId": "anon-7", "event": "login", "messageId": "t"}
    out = mapped([group, track])
    assert out.memberships == {"anon-7": "acme"}
    assert out.events[1]["data"] == {"feature": "login", "user_id": "anon-7"}


# -------------------------------------------------------------------------------------------- traits
def test_account_traits_are_matched_without_case_or_separators_and_coerced():
    group = {"type": "group", "groupId": "acme", "messageId": "g", "traits": {
        "Name": "Acme Corp", "ARR": "48,000", "seats": "40", "Renewal Date": "2027-01-15T00:00:00Z",
        "segment": "mid-market", "csmEmail": "jordan@vendor.example", "csm_name": "Jordan Lee",
        "crm_url": "https://crm.example.com/acme", "industry": "Retail"}}
    assert mapped([group]).events[0]["data"] == {
        "name": "Acme Corp", "arr": 48000.0, "seats": 40, "renewal_date": "2027-01-15", "segment": "mid-market",
        "csm": {"email": "jordan@vendor.example", "name": "Jordan Lee"}, "crm_url": "https://crm.example.com/acme"}


def test_mrr_becomes_arr_when_no_arr_is_given():
    group = {"type": "group", "groupId": "acme", "messageId": "g", "traits": {"mrr": 1250.5}}
    assert mapped([group]).events[0]["data"] == {"arr": 15006.0}
    both = {**group, "traits": {"mrr": 1000, "arr": 9000}}
    assert mapped([both]).events[0]["data"] == {"arr": 9000}


def test_nested_csm_object_is_read_too():
    group = {"type": "group", "groupId": "acme", "messageId": "g",
             "traits": {"csm": {"email": "jordan@vendor.example", "slack_user_id": "U0AB12CD"}}}
    assert mapped([group]).events[0]["data"] == {"csm": {"email": "jordan@vendor.example",
                                                         "slack_user_id": "U0AB12CD"}}


def test_contact_role_and_status_keep_only_listed_values():
    identify = {"type": "identify", "userId": "u1", "messageId": "i", "context": {"groupId": "acme"},
                "traits": {"firstName": "Dana", "lastName": "Smith", "Role": "Executive  Sponsor", "status": "LEFT",
                           "title": "VP Engineering"}}
    assert mapped([identify]).events[0]["data"] == {
        "contact_id": "u1", "user_id": "u1", "name": "Dana Smith", "role": "sponsor", "status": "left",
        "title": "VP Engineering"}
    identify["traits"] |= {"Role": "Head of Data", "status": "on leave"}
    assert "role" not in mapped([identify]).events[0]["data"]
    assert "status" not in mapped([identify]).events[0]["data"]


def test_a_trait_that_is_no_number_is_named():
    group = {"type": "group", "groupId": "acme", "messageId": "g", "traits": {"arr": "lots", "seats": 40.5}}
    assert problems([group]) == [
        (["batch", 0, "traits", "arr"],
         "must be a number (or a string of one) to become the account's arr, got 'lots'"),
        (["batch", 0, "traits", "seats"], "must be a whole number (or a string of one) to become the account's "
                                          "seats, got 40.5"),
    ]


# -------------------------------------------------------------------------------------------- time
def test_original_timestamp_is_corrected_by_the_senders_clock_offset():
    message = {"type": "track", "event": "login", "userId": "u", "context": {"groupId": "a"}, "messageId": "m",
               "originalTimestamp": "2026-11-25T08:00:00Z", "sentAt": "2026-11-25T08:10:00Z"}
    # Sent 10 minutes after it happened by the sender's clock, received at NOW: it happened at NOW - 10 min.
    assert mapped([message]).events[0]["occurred_at"] == (NOW - timedelta(minutes=10)).isoformat()
    without_sent_at = {k: v for k, v in message.items() if k != "sentAt"}
    assert mapped([without_sent_at]).events[0]["occurred_at"] == "2026-11-25T08:00:00+00:00"
    # the batch's sentAt serves its messages that have none
    out = mapped([without_sent_at], sent_at="2026-11-25T08:05:00Z")
    assert out.events[0]["occurred_at"] == (NOW - timedelta(minutes=5)).isoformat()


def test_no_timestamp_is_the_time_the_request_arrived():
    message = {"type": "track", "event": "login", "userId": "u", "context": {"groupId": "a"}, "messageId": "m"}
    assert mapped([message]).events[0]["occurred_at"] == NOW.isoformat()


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-25T09:14:07.123Z", datetime(2026, 11, 25, 9, 14, 7, 123000, tzinfo=UTC)),
    ("2026-11-25 09:14:07", datetime(2026, 11, 25, 9, 14, 7, tzinfo=UTC)),
    ("2026-1-5T9:14:07+0100", datetime(2026, 1, 5, 8, 14, 7, tzinfo=UTC)),
    ("2026-11-25", datetime(2026, 11, 25, tzinfo=UTC)),
    ("yesterday", None), ("2026-13-01T00:00:00Z", None), (1764063247, None),
])
def test_segment_timestamps(text: Any, expected: datetime | None):
    assert parse_time(text) == expected


# ------------------------------------------------------------------------------------------ not Segment
def test_what_is_no_segment_message_is_named_and_nothing_is_mapped():
    batch = [
        {"userId": "u", "event": "x"},                                          # no type
        {"type": "track", "userId": "u", "context": {"groupId": "a"}},          # no event
        {"type": "group", "userId": "u", "traits": {}},                         # no groupId
        {"type": "track", "event": "x", "timestamp": "last tuesday"},           # no time
        "track",                                                                # no object
        {"type": "identify", "traits": {"email": "a@b.c"}},                     # no user
        {"type": "track", "event": "fine", "userId": "u", "context": {"groupId": "a"}},
    ]
    assert problems(batch) == [
        (["batch", 0, "type"], "required: the call's type (track, identify, group, page, screen or alias)"),
        (["batch", 1, "event"], "required: the name of the action (it becomes the usage event's feature)"),
        (["batch", 2, "groupId"], "required: the id of the group (the account) the user belongs to"),
        (["batch", 3, "timestamp"], "must be an ISO 8601 time, e.g. 2026-01-31T12:00:00.000Z; got 'last tuesday'"),
        (["batch", 4], "must be an object (a Segment message), got a string"),
        (["batch", 5, "userId"], "required: userId or anonymousId (the contact)"),
    ]


def test_envelope_errors_are_named_in_segment_terms():
    future = (NOW + timedelta(hours=1)).isoformat()
    batch = [{"type": "track", "event": "ok", "userId": "u", "context": {"groupId": "a"}, "messageId": "1"},
             {"type": "track", "event": "x" * 300, "userId": "u", "timestamp": future, "messageId": "2",
              "context": {"groupId": "a"}},
             {"type": "group", "groupId": "a", "messageId": "3", "traits": {"csm_email": "not an address"}}]
    out = map_messages(batch, DEFAULTS, nobody, now=NOW, batch=True)
    _, errors = validate_events(copy.deepcopy(out.events), now=NOW)
    error = out.translate(Unprocessable("invalid", errors=[e.as_dict() for e in errors]))
    assert error.message == "2 Segment messages are invalid; nothing was accepted"
    assert sorted(e["loc"] for e in error.details["errors"]) == [
        ["batch", 1, "event"], ["batch", 1, "timestamp"], ["batch", 2, "traits", "csm_email"]]
    timing = next(e for e in error.details["errors"] if e["loc"][-1] == "timestamp")
    assert "occurred_at" not in timing["msg"]


# ------------------------------------------------------------------------------------------------ ids
def test_ids_are_the_prefix_and_the_message_id():
    assert event_id({"messageId": "abc"}, "segment:") == "segment:abc"
    assert event_id({"messageId": 7}, "segment:") == "segment:7"
    long_id = event_id({"messageId": "m" * 200}, "segment:")
    assert long_id.startswith("segment:sha256-") and len(long_id) <= 128
    assert event_id({"messageId": "m" * 200}, "segment:") == long_id
    # without messageId: the content, less what changes per delivery
    one = {"type": "track", "event": "x", "userId": "u"}
    assert event_id(one | {"sentAt": "2026-01-01T00:00:00Z", "writeKey": "k"}, "segment:") == event_id(one, "segment:")
    assert event_id(one | {"event": "y"}, "segment:") != event_id(one, "segment:")


# ------------------------------------------------------------------------------------- the mapping file
def test_a_mapping_file_overrides_only_what_it_names(tmp_path: Path):
    path = tmp_path / "segment.yaml"
    path.write_text("id_prefix: 'seg-'\n"
                    "account_from: [properties.account]\n"
                    "page: {enabled: false}\n"
                    "group: {fields: {plan: [], seats: [employees]}}\n"
                    "identify: {roles: {Head of Data: champion}}\n")
    mapping = SegmentMapping.load(path)
    track = {"type": "track", "event": "login", "userId": "u", "messageId": "t",
             "properties": {"account": "acme"}, "context": {"groupId": "ignored"}}
    page = {"type": "page", "name": "Home", "userId": "u", "properties": {"account": "acme"}}
    group = fixture("group.json")
    identify = {"type": "identify", "userId": "u", "messageId": "i", "traits": {"role": "head of data"},
                "properties": {"account": "acme"}}
    out = mapped([track, page, group, identify], mapping=mapping)
    assert [(e["id"], e["account_id"]) for e in out.events] == [
        ("seg-t", "acme"), ("seg-022bb90c-bbac-11e4-8dfc-aa07a5b093db", "0e8c78ea9d97a7b8185e8632"), ("seg-i", "acme")]
    assert out.events[1]["data"] == {"name": "Initech", "seats": 329}   # plan turned off, seats from employees
    assert out.events[2]["data"]["role"] == "champion"                  # a role added; the defaults kept
    assert out.unmapped == {("page", Reason.DISABLED): 1}


@pytest.mark.parametrize(("text", "named"), [
    ("identify: {roles: {boss: king}}", "identify.roles.boss"),
    ("track: {enabeld: true}", "track.enabeld"),
    ("account_from: ['context..groupId']", "account_from"),
    ("identify: {fields: {contact_id: [id]}}", "identify.fields"),
    ("[1, 2]", "top level"),
    ("group: {fields: {name: [name]", "not valid YAML"),
])
def test_a_bad_mapping_file_is_refused_naming_the_key(tmp_path: Path, text: str, named: str):
    path = tmp_path / "segment.yaml"
    path.write_text(text)
    with pytest.raises(SegmentMappingError) as caught:
        SegmentMapping.load(path)
    assert named in str(caught.value) and str(path) in str(caught.value)


def test_a_missing_mapping_file_is_named(tmp_path: Path):
    with pytest.raises(SegmentMappingError, match="cannot be read"):
        SegmentMapping.load(tmp_path / "nope.yaml")


# ------------------------------------------------------------------------- fast path = reference path
_odd_ids = st.one_of(st.none(), st.just(""), st.integers(-5, 5), st.booleans(), st.just("x" * 130))
_odd_times = st.one_of(st.sampled_from(["2026-11-25 08:00:00", "2026-1-5T8:00:00Z", "soon", ""]), st.integers())
_odd_group_keys = st.dictionaries(st.sampled_from(["GroupID", "group_id", "other"]),
                                  st.one_of(st.sampled_from(["acme", "globex"]), _odd_ids), max_size=2)
_ODD: dict[str, Any] = {"messageId": _odd_ids, "userId": _odd_ids, "anonymousId": _odd_ids, "timestamp": _odd_times,
                        "event": st.one_of(st.just(""), st.integers(), st.none()),
                        "context": st.one_of(_odd_group_keys, st.just("not an object")), "properties": _odd_group_keys}


@st.composite
def _tracks(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly ordinary track calls (string ids, RFC 3339 times, an account or a known user), some with one or
    two fields odd or missing."""
    message: dict[str, Any] = {
        "type": "track", "messageId": draw(st.sampled_from(["m1", "m2", "m3"])),
        "userId": draw(st.sampled_from(["u", "a", "0", "1", "stranger"])),
        "timestamp": draw(st.sampled_from(["2026-11-25T08:00:00Z", "2026-11-25T08:00:00.5+01:00"])),
        "event": draw(st.sampled_from(["login", "Report Exported"])),
        "context": draw(st.sampled_from([{}, {"groupId": "acme"}, {"groupId": 7}, {"library": {"name": "x"}}])),
    }
    for name in draw(st.lists(st.sampled_from(sorted(_ODD)), max_size=2)):
        if draw(st.booleans()):
            message.pop(name, None)
        else:
            message[name] = draw(_ODD[name])
    return message


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_tracks(), st.just({"type": "group", "userId": "u", "groupId": "g", "messageId": "m"})),
                min_size=1, max_size=6),
       st.dictionaries(st.sampled_from(["u", "a", "0", "1"]), st.sampled_from(["acme", "globex"]), max_size=3),
       st.sampled_from([None, {"groupId": "initech"}, {"ip": "8.8.8.8"}]),
       st.sampled_from([None, "2026-11-25T08:10:00Z"]))
def test_the_plain_track_path_maps_like_the_general_one(messages: list[dict[str, Any]], known: dict[str, str],
                                                        context: dict[str, Any] | None, sent_at: str | None):
    """`track` calls take a shortcut when the events' origins are not kept (`locate=False`, what ingest maps
    with first): it must give exactly what the general path gives, or a 422 just the same."""
    def run(locate: bool) -> Any:
        try:
            out = map_messages(copy.deepcopy(messages), DEFAULTS, known.get, now=NOW, batch=True, locate=locate,
                               context=context, sent_at=sent_at)
        except Unprocessable as exc:
            return exc.details["errors"]
        return out.events, out.memberships, out.unmapped

    assert run(locate=False) == run(locate=True)
