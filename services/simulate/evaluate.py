"""Scoring a run against its ground truth: which scripted churners were caught, how fast, and at what cost.

Pure: takes the ground truth and the risk events (anything with `account_id`, `type`, `transition` and
`occurred_at`, such as `shared.risks.RiskEvent`, the scoring domain's `RiskTransition`, or their dicts).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from services.simulate.model import GroundTruth, ScriptedChurn


class RiskLike(Protocol):
    account_id: str
    type: str
    transition: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class _Risk:
    account_id: str
    type: str
    transition: str
    occurred_at: datetime


@dataclass(frozen=True)
class Detection:
    churn: ScriptedChurn
    risk_type: str | None = None          # the first expected risk raised at or after the signal start
    occurred_at: datetime | None = None   # its event time

    @property
    def caught(self) -> bool:
        return self.occurred_at is not None

    @property
    def delay(self) -> timedelta | None:
        return None if self.occurred_at is None else self.occurred_at - self.churn.signal_start


@dataclass(frozen=True)
class Summary:
    detections: tuple[Detection, ...]         # one per scripted churner
    healthy_accounts: int
    false_alarms: dict[str, tuple[str, ...]]  # healthy account -> risk types opened in the evaluation window
    warmup_risks: int                         # risks opened before the evaluation window (baselines forming)
    risks_by_type: dict[str, int]             # every opened risk, by type
    not_started: int = 0                      # stories whose signal lay beyond the event time reached

    @property
    def caught(self) -> tuple[Detection, ...]:
        return tuple(d for d in self.detections if d.caught)

    @property
    def missed(self) -> tuple[Detection, ...]:
        return tuple(d for d in self.detections if not d.caught)

    @property
    def false_alarm_rate(self) -> float:
        return len(self.false_alarms) / self.healthy_accounts if self.healthy_accounts else 0.0

    @property
    def delays(self) -> list[timedelta]:
        return sorted(d.delay for d in self.detections if d.delay is not None)

    @property
    def median_delay(self) -> timedelta | None:
        delays = self.delays
        return statistics.median(delays) if delays else None

    def by_story(self) -> dict[str, tuple[int, int]]:
        """story -> (caught, scripted)."""
        out: dict[str, tuple[int, int]] = {}
        for d in self.detections:
            caught, total = out.get(d.churn.story, (0, 0))
            out[d.churn.story] = (caught + d.caught, total + 1)
        return out

    def lines(self, max_missed: int = 5) -> list[str]:
        """A short, readable report."""
        risks = ", ".join(f"{t} {n}" for t, n in sorted(self.risks_by_type.items(), key=lambda kv: -kv[1]))
        stories = ", ".join(f"{s} {c}/{t}" for s, (c, t) in sorted(self.by_story().items()))
        later = ""
        if self.not_started:
            later = f"; {self.not_started} more stories had not started when it stopped"
        out = [
            f"risks raised: {sum(self.risks_by_type.values())}" + (f" ({risks})" if risks else ""),
            f"scripted churners caught: {len(self.caught)}/{len(self.detections)}"
            + (f" ({stories})" if stories else "")
            + later,
            f"false alarms on healthy accounts: {len(self.false_alarms)}/{self.healthy_accounts} "
            f"({self.false_alarm_rate:.1%})"
            + (f", plus {self.warmup_risks} risks during the warm-up" if self.warmup_risks else ""),
            f"median detection delay (event time): {format_delay(self.median_delay)}",
        ]
        missed = self.missed
        for d in missed[:max_missed]:
            out.append(f"  missed {d.churn.account_id} ({d.churn.account_name}): {d.churn.story}, "
                       f"from {d.churn.signal_start:%Y-%m-%d %H:%M} UTC")
        if len(missed) > max_missed:
            out.append(f"  ... and {len(missed) - max_missed} more missed")
        return out


def format_delay(delay: timedelta | None) -> str:
    if delay is None:
        return "n/a"
    hours = delay.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} h"


def _risk(obj: RiskLike | Mapping[str, Any]) -> _Risk:
    if isinstance(obj, Mapping):
        at = obj["occurred_at"]
        return _Risk(obj["account_id"], obj["type"], obj["transition"],
                     at if isinstance(at, datetime) else datetime.fromisoformat(at))
    return _Risk(obj.account_id, obj.type, obj.transition, obj.occurred_at)


def score_against_truth(truth: GroundTruth, risk_events: Iterable[RiskLike | Mapping[str, Any]], *,
                        until: datetime | None = None) -> Summary:
    """Caught churners (an expected risk opened or escalated at/after the signal start), false alarms
    (healthy accounts with a risk opened from `truth.evaluate_from` on) and detection delays.

    `until`: the event time a stopped run had reached; stories starting later are left out (counted in
    `not_started`) rather than reported as missed.
    """
    risks = sorted((_risk(r) for r in risk_events), key=lambda r: r.occurred_at)
    scripted = [c for c in truth.churners if until is None or c.signal_start <= until]
    churners = {c.account_id: c for c in scripted}
    healthy = set(truth.healthy)
    first: dict[str, _Risk] = {}
    false_alarms: dict[str, list[str]] = {}
    by_type: Counter[str] = Counter()
    warmup = 0
    for r in risks:
        if r.transition == "opened":
            by_type[r.type] += 1
        churn = churners.get(r.account_id)
        if churn is not None:
            if (r.account_id not in first and r.transition in ("opened", "updated")
                    and r.type in churn.expected_risks and r.occurred_at >= churn.signal_start):
                first[r.account_id] = r
            continue
        if r.account_id in healthy and r.transition == "opened":
            if r.occurred_at < truth.evaluate_from:
                warmup += 1
            else:
                false_alarms.setdefault(r.account_id, []).append(r.type)
    detections = tuple(
        Detection(c, first[c.account_id].type, first[c.account_id].occurred_at) if c.account_id in first
        else Detection(c) for c in scripted
    )
    return Summary(detections, len(healthy), {a: tuple(t) for a, t in sorted(false_alarms.items())}, warmup,
                   dict(by_type), len(truth.churners) - len(scripted))
