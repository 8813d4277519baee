"""What the scoring service needs from the pure domain (services/scoring/domain), as protocols.

The consumer and the read API are written against these, so the plumbing can be exercised with a small
stand-in model; `bootstrap.py` wires the real domain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from shared.events import Event
from shared.risks import AccountBrief

if TYPE_CHECKING:
    from services.scoring.adapters.portfolio_columns import PortfolioColumns
    from services.scoring.adapters.store import RevenueColumns


class Snapshot(Protocol):
    account_id: str
    score: float | None
    tier: str
    as_of: datetime
    config_version: str
    cause: str | None

    def reasons(self, n: int = ...) -> list[str]: ...

    def to_dict(self) -> dict[str, Any]: ...


class Transition(Protocol):
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
    health: Snapshot


class Outcome(Protocol):
    health: Snapshot | None
    transitions: Sequence[Transition]
    next_due: datetime | None


class Engine(Protocol):
    def new_state(self, account_id: str) -> Any: ...

    def apply(self, state: Any, event: Event) -> Outcome: ...

    def evaluate(self, state: Any, at: datetime) -> Outcome: ...

    def snapshot(self, state: Any) -> Snapshot: ...

    def open_risks(self, state: Any) -> list[dict[str, Any]]: ...

    def account_brief(self, state: Any) -> AccountBrief: ...


class Clock(Protocol):
    watermark: datetime | None

    def observe(self, occurred_at: datetime) -> None: ...

    def schedule(self, account_id: str, due: datetime | None) -> None: ...

    def pop_due(self) -> list[tuple[datetime, str]]: ...


def no_revenue(state: Any) -> RevenueColumns | None:
    """The revenue reader of a model whose states tell no revenue facts (their columns stay NULL)."""
    return None


def no_portfolio(state: Any) -> PortfolioColumns | None:
    """The portfolio reader of a model whose states tell no CSM, segment or renewal (NULL columns)."""
    return None


def no_previous_health(state: Any) -> tuple[float | None, str] | None:
    """The reader of a state's last recorded health, for a model that does not tell it."""
    return None


@dataclass(frozen=True)
class ScoringModel:
    """The domain pieces the service uses, bundled: engine, state codec, clock factory, and the reader of
    a state's revenue facts (stored beside the state for the revenue gauges)."""

    engine: Engine
    encode_state: Callable[[Any], bytes]
    decode_state: Callable[[bytes], Any]
    new_clock: Callable[[timedelta, datetime | None], Clock]
    config_version: str
    revenue: Callable[[Any], RevenueColumns | None] = no_revenue
    portfolio: Callable[[Any], PortfolioColumns | None] = no_portfolio
    # (score, tier) of the state's last recorded health snapshot, read before an event or a timer is applied:
    # what a health change on the health topic was before it (`previous`).
    previous_health: Callable[[Any], tuple[float | None, str] | None] = no_previous_health
