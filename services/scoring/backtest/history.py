"""Reading a backtest's inputs: the event history (NDJSON, optionally gzip) and the churn outcomes (CSV).

The history is held in memory, split the way the scoring service sees it: per partition number
(`partition_for(account_id)`, Kafka's partitioner) and, within a partition, per input topic in file order
(a topic-partition's offsets follow the order in which its events were sent, i.e. the file's).

Every line is validated exactly as the scoring consumer decodes a record (`validate_event` without the
future-skew check; U+0000 is looked for only when the line holds its JSON escape, which is the only way
JSON text can carry it, see `shared.events.json_may_hold_nul`). The first bad line stops the reading with
an `InputError` naming the line number and the problem.

Events from the last cut-off on can never change a state as of any cut: they are validated and counted,
not kept. Event ids seen more than once are resolved like the service resolves them: within a partition
the replay applies the first occurrence in the service's merge order; an id reused by accounts of two
different partitions (which no correct sender does) belongs to the partition where the file first uses it.

Given the cut-off dates, the reader also counts each account's events in the `COUNT_WINDOW_DAYS` before
each cut (per usage feature name and per other event type), for the logistic-regression baseline: only
events inside a window are counted, as they go by.

Without an outcomes file, the outcomes are read from the history itself: every account event's
`lifecycle` (from every line, also after the last cut), the newest by `lifecycle_at` (else `occurred_at`)
winning as in the scoring domain; an account whose newest lifecycle is `churned` churned at that time, every
other account stayed (`lifecycle_outcomes`).
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import re
import time
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO

import orjson

from shared.bus.port import partition_for
from shared.events import NUL, NUL_ESCAPE, AccountData, Event, EventError, EventType, UsageData, validate_event
from shared.topics import Topics

PROGRESS_EVERY = 500_000
DAY_S = 86_400
COUNT_WINDOW_DAYS = 28

# The keys of an account's window counts: a usage event counts under its feature name (a str), any other
# event under its type's number here (an int, so that no feature name can collide with a type).
TYPE_KEYS: dict[EventType, int] = {kind: i for i, kind in enumerate(EventType) if kind is not EventType.USAGE}
WindowCounts = dict[str | int, int]

Progress = Callable[[str], None]


class InputError(Exception):
    """A problem with an input file or an argument, told in one line."""


def topic_ranks(topics: Topics | None = None) -> dict[EventType, int]:
    """Each event type's rank in the merge order: its input topic's place among the topics sorted by name
    (accounts < sentiment < tickets < usage; contact events travel on the accounts topic)."""
    topics = topics or Topics()
    names = sorted(topics.inputs)
    return {kind: names.index(topics.for_event(kind)) for kind in EventType}


TOPIC_RANKS = topic_ranks()
TOPIC_COUNT = len(Topics().inputs)


@dataclass(slots=True)
class Activity:
    """An account's raw activity, for the baselines: the times of its events and its days with usage."""

    event_times: Sequence[float]   # epoch seconds, sorted
    usage_days: Sequence[int]      # UTC day numbers (epoch seconds // 86400), distinct, sorted
    # cut (epoch seconds) -> the account's events in the COUNT_WINDOW_DAYS before it, per key (TYPE_KEYS);
    # a cut without an entry: no event in its window
    window_counts: dict[float, WindowCounts] = field(default_factory=dict)


@dataclass
class History:
    """The events kept for the replay, as the service's partitions and topics would hold them."""

    partitions: int
    # streams[partition][topic rank]: the events of that topic-partition in file (offset) order
    streams: list[list[list[Event]]]
    # per partition: the ids that occur more than once there (the replay keeps the first in merge order)
    repeated_ids: list[set[str]]
    # account -> its partition
    partition_of: dict[str, int] = field(default_factory=dict)
    # account -> its activity (each event kept; the replay redoes partitions with repeated ids)
    activity: dict[str, Activity] = field(default_factory=dict)
    # the cuts (epoch seconds) whose windows were counted (`Activity.window_counts`)
    counted_cuts: tuple[float, ...] = ()
    lines: int = 0                 # events read and validated
    kept: int = 0                  # events before the last cut-off (those replayed)
    foreign_duplicates: int = 0    # dropped: an id already used by an account of another partition
    # account -> its newest lifecycle from account events of the whole file: ((lifecycle_at or
    # occurred_at, occurred_at) as epoch seconds, lifecycle); a tie goes to the later line
    lifecycles: dict[str, tuple[tuple[float, float], str]] = field(default_factory=dict)


def open_binary(path: Path) -> IO[bytes]:
    """The file for reading bytes, decompressed when its name ends in `.gz`. InputError when missing."""
    try:
        if path.name.endswith(".gz"):
            return gzip.open(path, "rb")
        return path.open("rb")
    except FileNotFoundError:
        raise InputError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"not a file: {path}") from None
    except PermissionError:
        raise InputError(f"cannot read {path}: permission denied") from None


def describe(errors: list[EventError]) -> str:
    """The validation errors of one event, worded as the dead letters word them."""
    text = "; ".join(f"{'.'.join(str(p) for p in err.loc) or 'event'}: {err.msg}" for err in errors)
    return text.replace(NUL, "\\u0000")


def count_windows(cuts: Sequence[datetime]) -> list[tuple[float, float, int]]:
    """(start, end, index) in epoch seconds of each cut's counting window [cut - COUNT_WINDOW_DAYS, cut)."""
    return [(cut.timestamp() - COUNT_WINDOW_DAYS * DAY_S, cut.timestamp(), i) for i, cut in enumerate(cuts)]


def count_event(counts: WindowCounts, event: Event) -> None:
    """Count one event into an account's window counts."""
    data = event.data
    key: str | int = data.feature if isinstance(data, UsageData) else TYPE_KEYS[event.type]
    counts[key] = counts.get(key, 0) + 1


def read_events(path: Path, *, partitions: int, until: datetime | None = None, cuts: Sequence[datetime] = (),
                progress: Progress | None = None) -> History:
    """Read and validate every line; keep the events before `until` (None: all), split per partition and
    topic, and count every account's events in the window before each of `cuts`. Raises InputError naming
    the first bad line."""
    if partitions < 1:
        raise InputError("--partitions must be at least 1")
    history = History(partitions, [[[] for _ in range(TOPIC_COUNT)] for _ in range(partitions)],
                      [set() for _ in range(partitions)])
    streams = history.streams
    cuts = sorted(set(cuts))
    windows = count_windows(cuts)
    history.counted_cuts = cut_ts = tuple(cut.timestamp() for cut in cuts)
    starts = [lo for lo, _, _ in windows]           # increasing, as the cuts
    n_cuts = len(cuts)
    # (the events before the first window's start are only compared once)
    count_from = starts[0] if starts else math.inf
    type_keys = TYPE_KEYS
    # account -> (partition, event times, usage days, window counts per cut)
    accounts: dict[str, tuple[int, array[float], array[int], list[WindowCounts]]] = {}
    usage = EventType.USAGE
    account_type = EventType.ACCOUNT
    lifecycles = history.lifecycles
    ranks = TOPIC_RANKS
    owner: dict[str, int] = {}          # event id -> the partition that applies it
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    validate = validate_event
    # (compared as epoch seconds: exact to the microsecond for centuries, and cheaper than datetimes)
    until_ts = math.inf if until is None else until.timestamp()
    kept = foreign = blank = 0
    lineno = 0
    started = time.perf_counter()
    next_report = PROGRESS_EVERY if progress is not None else 1 << 62
    with open_binary(path) as raw_file:
        try:
            for lineno, line in enumerate(raw_file, 1):
                try:
                    raw = loads(line)
                except decode_error as exc:
                    if not line.strip():
                        blank += 1          # blank lines (a trailing newline) are not events
                        continue
                    raise InputError(f"{path}: line {lineno}: not JSON: {exc}") from None
                # (shared.events.json_may_hold_nul, inlined: the line is the event's whole JSON text)
                event = validate(raw, check_future=False, check_nul=b"\\" in line and NUL_ESCAPE in line)
                if type(event) is not Event:
                    assert isinstance(event, list)
                    raise InputError(f"{path}: line {lineno}: {describe(event)}")
                if lineno >= next_report and progress is not None:
                    next_report += PROGRESS_EVERY
                    progress(f"read {lineno:,} lines ({lineno / (time.perf_counter() - started):,.0f} lines/s)")
                ts = event.occurred_at.timestamp()
                if event.type is account_type:
                    _note_lifecycle(lifecycles, event, ts)
                if ts >= until_ts:
                    continue
                account = event.account_id
                slot = accounts.get(account)
                if slot is None:
                    slot = accounts[account] = (partition_for(account.encode(), partitions), array("d"),
                                                array("q"), [{} for _ in windows])
                p = slot[0]
                event_id = event.id
                known = len(owner)
                holder = owner.setdefault(event_id, p)
                if len(owner) == known:     # the id was used before
                    if holder != p:
                        foreign += 1
                        continue
                    history.repeated_ids[p].add(event_id)
                kept += 1
                kind = event.type
                streams[p][ranks[kind]].append(event)
                slot[1].append(ts)
                if kind is usage:
                    slot[2].append(int(ts // DAY_S))
                if ts >= count_from:
                    # the windows holding ts: those of the cuts in (ts, ts + window], i.e. from the first
                    # cut after ts on, while the window's start is not after ts
                    i = bisect_right(cut_ts, ts)
                    if i < n_cuts and starts[i] <= ts:
                        key = event.data.feature if kind is usage else type_keys[kind]  # type: ignore[union-attr]
                        windows_of = slot[3]
                        while True:
                            counts = windows_of[i]
                            counts[key] = counts.get(key, 0) + 1
                            i += 1
                            if i == n_cuts or starts[i] > ts:
                                break
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"{path}: cannot read line {lineno + 1}: {exc}") from None
    history.lines = lineno - blank
    counted = history.counted_cuts
    for account, (p, times, days, counts) in accounts.items():
        history.partition_of[account] = p
        history.activity[account] = Activity(array("d", sorted(times)), array("q", sorted(set(days))),
                                             {counted[i]: c for i, c in enumerate(counts) if c})
    history.kept = kept
    history.foreign_duplicates = foreign
    return history


def _note_lifecycle(lifecycles: dict[str, tuple[tuple[float, float], str]], event: Event, ts: float) -> None:
    data = event.data
    if not isinstance(data, AccountData) or data.lifecycle is None:
        return
    key = (ts if data.lifecycle_at is None else data.lifecycle_at.timestamp(), ts)
    known = lifecycles.get(event.account_id)
    if known is None or key >= known[0]:
        lifecycles[event.account_id] = (key, data.lifecycle)


# -- outcomes ---------------------------------------------------------------------------------------------


def lifecycle_outcomes(history: History) -> dict[str, datetime | None]:
    """The outcomes told by the history's account events: every account of the history (and every one
    with a lifecycle) -> when it churned (its newest lifecycle is `churned`: that lifecycle's time), None
    when it stayed."""
    out: dict[str, datetime | None] = dict.fromkeys(history.partition_of)
    for account, ((since, _), lifecycle) in history.lifecycles.items():
        out[account] = datetime.fromtimestamp(since, UTC) if lifecycle == "churned" else None
    return out


_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_moment(text: str) -> datetime:
    """A churn date: YYYY-MM-DD (its UTC midnight) or an RFC 3339 timestamp with offset. ValueError else."""
    text = text.strip()
    if _DATE.fullmatch(text):
        d = date.fromisoformat(text)
        return datetime(d.year, d.month, d.day, tzinfo=UTC)
    when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError("a timestamp needs an offset (e.g. Z)")
    return when.astimezone(UTC)


def read_outcomes(path: Path) -> dict[str, datetime | None]:
    """`account_id,churned_at` rows: account -> when it churned (None: it stayed)."""
    with open_binary(path) as raw_file:
        try:
            text = io.TextIOWrapper(raw_file, encoding="utf-8-sig", newline="")
            reader = csv.reader(text)
            header = next(reader, None)
            if header is None:
                raise InputError(f"{path}: empty file (expected the header account_id,churned_at)")
            names = [h.strip() for h in header]
            if "account_id" not in names or "churned_at" not in names:
                raise InputError(f"{path}: line 1: the header must name account_id and churned_at, "
                                 f"got {','.join(names)}")
            i_account, i_churned = names.index("account_id"), names.index("churned_at")
            out: dict[str, datetime | None] = {}
            for row in reader:
                lineno = reader.line_num
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) <= max(i_account, i_churned):
                    raise InputError(f"{path}: line {lineno}: expected {len(names)} columns, got {len(row)}")
                account = row[i_account].strip()
                if not account:
                    raise InputError(f"{path}: line {lineno}: account_id is empty")
                if account in out:
                    raise InputError(f"{path}: line {lineno}: account {account!r} is listed twice")
                churned = row[i_churned].strip()
                if not churned:
                    out[account] = None
                    continue
                try:
                    out[account] = parse_moment(churned)
                except ValueError as exc:
                    raise InputError(f"{path}: line {lineno}: churned_at {churned!r} is not a date "
                                     f"(YYYY-MM-DD) or an RFC 3339 timestamp ({exc})") from None
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not UTF-8 text ({exc})") from None
        except csv.Error as exc:
            raise InputError(f"{path}: line {reader.line_num}: {exc}") from None
    return out
