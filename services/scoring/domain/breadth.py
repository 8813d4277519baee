"""The breadth signal: distinct users and features of the last week against the usual week, on
complete days before the last clock tick."""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from operator import or_

from .config import ScoringConfig
from .state import BREADTH_DAYS, FEATURE_BITS, NONE, USER_BITS, AccountState
from .stats import distinct_estimate, median
from .usage import _days


@dataclass(slots=True)
class BreadthSignal:
    known: bool = False
    users_recent: float | None = None
    users_norm: float | None = None
    features_recent: float = 0.0
    features_norm: float | None = None
    ratio: float | None = None


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
