"""What every source shares: the request as the vendor delivered it, what a payload maps to, the 422 that
names what a payload lacks, and the account rule.

Pure: no web framework, no clock, no I/O (the HTTP adapter, `http.py`, builds a `Delivery`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.errors import Unprocessable

ACCOUNT_PARAM = "account_id"  # `?account_id=` on a webhook URL: every event of that URL is this account's
Loc = list[str | int]


@dataclass(frozen=True)
class Delivery:
    """One webhook request: the raw body bytes (signatures are over them), lower-case header names, the
    query parameters, and the full URI the vendor called (scheme, host, path, query; HubSpot signs it)."""

    method: str
    uri: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes


@dataclass
class Mapped:
    """A payload as native envelopes (`docs/events.md`, not yet validated), plus one entry per vendor event
    left out because scoring has no use for it (its kind, e.g. `zen:event-type:user.created`)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


class Problems:
    """Every problem of one payload, located like pydantic does it (`loc`, `msg`), raised at once as one 422."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[dict[str, Any]] = []

    def add(self, loc: Sequence[str | int], msg: str) -> None:
        self.errors.append({"loc": list(loc), "msg": msg})

    def raise_if_any(self) -> None:
        if self.errors:
            raise self.error()

    def error(self) -> Unprocessable:
        first = self.errors[0]
        where = ".".join(map(str, first["loc"])) or "body"
        more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
        return Unprocessable(f"{self.source} payload not understood: {where}: {first['msg']}{more}; "
                             "nothing was accepted", errors=self.errors)


def unprocessable(source: str, loc: Sequence[str | int], msg: str) -> Unprocessable:
    """The 422 of a payload with one problem."""
    problems = Problems(source)
    problems.add(loc, msg)
    return problems.error()


def kind_of(value: Any) -> str:
    """A JSON value's kind, for messages."""
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def as_object(value: Any, loc: Loc, problems: Problems) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    problems.add(loc, "required: an object" if value is None else f"must be an object, got {kind_of(value)}")
    return None


def as_id(value: Any, loc: Loc, problems: Problems | None = None) -> str | None:
    """A vendor id: a non-empty string or an integer (vendors send both), as a string."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if problems is not None:
        problems.add(loc, "required: an id (string or integer)" if value is None
                     else f"must be an id (string or integer), got {kind_of(value)}")
    return None


def as_text(value: Any, limit: int) -> str | None:
    """Optional text, cut to `limit` characters (a longer subject must not make the whole event invalid)."""
    if not isinstance(value, str) or not value.strip():
        return None
    return value[:limit]


def rfc3339(value: Any, loc: Loc, problems: Problems) -> str | None:
    """An ISO 8601 / RFC 3339 timestamp with an offset, normalized (any number of fractional digits)."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed.astimezone(UTC).isoformat()
    problems.add(loc, "required: a timestamp" if value is None
                 else "must be an RFC 3339 timestamp with offset, e.g. 2026-01-31T12:00:00Z")
    return None


def from_epoch(value: Any, loc: Loc, problems: Problems, *, millis: bool = False) -> str | None:
    """A Unix time (seconds, or milliseconds) as an RFC 3339 timestamp."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        try:
            return datetime.fromtimestamp(value / 1000 if millis else value, UTC).isoformat()
        except (OverflowError, OSError, ValueError):
            pass
    unit = "milliseconds" if millis else "seconds"
    problems.add(loc, f"required: a Unix time in {unit}" if value is None
                 else f"must be a Unix time in {unit}, got {kind_of(value)}")
    return None


def resolve_account(query: Mapping[str, str], value: Any, accounts: Mapping[str, str], *,
                    passthrough: bool = True) -> str | None:
    """The account of a vendor event: `?account_id=` when the webhook URL carries one; else the vendor's
    value looked up in the configured `accounts` map; else, with `passthrough`, that value itself."""
    fixed = query.get(ACCOUNT_PARAM)
    if fixed:
        return fixed
    key = as_id(value, [])
    if key is None:
        return None
    mapped = accounts.get(key)
    if mapped is not None:
        return mapped
    return key if passthrough else None
