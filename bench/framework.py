"""The benchmark harness: results, targets, the run context, machine facts and the report.

A section is a module listed in `bench.__main__.SECTIONS` exposing `async def run(ctx: Context) ->
list[Result]`. Each result is one measured figure, optionally next to a raw baseline measured in the
same run (the raw aiokafka producer, a raw consumer, ...) and a target set by the section. The report
(`docs/benchmarks.md`) holds one table per section; a section not run this time keeps its previous
table, so sections can be re-measured alone (`python -m bench --only ingest`).
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Target:
    """What a figure must reach: an absolute bound and/or a ratio to its baseline."""

    at_least: float | None = None
    at_most: float | None = None
    min_ratio: float | None = None  # figure / baseline

    def met(self, value: float, baseline: float | None) -> bool:
        if self.at_least is not None and value < self.at_least:
            return False
        if self.at_most is not None and value > self.at_most:
            return False
        if self.min_ratio is not None:
            return baseline is not None and baseline > 0 and value / baseline >= self.min_ratio
        return True

    def describe(self, unit: str) -> str:
        parts = []
        if self.at_least is not None:
            parts.append(f"≥ {fmt_number(self.at_least)} {unit}")
        if self.at_most is not None:
            parts.append(f"≤ {fmt_number(self.at_most)} {unit}")
        if self.min_ratio is not None:
            parts.append(f"≥ {self.min_ratio:.0%} of baseline")
        return " and ".join(parts) or "—"


@dataclass(slots=True)
class Result:
    """One measured figure of a section."""

    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str | None = None
    target: Target | None = None
    notes: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline <= 0:
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.value, self.baseline)


@dataclass(slots=True)
class Context:
    """What every section gets: the real services, a run id for fresh topic prefixes, the budget."""

    kafka_bootstrap_servers: str
    database_url: str
    test_database_url: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    quick: bool = False
    python: str = field(default_factory=lambda: str(ROOT / ".venv" / "bin" / "python"))

    @classmethod
    def from_environment(cls, *, quick: bool = False, require_services: bool = True) -> Context:
        kafka = os.environ.get("CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS", "")
        if not kafka and require_services:
            raise SystemExit("CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS is not set: run `make services` and "
                             "`source var/services.env` (or use `make bench`)")
        python = ROOT / ".venv" / "bin" / "python"
        return cls(kafka_bootstrap_servers=kafka,
                   database_url=os.environ.get("CHURNSIGNAL_DATABASE_URL", ""),
                   test_database_url=os.environ.get("CHURNSIGNAL_TEST_DATABASE_URL", ""),
                   quick=quick, python=str(python) if python.exists() else "python3")

    def topic_prefix(self, section: str) -> str:
        """A topic prefix no earlier run used, so figures never include someone else's records."""
        return f"bench-{self.run_id}-{section}."

    def seconds(self, full: float) -> float:
        """A measuring window, shortened in --quick runs."""
        return max(2.0, full / 3) if self.quick else full

    async def delete_topics(self, prefix: str) -> None:
        """Drop a section's topics once measured: a broker with thousands of leftover partitions is
        slower for every later run."""
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka_bootstrap_servers)
        await admin.start()
        try:
            doomed = [t for t in await admin.list_topics() if t.startswith(prefix)]
            if doomed:
                await admin.delete_topics(doomed)
        finally:
            await admin.close()


def fmt_number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:,.1f}"
    return f"{value:,.3g}"


# --------------------------------------------------------------------------------------------- machine
def machine_info() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cores": f"{usable} usable ({os.cpu_count()} online)",
        "memory": mem or "unknown",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "commit": _git_commit(),
    }


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    dirty = ""
    try:
        status = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=5, check=False)
        dirty = " (with uncommitted changes)" if status.stdout.strip() else ""
    except (OSError, subprocess.SubprocessError):
        pass
    return (out.stdout.strip() or "unknown") + dirty


# ---------------------------------------------------------------------------------------------- report
_BLOCK = re.compile(r"<!-- section:(?P<name>[\w.-]+) -->\n.*?<!-- /section:(?P=name) -->\n", re.S)

HEADER = """# Benchmarks

Measured by `make bench` (`python -m bench`) against the real Kafka broker and PostgreSQL of
`make services`, on loopback, each figure next to a raw client measured in the same run. Targets are
set next to each figure in its section (`bench/<section>.py`). Sections can be re-measured alone
(`make bench BENCH_ARGS="--only ingest"`); each table says when and where it was measured. How the
harness works and how a section plugs in: `bench/README.md`.
"""


def render_section(name: str, title: str, results: Iterable[Result], machine: dict[str, str],
                   when: datetime, notes: str = "") -> str:
    lines = [f"<!-- section:{name} -->", f"## {title}", "",
             f"Measured {when:%Y-%m-%d %H:%M} UTC on {machine['cpu']}, {machine['cores']}, "
             f"{machine['memory']} RAM, {machine['os']}, Python {machine['python']}, "
             f"commit {machine['commit']}.",
             "",
             "| figure | measured | raw baseline | ratio | target | met? |",
             "|---|---:|---:|---:|---|:---:|"]
    footnotes = []
    for r in results:
        base = "—" if r.baseline is None else f"{fmt_number(r.baseline)} {r.unit}"
        if r.baseline is not None and r.baseline_name:
            base += f" ({r.baseline_name})"
        ratio = "—" if r.ratio is None else f"{r.ratio:.0%}"
        target = "—" if r.target is None else r.target.describe(r.unit)
        met = {None: "—", True: "yes", False: "**no**"}[r.met]
        lines.append(f"| {r.name} | {fmt_number(r.value)} {r.unit} | {base} | {ratio} | {target} | {met} |")
        if r.notes:
            footnotes.append(f"- *{r.name}*: {r.notes}")
    if footnotes:
        lines += ["", *footnotes]
    if notes.strip():
        lines += ["", notes.strip()]
    lines += [f"<!-- /section:{name} -->", ""]
    return "\n".join(lines) + "\n"


def write_report(path: Path, blocks: dict[str, str], order: Iterable[str]) -> None:
    """Rewrite the report: fresh blocks for the sections just run, previous blocks for the others."""
    previous: dict[str, str] = {}
    if path.exists():
        previous = {m["name"]: m.group(0) for m in _BLOCK.finditer(path.read_text())}
    merged = {**previous, **blocks}
    ordered = [n for n in order if n in merged] + sorted(n for n in merged if n not in order)
    text = HEADER + "\n" + "\n\n".join(merged[n].strip() for n in ordered) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def summary_line(result: Result) -> str:
    met = {None: "", True: "  [met]", False: "  [NOT met]"}[result.met]
    base = ""
    if result.baseline is not None:
        base = f"  (baseline {fmt_number(result.baseline)}, ratio {result.ratio or 0:.0%})"
    return f"  {result.name}: {fmt_number(result.value)} {result.unit}{base}{met}"


def as_dict(result: Result) -> dict[str, Any]:
    return {"name": result.name, "value": result.value, "unit": result.unit, "baseline": result.baseline,
            "baseline_name": result.baseline_name, "ratio": result.ratio, "met": result.met,
            "target": None if result.target is None else result.target.describe(result.unit),
            "notes": result.notes}


# -- CPU accounting of the processes under test ---------------------------------------------------

def broker_process() -> psutil.Process | None:
    """The Kafka broker: the one scripts/services.sh started for this checkout, else a local `kafka.Kafka`
    JVM (a broker started from another checkout); None when there is none to see."""
    try:
        return psutil.Process(int((ROOT / "var" / "kafka" / "kafka.pid").read_text().strip()))
    except (OSError, ValueError, psutil.Error):
        return _find_process(lambda p: p.info["name"] == "java" and "kafka.Kafka" in (p.info["cmdline"] or []))


def postgres_process() -> psutil.Process | None:
    """The PostgreSQL postmaster (its backends are its children): the one scripts/services.sh started for
    this checkout, else a local one; None when there is none to see."""
    try:
        first = (ROOT / "var" / "pg" / "data" / "postmaster.pid").read_text().split("\n", 1)[0]
        return psutil.Process(int(first.strip()))
    except (OSError, ValueError, psutil.Error):
        return _find_process(lambda p: p.info["name"] == "postgres" and _parent_name(p) != "postgres")


def _parent_name(proc: psutil.Process) -> str | None:
    try:
        parent = proc.parent()
        return parent.name() if parent is not None else None
    except psutil.Error:
        return None


def _find_process(match: Callable[[psutil.Process], bool]) -> psutil.Process | None:
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            if match(proc):
                return proc
        except psutil.Error:
            continue
    return None


def cpu_seconds(proc: psutil.Process | None, *, children: bool = True) -> float:
    """User + system CPU time of a process and (unless `children` is False) its live children (uvicorn
    workers, PostgreSQL backends); 0 when the process is gone or unknown."""
    if proc is None:
        return 0.0
    try:
        family = [proc, *proc.children(recursive=True)] if children else [proc]
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in family:
        try:
            times = p.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total
