"""`churnsignal run` migrates its database once, at the composition root; a service started on its own on
SQLite (`churnsignal serve`, the scoring worker) still migrates at start."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fastapi import FastAPI

import shared.migrate
from services.embedded import EmbeddedRun
from shared.bus.memory import MemoryBus
from shared.settings import Settings
from tests.support.ports import free_port


@pytest.fixture
def upgrades(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every Alembic upgrade made in this test (through `shared.migrate`, which every caller goes through)."""
    calls: list[str] = []
    real = shared.migrate.upgrade

    def counting(url: str, revision: str = "head") -> None:
        calls.append(url)
        real(url, revision)

    monkeypatch.setattr(shared.migrate, "upgrade", counting)
    return calls


async def test_embedded_run_migrates_once(settings: Settings, tmp_path: Path, upgrades: list[str]):
    settings = settings.model_copy(update={
        "ingest_port": free_port(), "scoring_port": free_port(), "alerts_port": free_port(),
    })
    out = io.StringIO()
    run = EmbeddedRun(settings, simulate=False, params=None, duration_s=0.0, speedup=3600.0,
                      truth_path=str(tmp_path / "truth.json"), keep_serving=False, out=out)
    assert await run.run() == 0, out.getvalue()
    assert "churnsignal is running" in out.getvalue()
    assert all(s.server is not None and s.server.started for s in run.services)
    assert upgrades == [settings.database_url]


async def _start_and_stop(app: FastAPI) -> None:
    async with app.router.lifespan_context(app):
        pass


async def test_scoring_on_its_own_still_migrates_sqlite_at_start(settings: Settings, upgrades: list[str]):
    from services.scoring.bootstrap import create_app

    await _start_and_stop(create_app(settings, bus=MemoryBus(6)))
    assert upgrades == [settings.database_url]


async def test_alerts_on_its_own_still_migrates_sqlite_at_start(settings: Settings, upgrades: list[str]):
    from services.alerts.bootstrap import create_app

    await _start_and_stop(create_app(settings, bus=MemoryBus(6)))
    assert upgrades == [settings.database_url]
