"""The consumer's claim transactions (`ClaimSession`), one per batch on a connection kept between batches,
and the choice between them for an engine.

- `SqlClaimSession`: `conn.begin()` on the kept SQLAlchemy connection, the repository as `ClaimStore`.
- `PgClaimSession`: BEGIN/COMMIT straight on the asyncpg connection under the kept one, `PgClaimStore`
  (four round trips per batch). SQLAlchemy does not know about that transaction, so a failed or cancelled
  claim never lets the connection go back to the pool: it is invalidated.

`claim_session(engine)` is the one place that picks by dialect; the composition root calls it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterable

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.alerts.adapters.claim_pg import PgClaimStore
from services.alerts.adapters.repository import AlertsRepository
from services.alerts.service.ports import ClaimSession, ClaimStore
from shared.bus.port import TopicPartition
from shared.db import is_postgres
from shared.db_errors import DATABASE_ERRORS

log = logging.getLogger(__name__)


def claim_session(engine: AsyncEngine) -> ClaimSession:
    """asyncpg statements on PostgreSQL, SQLAlchemy Core elsewhere (SQLite)."""
    return PgClaimSession(engine) if is_postgres(engine) else SqlClaimSession(engine)


class SqlClaimSession:
    """`ClaimSession` in SQLAlchemy Core."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._conn: AsyncConnection | None = None

    @property
    def connection(self) -> AsyncConnection | None:
        return self._conn

    async def _connection(self) -> AsyncConnection:
        """One connection kept for the claim transactions (no pool checkout, no ping per batch)."""
        if self._conn is None:
            self._conn = await self.engine.connect()
        return self._conn

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[ClaimStore]:
        conn = await self._connection()
        async with conn.begin():
            yield AlertsRepository(conn)

    async def positions(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """On a pool connection of its own, as before a claim runs."""
        async with self.engine.connect() as conn:
            return await AlertsRepository(conn).positions(tps)

    async def close(self, *, invalidate: bool = False) -> None:
        """Give the kept connection back; `invalidate` after a failed claim: it may be broken or still in
        the failed transaction, so it is closed instead of going back to the pool."""
        conn, self._conn = self._conn, None
        self._forget_connection()
        if conn is not None:
            try:
                if invalidate:
                    await conn.invalidate()
                await conn.close()
            except DATABASE_ERRORS as exc:
                log.debug("closing the claim connection failed (%s)", type(exc).__name__)

    def _forget_connection(self) -> None:
        """Drop whatever lives on the kept connection (nothing here)."""


class PgClaimSession(SqlClaimSession):
    """`ClaimSession` on PostgreSQL: `PgClaimStore` on the asyncpg connection under the kept one."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self._store: PgClaimStore | None = None  # on the asyncpg connection under `_conn`

    def _forget_connection(self) -> None:
        self._store = None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[ClaimStore]:
        conn = await self._connection()
        if self._store is None:
            self._store = await PgClaimStore.under(conn)
        try:
            async with self._store.transaction() as store:
                yield store
        except BaseException:
            # Failed, or cancelled mid-statement: SQLAlchemy does not know about this transaction, so the
            # connection must never go back to the pool as it is.
            await self.close(invalidate=True)
            raise
