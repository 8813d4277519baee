"""Apply the Alembic migrations (`churnsignal migrate`, and at start-up in embedded mode)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config

_HERE = Path(__file__).parent / "migrations"
# Alembic keeps per-run state in module globals (`alembic.context`): one migration at a time per process.
_LOCK = threading.Lock()


def alembic_config(url: str) -> Config:
    cfg = Config(str(_HERE / "alembic.ini"))
    cfg.set_main_option("script_location", str(_HERE))
    cfg.set_main_option("version_locations", str(_HERE / "versions"))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the database at `url` (blocking; runs its own event loop)."""
    with _LOCK:
        command.upgrade(alembic_config(url), revision)


async def upgrade_async(url: str, revision: str = "head") -> None:
    """Same, from inside a running event loop (Alembic's env runs its own loop in a thread)."""
    await asyncio.to_thread(upgrade, url, revision)
