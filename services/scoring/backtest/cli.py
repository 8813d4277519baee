"""`churnsignal backtest`: the command-line adapter (arguments, files, output) around the pure replay and
figures. Every problem with an argument or an input file is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import contextlib
import gc
import re
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import yaml

from shared.settings import Settings

from .history import InputError

if TYPE_CHECKING:
    from services.scoring.domain import ScoringConfig

_CUT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DAYS = re.compile(r"([0-9]+)d")

EXAMPLE = ("example: churnsignal backtest --events history.ndjson.gz --outcomes outcomes.csv "
           "--cut 2026-01-01 --cut 2026-04-01 --horizon 120d --json backtest.json --html backtest.html")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Replay a history of events through the scoring domain (in event time, as the "
                          "scoring service would) and report how well the health score, each risk type "
                          "and two naive baselines predicted churn after each cut-off date. "
                          "See docs/backtest.md.")
    parser.epilog = EXAMPLE
    parser.add_argument("--events", required=True, type=Path, metavar="FILE",
                        help="NDJSON of events as ingest accepts them (gzip when the name ends in .gz)")
    parser.add_argument("--outcomes", type=Path, default=None, metavar="FILE",
                        help="CSV with the header account_id,churned_at (YYYY-MM-DD or RFC 3339; empty: "
                             "stayed). Default: read from the events: an account whose newest account "
                             "event lifecycle is churned churned at its lifecycle_at (else occurred_at); "
                             "every other account stayed")
    parser.add_argument("--cut", required=True, action="append", metavar="YYYY-MM-DD",
                        help="a cut-off date (its UTC midnight); repeat for several")
    parser.add_argument("--horizon", required=True, metavar="DAYSd",
                        help="churn counts when it happens within this many days after the cut, e.g. 120d")
    parser.add_argument("--lookback", default="0d", metavar="DAYSd",
                        help="a risk also counts when it opened this long before the cut, even if resolved "
                             "since (default 0d: only risks open at the cut)")
    parser.add_argument("--config", type=Path, default=None, metavar="scoring.yaml",
                        help="scoring configuration (default: CHURNSIGNAL_SCORING_CONFIG_FILE, else the "
                             "built-in defaults), loaded as the scoring service loads it")
    parser.add_argument("--partitions", type=int, default=None, metavar="N",
                        help="partitions of the input topics (default: CHURNSIGNAL_TOPIC_PARTITIONS, 6)")
    parser.add_argument("--allowed-lateness", type=int, default=None, metavar="SECONDS",
                        help="the partition clock's allowed lateness (default: "
                             "CHURNSIGNAL_SCORING_ALLOWED_LATENESS_S, 3600)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the figures as JSON")
    parser.add_argument("--html", type=Path, default=None, metavar="OUT",
                        help="write a self-contained HTML report (charts and tables)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def parse_cut(text: str) -> datetime:
    if not _CUT.fullmatch(text):
        raise InputError(f"bad --cut {text!r}: expected a date YYYY-MM-DD")
    try:
        d = date.fromisoformat(text)
    except ValueError as exc:
        raise InputError(f"bad --cut {text!r}: {exc}") from None
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def parse_days(option: str, text: str, *, allow_zero: bool = False) -> timedelta:
    match = _DAYS.fullmatch(text.strip())
    if not match or (int(match.group(1)) == 0 and not allow_zero):
        least = "0" if allow_zero else "1"
        raise InputError(f"bad {option} {text!r}: expected a whole number of days ({least} or more) "
                         "followed by d, e.g. 120d")
    return timedelta(days=int(match.group(1)))


def _check_output(path: Path | None, option: str) -> None:
    if path is not None and not path.parent.is_dir():
        raise InputError(f"{option} {path}: the directory {path.parent} does not exist")


def _check_input(path: Path, option: str) -> None:
    if not path.exists():
        raise InputError(f"{option} {path}: file not found")
    if not path.is_file():
        raise InputError(f"{option} {path}: not a file")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """The command: exit code 0, or 2 after one line naming the problem."""
    try:
        return _run(args, settings)
    except InputError as exc:
        print(f"churnsignal backtest: error: {exc}", file=sys.stderr)
        return 2


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """`shared.process.tune_gc` for the length of a run, then the collector as it was: the history is
    millions of long-lived objects, and the default thresholds would have the collector go over them
    again and again (a fifth of the run). Restored after, since the command may run inside another
    program (the tests)."""
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


@contextlib.contextmanager
def no_collections() -> Iterator[None]:
    """The collector off while the history is read (every object made then lives until the end, and
    reading makes no cycle: a collection would find nothing to free), then everything read moved out of
    its reach (`gc.freeze`: `fewer_collections` unfreezes at the end)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def _run(args: argparse.Namespace, settings: Settings) -> int:
    cuts = sorted({parse_cut(c) for c in args.cut})
    horizon = parse_days("--horizon", args.horizon)
    lookback = parse_days("--lookback", args.lookback, allow_zero=True)
    partitions = settings.topic_partitions if args.partitions is None else args.partitions
    if partitions < 1:
        raise InputError(f"bad --partitions {partitions}: must be at least 1")
    lateness_s = settings.scoring_allowed_lateness_s if args.allowed_lateness is None else args.allowed_lateness
    if lateness_s < 0:
        raise InputError(f"bad --allowed-lateness {lateness_s}: must be 0 or more")
    _check_input(args.events, "--events")
    if args.outcomes is not None:
        _check_input(args.outcomes, "--outcomes")
    config_path = args.config if args.config is not None else settings.scoring_config_file
    if config_path is not None:
        _check_input(Path(config_path), "--config")
    _check_output(args.json, "--json")
    _check_output(args.html, "--html")

    from services.scoring.domain import ScoringConfig

    try:
        config = ScoringConfig.load(config_path)
    except (ValueError, TypeError, OSError) as exc:
        raise InputError(f"--config {config_path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"--config {config_path}: not valid YAML ({' '.join(str(exc).split())})") from None

    def progress(message: str) -> None:
        if not args.quiet:
            print(f"churnsignal backtest: {message}", file=sys.stderr, flush=True)

    with fewer_collections():
        _backtest(args, cuts, horizon, lookback, partitions, lateness_s, config, progress)
    return 0


def _backtest(args: argparse.Namespace, cuts: list[datetime], horizon: timedelta, lookback: timedelta,
              partitions: int, lateness_s: int, config: ScoringConfig, progress: Callable[[str], None]) -> None:
    from services.scoring.domain import RISK_TYPES, ScoringEngine

    from .history import lifecycle_outcomes, read_events, read_outcomes
    from .html import render_html
    from .replay import replay
    from .report import build_report, text_summary

    started = time.perf_counter()
    outcomes = None if args.outcomes is None else read_outcomes(args.outcomes)
    with no_collections():
        history = read_events(args.events, partitions=partitions, until=cuts[-1], cuts=cuts, progress=progress)
    if outcomes is None:
        outcomes = lifecycle_outcomes(history)
    read_s = time.perf_counter() - started
    result = replay(history, cuts, ScoringEngine(config), allowed_lateness=timedelta(seconds=lateness_s),
                    lookback=lookback, progress=progress)
    about: dict[str, Any] = {
        "generated_by": "churnsignal backtest",
        "events_file": str(args.events),
        "outcomes_file": None if args.outcomes is None else str(args.outcomes),
        "config_version": config.version,
        "partitions": partitions,
        "allowed_lateness_s": lateness_s,
        "events": {"read": history.lines, "replayed": result.applied,
                   "after_last_cut": history.lines - history.kept - history.foreign_duplicates,
                   "duplicates_skipped": result.duplicates + history.foreign_duplicates,
                   "accounts": len(history.partition_of)},
        "replay": {"timer_evaluations": result.evaluations, "separate_replays": result.separate_replays,
                   "stuck_timers": result.stuck_timers},
        "outcomes": {"source": "file" if args.outcomes is not None else "lifecycle events",
                     "accounts": len(outcomes), "churned": sum(1 for v in outcomes.values() if v is not None)},
    }
    doc, charts = build_report(result, outcomes, horizon=horizon, lookback=lookback, risk_types=RISK_TYPES,
                               about=about)
    elapsed = time.perf_counter() - started
    doc["seconds"] = {"read": round(read_s, 3), "replay": round(result.seconds, 3), "total": round(elapsed, 3)}
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    if args.html is not None:
        args.html.write_text(render_html(doc, charts), encoding="utf-8")
    sys.stdout.write(text_summary(doc))
    sys.stdout.flush()
    if result.separate_replays:
        progress(f"{result.separate_replays} partition(s) had events before a cut sent after later ones on "
                 "the same topic; they were replayed on their own for that cut")
    if result.stuck_timers:
        progress(f"timers were still firing after {result.stuck_timers} event(s) (left for the next event, "
                 "as the service does)")
    progress(f"{history.lines:,} events read and validated in {read_s:.1f} s, {result.applied:,} replayed in "
             f"{result.seconds:.1f} s; {history.lines / elapsed:,.0f} events/s overall ({elapsed:.1f} s)")
