"""Reading a `POST /v1/events` body: media type, bounded gzip, JSON or NDJSON with located errors.

Pure functions over header values and bytes (no web framework here), so every rule about the body
(docs/events.md, "Sending events") is unit-tested without a server. Errors are the project's HTTP error
family: 400 says where the JSON broke, 413 names the limit, 415 names the media type or encoding.
"""

from __future__ import annotations

import zlib
from enum import StrEnum
from typing import Any

import orjson

from shared.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

JSON = "application/json"
NDJSON = "application/x-ndjson"
# Accepted spellings of NDJSON besides the documented one.
_NDJSON_ALIASES = frozenset({NDJSON, "application/ndjson", "application/jsonl", "application/x-jsonlines"})


class BodyFormat(StrEnum):
    JSON = "json"
    NDJSON = "ndjson"


class Encoding(StrEnum):
    IDENTITY = "identity"
    GZIP = "gzip"


def body_format(content_type: str | None) -> BodyFormat:
    """The body format from `Content-Type`; 415 for anything but JSON or NDJSON in UTF-8."""
    if content_type is None or not content_type.strip():
        raise UnsupportedMediaType(f"missing Content-Type: send {JSON} or {NDJSON}")
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    if media == JSON or (media.startswith("application/") and media.endswith("+json")):
        fmt = BodyFormat.JSON
    elif media in _NDJSON_ALIASES:
        fmt = BodyFormat.NDJSON
    else:
        raise UnsupportedMediaType(f"unsupported content type '{_printable(media)}': send {JSON} or {NDJSON}")
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise UnsupportedMediaType(f"unsupported charset '{_printable(value.strip())}': bodies are UTF-8")
    return fmt


def content_encoding(header: str | None) -> Encoding:
    """`Content-Encoding`: none, identity or gzip; 415 for anything else."""
    if header is None:
        return Encoding.IDENTITY
    value = header.strip().lower()
    if value in ("", "identity"):
        return Encoding.IDENTITY
    if value in ("gzip", "x-gzip"):
        return Encoding.GZIP
    raise UnsupportedMediaType(f"unsupported Content-Encoding '{_printable(header.strip())}': "
                               "use gzip or none")


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress a gzip body (one or more members) without ever holding more than `limit` + 1 bytes.

    The body limit applies to the decompressed size too, so a small gzip bomb is a 413, not an
    out-of-memory.
    """
    out = bytearray()
    rest = data
    while rest:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise BadRequest(f"body is not valid gzip: {exc}") from exc
        if len(out) > limit:
            raise PayloadTooLarge(f"decompressed body is over the limit of {limit} bytes", limit_bytes=limit)
        if not inflater.eof:
            raise BadRequest("gzip body is truncated")
        rest = inflater.unused_data
    return bytes(out)


def parse_events(body: bytes, fmt: BodyFormat, max_events: int) -> list[Any]:
    """The raw (decoded, not yet validated) events of a body.

    JSON: one event (an object) or an array of events. NDJSON: one event per line, blank lines
    ignored. 400 when the bytes are not JSON (with line and column, or the NDJSON line number) or
    hold no event; 413 over `max_events`.
    """
    if fmt is BodyFormat.NDJSON:
        return _parse_ndjson(body, max_events)
    value = json_document(body, "request body is empty: send one event or a JSON array of events")
    if not isinstance(value, list):
        return [value]
    if not value:
        raise BadRequest("the JSON array is empty: send at least one event")
    if len(value) > max_events:
        raise PayloadTooLarge(f"{len(value)} events in one request; the limit is {max_events}",
                              limit_events=max_events)
    return value


def json_document(body: bytes, empty_message: str) -> Any:
    """One JSON document; 400 with `empty_message` for an empty body, or where the JSON broke."""
    if not body.strip():
        raise BadRequest(empty_message)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
                         line=exc.lineno, column=exc.colno) from exc


def _parse_ndjson(body: bytes, max_events: int) -> list[Any]:
    events: list[Any] = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        if len(events) == max_events:
            raise PayloadTooLarge(f"more than {max_events} events in one request; the limit is {max_events}",
                                  limit_events=max_events)
        try:
            events.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"NDJSON line {number} is not valid JSON: {exc.msg} at column {exc.colno}",
                             line=number, column=exc.colno) from exc
    if not events:
        raise BadRequest("request body holds no events: send one JSON event per line")
    return events


def _printable(text: str, limit: int = 80) -> str:
    """Header text fit to echo in an error message: printable ASCII, bounded."""
    clean = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    return clean if len(clean) <= limit else clean[:limit] + "..."
