"""`churnsignal run` (in-process bus, SQLite) with `CHURNSIGNAL_FEED_WEBHOOKS`: the simulated accounts' health
changes and risk transitions reach a receiver that verifies their Standard Webhooks signatures."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.health_feed import MESSAGE_TYPES
from tests.service.simulate.test_run import Run
from tests.support.webhook_receiver import WebhookReceiver


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver(os.urandom(32)).start()
    yield r
    r.stop()


def test_run_sends_the_health_feed_to_a_webhook(tmp_path: Path, receiver: WebhookReceiver) -> None:
    hooks = json.dumps([{"name": "crm", "url": receiver.url, "secret": receiver.secret}])
    run = Run(tmp_path, "--accounts", "12", "--days", "30", "--live-days", "2", "--speedup", "43200",
              "--duration", "120", "--truth", "truth.json", env={"CHURNSIGNAL_FEED_WEBHOOKS": hooks})
    try:
        run.wait_for(r"API key\s+(cs_\S+)", timeout=60)
        deadline = time.monotonic() + 120     # a guard against a stuck run, not a speed limit
        while not any(d.message["type"].startswith("risk.") for d in receiver.accepted()):
            assert run.proc.poll() is None, run.output
            assert time.monotonic() < deadline, f"no risk reached the receiver; output:\n{run.output}"
            time.sleep(0.2)
        run.proc.send_signal(signal.SIGINT)
        assert run.finish(timeout=120) == 0, run.output
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait(timeout=10)
    assert receiver.rejected == []
    got = receiver.accepted()
    assert {d.message["type"] for d in got} <= set(MESSAGE_TYPES)
    assert any(d.message["type"] == "health.changed" for d in got)
    assert all(d.id == d.message["id"] for d in got)
    assert "s3cr3t-url-token" not in run.output and receiver.secret not in run.output
