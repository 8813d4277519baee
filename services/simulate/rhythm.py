"""Rhythms of product usage: day of the week, hour of the day, month-end, holidays, slow trends."""

from __future__ import annotations

import itertools
import math
import random
from datetime import date

# Relative activity by weekday (Monday first) for an office account; weekend workers differ.
OFFICE_WEEK = (1.0, 1.05, 1.05, 1.0, 0.85, 0.12, 0.08)
SHIFT_WEEK = (1.0, 1.0, 1.0, 1.0, 1.0, 0.55, 0.45)

# Relative activity by local hour: a morning and an afternoon peak, a lunch dip, quiet nights.
HOURLY = (0.01, 0.005, 0.005, 0.005, 0.01, 0.02, 0.05, 0.2, 0.6, 1.0, 1.0, 0.9,
          0.6, 0.8, 1.0, 0.95, 0.8, 0.5, 0.25, 0.15, 0.12, 0.08, 0.04, 0.02)
_HOURS = tuple(range(24))
_CUM_HOURLY = tuple(itertools.accumulate(HOURLY))

# Public holidays observed by most customers, and the quiet year-end week.
HOLIDAYS = {(1, 1): 0.15, (5, 1): 0.4, (12, 24): 0.3, (12, 25): 0.1, (12, 26): 0.2, (12, 31): 0.3}
YEAR_END_WEEK = 0.45


def holiday_factor(day: date) -> float:
    special = HOLIDAYS.get((day.month, day.day))
    if special is not None:
        return special
    if (day.month == 12 and day.day >= 27) or (day.month == 1 and day.day == 2):
        return YEAR_END_WEEK
    return 1.0


def month_end(day: date) -> bool:
    """The last three days of a month: reporting time."""
    nxt = date.fromordinal(day.toordinal() + 3)
    return nxt.month != day.month


def month_factor(day: date) -> float:
    return 1.12 if month_end(day) else 1.0


def trend_factor(growth_per_90d: float, days_since_start: float) -> float:
    return math.exp(growth_per_90d * days_since_start / 90.0)


def day_factor(day: date, week: tuple[float, ...], growth_per_90d: float, days_since_start: float) -> float:
    """The expected activity of an account on a local day, before noise and stories."""
    return (week[day.weekday()] * holiday_factor(day) * month_factor(day)
            * trend_factor(growth_per_90d, days_since_start))


def sample_hour(rng: random.Random) -> int:
    return rng.choices(_HOURS, cum_weights=_CUM_HOURLY)[0]


def business_hour(rng: random.Random) -> float:
    """A time of the working day, in hours after local midnight (for CRM updates, surveys, tickets)."""
    return rng.uniform(8.5, 17.5)
