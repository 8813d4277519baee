"""How well a ranking or a flag predicted churn. Pure functions of plain numbers; no I/O.

A *risk* value ranks accounts: the higher, the more likely to churn (for the health score, pass
`-score`). *positive* says whether the account churned within the horizon. Figures that cannot be
defined on the input (no churner, nobody flagged...) are None.

- `auc`: ROC AUC by Mann-Whitney: the chance that a random churner ranks riskier than a random account
  that stayed, ties counting one half (average ranks).
- `gains`: the cumulative gains curve: after ranking the accounts riskiest first, the share of churners
  captured against the share of accounts taken. Accounts tied on their risk value are taken together,
  the curve running straight across them (the expectation over every order of the tie).
- `top_lift(fraction)`: churn rate among the riskiest `fraction` of accounts over the base rate, read from
  the gains curve: gains(fraction) / fraction. A fraction of an account, or part of a tie, counts pro rata.
- `group_lift`: churn rate within a group (the red tier) over the base rate.
- `calibration`: accounts, churners and churn rate per score band of `width` points (the last band
  includes 100).
- `flag_figures`: for a yes/no flag: flagged, true positives, precision (churners among the flagged),
  recall (flagged among the churners), F1 = 2 TP / (flagged + churners), median lead time in days over
  the flagged churners, and false alarms per 100 accounts that stayed, per month of horizon
  (100 x flagged non-churners / non-churners / (horizon days / 30)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

MONTH_DAYS = 30.0


def _check(risk: Sequence[float], positive: Sequence[bool]) -> None:
    if len(risk) != len(positive):
        raise ValueError("risk and positive must have the same length")


def _tie_groups(risk: Sequence[float], positive: Sequence[bool]) -> list[tuple[int, int]]:
    """(accounts, churners) per group of equal risk, riskiest group first."""
    order = sorted(range(len(risk)), key=lambda i: -risk[i])
    groups: list[tuple[int, int]] = []
    i = 0
    while i < len(order):
        j = i
        value = risk[order[i]]
        churners = 0
        while j < len(order) and risk[order[j]] == value:
            churners += 1 if positive[order[j]] else 0
            j += 1
        groups.append((j - i, churners))
        i = j
    return groups


def auc(risk: Sequence[float], positive: Sequence[bool]) -> float | None:
    """ROC AUC (Mann-Whitney U / (churners x stayers)), ties averaged. None without both outcomes."""
    _check(risk, positive)
    n_pos = sum(1 for p in positive if p)
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    # Ranks from the least risky (1) up; a tie shares the average of its ranks.
    rank_sum = 0.0
    start = 1
    for size, churners in reversed(_tie_groups(risk, positive)):
        average = start + (size - 1) / 2
        rank_sum += churners * average
        start += size
    u = rank_sum - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def gains(risk: Sequence[float], positive: Sequence[bool]) -> list[tuple[float, float]]:
    """Points (share of accounts, share of churners captured) from (0, 0) to (1, 1); one point per tie
    group, straight lines between. Empty without accounts or without churners."""
    _check(risk, positive)
    n = len(risk)
    n_pos = sum(1 for p in positive if p)
    if n == 0 or n_pos == 0:
        return []
    points = [(0.0, 0.0)]
    taken = captured = 0
    for size, churners in _tie_groups(risk, positive):
        taken += size
        captured += churners
        points.append((taken / n, captured / n_pos))
    return points


def gains_at(points: Sequence[tuple[float, float]], x: float) -> float | None:
    """The gains curve at share `x` of the accounts (linear between points)."""
    if not points:
        return None
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


def top_lift(risk: Sequence[float], positive: Sequence[bool], fraction: float = 0.1) -> float | None:
    """Churn rate among the riskiest `fraction` of the accounts over the base rate (None: no churner)."""
    if not 0 < fraction <= 1:
        raise ValueError("fraction must be within (0, 1]")
    captured = gains_at(gains(risk, positive), fraction)
    return None if captured is None else captured / fraction


def group_lift(in_group: Sequence[bool], positive: Sequence[bool]) -> float | None:
    """Churn rate within the group over the churn rate of all (None: empty group or no churner)."""
    _check(in_group, positive)
    n = len(positive)
    n_pos = sum(1 for p in positive if p)
    members = sum(1 for g in in_group if g)
    if members == 0 or n_pos == 0:
        return None
    churned = sum(1 for g, p in zip(in_group, positive, strict=True) if g and p)
    return (churned / members) / (n_pos / n)


def calibration(scores: Sequence[float], positive: Sequence[bool], width: int = 10) -> list[dict[str, Any]]:
    """Per band of `width` score points over 0..100: accounts, churned, churn rate (None when empty)."""
    _check(scores, positive)
    if width <= 0 or 100 % width:
        raise ValueError("width must divide 100")
    bands = 100 // width
    accounts = [0] * bands
    churned = [0] * bands
    for score, pos in zip(scores, positive, strict=True):
        i = min(bands - 1, max(0, math.floor(score / width)))
        accounts[i] += 1
        churned[i] += 1 if pos else 0
    return [{"band": f"{i * width}-{(i + 1) * width}", "low": i * width, "high": (i + 1) * width,
             "accounts": accounts[i], "churned": churned[i],
             "churn_rate": churned[i] / accounts[i] if accounts[i] else None} for i in range(bands)]


def median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def flag_figures(flagged: Sequence[bool], positive: Sequence[bool], lead_days: Sequence[float | None],
                 horizon_days: float) -> dict[str, Any]:
    """Figures of a flag against churn within a horizon of `horizon_days` (see the module docstring).
    `lead_days[i]` is the lead of a flagged churner (churned_at - flagged since), else ignored."""
    _check(flagged, positive)
    if len(lead_days) != len(flagged):
        raise ValueError("lead_days must have one value per account")
    if horizon_days <= 0:
        raise ValueError("horizon_days must be positive")
    n_pos = sum(1 for p in positive if p)
    n_neg = len(positive) - n_pos
    n_flagged = sum(1 for f in flagged if f)
    tp = sum(1 for f, p in zip(flagged, positive, strict=True) if f and p)
    fp = n_flagged - tp
    leads = [d for f, p, d in zip(flagged, positive, lead_days, strict=True) if f and p and d is not None]
    return {
        "flagged": n_flagged,
        "true_positives": tp,
        "precision": tp / n_flagged if n_flagged else None,
        "recall": tp / n_pos if n_pos else None,
        "f1": 2 * tp / (n_flagged + n_pos) if n_flagged + n_pos else None,
        "median_lead_days": median(leads),
        "false_alarms_per_100_per_month": (100.0 * fp / n_neg / (horizon_days / MONTH_DAYS)
                                           if n_neg else None),
    }
