"""CloudEvents 1.0 over HTTP on `POST /v1/events`: the three modes, mapped onto the project's envelope.

Pure functions over header values and bytes, like `services.ingest.body`. A request is CloudEvents when
its `Content-Type` is `application/cloudevents+json` (structured: one event), `application/cloudevents-
batch+json` (batch: a JSON array of structured events) or when it carries any `ce-*` header (binary: the
attributes in `ce-*` headers, the data in the body, `Content-Type: application/json`). Everything else is
the plain envelope (`services.ingest.body`), untouched.

Mapping (docs/events.md, "CloudEvents"): `id` <- `id`; `type` <- `type` minus the configured prefix
(`CHURNSIGNAL_CLOUDEVENTS_TYPE_PREFIX`); `occurred_at` <- `time` (required here); `account_id` <- the
extension attribute `accountid`, else `subject`; `data` <- `data`. `specversion` must be "1.0"; `source` is
required and not kept. Other attributes (extensions included) are accepted and dropped. The mapped events
then go through the same validation and publishing as native ones, so a CloudEvent publishes exactly the
record its native twin would. Errors are located by the CloudEvents attribute: `{"index", "loc", "msg"}`
with loc `["time"]` (structured, batch) or `["header", "ce-time"]` (binary); data errors keep their path
under `data` (binary: `["body", ...]`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import unquote

import orjson

from shared.errors import BadRequest, PayloadTooLarge, Unprocessable, UnsupportedMediaType

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
SPECVERSION = "1.0"
HEADER_PREFIX = "ce-"

# envelope field -> the CloudEvents attribute it comes from (account_id: see `CloudEventBatch.account_from`)
_ATTRIBUTE_OF = {"id": "id", "type": "type", "occurred_at": "time", "data": "data"}


class Mode(StrEnum):
    STRUCTURED = "structured"
    BATCH = "batch"
    BINARY = "binary"


def media_type(content_type: str | None) -> str:
    return (content_type or "").partition(";")[0].strip().lower()


def mode_of(content_type: str | None, ce_headers: Mapping[str, str] | None) -> Mode | None:
    """The CloudEvents mode of a request, or None for a plain one. The structured content types win over
    `ce-*` headers (the HTTP binding says so); any `ce-*` header otherwise makes it binary."""
    media = media_type(content_type)
    if media == STRUCTURED:
        return Mode.STRUCTURED
    if media == BATCH:
        return Mode.BATCH
    if ce_headers:
        return Mode.BINARY
    return None


def _check_charset(content_type: str | None) -> None:
    for param in (content_type or "").partition(";")[2].split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise UnsupportedMediaType(f"unsupported charset '{_printable(value.strip())}': bodies are UTF-8")


@dataclass
class CloudEventBatch:
    """The native envelopes of a CloudEvents request, and how to name their errors in CloudEvents terms."""

    mode: Mode
    raws: list[Any]
    # per event: the attribute `account_id` came from ("accountid" or "subject")
    account_from: list[str] = field(default_factory=list)

    def loc(self, index: int, native: Sequence[str | int]) -> list[str | int]:
        """The CloudEvents location of an error the envelope's validation located at `native`."""
        if not native:
            return ["body"] if self.mode is Mode.BINARY else []
        head, rest = native[0], list(native[1:])
        if head == "account_id":
            attribute = self.account_from[index] if index < len(self.account_from) else "accountid"
        else:
            attribute = _ATTRIBUTE_OF.get(str(head), str(head))
        if self.mode is not Mode.BINARY:
            return [attribute, *rest]
        if attribute == "data":
            return ["body", *rest]
        return ["header", HEADER_PREFIX + attribute, *rest]

    def translate(self, exc: Unprocessable) -> Unprocessable:
        """The envelope's 422, its locations and messages named by CloudEvents attribute."""
        errors = []
        for err in exc.details.get("errors", []):
            native = err["loc"]
            loc = self.loc(err["index"], native)
            msg = err["msg"]
            if native and native[0] == "occurred_at":
                msg = msg.replace("occurred_at", "time")
            errors.append({**err, "loc": loc, "msg": msg})
        details = {**exc.details, "errors": errors}
        return Unprocessable(exc.message, **details)


def parse(mode: Mode, body: bytes, *, content_type: str | None, ce_headers: Mapping[str, str] | None,
          max_events: int, type_prefix: str = "") -> CloudEventBatch:
    """The request's events as native envelopes (not yet validated: `validate_events` does that).

    400 for a body that is not the JSON its mode needs, 413 over `max_events`, 415 for a binary body that is
    not JSON, 422 (located by attribute, every problem of every event) for missing or invalid attributes."""
    _check_charset(content_type)
    if mode is Mode.BINARY:
        return _parse_binary(body, content_type, ce_headers or {}, type_prefix)
    value = _loads(body, mode)
    if mode is Mode.STRUCTURED:
        if not isinstance(value, dict):
            raise BadRequest(f"a structured CloudEvent ({STRUCTURED}) is one JSON object, got "
                             f"{_json_kind(value)}; send several as {BATCH}")
        events = [value]
    else:
        if not isinstance(value, list):
            raise BadRequest(f"a CloudEvents batch ({BATCH}) is a JSON array, got {_json_kind(value)}")
        if not value:
            raise BadRequest("the CloudEvents batch is empty: send at least one event")
        if len(value) > max_events:
            raise PayloadTooLarge(f"{len(value)} events in one request; the limit is {max_events}",
                                  limit_events=max_events)
        events = value
    out = CloudEventBatch(mode, [])
    errors: list[dict[str, Any]] = []
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            errors.append(_error(index, [], f"a CloudEvent must be a JSON object, got {_json_kind(event)}"))
            out.raws.append(None)
            out.account_from.append("accountid")
            continue
        raw, account_from, problems = map_event(event, type_prefix)
        out.raws.append(raw)
        out.account_from.append(account_from)
        errors += [_error(index, [attribute], msg) for attribute, msg in problems]
    _raise_if(errors, len(events))
    return out


def map_event(attributes: Mapping[str, Any], type_prefix: str = "", *,
              data_in_attributes: bool = True) -> tuple[dict[str, Any], str, list[tuple[str, str]]]:
    """One CloudEvent's attributes (structured form) as a native envelope.

    Returns (envelope, the attribute `account_id` came from, problems as (attribute, message)). Problems are
    the CloudEvents rules (specversion, required attributes, the type prefix, data encoding); the envelope's
    own rules (type known, time RFC 3339, data valid for its type) are left to its validation."""
    problems: list[tuple[str, str]] = []
    raw: dict[str, Any] = {}
    specversion = attributes.get("specversion")
    if specversion is None:
        problems.append(("specversion", f"required: the CloudEvents spec version, \"{SPECVERSION}\""))
    elif specversion != SPECVERSION:
        problems.append(("specversion", f"unsupported CloudEvents spec version {_shown(specversion)}: "
                                        f"only \"{SPECVERSION}\" is accepted"))
    for name in ("id", "source", "type"):
        value = attributes.get(name)
        if value is None:
            problems.append((name, "required by CloudEvents"))
        elif not isinstance(value, str) or not value:
            problems.append((name, "must be a non-empty string"))
    if "id" in attributes:
        raw["id"] = attributes["id"]
    kind = attributes.get("type")
    if isinstance(kind, str) and kind:
        if type_prefix:
            if kind.startswith(type_prefix) and len(kind) > len(type_prefix):
                raw["type"] = kind[len(type_prefix):]
            else:
                problems.append(("type", f"must start with '{type_prefix}' followed by an event type, "
                                         f"e.g. '{type_prefix}usage'; got {_shown(kind)}"))
        else:
            raw["type"] = kind
    time = attributes.get("time")
    if time is None:
        problems.append(("time", "required: when the event occurred (RFC 3339 with offset, e.g. "
                                 "2026-01-31T12:00:00Z); it becomes occurred_at"))
    else:
        raw["occurred_at"] = time
    account_from = "accountid"
    if "accountid" in attributes:
        raw["account_id"] = attributes["accountid"]
    elif "subject" in attributes:
        account_from = "subject"
        raw["account_id"] = attributes["subject"]
    else:
        problems.append(("accountid", "required: the account, as the extension attribute 'accountid' or "
                                      "as 'subject'"))
    if data_in_attributes:
        datacontenttype = attributes.get("datacontenttype")
        if datacontenttype is not None and not _is_json(datacontenttype):
            problems.append(("datacontenttype", f"unsupported {_shown(datacontenttype)}: data must be JSON "
                                                "(application/json)"))
        if "data_base64" in attributes:
            problems.append(("data_base64", "binary data is not accepted: send 'data' as a JSON object"))
        if "data" in attributes:
            raw["data"] = attributes["data"]
    return raw, account_from, problems


def ce_attributes(headers: Mapping[str, str]) -> dict[str, str]:
    """The attributes of `ce-*` headers (names without the prefix, values percent-decoded)."""
    return {name[len(HEADER_PREFIX):]: unquote(value, errors="replace") for name, value in headers.items()}


def _parse_binary(body: bytes, content_type: str | None, ce_headers: Mapping[str, str],
                  type_prefix: str) -> CloudEventBatch:
    media = media_type(content_type)
    if not body.strip():
        data: Any = None
    else:
        if not media:
            raise UnsupportedMediaType("missing Content-Type: a binary CloudEvent's data must be application/json")
        if not _is_json(media):
            raise UnsupportedMediaType(f"unsupported content type '{_printable(media)}' for a binary CloudEvent: "
                                       "its data must be application/json")
        data = _loads(body, Mode.BINARY)
    attributes = ce_attributes(ce_headers)
    raw, account_from, problems = map_event(attributes, type_prefix, data_in_attributes=False)
    if data is not None:
        raw["data"] = data
    out = CloudEventBatch(Mode.BINARY, [raw], [account_from])
    _raise_if([_error(0, out.loc(0, [_native(attribute)]), msg) for attribute, msg in problems], 1)
    return out


def _native(attribute: str) -> str:
    """The envelope field named by a CloudEvents attribute, when there is one (for `CloudEventBatch.loc`)."""
    return {"time": "occurred_at", "accountid": "account_id", "subject": "account_id"}.get(attribute, attribute)


def _error(index: int, loc: list[str | int], msg: str) -> dict[str, Any]:
    return {"index": index, "loc": loc, "msg": msg}


def _raise_if(errors: list[dict[str, Any]], total: int) -> None:
    if not errors:
        return
    invalid = len({e["index"] for e in errors})
    noun = "event is" if invalid == 1 else "events are"
    raise Unprocessable(f"{invalid} of {total} {noun} invalid; nothing was accepted", errors=errors)


def _loads(body: bytes, mode: Mode) -> Any:
    if not body.strip():
        raise BadRequest("request body is empty: send a CloudEvent")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
                         line=exc.lineno, column=exc.colno) from exc


def _is_json(media: Any) -> bool:
    if not isinstance(media, str):
        return False
    media = media_type(media)
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _json_kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode(errors="replace") \
        if isinstance(value, int | float | bool | type(None)) else type(value).__name__
    return f"'{_printable(text)}'" if isinstance(value, str) else _printable(text)


def _printable(text: str, limit: int = 80) -> str:
    clean = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    return clean if len(clean) <= limit else clean[:limit] + "..."
