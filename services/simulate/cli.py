"""`churnsignal simulate`: generate the accounts and stories, write the ground truth, send to ingest."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import httpx
import orjson

from services.simulate.generator import Simulation, generate
from services.simulate.model import GroundTruth, SimulationParams
from services.simulate.playback import Player
from services.simulate.sender import IngestRejected, IngestSender, IngestUnavailable

API_KEY_ENV = "CHURNSIGNAL_SIMULATE_API_KEY"


def add_generation_arguments(parser: argparse.ArgumentParser, *, accounts: int = 200) -> None:
    """What to simulate (shared by `simulate` and `run`)."""
    parser.add_argument("--seed", type=int, default=42, help="random seed: the same seed gives the same data")
    parser.add_argument("--days", type=float, default=60.0,
                        help="days of history sent first, as a backfill (default 60: baselines form)")
    parser.add_argument("--live-days", type=float, default=14.0,
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
    add_generation_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=500, help="events per request (default 500)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight at most (default 4)")
    parser.add_argument("--retry-for", type=float, default=120.0,
                        help="keep retrying an unavailable ingest (503, connection errors) this many seconds "
                             "(default 120)")
    parser.add_argument("--output", default=None,
                        help="write the events as NDJSON to this file instead of sending them")
    parser.add_argument("--offline", action="store_true",
                        help="send nothing: replay the events through the scoring domain in-process and "
                             "score its risks against the ground truth")


def params_from(args: argparse.Namespace, now: datetime | None = None) -> SimulationParams:
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    return SimulationParams(now=now, seed=args.seed, accounts=args.accounts, history_days=args.days,
                            live_days=args.live_days, churn_rate=args.churn_rate)


def write_truth(truth: GroundTruth, path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_bytes(orjson.dumps(truth.to_dict(), option=orjson.OPT_INDENT_2))
    tmp.replace(target)
    return target


def describe_plan(sim: Simulation) -> str:
    t = sim.truth
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


async def stream_simulation(sim: Simulation, sender: IngestSender, *, speedup: float, batch_size: int = 500,
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


async def send_simulation(sim: Simulation, *, url: str, api_key: str, speedup: float, batch_size: int = 500,
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


def _write_ndjson(sim: Simulation, path: str) -> int:
    n = 0
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        for event in sim.events():
            fh.write(orjson.dumps(event.body) + b"\n")
            n += 1
    return n


def simulate_main(args: argparse.Namespace) -> int:
    sim = generate(params_from(args))
    truth_path = write_truth(sim.truth, args.truth)
    print(f"[simulate] {describe_plan(sim)}")
    print(f"[simulate] ground truth written to {truth_path}")
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
