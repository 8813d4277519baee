"""Wire format of records on the input topics: the event JSON as accepted, plus `received_at`."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson

from shared.events import NUL, Event, EventError, json_may_hold_nul, validate_event


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def loads(raw: bytes | str) -> Any:
    return orjson.loads(raw)


def encode_input(raw_event: dict[str, Any], received_at: datetime) -> bytes:
    """The record value for an accepted event: what the sender sent, plus `received_at`."""
    return orjson.dumps({**raw_event, "received_at": received_at.isoformat()})


def encode_inputs(raw_events: Iterable[dict[str, Any]], received_at: datetime) -> list[bytes]:
    """`encode_input` for every event of a request received at one instant (the same bytes, faster)."""
    stamp = received_at.isoformat()
    return [orjson.dumps({**raw, "received_at": stamp}) for raw in raw_events]


class BadRecord(Exception):
    """A record on an input topic that is not a valid event; `reason` says why (for the dead letter)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_input(value: bytes | None) -> Event:
    """Parse and validate an input-topic record. Raises BadRecord naming the problem."""
    if value is None:
        raise BadRecord("record has no value")
    try:
        raw = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise BadRecord(f"not JSON: {exc}") from exc
    # Records already on the log are history: no future-skew check against the consumer's clock. U+0000
    # can only be in the JSON escaped: strings are searched for it only when the escape is in the bytes.
    result = validate_event(raw, 0, allow_received_at=True, check_future=False,
                            check_nul=json_may_hold_nul(value))
    if isinstance(result, Event):
        return result
    raise BadRecord("; ".join(_describe(e) for e in result))


def _describe(err: EventError) -> str:
    where = ".".join(str(p) for p in err.loc) or "event"
    # (an unknown key's name may itself hold U+0000: the reason never carries one)
    return f"{where}: {err.msg}".replace(NUL, "\\u0000")


def dead_letter(source_topic: str, partition: int, offset: int, reason: str, value: bytes | None,
                service: str) -> bytes:
    """The dead-letter record: where it came from, why, and the original bytes (as text when possible)."""
    original: Any
    try:
        original = value.decode() if value is not None else None
    except UnicodeDecodeError:
        original = value.hex() if value is not None else None
    return orjson.dumps({"service": service, "source_topic": source_topic, "partition": partition,
                         "offset": offset, "reason": reason, "value": original})
