"""What a failed statement of the alerts adapters can raise, on either path (SQLAlchemy or asyncpg)."""

from __future__ import annotations

import asyncpg
from sqlalchemy.exc import SQLAlchemyError

DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    SQLAlchemyError,
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
