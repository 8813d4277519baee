"""Silences: "do not notify about this account (these risk types) until ..." (docs/api.md)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from shared.risks import RISK_TYPES, RiskEvent


@dataclass(frozen=True)
class Silence:
    id: str
    account_id: str
    types: frozenset[str]       # empty: every risk type
    until: datetime
    reason: str
    created_by: str
    created_at: datetime | None = field(default=None, compare=False)

    def matches(self, risk: RiskEvent, now: datetime) -> bool:
        return (now < self.until and risk.account_id == self.account_id
                and (not self.types or risk.type in self.types))


def validate_silence(account_id: str, types: Iterable[str], until: datetime, reason: str, *,
                     now: datetime) -> frozenset[str]:
    """Checks a silence request; returns the normalised type set. Raises ValueError naming the field."""
    if not account_id or len(account_id) > 128:
        raise ValueError("account_id: must be 1-128 characters")
    type_set = frozenset(types)
    unknown = sorted(type_set.difference(RISK_TYPES))
    if unknown:
        raise ValueError(f"types: unknown risk type(s) {', '.join(map(repr, unknown))} (expected "
                         f"{', '.join(sorted(RISK_TYPES))}; empty means all)")
    if until.tzinfo is None or until.utcoffset() is None:
        raise ValueError("until: must carry a timezone offset")
    if until <= now:
        raise ValueError("until: must be in the future")
    if not reason.strip():
        raise ValueError("reason: must not be empty")
    return type_set


def matching_silence(silences: Iterable[Silence], risk: RiskEvent, now: datetime) -> Silence | None:
    """The active silence covering `risk` (the one lasting longest), if any."""
    active = [s for s in silences if s.matches(risk, now)]
    return max(active, key=lambda s: s.until) if active else None


def is_silenced(silences: Iterable[Silence], risk: RiskEvent, now: datetime) -> bool:
    return matching_silence(silences, risk, now) is not None
