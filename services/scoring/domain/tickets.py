"""The ticket signal: tickets opened up to the moment evaluated, against the account's own baseline,
and the open tickets by priority."""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import ScoringConfig
from .state import NONE, AccountState
from .usage import _days


@dataclass(slots=True)
class TicketSignal:
    known: bool = False
    opened_recent: int = 0
    opened_burst: list[int] = field(default_factory=list)  # opened in the last 1, 2, ... burst_days days
    baseline: float | None = None    # opened per week, None while history is short
    open_count: int = 0
    urgent_open: int = 0
    high_open: int = 0


def _tickets(st: AccountState, cfg: ScoringConfig, a: int) -> TicketSignal:
    out = TicketSignal()
    if st.first_ticket_day == NONE or st.first_ticket_day > a:
        return out
    rule = cfg.ticket_spike
    out.known = True
    recent = _days(st, st.tickets_opened, a - rule.recent_days + 1, a)
    out.opened_recent = sum(recent)
    out.opened_burst = [sum(recent[-k:]) for k in range(1, rule.burst_days + 1)]
    lo = max(st.end_day - len(st.tickets_opened) + 1, st.first_day)
    hi = a - rule.recent_days
    if hi - lo + 1 >= 14:
        out.baseline = st.window_sum(st.tickets_opened, lo, hi) / (hi - lo + 1) * 7.0
    fresh_after = a - rule.stale_open_days
    for prio, touched in st.open_tickets.values():
        if touched > fresh_after:
            out.open_count += 1
            if prio == 3:
                out.urgent_open += 1
            elif prio == 2:
                out.high_open += 1
    return out
