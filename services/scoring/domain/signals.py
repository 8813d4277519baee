"""Measurements of one account at one moment, read from its state (no mutation).

Two reference days:
- `eval_day` (D): the day of the last clock evaluation. Usage, breadth and key-contact recency are
  judged on complete days before D, so that events arriving late (within the allowed lateness) are always
  in before those days are judged, and every event between two clock ticks sees the same numbers.
- `at_day` (A): the day of the moment evaluated. Tickets, sentiment, contacts and the renewal date count
  up to that moment, so the risks they raise are immediate.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import reduce
from operator import or_
from typing import Any

from .config import ScoringConfig, UsageDropRule
from .state import (
    BREADTH_DAYS,
    C_FIRST,
    C_LEFT,
    C_NAME,
    C_ROLE,
    C_SINCE,
    C_STATUS,
    C_USER,
    FEATURE_BITS,
    K_GAP,
    K_MASK,
    NONE,
    RH_FIRST,
    RH_LAST,
    RH_N,
    RH_PREV,
    RH_SQ,
    RH_UPTO,
    ROLES,
    S_CONTACT,
    S_NORM,
    S_RAW,
    S_SOURCE,
    S_TS,
    SOURCES,
    USAGE_DAYS,
    USER_BITS,
    AccountState,
    stable_hash,
)
from .stats import distinct_estimate, distinct_estimates, median, p_active, usual_gap


def refresh_usual_gaps(st: AccountState, cfg: ScoringConfig) -> None:
    """Re-measure the account's and the key contacts' usual gaps on complete days (at the clock tick).

    A gap is kept from before when there are too few active days left to measure it (long silences).
    """
    d = st.eval_day
    if d == NONE:
        return
    gap = usual_gap(st.active_days(st.usage, d), cfg.usage_drop.min_active_days)
    if gap is not None:
        st.usual_gap = gap
    for rec in st.key_users.values():
        gap = usual_gap(st.mask_days(rec[K_MASK], d), cfg.champion_inactive.min_active_days)
        if gap is not None:
            rec[K_GAP] = gap

VISIT_JOIN_AFTER = 2   # a day right after an active day continues its visit when the visit came after a
                       # gap longer than this (a sparse account's visit spilling over midnight or into the
                       # next working day is one visit, not a one-day gap)


def fold_rhythm(st: AccountState) -> None:
    """Fold the complete days before the last clock tick into the account's lifelong rhythm (its active
    days and the gaps between them). Done at the tick, on complete days only, so that the order in which
    the events of a day arrived never matters; days older than the daily array reaches are already in."""
    d = st.eval_day
    rh = st.rhythm
    upto = rh[RH_UPTO]
    if d == NONE or st.first_usage_day == NONE or (upto != NONE and upto >= d):
        return
    start = max(st.first_usage_day, st.end_day - USAGE_DAYS + 1)
    if upto != NONE and upto > start:
        start = upto
    values = _days(st, st.usage, start, d - 1)
    n, first, last, sq = rh[RH_N], rh[RH_FIRST], rh[RH_LAST], rh[RH_SQ]
    prev = rh[RH_PREV] if len(rh) > RH_PREV else 0   # the last gap; negative once its visit was extended
    for i, uses in enumerate(values):
        if not uses:
            continue
        day = start + i
        if last == NONE:
            first = last = day
            n = 1
            prev = VISIT_JOIN_AFTER + 1      # the first visit may carry over too
            continue
        if day <= last:
            continue
        if day == last + 1 and prev > VISIT_JOIN_AFTER:
            # The day after a visit that came after a longer gap: the same visit carried over (once).
            # Gaps run from visit end to visit end, so the gap before this visit grows by the day.
            if n == 1:
                first = day
            else:
                sq += 2 * prev + 1           # (prev + 1)^2 - prev^2
            prev = -(prev + 1)
            last = day
            continue
        prev = day - last
        sq += prev * prev
        n += 1
        last = day
    rh[RH_N], rh[RH_FIRST], rh[RH_LAST], rh[RH_SQ], rh[RH_UPTO] = n, first, last, sq, d
    if len(rh) > RH_PREV:
        rh[RH_PREV] = prev
    else:
        rh.append(prev)


DAY = 86_400


@dataclass(slots=True)
class UsageSignal:
    """The account's usage on complete days, against its own earlier weeks.

    Two measures: raw uses, and active user-days (distinct users summed over the days, from the daily
    user bitmaps; None when the account sends no user ids). Raw uses swing week to week with a few
    heavy users and heavy sessions; active user-days are steadier, and fall with everyone when an
    account really fades. `level` is what the usage trend and the usage-drop risk judge: the active
    user-days of the last week against their norm (`week_level`; raw uses when the account sends no
    user ids, or has more people a day than the bitmaps can count), and, for a small team (fewer
    than `small_team` people in a usual week, or not known), the higher of that and the same over the
    last two weeks: in a team of three, one person's week off halves a week, but not a fortnight.
    """

    known: bool = False              # any usage on a complete day
    history_days: int = 0
    recent: int = 0                  # uses in the last `recent_days` complete days
    windows: list[int] = field(default_factory=list)  # earlier windows, most recent first
    active_days: int = 0             # days with usage in the last `recent_days` complete days
    usual_active_days: float | None = None  # the same in a usual earlier window (median)
    norm: float | None = None        # median of the first `norm_windows` earlier windows
    ratio: float | None = None       # recent / norm
    user_days: float | None = None   # active user-days in the last `recent_days` complete days
    user_day_windows: list[float] = field(default_factory=list)  # earlier windows, most recent first
    user_days_norm: float | None = None
    user_days_ratio: float | None = None
    team: float | None = None        # people active in a usual week (median of the earlier weeks)
    two_week_ratio: float | None = None             # the last two windows against the ones before
    two_week_user_days_ratio: float | None = None
    level: float | None = None       # the usage level judged, as a share of normal (see above)
    week_level: float | None = None  # the same over the last week alone
    small_team: bool = True
    by_user_days: bool = False       # the level is measured in active user-days (else in raw uses)
    last_active_day: int | None = None
    days_silent: int | None = None   # complete days without usage since the last active day
    usual_gap: int | None = None     # days between active days (p90), as of the last clock tick
    silence_threshold: float | None = None
    silent: bool = False
    # the lifelong rhythm (see `stats.p_active`)
    lifetime_active_days: int = 0
    rhythm_silent_days: int | None = None   # complete days since the last active day of the rhythm
    mean_gap: float | None = None
    regularity: int | None = None
    p_active: float | None = None
    # intensity: uses per active user-day (per active day without user ids) in the intensity window
    intensity: float | None = None
    intensity_days: int = 0                 # active days in that window
    intensity_by_users: bool = False        # measured per active user-day


@dataclass(slots=True)
class BreadthSignal:
    known: bool = False
    users_recent: float | None = None
    users_norm: float | None = None
    features_recent: float = 0.0
    features_norm: float | None = None
    ratio: float | None = None


@dataclass(slots=True)
class TicketSignal:
    known: bool = False
    opened_recent: int = 0
    opened_burst: list[int] = field(default_factory=list)  # opened in the last 1, 2, ... burst_days days
    baseline: float | None = None    # opened per week, None while history is short
    open_count: int = 0
    urgent_open: int = 0
    high_open: int = 0


@dataclass(slots=True)
class SentimentSignal:
    count: int = 0
    mean: float | None = None        # weighted: detractors and key contacts weigh double
    detractors: int = 0
    recent_mean: float | None = None
    recent_count: int = 0
    recent_negative: int = 0         # recent answers below zero
    earlier_mean: float | None = None
    earlier_count: int = 0
    key_detractor: dict[str, Any] | None = None


@dataclass(slots=True)
class KeyContact:
    contact_id: str
    name: str
    role: str
    left: bool
    departed_unreplaced: bool = False
    left_ts: int = NONE
    has_usage: bool = False
    days_silent: int | None = None
    usual_gap: int | None = None
    threshold: float | None = None   # days of silence that count as stopped; None: not a habitual user


@dataclass(slots=True)
class KeyFeatureSignal:
    uses: tuple[tuple[str, int], ...] = ()   # (feature, uses in the window), config order
    window_days: int = 28


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


def measure(state: AccountState, cfg: ScoringConfig, at_day: int) -> Signals:
    memo = state.memo
    if memo is None or memo.cfg is not cfg:
        memo = state.memo = Memo(cfg)
    d = state.eval_day
    # Usage and breadth read the daily arrays before d (and, when none is kept, the last usage day).
    days_key = (d, state.end_day, state.first_usage_day, min(state.last_usage_day, d), state.usual_gap,
                state.rhythm[RH_N], state.rhythm[RH_LAST])
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
    # Tickets read the tickets opened up to at_day, counted from the account's first day.
    tickets_key = (at_day, state.end_day, state.first_day, state.first_ticket_day)
    if memo.tickets is None or memo.tickets[0] != tickets_key:
        memo.tickets = (tickets_key, _tickets(state, cfg, at_day))
    # Sentiment reads the answers in windows ending on at_day: the same while no answer changes window.
    if memo.sentiment is None or not memo.sentiment[0] <= at_day <= memo.sentiment[1]:
        memo.sentiment = (*_sentiment_days(state, cfg, at_day), _sentiment(state, cfg, at_day, items))
    return Signals(eval_day=d, at_day=at_day, usage=usage, breadth=breadth, tickets=memo.tickets[1],
                   sentiment=memo.sentiment[2], contacts=contacts,
                   renewal_days=None if state.renewal_day is None else state.renewal_day - at_day,
                   key_features=key_features,
                   tenure_days=None if d == NONE or state.first_day == NONE else max(0, d - state.first_day))


class Memo:
    """Measurements of one account kept between its evaluations (in `AccountState.memo`, never encoded).

    Each part is kept with the key it was measured under: the days, and the state's numbers it reads
    (see `measure`). What else a part reads (daily arrays, tickets, answers, contacts) changes only
    when an event is folded in, and the engine then forgets that part (the `*_changed` functions
    below). Most events are evaluated on the day of the clock tick before them, so they re-measure
    only what they changed; the measurements are the same as if taken afresh (tests/scoring/test_memo).
    """

    __slots__ = ("cfg", "complete_days", "contacts", "tickets", "sentiment")

    def __init__(self, cfg: ScoringConfig) -> None:
        self.cfg = cfg
        self.complete_days: tuple[tuple[int, ...], UsageSignal, BreadthSignal,
                                  KeyFeatureSignal | None] | None = None
        self.contacts: tuple[tuple[int, ...], list[tuple[str, list[Any]]], list[KeyContact]] | None = None
        self.tickets: tuple[tuple[int, ...], TicketSignal] | None = None
        self.sentiment: tuple[int, int, SentimentSignal] | None = None   # (first day, last day, ...)


def complete_days_changed(st: AccountState) -> None:
    """Usage of a complete day (before the last clock tick) changed: a late event."""
    memo = st.memo
    if memo is not None:
        memo.complete_days = memo.contacts = None


def key_usage_changed(st: AccountState) -> None:
    """A key contact's own usage record changed (a new active day)."""
    if st.memo is not None:
        st.memo.contacts = None


def contacts_changed(st: AccountState) -> None:
    if st.memo is not None:
        st.memo.contacts = st.memo.sentiment = None


def tickets_changed(st: AccountState) -> None:
    if st.memo is not None:
        st.memo.tickets = None


def sentiments_changed(st: AccountState) -> None:
    if st.memo is not None:
        st.memo.sentiment = None


def contact_label(k: KeyContact) -> str:
    return f"{k.name} ({k.role})"


def _usage(st: AccountState, cfg: ScoringConfig, d: int) -> UsageSignal:
    out = UsageSignal()
    first_usage = st.first_usage_day
    if d == NONE or first_usage == NONE or first_usage >= d:
        return out
    rule = cfg.usage_drop
    n = rule.recent_days
    out.known = True
    out.history_days = d - first_usage
    # The recent window and the earlier ones (one more than the norm needs, for the two-week comparison)
    # that start after the first usage and within the days kept; most recent first.
    earliest = max(first_usage, st.end_day - USAGE_DAYS + 1)
    earlier = max(0, min(rule.norm_windows + 1, (d - earliest) // n - 1))
    days = _days(st, st.usage, d - n * (earlier + 1), d - 1)
    recent = days[-n:]
    out.recent = sum(recent)
    out.active_days = n - recent.count(0)
    active: list[int] = []
    for lo in range(len(days) - 2 * n, -1, -n):
        window = days[lo:lo + n]
        out.windows.append(sum(window))
        active.append(n - window.count(0))
    if out.windows:
        out.usual_active_days = median(active[:rule.norm_windows])
        out.norm = median(out.windows[:rule.norm_windows])
        if out.norm > 0:
            out.ratio = out.recent / out.norm
    out.two_week_ratio = _two_week_ratio(out.recent, out.windows)
    _user_days(st, out, d, n)
    _level(out, rule, n)
    out.last_active_day = st.last_active_day(d)
    out.days_silent = d - 1 - out.last_active_day
    out.usual_gap = st.usual_gap or None
    if out.usual_gap is not None:
        out.silence_threshold = max(rule.gap_factor * out.usual_gap, float(rule.min_silent_days))
        out.silent = out.days_silent >= out.silence_threshold
    _rhythm(st, cfg, out, d)
    if cfg.weights.intensity > 0:   # (only the intensity component reads it)
        _intensity(st, cfg, out, d)
    return out


def _rhythm(st: AccountState, cfg: ScoringConfig, out: UsageSignal, d: int) -> None:
    rh = st.rhythm
    out.lifetime_active_days = rh[RH_N]
    if rh[RH_LAST] == NONE:
        return
    lapse = cfg.lapse
    silent = out.rhythm_silent_days = max(0, d - 1 - rh[RH_LAST])
    judged = p_active(rh[RH_N], rh[RH_LAST] - rh[RH_FIRST], rh[RH_SQ], silent, prior_gap=lapse.prior_gap_days,
                      prior_weight=lapse.prior_weight, dropout_a=lapse.dropout_a, dropout_b=lapse.dropout_b,
                      max_shape=lapse.max_regularity, break_share=lapse.break_share,
                      max_break=lapse.max_break_days, min_gaps=lapse.min_regularity_gaps,
                      skip_share=lapse.skip_share)
    if judged is not None:
        out.p_active, out.mean_gap, out.regularity = judged


def _intensity(st: AccountState, cfg: ScoringConfig, out: UsageSignal, d: int) -> None:
    n = cfg.intensity.window_days
    first = max(d - n, st.end_day - BREADTH_DAYS + 1)
    uses = _days(st, st.usage, first, d - 1)
    active = len(uses) - uses.count(0)
    out.intensity_days = active
    if not active:
        return
    users = _days(st, st.users, first, d - 1)
    if any(users):
        estimate = distinct_estimates(USER_BITS)
        user_days = sum([estimate[bits.bit_count()] for bits, used in zip(users, uses, strict=True) if used])
        out.intensity = sum(uses) / max(user_days, float(active))
        out.intensity_by_users = True
    else:
        out.intensity = sum(uses) / active


def _key_features(st: AccountState, cfg: ScoringConfig, d: int) -> KeyFeatureSignal:
    rule = cfg.key_features
    first = d - rule.window_days
    uses = []
    for name, _, _ in rule.features:
        days = st.key_counts.get(name)
        uses.append((name, sum([n for day, n in days.items() if first <= day < d]) if days else 0))
    return KeyFeatureSignal(tuple(uses), rule.window_days)


def _days(st: AccountState, values: list[int], first: int, last: int) -> list[int]:
    """The values of a daily array for days first..last (0 for days it does not keep)."""
    n = len(values)
    lo = n - 1 - (st.end_day - first)
    hi = n - 1 - (st.end_day - last)
    if lo >= 0 and hi < n:
        return values[lo:hi + 1]
    return [values[i] if 0 <= i < n else 0 for i in range(lo, hi + 1)]


def _two_week_ratio(recent: float, windows: Sequence[float]) -> float | None:
    """The last two windows against twice the median of the (at most four) windows before them."""
    if len(windows) < 3:
        return None
    norm = 2.0 * median(windows[1:5])
    return (recent + windows[0]) / norm if norm > 0 else None


def _user_days(st: AccountState, out: UsageSignal, d: int, n: int) -> None:
    """Active user-days and people of the recent window and of the earlier ones the bitmaps keep."""
    oldest_kept = st.end_day - BREADTH_DAYS + 1
    windows = 0
    for j in range(BREADTH_DAYS // n):
        first = d - n * (j + 1)
        if first < oldest_kept or (j > 0 and first < st.first_usage_day):
            break
        windows = j + 1
    days = _days(st, st.users, d - n * windows, d - 1)   # oldest first
    if not any(days):
        return  # no user ids in the recent past: the uses alone tell the level
    estimate = distinct_estimates(USER_BITS)   # (a daily bitmap has at most USER_BITS bits set)
    per_day = [estimate[bits.bit_count()] for bits in days]
    sums: list[float] = []
    people: list[float] = []
    for lo in range((windows - 1) * n, -1, -n):   # the most recent window first
        sums.append(sum(per_day[lo:lo + n]))
        people.append(estimate[reduce(or_, days[lo:lo + n], 0).bit_count()])
    out.user_days = sums[0]
    out.user_day_windows = sums[1:]
    if len(people) > 1:
        out.team = median(people[1:])
    if out.user_day_windows:
        out.user_days_norm = median(out.user_day_windows)
        if out.user_days_norm > 0:
            out.user_days_ratio = out.user_days / out.user_days_norm
    out.two_week_user_days_ratio = _two_week_ratio(out.user_days, out.user_day_windows)


# Daily bitmaps this full (on an average day of the usual week) no longer count people reliably.
_SATURATED_USERS_PER_DAY = 0.75 * USER_BITS


def _level(out: UsageSignal, rule: UsageDropRule, n: int) -> None:
    by_users = (out.user_days_ratio is not None and out.user_days_norm is not None
                and out.user_days_norm / n < _SATURATED_USERS_PER_DAY)
    out.by_user_days = by_users
    week = out.user_days_ratio if by_users else out.ratio
    if week is None:
        return
    fortnight = out.two_week_user_days_ratio if by_users else out.two_week_ratio
    out.small_team = out.team is None or out.team < rule.small_team
    out.week_level = week
    out.level = max(week, fortnight) if out.small_team and fortnight is not None else week


def _breadth(st: AccountState, cfg: ScoringConfig, d: int) -> BreadthSignal:
    """Distinct users and features of the last week against the usual week.

    A small team (see `UsageSignal`) is also judged over the last two weeks against the two before,
    and the better of the two views counts: one person's week off is not a narrowing of use.
    """
    out = BreadthSignal()
    if d == NONE or st.first_usage_day == NONE or st.first_usage_day >= d:
        return out
    # The last week and up to three before it that start after the first usage and within the days kept.
    earliest = max(st.first_usage_day, st.end_day - BREADTH_DAYS + 1)
    weeks = max(1, min(4, (d - earliest) // 7))
    users_days = _days(st, st.users, d - 7 * weeks, d - 1)
    features_days = _days(st, st.features, d - 7 * weeks, d - 1)
    user_weeks = [reduce(or_, users_days[lo:lo + 7], 0) for lo in range(7 * (weeks - 1), -1, -7)]
    feature_weeks = [reduce(or_, features_days[lo:lo + 7], 0) for lo in range(7 * (weeks - 1), -1, -7)]
    if len(user_weeks) < 3:  # the recent week and at least two earlier ones
        return out
    users = [distinct_estimate(bits, USER_BITS) for bits in user_weeks]
    features = [distinct_estimate(bits, FEATURE_BITS) for bits in feature_weeks]
    out.known = True
    out.features_recent = features[0]
    out.features_norm = median(features[1:])
    any_users = any(users)
    if any_users:
        out.users_recent = users[0]
        out.users_norm = median(users[1:])
    out.ratio = _breadth_ratio(out.users_recent, out.users_norm, out.features_recent, out.features_norm)
    small = out.users_norm is None or out.users_norm < cfg.usage_drop.small_team
    if small and len(users) == 4:
        # The last two weeks against the two before (a bitmap of two weeks is the union of theirs).
        f2 = [distinct_estimate(feature_weeks[0] | feature_weeks[1], FEATURE_BITS),
              distinct_estimate(feature_weeks[2] | feature_weeks[3], FEATURE_BITS)]
        u2 = [distinct_estimate(user_weeks[0] | user_weeks[1], USER_BITS),
              distinct_estimate(user_weeks[2] | user_weeks[3], USER_BITS)] if any_users else [None, None]
        out.ratio = max(out.ratio, _breadth_ratio(u2[0], u2[1], f2[0], f2[1]))
    return out


def _breadth_ratio(users: float | None, users_norm: float | None, features: float,
                   features_norm: float | None) -> float:
    ratios = []
    if features_norm:
        ratios.append(features / features_norm)
    if users is not None and users_norm:
        ratios.append(users / users_norm)
    return sum(ratios) / len(ratios) if ratios else 0.0


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


_NPS, _CSAT = SOURCES.index("nps"), SOURCES.index("csat")


def is_detractor(cfg: ScoringConfig, source: int, raw_x10: int, norm_milli: int) -> bool:
    rule = cfg.sentiment
    if raw_x10 >= 0 and SOURCES[source] == "nps":
        return raw_x10 <= rule.nps_detractor_max * 10
    if raw_x10 >= 0 and SOURCES[source] == "csat":
        return raw_x10 <= rule.csat_detractor_max * 10
    return norm_milli <= rule.detractor_normalized_max * 1000


def _sentiment(st: AccountState, cfg: ScoringConfig, a: int,
               key_contacts: list[tuple[str, list[Any]]]) -> SentimentSignal:
    out = SentimentSignal()
    if not st.sentiments:
        return out
    rule = cfg.sentiment
    end = (a + 1) * DAY
    start = (a - rule.window_days + 1) * DAY
    recent_start = (a - rule.trend_days + 1) * DAY
    key_start = (a - rule.key_window_days + 1) * DAY
    key = {stable_hash(cid): (cid, c) for cid, c in key_contacts}
    # `is_detractor`, inlined: this loop runs at most evaluations.
    nps_max, csat_max = rule.nps_detractor_max * 10, rule.csat_detractor_max * 10
    normalized_max = rule.detractor_normalized_max * 1000
    wsum = wtot = 0.0
    rsum = esum = 0.0
    latest_by_key: dict[int, list[int]] = {}
    for s in st.sentiments:
        ts = s[S_TS]
        if not start <= ts < end:
            continue
        norm = s[S_NORM] / 1000.0
        raw, source = s[S_RAW], s[S_SOURCE]
        if raw >= 0 and source == _NPS:
            det = raw <= nps_max
        elif raw >= 0 and source == _CSAT:
            det = raw <= csat_max
        else:
            det = s[S_NORM] <= normalized_max
        by_key = s[S_CONTACT] in key
        weight = (2.0 if det else 1.0) * (2.0 if by_key else 1.0)
        wsum += weight * norm
        wtot += weight
        out.count += 1
        out.detractors += det
        if ts >= recent_start:
            rsum += norm
            out.recent_count += 1
            out.recent_negative += norm < 0
        else:
            esum += norm
            out.earlier_count += 1
        if by_key and ts >= key_start:
            latest_by_key[s[S_CONTACT]] = s  # samples are kept in time order: the last one wins
    if out.count:
        out.mean = wsum / wtot
    if out.recent_count:
        out.recent_mean = rsum / out.recent_count
    if out.earlier_count:
        out.earlier_mean = esum / out.earlier_count
    worst: list[int] | None = None
    for h, s in latest_by_key.items():
        if is_detractor(cfg, s[S_SOURCE], s[S_RAW], s[S_NORM]) and (
                worst is None or (s[S_TS], h) > (worst[S_TS], worst[S_CONTACT])):
            worst = s
    if worst is not None:
        cid, c = key[worst[S_CONTACT]]
        src = SOURCES[worst[S_SOURCE]]
        out.key_detractor = {
            "contact_id": cid, "contact": c[C_NAME] or cid, "role": ROLES[c[C_ROLE]], "source": src,
            "score": (worst[S_RAW] / 10 if worst[S_RAW] % 10 else worst[S_RAW] // 10)
            if worst[S_RAW] >= 0 else round(worst[S_NORM] / 1000, 2),
            "answered_at": worst[S_TS],
        }
    return out


_FAR = 1 << 40   # days: further than any event


def _sentiment_days(st: AccountState, cfg: ScoringConfig, a: int) -> tuple[int, int]:
    """The days around `a` throughout which every answer stays inside or outside each window of
    `_sentiment` (so that what it measures on `a` holds on all of them)."""
    edges = cfg.sentiment.window_edges
    back = ahead = _FAR
    for s in st.sentiments:
        age = a - s[S_TS] // DAY
        i = bisect_right(edges, age)   # edges[i - 1] <= age < edges[i]
        if i and age - edges[i - 1] < back:
            back = age - edges[i - 1]
        if i < len(edges) and edges[i] - age < ahead:
            ahead = edges[i] - age
    return a - back, a + ahead - 1


def _key_contacts(st: AccountState, cfg: ScoringConfig, d: int,
                  items: list[tuple[str, list[Any]]]) -> list[KeyContact]:
    rule = cfg.champion_inactive
    named_at = [c[C_SINCE] for _, c in items if c[C_STATUS] != 1 and c[C_SINCE] != NONE]
    out: list[KeyContact] = []
    for cid, c in items:
        name, role = c[C_NAME] or cid, ROLES[c[C_ROLE]]
        if c[C_STATUS] == 1:   # left
            left_ts = c[C_LEFT]
            confirmed = left_ts != NONE and c[C_FIRST] < left_ts
            out.append(KeyContact(cid, name, role, True, confirmed and not any(t > left_ts for t in named_at),
                                  left_ts))
            continue
        rec = st.key_users.get(c[C_USER]) if c[C_USER] else None
        last = None
        if rec is not None and d != NONE:
            last = st.user_last_active_day(rec, d)
        if rec is None or last is None:
            out.append(KeyContact(cid, name, role, False))
            continue
        usual_gap = rec[K_GAP] or None
        threshold = None
        # Only a habitual user's silence means something: a sponsor who looks in every other week is
        # not judged on a month without a login.
        if usual_gap is not None and usual_gap <= rule.max_usual_gap_days:
            threshold = max(rule.gap_factor * usual_gap, float(rule.min_silent_days))
        out.append(KeyContact(cid, name, role, False, False, NONE, True, d - 1 - last, usual_gap, threshold))
    return out
