"""Small statistics used by the health model and the detectors (pure, deterministic)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from operator import sub


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    n = len(s)
    if n == 0:
        raise ValueError("median of nothing")
    mid = n // 2
    return float(s[mid]) if n % 2 else (s[mid - 1] + s[mid]) / 2.0


def usual_gap(days: Sequence[int], min_active_days: int) -> int | None:
    """The 90th percentile (nearest rank) of the gaps between consecutive active days, in days.

    None when there are fewer than `min_active_days` active days to judge from.
    """
    if len(days) < max(2, min_active_days):
        return None
    gaps = sorted(map(sub, days[1:], days))
    return gaps[math.ceil(0.9 * len(gaps)) - 1]


def poisson_cdf(k: int, lam: float) -> float:
    """P(X <= k) for X ~ Poisson(lam)."""
    if k < 0:
        return 0.0
    if lam <= 0:
        return 1.0
    if lam > 500:
        return _normal_cdf((k + 0.5 - lam) / math.sqrt(lam))
    term = math.exp(-lam)
    total = term
    for i in range(1, k + 1):
        term *= lam / i
        total += term
        if total >= 1.0:
            return 1.0
    return min(total, 1.0)


def poisson_sf(k: int, lam: float) -> float:
    """P(X >= k) for X ~ Poisson(lam)."""
    if k <= 0:
        return 1.0
    return max(0.0, 1.0 - poisson_cdf(k - 1, lam))


def _normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def distinct_estimate(bitmap: int, bits: int) -> float:
    """Linear-counting estimate of how many distinct items were hashed into a `bits`-wide bitmap."""
    return distinct_estimates(bits)[min(bitmap.bit_count(), bits)]


@lru_cache(maxsize=8)
def distinct_estimates(bits: int) -> tuple[float, ...]:
    """`distinct_estimate` for every number of bits set, 0..bits (it depends on nothing else)."""
    out = []
    for ones in range(bits + 1):
        zeros: float = float(bits - ones)
        if zeros <= 0:
            zeros = 0.5  # saturated: the estimate caps at about bits * ln(2 * bits)
        out.append(bits * math.log(bits / zeros))
    return tuple(out)


def clamp(x: float, low: float = 0.0, high: float = 100.0) -> float:
    return low if x < low else high if x > high else x


def gap_survival(silence: float, shape: int, events: float, exposure: float) -> float:
    """P(a gap lasts longer than `silence` days) for gamma(`shape`) gaps whose rate is uncertain.

    The rate of the gap's `shape` stages is Gamma(`events`, `exposure`) (events seen over that many
    days); the gap then outlasts `silence` when fewer than `shape` stages fall within it, a sum of
    negative binomial terms.
    """
    if silence <= 0:
        return 1.0
    q = exposure / (exposure + silence)
    term = q ** events           # j = 0
    total = term
    for j in range(1, shape):
        term *= (events + j - 1) / j * (1.0 - q)
        total += term
    return total if total < 1.0 else 1.0


def p_active(active_days: int, span: int, square_gaps: int, silence: int, *, prior_gap: float,
             prior_weight: float, dropout_a: float, dropout_b: float, max_shape: int, break_share: float,
             max_break: int, min_gaps: int = 3, skip_share: float = 0.0) -> tuple[float, float, int] | None:
    """(chance the account is still active, its mean gap, the regularity used) after `silence` days
    without activity, from its `active_days` (the first and last `span` days apart, `square_gaps` the sum
    of the squared gaps between them). None before the second active day.

    A BG/NBD-style model on the account's own history alone: while active, the gaps between active days
    are gamma distributed (regularity: the shape, from the gaps' spread once there are `min_gaps` of
    them, shrunk towards 1 while they are few; exponential before), their rate learnt from the gaps seen
    (with a prior of `prior_weight` gaps of `prior_gap` days); after every active day the account may
    stop for good (Beta(`dropout_a`, `dropout_b`) prior, updated by the active days it came back after).
    A share `break_share` of gaps may also hold a break of 1 to `max_break` // 7 weeks, and a share
    `skip_share` may be two gaps in one (a visit skipped).
    P(active) = P(alive) * P(gap > silence | alive) / (that + P(stopped)).
    """
    x = active_days - 1
    if x < 1:
        return None
    mean = span / x
    shape = 1
    if mean > 0 and x >= min_gaps:
        cv2 = max(0.0, square_gaps / x / (mean * mean) - 1.0)
        raw = max_shape if cv2 * max_shape <= 1.0 else 1.0 / cv2
        shape = max(1, min(max_shape, round(1.0 + (raw - 1.0) * x / (x + 3.0))))
    events = shape * (prior_weight + x)
    exposure = prior_weight * prior_gap + span
    survive = gap_survival(silence, shape, events, exposure)
    weeks = max_break // 7
    if break_share > 0 and weeks > 0:
        broken = sum(gap_survival(silence - 7 * w, shape, events, exposure) for w in range(1, weeks + 1)) / weeks
        survive = (1.0 - break_share) * survive + break_share * broken
    if skip_share > 0:   # a visit skipped: two gaps in one
        survive = (1.0 - skip_share) * survive + skip_share * gap_survival(silence, 2 * shape, events, exposure)
    odds_stopped = dropout_a / (dropout_b + x - 1.0)
    alive = survive / (survive + odds_stopped)
    return alive, mean, shape
