"""`churnsignal simulate`: generate the accounts and stories, write the ground truth, send to ingest."""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import io
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TextIO

import httpx
import orjson

from services.simulate.generator import Simulation, generate
from services.simulate.model import GroundTruth, SimulationParams, SparseParams
from services.simulate.playback import Player
from services.simulate.sender import IngestRejected, IngestSender, IngestUnavailable
from services.simulate.sparse import SparseSimulation, generate_sparse

API_KEY_ENV = "CHURNSIGNAL_SIMULATE_API_KEY"

AnySimulation = Simulation | SparseSimulation


# --days and --live-days per mode, when not given
DENSE_DAYS, DENSE_LIVE_DAYS = 60.0, 14.0
SPARSE_DAYS, SPARSE_LIVE_DAYS = 730.0, 0.0

SPARSE_HELP = """\
sparse mode (--mode sparse): purchase-like accounts active only every few weeks (monthly reporting,
billing runs, planning, repeat purchases), some of which lapse. Each account has a usual gap between its
visits (log-uniform within --gap-days), is periodic (a weekly or monthly cadence with a few days' jitter)
or irregular (gamma gaps, shape 1..8), pauses now and then (a skipped visit, a 2-4 week break) and
resumes. An active account lapses (stops for good after a visit) with a constant hazard in time: it
lapses within a year with probability --lapse-rate; --slowdown-share of the lapsers space out their last
visits first. A lapsed account is declared churned --declare-after days after its last activity: an
account event with lifecycle "churned" and lifecycle_at = last activity + declare-after (occurred_at the
same) is emitted when that lies within the timeline, and no account that did not lapse is ever silent that
long. So "churned within a 180-day horizon after a cut" means "active in the 180 days before the cut and
never again". The ground truth (--truth) lists every account's rhythm, pauses, last activity and
declaration; --outcomes writes account_id,churned_at. Defaults: two years of history, nothing live."""


def add_generation_arguments(parser: argparse.ArgumentParser, *, accounts: int = 200,
                             per_mode_days: bool = False) -> None:
    """What to simulate (shared by `simulate` and `run`). With `per_mode_days`, --days and --live-days
    default to None, resolved by the mode (`resolve_days`)."""
    parser.add_argument("--seed", type=int, default=42, help="random seed: the same seed gives the same data")
    if per_mode_days:
        parser.add_argument("--days", type=float, default=None,
                            help=f"days of history sent first, as a backfill (default {DENSE_DAYS:g}: baselines "
                                 f"form; {SPARSE_DAYS:g} in the sparse mode)")
        parser.add_argument("--live-days", type=float, default=None,
                            help=f"days of event time streamed live at the speed-up (default "
                                 f"{DENSE_LIVE_DAYS:g}; {SPARSE_LIVE_DAYS:g} in the sparse mode)")
    else:
        parser.add_argument("--days", type=float, default=DENSE_DAYS,
                            help="days of history sent first, as a backfill (default 60: baselines form)")
        parser.add_argument("--live-days", type=float, default=DENSE_LIVE_DAYS,
                            help="days of event time streamed live at the speed-up (default 14)")
    parser.add_argument("--speedup", type=float, default=3600.0,
                        help="simulated seconds per real second in the live part (default 3600: 1 h/s; "
                             "0 sends everything at once)")
    parser.add_argument("--churn-rate", type=float, default=0.12,
                        help="share of accounts given a scripted churn story (default 0.12)")
    parser.add_argument("--truth", default="var/simulate-truth.json",
                        help="where to write the ground truth (default var/simulate-truth.json)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="ingest base URL")
    parser.add_argument("--api-key", default=None,
                        help=f"API key with the 'ingest' scope (default: ${API_KEY_ENV})")
    parser.add_argument("--accounts", type=int, default=200, help="number of accounts (default 200)")
    parser.add_argument("--mode", choices=("dense", "sparse"), default="dense",
                        help="dense (default): daily-use accounts with scripted churn stories; sparse: "
                             "purchase-like accounts active every few weeks, some of which lapse (see below)")
    parser.add_argument("--end", default=None, metavar="WHEN",
                        help="where the event time ends: YYYY-MM-DD (its UTC midnight) or an RFC 3339 "
                             "timestamp with offset (default: now); pins the output for a seed")
    add_generation_arguments(parser, per_mode_days=True)
    parser.add_argument("--batch-size", type=int, default=500, help="events per request (default 500)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight at most (default 4)")
    parser.add_argument("--retry-for", type=float, default=120.0,
                        help="keep retrying an unavailable ingest (503, connection errors) this many seconds "
                             "(default 120)")
    parser.add_argument("--output", default=None,
                        help="write the events as NDJSON to this file instead of sending them (gzip when the "
                             "name ends in .gz)")
    parser.add_argument("--offline", action="store_true",
                        help="send nothing: replay the events through the scoring domain in-process and "
                             "score its risks against the ground truth (dense mode)")
    sparse = parser.add_argument_group("sparse mode", SPARSE_HELP)
    sparse.add_argument("--gap-days", default="14:84", metavar="MIN:MAX",
                        help="range of the accounts' usual gap between visits, in days (default 14:84)")
    sparse.add_argument("--periodic-share", type=float, default=0.4,
                        help="share of accounts on a calendar cadence, the others irregular (default 0.4)")
    sparse.add_argument("--lapse-rate", type=float, default=0.35,
                        help="chance that an active account lapses within a year (default 0.35: about 40%% "
                             "of the accounts lapse within two years)")
    sparse.add_argument("--slowdown-share", type=float, default=0.25,
                        help="share of the lapsing accounts whose last gaps grow longer first (default 0.25)")
    sparse.add_argument("--pause-rate", type=float, default=0.05,
                        help="chance that a gap holds a pause (a skipped visit, a 2-4 week break) after which "
                             "the account resumes (default 0.05)")
    sparse.add_argument("--declare-after", type=float, default=180.0, metavar="DAYS",
                        help="a lapsed account is declared churned this many days after its last activity "
                             "(default 180)")
    sparse.add_argument("--outcomes", default=None, metavar="FILE",
                        help="write account_id,churned_at (the declared churn within the timeline, else "
                             "empty) as CSV (gzip when the name ends in .gz)")


def parse_end(text: str) -> datetime:
    """--end: YYYY-MM-DD (its UTC midnight) or an RFC 3339 timestamp with offset. ValueError else."""
    text = text.strip()
    if len(text) == 10:
        day = datetime.strptime(text, "%Y-%m-%d")
        return day.replace(tzinfo=UTC)
    when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError("a timestamp needs an offset (e.g. Z)")
    return when.astimezone(UTC)


def _end(args: argparse.Namespace, now: datetime | None) -> datetime:
    end = getattr(args, "end", None)
    if now is None and end:
        return parse_end(end)
    return (now or datetime.now(UTC)).replace(microsecond=0)


def resolve_days(args: argparse.Namespace) -> tuple[float, float]:
    """(history days, live days): as given, else the mode's defaults."""
    sparse = getattr(args, "mode", "dense") == "sparse"
    days = args.days if args.days is not None else (SPARSE_DAYS if sparse else DENSE_DAYS)
    live = args.live_days if args.live_days is not None else (SPARSE_LIVE_DAYS if sparse else DENSE_LIVE_DAYS)
    return days, live


def params_from(args: argparse.Namespace, now: datetime | None = None) -> SimulationParams:
    days, live = resolve_days(args)
    return SimulationParams(now=_end(args, now), seed=args.seed, accounts=args.accounts, history_days=days,
                            live_days=live, churn_rate=args.churn_rate)


def parse_gap_days(text: str) -> tuple[float, float]:
    low, sep, high = text.partition(":")
    if not sep:
        raise ValueError(f"--gap-days {text!r}: expected MIN:MAX, e.g. 14:84")
    return float(low), float(high)


def sparse_params_from(args: argparse.Namespace, now: datetime | None = None) -> SparseParams:
    days, live = resolve_days(args)
    gap_min, gap_max = parse_gap_days(args.gap_days)
    return SparseParams(now=_end(args, now), seed=args.seed, accounts=args.accounts, history_days=days,
                        live_days=live, gap_min_days=gap_min, gap_max_days=gap_max,
                        periodic_share=args.periodic_share, lapse_rate=args.lapse_rate,
                        slowdown_share=args.slowdown_share, pause_rate=args.pause_rate,
                        declare_after_days=args.declare_after)


def write_truth(truth: GroundTruth, path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_bytes(orjson.dumps(truth.to_dict(), option=orjson.OPT_INDENT_2))
    tmp.replace(target)
    return target


def describe_plan(sim: AnySimulation) -> str:
    t = sim.truth
    if t.mode == "sparse":
        lapsed = t.lapsed
        declared = sum(1 for a in lapsed if a.churned_at is not None)
        return (f"{len(t.accounts)} sparse accounts ({len(lapsed)} lapse within the timeline, {declared} of them "
                f"declared churned {t.parameters['declare_after_days']:g} days after their last activity by "
                f"its end), event time {t.start:%Y-%m-%d} .. {t.end:%Y-%m-%d %H:%M} UTC, live from "
                f"{t.live_from:%Y-%m-%d %H:%M}")
    return (f"{len(t.accounts)} accounts ({len(t.churners)} scripted to churn), event time "
            f"{t.start:%Y-%m-%d} .. {t.end:%Y-%m-%d %H:%M} UTC, live from {t.live_from:%Y-%m-%d %H:%M}")


@dataclass
class Progress:
    """The one-line status of a running simulation (the rate is over the last interval)."""

    sender: IngestSender
    player: Player
    _last: tuple[float, int] | None = None

    def line(self) -> str:
        stats, player = self.sender.stats, self.player
        now = time.monotonic()
        then, sent_then = self._last or (stats.started, 0)
        rate = (stats.events_sent - sent_then) / (now - then) if now > then else 0.0
        self._last = (now, stats.events_sent)
        sim = player.sim_time
        when = f"{sim:%Y-%m-%d %H:%M} UTC" if sim else "-"
        return (f"[simulate] {player.phase}: {stats.events_sent:,} events sent ({rate:,.0f}/s), "
                f"simulated time {when}" + (f", {stats.retries} retries" if stats.retries else ""))


async def report_progress(line: Callable[[], str], *, out: TextIO, interval_s: float,
                          overwrite: bool) -> None:
    """Print the progress line every `interval_s` until cancelled (on a terminal, in place)."""
    try:
        while True:
            await asyncio.sleep(interval_s)
            if overwrite:
                out.write("\r" + line().ljust(100))
            else:
                out.write(line() + "\n")
            out.flush()
    finally:
        if overwrite:
            out.write("\r" + line().ljust(100) + "\n")
            out.flush()


async def stream_simulation(sim: AnySimulation, sender: IngestSender, *, speedup: float, batch_size: int = 500,
                            out: TextIO = sys.stdout, progress_interval_s: float | None = None,
                            overwrite: bool | None = None) -> None:
    """Play the simulation into the sender (history as a backfill, then live) with a progress line."""
    player = Player(sender, sim.truth.live_from, speedup=speedup, batch_size=batch_size)
    overwrite = out.isatty() if overwrite is None else overwrite
    interval = progress_interval_s if progress_interval_s is not None else (1.0 if overwrite else 10.0)
    progress = asyncio.create_task(report_progress(Progress(sender, player).line, out=out,
                                                   interval_s=interval, overwrite=overwrite))
    try:
        await player.play(sim.events())
    finally:
        await sender.cancel()
        progress.cancel()
        await asyncio.gather(progress, return_exceptions=True)


class RetryNotice:
    """Says once (and then every 30 s) that ingest is unavailable and the simulator is retrying."""

    def __init__(self, out: TextIO, url: str) -> None:
        self._out = out
        self._url = url
        self._last = -1e9

    def __call__(self, problem: str, wait_s: float) -> None:
        now = time.monotonic()
        if now - self._last >= 30:
            self._last = now
            self._out.write(f"\n[simulate] ingest at {self._url} unavailable ({problem}); retrying "
                            f"(next in {wait_s:.1f} s)\n")
            self._out.flush()


async def send_simulation(sim: AnySimulation, *, url: str, api_key: str, speedup: float, batch_size: int = 500,
                          concurrency: int = 4, retry_for_s: float = 120.0, out: TextIO = sys.stdout,
                          progress_interval_s: float | None = None,
                          client: httpx.AsyncClient | None = None) -> IngestSender:
    """Stream the simulation to ingest at `url`; returns the sender (with its stats)."""
    http = client or httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0))
    try:
        sender = IngestSender(http, url, api_key, concurrency=concurrency, retry_deadline_s=retry_for_s,
                              on_retry=RetryNotice(out, url))
        await stream_simulation(sim, sender, speedup=speedup, batch_size=batch_size, out=out,
                                progress_interval_s=progress_interval_s)
    finally:
        if client is None:
            await http.aclose()
    return sender


def _open_for_writing(path: str) -> IO[bytes]:
    """The file for writing bytes, gzip-compressed when its name ends in `.gz` (its parent created); the
    gzip header carries no time stamp, so the same seed gives the same bytes."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if path.endswith(".gz"):
        return gzip.GzipFile(path, "wb", mtime=0)
    return open(path, "wb")


def _write_ndjson(sim: AnySimulation, path: str) -> int:
    n = 0
    with _open_for_writing(path) as fh:
        for event in sim.events():
            fh.write(orjson.dumps(event.body) + b"\n")
            n += 1
    return n


def write_outcomes(sim: SparseSimulation, path: str) -> int:
    """`account_id,churned_at` for every account (empty when it was not declared churned); the count."""
    rows = sim.outcome_rows()
    with _open_for_writing(path) as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(("account_id", "churned_at"))
        for account, churned_at in rows:
            writer.writerow((account, churned_at.isoformat() if churned_at else ""))
    return len(rows)


def simulate_main(args: argparse.Namespace) -> int:
    sim: AnySimulation
    if getattr(args, "mode", "dense") == "sparse":
        if args.offline:
            print("--offline scores scripted churn stories (dense mode); for the sparse mode write the events "
                  "with --output and run `churnsignal backtest`", file=sys.stderr)
            return 2
        try:
            sim = generate_sparse(sparse_params_from(args))
        except ValueError as exc:
            print(f"simulate: {exc}", file=sys.stderr)
            return 2
    else:
        if getattr(args, "outcomes", None):
            print("--outcomes needs --mode sparse (the dense mode's churn is scripted, see --truth)",
                  file=sys.stderr)
            return 2
        try:
            params = params_from(args)
        except ValueError as exc:
            print(f"simulate: {exc}", file=sys.stderr)
            return 2
        sim = generate(params)
    truth_path = write_truth(sim.truth, args.truth)
    print(f"[simulate] {describe_plan(sim)}")
    print(f"[simulate] ground truth written to {truth_path}")
    if isinstance(sim, SparseSimulation) and args.outcomes:
        n = write_outcomes(sim, args.outcomes)
        print(f"[simulate] outcomes of {n:,} accounts written to {args.outcomes}")
    if args.output:
        n = _write_ndjson(sim, args.output)
        print(f"[simulate] {n:,} events written to {args.output}")
        return 0
    if args.offline:
        from services.simulate.evaluate import score_against_truth
        from services.simulate.offline import replay

        for line in score_against_truth(sim.truth, replay(sim.events())).lines():
            print(line)
        return 0
    api_key = args.api_key or os.environ.get(API_KEY_ENV)
    if not api_key:
        print(f"simulate needs an API key with the 'ingest' scope: --api-key or ${API_KEY_ENV}",
              file=sys.stderr)
        return 2
    # One log line per request would drown the progress line.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    started = time.monotonic()
    try:
        sender = asyncio.run(send_simulation(sim, url=args.url, api_key=api_key, speedup=args.speedup,
                                             batch_size=args.batch_size, concurrency=args.concurrency,
                                             retry_for_s=args.retry_for))
    except IngestRejected as exc:
        print(f"[simulate] stopped: {exc.message}", file=sys.stderr)
        return 2
    except IngestUnavailable as exc:
        print(f"[simulate] stopped: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("\n[simulate] interrupted", file=sys.stderr)
        return 130
    elapsed = time.monotonic() - started
    stats = sender.stats
    print(f"[simulate] done: {stats.events_sent:,} events sent in {elapsed:.1f} s "
          f"({stats.requests:,} requests, {stats.retries} retries) to {args.url}")
    return 0
