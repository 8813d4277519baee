"""Fixtures for the alerts service: one stack per test (embedded bus + SQLite, or Kafka + PostgreSQL),
the fake Slack and a real SMTP server, and a harness that starts/stops the app like uvicorn would."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.alerts.bootstrap import create_app
from shared.bus.memory import MemoryBus
from shared.bus.port import Bus, OutMessage
from shared.risks import AccountBrief, CsmRef, HealthBrief, RiskEvent, Trigger
from shared.settings import Settings
from shared.topics import Topics
from tests.conftest import (
    ADMIN_KEY,
    KAFKA,
    PG_URL,
    READ_KEY,
    _create_pg_database,
    _create_sqlite_database,
    _drop_pg_database,
    test_api_keys,
)
from tests.support.fixtures import fake_slack, fake_smtp  # noqa: F401
from tests.support.slack import FakeSlack
from tests.support.smtp import FakeSmtp

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
READ = {"Authorization": f"Bearer {READ_KEY}"}
BOT_TOKEN = "xoxb-test-token"


@dataclass
class Stack:
    """Where the app runs: its bus, its database, its topics."""

    kind: str  # "embedded" (in-process bus + SQLite) or "real" (Kafka + PostgreSQL)
    bus: Bus
    database_url: str
    topic_prefix: str
    tmp_path: Path
    slack: FakeSlack
    smtp: FakeSmtp
    apps: list[RunningApp] = field(default_factory=list)

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "kafka_bootstrap_servers": KAFKA if self.kind == "real" else "",
            "topic_prefix": self.topic_prefix,
            "database_url": self.database_url,
            "api_keys": test_api_keys(),
            "outbox_dir": str(self.tmp_path / "outbox"),
            "slack_api_url": self.slack.api_url,
            "slack_bot_token": BOT_TOKEN,
            "smtp_host": self.smtp.host,
            "smtp_port": self.smtp.port,
            "smtp_from": "alerts@churnsignal.test",
            "public_url": "https://churnsignal.test",
            "alerts_delivery_deadline_s": 20.0,
            "alerts_repeat_check_s": 0.2,
            "alerts_digest_check_s": 0.1,
        }
        values.update(overrides)
        return Settings(**values)

    def routing_file(self, text: str) -> str:
        path = self.tmp_path / "routing.yaml"
        path.write_text(text, encoding="utf-8")
        return str(path)

    async def start(self, **overrides: Any) -> RunningApp:
        """Starts an app and waits until its consumer owns the risks partitions."""
        app = create_app(self.settings(**overrides), bus=self.bus)
        running = RunningApp(app)
        await running.start()
        self.apps.append(running)
        await running.wait_idle(timeout_s=20)
        return running

    async def publish(self, *risks: RiskEvent) -> None:
        publisher = self.bus.publisher()
        await publisher.start()
        try:
            await publisher.publish(
                [OutMessage(self.topics.risks, r.account_id.encode(), r.to_json()) for r in risks]
            )
        finally:
            await publisher.stop()


class RunningApp:
    """The app with its lifespan entered (as uvicorn does) and an HTTP client on it."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._stack = contextlib.AsyncExitStack()
        self.client: httpx.AsyncClient | None = None
        self.running = False

    async def start(self) -> None:
        await self._stack.enter_async_context(self.app.router.lifespan_context(self.app))
        self.client = await self._stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=self.app), base_url="http://alerts", headers=ADMIN
            )
        )
        self.running = True

    async def stop(self) -> None:
        if self.running:
            self.running = False
            await self._stack.aclose()

    @property
    def http(self) -> httpx.AsyncClient:
        assert self.client is not None
        return self.client

    async def wait_idle(self, timeout_s: float = 10.0) -> None:
        """Until the consumer has applied everything published and nothing is being sent or recorded."""
        consumer = self.app.state.consumer
        runner = self.app.state.runner
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            sub = consumer.subscriber
            if consumer.healthy and sub is not None and sub.assignment():
                assigned = sorted(sub.assignment())
                ends = await sub.end_offsets(assigned)
                caught_up = all(consumer._positions.get(tp, 0) >= ends.get(tp, 0) for tp in assigned)
                if caught_up and runner.in_flight == 0 and not runner.busy_ids():
                    return
            await asyncio.sleep(0.05)
        raise TimeoutError("alerts app did not become idle")


@pytest.fixture(params=["embedded", pytest.param("real", marks=pytest.mark.integration)])
async def stack(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    topic_prefix: str,
    fake_slack: FakeSlack,  # noqa: F811
    fake_smtp: FakeSmtp,  # noqa: F811
) -> AsyncIterator[Stack]:
    """The same alerts behaviour on the embedded stack and on real Kafka + PostgreSQL."""
    fake_slack.add_channel("U100", "U200", "U300", "U400")
    if request.param == "embedded":
        url = await _create_sqlite_database(tmp_path)
        s = Stack("embedded", MemoryBus(6), url, topic_prefix, tmp_path, fake_slack, fake_smtp)
        try:
            yield s
        finally:
            for app in s.apps:
                await app.stop()
        return
    if not KAFKA or not PG_URL:
        pytest.skip(
            "needs CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS and CHURNSIGNAL_TEST_DATABASE_URL (make services)"
        )
    from shared.bus.kafka import KafkaBus

    kafka = KafkaBus(KAFKA, publish_timeout_s=10.0)
    await kafka.ensure_topics(Topics(topic_prefix).all, partitions=6)
    url = await _create_pg_database()
    s = Stack("real", kafka, url, topic_prefix, tmp_path, fake_slack, fake_smtp)
    try:
        yield s
    finally:
        for app in s.apps:
            await app.stop()
        await kafka.close()
        await _drop_database(url)


async def _drop_database(url: str) -> None:
    """Drop the test database, waiting out a background worker (autovacuum) that still holds it:
    `WITH (FORCE)` may not terminate a process of another role."""
    import asyncpg

    for attempt in range(10):
        try:
            await _drop_pg_database(url)
            return
        except (asyncpg.exceptions.InsufficientPrivilegeError, asyncpg.exceptions.ObjectInUseError):
            if attempt == 9:
                raise
            await asyncio.sleep(0.5)


# --- risk events --------------------------------------------------------------------------------------

CSMS = {
    "U100": ("Ada Lovelace", "ada@example.com"),
    "U200": ("Grace Hopper", "grace@example.com"),
    "U300": ("Alan Turing", "alan@example.com"),
    "U400": ("Edsger Dijkstra", "edsger@example.com"),
}


def make_risk(
    account: str = "acct-1",
    *,
    type_: str = "champion_left",
    severity: str = "critical",
    transition: str = "opened",
    seq: int = 1,
    n: int = 1,
    csm: str | None = "U100",
    summary: str | None = None,
    segment: str | None = "enterprise",
    arr: float | None = 250_000.0,
    received_at: datetime | None = None,
) -> RiskEvent:
    """One risk transition as scoring publishes it; `n` tells risks of the same (account, type) apart."""
    risk_id = f"{account}:{type_}:{n}"
    now = datetime.now(UTC)
    csm_ref = None
    if csm is not None:
        name, email = CSMS[csm]
        csm_ref = CsmRef(email=email, slack_user_id=csm, name=name)
    return RiskEvent(
        event_id=f"{risk_id}:{seq}",
        risk_id=risk_id,
        seq=seq,
        transition=transition,  # type: ignore[arg-type]
        account_id=account,
        type=type_,
        severity=severity,  # type: ignore[arg-type]
        summary=summary or f"{type_.replace('_', ' ')} on {account}",
        evidence={"contact": "Jo Champion", "role": "champion", "days_since_last_login": 12},
        health=HealthBrief(score=34.0, tier="red", reasons=["-18: champion left", "-9: usage down 40%"]),
        account=AccountBrief(
            name=f"{account.upper()} Corp",
            csm=csm_ref,
            segment=segment,
            arr=arr,
            renewal_date=(now + timedelta(days=60)).date(),
        ),
        occurred_at=now,
        detected_at=now,
        trigger=Trigger(event_id=f"src-{risk_id}-{seq}", received_at=received_at or now),
    )
