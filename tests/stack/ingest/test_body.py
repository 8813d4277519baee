"""Reading a request body (pure functions): media types, bounded gzip, JSON / NDJSON with locations."""

from __future__ import annotations

import gzip

import pytest

from services.ingest.body import BodyFormat, Encoding, body_format, content_encoding, gunzip, parse_events
from shared.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType


@pytest.mark.parametrize(("header", "fmt"), [
    ("application/json", BodyFormat.JSON),
    ("Application/JSON; charset=UTF-8", BodyFormat.JSON),
    ('application/json; charset="utf-8"', BodyFormat.JSON),
    ("application/vnd.acme+json", BodyFormat.JSON),
    ("application/x-ndjson", BodyFormat.NDJSON),
    ("application/ndjson", BodyFormat.NDJSON),
])
def test_json_and_ndjson_media_types(header: str, fmt: BodyFormat):
    assert body_format(header) is fmt


@pytest.mark.parametrize(("header", "says"), [
    (None, "missing Content-Type"),
    ("  ", "missing Content-Type"),
    ("text/csv", "unsupported content type 'text/csv'"),
    ("application/json; charset=iso-8859-1", "unsupported charset 'iso-8859-1'"),
    ("text/\x7fweird", "unsupported content type 'text/?weird'"),
])
def test_other_media_types_are_415_naming_them(header: str | None, says: str):
    with pytest.raises(UnsupportedMediaType) as exc:
        body_format(header)
    assert says in exc.value.message


def test_content_encodings():
    assert content_encoding(None) is Encoding.IDENTITY
    assert content_encoding("identity") is Encoding.IDENTITY
    assert content_encoding(" GZIP ") is Encoding.GZIP
    assert content_encoding("x-gzip") is Encoding.GZIP
    with pytest.raises(UnsupportedMediaType, match="'br'"):
        content_encoding("br")


def test_gunzip_reads_every_member_up_to_the_limit():
    data = gzip.compress(b"[1,") + gzip.compress(b"2]")
    assert gunzip(data, limit=5) == b"[1,2]"
    with pytest.raises(PayloadTooLarge, match="decompressed body is over the limit of 4 bytes"):
        gunzip(data, limit=4)


def test_gunzip_stops_a_bomb_without_inflating_it():
    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024))
    with pytest.raises(PayloadTooLarge) as exc:
        gunzip(bomb, limit=1024)
    assert exc.value.details == {"limit_bytes": 1024}


@pytest.mark.parametrize(("data", "says"), [
    (b"plain text", "not valid gzip"),
    (gzip.compress(b"[1, 2, 3, 4]")[:12], "truncated"),
    (gzip.compress(b"[]") + b"trailing", "not valid gzip"),
])
def test_broken_gzip_is_400(data: bytes, says: str):
    with pytest.raises(BadRequest, match=says):
        gunzip(data, limit=1024)


def test_json_object_is_one_event_and_array_is_many():
    assert parse_events(b'{"id": "a"}', BodyFormat.JSON, 10) == [{"id": "a"}]
    assert parse_events(b'[{"id": "a"}, 3]', BodyFormat.JSON, 10) == [{"id": "a"}, 3]
    assert parse_events(b'"text"', BodyFormat.JSON, 10) == ["text"]


def test_json_errors_say_line_and_column():
    with pytest.raises(BadRequest) as exc:
        parse_events(b'[\n  {"id": "a"},\n  {"id" "b"}\n]', BodyFormat.JSON, 10)
    assert "line 3, column 9" in exc.value.message
    assert exc.value.details == {"line": 3, "column": 9}


def test_invalid_utf8_is_400():
    with pytest.raises(BadRequest, match="not valid JSON"):
        parse_events(b'{"id": "\xff"}', BodyFormat.JSON, 10)


def test_ndjson_errors_name_the_line():
    body = b'{"id": "a"}\n\n{"id": "b"}\n{"id": \n'
    with pytest.raises(BadRequest, match="NDJSON line 4") as exc:
        parse_events(body, BodyFormat.NDJSON, 10)
    assert exc.value.details["line"] == 4


def test_ndjson_ignores_blank_lines_and_crlf():
    assert parse_events(b'\r\n{"id": "a"}\r\n  \n[1]\n', BodyFormat.NDJSON, 10) == [{"id": "a"}, [1]]


@pytest.mark.parametrize(("body", "fmt"), [
    (b"[" + b",".join([b"{}"] * 11) + b"]", BodyFormat.JSON),
    (b"\n".join([b"{}"] * 11), BodyFormat.NDJSON),
])
def test_more_events_than_the_limit_is_413(body: bytes, fmt: BodyFormat):
    with pytest.raises(PayloadTooLarge, match="the limit is 10"):
        parse_events(body, fmt, 10)


def test_ndjson_stops_reading_at_the_limit():
    # the line after the limit is broken: the count is what is reported, not the parse error
    body = b"\n".join([b"{}"] * 10) + b"\n{broken"
    with pytest.raises(PayloadTooLarge):
        parse_events(body, BodyFormat.NDJSON, 10)
