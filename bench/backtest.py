"""Backtest benchmark: `churnsignal backtest` over a simulated history, next to reading and validating the
same file without scoring. Needs no Kafka and no PostgreSQL.

Measured in one run, on one NDJSON file of the simulator's events written before the measurements:
- baseline: a process reads and validates every line exactly as the backtest does (`read_events`), and
  does nothing else with the events;
- backtest: a process runs the command (`services.cli.main(["backtest", ...])`): read, validate, replay
  through the scoring domain with every partition's clock, the states at two cuts, the figures, the JSON.
Each runs in a fresh process of its own, with the same collector settings; the figure is events per second
of that process's whole CPU time as its parent sees it when it has ended (`getrusage(RUSAGE_CHILDREN)`,
user + system: interpreter start, imports, the work, freeing the history and exit; one core: both are
single-threaded). The rate from after the imports to the end of the work (what this section measured
before) and the wall-clock rate are in the notes.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from bench.framework import ROOT, Context, Result, Target

TITLE = "Backtest (a history replayed through the scoring domain; no Kafka, no database)"
NOTES = """Method: the history is the simulator's (`services/simulate`, as in the scoring section: accounts with
daily usage rhythms, contacts, tickets, NPS/CSAT answers and scripted churn stories, over 45 days of event
time; about 90% of the events are usage), written to one NDJSON file with an outcomes CSV (each scripted
churner churns three weeks after its story starts). The backtest runs with two cuts, one mid-history and
one after the last event, so every event is replayed, and a 60-day horizon. The baseline reads and
validates the same file the way the backtest does (orjson, then `validate_event` as the scoring consumer
calls it) and keeps nothing. Both run in fresh processes, one after the other; the figures are events
per CPU-second of each whole process, start to exit (user + system time of the ended child, so the
interpreter's start, the imports and freeing the history count; each is single-threaded, so this is
what one core does, whatever else runs on the machine). The rate from after the imports to the end of
the work (what this section reported before) and the wall-clock rates are in the notes. Most of the
backtest's time is the scoring domain itself: every non-usage event and every account's daily clock
tick runs a full health evaluation."""

SERVICES = False          # this section needs neither Kafka nor PostgreSQL

START_CUT = "2026-02-15"
END_CUT = "2026-03-02"


def _write_history(root: Path, accounts: int) -> tuple[Path, Path, int, float]:
    from services.simulate.generator import generate
    from services.simulate.model import SimulationParams

    params = SimulationParams(now=datetime(2026, 3, 1, tzinfo=UTC), seed=17, accounts=accounts, history_days=40,
                              live_days=5, churn_rate=0.3, account_prefix="bt-")
    sim = generate(params)
    events = root / "events.ndjson"
    total = usage = 0
    with events.open("wb") as out:
        for e in sim.events():
            out.write(orjson.dumps(e.body) + b"\n")
            total += 1
            usage += e.body["type"] == "usage"
    churned = {c.account_id: c.signal_start + timedelta(days=21) for c in sim.truth.churners}
    outcomes = root / "outcomes.csv"
    outcomes.write_text("account_id,churned_at\n" + "".join(
        f"{a},{churned[a].date().isoformat() if a in churned else ''}\n" for a in sim.truth.accounts))
    return events, outcomes, total, usage / total


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _child(ctx: Context, *args: str) -> dict[str, Any]:
    """Run `python -m bench.backtest <args>` in a fresh process; its JSON answer, with `process_cpu_s`: the
    whole process's CPU time (start to exit), from the rusage of this process's ended children (only
    this one ends while it runs: the children run one after the other)."""
    before = _children_cpu()
    proc = await asyncio.create_subprocess_exec(ctx.python, "-m", "bench.backtest", *args, cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    await proc.wait()
    process_cpu = _children_cpu() - before
    if proc.returncode != 0:
        raise RuntimeError(f"bench.backtest {args[0]} failed ({proc.returncode}): {err.decode()[-2000:]}")
    answer = json.loads(out.decode().strip().splitlines()[-1])
    answer["process_cpu_s"] = process_cpu
    return answer


async def run(ctx: Context) -> list[Result]:
    accounts = 100 if ctx.quick else 400
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as tmp:
        root = Path(tmp)
        events, outcomes, total, usage_share = _write_history(root, accounts)
        baseline = await _child(ctx, "read", str(events))
        backtest = await _child(ctx, "backtest", str(events), str(outcomes), str(root / "report.json"))
        report = json.loads((root / "report.json").read_text())
    if baseline["events"] != total or report["events"]["replayed"] != total:
        raise RuntimeError(f"expected {total} events, read {baseline['events']}, "
                           f"replayed {report['events']['replayed']}")
    rate = total / backtest["process_cpu_s"]
    seconds = report["seconds"]
    base = total / baseline["process_cpu_s"]
    return [Result(
        f"backtest, events per CPU-second of the whole process ({accounts} accounts, {total:,} events, 2 cuts)",
        rate, "events/s", baseline=base, baseline_name="reading and validating the same NDJSON, no scoring",
        target=Target(at_least=50_000),
        notes=f"{usage_share:.0%} usage events; {report['replay']['timer_evaluations']:,} clock evaluations; "
              f"CPU: the whole process {backtest['process_cpu_s']:.2f} s, of which interpreter start and "
              f"imports {backtest['process_cpu_s'] - backtest['cpu_s']:.2f} s; from after the imports to the "
              f"end {total / backtest['cpu_s']:,.0f} events/s (baseline {total / baseline['cpu_s']:,.0f}); "
              f"wall clock: backtest {total / backtest['wall_s']:,.0f} events/s ({backtest['wall_s']:.2f} s, of "
              f"which reading and validating {seconds['read']:.2f} s and the replay through the scoring domain "
              f"{seconds['replay']:.2f} s, i.e. {total / seconds['replay']:,.0f} events/s for the replay "
              f"alone), baseline {total / baseline['wall_s']:,.0f} events/s; machine load average "
              f"{os.getloadavg()[0]:.1f} at the end")]


# -- the measured processes -------------------------------------------------------------------------------

def _read_only(events: str) -> dict[str, Any]:
    from services.scoring.backtest.cli import fewer_collections
    from services.scoring.backtest.history import read_events

    wall, cpu = time.perf_counter(), time.process_time()
    with fewer_collections():
        history = read_events(Path(events), partitions=6)
        n = history.lines
        del history
    return {"events": n, "cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}


def _backtest(events: str, outcomes: str, report: str) -> dict[str, Any]:
    import contextlib
    import io

    import services.scoring.backtest.html  # noqa: F401  (imports done before the clock starts)
    import services.scoring.backtest.replay  # noqa: F401
    import services.scoring.backtest.report  # noqa: F401
    from services.cli import main

    wall, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["backtest", "--events", events, "--outcomes", outcomes, "--cut", START_CUT, "--cut", END_CUT,
                     "--horizon", "60d", "--partitions", "6", "--quiet", "--json", report])
    if code != 0:
        raise SystemExit(code)
    return {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}


def main(argv: list[str]) -> int:
    """`python -m bench.backtest read FILE` / `backtest EVENTS OUTCOMES REPORT`: one measured process;
    `python -m bench.backtest` alone runs the section (the harness is `python -m bench --only backtest`)."""
    if not argv:
        from bench.framework import summary_line

        for result in asyncio.run(run(Context("", "", ""))):
            print(summary_line(result))
            print(f"    {result.notes}")
        return 0
    answer = _read_only(argv[1]) if argv[0] == "read" else _backtest(*argv[1:4])
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
