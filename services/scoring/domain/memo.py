"""`Memo`: an account's measurements kept between its evaluations, and the functions the engine calls to
forget the parts an event changed."""

from __future__ import annotations

from typing import Any

from .breadth import BreadthSignal
from .config import ScoringConfig
from .contacts import KeyContact
from .sentiment_signal import SentimentSignal
from .state import AccountState
from .tickets import TicketSignal
from .usage import KeyFeatureSignal, UsageSignal


class Memo:
    """Measurements of one account kept between its evaluations (in `AccountState.memo`, never encoded).

    Each part is kept with the key it was measured under: the days, and the state's numbers it reads
    (see `signals.measure`). What else a part reads (daily arrays, tickets, answers, contacts) changes only
    when an event is folded in, and the engine then forgets that part (the `*_changed` functions
    below). Most events are evaluated on the day of the clock tick before them, so they re-measure
    only what they changed; the measurements are the same as if taken afresh (tests/domain/scoring/test_memo).
    """

    __slots__ = ("cfg", "complete_days", "contacts", "tickets", "sentiment", "settled")

    def __init__(self, cfg: ScoringConfig) -> None:
        self.cfg = cfg
        self.complete_days: tuple[tuple[int, ...], UsageSignal, BreadthSignal,
                                  KeyFeatureSignal | None] | None = None
        self.contacts: tuple[tuple[int, ...], list[tuple[str, list[Any]]], list[KeyContact]] | None = None
        self.tickets: tuple[tuple[int, ...], TicketSignal] | None = None
        self.sentiment: tuple[int, int, SentimentSignal] | None = None   # (first day, last day, ...)
        # The day of the last evaluation when no part was forgotten since (None: a part was).
        self.settled: int | None = None


def complete_days_changed(st: AccountState) -> None:
    """Usage of a complete day (before the last clock tick) changed: a late event."""
    memo = st.memo
    if memo is not None:
        memo.complete_days = memo.contacts = memo.settled = None


def key_usage_changed(st: AccountState) -> None:
    """A key contact's own usage record changed (a new active day)."""
    if st.memo is not None:
        st.memo.contacts = st.memo.settled = None


def contacts_changed(st: AccountState) -> None:
    if st.memo is not None:
        st.memo.contacts = st.memo.sentiment = st.memo.settled = None


def tickets_changed(st: AccountState) -> None:
    if st.memo is not None:
        st.memo.tickets = st.memo.settled = None


def sentiments_changed(st: AccountState) -> None:
    if st.memo is not None:
        st.memo.sentiment = st.memo.settled = None
