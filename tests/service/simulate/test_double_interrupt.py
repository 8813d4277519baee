"""`churnsignal run`: a second Ctrl-C during the graceful shutdown ends the process at once, quietly."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.simulate.test_run import Run


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait(timeout=10)


def _request_in_flight(port: int, key: str) -> socket.socket:
    """A request whose body never finishes arriving: ingest's graceful shutdown waits for it (up to its
    grace period), so the shutdown is still under way when the second Ctrl-C comes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer " + key.encode() + b"\r\nContent-Length: 100000\r\n\r\n[")
    return sock


def test_a_second_ctrl_c_stops_at_once_without_a_traceback(tmp_path: Path, runs: list[Run]) -> None:
    run = Run(tmp_path, "--no-simulate")
    runs.append(run)
    key = run.wait_for(r"API key\s+(cs_\S+)", timeout=120).group(1)
    run.wait_for(r"Ctrl-C stops", timeout=60)
    with _request_in_flight(run.ports["ingest"], key):
        run.proc.send_signal(signal.SIGINT)
        run.wait_for(r"SIGINT received: shutting down gracefully", timeout=60)
        run.proc.send_signal(signal.SIGINT)
        run.wait_for(r"SIGINT again: stopped at once", timeout=60)
        assert run.finish(timeout=60) == 130, run.output
    assert "Traceback" not in run.output, run.output
    assert "KeyboardInterrupt" not in run.output
    assert "churnsignal run summary" not in run.output   # the graceful path, and its summary, were skipped


def test_one_ctrl_c_still_shuts_down_gracefully_with_the_summary(tmp_path: Path, runs: list[Run]) -> None:
    run = Run(tmp_path, "--no-simulate")
    runs.append(run)
    run.wait_for(r"Ctrl-C stops", timeout=120)
    run.proc.send_signal(signal.SIGINT)
    assert run.finish(timeout=120) == 0, run.output
    assert "churnsignal run summary (SIGINT received" in run.output
    assert "Traceback" not in run.output
