"""CloudEvents 1.0 mapping (services.ingest.cloudevents): pure, no server. Every mode, the type prefix,
missing and invalid attributes, `accountid` versus `subject`, and the envelope's errors renamed."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.ingest.cloudevents import BATCH, STRUCTURED, CloudEventBatch, Mode, map_event, mode_of, parse
from shared.errors import BadRequest, PayloadTooLarge, Unprocessable, UnsupportedMediaType
from shared.events import validate_events

TIME = "2026-01-31T12:00:00Z"


def ce(**over: Any) -> dict[str, Any]:
    event = {"specversion": "1.0", "id": "u-1", "source": "/crm", "type": "usage", "time": TIME,
             "accountid": "acme", "datacontenttype": "application/json", "data": {"feature": "export"}}
    return {k: v for k, v in {**event, **over}.items() if v is not None}


NATIVE = {"id": "u-1", "type": "usage", "account_id": "acme", "occurred_at": TIME, "data": {"feature": "export"}}


def headers(**over: str | None) -> dict[str, str]:
    base = {"ce-specversion": "1.0", "ce-id": "u-1", "ce-source": "/crm", "ce-type": "usage", "ce-time": TIME,
            "ce-accountid": "acme"}
    return {k: v for k, v in {**base, **over}.items() if v is not None}


def structured(event: Any, prefix: str = "") -> CloudEventBatch:
    return parse(Mode.STRUCTURED, orjson.dumps(event), content_type=STRUCTURED, ce_headers=None,
                 max_events=10, type_prefix=prefix)


def batch(events: Any, prefix: str = "", max_events: int = 10) -> CloudEventBatch:
    return parse(Mode.BATCH, orjson.dumps(events), content_type=BATCH, ce_headers=None,
                 max_events=max_events, type_prefix=prefix)


def binary(hdrs: dict[str, str], data: Any = None, content_type: str | None = "application/json",
           prefix: str = "") -> CloudEventBatch:
    body = b"" if data is None else orjson.dumps(data)
    return parse(Mode.BINARY, body, content_type=content_type, ce_headers=hdrs, max_events=10, type_prefix=prefix)


def errors_of(call: Any, *args: Any, **kwargs: Any) -> list[tuple[int, tuple[Any, ...], str]]:
    with pytest.raises(Unprocessable) as info:
        call(*args, **kwargs)
    return [(e["index"], tuple(e["loc"]), e["msg"]) for e in info.value.details["errors"]]


# ------------------------------------------------------------------------------------------ modes
@pytest.mark.parametrize(("content_type", "ce_headers", "mode"), [
    ("application/cloudevents+json", None, Mode.STRUCTURED),
    ("Application/CloudEvents+JSON; charset=utf-8", None, Mode.STRUCTURED),
    ("application/cloudevents-batch+json", None, Mode.BATCH),
    ("application/json", {"ce-specversion": "1.0"}, Mode.BINARY),
    ("application/cloudevents+json", {"ce-specversion": "1.0"}, Mode.STRUCTURED),  # the content type wins
    ("application/json", None, None),
    ("application/x-ndjson", None, None),
    (None, None, None),
])
def test_mode_of_a_request(content_type, ce_headers, mode):
    assert mode_of(content_type, ce_headers) == mode


def test_structured_event_maps_onto_the_native_envelope():
    out = structured(ce())
    assert out.raws == [NATIVE]
    assert out.account_from == ["accountid"]


def test_batch_maps_every_event():
    out = batch([ce(), ce(id="t-2", type="ticket", accountid="globex", data={"ticket_id": "T2", "status": "opened"})])
    assert out.raws == [NATIVE, {"id": "t-2", "type": "ticket", "account_id": "globex", "occurred_at": TIME,
                                 "data": {"ticket_id": "T2", "status": "opened"}}]


def test_binary_event_takes_attributes_from_headers_and_data_from_the_body():
    out = binary(headers(), {"feature": "export"})
    assert out.raws == [NATIVE]


def test_binary_header_values_are_percent_decoded():
    out = binary(headers(**{"ce-accountid": "acme%20corp%C3%A9"}), {"feature": "export"})
    assert out.raws[0]["account_id"] == "acme corp\u00e9"


def test_mapped_events_validate_as_native_ones():
    events, errors = validate_events(batch([ce(), ce(id="u-2")]).raws)
    assert errors == [] and [e.id for e in events] == ["u-1", "u-2"]


def test_other_attributes_and_extensions_are_accepted_and_dropped():
    out = structured(ce(subject="ignored-when-accountid", dataschema="https://x", traceparent="00-ab", tenant=3))
    assert out.raws == [NATIVE]


# ------------------------------------------------------------------------------------------ mapping rules
def test_subject_is_the_account_when_there_is_no_accountid():
    out = structured(ce(accountid=None, subject="initech"))
    assert out.raws[0]["account_id"] == "initech" and out.account_from == ["subject"]
    out = binary(headers(**{"ce-accountid": None, "ce-subject": "initech"}), {"feature": "export"})
    assert out.raws[0]["account_id"] == "initech" and out.account_from == ["subject"]


def test_accountid_wins_over_subject():
    assert structured(ce(subject="other")).raws[0]["account_id"] == "acme"


def test_type_prefix_is_stripped():
    assert structured(ce(type="com.example.usage"), "com.example.").raws[0]["type"] == "usage"
    assert binary(headers(**{"ce-type": "com.example.usage"}), {"feature": "x"},
                  prefix="com.example.").raws[0]["type"] == "usage"


def test_a_type_without_the_prefix_is_422_naming_type():
    [(index, loc, msg)] = errors_of(structured, ce(type="usage"), "com.example.")
    assert (index, loc) == (0, ("type",)) and "com.example." in msg
    [(_, loc, _)] = errors_of(binary, headers(), {"feature": "x"}, prefix="com.example.")
    assert loc == ("header", "ce-type")


def test_without_a_prefix_the_type_is_taken_as_is():
    assert structured(ce(type="com.example.usage")).raws[0]["type"] == "com.example.usage"  # then invalid


# ------------------------------------------------------------------------------------------ attribute errors
@pytest.mark.parametrize("attribute", ["specversion", "id", "source", "type", "time"])
def test_a_missing_required_attribute_is_422_naming_it(attribute):
    [(index, loc, msg)] = errors_of(structured, ce(**{attribute: None}))
    assert (index, loc) == (0, (attribute,)) and msg
    [(index, loc, _)] = errors_of(binary, headers(**{f"ce-{attribute}": None}), {"feature": "x"})
    assert (index, loc) == (0, ("header", f"ce-{attribute}"))


def test_missing_time_says_it_is_required():
    [(_, loc, msg)] = errors_of(structured, ce(time=None))
    assert loc == ("time",) and "required" in msg


@pytest.mark.parametrize("version", ["0.3", "1", 1.0, "2.0"])
def test_specversion_other_than_1_0_is_422(version):
    [(_, loc, msg)] = errors_of(structured, ce(specversion=version))
    assert loc == ("specversion",) and "1.0" in msg
    if isinstance(version, str):
        [(_, loc, _)] = errors_of(binary, headers(**{"ce-specversion": version}), {"feature": "x"})
        assert loc == ("header", "ce-specversion")


def test_no_account_at_all_is_422_naming_accountid():
    [(_, loc, msg)] = errors_of(structured, ce(accountid=None))
    assert loc == ("accountid",) and "subject" in msg
    [(_, loc, _)] = errors_of(binary, headers(**{"ce-accountid": None}), {"feature": "x"})
    assert loc == ("header", "ce-accountid")


@pytest.mark.parametrize("attribute", ["id", "source", "type"])
def test_empty_or_non_string_attributes_are_422(attribute):
    assert errors_of(structured, ce(**{attribute: ""}))[0][1] == (attribute,)
    assert errors_of(structured, ce(**{attribute: 5}))[0][1] == (attribute,)


def test_non_json_data_is_422():
    assert errors_of(structured, ce(datacontenttype="text/plain"))[0][1] == ("datacontenttype",)
    assert errors_of(structured, ce(data=None, data_base64="aGk="))[0][1] == ("data_base64",)


def test_batch_reports_every_problem_of_every_event():
    errors = errors_of(batch, [ce(), ce(specversion="0.3"), ce(time=None, source=None), "nope"])
    assert {(i, loc) for i, loc, _ in errors} == {(1, ("specversion",)), (2, ("time",)), (2, ("source",)),
                                                   (3, ())}


def test_one_event_in_the_envelope_is_a_structured_event():
    with pytest.raises(Unprocessable) as info:
        structured(ce(time=None))
    assert info.value.message == "1 of 1 event is invalid; nothing was accepted"


# ------------------------------------------------------------------------------------------ envelope errors renamed
def _renamed(out: CloudEventBatch) -> list[tuple[int, tuple[Any, ...], str]]:
    _, errors = validate_events(out.raws)
    assert errors
    exc = Unprocessable("x", errors=[e.as_dict() for e in errors])
    return [(e["index"], tuple(e["loc"]), e["msg"]) for e in out.translate(exc).details["errors"]]


def test_envelope_errors_are_named_by_cloudevents_attribute():
    errors = _renamed(batch([ce(time="yesterday"), ce(subject="x" * 200, accountid=None),
                             ce(data={"count": 2})]))
    assert {(i, loc) for i, loc, _ in errors} == {(0, ("time",)), (1, ("subject",)), (2, ("data", "feature"))}


def test_envelope_errors_of_binary_events_name_headers_and_body():
    errors = _renamed(binary(headers(**{"ce-time": "yesterday", "ce-type": "nope"}), {"count": 2}))
    assert {loc for _, loc, _ in errors} == {("header", "ce-time"), ("header", "ce-type")}
    errors = _renamed(binary(headers(), {"count": 2}))
    assert [loc for _, loc, _ in errors] == [("body", "feature")]
    errors = _renamed(binary(headers()))  # no body: no data
    assert [loc for _, loc, _ in errors] == [("body",)]


def test_future_time_message_names_time():
    [(_, loc, msg)] = _renamed(structured(ce(time="2999-01-01T00:00:00Z")))
    assert loc == ("time",) and "time is more than 5 minutes in the future" in msg


# ------------------------------------------------------------------------------------------ bodies
def test_structured_body_must_be_one_object():
    with pytest.raises(BadRequest, match="cloudevents-batch"):
        structured([ce()])


def test_batch_body_must_be_a_non_empty_array_within_the_limit():
    with pytest.raises(BadRequest, match="JSON array"):
        batch(ce())
    with pytest.raises(BadRequest, match="empty"):
        batch([])
    with pytest.raises(PayloadTooLarge):
        batch([ce(id=f"u-{i}") for i in range(3)], max_events=2)


def test_broken_json_is_400_saying_where():
    with pytest.raises(BadRequest) as info:
        parse(Mode.STRUCTURED, b'{"id":\n x}', content_type=STRUCTURED, ce_headers=None, max_events=10)
    assert info.value.details["line"] == 2


def test_binary_data_must_be_json():
    with pytest.raises(UnsupportedMediaType):
        binary(headers(), {"feature": "x"}, content_type="text/plain")
    with pytest.raises(UnsupportedMediaType):
        binary(headers(), {"feature": "x"}, content_type=None)
    assert binary(headers(), {"feature": "x"}, content_type="application/vnd.acme+json").raws == [NATIVE | {
        "data": {"feature": "x"}}]


def test_non_utf8_charset_is_415():
    with pytest.raises(UnsupportedMediaType):
        parse(Mode.STRUCTURED, orjson.dumps(ce()), content_type=f"{STRUCTURED}; charset=latin-1",
              ce_headers=None, max_events=10)


def test_map_event_alone():
    raw, account_from, problems = map_event(ce(type="x.usage"), "x.")
    assert (raw, account_from, problems) == (NATIVE, "accountid", [])
