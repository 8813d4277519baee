"""deploy/Dockerfile and its health check: one non-root image whose command picks the service."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.deploy.support import (
    DEPLOY,
    DOCKERFILE,
    ROOT,
    context_patterns,
    default_port,
    in_build_context,
    parse_cli,
    settings_env_names,
)
from tests.support.ports import free_port

HEALTHCHECK = DEPLOY / "healthcheck.py"
PORT_VARIABLES = ("CHURNSIGNAL_INGEST_PORT", "CHURNSIGNAL_SCORING_PORT", "CHURNSIGNAL_ALERTS_PORT")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


def one(stage: list[tuple[str, str]], keyword: str) -> str:
    (value,) = [args for k, args in stage if k == keyword]
    return value


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in stage:
        if keyword == "ENV":
            for pair in args.split():
                key, _, value = pair.partition("=")
                env[key] = value.strip('"')
    return env


def test_runtime_image_is_python_311_slim_and_not_root():
    stage = final_stage()
    assert stage[0] == ("FROM", "python:3.11-slim")
    assert all(args.startswith("python:3.11-slim") for k, args in instructions() if k == "FROM")
    user = one(stage, "USER").split(":")[0]
    assert user.isdigit() and int(user) != 0, "numeric non-root UID (Kubernetes runAsNonRoot can verify it)"


def test_entrypoint_is_the_project_cli_and_the_default_command_is_valid():
    stage = final_stage()
    entrypoint = json.loads(one(stage, "ENTRYPOINT"))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["churnsignal"] and "churnsignal" in scripts
    assert parse_cli(json.loads(one(stage, "CMD"))).name == "serve"


def test_image_settings_are_settings_fields_and_listen_beyond_loopback():
    env = env_of(final_stage())
    churnsignal = {k: v for k, v in env.items() if k.startswith("CHURNSIGNAL_")}
    assert set(churnsignal) <= settings_env_names()
    assert churnsignal["CHURNSIGNAL_HOST"] == "0.0.0.0"


def test_exposed_ports_are_the_service_ports():
    exposed = {int(p) for p in one(final_stage(), "EXPOSE").split()}
    assert exposed == {default_port(s) for s in ("ingest", "scoring", "alerts")}


def test_healthcheck_runs_the_shipped_script():
    stage = final_stage()
    check = one(stage, "HEALTHCHECK")
    command = json.loads(check.split("CMD", 1)[1].strip())
    copied = {args.split()[-1]: args.split()[-2] for k, args in stage if k == "COPY" and "--from" not in args}
    script = command[-1]
    assert copied[script] == "deploy/healthcheck.py"
    assert (ROOT / copied[script]).is_file()


def test_build_context_keeps_what_the_build_copies():
    patterns = context_patterns()

    def included(path: str) -> bool:
        return in_build_context(path, patterns)

    for needed in ("pyproject.toml", "shared/settings.py", "services/cli.py", "deploy/healthcheck.py"):
        assert included(needed), needed
        assert (ROOT / needed).exists()
    for excluded in (".venv/bin/python", "var/services.env", "tests/conftest.py", ".git/HEAD",
                     "services/__pycache__/cli.cpython-311.pyc", "services/scoring/domain/native.json",
                     "services/scoring/domain/engine.cpython-311-x86_64-linux-gnu.so"):
        assert not included(excluded), excluded


# --------------------------------------------------------------------------- the health check itself


class _Handler(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        code = self.status if self.path == "/healthz" else 404
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        pass


@contextmanager
def http_server(status: int) -> Iterator[int]:
    handler = type("Handler", (_Handler,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def run_healthcheck(ports: dict[str, int]) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", **{k: str(v) for k, v in ports.items()}}
    return subprocess.run([sys.executable, str(HEALTHCHECK)], env=env, capture_output=True, text=True,
                          timeout=30, check=False)


@pytest.mark.parametrize("variable", PORT_VARIABLES)
def test_healthcheck_passes_when_the_service_on_its_port_answers(variable):
    with http_server(200) as port:
        others = {v: free_port() for v in PORT_VARIABLES if v != variable}
        result = run_healthcheck({**others, variable: port})
    assert result.returncode == 0, result.stderr


def test_healthcheck_fails_when_nothing_answers_or_the_service_is_unhealthy():
    silent = {v: free_port() for v in PORT_VARIABLES}
    result = run_healthcheck(silent)
    assert result.returncode == 1
    assert "/healthz" in result.stderr
    with http_server(500) as port:
        result = run_healthcheck({**silent, "CHURNSIGNAL_SCORING_PORT": port})
    assert result.returncode == 1
