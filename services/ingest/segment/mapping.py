"""Segment messages as churnsignal events: pure functions, no I/O (docs/integrations.md, "Segment").

`map_messages` turns the messages of one request into native envelopes (validated afterwards like any other
event), the user -> account memberships its `group` calls declare, and a count of the messages that map to
nothing (no account known, a type scoring has no use for): those are counted, not errors. What cannot be a
Segment message at all (no `type`, a `track` without `event`, a `group` without `groupId`, a timestamp that
is no time) is a 422 naming every such problem by its place in the request.

- `track` -> `usage`: `feature` = `event`, `user_id` = `userId`, else `anonymousId`.
- `page`, `screen` -> `usage` (unless turned off): `feature` = the first of `feature_from` that is set, else
  the type.
- `group` -> `account`, the account being `groupId`, its data from traits (`fields`); the user joins it.
- `identify` -> `contact`, `contact_id` and `user_id` being the user, the rest from traits (`fields`).
- any other type (`alias`, the Webhooks destination's `delete`, ...) -> unmapped.

Every event's `id` is the prefix plus `messageId` (a digest of the message when it has none, or when the
result would be over 128 characters), so a message delivered twice counts once in scoring. `occurred_at` is
`timestamp`, else `originalTimestamp` corrected by the sender's clock offset (`sentAt` against the time the
request arrived, as Segment does), else the time the request arrived. The account of every type but `group`
is the first of `account_from` that is set, else the one the user last joined (in this request, then in
`accounts`); without either the message is unmapped (`no_account`).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson

from services.ingest.segment.config import (
    FieldPath,
    SegmentMapping,
    TraitRule,
    UsageRule,
    normalize,
    normalize_value,
    parse_path,
)
from shared.errors import Unprocessable

TYPES = ("track", "identify", "group", "page", "screen", "alias")
MAX_ID = 128
# Fields Segment or its transports add per delivery, left out of a message's digest (ids of messages
# without a `messageId`), so that a resend gets the same id.
_DELIVERY_FIELDS = frozenset({"sentAt", "receivedAt", "writeKey", "_metadata"})
_NUMBER_FIELDS = frozenset({("arr",), ("mrr",)})
_INTEGER_FIELDS = frozenset({("seats",)})
_DATE_FIELDS = frozenset({("renewal_date",)})
# Segment fills a user's `name` from these when it is not given; so does the contact mapping.
_FIRST_NAME = parse_path("firstName")
_LAST_NAME = parse_path("lastName")

Loc = tuple[str | int, ...]


class Reason:
    """Why a message is unmapped (the `reason` label of the counter)."""

    NO_ACCOUNT = "no_account"
    UNSUPPORTED_TYPE = "unsupported_type"
    DISABLED = "disabled"


@dataclass(slots=True)
class Origin:
    """Where an event came from: its message's place in the request, and the message field each envelope
    field was read from, so that a problem the envelope's validation finds is named in Segment's terms."""

    loc: Loc
    fields: Mapping[Loc, Loc]

    def locate(self, native: Sequence[str | int]) -> list[str | int]:
        for n in range(len(native), 0, -1):
            found = self.fields.get(tuple(native[:n]))
            if found is not None:
                return [*self.loc, *found, *native[n:]]
        return list(self.loc)


@dataclass(slots=True)
class Mapped:
    """One request's messages, mapped."""

    events: list[dict[str, Any]] = field(default_factory=list)
    # per event, where it came from; None unless asked for (`locate`): what a 422 needs, kept only then
    origins: list[Origin] | None = None
    # user -> account, from the request's `group` calls (in order; the last one of a user wins)
    memberships: dict[str, str] = field(default_factory=dict)
    # (type, reason) -> messages
    unmapped: Counter[tuple[str, str]] = field(default_factory=Counter)

    def translate(self, exc: Unprocessable) -> Unprocessable:
        """The envelope's 422 (`{"index", "loc", "msg"}` by event), located in the request as sent."""
        errors = []
        invalid: set[Loc] = set()
        for err in exc.details.get("errors", []):
            index = err.get("index", 0)
            native = err.get("loc", [])
            origins = self.origins or []
            origin = origins[index] if 0 <= index < len(origins) else Origin((), {})
            msg = err.get("msg", "")
            if native and native[0] == "occurred_at":
                msg = msg.replace("occurred_at", "timestamp")
            errors.append({"loc": origin.locate(native), "msg": msg})
            invalid.add(origin.loc)
        noun = "message is" if len(invalid) == 1 else "messages are"
        return Unprocessable(f"{len(invalid)} Segment {noun} invalid; nothing was accepted", errors=errors)


class _Problems:
    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []
        self.messages: set[Loc] = set()

    def add(self, at: Loc, loc: Sequence[str | int], msg: str) -> None:
        self.errors.append({"loc": [*at, *loc], "msg": msg})
        self.messages.add(at)

    def raise_if_any(self) -> None:
        if self.errors:
            n = len(self.messages)
            noun = "message is" if n == 1 else "messages are"
            raise Unprocessable(f"{n} Segment {noun} invalid; nothing was accepted", errors=self.errors)


def map_messages(messages: Sequence[Any], mapping: SegmentMapping, accounts: Callable[[str], str | None], *,
                 now: datetime, batch: bool, context: Mapping[str, Any] | None = None,
                 sent_at: Any = None, kind: str | None = None, locate: bool = True) -> Mapped:
    """The events of one request's messages.

    `batch`: the messages came as `/v1/batch`'s `batch` array (problems are located under `batch`, i);
    `context`, `sent_at`: the batch's own, merged under each message's; `kind`: the type the path gives (the
    single-call paths, `/v1/track` ...), which wins over the message's. `accounts` tells the account a user
    joined before this request, if any. `locate`: keep each event's origin, to name the problems its
    validation finds (`Mapped.translate`). Raises Unprocessable naming every message that is not a Segment
    message (nothing of such a request is accepted)."""
    out = Mapped(origins=[] if locate else None)
    problems = _Problems()
    plain_tracks = not locate and mapping.track.enabled
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            problems.add(("batch", index) if batch else (), [],
                         f"must be an object (a Segment message), got {_kind_of(message)}")
            continue
        if context:
            own = message.get("context")
            message = {**message, "context": {**context, **own} if isinstance(own, dict) else dict(context)}
        call = kind or message.get("type")
        if plain_tracks and call == "track":
            event = _plain_track(message, mapping, accounts, out.memberships)
            if event is not None:
                out.events.append(event)
                continue
        _map_one(message, call, ("batch", index) if batch else (), mapping, accounts, now, out, problems,
                 message.get("sentAt", sent_at))
    problems.raise_if_any()
    return out


def _plain_track(message: dict[str, Any], mapping: SegmentMapping, accounts: Callable[[str], str | None],
                 joined: Mapping[str, str]) -> dict[str, Any] | None:
    """The usage event of an ordinary `track` call (a string messageId, an RFC 3339 timestamp, a string user
    id, an account), or None for anything else, which `_map_one` then maps. The bulk of Segment's traffic, so
    it skips the general path's bookkeeping; the two give the same events (tests/domain/ingest/
    test_segment_mapping.py checks it)."""
    feature = message.get("event")
    timestamp = message.get("timestamp")
    message_id = message.get("messageId")
    user = message.get("userId") or message.get("anonymousId")
    if (feature.__class__ is not str or not feature or timestamp.__class__ is not str
            or message_id.__class__ is not str or not message_id or user.__class__ is not str or not user
            or len(mapping.id_prefix) + len(message_id) > MAX_ID or _RFC3339.fullmatch(timestamp) is None):
        return None
    account: Any = None
    for path in mapping.account_from:
        account = message
        for part in path:  # names as configured first; `_find` below for other spellings
            account = account.get(part.name) if account.__class__ is dict else None
            if account is None:
                break
        if account is None:
            account = _find(message, path)[0]
        if account is not None:
            account = _id_text(account)
            if account is not None:
                break
    else:
        account = joined.get(user)
        if account is None:
            account = accounts(user)
            if account is None:
                return None
    return {"id": mapping.id_prefix + message_id, "type": "usage", "account_id": account,
            "occurred_at": timestamp, "data": {"feature": feature, "user_id": user}}


def _map_one(message: dict[str, Any], kind: Any, at: Loc, mapping: SegmentMapping,
             accounts: Callable[[str], str | None], now: datetime, out: Mapped, problems: _Problems,
             sent_at: Any) -> None:
    if not isinstance(kind, str) or not kind:
        problems.add(at, ["type"], "required: the call's type (track, identify, group, page, screen or alias)")
        return
    label = kind if kind in TYPES else "other"
    if kind == "track":
        rule: UsageRule | TraitRule = mapping.track
    elif kind == "page":
        rule = mapping.page
    elif kind == "screen":
        rule = mapping.screen
    elif kind == "group":
        rule = mapping.group
    elif kind == "identify":
        rule = mapping.identify
    else:
        out.unmapped[(label, Reason.UNSUPPORTED_TYPE)] += 1
        return
    before = len(problems.errors)
    occurred_at, time_from = _occurred_at(message, now, at, problems, sent_at)
    user = _id_text(message.get("userId"))
    user_from: Loc = ("userId",)
    if user is None:
        user = _id_text(message.get("anonymousId"))
        user_from = ("anonymousId",)
    fields: dict[Loc, Loc] = {("id",): ("messageId",), ("occurred_at",): time_from}
    if kind == "group":
        group_id = _id_text(message.get("groupId"))
        if group_id is None:
            problems.add(at, ["groupId"], "required: the id of the group (the account) the user belongs to")
        if len(problems.errors) > before or not rule.enabled:
            if len(problems.errors) == before:
                out.unmapped[(label, Reason.DISABLED)] += 1
            return
        assert group_id is not None and isinstance(rule, TraitRule)
        if user is not None:
            out.memberships[user] = group_id
        fields[("account_id",)] = ("groupId",)
        data = _trait_data(message, rule, fields, at, problems, contact=False)
        if len(problems.errors) > before:
            return
        _emit(out, at, fields, mapping, message, "account", group_id, occurred_at, data)
        return
    if kind == "track":
        feature = message.get("event")
        if not isinstance(feature, str) or not feature:
            problems.add(at, ["event"], "required: the name of the action (it becomes the usage event's feature)")
    elif kind == "identify" and user is None:
        problems.add(at, ["userId"], "required: userId or anonymousId (the contact)")
    if len(problems.errors) > before:
        return
    if not rule.enabled:
        out.unmapped[(label, Reason.DISABLED)] += 1
        return
    account, account_from = _account(message, mapping, user, out.memberships, accounts)
    if account is None:
        out.unmapped[(label, Reason.NO_ACCOUNT)] += 1
        return
    if account_from is not None:
        fields[("account_id",)] = account_from
    if isinstance(rule, TraitRule):  # identify
        assert user is not None
        fields[("data", "contact_id")] = fields[("data", "user_id")] = user_from
        data = {"contact_id": user, "user_id": user, **_trait_data(message, rule, fields, at, problems,
                                                                   contact=True)}
        if len(problems.errors) > before:
            return
        _emit(out, at, fields, mapping, message, "contact", account, occurred_at, data)
        return
    if kind == "track":
        fields[("data", "feature")] = ("event",)
    else:
        feature, path = _first(message, rule.feature_from)
        if isinstance(feature, str) and feature:
            fields[("data", "feature")] = path
        else:
            feature = kind
    data = {"feature": feature}
    if user is not None:
        data["user_id"] = user
        fields[("data", "user_id")] = user_from
    _emit(out, at, fields, mapping, message, "usage", account, occurred_at, data)


def _emit(out: Mapped, at: Loc, fields: dict[Loc, Loc], mapping: SegmentMapping, message: dict[str, Any],
          kind: str, account: str, occurred_at: str, data: dict[str, Any]) -> None:
    out.events.append({"id": event_id(message, mapping.id_prefix), "type": kind, "account_id": account,
                       "occurred_at": occurred_at, "data": data})
    if out.origins is not None:
        out.origins.append(Origin(at, fields))


def event_id(message: Mapping[str, Any], prefix: str) -> str:
    """The prefix and the message's `messageId`; a digest when it has none, or when that is too long."""
    message_id = _id_text(message.get("messageId"))
    if message_id is not None and len(prefix) + len(message_id) <= MAX_ID:
        return prefix + message_id
    if message_id is None:
        content = {k: v for k, v in message.items() if k not in _DELIVERY_FIELDS}
        digest = hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()
    else:
        digest = hashlib.sha256(message_id.encode()).hexdigest()
    return f"{prefix}sha256-{digest[:40]}"


def _account(message: dict[str, Any], mapping: SegmentMapping, user: str | None, joined: Mapping[str, str],
             accounts: Callable[[str], str | None]) -> tuple[str | None, Loc | None]:
    """The message's account and the field it came from (None when the user's membership gave it)."""
    for path in mapping.account_from:
        value, found = _find(message, path)
        account = _id_text(value)
        if account is not None:
            return account, found
    if user is None:
        return None, None
    account = joined.get(user)
    return (account if account is not None else accounts(user)), None


def _trait_data(message: dict[str, Any], rule: TraitRule, fields: dict[Loc, Loc], at: Loc,
                problems: _Problems, *, contact: bool) -> dict[str, Any]:
    traits = message.get("traits")
    if traits is None:
        traits = {}
    elif not isinstance(traits, dict):
        problems.add(at, ["traits"], f"must be an object, got {_kind_of(traits)}")
        return {}
    data: dict[str, Any] = {}
    mrr: tuple[float, Loc] | None = None
    for target, paths in rule.fields:
        value, found = _first(traits, paths)
        if value is None:
            continue
        where = ("traits", *found)
        if target in _NUMBER_FIELDS or target in _INTEGER_FIELDS:
            number = _number(value, integer=target in _INTEGER_FIELDS)
            if number is None:
                whole = "a whole number" if target in _INTEGER_FIELDS else "a number"
                problems.add(at, where, f"must be {whole} (or a string of one) to become the account's "
                                        f"{target[0]}, got {_shown(value)}")
                continue
            if target == ("mrr",):
                mrr = (number, where)
                continue
            value = number
        elif target in _DATE_FIELDS:
            value = _date(value)
        elif contact and target == ("role",):
            value = rule.roles.get(normalize_value(value)) if isinstance(value, str) else None
        elif contact and target == ("status",):
            value = rule.statuses.get(normalize_value(value)) if isinstance(value, str) else None
        if value is None:
            continue
        _put(data, target, value)
        fields[("data", *target)] = where
    if mrr is not None and "arr" not in data:
        data["arr"] = round(mrr[0] * 12, 2)
        fields[("data", "arr")] = mrr[1]
    if contact and "name" not in data:
        first, first_at = _find(traits, _FIRST_NAME)
        last, last_at = _find(traits, _LAST_NAME)
        parts = [p for p in (first, last) if isinstance(p, str) and p.strip()]
        if parts:
            data["name"] = " ".join(p.strip() for p in parts)
            fields[("data", "name")] = ("traits", *(first_at if first_at else last_at))
    return data


def _put(data: dict[str, Any], target: tuple[str, ...], value: Any) -> None:
    node = data
    for name in target[:-1]:
        child = node.get(name)
        if not isinstance(child, dict):
            child = node[name] = {}
        node = child
    node[target[-1]] = value


# -- reading a message ----------------------------------------------------------------------------------------
def _find(obj: Any, path: FieldPath) -> tuple[Any, Loc]:
    """The value at `path` (names matched without case or separators) and the keys it was found under."""
    keys: list[str] = []
    for part in path:
        if not isinstance(obj, dict):
            return None, ()
        value = obj.get(part.name)
        key = part.name
        if value is None:
            for k, v in obj.items():
                if v is not None and isinstance(k, str) and normalize(k) == part.key:
                    key, value = k, v
                    break
        if value is None:
            return None, ()
        keys.append(key)
        obj = value
    return obj, tuple(keys)


def _first(obj: Any, paths: Sequence[FieldPath]) -> tuple[Any, Loc]:
    """The first value set (not null, not an empty string) among `paths`."""
    for path in paths:
        value, found = _find(obj, path)
        if value is not None and value != "":
            return value, found
    return None, ()


def _id_text(value: Any) -> str | None:
    """An id as text: a non-empty string, or a whole number (Segment's libraries take both)."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _number(value: Any, *, integer: bool) -> float | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip().replace(",", ""))
        except ValueError:
            return None
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        if integer:
            return int(value) if value.is_integer() else None
        return value
    if isinstance(value, int):
        return value
    return None


_DATE = re.compile(r"\s*(\d{4})-(\d{1,2})-(\d{1,2})(?:[Tt ].*)?")


def _date(value: Any) -> Any:
    """A renewal date as `YYYY-MM-DD` from a date or a timestamp string; anything else as given (its
    validation then names it)."""
    if isinstance(value, str):
        match = _DATE.fullmatch(value)
        if match:
            year, month, day = (int(g) for g in match.groups())
            return f"{year:04d}-{month:02d}-{day:02d}"
    return value


# RFC 3339 as the envelope takes it (shared.events), passed through as sent; other ISO 8601 spellings Segment
# accepts (a space for the T, no offset (UTC), one-digit months, days and hours) are rewritten to it.
_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
                      r"([Zz]|[+-][0-9]{2}:[0-9]{2})")
_LOOSE = re.compile(r"\s*(\d{4})-(\d{1,2})-(\d{1,2})(?:[Tt ](\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?"
                    r"\s*([Zz]|UTC|[+-]\d{2}(?::?\d{2})?)?\s*")


def parse_time(value: Any) -> datetime | None:
    """A Segment timestamp as an aware datetime, or None when it is no time."""
    if not isinstance(value, str):
        return None
    match = _LOOSE.fullmatch(value)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        tz: timezone = UTC
        if offset and offset not in ("Z", "z", "UTC"):
            sign = -1 if offset[0] == "-" else 1
            digits = offset[1:].replace(":", "")
            hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
            tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
        micro = int((fraction or "0")[:6].ljust(6, "0"))
        return datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
                        micro, tzinfo=tz)
    except ValueError:
        return None


def _occurred_at(message: dict[str, Any], now: datetime, at: Loc, problems: _Problems,
                 sent_at: Any) -> tuple[str, Loc]:
    """`timestamp`; else `originalTimestamp` corrected by the clock offset `sent_at` tells (the message's
    `sentAt`, else its batch's); else `now`."""
    value = message.get("timestamp")
    if value is not None:
        if isinstance(value, str) and _RFC3339.fullmatch(value):
            return value, ("timestamp",)
        parsed = parse_time(value)
        if parsed is None:
            problems.add(at, ["timestamp"], f"must be an ISO 8601 time, e.g. 2026-01-31T12:00:00.000Z; got "
                                            f"{_shown(value)}")
            return "", ("timestamp",)
        return parsed.isoformat(), ("timestamp",)
    original = message.get("originalTimestamp")
    if original is not None:
        parsed = parse_time(original)
        if parsed is None:
            problems.add(at, ["originalTimestamp"], f"must be an ISO 8601 time, e.g. 2026-01-31T12:00:00.000Z; "
                                                    f"got {_shown(original)}")
            return "", ("originalTimestamp",)
        sent = parse_time(sent_at)
        if sent is not None:  # the sender's clock offset, as Segment corrects it
            parsed = now - (sent - parsed)
        return parsed.isoformat(), ("originalTimestamp",)
    return now.isoformat(), ("timestamp",)


def _kind_of(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def _shown(value: Any) -> str:
    if isinstance(value, str):
        clean = "".join(ch if " " <= ch <= "~" else "?" for ch in value)
        return f"'{clean[:80]}...'" if len(clean) > 80 else f"'{clean}'"
    if isinstance(value, dict | list):
        return _kind_of(value)
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    return str(value)[:80]

