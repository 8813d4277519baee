"""What a simulation is made of: its parameters, the generated events and the ground truth."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

STORIES: dict[str, tuple[str, ...]] = {
    # story -> risk types that evidence it (the first is the one the story is written for)
    "champion_left": ("champion_left", "champion_inactive"),
    "usage_fade": ("usage_drop", "health_drop"),
    "ticket_storm": ("ticket_spike",),
    "detractor_nps": ("sentiment_drop",),
    "renewal_at_risk": ("renewal_risk", "health_drop", "usage_drop", "sentiment_drop"),
    "champion_inactive": ("champion_inactive",),
}


@dataclass(frozen=True)
class SimulationParams:
    """Everything the generator depends on: the same parameters always give the same events.

    The timeline is `history_days + live_days` long and ends at `now`: every event lies in the past.
    The history is sent as a backfill, the live tail is streamed at a speed-up by the player.
    """

    now: datetime
    seed: int = 42
    accounts: int = 200
    history_days: float = 60.0
    live_days: float = 14.0
    churn_rate: float = 0.12
    account_prefix: str = "sim-"
    # Stories start once this much history exists (baselines need a few weeks of data).
    baseline_days: float = 35.0

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if self.accounts < 1:
            raise ValueError("accounts must be at least 1")
        if self.history_days < 1 or self.live_days < 0:
            raise ValueError("history_days must be >= 1 and live_days >= 0")
        if not 0 <= self.churn_rate <= 1:
            raise ValueError("churn_rate must be within 0..1")

    @property
    def end(self) -> datetime:
        return self.now.astimezone(UTC)

    @property
    def start(self) -> datetime:
        return self.end - timedelta(days=self.history_days + self.live_days)

    @property
    def live_from(self) -> datetime:
        return self.end - timedelta(days=self.live_days)


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One generated event: its event time (for pacing) and the JSON body sent to ingest."""

    at: datetime
    body: dict[str, Any]


@dataclass(frozen=True)
class ScriptedChurn:
    account_id: str
    account_name: str
    story: str
    signal_start: datetime          # event time the story's signal starts
    expected_risks: tuple[str, ...]  # risk types that count as catching it
    detail: str                      # one line: what happens

    def to_dict(self) -> dict[str, Any]:
        return {"account_id": self.account_id, "account_name": self.account_name, "story": self.story,
                "signal_start": self.signal_start.isoformat(), "expected_risks": list(self.expected_risks),
                "detail": self.detail}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ScriptedChurn:
        return cls(raw["account_id"], raw["account_name"], raw["story"],
                   datetime.fromisoformat(raw["signal_start"]), tuple(raw["expected_risks"]), raw["detail"])


@dataclass(frozen=True)
class GroundTruth:
    """Which accounts were scripted to churn, how and from when; every other account is healthy."""

    seed: int
    start: datetime
    live_from: datetime
    end: datetime
    evaluate_from: datetime          # risks on healthy accounts before this are warm-up, not false alarms
    accounts: tuple[str, ...]
    churners: tuple[ScriptedChurn, ...]
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> tuple[str, ...]:
        churning = {c.account_id for c in self.churners}
        return tuple(a for a in self.accounts if a not in churning)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed, "start": self.start.isoformat(), "live_from": self.live_from.isoformat(),
            "end": self.end.isoformat(), "evaluate_from": self.evaluate_from.isoformat(),
            "parameters": self.parameters, "accounts": list(self.accounts),
            "churners": [c.to_dict() for c in self.churners],
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GroundTruth:
        return cls(
            seed=raw["seed"], start=datetime.fromisoformat(raw["start"]),
            live_from=datetime.fromisoformat(raw["live_from"]), end=datetime.fromisoformat(raw["end"]),
            evaluate_from=datetime.fromisoformat(raw["evaluate_from"]), accounts=tuple(raw["accounts"]),
            churners=tuple(ScriptedChurn.from_dict(c) for c in raw["churners"]),
            parameters=dict(raw.get("parameters", {})),
        )
