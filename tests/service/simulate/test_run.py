"""`churnsignal run` end to end, in a subprocess: alerts on the terminal, APIs on their ports, a summary."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.simulate.model import GroundTruth
from tests.support.ports import free_port

CHURNSIGNAL = str(Path(sys.executable).parent / "churnsignal")


class Run:
    """A `churnsignal run` subprocess whose output is collected line by line."""

    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.ports = {name: free_port() for name in ("ingest", "scoring", "alerts")}
        self.tmp = tmp_path
        environ = {k: v for k, v in os.environ.items()
                   if k not in ("CHURNSIGNAL_API_KEYS", "CHURNSIGNAL_SIMULATE_API_KEY")}
        environ.update({f"CHURNSIGNAL_{name.upper()}_PORT": str(port) for name, port in self.ports.items()})
        environ.update({"CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS": "",
                        "CHURNSIGNAL_OUTBOX_DIR": str(tmp_path / "outbox"),
                        "CHURNSIGNAL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'run.db'}",
                        "CHURNSIGNAL_TOPIC_PREFIX": "churnsignal.", "PYTHONUNBUFFERED": "1"})
        environ.update({k: self._with_ports(v) for k, v in (env or {}).items()})
        self.proc = subprocess.Popen([CHURNSIGNAL, "run", *args], cwd=tmp_path, env=environ, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _with_ports(self, value: str) -> str:
        """`value` with "{ingest}", "{scoring}" and "{alerts}" replaced by those services' ports."""
        for name, port in self.ports.items():
            value = value.replace("{" + name + "}", str(port))
        return value

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        for line in list(self.lines):
            if found := regex.search(line):
                return found
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None and self._queue.empty():
                    break
                continue
            if found := regex.search(line):
                return found
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s; output:\n{self.output}")

    def url(self, service: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    def finish(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def cleanup() -> Iterator[list[Run]]:
    runs: list[Run] = []
    yield runs
    for run in runs:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait(timeout=10)


def test_run_shows_alerts_serves_the_apis_and_ends_with_a_summary(tmp_path: Path, cleanup: list[Run]) -> None:
    run = Run(tmp_path, "--accounts", "40", "--days", "42", "--live-days", "4", "--speedup", "43200",
              "--duration", "150", "--truth", "truth.json")
    cleanup.append(run)
    key = run.wait_for(r"API key\s+(cs_\S+)", timeout=60).group(1)
    auth = {"Authorization": f"Bearer {key}"}
    for service in run.ports:
        assert httpx.get(run.url(service, "/healthz"), timeout=10).status_code == 200

    alert = run.wait_for(r"ALERT (opened|escalated|repeat|resolved) \w+ to (slack_dm|email):\S+ : .+",
                         timeout=120)
    assert " on " in alert.group(0)
    # While it runs, the read APIs answer with the key it printed.
    accounts = httpx.get(run.url("scoring", "/v1/accounts"), params={"limit": 5}, headers=auth, timeout=10)
    assert accounts.status_code == 200 and accounts.json()["items"]
    alerts = httpx.get(run.url("alerts", "/v1/alerts"), headers=auth, timeout=10)
    assert alerts.status_code == 200 and alerts.json()["items"]
    assert httpx.get(run.url("scoring", "/v1/accounts"), timeout=10).status_code == 401

    assert run.finish(timeout=200) == 0, run.output
    out = run.output
    assert "== churnsignal run summary" in out
    sent = int(re.search(r"events sent: ([\d,]+)", out).group(1).replace(",", ""))
    assert sent > 10_000
    caught, scripted = map(int, re.search(r"scripted churners caught: (\d+)/(\d+)", out).groups())
    assert scripted >= 6 and caught >= 1
    assert re.search(r"false alarms on healthy accounts: \d+/\d+ \(\d+\.\d%\)", out)
    assert re.search(r"median detection delay \(event time\): \d", out)
    assert re.search(r"risks raised: [1-9]\d* \(", out)

    outbox = tmp_path / "outbox"
    slack = list(outbox.glob("*.json"))
    emails = list(outbox.glob("*.eml"))
    assert slack and emails
    payload = json.loads(slack[0].read_text())
    assert payload["channel"].startswith("U") and payload["text"]
    assert "Subject:" in emails[0].read_text()
    assert f"outbox {outbox}/ ({len(slack)} Slack payloads and {len(emails)} emails" in out
    truth = GroundTruth.from_dict(json.loads((tmp_path / "truth.json").read_text()))
    assert len(truth.accounts) == 40 and len(truth.churners) == scripted
    assert (tmp_path / "run.db").stat().st_size > 0


def test_ctrl_c_stops_gracefully_with_a_summary(tmp_path: Path, cleanup: list[Run]) -> None:
    run = Run(tmp_path, "--no-simulate")
    cleanup.append(run)
    run.wait_for(r"Ctrl-C stops", timeout=60)
    for service in run.ports:
        assert httpx.get(run.url(service, "/readyz"), timeout=10).status_code == 200
    run.proc.send_signal(signal.SIGINT)
    assert run.finish(timeout=60) == 0, run.output
    assert "SIGINT received" in run.output
    assert re.search(r"== churnsignal run summary \(SIGINT received", run.output)
    assert "risks raised: 0" in run.output


def test_configured_keys_require_a_key_for_the_simulator(tmp_path: Path, cleanup: list[Run]) -> None:
    keys = json.dumps([{"name": "ops", "sha256": "0" * 64, "scopes": ["ingest"]}])
    run = Run(tmp_path, "--accounts", "5", env={"CHURNSIGNAL_API_KEYS": keys})
    cleanup.append(run)
    assert run.finish(timeout=60) == 1
    assert "set CHURNSIGNAL_SIMULATE_API_KEY" in run.output
