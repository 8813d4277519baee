"""Each service's /metrics, as Prometheus scrapes it: lint-clean for `promtool check metrics`, and exposing
every family that shared/metrics.py defines for it (the alert rules and the dashboard rely on them), the
build (`churnsignal_build_info`) and the process (process_*, python_info)."""

from __future__ import annotations

import asyncio
import importlib
import platform
import re
import subprocess
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from shared.metrics import CommonMetrics
from shared.migrate import upgrade_async
from shared.settings import Settings
from tests.deploy.support import ROOT, metric_catalog, promtool

PROCESS_FAMILIES = ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_start_time_seconds",
                    "process_open_fds", "python_info")


def release_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def build_info_pattern(service: str) -> re.Pattern[str]:
    labels = {"python": platform.python_version(), "service": service, "version": release_version()}
    body = ",".join(f'{name}="{re.escape(value)}"' for name, value in sorted(labels.items()))
    return re.compile(rf"^churnsignal_build_info\{{{body}\}} 1\.0$", re.MULTILINE)

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
    # What runs: the service, the churnsignal release and the Python, as one constant series.
    assert build_info_pattern(service).search(body), f"{service} exposes no matching churnsignal_build_info"
    assert len(re.findall(r"^churnsignal_build_info\{", body, re.MULTILINE)) == 1
    # The process collector's CPU and memory (the dashboard's panels), on the service's own registry.
    for name in PROCESS_FAMILIES:
        assert re.search(rf"^{name}(\{{[^}}]*\}})? \S+$", body, re.MULTILINE), f"{service} exposes no {name}"
    assert float(re.search(r"^process_resident_memory_bytes (\S+)$", body, re.MULTILINE).group(1)) > 0


def test_common_metrics_put_the_build_and_the_process_on_any_registry():
    """Services and tests hand in registries of their own (no default collectors): CommonMetrics adds them."""
    registry = CollectorRegistry()
    CommonMetrics(registry, "scoring")
    body = generate_latest(registry).decode()
    assert build_info_pattern("scoring").search(body)
    for name in PROCESS_FAMILIES:
        assert re.search(rf"^{name}(\{{[^}}]*\}})? \S+$", body, re.MULTILINE), name
    assert re.search(rf'^python_info\{{.*version="{re.escape(platform.python_version())}".*\}} 1\.0$', body,
                     re.MULTILINE)
