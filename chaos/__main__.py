"""`python -m chaos`: run the chaos cases against the real services and write docs/reliability.md.

`make chaos` runs every case with the documented 30-minute soak; `make chaos CHAOS_ARGS="--soak-minutes 3"`
is a quick one. It starts a Kafka broker and a PostgreSQL server of its own on free ports under var/chaos/
(chaos/services.py: never the shared ones of `make services`, which other tests use) and deletes them at the
end, also on Ctrl-C. Each case is bounded in time, restores the broker or the database it stopped, stops the
service processes it started and removes its topics and database.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench.framework import ROOT, Context, machine_info
from chaos import report
from chaos.cases import CASES, OUTAGES
from chaos.harness import CHAOS_DIR, log
from chaos.services import PrivateServices

REPORT = ROOT / "docs" / "reliability.md"
DOCUMENTED_SOAK_MINUTES = 30.0


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--soak-minutes must be a number of minutes, got {text!r}") from None
    if not 0 < value <= 24 * 60:
        raise argparse.ArgumentTypeError(f"--soak-minutes must be above 0 and at most 1440, got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--soak-minutes", type=_minutes, default=DOCUMENTED_SOAK_MINUTES,
                        help=f"how long the soak runs (default {DOCUMENTED_SOAK_MINUTES:g})")
    parser.add_argument("--only", default="",
                        help=f"comma-separated cases to run (default: all): {', '.join(CASES)}")
    parser.add_argument("--no-report", action="store_true",
                        help=f"do not rewrite {REPORT.relative_to(ROOT)}")
    parser.add_argument("--report", type=Path, default=REPORT, help="where to write the report")
    args = parser.parse_args(argv)
    wanted = [c.strip() for c in args.only.split(",") if c.strip()] or list(CASES)
    unknown = [c for c in wanted if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    args.cases = wanted
    return args


async def run_cases(ctx: Context, args: argparse.Namespace) -> list[report.CaseResult]:
    results = []
    for name in args.cases:
        log(f"case {name} ...")
        started = time.monotonic()
        try:
            result = await CASES[name](ctx, args)
        except Exception as exc:  # noqa: BLE001 - a case that breaks is reported; the others still run
            log(f"case {name} did not complete: {exc!r}")
            traceback.print_exc()
            result = report.CaseResult(name, f"{name} (did not complete)", "", error=f"{type(exc).__name__}: {exc}")
        result.seconds = time.monotonic() - started
        log(f"case {name}: {result.verdict()} in {result.seconds:.0f} s")
        for label, value in result.counts.items():
            log(f"  {label}: {value}")
        for finding in result.findings:
            log(f"  FINDING: {finding}")
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every `finally` restores what it stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    services = PrivateServices.on_free_ports(CHAOS_DIR / "services")
    args.services = services
    try:
        log(f"starting a private broker on {services.bootstrap_servers} and PostgreSQL on 127.0.0.1:"
            f"{services.pg_port} in {services.var_dir.relative_to(ROOT)}")
        services.start()
        ctx = Context(kafka_bootstrap_servers=services.bootstrap_servers,
                      database_url=services.database_url("churnsignal"),
                      test_database_url=services.database_url("churnsignal_test"))
        try:
            results = asyncio.run(run_cases(ctx, args))
        finally:
            for outage in OUTAGES:
                outage.restore()
    finally:
        log("stopping the private broker and PostgreSQL and deleting their data (their logs stay)")
        services.wipe(keep_logs=True)
    if not args.no_report:
        command = "make chaos" + (f' CHAOS_ARGS="{" ".join(argv)}"' if argv else "")
        text = report.render(results, machine=machine_info(), when=datetime.now(UTC), command=command,
                             soak_minutes=args.soak_minutes, documented_soak_minutes=DOCUMENTED_SOAK_MINUTES)
        report.write(args.report, text)
        log(f"wrote {args.report}")
    # Findings are results to read in the report; only a case that could not run is a failure.
    return 1 if any(r.error is not None for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
