"""Send slots per rate key shared by every alerts instance, in PostgreSQL (`alerts_rate_slots`, 0003).

The `SlotStore` of `services.alerts.notify.delivery`. A row holds when a key's next slot is free. Every
statement runs in autocommit on the asyncpg connection under a pooled SQLAlchemy one and reads the
DATABASE's clock (`clock_timestamp()`, after the row lock is taken), never an instance's: the instances'
clocks may disagree, and the wait handed back is relative ("your slot starts in 0.73 s").

Reservations that arrive while statements are in flight are coalesced: one statement takes the next slot
of up to `max_batch` keys, at most `max_statements` statements at a time, so a burst of sends to many
targets costs a few round trips and a couple of connections, not one each. A batch locks its rows in key
order, so concurrent batches of different instances cannot deadlock.

Rows of idle keys are left in place: a key is one Slack webhook or DM user (a few hundred bytes each, as
many as there are CSMs and channels), and a row whose time has passed acts like no row.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.alerts.notify.delivery import SlotStoreUnavailable
from shared.db import create_engine, pooled_driver_connection
from shared.db_errors import DATABASE_ERRORS, STALE_CONNECTION_ERRORS

log = logging.getLogger(__name__)

MAX_KEY = 300  # alerts_rate_slots.key

# The insert case gives a slot that starts now (the value returned is a hair below 0); the update case
# the later of the stored next slot and now. RETURNING sees the row as written.
_RESERVE = """
INSERT INTO alerts_rate_slots AS s (key, next_at)
SELECT k, clock_timestamp() + make_interval(secs => $2::float8)
FROM unnest($1::text[]) AS u(k)
ORDER BY k
ON CONFLICT (key) DO UPDATE
SET next_at = GREATEST(s.next_at, clock_timestamp()) + make_interval(secs => $2::float8)
RETURNING s.key, EXTRACT(EPOCH FROM s.next_at - clock_timestamp())::float8 - $2::float8
"""

_DEFER = """
INSERT INTO alerts_rate_slots AS s (key, next_at)
VALUES ($1, clock_timestamp() + make_interval(secs => $2::float8))
ON CONFLICT (key) DO UPDATE SET next_at = GREATEST(s.next_at, EXCLUDED.next_at)
"""


def slot_key(rate_key: str) -> str:
    """The row key of a rate key: itself, or a digest-suffixed prefix when it would not fit."""
    if len(rate_key) <= MAX_KEY:
        return rate_key
    return f"{rate_key[:MAX_KEY - 65]}#{hashlib.sha256(rate_key.encode()).hexdigest()}"


@dataclass
class _Request:
    key: str
    interval_s: float
    future: asyncio.Future[float]


class PgSlotStore:
    def __init__(self, engine: AsyncEngine, *, own_engine: bool = False, max_batch: int = 500,
                 max_statements: int = 2, statement_timeout_s: float = 5.0) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError("the shared rate slots need a postgresql+asyncpg database")
        self._engine = engine
        self._own_engine = own_engine
        self._max_batch = max_batch
        self._max_statements = max_statements
        self._timeout = statement_timeout_s
        self._pending: list[_Request] = []
        self._flushers: set[asyncio.Task[None]] = set()
        self._busy = 0
        self.statements = 0  # statements sent (reserve batches and deferrals)

    @classmethod
    def from_url(cls, url: str, *, connections: int = 2) -> PgSlotStore:
        """A store on its own small pool, so that slot statements never wait behind the consumer's claims
        (nor hold its connections). Connections are not pinged on checkout (a round trip each): a statement
        that meets a dropped one is sent again on a new pool."""
        engine = create_engine(url, pool_size=connections, pre_ping=False)
        return cls(engine, own_engine=True, max_statements=connections)

    async def reserve(self, key: str, interval_s: float) -> float:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        # A caller that gave up (timed out) never reads an exception set afterwards.
        future.add_done_callback(_retrieve)
        self._pending.append(_Request(slot_key(key), interval_s, future))
        self._kick()
        return await future

    async def defer(self, key: str, seconds: float) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._execute(_DEFER, slot_key(key), seconds)
        except DATABASE_ERRORS as exc:  # the timeout's TimeoutError included: an OSError
            raise SlotStoreUnavailable(f"rate slots: {type(exc).__name__}", code="rate_slots") from exc

    async def close(self) -> None:
        """Ends the statements in flight (their callers see SlotStoreUnavailable or a cancellation) and
        disposes of the engine if the store owns it."""
        for task in list(self._flushers):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for request in self._pending:
            request.future.cancel()
        self._pending.clear()
        if self._own_engine:
            await self._engine.dispose()

    # -- batching ---------------------------------------------------------------------------------
    def _kick(self) -> None:
        idle = len(self._flushers) - self._busy  # flushers about to take the pending requests
        if idle == 0 and len(self._flushers) < self._max_statements:
            self._flushers.add(asyncio.create_task(self._flush(), name="alerts-rate-slots"))

    async def _flush(self) -> None:
        try:
            while batch := self._take():
                self._busy += 1
                try:
                    await self._run(batch)
                finally:
                    self._busy -= 1
        finally:
            # At once, not in a done callback: a request queued before that callback ran would find this
            # flusher still counted as about to take it, and wait for nobody.
            if (task := asyncio.current_task()) is not None:
                self._flushers.discard(task)

    def _take(self) -> list[_Request]:
        """Up to `max_batch` waiting requests with one interval and distinct keys; the rest stay."""
        live = [r for r in self._pending if not r.future.done()]
        batch: list[_Request] = []
        rest: list[_Request] = []
        keys: set[str] = set()
        for request in live:
            if (len(batch) < self._max_batch and request.key not in keys
                    and request.interval_s == live[0].interval_s):
                batch.append(request)
                keys.add(request.key)
            else:
                rest.append(request)
        self._pending = rest
        return batch

    async def _run(self, batch: list[_Request]) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                rows = await self._execute(_RESERVE, [r.key for r in batch], batch[0].interval_s, fetch=True)
            waits = {row[0]: float(row[1]) for row in rows}
            for request in batch:
                if not request.future.done():
                    request.future.set_result(waits[request.key])
        except DATABASE_ERRORS as exc:  # the timeout's TimeoutError included: an OSError
            _fail(batch, type(exc).__name__)
        except Exception as exc:  # noqa: BLE001 - a bug here must not stall the sends waiting on it
            log.error("rate slot batch failed with %s", type(exc).__name__, exc_info=exc)
            _fail(batch, type(exc).__name__)
        finally:
            for request in batch:  # cancelled mid-statement (close)
                if not request.future.done():
                    request.future.cancel()

    async def _execute(self, statement: str, *args: Any, fetch: bool = False) -> Any:
        """One statement, one round trip; once more on a new connection if the pooled one had gone stale
        (and the store's own pool is replaced: its other connections went with the same server). A statement
        that ran but whose answer was lost takes one more slot than needed: a wasted slot, no harm."""
        for attempt in (1, 2):
            try:
                async with self._connection() as apg:
                    self.statements += 1
                    if fetch:
                        return await apg.fetch(statement, *args)
                    return await apg.execute(statement, *args)
            except STALE_CONNECTION_ERRORS:
                if attempt == 2:
                    raise
                if self._own_engine:
                    await self._engine.dispose()
        raise AssertionError("unreachable")

    def _connection(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """The asyncpg connection under a pooled one, in autocommit (no BEGIN is ever sent on it). A
        connection that failed or was interrupted mid-statement is invalidated, never reused."""
        return pooled_driver_connection(self._engine)


def _fail(batch: list[_Request], reason: str) -> None:
    for request in batch:
        if not request.future.done():
            request.future.set_exception(SlotStoreUnavailable(f"rate slots: {reason}", code="rate_slots"))


def _retrieve(future: asyncio.Future[float]) -> None:
    if not future.cancelled():
        future.exception()
