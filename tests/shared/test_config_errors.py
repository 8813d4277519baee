"""Configuration and connection errors at start: the `churnsignal` command, run as a user runs it (a
subprocess with only the given `CHURNSIGNAL_*` variables), says each in one line naming the variable and the
`host:port`, and exits 2 (configuration) or 3 (a dependency unreachable or not ready); never a traceback,
never a silent fall-back to the in-process bus or SQLite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest

from shared.settings import Settings, hash_key, normalize_database_url
from shared.startup_errors import known_variables, settings_problems, unknown_variables
from tests.conftest import KAFKA, PG_URL, requires_kafka, requires_pg
from tests.support.ports import free_port

CHURNSIGNAL = str(Path(sys.executable).parent / "churnsignal")
KEY = "config-errors-test-key"
API_KEYS = json.dumps([{"name": "t", "sha256": hash_key(KEY), "scopes": ["ingest"]}])


def environment(env: dict[str, str]) -> dict[str, str]:
    """The test process's environment without any `CHURNSIGNAL_*` variable, plus `env`."""
    out = {k: v for k, v in os.environ.items() if not k.upper().startswith("CHURNSIGNAL_")}
    out.update(env)
    return out


def churnsignal(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # The timeout only keeps a hanging command from hanging the suite.
    return subprocess.run([CHURNSIGNAL, *args], cwd=cwd, env=environment(env), capture_output=True, text=True,
                          timeout=120)


def assert_fails(result: subprocess.CompletedProcess[str], code: int, *lines: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.splitlines() == [f"error: {line}" for line in lines], result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def closed_port() -> int:
    return free_port()   # nothing listens there


# --- configuration errors: exit 2 ------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["serve", "ingest"], ["migrate"], ["check-config", "--no-connect"]])
def test_a_misspelt_variable_is_an_error_naming_the_closest_known_one(tmp_path: Path, args: list[str]) -> None:
    result = churnsignal(tmp_path, *args, CHURNSIGNAL_KAFKA_BOOTSTRAP="127.0.0.1:9092")
    assert_fails(result, 2, "unknown variable CHURNSIGNAL_KAFKA_BOOTSTRAP; did you mean "
                            "CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS?")


def test_serve_ingest_without_kafka_never_falls_back_to_the_in_process_bus(tmp_path: Path) -> None:
    result = churnsignal(tmp_path, "serve", "ingest", CHURNSIGNAL_API_KEYS=API_KEYS)
    assert_fails(result, 2, "CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS is not set: `serve ingest` needs Kafka (for the "
                            "in-process bus: `serve ingest --embedded` or `churnsignal run`)")


@pytest.mark.parametrize("service", ["scoring", "alerts"])
def test_serve_without_kafka_or_database_url_names_the_variable(tmp_path: Path, service: str) -> None:
    result = churnsignal(tmp_path, "serve", service)
    assert_fails(result, 2, f"CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS is not set: `serve {service}` needs Kafka (for "
                            f"the in-process bus: `serve {service} --embedded` or `churnsignal run`)")
    result = churnsignal(tmp_path, "serve", service, CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9092")
    assert_fails(result, 2, f"CHURNSIGNAL_DATABASE_URL is not set: `serve {service}` needs the database "
                            "(postgresql+asyncpg://user:password@host:5432/database)")
    assert not (tmp_path / "var").exists()   # no SQLite file made on the way


def test_migrate_without_a_database_url_creates_no_sqlite_file(tmp_path: Path) -> None:
    result = churnsignal(tmp_path, "migrate")
    assert_fails(result, 2, "CHURNSIGNAL_DATABASE_URL is not set: `migrate` needs the database "
                            "(postgresql+asyncpg://user:password@host:5432/database)")
    assert list(tmp_path.iterdir()) == []


def test_a_value_that_is_not_an_integer_names_the_variable(tmp_path: Path) -> None:
    result = churnsignal(tmp_path, "serve", "ingest", CHURNSIGNAL_INGEST_PORT="abc")
    assert_fails(result, 2, "CHURNSIGNAL_INGEST_PORT: not a valid integer ('abc')")


def test_every_bad_value_and_unknown_variable_is_listed_at_once(tmp_path: Path) -> None:
    result = churnsignal(tmp_path, "migrate", CHURNSIGNAL_LOG_LEVEL="loud", CHURNSIGNAL_SMTP_STARTTLS="maybe",
                         CHURNSIGNAL_TOPIC_PARTITONS="3")
    assert_fails(result, 2,
                 "unknown variable CHURNSIGNAL_TOPIC_PARTITONS; did you mean CHURNSIGNAL_TOPIC_PARTITIONS?",
                 "CHURNSIGNAL_SMTP_STARTTLS: not a valid boolean (true or false) ('maybe')",
                 "CHURNSIGNAL_LOG_LEVEL: should be 'debug', 'info', 'warning' or 'error' ('loud')")


def test_a_json_variable_that_is_not_json_says_where_and_never_echoes_the_value(tmp_path: Path) -> None:
    result = churnsignal(tmp_path, "serve", "ingest", CHURNSIGNAL_API_KEYS='[{"name": "x", sha256')
    assert_fails(result, 2, "CHURNSIGNAL_API_KEYS: not valid JSON (Expecting property name enclosed in double "
                            "quotes at line 1 column 16)")


def test_a_secret_value_is_never_echoed(tmp_path: Path) -> None:
    result = churnsignal(tmp_path, "serve", "ingest", CHURNSIGNAL_SOURCE_SECRETS='{"zendesk": 12345678}')
    assert_fails(result, 2, "CHURNSIGNAL_SOURCE_SECRETS.zendesk: not a string")
    assert "12345678" not in result.stderr


def test_an_unsupported_database_url_is_a_configuration_error(tmp_path: Path) -> None:
    result = churnsignal(tmp_path, "migrate", CHURNSIGNAL_DATABASE_URL="mysql://u:secret-pw@db.example:3306/cs")
    assert_fails(result, 2, "CHURNSIGNAL_DATABASE_URL: unsupported database 'mysql' (expected "
                            "postgresql+asyncpg://… or sqlite+aiosqlite:///…)")
    assert "secret-pw" not in result.stderr


def test_a_bad_kafka_address_is_a_configuration_error(tmp_path: Path) -> None:
    result = churnsignal(tmp_path, "serve", "ingest", CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS="kafka:ninety")
    assert_fails(result, 2, "CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS: 'kafka:ninety' is not host:port")


def test_a_broken_routing_file_stops_serve_alerts_naming_the_variable_and_the_key(tmp_path: Path) -> None:
    routing = tmp_path / "routing.yaml"
    routing.write_text("route:\n  receiver: nobody\n", encoding="utf-8")
    result = churnsignal(tmp_path, "serve", "alerts", CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{closed_port()}",
                         CHURNSIGNAL_DATABASE_URL=f"postgresql+asyncpg://u@127.0.0.1:{closed_port()}/cs",
                         CHURNSIGNAL_ROUTING_FILE=str(routing))
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("error: CHURNSIGNAL_ROUTING_FILE: ") and line.endswith(f"(in {routing})")
    assert "nobody" in line


# --- unreachable dependencies: exit 3 --------------------------------------------------------------------------------

def test_migrate_with_the_database_down_is_one_line_with_host_and_port(tmp_path: Path) -> None:
    port = closed_port()
    result = churnsignal(tmp_path, "migrate",
                         CHURNSIGNAL_DATABASE_URL=f"postgresql+asyncpg://cs:pw@127.0.0.1:{port}/churnsignal")
    assert_fails(result, 3, f"cannot reach the database at 127.0.0.1:{port} (CHURNSIGNAL_DATABASE_URL): "
                            "connection refused")


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_postgres_urls_are_read_as_asyncpg_ones(tmp_path: Path, scheme: str) -> None:
    port = closed_port()
    result = churnsignal(tmp_path, "migrate", CHURNSIGNAL_DATABASE_URL=f"{scheme}://cs:pw@127.0.0.1:{port}/cs")
    # Not NoSuchModuleError (psycopg2): the URL was understood, and the database is what is missing.
    assert_fails(result, 3, f"cannot reach the database at 127.0.0.1:{port} (CHURNSIGNAL_DATABASE_URL): "
                            "connection refused")


@pytest.mark.parametrize("service", ["scoring", "alerts"])
def test_serve_with_kafka_and_the_database_down_names_both(tmp_path: Path, service: str) -> None:
    kafka, db = closed_port(), closed_port()
    result = churnsignal(tmp_path, "serve", service, CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{kafka}",
                         CHURNSIGNAL_DATABASE_URL=f"postgresql+asyncpg://cs:pw@127.0.0.1:{db}/churnsignal")
    assert_fails(result, 3,
                 f"cannot reach Kafka at 127.0.0.1:{kafka} (CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS): connection refused",
                 f"cannot reach the database at 127.0.0.1:{db} (CHURNSIGNAL_DATABASE_URL): connection refused")


@pytest.mark.integration
@requires_kafka()
@pytest.mark.parametrize("service", ["scoring", "alerts"])
def test_serve_with_the_database_down_exits_3(tmp_path: Path, service: str) -> None:
    port = closed_port()
    result = churnsignal(tmp_path, "serve", service, CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS=KAFKA,
                         CHURNSIGNAL_DATABASE_URL=f"postgresql+asyncpg://cs:pw@127.0.0.1:{port}/churnsignal")
    assert_fails(result, 3, f"cannot reach the database at 127.0.0.1:{port} (CHURNSIGNAL_DATABASE_URL): "
                            "connection refused")


@pytest.mark.integration
@requires_pg()
@pytest.mark.parametrize("service", ["scoring", "alerts"])
def test_serve_with_kafka_down_exits_3(tmp_path: Path, service: str, pg_database_url: str) -> None:
    port = closed_port()
    result = churnsignal(tmp_path, "serve", service, CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}",
                         CHURNSIGNAL_DATABASE_URL=pg_database_url)
    assert_fails(result, 3, f"cannot reach Kafka at 127.0.0.1:{port} (CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS): "
                            "connection refused")


@pytest.fixture
async def empty_pg_database() -> AsyncIterator[str]:
    """A PostgreSQL database no migration has touched, as `postgres://` (the URL hosting providers give)."""
    if not PG_URL:
        pytest.skip("CHURNSIGNAL_TEST_DATABASE_URL not set (run `make services`)")
    import asyncpg

    from tests.conftest import _drop_pg_database

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = PG_URL.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = f"{admin.rpartition('/')[0]}/{name}"
    yield url.replace("postgresql://", "postgres://")
    await _drop_pg_database(url)


@pytest.mark.integration
@requires_kafka()
def test_serve_on_a_database_never_migrated_exits_3_then_migrate_with_a_postgres_url_fixes_it(
        tmp_path: Path, empty_pg_database: str) -> None:
    from sqlalchemy.engine import make_url

    address = f"{make_url(normalize_database_url(empty_pg_database)).host}:" \
              f"{make_url(normalize_database_url(empty_pg_database)).port}"
    env = {"CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS": KAFKA, "CHURNSIGNAL_DATABASE_URL": empty_pg_database}
    result = churnsignal(tmp_path, "serve", "scoring", **env)
    assert result.returncode == 3, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: the database at {address} (CHURNSIGNAL_DATABASE_URL) is not migrated "
                           "(never migrated, this version needs ")
    assert line.endswith("): run `churnsignal migrate`")

    migrated = churnsignal(tmp_path, "migrate", **env)
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.splitlines()[-1] == "database migrated to head"
    checked = churnsignal(tmp_path, "check-config", "scoring", **env)
    assert checked.returncode == 0, checked.stdout + checked.stderr


# --- what still starts -----------------------------------------------------------------------------------------------

@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def serve_ingest(tmp_path: Path, servers: list[subprocess.Popen[str]], *args: str, **env: str) -> str:
    """`churnsignal serve ingest` on a free port, once it answers /healthz; its base URL."""
    port = free_port()
    proc = subprocess.Popen([CHURNSIGNAL, "serve", "ingest", "--port", str(port), *args], cwd=tmp_path,
                            env=environment({"CHURNSIGNAL_API_KEYS": API_KEYS, **env}), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    servers.append(proc)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120   # a hang guard, not a speed requirement
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("ingest did not start")


EVENT = {"id": "e-1", "type": "usage", "account_id": "acct-1", "occurred_at": "2025-01-01T00:00:00Z",
         "data": {"feature": "login"}}


def test_serve_ingest_starts_while_kafka_is_down_and_answers_503(tmp_path: Path,
                                                                  servers: list[subprocess.Popen[str]]) -> None:
    url = serve_ingest(tmp_path, servers, CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{closed_port()}",
                       CHURNSIGNAL_INGEST_PUBLISH_TIMEOUT_S="1")
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 503
    answer = httpx.post(f"{url}/v1/events", json=EVENT, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert answer.status_code == 503 and "retry-after" in answer.headers


def test_serve_ingest_on_the_in_process_bus_only_when_asked(tmp_path: Path,
                                                            servers: list[subprocess.Popen[str]]) -> None:
    url = serve_ingest(tmp_path, servers, "--embedded")
    answer = httpx.post(f"{url}/v1/events", json=EVENT, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert answer.status_code == 202 and answer.json() == {"accepted": 1}
    proc = servers[0]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert err.splitlines()[0] == "serve ingest --embedded: the in-process bus; nothing leaves this process"


def test_version_comes_from_the_package_metadata(tmp_path: Path) -> None:
    result = churnsignal(tmp_path, "--version")
    assert result.returncode == 0
    assert result.stdout == f"churnsignal {version('churnsignal')}\n"


# --- the pieces, without a process -----------------------------------------------------------------------------------

def test_names_read_outside_the_settings_are_known() -> None:
    known = known_variables()
    for name in ("CHURNSIGNAL_TEST_DATABASE_URL", "CHURNSIGNAL_SIMULATE_API_KEY", "CHURNSIGNAL_START_TIMEOUT",
                 "CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS", "CHURNSIGNAL_SOURCE_SECRETS"):
        assert name in known
    assert unknown_variables({"CHURNSIGNAL_TEST_DATABASE_URL": "x", "churnsignal_log_level": "info",
                              "PATH": "/bin"}, known) == []
    assert unknown_variables({"CHURNSIGNAL_NOTHING_LIKE_IT_AT_ALL_XYZ": "1"}, known) == [
        "unknown variable CHURNSIGNAL_NOTHING_LIKE_IT_AT_ALL_XYZ (README.md, Configuration, lists the variables)"]


def test_settings_read_postgres_urls_as_asyncpg_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHURNSIGNAL_DATABASE_URL", raising=False)
    for given in ("postgres://u:p@h:5/db", "postgresql://u:p@h:5/db", "postgresql+asyncpg://u:p@h:5/db"):
        assert Settings(database_url=given).database_url == "postgresql+asyncpg://u:p@h:5/db"
    assert Settings(database_url="sqlite:///var/x.db").database_url == "sqlite+aiosqlite:///var/x.db"
    assert Settings().database_url == "sqlite+aiosqlite:///var/churnsignal.db"   # `churnsignal run`'s default


def test_a_secret_setting_is_never_quoted_in_an_error() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        Settings(api_keys=[{"name": "k", "sha256": "not-a-hash-at-all", "scopes": []}], smtp_port="twenty-five")
    lines = settings_problems(caught.value)
    assert lines == ["CHURNSIGNAL_API_KEYS[0].sha256: should match pattern '^[0-9a-fA-F]{64}$'",
                     "CHURNSIGNAL_SMTP_PORT: not a valid integer ('twenty-five')"]
