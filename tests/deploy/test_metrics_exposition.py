"""Each service's /metrics, as Prometheus scrapes it: lint-clean for `promtool check metrics`, and exposing
every family that shared/metrics.py defines for it (the alert rules and the dashboard rely on them)."""

from __future__ import annotations

import asyncio
import importlib
import re
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from shared.migrate import upgrade_async
from shared.settings import Settings
from tests.deploy.support import metric_catalog, promtool

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                   Awaitable[None]]
LIFESPAN_TIMEOUT_S = 30.0


@asynccontextmanager
async def running(app: ASGIApp) -> AsyncIterator[ASGIApp]:
    """Run the app's ASGI lifespan as a server does (startup, then shutdown), and yield an app that
    hands the lifespan state to each request, as uvicorn does."""
    state: dict[str, Any] = {}
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}
    task = asyncio.create_task(app(scope, inbox.get, outbox.put))

    async def expect(event: str) -> None:
        async with asyncio.timeout(LIFESPAN_TIMEOUT_S):
            message = await outbox.get()
        if message["type"] != f"lifespan.{event}.complete":
            raise AssertionError(f"lifespan {event} failed: {message.get('message', message)}")

    async def with_state(scope: Scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "state": dict(state)}
        await app(scope, receive, send)

    await inbox.put({"type": "lifespan.startup"})
    await expect("startup")
    try:
        yield with_state
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await expect("shutdown")
        async with asyncio.timeout(LIFESPAN_TIMEOUT_S):
            await task


async def scrape(service: str, settings: Settings) -> tuple[int, str, str]:
    create_app = importlib.import_module(f"services.{service}.bootstrap").create_app
    await upgrade_async(settings.database_url)
    app = create_app(settings)
    async with running(app) as served:
        transport = httpx.ASGITransport(app=served)
        async with httpx.AsyncClient(transport=transport, base_url="http://churnsignal") as client:
            response = await client.get("/metrics")
    return response.status_code, response.headers.get("content-type", ""), response.text


@pytest.mark.parametrize("service", ["ingest", "scoring", "alerts"])
async def test_metrics_pass_promtool_and_expose_every_family(service: str, settings: Settings):
    tool = promtool()
    status, content_type, body = await scrape(service, settings)
    assert status == 200
    assert content_type.startswith("text/plain")

    lint = await asyncio.to_thread(subprocess.run, [tool, "check", "metrics"], input=body,
                                   capture_output=True, text=True, timeout=60, check=False)
    assert lint.returncode == 0, f"promtool check metrics:\n{lint.stdout}{lint.stderr}"

    exposed = dict(re.findall(r"^# TYPE (\S+) (\S+)$", body, re.MULTILINE))
    for name, family in metric_catalog()[service].items():
        # A counter's TYPE line names it with or without `_total`, depending on the client version.
        kind = exposed.get(name) or exposed.get(name.removesuffix("_total"))
        assert kind == family.kind, f"{service} does not expose {name} ({family.kind})"
    # The readiness gauge carries the service's own name (ChurnsignalNotReady and the dashboard use it).
    assert re.search(rf'^churnsignal_ready\{{service="{service}"\}} [01]\.0$', body, re.MULTILINE), \
        f"{service} exposes no churnsignal_ready{{service=\"{service}\"}} sample"
