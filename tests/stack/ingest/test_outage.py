"""A broker that is down gives 503 + Retry-After, never a 202 that is not durable; ingest recovers alone."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import orjson
import pytest

from services.ingest.bootstrap import create_app
from shared.bus.kafka import KafkaBus
from shared.settings import Settings
from tests.conftest import KAFKA
from tests.stack.ingest.conftest import JSON, read_topics, running, usage

ROOT = Path(__file__).resolve().parents[3]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_broker_gives_503_with_retry_after_and_not_ready(settings: Settings):
    settings = settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{closed_port()}",
                                           "ingest_publish_timeout_s": 1.0, "ingest_retry_after_s": 7})
    started = time.monotonic()
    app = create_app(settings)
    async with running(app) as client:
        assert time.monotonic() - started < 10, "startup must not wait for the broker"
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["kafka"] is False
        for _ in range(3):
            resp = await client.post("/v1/events", content=orjson.dumps(usage()), headers=JSON)
            assert resp.status_code == 503
            assert resp.headers["retry-after"] == "7"
            assert "retry later" in resp.json()["error"]
        # bad input is still judged without the broker
        resp = await client.post("/v1/events", content=b"{", headers=JSON)
        assert resp.status_code == 400


async def services_sh(command: str) -> None:
    script = str(ROOT / "scripts" / "services.sh")
    pipe, merged = asyncio.subprocess.PIPE, asyncio.subprocess.STDOUT
    # A broker holding many partitions takes minutes to load them on a busy machine.
    env = {**os.environ, "CHURNSIGNAL_START_TIMEOUT": "400"}
    proc = await asyncio.create_subprocess_exec("bash", script, command, cwd=ROOT, stdout=pipe, stderr=merged,
                                                env=env)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=450)
    assert proc.returncode == 0, f"services.sh {command} failed:\n{out.decode(errors='replace')}"


def broker_listening() -> bool:
    host, _, port = KAFKA.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.integration
async def test_stopping_the_real_broker_gives_503_never_202_then_202_again(settings: Settings):
    if not KAFKA:
        pytest.skip("CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS not set (run `make services`)")
    settings = settings.model_copy(update={"kafka_bootstrap_servers": KAFKA, "ingest_publish_timeout_s": 3.0})
    app = create_app(settings)
    async with running(app) as client:
        async def send(i: int) -> int:
            resp = await client.post("/v1/events", content=orjson.dumps(usage(i, f"acct-{i}")), headers=JSON)
            if resp.status_code == 503:
                assert resp.headers["retry-after"] == str(settings.ingest_retry_after_s)
            return resp.status_code

        async def accepted_within(first: int, seconds: float) -> int:
            """Send until one is accepted (503 meanwhile, nothing else); returns its number."""
            deadline = time.monotonic() + seconds
            for i in range(first, first + 10_000):
                status = await send(i)
                if status == 202:
                    return i
                assert status == 503, status
                assert time.monotonic() < deadline, f"no 202 within {seconds:.0f}s of the broker being up"
                await asyncio.sleep(0.5)
            raise AssertionError("unreachable")

        accepted = {await accepted_within(0, 60)}
        try:
            await services_sh("kafka-stop")
            # The broker is gone: every answer must be a 503, none a 202 (judged only if the broker was
            # verifiably down throughout: the shared one could be restarted by someone else meanwhile).
            if broker_listening():
                pytest.skip("kafka-stop did not stop the broker: it is not managed by this checkout's "
                            "scripts/services.sh")
            while_down = [await send(i) for i in range(1, 6)]
            while_down += await asyncio.gather(*(send(i) for i in range(6, 16)))
            ready = await client.get("/readyz")
            if broker_listening():
                pytest.skip("another process restarted the shared broker during the outage window")
            assert set(while_down) == {503}, while_down
            assert ready.status_code == 503
        finally:
            await services_sh("kafka-start")
        # Back up: ingest reconnects by itself (a big broker may take a while to lead its partitions).
        accepted.add(await accepted_within(100, 240))
        assert (await client.get("/readyz")).status_code == 200
        stored = {int(orjson.loads(r.value)["id"].removeprefix("u-"))
                  for r in await read_topics(KafkaBus(KAFKA), [f"{settings.topic_prefix}usage"])}
        assert accepted <= stored
