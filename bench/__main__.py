"""`python -m bench`: run the benchmark sections and write `docs/benchmarks.md`.

Sections are the modules of SECTIONS; one that does not exist (yet) is skipped. A section module
exposes:

    TITLE = "Ingest (HTTP → Kafka)"        # optional, the report's heading for the section
    NOTES = "..."                          # optional, markdown printed under its table
    SERVICES = False                       # optional: the section needs no Kafka / PostgreSQL
    async def run(ctx: Context) -> list[Result]

See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

from bench.framework import (
    ROOT,
    Context,
    Result,
    as_dict,
    machine_info,
    render_section,
    summary_line,
    write_report,
)

SECTIONS = ("ingest", "scoring", "alerts", "backtest", "scale")
REPORT = ROOT / "docs" / "benchmarks.md"


def load_section(name: str) -> ModuleType | None:
    """The section module `bench.<name>`, or None when it does not exist."""
    module = f"bench.{name}"
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated sections to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="shorter measuring windows (smoke run)")
    parser.add_argument("--no-report", action="store_true", help=f"do not rewrite {REPORT.relative_to(ROOT)}")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results to this file")
    args = parser.parse_args(argv)

    wanted = [s.strip() for s in args.only.split(",") if s.strip()] or list(SECTIONS)
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    modules = {name: load_section(name) for name in wanted}
    # A section declaring `SERVICES = False` runs without Kafka and PostgreSQL.
    needs_services = any(m is not None and getattr(m, "SERVICES", True) for m in modules.values())
    ctx = Context.from_environment(quick=args.quick, require_services=needs_services)
    machine = machine_info()
    blocks: dict[str, str] = {}
    raw: dict[str, list[dict[str, object]]] = {}
    failed = False
    for name in wanted:
        module = modules[name]
        if module is None:
            print(f"[bench] section '{name}': not present, skipped")
            continue
        print(f"[bench] section '{name}' ...", flush=True)
        started = time.monotonic()
        results: list[Result] = asyncio.run(module.run(ctx))
        print(f"[bench] section '{name}' done in {time.monotonic() - started:.0f}s")
        for result in results:
            print(summary_line(result))
            failed |= result.met is False
        blocks[name] = render_section(name, getattr(module, "TITLE", name.capitalize()), results, machine,
                                      datetime.now(UTC), getattr(module, "NOTES", ""))
        raw[name] = [as_dict(r) for r in results]
    if blocks and not args.no_report:
        write_report(REPORT, blocks, SECTIONS)
        print(f"[bench] wrote {REPORT.relative_to(ROOT)}")
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": machine, "sections": raw}, indent=2))
    if failed:
        print("[bench] some targets were not met (see the report)")
    # Missed targets are findings to report, not a harness failure.
    return 0


if __name__ == "__main__":
    sys.exit(main())
