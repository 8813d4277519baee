"""U+0000 in any string is rejected at every edge: events, input records, risk events, API inputs.

PostgreSQL `text` and `jsonb` cannot hold it, so anything carrying one that got through would fail every
transaction it is part of."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.alerts.entrypoints.api import SilenceIn
from shared.codec import BadRecord, decode_input, encode_input
from shared.events import (
    NUL_MESSAGE,
    Event,
    EventError,
    nul_locations,
    validate_event,
    validate_events,
)
from shared.http import install_common
from shared.metrics import new_registry
from shared.risks import AccountBrief, HealthBrief, RiskEvent

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
KEY_MESSAGE = f"key {NUL_MESSAGE}"


def contact(name: str = "Ada", **over: Any) -> dict[str, Any]:
    event = {"id": "x1", "type": "contact", "account_id": "a1", "occurred_at": "2026-06-01T11:00:00Z",
             "data": {"contact_id": "c1", "name": name, "role": "champion", "status": "left"}}
    event.update(over)
    return event


def usage(i: int) -> dict[str, Any]:
    return {"id": f"u{i}", "type": "usage", "account_id": "acme", "occurred_at": "2026-06-01T11:00:00Z",
            "data": {"feature": "login", "user_id": f"user-{i}"}}


def located(errors: Event | list[EventError]) -> list[tuple[int, tuple[str | int, ...], str]]:
    assert isinstance(errors, list), f"expected errors, got {errors!r}"
    return [(e.index, e.loc, e.msg) for e in errors]


# ------------------------------------------------------------------------------------------------ events
def test_a_nul_in_a_contact_name_is_an_error_located_at_the_field():
    assert located(validate_event(contact("A\x00B"), now=NOW)) == [(0, ("data", "name"), NUL_MESSAGE)]


@pytest.mark.parametrize("field", ["id", "account_id"])
def test_a_nul_in_an_id_is_an_error_although_it_is_ascii(field: str):
    assert "a\x00".isascii()
    assert located(validate_event(contact(**{field: "a\x00"}), now=NOW)) == [(0, (field,), NUL_MESSAGE)]


def test_a_nul_anywhere_in_data_is_located_kept_keys_nested_values_and_keys_included():
    data = {"contact_id": "c1", "role": "champion",
            "crm": {"owner": "Bo\x00b", "tags": ["ok", "bad\x00"], "x\x00y": 1}}
    errors = validate_event(contact(data=data), now=NOW)
    assert located(errors) == [
        (0, ("data", "crm", "owner"), NUL_MESSAGE),
        (0, ("data", "crm", "tags", 1), NUL_MESSAGE),
        (0, ("data", "crm", "x\\u0000y"), KEY_MESSAGE),  # the key spelled with the escape, never a NUL
    ]


def test_a_nul_is_reported_along_with_every_other_error_of_the_event():
    errors = validate_event(contact("A\x00B", occurred_at="yesterday", data={"contact_id": "", "name": "\x00"}),
                            now=NOW)
    locs = [loc for _, loc, _ in located(errors)]
    assert ("occurred_at",) in locs and ("data", "contact_id") in locs
    assert (0, ("data", "name"), NUL_MESSAGE) in located(errors)


def test_a_nul_in_an_unknown_envelope_key_is_named_without_the_nul_in_the_location():
    errors = located(validate_event({**contact(), "b\x00d": "x"}, now=NOW))
    assert (0, ("b\\u0000d",), KEY_MESSAGE) in errors


def test_the_escape_spelled_out_as_text_is_no_nul():
    event = validate_event(contact("backslash \\u0000 text"), now=NOW)
    assert isinstance(event, Event) and event.data.name == "backslash \\u0000 text"


def test_a_batch_with_one_nul_names_it_by_index_and_keeps_the_rest():
    raws = [usage(0), usage(1), {**usage(2), "data": {"feature": "login", "extra": {"note": "\x00"}}}, usage(3)]
    events, errors = validate_events(raws, now=NOW)
    assert [e.as_dict() for e in errors] == [{"index": 2, "loc": ["data", "extra", "note"], "msg": NUL_MESSAGE}]
    assert [e.id for e in events] == ["u0", "u1", "u3"]


def test_a_batch_without_nul_takes_the_same_path_as_before_even_with_the_escape_spelled_out():
    raws = [usage(i) for i in range(50)]
    raws[7]["data"]["note"] = "\\u0000"
    events, errors = validate_events(raws, now=NOW)
    assert errors == [] and len(events) == 50
    assert events[7].data.model_extra == {"note": "\\u0000"}


def test_nul_locations_walk_json_nested_deeper_than_the_interpreter_stack():
    deep: Any = "\x00"
    for _ in range(5000):
        deep = [deep]
    [(loc, is_key)] = nul_locations({"data": deep})
    assert loc == ("data", *[0] * 5000) and not is_key


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_any_name_is_valid_exactly_when_it_holds_no_nul_and_records_agree(name: str):
    result = validate_event(contact(name), now=NOW)
    record = encode_input(contact(name), NOW)
    if "\x00" in name:
        assert located(result) == [(0, ("data", "name"), NUL_MESSAGE)]
        with pytest.raises(BadRecord) as caught:
            decode_input(record)
        assert caught.value.reason == f"data.name: {NUL_MESSAGE}"
    else:
        assert isinstance(result, Event) and result.data.name == name
        assert decode_input(record).data.name == name


# ---------------------------------------------------------------------------------------- input records
def test_an_input_record_with_a_nul_is_a_bad_record_naming_the_field():
    with pytest.raises(BadRecord) as caught:
        decode_input(encode_input(contact("A\x00B"), NOW))
    assert caught.value.reason == "data.name: must not contain a NUL character (U+0000)"


def test_an_input_record_reason_never_carries_a_nul_even_for_an_unknown_key():
    record = orjson.dumps({**contact(), "received_at": NOW.isoformat(), "t\x00": 1})
    with pytest.raises(BadRecord) as caught:
        decode_input(record)
    assert "\x00" not in caught.value.reason
    assert f"t\\u0000: {KEY_MESSAGE}" in caught.value.reason


def test_an_input_record_with_the_escape_as_text_decodes():
    event = decode_input(encode_input(contact("C:\\u0000dir"), NOW))
    assert event.data.name == "C:\\u0000dir"


# ------------------------------------------------------------------------------------------ risk events
def risk(**over: Any) -> RiskEvent:
    fields: dict[str, Any] = dict(
        event_id="r1:1", risk_id="r1", seq=1, transition="opened", account_id="acme", type="champion_left",
        severity="critical", summary="Champion left", evidence={"contact": "Jo"},
        health=HealthBrief(score=30.0, tier="red", reasons=["-18: champion left"]),
        account=AccountBrief(name="Acme"), occurred_at=NOW, detected_at=NOW)
    fields.update(over)
    return RiskEvent(**fields)


@pytest.mark.parametrize(("over", "loc"), [
    ({"summary": "x\x00"}, ("summary",)),
    ({"account": AccountBrief(name="Ac\x00me")}, ("account", "name")),
    ({"evidence": {"contact": {"names": ["Jo", "J\x00"]}}}, ("evidence", "contact", "names", 1)),
    ({"account_id": "\x00"}, ("account_id",)),
])
def test_a_risk_event_with_a_nul_is_invalid_naming_where(over: dict[str, Any], loc: tuple[Any, ...]):
    raw = risk(**over).to_json()
    for form in (raw, raw.decode()):
        with pytest.raises(ValueError) as caught:
            RiskEvent.from_json(form)
        assert isinstance(caught.value, ValidationError)
        assert [(e["loc"], e["msg"]) for e in caught.value.errors()] == [(loc, NUL_MESSAGE)]


def test_a_risk_event_with_a_nul_in_an_evidence_key_is_invalid():
    with pytest.raises(ValidationError) as caught:
        RiskEvent.from_json(risk(evidence={"k\x00": 1}).to_json())
    assert [(e["loc"], e["msg"]) for e in caught.value.errors()] == [(("evidence", "k\\u0000"), KEY_MESSAGE)]


def test_risk_events_without_nul_still_decode_and_bad_json_is_still_a_validation_error():
    plain = risk(summary="a \\u0000 b")
    assert RiskEvent.from_json(plain.to_json()) == plain
    with pytest.raises(ValidationError):
        RiskEvent.from_json(b'{"summary": "\\u0000", ')
    with pytest.raises(ValidationError):
        RiskEvent.from_json(None)  # a tombstone on the topic


# ----------------------------------------------------------------------------------------------- API
def silence(**over: Any) -> dict[str, Any]:
    return {"account_id": "acme", "types": ["usage_drop"], "until": "2030-01-01T00:00:00Z",
            "reason": "renewal call", **over}


@pytest.mark.parametrize(("over", "loc"), [
    ({"account_id": "ac\x00me"}, ("account_id",)),
    ({"reason": "\x00"}, ("reason",)),
    ({"types": ["usage_drop", "usage_drop\x00"]}, ("types", 1)),
])
def test_a_silence_with_a_nul_is_invalid_naming_the_field(over: dict[str, Any], loc: tuple[Any, ...]):
    with pytest.raises(ValidationError) as caught:
        SilenceIn.model_validate(silence(**over))
    assert [(e["loc"], e["msg"]) for e in caught.value.errors()] == [(loc, NUL_MESSAGE)]
    assert SilenceIn.model_validate(silence()).account_id == "acme"


def small_app() -> tuple[FastAPI, list[str]]:
    app = FastAPI()
    seen: list[str] = []

    @app.get("/things/{thing_id}")
    async def thing(thing_id: str, q: str | None = None) -> dict[str, Any]:
        seen.append(thing_id)
        return {"thing_id": thing_id, "q": q}

    async def readiness() -> dict[str, bool]:
        return {"ok": True}

    install_common(app, registry=new_registry(), readiness=readiness)
    return app, seen


@pytest.mark.parametrize(("url", "part"), [
    ("/things/a%00b", "path"),
    ("/things/a?q=%00", "query string"),
    ("/things/a?q=x&other=%00%00", "query string"),
    ("/healthz?probe=%00", "query string"),
])
async def test_a_nul_in_the_path_or_query_is_a_400_before_any_handler(url: str, part: str):
    app, seen = small_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        resp = await client.get(url)
        assert resp.status_code == 400
        assert resp.json() == {"error": f"the request {part} must not contain a NUL character (U+0000)"}
        assert seen == []
        ok = await client.get("/things/a%2500b?q=%2500")  # a percent sign followed by 00 is no NUL
        assert (ok.status_code, ok.json()) == (200, {"thing_id": "a%00b", "q": "%00"})
