"""The migrations and the tables the code declares do not drift apart: a database migrated to head has
exactly the tables, columns, indexes and constraints of `shared.schema.target_metadata()` (Alembic's
autogenerate comparison, as `alembic check` runs it), on PostgreSQL and on SQLite."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from shared.db import create_engine
from shared.migrate import upgrade_async
from shared.schema import target_metadata


def _differences(connection: Any) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True,
                                                           "compare_server_default": False})
    return compare_metadata(context, target_metadata())


async def test_a_database_migrated_to_head_matches_the_declared_tables(database_url: str) -> None:
    await upgrade_async(database_url)
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            differences = await conn.run_sync(_differences)
    finally:
        await engine.dispose()
    assert [repr(d)[:300] for d in differences] == []


def test_every_declared_table_is_compared() -> None:
    names = set(target_metadata().tables)
    assert {"scoring_accounts", "alerts_alerts", "churnsignal_link_key"} <= names, names
