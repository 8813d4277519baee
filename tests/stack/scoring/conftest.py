"""Fixtures of the scoring service tests: the same behaviour on the embedded default and on the real
Kafka + PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from shared.bus.memory import MemoryBus
from shared.settings import Settings
from shared.topics import Topics
from tests.conftest import KAFKA, PG_URL, _create_pg_database, _drop_pg_database, test_api_keys
from tests.stack.scoring.harness import Stack, delete_topics


@pytest.fixture(params=["embedded", pytest.param("real", marks=pytest.mark.integration)])
async def stack(request: pytest.FixtureRequest, topic_prefix: str, tmp_path: Path) -> AsyncIterator[Stack]:
    """MemoryBus + SQLite (migrated by the service at start), or Kafka + a fresh PostgreSQL database."""
    settings = Settings(kafka_bootstrap_servers="", topic_prefix=topic_prefix,
                        database_url=f"sqlite+aiosqlite:///{tmp_path / 'scoring.db'}",
                        api_keys=test_api_keys(), scoring_group_id=f"scoring-{uuid.uuid4().hex[:8]}")
    if request.param == "embedded":
        yield Stack("embedded", MemoryBus(default_partitions=6), settings)
        return
    if not KAFKA or not PG_URL:
        pytest.skip("needs CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS and CHURNSIGNAL_TEST_DATABASE_URL")
    from shared.bus.kafka import KafkaBus

    bus = KafkaBus(KAFKA, publish_timeout_s=10.0)
    await bus.ensure_topics(Topics(topic_prefix).all, partitions=6)
    url = await _create_pg_database()
    try:
        yield Stack("real", bus, settings.model_copy(update={"kafka_bootstrap_servers": KAFKA,
                                                              "database_url": url}))
    finally:
        await bus.close()
        await _drop_pg_database(url)
        await delete_topics(Topics(topic_prefix).all)


@pytest.fixture
async def fresh_database(stack: Stack, tmp_path: Path) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """Makes further empty databases of the stack's kind (for replays into a fresh database)."""
    made: list[str] = []

    async def make() -> str:
        if stack.kind == "embedded":
            url = f"sqlite+aiosqlite:///{tmp_path / f'fresh-{uuid.uuid4().hex[:6]}.db'}"
        else:
            url = await _create_pg_database()
        made.append(url)
        return url

    yield make
    for url in made:
        if url.startswith("postgresql"):
            await _drop_pg_database(url)
