"""The usage signals of an account, on complete days before the last clock tick (`eval_day`).

`UsageSignal` (usage against the account's own earlier weeks, silence, the lifelong rhythm and the
intensity of use) and `KeyFeatureSignal` (uses of the configured key features); `refresh_usual_gaps` and
`fold_rhythm` update the state's usual gaps and rhythm at the clock tick. `_days` reads a daily array
(also for breadth and tickets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import reduce
from operator import or_

from .config import ScoringConfig, UsageDropRule
from .state import (
    BREADTH_DAYS,
    K_GAP,
    K_MASK,
    NONE,
    RH_FIRST,
    RH_LAST,
    RH_N,
    RH_PREV,
    RH_SQ,
    RH_UPTO,
    USAGE_DAYS,
    USER_BITS,
    AccountState,
)
from .stats import distinct_estimates, median, p_active, usual_gap


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
    st.rhythm = folded_rhythm(st, st.eval_day)


def folded_rhythm(st: AccountState, d: int) -> list[int]:
    """The rhythm once the complete days before day `d` are folded in, as a clock tick on day `d` folds
    them (after moving the daily arrays to `d`), without changing the state: the state's own list when
    there is nothing to fold, else a new one."""
    rh = st.rhythm
    upto = rh[RH_UPTO]
    if d == NONE or st.first_usage_day == NONE or (upto != NONE and upto >= d):
        return rh
    start = max(st.first_usage_day, max(st.end_day, d) - USAGE_DAYS + 1)
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
    return [n, first, last, sq, d, prev]


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
class KeyFeatureSignal:
    uses: tuple[tuple[str, int], ...] = ()   # (feature, uses in the window), config order
    window_days: int = 28


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
