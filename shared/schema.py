"""Every table the migrations create, as one SQLAlchemy `MetaData`: Alembic's `target_metadata`
(shared/migrations/env.py), so `alembic check` and the drift test (tests/shared/test_migration_drift.py)
compare the migrated database with the tables the code reads and writes."""

from __future__ import annotations

import sqlalchemy as sa


def target_metadata() -> sa.MetaData:
    """The tables of scoring, alerts and the link key, copied into one MetaData (imported lazily, so the
    migrations do not load the services unless asked)."""
    from services.alerts.adapters import tables as alerts
    from services.scoring.adapters import tables as scoring
    from shared import link_key

    merged = sa.MetaData()
    for metadata in (scoring.metadata, alerts.metadata, link_key.TABLE.metadata):
        for table in metadata.tables.values():
            table.to_metadata(merged)
    return merged
