"""Retention: old rows pruned by age, in short batches, off the hot path (docs/retention.md).

Each service lists its tables as `PruneStep`s (services/scoring/adapters/retention.py,
services/alerts/adapters/retention.py) and its composition root runs one `RetentionPruner` in the
background: shortly after start, then every `CHURNSIGNAL_RETENTION_INTERVAL_S`. A step deletes at most
`batch_size` rows per statement, one short transaction each, with a pause between batches so that the
consumers' transactions are never starved.

Every replica may prune: a step is an age-bounded DELETE, so running it twice, or on two replicas at once,
deletes nothing more. On PostgreSQL a batch takes only rows no other pruner holds (`FOR UPDATE SKIP
LOCKED`), so concurrent pruners neither wait for nor deadlock on each other.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.db_errors import ENGINE_ERRORS
from shared.metrics import RetentionMetrics

log = logging.getLogger(__name__)

BATCH_SIZE = 5000
PAUSE_S = 0.1          # between two batches of one table
FIRST_RUN_S = 30.0     # after start: the service's own start-up goes first


def utcnow() -> datetime:
    return datetime.now(UTC)


# -- ages --------------------------------------------------------------------------------------------------------
# A table's age (CHURNSIGNAL_RETENTION_DAYS): a number of days as before (`35`, `0.5`), or a number with a unit,
# `m` minutes, `h` hours, `d` days (`10m`, `6h`, `35d`). Kept in days.
_AGE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([mhd]?)")
_DAYS_PER_UNIT = {"": 1.0, "d": 1.0, "h": 1 / 24, "m": 1 / 1440}
AGE_FORMS = "a number of days, or a number with m, h or d: 10m, 6h, 35d"
MIN_AGE_DAYS = 1 / 1440          # one minute: the least age a table accepts unless it needs more
MAX_AGE_DAYS = 36500.0


def age_days(value: object) -> float:
    """An age setting in days: a number (days) or a string like `10m`, `6h`, `35d` or `35` (days); ValueError,
    saying what is accepted, for anything else."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        found = _AGE.fullmatch(value.strip().lower())
        if found is not None:
            return float(found[1]) * _DAYS_PER_UNIT[found[2]]
    shown = repr(value) if isinstance(value, str | int | float) and len(repr(value)) <= 40 else "this value"
    raise ValueError(f"not an age: {shown} ({AGE_FORMS})")


def ages_in_days(value: object) -> object:
    """Each value of a table -> age mapping as days (`age_days`); anything but a mapping is left for the
    settings' own type check."""
    if not isinstance(value, dict):
        return value
    out: dict[object, float] = {}
    for table, age in value.items():
        try:
            out[table] = age_days(age)
        except ValueError as exc:
            raise ValueError(f"{table}: {exc}") from None
    return out


def format_age(days: float) -> str:
    """An age in days as the shortest of `90s`, `5m`, `6h`, `35d` (`1.5d`, `7.5m`...) that says it exactly."""
    if not math.isfinite(days):
        return f"{days:g}"
    seconds = days * 86400
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(seconds) >= size:
            value = round(seconds / size, 4)
            if value == int(value) or unit == "m":
                return f"{value:g}{unit}"
    return f"{round(seconds, 3):g}s"


def dedup_grace(horizon: timedelta) -> timedelta:
    """How long a deduplication record is kept beyond its horizon before it is pruned: room for the clocks
    the two sides of the comparison come from (ingest accepts `occurred_at` up to 5 minutes ahead; risk
    events carry scoring's clock, alerts' records its own). A day, or the horizon when shorter (a horizon
    of minutes, as in the soak of `make chaos`), never under 10 minutes."""
    return max(timedelta(minutes=10), min(timedelta(days=1), horizon))


# The moment before which a step's rows go, given the connection and now (None: nothing to prune now).
Cutoff = Callable[[AsyncConnection, datetime], Awaitable[datetime | None]]


@dataclass(frozen=True)
class PruneStep:
    """One table's retention: its rows matching `prunable(cutoff)` go, oldest first, `batch_size` at a time.

    `key` is the table's primary key column (the batch is chosen by it); `cutoff` defaults to now - `age`."""

    table: str                                          # the metric label and settings key
    key: sa.Column[Any]
    prunable: Callable[[datetime], sa.ColumnElement[bool]]
    age: timedelta
    cutoff: Cutoff | None = None

    async def cutoff_at(self, conn: AsyncConnection, now: datetime) -> datetime | None:
        if self.cutoff is not None:
            return await self.cutoff(conn, now)
        return now - self.age

    def batch(self, cutoff: datetime, size: int) -> sa.Delete:
        """DELETE ... WHERE key IN (SELECT key ... LIMIT size): portable, and bounded whatever the backlog."""
        table = self.key.table
        chosen = (sa.select(self.key).where(self.prunable(cutoff)).limit(size)
                  .with_for_update(skip_locked=True))   # (PostgreSQL only; SQLite has one writer anyway)
        return sa.delete(table).where(self.key.in_(chosen.scalar_subquery()))


class RetentionPruner:
    """Runs a service's prune steps now (`run_once`) or forever (`run_forever`), counting deleted rows."""

    def __init__(self, engine: AsyncEngine, steps: list[PruneStep], *, metrics: RetentionMetrics,
                 interval_s: float, clock: Callable[[], datetime] = utcnow, batch_size: int = BATCH_SIZE,
                 pause_s: float = PAUSE_S, first_run_s: float = FIRST_RUN_S) -> None:
        self._engine = engine
        self.steps = steps
        self._metrics = metrics
        self._clock = clock
        self.interval_s = interval_s
        self.batch_size = batch_size
        self.pause_s = pause_s
        self.first_run_s = first_run_s
        self.runs = 0
        for step in steps:   # each table's series exists from the start (0 until something goes)
            metrics.deleted.labels(step.table)

    async def run_once(self) -> dict[str, int]:
        """One pass over every table: rows deleted per table."""
        now = self._clock()
        deleted: dict[str, int] = {}
        for step in self.steps:
            deleted[step.table] = await self._prune(step, now)
        self.runs += 1
        self._metrics.last_run.set(time.time())
        pruned = {table: n for table, n in deleted.items() if n}
        if pruned:
            log.info("retention: deleted %s", ", ".join(f"{n} from {table}" for table, n in pruned.items()))
        return deleted

    async def _prune(self, step: PruneStep, now: datetime) -> int:
        async with self._engine.connect() as conn:
            cutoff = await step.cutoff_at(conn, now)
        if cutoff is None:
            return 0
        total = 0
        counter = self._metrics.deleted.labels(step.table)
        while True:
            async with self._engine.begin() as conn:
                result = await conn.execute(step.batch(cutoff, self.batch_size))
            n = max(result.rowcount or 0, 0)
            total += n
            counter.inc(n)
            if n < self.batch_size:
                return total
            await asyncio.sleep(self.pause_s)

    async def run_forever(self) -> None:
        """First run after `first_run_s`, then every `interval_s`; a failed run is logged and tried again."""
        await asyncio.sleep(self.first_run_s)
        while True:
            try:
                await self.run_once()
            except ENGINE_ERRORS as exc:   # the class only: a driver's text may carry a connection URL
                log.warning("retention run failed (%s); next try in %.0fs", type(exc).__name__, self.interval_s)
            except Exception:   # a bug in a step: said loudly, and the service goes on (nothing was half done)
                log.exception("retention run failed; next try in %.0fs", self.interval_s)
            await asyncio.sleep(self.interval_s)
