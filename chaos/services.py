"""A private Kafka broker and PostgreSQL server: `scripts/services.sh` run as a second instance, with a
directory of its own (`SERVICES_VAR_DIR`) and free ports (`SERVICES_KAFKA_PORT`,
`SERVICES_KAFKA_CONTROLLER_PORT`, `SERVICES_PG_PORT`).

`make chaos` stops and restarts the broker and the database under load, and so do the tests of a broker
restart: on these servers, never on the shared ones of `make services` that every other test uses.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
SERVICES_SH = ROOT / "scripts" / "services.sh"
# The shared servers' settings, which must not leak into the second instance (services.sh would reuse the
# servers they name instead of starting its own).
SHARED_VARIABLES = ("CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS", "CHURNSIGNAL_DATABASE_URL",
                    "CHURNSIGNAL_TEST_DATABASE_URL")
USER, PASSWORD = "churnsignal", "churnsignal"   # scripts/services.sh's role


class ServicesError(RuntimeError):
    """scripts/services.sh failed; the message ends with its output."""


@dataclass
class PrivateServices:
    """A second instance of `scripts/services.sh` in `var_dir`: the broker, PostgreSQL, or both."""

    var_dir: Path
    kafka_port: int
    controller_port: int
    pg_port: int
    kafka: bool = True
    postgres: bool = True
    kafka_heap: str = "-Xms128m -Xmx512m"
    started: list[str] = field(default_factory=list)

    @classmethod
    def on_free_ports(cls, var_dir: Path, *, kafka: bool = True, postgres: bool = True) -> PrivateServices:
        ports: set[int] = set()
        while len(ports) < 3:
            ports.add(free_port())
        kafka_port, controller_port, pg_port = sorted(ports)
        return cls(var_dir, kafka_port, controller_port, pg_port, kafka=kafka, postgres=postgres)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def database_url(self, database: str = "churnsignal_test") -> str:
        return f"postgresql+asyncpg://{USER}:{PASSWORD}@127.0.0.1:{self.pg_port}/{database}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in SHARED_VARIABLES}
        env.update(SERVICES_VAR_DIR=str(self.var_dir), SERVICES_KAFKA_PORT=str(self.kafka_port),
                   SERVICES_KAFKA_CONTROLLER_PORT=str(self.controller_port), SERVICES_PG_PORT=str(self.pg_port),
                   CHURNSIGNAL_KAFKA_HEAP=self.kafka_heap)
        return env

    def run(self, command: str, *, timeout_s: float = 300) -> str:
        """`scripts/services.sh <command>` on this instance; its output (ServicesError when it fails)."""
        done = subprocess.run(["bash", str(SERVICES_SH), command], cwd=ROOT, env=self.env(), capture_output=True,
                              text=True, timeout=timeout_s, check=False)
        output = (done.stdout + done.stderr).strip()
        if done.returncode != 0:
            raise ServicesError(f"scripts/services.sh {command} (SERVICES_VAR_DIR={self.var_dir}) failed: "
                                f"{output[-800:]}")
        return output

    def start(self) -> None:
        if self.var_dir.exists():   # left by a run that was killed: its servers may still run
            self.run("wipe", timeout_s=120)
        self.var_dir.mkdir(parents=True, exist_ok=True)
        if self.postgres:
            self.run("pg-start")
            self.started.append("pg")
        if self.kafka:
            self.run("kafka-start")
            self.started.append("kafka")

    def wipe(self, *, keep_logs: bool = False) -> None:
        """Stop both servers and delete their data; the instance's directory too unless `keep_logs`."""
        try:
            self.run("wipe", timeout_s=120)
        finally:
            if not keep_logs:
                shutil.rmtree(self.var_dir, ignore_errors=True)
            self.started.clear()


@contextlib.contextmanager
def private_services(var_dir: Path, *, kafka: bool = True, postgres: bool = True,
                     keep_logs: bool = False) -> Iterator[PrivateServices]:
    """Started on free ports, wiped on exit (whatever happened in between)."""
    services = PrivateServices.on_free_ports(var_dir, kafka=kafka, postgres=postgres)
    try:
        services.start()
        yield services
    finally:
        services.wipe(keep_logs=keep_logs)
