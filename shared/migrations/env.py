"""Alembic environment: runs the project's migrations on the configured async engine."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from shared.db import create_engine
from shared.schema import target_metadata

# The tables as the code declares them: `alembic check` (and tests/shared/test_migration_drift.py) compares
# them with what the migrations built.
TARGET = target_metadata()


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=TARGET,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


async def _main(url: str) -> None:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


url = context.config.get_main_option("sqlalchemy.url")
if context.is_offline_mode():
    context.configure(url=url, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_main(url))
