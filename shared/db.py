"""Database engine for `postgresql+asyncpg` and `sqlite+aiosqlite` URLs."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from shared.settings import normalize_database_url


def create_engine(url: str, *, pool_size: int = 10, pre_ping: bool = True) -> AsyncEngine:
    """`pre_ping=False` saves a round trip per checkout, for callers that invalidate broken connections
    themselves and retry (the consumers' batch loops). `postgres://` and `postgresql://` URLs use asyncpg."""
    url = normalize_database_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=pre_ping)


def is_postgres(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


async def driver_connection(conn: AsyncConnection) -> Any:
    """The DBAPI driver's own connection under a SQLAlchemy one (asyncpg's, on PostgreSQL)."""
    raw = await conn.get_raw_connection()
    return raw.driver_connection


@contextlib.asynccontextmanager
async def pooled_driver_connection(
    engine: AsyncEngine, *, keep_on: tuple[type[BaseException], ...] = ()
) -> AsyncIterator[Any]:
    """The driver's connection under a pooled one, for statements sent straight to asyncpg. A connection
    whose block raised (broken, terminated by the server, interrupted mid-statement) is invalidated, never
    reused, unless the error is one of `keep_on` (only the statement failed)."""
    async with engine.connect() as conn:
        driver = await driver_connection(conn)
        try:
            yield driver
        except keep_on:
            raise
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.invalidate()
            raise
