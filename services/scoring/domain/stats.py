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
        zeros: float = bits - ones
        if zeros <= 0:
            zeros = 0.5  # saturated: the estimate caps at about bits * ln(2 * bits)
        out.append(bits * math.log(bits / zeros))
    return tuple(out)


def clamp(x: float, low: float = 0.0, high: float = 100.0) -> float:
    return low if x < low else high if x > high else x
