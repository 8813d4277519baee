"""A tiny scoring model with the domain's interface, to exercise the service's plumbing on its own.

Rules (deliberately simple and deterministic):
- score = 100 - 15 * tickets opened in the last 7 days (event time), floored at 0; tier by 70/40;
- `ticket_spike` opens at 3 tickets in 7 days, is updated (severity critical) at 5, resolves below 3;
- `usage_drop` opens when an account is silent for 3 days (a clock timer: next_due = last event + 3 days),
  and resolves at its next event;
- an event whose data has `"explode": true` makes `apply` raise (a poison event).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from services.scoring.domain.clock import PartitionClock
from services.scoring.entrypoints.ports import ScoringModel
from shared.events import Event, EventType
from shared.risks import AccountBrief

VERSION = "fake-1"
WINDOW = timedelta(days=7)
SILENCE = timedelta(days=3)


@dataclass
class FakeState:
    account_id: str
    name: str | None = None
    tickets: list[float] = field(default_factory=list)      # opened-at epoch seconds
    last_event: float | None = None
    clock: float | None = None
    last_score: float | None = None
    risks: dict[str, list[Any]] = field(default_factory=dict)  # type -> [risk_id, seq, severity, opened]


@dataclass(frozen=True)
class FakeComponent:
    name: str
    score: float | None
    weight: float
    contribution: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "score": self.score, "weight": self.weight,
                "contribution": self.contribution, "reason": self.reason}


@dataclass(frozen=True)
class FakeSnapshot:
    account_id: str
    score: float | None
    tier: str
    as_of: datetime
    config_version: str
    components: tuple[FakeComponent, ...]
    deltas: tuple[dict[str, Any], ...] = ()
    cause: str | None = "clock"

    def reasons(self, n: int = 3) -> list[str]:
        return [f"{c.name}: {c.reason}" for c in self.components][:n]

    def to_dict(self) -> dict[str, Any]:
        return {"account_id": self.account_id, "score": self.score, "tier": self.tier,
                "components": [c.to_dict() for c in self.components], "as_of": self.as_of.isoformat(),
                "config_version": self.config_version, "deltas": list(self.deltas), "cause": self.cause,
                "reasons": self.reasons()}


@dataclass(frozen=True)
class FakeTransition:
    risk_id: str
    seq: int
    transition: str
    account_id: str
    type: str
    severity: str
    summary: str
    evidence: dict[str, Any]
    occurred_at: datetime
    trigger_event_id: str | None
    health: FakeSnapshot


@dataclass
class FakeOutcome:
    health: FakeSnapshot | None
    transitions: list[FakeTransition]
    next_due: datetime | None


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class FakeEngine:
    def new_state(self, account_id: str) -> FakeState:
        return FakeState(account_id)

    def apply(self, state: FakeState, event: Event) -> FakeOutcome:
        data = event.data.model_dump()
        if data.get("explode"):
            raise RuntimeError("this event cannot be scored")
        ts = event.occurred_at.timestamp()
        if event.type == EventType.ACCOUNT and data.get("name"):
            state.name = data["name"]
        if event.type == EventType.TICKET and data.get("status") == "opened":
            state.tickets.append(ts)
        state.last_event = ts if state.last_event is None else max(state.last_event, ts)
        state.clock = ts if state.clock is None else max(state.clock, ts)
        transitions: list[FakeTransition] = []
        if "usage_drop" in state.risks:
            transitions.append(self._move(state, "usage_drop", "resolved", "high", ts, event.id, {}))
        return self._evaluate(state, state.clock, event.id, transitions)

    def evaluate(self, state: FakeState, at: datetime) -> FakeOutcome:
        ts = at.timestamp()
        state.clock = ts if state.clock is None else max(state.clock, ts)
        transitions: list[FakeTransition] = []
        if (state.last_event is not None and ts - state.last_event >= SILENCE.total_seconds()
                and "usage_drop" not in state.risks):
            days = round((ts - state.last_event) / 86400)
            transitions.append(self._move(state, "usage_drop", "opened", "high", ts, None,
                                          {"silent_days": days}))
        return self._evaluate(state, ts, None, transitions)

    def _evaluate(self, state: FakeState, ts: float, cause: str | None,
                  transitions: list[FakeTransition]) -> FakeOutcome:
        recent = sum(1 for t in state.tickets if ts - WINDOW.total_seconds() < t <= ts)
        open_spike = "ticket_spike" in state.risks
        if recent >= 3 and not open_spike:
            severity = "critical" if recent >= 5 else "high"
            transitions.append(self._move(state, "ticket_spike", "opened", severity, ts, cause,
                                          {"opened_7d": recent}))
        elif recent >= 5 and open_spike and state.risks["ticket_spike"][2] != "critical":
            transitions.append(self._move(state, "ticket_spike", "updated", "critical", ts, cause,
                                          {"opened_7d": recent}))
        elif recent < 3 and open_spike:
            transitions.append(self._move(state, "ticket_spike", "resolved", state.risks["ticket_spike"][2],
                                          ts, cause, {"opened_7d": recent}))
        snap = self._snapshot(state, ts, cause)
        changed = snap.score != state.last_score
        previous = state.last_score
        state.last_score = snap.score
        health = None
        if changed:
            delta = (snap.score or 0) - (previous or 0)
            deltas = ({"component": "support_load", "change": delta,
                       "reason": f"{delta:+.0f}: {recent} tickets in 7 days"},)
            health = FakeSnapshot(snap.account_id, snap.score, snap.tier, snap.as_of, VERSION,
                                  snap.components, deltas, cause)
        # The health of a transition is the snapshot after the change.
        transitions = [FakeTransition(t.risk_id, t.seq, t.transition, t.account_id, t.type, t.severity,
                                      t.summary, t.evidence, t.occurred_at, t.trigger_event_id, snap)
                       for t in transitions]
        due = None if state.last_event is None or "usage_drop" in state.risks else _dt(
            state.last_event + SILENCE.total_seconds())
        return FakeOutcome(health, transitions, due)

    def _move(self, state: FakeState, kind: str, transition: str, severity: str, ts: float,
              cause: str | None, evidence: dict[str, Any]) -> FakeTransition:
        if transition == "opened":
            risk_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{state.account_id}|{kind}|{ts}"))
            state.risks[kind] = [risk_id, 1, severity, ts]
        else:
            state.risks[kind][1] += 1
            state.risks[kind][2] = severity
        risk_id, seq = state.risks[kind][0], state.risks[kind][1]
        if transition == "resolved":
            del state.risks[kind]
        summary = {"ticket_spike": f"{evidence.get('opened_7d', 0)} tickets opened in the last 7 days",
                   "usage_drop": "The account has gone silent"}[kind]
        placeholder = self._snapshot(state, ts, cause)
        return FakeTransition(risk_id, seq, transition, state.account_id, kind, severity, summary, evidence,
                              _dt(ts), cause, placeholder)

    def _snapshot(self, state: FakeState, ts: float, cause: str | None) -> FakeSnapshot:
        recent = sum(1 for t in state.tickets if ts - WINDOW.total_seconds() < t <= ts)
        score = float(max(0, 100 - 15 * recent))
        tier = "green" if score >= 70 else "yellow" if score >= 40 else "red"
        component = FakeComponent("support_load", score, 1.0, score, f"{recent} tickets opened in 7 days")
        return FakeSnapshot(state.account_id, score, tier, _dt(ts), VERSION, (component,), (), cause)

    def snapshot(self, state: FakeState) -> FakeSnapshot:
        return self._snapshot(state, state.clock or 0.0, "current")

    def open_risks(self, state: FakeState) -> list[dict[str, Any]]:
        return [{"risk_id": r[0], "type": kind, "severity": r[2], "opened_at": _dt(r[3]).isoformat()}
                for kind, r in sorted(state.risks.items())]

    def account_brief(self, state: FakeState) -> AccountBrief:
        return AccountBrief(name=state.name)


def encode(state: FakeState) -> bytes:
    return orjson.dumps({"a": state.account_id, "n": state.name, "t": state.tickets, "l": state.last_event,
                         "c": state.clock, "s": state.last_score, "r": state.risks})


def decode(raw: bytes) -> FakeState:
    d = orjson.loads(raw)
    return FakeState(d["a"], d["n"], d["t"], d["l"], d["c"], d["s"], d["r"])


def fake_model() -> ScoringModel:
    return ScoringModel(engine=FakeEngine(), encode_state=encode, decode_state=decode,
                        new_clock=PartitionClock, config_version=VERSION)
