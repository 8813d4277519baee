"""`churnsignal import fightchurn`: a ChurnSim simulation (the `fightchurn` package on PyPI, exported to CSV
by scripts/fightchurn.sh) converted into churnsignal events, to measure the backtest on third-party data.

Input: a directory with the simulator's tables as CSV with a header line (`psql \\copy ... CSV HEADER`):
`account` (id, channel, ...), `subscription` (account_id, product, start_date, end_date, mrr, ...), `event`
(account_id, event_time, event_type_id, user_id, ...), `event_type` (event_type_id, event_type_name), and
the simulator's saved configuration `<model>/<model>_conf.yaml`, whose `end_date` is the simulation end
(else `--end`). ChurnSim times carry no zone; they are taken as UTC.

Output, one event per line (docs/events.md), stably sorted by `occurred_at`:

- per account with a subscription, an `account` event at its first subscription start: `name`, `arr` (12 x
  the MRR of the subscriptions starting then), `segment` (the account's channel, else the plan);
- a churn as fightchurn's own listings define it (chapter 4, "churned periods"): a subscription ending on
  or before the simulation end with no subscription of the account starting at most 7 days after that end
  and ending later. It becomes an `account` event at the end date with `lifecycle: churned` and
  `lifecycle_at` the same time. (Should a later subscription start again, `lifecycle: active` at its start;
  ChurnSim itself never does that.)
- every `event` row, a `usage` event: `feature` the type name, `user_id` the ChurnSim user id (a number per
  account, as text) when the row has one, `count` 1, and `value` the row's `event_value` when it has one.

Ids are deterministic: `fc-<directory name>-e<row>` for the event table's data row number (the export
orders the rows), `fc-<directory name>-a<account>` and `...-a<account>-<lifecycle>-<YYYYMMDD>` for the
account events, so converting the same files again gives the same bytes (gzip without a time stamp).
Account ids are `fc-<ChurnSim account id>`. The outcomes CSV (`account_id,churned_at`) says the same as
the lifecycle events: the time of an account's last churn, empty when it did not churn (or came back).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gzip
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

import orjson
import yaml

from .history import InputError

TABLES = ("account", "subscription", "event", "event_type")
COLUMNS: dict[str, tuple[str, ...]] = {
    "account": ("id",),
    "subscription": ("account_id", "product", "start_date", "end_date", "mrr"),
    "event": ("account_id", "event_time", "event_type_id"),
    "event_type": ("event_type_id", "event_type_name"),
}
# fightchurn's listings (chapter 4) count a resubscription within this gap as no churn.
ALLOWED_GAP = timedelta(days=7)
ACCOUNT_PREFIX = "fc-"
NAME_PREFIX = "ChurnSim account "

# A timestamp without zone as PostgreSQL writes it, e.g. 2020-01-05 00:44:28 or 2020-01-05 00:44:28.5
_TIMESTAMP = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})[ T]((?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9])"
                        r"(?:\.([0-9]{1,6}))?")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


@dataclass
class Conversion:
    """The converted simulation: the event lines (sorted) and each account's outcome."""

    lines: list[bytes]                         # NDJSON, each ending in a newline
    outcomes: dict[str, datetime | None]      # account id -> when it churned (None: it stayed)
    simulation_end: date
    accounts: int = 0
    usage_events: int = 0
    account_events: int = 0
    churned: int = 0
    features: dict[str, int] = field(default_factory=dict)


# -- reading the tables -----------------------------------------------------------------------------------


class _Table:
    """One CSV table: the header's column positions and its rows, with line numbers for errors."""

    def __init__(self, directory: Path, name: str) -> None:
        self.path = directory / f"{name}.csv"
        self.name = name
        if not self.path.is_file():
            raise InputError(f"{self.path}: the {name} table is missing (expected {name}.csv, as "
                             "scripts/fightchurn.sh exports it)")
        self._file: IO[str] = self.path.open(encoding="utf-8", newline="")
        self._reader = csv.reader(self._file)
        try:
            header = next(self._reader, None)
        except (csv.Error, UnicodeDecodeError) as exc:
            self.close()
            raise InputError(f"{self.path}: line 1: {exc}") from None
        if header is None:
            self.close()
            raise InputError(f"{self.path}: empty file (expected a header line)")
        self.columns = {column.strip(): i for i, column in enumerate(header)}
        missing = [c for c in COLUMNS[name] if c not in self.columns]
        if missing:
            self.close()
            raise InputError(f"{self.path}: line 1: no column {', '.join(missing)} in the header "
                             f"({','.join(header)})")

    def index(self, column: str) -> int | None:
        return self.columns.get(column)

    def rows(self) -> Iterator[list[str]]:
        width = len(self.columns)
        try:
            for row in self._reader:
                if not row:
                    continue
                if len(row) != width:
                    raise self.error(f"expected {width} columns, got {len(row)}")
                yield row
        except (csv.Error, UnicodeDecodeError) as exc:
            raise self.error(str(exc)) from None
        finally:
            self.close()

    def error(self, message: str) -> InputError:
        return InputError(f"{self.path}: line {self._reader.line_num}: {message}")

    def close(self) -> None:
        self._file.close()


def _int(table: _Table, column: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise table.error(f"{column} {text!r} is not a whole number") from None


def _float(table: _Table, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise table.error(f"{column} {text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise table.error(f"{column} {text!r} is not a finite number")
    return value


def _date(table: _Table, column: str, text: str) -> date:
    if _DATE.fullmatch(text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    raise table.error(f"{column} {text!r} is not a date (YYYY-MM-DD)")


def _day_time(day: date) -> tuple[str, str]:
    """A date's UTC midnight: (its sort key, its RFC 3339 text)."""
    text = day.isoformat()
    return f"{text} 00:00:00.000000", f"{text}T00:00:00Z"


def simulation_end(directory: Path) -> date:
    """The `end_date` of the simulator's saved configuration `<model>/<model>_conf.yaml`."""
    found = sorted(directory.glob("*/*_conf.yaml"))
    if not found:
        raise InputError(f"{directory}: no simulation configuration (<model>/<model>_conf.yaml, written by the "
                         "simulator into CHURN_OUT_DIR) to take the simulation end from: give --end")
    path = found[0]
    try:
        conf = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: cannot read it ({' '.join(str(exc).split())})") from None
    end = conf.get("end_date") if isinstance(conf, dict) else None
    if isinstance(end, date):
        return end
    if isinstance(end, str) and _DATE.fullmatch(end.strip()):
        try:
            return date.fromisoformat(end.strip())
        except ValueError:
            pass
    raise InputError(f"{path}: no end_date YYYY-MM-DD in it (got {end!r}): give --end")


# -- the conversion ---------------------------------------------------------------------------------------


def _line(event_id: str, kind: str, account: str, occurred_at: str, data: dict[str, Any]) -> bytes:
    """One event's NDJSON line. (The newline is added to a copy on purpose: the bytes orjson returns keep
    its whole output buffer allocated, some 4 KB each, which for millions of lines is gigabytes.)"""
    return orjson.dumps({"id": event_id, "type": kind, "account_id": account, "occurred_at": occurred_at,
                         "data": data}) + b"\n"


def _churns(subs: list[tuple[date, date | None]], end: date) -> list[date]:
    """The churn dates of one account's subscriptions (start, end), as fightchurn's listings find them."""
    out = []
    for _, stop in subs:
        if stop is None or stop > end or stop in out:
            continue
        limit = stop + ALLOWED_GAP
        if not any(start <= limit and (later is None or later > stop) for start, later in subs):
            out.append(stop)
    return sorted(out)


def convert(directory: Path, *, end: date | None = None, source: str | None = None) -> Conversion:
    """Convert the simulation exported into `directory`. InputError names the first problem found."""
    if not directory.is_dir():
        raise InputError(f"--dir {directory}: not a directory")
    with contextlib.ExitStack() as stack:
        tables: dict[str, _Table] = {}
        for name in TABLES:         # every file and header checked before any work
            tables[name] = _Table(directory, name)
            stack.callback(tables[name].close)
        return _convert(directory, tables, end if end is not None else simulation_end(directory), source)


def _convert(directory: Path, tables: dict[str, _Table], sim_end: date, source: str | None) -> Conversion:
    source = (source or directory.resolve().name)[:64]
    prefix = f"fc-{source}-"

    # event types
    types = tables["event_type"]
    i_tid, i_tname = types.columns["event_type_id"], types.columns["event_type_name"]
    features: dict[str, str] = {}
    for row in types.rows():
        name = row[i_tname].strip()
        if not name:
            raise types.error("event_type_name is empty")
        features[str(_int(types, "event_type_id", row[i_tid]))] = name

    # accounts: id -> channel
    accounts_table = tables["account"]
    i_id, i_channel = accounts_table.columns["id"], accounts_table.index("channel")
    channels: dict[int, str | None] = {}
    for row in accounts_table.rows():
        account = _int(accounts_table, "id", row[i_id])
        channel = row[i_channel].strip() if i_channel is not None else ""
        channels[account] = channel or None

    # subscriptions per account
    subs_table = tables["subscription"]
    c = subs_table.columns
    i_acc, i_product, i_start, i_end, i_mrr = (c["account_id"], c["product"], c["start_date"], c["end_date"],
                                               c["mrr"])
    subs: dict[int, list[tuple[date, date | None, float, str]]] = {}
    for row in subs_table.rows():
        account = _int(subs_table, "account_id", row[i_acc])
        start = _date(subs_table, "start_date", row[i_start])
        stop = _date(subs_table, "end_date", row[i_end]) if row[i_end].strip() else None
        mrr = _float(subs_table, "mrr", row[i_mrr])
        if mrr < 0:
            raise subs_table.error(f"mrr {row[i_mrr]!r} is negative")
        subs.setdefault(account, []).append((start, stop, mrr, row[i_product].strip()))

    # (sort key, line): account events first, then usage in file order, then lifecycle changes; the sort
    # by time is stable, so this is also the order of events at the same time.
    keyed: list[tuple[str, bytes]] = []
    later: list[tuple[str, bytes]] = []
    outcomes: dict[str, datetime | None] = {}
    churned = 0
    for account in sorted(set(channels) | set(subs)):
        account_id = f"{ACCOUNT_PREFIX}{account}"
        own = sorted(subs.get(account, ()), key=lambda s: (s[0], s[1] or date.max))
        outcomes[account_id] = None
        if not own:
            continue
        first = own[0][0]
        arr = round(12 * sum(mrr for start, _, mrr, _ in own if start == first), 2)
        data: dict[str, Any] = {"name": f"{NAME_PREFIX}{account}", "arr": float(arr)}
        segment = channels.get(account) or own[0][3]
        if segment:
            data["segment"] = segment[:128]
        key, text = _day_time(first)
        keyed.append((key, _line(f"{prefix}a{account}", "account", account_id, text, data)))
        periods = [(start, stop) for start, stop, _, _ in own]
        last: tuple[date, str] | None = None
        for stop in _churns(periods, sim_end):
            changes = [(stop, "churned")]
            restart = min((start for start, _ in periods if start > stop), default=None)
            if restart is not None:
                changes.append((restart, "active"))
            for when, lifecycle in changes:
                key, text = _day_time(when)
                later.append((key, _line(f"{prefix}a{account}-{lifecycle}-{when.strftime('%Y%m%d')}", "account",
                                         account_id, text, {"lifecycle": lifecycle, "lifecycle_at": text})))
                if last is None or when >= last[0]:
                    last = (when, lifecycle)
        if last is not None and last[1] == "churned":
            outcomes[account_id] = datetime(last[0].year, last[0].month, last[0].day, tzinfo=UTC)
            churned += 1
    account_events = len(keyed) + len(later)

    # usage
    events = tables["event"]
    c = events.columns
    i_acc, i_time, i_type = c["account_id"], c["event_time"], c["event_type_id"]
    i_user, i_value = events.index("user_id"), events.index("event_value")
    match_time = _TIMESTAMP.fullmatch
    days: set[str] = set()          # dates seen valid (the expression lets 2020-02-30 through)
    counts: dict[str, int] = dict.fromkeys(features.values(), 0)
    usage = 0
    for row in events.rows():
        usage += 1
        account = _int(events, "account_id", row[i_acc])
        feature = features.get(row[i_type].strip())
        if feature is None:
            raise events.error(f"event_type_id {row[i_type]!r} is not in event_type.csv")
        m = match_time(row[i_time])
        if m is None:
            raise events.error(f"event_time {row[i_time]!r} is not a timestamp (YYYY-MM-DD HH:MM:SS[.ffffff])")
        day, clock, fraction = m.groups()
        if day not in days:
            _date(events, "event_time", day)
            days.add(day)
        if fraction:
            key = f"{day} {clock}.{fraction.ljust(6, '0')}"
            text = f"{day}T{clock}.{fraction}Z"
        else:
            key = f"{day} {clock}.000000"
            text = f"{day}T{clock}Z"
        data = {"feature": feature, "count": 1}
        if i_user is not None and row[i_user] != "":
            data["user_id"] = row[i_user].strip()
        if i_value is not None and row[i_value] != "":
            data["value"] = _float(events, "event_value", row[i_value])
        counts[feature] += 1
        keyed.append((key, _line(f"{prefix}e{usage}", "usage", f"{ACCOUNT_PREFIX}{account}", text,
                                 data)))
    keyed.extend(later)
    keyed.sort(key=itemgetter(0))
    return Conversion([line for _, line in keyed], outcomes, sim_end, accounts=len(outcomes), usage_events=usage,
                      account_events=account_events, churned=churned, features=counts)


# -- writing ----------------------------------------------------------------------------------------------


def write_events(path: Path, lines: list[bytes]) -> None:
    """The lines as NDJSON; gzip (with no time stamp or name, so the bytes depend on the lines only) when
    the name ends in `.gz`. Written to a temporary name first, then renamed."""
    part = path.with_name(path.name + ".part")
    try:
        with part.open("wb") as raw:
            out: IO[bytes] = (gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0)
                              if path.name.endswith(".gz") else raw)
            for i in range(0, len(lines), 10_000):
                out.write(b"".join(lines[i:i + 10_000]))
            if out is not raw:
                out.close()
        part.replace(path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def write_outcomes(path: Path, outcomes: dict[str, datetime | None]) -> None:
    """`account_id,churned_at` (RFC 3339, empty when the account stayed), by ChurnSim account id."""
    def order(account: str) -> tuple[int, str]:
        tail = account.removeprefix(ACCOUNT_PREFIX)
        return (int(tail), "") if tail.isdigit() else (-1, account)

    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["account_id", "churned_at"])
        for account in sorted(outcomes, key=order):
            when = outcomes[account]
            writer.writerow([account, "" if when is None else when.strftime("%Y-%m-%dT%H:%M:%SZ")])


# -- the command ------------------------------------------------------------------------------------------

EXAMPLE = ("example: churnsignal import fightchurn --dir var/fightchurn/seed-1 "
           "--events var/fightchurn/seed-1.ndjson.gz --outcomes var/fightchurn/seed-1-outcomes.csv")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`churnsignal import SOURCE ...`: one sub-command per source (fightchurn only, so far)."""
    parser.description = "Convert third-party churn data into churnsignal events (e.g. for the backtest)."
    sources = parser.add_subparsers(dest="source", required=True, metavar="SOURCE")
    fc = sources.add_parser("fightchurn", help="a ChurnSim simulation exported by scripts/fightchurn.sh",
                            description=__doc__.split("\n\n")[0].replace("\n", " "), epilog=EXAMPLE)
    fc.add_argument("--dir", required=True, type=Path, metavar="DIR",
                    help="the exported tables: account.csv, subscription.csv, event.csv, event_type.csv")
    fc.add_argument("--events", required=True, type=Path, metavar="OUT",
                    help="the events as NDJSON (gzip when the name ends in .gz)")
    fc.add_argument("--outcomes", type=Path, default=None, metavar="OUT",
                    help="also write the outcomes as CSV account_id,churned_at")
    fc.add_argument("--end", default=None, metavar="YYYY-MM-DD",
                    help="the simulation end (default: end_date of <model>/<model>_conf.yaml in DIR)")
    fc.add_argument("--quiet", action="store_true", help="no summary on stderr")


def run(args: argparse.Namespace) -> int:
    """The command: exit code 0, or 2 after one line on stderr naming the problem."""
    try:
        return _run(args)
    except InputError as exc:
        print(f"churnsignal import {args.source}: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    end = None
    if args.end is not None:
        if not _DATE.fullmatch(args.end):
            raise InputError(f"bad --end {args.end!r}: expected a date YYYY-MM-DD")
        try:
            end = date.fromisoformat(args.end)
        except ValueError as exc:
            raise InputError(f"bad --end {args.end!r}: {exc}") from None
    for option, path in (("--events", args.events), ("--outcomes", args.outcomes)):
        if path is not None and not path.parent.is_dir():
            raise InputError(f"{option} {path}: the directory {path.parent} does not exist")
    started = time.perf_counter()
    result = convert(args.dir, end=end)
    try:
        write_events(args.events, result.lines)
        if args.outcomes is not None:
            write_outcomes(args.outcomes, result.outcomes)
    except OSError as exc:
        raise InputError(f"cannot write: {exc}") from None
    if not args.quiet:
        print(f"churnsignal import fightchurn: {len(result.lines):,} events ({result.account_events:,} account, "
              f"{result.usage_events:,} usage) for {result.accounts:,} accounts, {result.churned:,} churned by "
              f"{result.simulation_end}; written to {args.events} in {time.perf_counter() - started:.1f} s",
              file=sys.stderr)
    return 0
