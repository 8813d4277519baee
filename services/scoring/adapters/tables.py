"""SQLAlchemy Core tables of the scoring service (the schema itself is defined by the Alembic revisions)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect


class UtcDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on PostgreSQL (timestamptz) and SQLite (naive text, UTC)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData()

accounts = sa.Table(
    "scoring_accounts", metadata,
    sa.Column("account_id", sa.String(128), primary_key=True),
    sa.Column("partition", sa.Integer(), nullable=False),
    sa.Column("state", sa.LargeBinary(), nullable=False),
    sa.Column("next_due", UtcDateTime(), nullable=True),
    sa.Column("score", sa.Float(), nullable=True),
    sa.Column("tier", sa.String(16), nullable=False),
    sa.Column("as_of", UtcDateTime(), nullable=True),
    sa.Column("config_version", sa.String(128), nullable=True),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    # Revenue facts copied from the state at every save, for the revenue gauges (revision 0004).
    sa.Column("arr", sa.Float(), nullable=True),
    sa.Column("lifecycle", sa.String(16), nullable=True),
    sa.Column("lifecycle_at", UtcDateTime(), nullable=True),
    sa.Column("risk_severity", sa.String(16), nullable=True),
    sa.Column("first_seen_at", UtcDateTime(), nullable=True),
    # Portfolio facts copied from the state at every save, for filtering and sorting (revision 0005).
    sa.Column("csm_email", sa.String(320), nullable=True),
    sa.Column("csm_slack", sa.String(64), nullable=True),
    sa.Column("csm_name", sa.String(200), nullable=True),
    sa.Column("segment", sa.String(64), nullable=True),
    sa.Column("renewal_date", sa.Date(), nullable=True),
)

processed_events = sa.Table(
    "scoring_processed_events", metadata,
    sa.Column("event_id", sa.String(128), primary_key=True),
    # When the id was recorded (revision 0009): retention prunes by it (services/scoring/adapters/retention.py).
    sa.Column("processed_at", UtcDateTime(), nullable=False, server_default=sa.func.current_timestamp()),
)

positions = sa.Table(
    "scoring_positions", metadata,
    sa.Column("topic", sa.String(255), primary_key=True),
    sa.Column("partition", sa.Integer(), primary_key=True),
    sa.Column("next_offset", sa.BigInteger(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)

partitions = sa.Table(
    "scoring_partitions", metadata,
    sa.Column("partition", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("watermark", UtcDateTime(), nullable=True),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)

history = sa.Table(
    "scoring_history", metadata,
    sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(128), nullable=False),
    sa.Column("as_of", UtcDateTime(), nullable=False),
    sa.Column("cause", sa.String(160), nullable=True),
    sa.Column("score", sa.Float(), nullable=True),
    sa.Column("tier", sa.String(16), nullable=False),
    sa.Column("snapshot", sa.Text(), nullable=False),
)

risks = sa.Table(
    "scoring_risks", metadata,
    sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
    sa.Column("risk_id", sa.String(64), nullable=False, unique=True),
    sa.Column("account_id", sa.String(128), nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("seq", sa.Integer(), nullable=False),
    sa.Column("summary", sa.Text(), nullable=False),
    sa.Column("evidence", sa.Text(), nullable=False),
    sa.Column("opened_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("resolved_at", UtcDateTime(), nullable=True),
    sa.Column("trigger_event_id", sa.String(128), nullable=True),
)

outbox = sa.Table(
    "scoring_outbox", metadata,
    sa.Column("id", _BIGID, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(200), nullable=False, unique=True),
    sa.Column("partition", sa.Integer(), nullable=False),
    sa.Column("key", sa.String(128), nullable=False),
    sa.Column("payload", sa.LargeBinary(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("published_at", UtcDateTime(), nullable=True),
)

# The health topic's outbox (revision 0008): per partition and committed batch, its messages, one JSON per
# line, until they are published (then deleted).
health_feed = sa.Table(
    "scoring_health_feed", metadata,
    sa.Column("partition", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("messages", sa.LargeBinary(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
)

# The indexes the migrations create (declared here too, so the drift test compares them).
sa.Index("ix_scoring_accounts_partition", accounts.c.partition)
sa.Index("ix_scoring_accounts_tier", accounts.c.tier, accounts.c.account_id)
sa.Index("ix_scoring_accounts_csm_email", accounts.c.csm_email)
sa.Index("ix_scoring_accounts_csm_slack", accounts.c.csm_slack)
sa.Index("ix_scoring_accounts_renewal_date", accounts.c.renewal_date)
sa.Index("ix_scoring_history_account", history.c.account_id, history.c.id)
sa.Index("ix_scoring_risks_account", risks.c.account_id, risks.c.id)
sa.Index("ix_scoring_risks_status", risks.c.status, risks.c.type, risks.c.id)
sa.Index("ix_scoring_outbox_unpublished", outbox.c.partition, outbox.c.id,
         postgresql_where=outbox.c.published_at.is_(None), sqlite_where=outbox.c.published_at.is_(None))
# Retention's lookups by age (revision 0009).
sa.Index("ix_scoring_processed_events_processed_at", processed_events.c.processed_at)
sa.Index("ix_scoring_outbox_published_at", outbox.c.published_at)
sa.Index("ix_scoring_history_as_of", history.c.as_of)

ALL_TABLES = (accounts, processed_events, positions, partitions, history, risks, outbox, health_feed)
