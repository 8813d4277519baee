"""A database to show on the web pages: simulated accounts scored by the real scoring service (in-process
bus, SQLite), the portfolio columns filled from the states, and an alert with its deliveries."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from services.alerts.adapters import tables as at
from services.scoring.adapters import tables as st
from services.scoring.bootstrap import build_model, run_consumer, scoring_runtime
from services.simulate import catalog
from shared.bus.memory import MemoryBus
from shared.db import create_engine
from shared.migrate import upgrade_async
from shared.settings import Settings
from tests.conftest import test_api_keys
from tests.stack.scoring.harness import Stack, produce, records_for, wait_caught_up
from tests.stack.scoring.streams import NOW, simulated

CSM_NAME, CSM_EMAIL, CSM_SLACK = catalog.CSMS[0]


@dataclass(frozen=True)
class World:
    database_url: str
    settings: Settings
    now: datetime                 # the simulation's "now": the pages' clock
    csm_accounts: list[str]       # accounts of CSM_EMAIL
    risky_account: str            # an account with open risks (and an alert with deliveries)


async def build_world(tmp_path: Path, *, accounts: int = 18, seed: int = 5) -> World:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ui.db'}"
    await upgrade_async(url)
    settings = Settings(kafka_bootstrap_servers="", topic_prefix="ui.", database_url=url,
                        api_keys=test_api_keys(), outbox_dir=str(tmp_path / "outbox"))
    bus = MemoryBus(default_partitions=6)
    stack = Stack("embedded", bus, settings)
    await produce(bus, records_for(stack.topics, simulated(accounts=accounts, days=45, seed=seed)))
    async with scoring_runtime(settings, bus=bus, migrate=False) as rt:
        task = asyncio.create_task(run_consumer(rt.consumer, restart=False))
        for _ in range(600):
            if rt.consumer.running or task.done():
                break
            await asyncio.sleep(0.05)
        if task.done():
            task.result()   # the consumer failed at start: show why
        try:
            await wait_caught_up(stack, rt, timeout_s=180)
        finally:
            rt.consumer.stop()
            await asyncio.wait_for(task, timeout=30)
    await bus.close()

    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            c = st.accounts.c
            csm_accounts = [r[0] for r in await conn.execute(
                sa.select(c.account_id).where(c.csm_email == CSM_EMAIL).order_by(c.account_id))]
            risky = (await conn.execute(
                sa.select(st.risks.c.account_id).where(st.risks.c.status == "open")
                .order_by(st.risks.c.id).limit(1))).scalar_one()
            risk = (await conn.execute(sa.select(st.risks).where(st.risks.c.account_id == risky)
                                       .order_by(st.risks.c.id).limit(1))).mappings().one()
        async with engine.begin() as conn:
            await _alert(conn, risk)
    finally:
        await engine.dispose()
    assert len(csm_accounts) >= 3, csm_accounts
    return World(url, settings, NOW + timedelta(hours=1), csm_accounts, risky)


async def _alert(conn: sa.ext.asyncio.AsyncConnection, risk: sa.RowMapping) -> None:
    """An alert of the risk, with one delivered and one failed notification (as alerts would record)."""
    at_ = datetime(2026, 2, 27, 9, 0, tzinfo=UTC)
    inserted = await conn.execute(sa.insert(at.alerts).values(
        risk_id=risk["risk_id"], account_id=risk["account_id"], type=risk["type"], severity=risk["severity"],
        status="open", summary=risk["summary"], last_event_id=f"{risk['risk_id']}:1", last_seq=1,
        last_event={}, opened_at=at_, updated_at=at_))
    alert_id = inserted.inserted_primary_key[0]
    for n, (channel, target, status, error) in enumerate([
            ("slack_dm", "slack_dm:U01MAYAPATEL", "sent", None),
            ("email", "email:maya.patel@example.com", "failed", "SMTP 451 try again later")]):
        await conn.execute(sa.insert(at.deliveries).values(
            dedup_key=f"{risk['risk_id']}:{n}", alert_id=alert_id, kind="opened", channel=channel,
            target_key=target, status=status, notification={}, attempts=1 + n, error=error,
            created_at=at_ + timedelta(minutes=n), updated_at=at_ + timedelta(minutes=n),
            sent_at=at_ if status == "sent" else None))


def read_model(world: World):  # noqa: ANN201 - the UiReadModel on a fresh engine (caller disposes it)
    from services.ui.queries import UiReadModel

    engine = create_engine(world.database_url, pool_size=2)
    return engine, UiReadModel(engine, build_model(world.settings))
