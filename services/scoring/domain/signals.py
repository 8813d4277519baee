"""Measurements of one account at one moment, read from its state (no mutation).

Two reference days:
- `eval_day` (D): the day of the last clock evaluation. Usage, breadth and key-contact recency are
  judged on complete days before D, so that events arriving late (within the allowed lateness) are always
  in before those days are judged, and every event between two clock ticks sees the same numbers.
- `at_day` (A): the day of the moment evaluated. Tickets, sentiment, contacts and the renewal date count
  up to that moment, so the risks they raise are immediate.

The signals are measured in `usage.py` (usage, rhythm, intensity, key features), `breadth.py`, `tickets.py`,
`sentiment_signal.py` and `contacts.py`; `memo.py` keeps them between evaluations. This module puts them
together (`measure`) and re-exports their public names.
"""

from __future__ import annotations

from dataclasses import dataclass

from .breadth import BreadthSignal, _breadth
from .config import ScoringConfig
from .contacts import KeyContact, _key_contacts, contact_label
from .memo import (
    Memo,
    complete_days_changed,
    contacts_changed,
    key_usage_changed,
    sentiments_changed,
    tickets_changed,
)
from .sentiment_signal import DAY, SentimentSignal, _sentiment, _sentiment_days, is_detractor
from .state import NONE, RH_LAST, RH_N, AccountState
from .tickets import TicketSignal, _tickets
from .usage import (
    VISIT_JOIN_AFTER,
    KeyFeatureSignal,
    UsageSignal,
    _key_features,
    _usage,
    fold_rhythm,
    refresh_usual_gaps,
)

__all__ = [
    "DAY",
    "VISIT_JOIN_AFTER",
    "BreadthSignal",
    "KeyContact",
    "KeyFeatureSignal",
    "Memo",
    "SentimentSignal",
    "Signals",
    "TicketSignal",
    "UsageSignal",
    "complete_days_changed",
    "contact_label",
    "contacts_changed",
    "fold_rhythm",
    "is_detractor",
    "key_usage_changed",
    "measure",
    "refresh_usual_gaps",
    "sentiments_changed",
    "settled",
    "tickets_changed",
]


@dataclass(slots=True)
class Signals:
    eval_day: int
    at_day: int
    usage: UsageSignal
    breadth: BreadthSignal
    tickets: TicketSignal
    sentiment: SentimentSignal
    contacts: list[KeyContact]
    renewal_days: int | None
    key_features: KeyFeatureSignal | None = None   # None: no key feature configured
    tenure_days: int | None = None                 # complete days since the first event


def _days_key(state: AccountState) -> tuple[int, ...]:
    """What usage and breadth read besides the daily arrays before the evaluation day (and, when none is
    kept, the last usage day)."""
    d = state.eval_day
    return (d, state.end_day, state.first_usage_day, min(state.last_usage_day, d), state.usual_gap,
            state.rhythm[RH_N], state.rhythm[RH_LAST])


def _tickets_key(state: AccountState, at_day: int) -> tuple[int, ...]:
    """Tickets read the tickets opened up to at_day, counted from the account's first day."""
    return (at_day, state.end_day, state.first_day, state.first_ticket_day)


def settled(state: AccountState, cfg: ScoringConfig, at_day: int) -> bool:
    """Whether `measure(state, cfg, at_day)` would return what the last evaluation measured: it was on
    at_day, no event has changed a part since (see `Memo.settled`), and every part's key is the same."""
    memo = state.memo
    if memo is None or memo.cfg is not cfg or memo.settled != at_day:
        return False
    assert memo.complete_days is not None and memo.contacts is not None and memo.tickets is not None
    assert memo.sentiment is not None
    return (memo.complete_days[0] == _days_key(state) and memo.contacts[0] == (state.eval_day, state.end_day)
            and memo.tickets[0] == _tickets_key(state, at_day)
            and memo.sentiment[0] <= at_day <= memo.sentiment[1])


def measure(state: AccountState, cfg: ScoringConfig, at_day: int) -> Signals:
    memo = state.memo
    if memo is None or memo.cfg is not cfg:
        memo = state.memo = Memo(cfg)
    d = state.eval_day
    days_key = _days_key(state)
    if memo.complete_days is None or memo.complete_days[0] != days_key:
        memo.complete_days = (days_key, _usage(state, cfg, d), _breadth(state, cfg, d),
                              _key_features(state, cfg, d) if cfg.key_features.features else None)
    _, usage, breadth, key_features = memo.complete_days
    # Key contacts read the contacts and their own usage before d.
    contacts_key = (d, state.end_day)
    if memo.contacts is None or memo.contacts[0] != contacts_key:
        items = state.key_contacts()
        memo.contacts = (contacts_key, items, _key_contacts(state, cfg, d, items))
    _, items, contacts = memo.contacts
    tickets_key = _tickets_key(state, at_day)
    if memo.tickets is None or memo.tickets[0] != tickets_key:
        memo.tickets = (tickets_key, _tickets(state, cfg, at_day))
    # Sentiment reads the answers in windows ending on at_day: the same while no answer changes window.
    if memo.sentiment is None or not memo.sentiment[0] <= at_day <= memo.sentiment[1]:
        memo.sentiment = (*_sentiment_days(state, cfg, at_day), _sentiment(state, cfg, at_day, items))
    memo.settled = at_day
    return Signals(eval_day=d, at_day=at_day, usage=usage, breadth=breadth, tickets=memo.tickets[1],
                   sentiment=memo.sentiment[2], contacts=contacts,
                   renewal_days=None if state.renewal_day is None else state.renewal_day - at_day,
                   key_features=key_features,
                   tenure_days=None if d == NONE or state.first_day == NONE else max(0, d - state.first_day))
