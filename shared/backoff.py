"""Exponential backoff: the delays of a retry loop.

`Backoff(initial, cap=..., factor=2.0, jitter=0.0)` gives `initial` first, then each delay `factor` times
the one before, never more than `cap`; `reset()` starts over from `initial` (after a success). The first
delay is `initial` as given, even above `cap`. Without jitter the delays are exact and deterministic
(0.1, 0.2, 0.4, ... cap).

`jitter` is the share of each delay that is random: `next()` returns `d * (1 - jitter + jitter * rng())`,
so `jitter=1.0` is full jitter (uniform in [0, d)) and `jitter=0.5` a delay in [d/2, d). `rng` defaults to
the `random` module's generator.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable


class Backoff:
    __slots__ = ("_initial", "_cap", "_factor", "_jitter", "_rng", "_current")

    def __init__(self, initial: float, *, cap: float = math.inf, factor: float = 2.0, jitter: float = 0.0,
                 rng: Callable[[], float] | None = None) -> None:
        if initial < 0 or cap < 0:
            raise ValueError("backoff delays cannot be negative")
        if factor < 1:
            raise ValueError("the backoff factor must be at least 1")
        if not 0.0 <= jitter <= 1.0:
            raise ValueError("jitter is a share of the delay, between 0 and 1")
        self._initial = initial
        self._cap = cap
        self._factor = factor
        self._jitter = jitter
        self._rng = rng
        self._current = initial

    @property
    def current(self) -> float:
        """The delay the next `next()` starts from, before jitter."""
        return self._current

    def next(self) -> float:
        """The delay to wait now; the following one grows by `factor`, up to `cap`."""
        delay = self._current
        self.skip()
        if self._jitter:
            draw = self._rng() if self._rng is not None else random.random()
            return delay * (1.0 - self._jitter + self._jitter * draw)
        return delay

    def skip(self) -> None:
        """Move on to the next delay as `next()` does, without drawing one (for a wait that something else
        decided, such as a `Retry-After`)."""
        self._current = min(self._current * self._factor, self._cap)

    def reset(self) -> None:
        """Start over from `initial`."""
        self._current = self._initial
