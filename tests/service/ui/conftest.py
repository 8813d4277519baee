"""The world the web-page tests show: built once per module (scoring 18 simulated accounts takes a while)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime

import pytest
from fastapi import FastAPI

from services.ui.queries import UiReadModel
from services.ui.router import ui_router
from shared.http import KeyRing, RejectNul
from tests.conftest import test_api_keys
from tests.service.ui.browser import chromium
from tests.service.ui.world import World, build_world, read_model

SECRET = b"ui-test-secret-0123456789abcdef!"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    yield from chromium(tmp_path_factory)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return asyncio.run(build_world(tmp_path_factory.mktemp("ui")))


def pages_app(world: World, *, clock: Callable[[], datetime] | None = None) -> FastAPI:
    """An app serving only the web pages over the world's database (the read model made in the lifespan)."""
    holder: dict[str, UiReadModel] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine, model = read_model(world)
        holder["model"] = model
        try:
            yield
        finally:
            await engine.dispose()

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(RejectNul)
    app.include_router(ui_router(lambda: holder["model"], link_secret=SECRET, keyring=KeyRing(test_api_keys()),
                                 public_url="https://cs.example.com", clock=clock or (lambda: world.now)))
    return app
