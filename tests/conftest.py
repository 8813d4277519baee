"""Fixtures shared by the whole suite.

Integration fixtures use the real Kafka broker and PostgreSQL started by `make services`
(`CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS`, `CHURNSIGNAL_TEST_DATABASE_URL`). Behaviour tests take the
parametrized `bus` fixture, so one suite runs on the in-process bus and on Kafka.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.bus.memory import MemoryBus
from shared.bus.port import Bus
from shared.errors import BusUnavailable
from shared.settings import ApiKey, Settings, hash_key
from shared.topics import Topics

KAFKA = os.environ.get("CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS", "")
PG_URL = os.environ.get("CHURNSIGNAL_TEST_DATABASE_URL", "")

# Plain keys used by tests; only their hashes go into settings.
INGEST_KEY = "test-ingest-key"
READ_KEY = "test-read-key"
ADMIN_KEY = "test-admin-key"
USAGE_ONLY_KEY = "test-usage-only-key"


def test_api_keys() -> list[ApiKey]:
    return [
        ApiKey(name="ingest", sha256=hash_key(INGEST_KEY), scopes=["ingest"]),
        ApiKey(name="reader", sha256=hash_key(READ_KEY), scopes=["read"]),
        ApiKey(name="admin", sha256=hash_key(ADMIN_KEY), scopes=["admin"]),
        ApiKey(name="usage-only", sha256=hash_key(USAGE_ONLY_KEY), scopes=["ingest:usage"]),
    ]


def requires_kafka() -> pytest.MarkDecorator:
    return pytest.mark.skipif(not KAFKA, reason="CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS not set (run `make services`)")


def requires_pg() -> pytest.MarkDecorator:
    return pytest.mark.skipif(not PG_URL, reason="CHURNSIGNAL_TEST_DATABASE_URL not set (run `make services`)")


@pytest.fixture
def topic_prefix() -> str:
    """A fresh prefix per test so tests never read each other's records."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.integration)])
async def bus(request: pytest.FixtureRequest, topic_prefix: str) -> AsyncIterator[Bus]:
    """The same behaviour tests on the in-process bus and on the real broker."""
    if request.param == "memory":
        yield MemoryBus(default_partitions=6)
        return
    if not KAFKA:
        pytest.skip("CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS not set (run `make services`)")
    from shared.bus.kafka import KafkaBus

    kafka_bus = KafkaBus(KAFKA, publish_timeout_s=10.0)
    await kafka_bus.ensure_topics(Topics(topic_prefix).all, partitions=6)
    yield kafka_bus
    await kafka_bus.close()
    # Every test makes its own topics; left behind they slow the broker down for the rest of the run.
    try:
        await kafka_bus.delete_topics(Topics(topic_prefix).all)
    except BusUnavailable as exc:  # cleanup only: a test that stopped the broker may leave them
        logging.getLogger(__name__).warning("test topics left behind: %s", exc)


@pytest.fixture
def settings(topic_prefix: str, tmp_path: Path) -> Settings:
    """Settings for one test: its own topics, SQLite file and outbox folder."""
    return Settings(
        kafka_bootstrap_servers="",
        topic_prefix=topic_prefix,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'churnsignal.db'}",
        api_keys=test_api_keys(),
        outbox_dir=str(tmp_path / "outbox"),
    )


async def _create_pg_database() -> str:
    import asyncpg

    from shared.migrate import upgrade_async

    name = f"t_{uuid.uuid4().hex[:12]}"
    base, _, _ = PG_URL.rpartition("/")
    conn = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = f"{base}/{name}"
    await upgrade_async(url)
    return url


async def _drop_pg_database(url: str) -> None:
    import asyncpg

    name = url.rpartition("/")[2]
    conn = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        # An autovacuum worker on the fresh database can make FORCE fail for a moment; a leftover test
        # database is harmless, so try a few times and then leave it.
        for attempt in range(5):
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except (asyncpg.InsufficientPrivilegeError, asyncpg.ObjectInUseError):
                await asyncio.sleep(0.2 * (attempt + 1))
    finally:
        await conn.close()


async def _create_sqlite_database(tmp_path: Path) -> str:
    from shared.migrate import upgrade_async

    url = f"sqlite+aiosqlite:///{tmp_path / f'state-{uuid.uuid4().hex[:6]}.db'}"
    await upgrade_async(url)
    return url


@pytest.fixture
async def pg_database_url() -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL database for one test, dropped afterwards."""
    if not PG_URL:
        pytest.skip("CHURNSIGNAL_TEST_DATABASE_URL not set (run `make services`)")
    url = await _create_pg_database()
    yield url
    await _drop_pg_database(url)


@pytest.fixture
async def sqlite_database_url(tmp_path: Path) -> str:
    """A fresh, migrated SQLite database for one test."""
    return await _create_sqlite_database(tmp_path)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The same behaviour tests on SQLite and on the real PostgreSQL."""
    if request.param == "sqlite":
        yield await _create_sqlite_database(tmp_path)
        return
    if not PG_URL:
        pytest.skip("CHURNSIGNAL_TEST_DATABASE_URL not set (run `make services`)")
    url = await _create_pg_database()
    yield url
    await _drop_pg_database(url)
