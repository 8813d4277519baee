"""What a chaos case found, and `docs/reliability.md` rendered from it.

Pure: no services, no I/O beyond writing the file, so the rendering is tested on made-up counts
(`tests/shared/test_chaos_report.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

# The counts every case reports in the summary table, in this order; a case leaves out what it does not
# exercise (the alerts-only cases ingest no events).
SUMMARY = (
    ("events_in", "events in"),
    ("events_scored", "events scored"),
    ("events_missing", "events missing"),
    ("events_duplicated", "events applied twice"),
    ("notifications_expected", "notifications expected"),
    ("notifications_received", "received"),
    ("notifications_duplicated", "duplicated"),
)


@dataclass(slots=True)
class Sample:
    """One soak sample: seconds since the load started, RSS by service (bytes), rows and bytes by table."""

    at_s: float
    rss: dict[str, int]
    rows: dict[str, int]
    sizes: dict[str, int]


@dataclass(slots=True)
class CaseResult:
    """What one case found: its counts (ordered, label -> value), whether it held, and why not."""

    name: str
    title: str
    what: str                                  # what the case does, one paragraph
    counts: dict[str, int | float | str] = field(default_factory=dict)
    summary: dict[str, int] = field(default_factory=dict)  # keys of SUMMARY
    findings: list[str] = field(default_factory=list)      # each a broken expectation, with its evidence
    notes: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None                   # the case could not run to the end
    seconds: float = 0.0

    @property
    def held(self) -> bool:
        return self.error is None and not self.findings

    def verdict(self) -> str:
        if self.error is not None:
            return "**did not complete**"
        return "held" if not self.findings else f"**{len(self.findings)} finding(s)**"


# ------------------------------------------------------------------------------------------ soak trend
def growth_by_third(values: Sequence[float]) -> tuple[float, float] | None:
    """(growth over the first third of the samples, growth over the last third), None under 6 samples."""
    n = len(values)
    if n < 6:
        return None
    third = n // 3
    return values[third] - values[0], values[-1] - values[n - 1 - third]


def trend(values: Sequence[float]) -> str:
    """Whether a series levels off: its last third grows at most half as much as its first third (or by
    under 2% of its final value)."""
    growth = growth_by_third(values)
    if growth is None:
        return "too few samples to tell"
    first, last = growth
    if last <= 0 or last <= 0.02 * max(values[-1], 1):
        return "levels off"
    if first > 0 and last <= 0.5 * first:
        return f"levels off (last third grew {last / first:.0%} of the first third's growth)"
    if first <= 0:
        return "still grows (flat at first, growing at the end)"
    return f"still grows (last third grew {last / first:.0%} of the first third's growth)"


def _mib(n: float) -> str:
    return f"{n / 1024 / 1024:,.1f}"


def _fmt(value: int | float | str) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return value


def render_samples(samples: Sequence[Sample]) -> list[str]:
    if not samples:
        return ["No samples were taken."]
    services = list(samples[0].rss)
    tables = list(samples[0].sizes)
    head = ["t (s)", *(f"{s} RSS (MiB)" for s in services), *(f"{t} rows / MiB" for t in tables)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for s in samples:
        cells = [f"{s.at_s:,.0f}", *(_mib(s.rss.get(name, 0)) for name in services),
                 *(f"{s.rows.get(t, 0):,} / {_mib(s.sizes.get(t, 0))}" for t in tables)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| series | first | last | trend |", "|---|---:|---:|---|"]
    for name in services:
        values = [float(s.rss.get(name, 0)) for s in samples]
        lines.append(f"| {name} RSS | {_mib(values[0])} MiB | {_mib(values[-1])} MiB | {trend(values)} |")
    for t in tables:
        values = [float(s.rows.get(t, 0)) for s in samples]
        lines.append(f"| {t} rows | {values[0]:,.0f} | {values[-1]:,.0f} | {trend(values)} |")
        values = [float(s.sizes.get(t, 0)) for s in samples]
        lines.append(f"| {t} size | {_mib(values[0])} MiB | {_mib(values[-1])} MiB | {trend(values)} |")
    return lines


# ----------------------------------------------------------------------------------------------- report
HEADER = """# Reliability

What happens to events and notifications when the broker, the database, the alerts process or Slack
fail under load. Measured by `make chaos` (`python -m chaos`) against a real Kafka broker and PostgreSQL
of its own, on loopback: a second instance of `scripts/services.sh` on free ports under `var/chaos/`
(`chaos/services.py`), started for the run and deleted after it, so the shared servers of `make services`
are never stopped. The services run as `churnsignal serve` processes on topics and a database of their
own; the broker and the database are stopped and started with `scripts/services.sh`; Slack is the local
stand-in of `tests/support/slack.py`. Every case counts what went in and what came out; a *finding* is an
expectation that did not hold, with its evidence. The whole file is rewritten by each run.
"""


def render(results: Iterable[CaseResult], *, machine: dict[str, str], when: datetime, command: str,
           soak_minutes: float, documented_soak_minutes: float) -> str:
    results = list(results)
    lines = [HEADER,
             f"Generated {when:%Y-%m-%d %H:%M} UTC by `{command}` on {machine['cpu']}, {machine['cores']}, "
             f"{machine['memory']} RAM, {machine['os']}, Python {machine['python']}, commit "
             f"{machine['commit']}.", ""]
    if soak_minutes != documented_soak_minutes and any(r.name == "soak" for r in results):
        lines += [f"The documented command soaks for {documented_soak_minutes:g} minutes; this file comes from "
                  f"a {soak_minutes:g}-minute soak (`--soak-minutes {soak_minutes:g}`).", ""]
    lines += ["## Summary", "",
              "| case | " + " | ".join(label for _, label in SUMMARY) + " | verdict |",
              "|---|" + "---:|" * len(SUMMARY) + "---|"]
    for r in results:
        cells = [_fmt(r.summary[key]) if key in r.summary else "—" for key, _ in SUMMARY]
        lines.append(f"| {r.title} | " + " | ".join(cells) + f" | {r.verdict()} |")
    for r in results:
        lines += ["", f"## {r.title}", "", r.what.strip(), ""]
        if r.counts:
            lines += ["| count | value |", "|---|---:|"]
            lines += [f"| {label} | {_fmt(value)} |" for label, value in r.counts.items()]
            lines.append("")
        if r.samples:
            lines += render_samples(r.samples)
            lines.append("")
        if r.error is not None:
            lines += [f"**Did not complete:** {r.error}", ""]
        if r.findings:
            lines += ["**Findings:**", ""] + [f"- {f}" for f in r.findings] + [""]
        elif r.error is None:
            lines += ["Every expectation held.", ""]
        if r.notes:
            lines += [f"- {n}" for n in r.notes] + [""]
        lines.append(f"Ran {r.seconds:,.0f} s.")
    return "\n".join(lines).rstrip() + "\n"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
