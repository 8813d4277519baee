"""What the scoring domain produces: health snapshots with their components and deltas, risk transitions."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.risks import HealthBrief


@dataclass(frozen=True, slots=True)
class Component:
    """One part of the health score. `score` is None when the data to judge it is missing."""

    name: str
    score: float | None
    weight: float              # effective weight after re-weighting the known components (0 when unknown)
    contribution: float        # points of the total score (weight * score)
    reason: str                # one line a CSM understands
    configured_weight: float = 0.0
    label: str = ""            # short phrase used in deltas ("ticket spike (9 opened in 7 days)")

    @property
    def known(self) -> bool:
        return self.score is not None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "score": self.score, "weight": self.weight,
                "contribution": self.contribution, "reason": self.reason,
                "configured_weight": self.configured_weight}


@dataclass(frozen=True, slots=True)
class Delta:
    """How much one component moved the total score since the previous snapshot."""

    component: str
    change: float              # points of the total score
    reason: str                # e.g. "−12: ticket spike (9 opened in 7 days)"

    def to_dict(self) -> dict[str, Any]:
        return {"component": self.component, "change": self.change, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    account_id: str
    score: float | None
    tier: str                  # green | yellow | red | unknown
    components: tuple[Component, ...]
    as_of: datetime            # event time
    config_version: str
    deltas: tuple[Delta, ...] = ()
    cause: str = "clock"       # the event id that caused it, "clock", or "current" (read API)

    def reasons(self, n: int = 3) -> list[str]:
        """The main reasons, most important first: the known components that cost the most points."""
        known = [c for c in self.components if c.score is not None]
        known.sort(key=lambda c: (-(c.weight * (100.0 - (c.score or 0.0))), -c.weight, c.name))
        out = [f"{c.name.replace('_', ' ')}: {c.reason}" for c in known[:n]]
        if len(out) < n:
            out.extend(f"{c.name.replace('_', ' ')}: {c.reason}" for c in self.components
                       if c.score is None)
        return out[:n]

    def brief(self, n: int = 3) -> HealthBrief:
        return HealthBrief(score=self.score, tier=self.tier, reasons=self.reasons(n))  # type: ignore[arg-type]

    def component(self, name: str) -> Component:
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"account_id": self.account_id, "score": self.score, "tier": self.tier,
                "components": [c.to_dict() for c in self.components], "as_of": self.as_of.isoformat(),
                "config_version": self.config_version, "deltas": [d.to_dict() for d in self.deltas],
                "cause": self.cause, "reasons": self.reasons()}


@dataclass(frozen=True, slots=True)
class RiskTransition:
    risk_id: str               # uuid5 of account_id|type|opened-at event time|opening number
    seq: int                   # 1 = opened, +1 per later transition of the same risk
    transition: str            # opened | updated | resolved
    account_id: str
    type: str
    severity: str
    summary: str
    evidence: dict[str, Any]
    occurred_at: datetime      # event time
    trigger_event_id: str | None
    health: HealthSnapshot

    @property
    def event_id(self) -> str:
        return f"{self.risk_id}:{self.seq}"

    def to_dict(self) -> dict[str, Any]:
        return {"risk_id": self.risk_id, "seq": self.seq, "transition": self.transition,
                "account_id": self.account_id, "type": self.type, "severity": self.severity,
                "summary": self.summary, "evidence": self.evidence,
                "occurred_at": self.occurred_at.isoformat(), "trigger_event_id": self.trigger_event_id,
                "health": {"score": self.health.score, "tier": self.health.tier,
                           "reasons": self.health.reasons()}}


@dataclass(slots=True)
class Outcome:
    health: HealthSnapshot | None      # a new snapshot when the health changed significantly, else None
    transitions: list[RiskTransition] = field(default_factory=list)
    next_due: datetime | None = None   # when to evaluate the account next if no event arrives
