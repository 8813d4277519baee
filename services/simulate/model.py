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


class _Timeline:
    """The simulated timeline of a parameter set: `history_days + live_days` long, ending at `now`."""

    now: datetime
    history_days: float
    live_days: float

    @property
    def end(self) -> datetime:
        return self.now.astimezone(UTC)

    @property
    def start(self) -> datetime:
        return self.end - timedelta(days=self.history_days + self.live_days)

    @property
    def live_from(self) -> datetime:
        return self.end - timedelta(days=self.live_days)


@dataclass(frozen=True)
class SimulationParams(_Timeline):
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


# Sparse mode: the longest gap of an account that did not lapse stays this many days under `declare_after`.
PAUSE_MARGIN_DAYS = 7


@dataclass(frozen=True)
class SparseParams(_Timeline):
    """The sparse, purchase-like mode: accounts active only every few weeks, some of which lapse.

    The timeline is `history_days + live_days` long and ends at `now`, like `SimulationParams`'s.
    Each account has a usual gap between its active days ("visits"), drawn log-uniform within
    `gap_min_days .. gap_max_days`; `periodic_share` of the accounts keep a calendar cadence with a few
    days' jitter, the others have gamma-distributed gaps (shape log-uniform within 1 .. 8).
    An active account lapses (stops for good after a visit) with a constant hazard in time: it lapses
    within a year of activity with probability `lapse_rate`, whatever its rhythm. `slowdown_share` of the
    lapsing accounts space out their last visits first. `pause_rate` is the chance that a gap holds a pause
    (one visit skipped, or a two to four week break) after which the account resumes.
    A lapsed account is declared churned `declare_after_days` after its last activity (when that falls
    within the timeline); no gap of an account that did not lapse is that long.
    """

    now: datetime
    seed: int = 42
    accounts: int = 200
    history_days: float = 730.0
    live_days: float = 0.0
    account_prefix: str = "sim-"
    gap_min_days: float = 14.0
    gap_max_days: float = 84.0
    periodic_share: float = 0.4
    lapse_rate: float = 0.35
    slowdown_share: float = 0.25
    pause_rate: float = 0.05
    declare_after_days: float = 180.0
    # Accounts that are customers already when the timeline begins (the others sign up during it).
    existing_share: float = 0.35

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if self.accounts < 1:
            raise ValueError("accounts must be at least 1")
        if self.history_days < 14 or self.live_days < 0:
            raise ValueError("history_days must be >= 14 and live_days >= 0")
        if not 2 <= self.gap_min_days <= self.gap_max_days:
            raise ValueError("the usual gap range must satisfy 2 <= min <= max (days)")
        if self.declare_after_days < 2 * self.gap_max_days + PAUSE_MARGIN_DAYS:
            raise ValueError(f"declare_after_days must be at least twice the largest usual gap plus "
                             f"{PAUSE_MARGIN_DAYS} days (an account that did not lapse is never silent that long)")
        for name in ("periodic_share", "slowdown_share", "pause_rate", "existing_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be within 0..1")
        if not 0 <= self.lapse_rate < 1:
            raise ValueError("lapse_rate must be within 0..1 (1 excluded)")


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


def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


@dataclass(frozen=True)
class SparseAccountTruth:
    """One account of the sparse mode: its rhythm, its pauses, and whether and when it lapsed.

    `lapsed`: the account stopped for good and its last activity lies within the timeline (an account
    whose last visit would fall after the end is active as far as the timeline can tell).
    `declared_at` is `last_activity + declare_after` for a lapsed account (it may lie after the end);
    `churned_at` is the same when it lies within the timeline, i.e. when the account event with
    `lifecycle = churned` was emitted (the outcome a backtest reads), else None.
    """

    account_id: str
    account_name: str
    purpose: str                     # billing_run | reporting | planning | repeat_purchase
    first_seen: datetime             # its first account event
    usual_gap_days: float            # the cadence (periodic) or the mean gap (irregular)
    regularity: str                  # periodic | irregular
    gamma_shape: float | None        # irregular: the shape of its gamma-distributed gaps
    jitter_days: int | None          # periodic: visits move up to this many days off the cadence
    visits: int                      # visits within the timeline
    last_activity: datetime | None   # its last usage event within the timeline
    lapsed: bool
    slowed_down: bool                # lapsed, and its last gaps grew longer first
    declared_at: datetime | None
    churned_at: datetime | None
    pauses: tuple[tuple[datetime, datetime], ...] = ()   # (last activity before, first activity after)

    def to_dict(self) -> dict[str, Any]:
        return {"account_id": self.account_id, "account_name": self.account_name, "purpose": self.purpose,
                "first_seen": self.first_seen.isoformat(), "usual_gap_days": self.usual_gap_days,
                "regularity": self.regularity, "gamma_shape": self.gamma_shape,
                "jitter_days": self.jitter_days, "visits": self.visits,
                "last_activity": _iso(self.last_activity), "lapsed": self.lapsed,
                "slowed_down": self.slowed_down, "declared_at": _iso(self.declared_at),
                "churned_at": _iso(self.churned_at),
                "pauses": [[a.isoformat(), b.isoformat()] for a, b in self.pauses]}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SparseAccountTruth:
        return cls(raw["account_id"], raw["account_name"], raw["purpose"],
                   datetime.fromisoformat(raw["first_seen"]), raw["usual_gap_days"], raw["regularity"],
                   raw.get("gamma_shape"), raw.get("jitter_days"), raw["visits"],
                   _moment(raw.get("last_activity")), raw["lapsed"], raw.get("slowed_down", False),
                   _moment(raw.get("declared_at")), _moment(raw.get("churned_at")),
                   tuple((datetime.fromisoformat(a), datetime.fromisoformat(b))
                         for a, b in raw.get("pauses", [])))


@dataclass(frozen=True)
class GroundTruth:
    """Which accounts were scripted to churn, how and from when; every other account is healthy.

    In the sparse mode (`mode == "sparse"`) nothing is scripted (`churners` is empty): `sparse` holds
    every account's rhythm and whether and when it lapsed. The dense mode's JSON is unchanged.
    """

    seed: int
    start: datetime
    live_from: datetime
    end: datetime
    evaluate_from: datetime          # risks on healthy accounts before this are warm-up, not false alarms
    accounts: tuple[str, ...]
    churners: tuple[ScriptedChurn, ...]
    parameters: dict[str, Any] = field(default_factory=dict)
    mode: str = "dense"
    sparse: tuple[SparseAccountTruth, ...] = ()

    @property
    def lapsed(self) -> tuple[SparseAccountTruth, ...]:
        """Sparse mode: the accounts that stopped for good within the timeline."""
        return tuple(a for a in self.sparse if a.lapsed)

    @property
    def healthy(self) -> tuple[str, ...]:
        churning = {c.account_id for c in self.churners}
        return tuple(a for a in self.accounts if a not in churning)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "seed": self.seed, "start": self.start.isoformat(), "live_from": self.live_from.isoformat(),
            "end": self.end.isoformat(), "evaluate_from": self.evaluate_from.isoformat(),
            "parameters": self.parameters, "accounts": list(self.accounts),
            "churners": [c.to_dict() for c in self.churners],
        }
        if self.mode != "dense":
            out["mode"] = self.mode
            out["sparse_accounts"] = [a.to_dict() for a in self.sparse]
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> GroundTruth:
        return cls(
            seed=raw["seed"], start=datetime.fromisoformat(raw["start"]),
            live_from=datetime.fromisoformat(raw["live_from"]), end=datetime.fromisoformat(raw["end"]),
            evaluate_from=datetime.fromisoformat(raw["evaluate_from"]), accounts=tuple(raw["accounts"]),
            churners=tuple(ScriptedChurn.from_dict(c) for c in raw["churners"]),
            parameters=dict(raw.get("parameters", {})), mode=raw.get("mode", "dense"),
            sparse=tuple(SparseAccountTruth.from_dict(a) for a in raw.get("sparse_accounts", [])),
        )
