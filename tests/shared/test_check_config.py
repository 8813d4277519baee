"""`churnsignal check-config [service] [--no-connect]`: the settings in use with every secret masked, the
routing and scoring config files, Kafka and the database; exit 0 when all is well, 2 for a configuration
error, 3 for a dependency that cannot be reached or is not migrated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.settings import hash_key
from tests.conftest import KAFKA, requires_kafka, requires_pg
from tests.shared.test_config_errors import churnsignal, closed_port

SECRETS = {
    "db_password": "pw-4f9a1c",
    "api_key_hash": hash_key("a-plain-api-key"),
    "smtp_password": "smtp-pw-77e1",
    "bot_token": "xoxb-bot-token-a8d2",
    "webhook_url": "https://hooks.slack.example/services/T000/B000/webhook-secret-5c3",
    "link_secret": "link-secret-0123456789abcdef",
    "source_secret": "zendesk-shared-secret-91b",
    "signing_secret": "slack-signing-secret-3e3",
    "crm_hook": "https://crm.example/hook?token=crm-secret-d4",
}

ROUTING = """\
receivers:
  - name: crm
    webhook: {url_env: CHURNSIGNAL_CRM_HOOK_URL, secret_env: CRM_HOOK_SECRET}
route:
  receiver: csm
  routes:
    - match: {severity_at_least: high}
      receiver: crm
"""


def full_environment(tmp_path: Path, database_url: str, kafka: str) -> dict[str, str]:
    routing = tmp_path / "routing.yaml"
    routing.write_text(ROUTING, encoding="utf-8")
    scoring = tmp_path / "scoring.yaml"
    scoring.write_text("version: tuned-7\ngreen_at: 75\n", encoding="utf-8")
    return {
        "CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "CHURNSIGNAL_DATABASE_URL": database_url,
        "CHURNSIGNAL_API_KEYS": json.dumps([{"name": "backend", "sha256": SECRETS["api_key_hash"],
                                             "scopes": ["ingest", "read"]}]),
        "CHURNSIGNAL_SMTP_HOST": "smtp.example",
        "CHURNSIGNAL_SMTP_PASSWORD": SECRETS["smtp_password"],
        "CHURNSIGNAL_SLACK_BOT_TOKEN": SECRETS["bot_token"],
        "CHURNSIGNAL_SLACK_WEBHOOK_URL": SECRETS["webhook_url"],
        "CHURNSIGNAL_SLACK_SIGNING_SECRET": SECRETS["signing_secret"],
        "CHURNSIGNAL_LINK_SECRET": SECRETS["link_secret"],
        "CHURNSIGNAL_SOURCE_SECRETS": json.dumps({"zendesk": SECRETS["source_secret"]}),
        "CHURNSIGNAL_ROUTING_FILE": str(routing),
        "CHURNSIGNAL_SCORING_CONFIG_FILE": str(scoring),
        # Named by the routing file: a CHURNSIGNAL_ name that is not a setting, and not a typo either.
        "CHURNSIGNAL_CRM_HOOK_URL": SECRETS["crm_hook"],
        # Read by the test suite and the scripts, not by the settings.
        "CHURNSIGNAL_TEST_DATABASE_URL": f"postgresql+asyncpg://t:{SECRETS['db_password']}@127.0.0.1:1/t",
        "CHURNSIGNAL_START_TIMEOUT": "400",
    }


def pg_url(port: int) -> str:
    return f"postgres://churnsignal:{SECRETS['db_password']}@127.0.0.1:{port}/churnsignal"


def test_without_connecting_it_prints_the_settings_with_every_secret_masked(tmp_path: Path) -> None:
    env = full_environment(tmp_path, pg_url(closed_port()), f"127.0.0.1:{closed_port()}")
    result = churnsignal(tmp_path, "check-config", "--no-connect", **env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    out = result.stdout
    for secret in SECRETS.values():
        assert secret not in out
    lines = out.splitlines()
    assert lines[0].startswith("churnsignal ") and "configuration of ingest, scoring, alerts" in lines[0]
    assert "  CHURNSIGNAL_DATABASE_URL = postgresql+asyncpg://churnsignal:***@127.0.0.1:" in out
    assert "  CHURNSIGNAL_API_KEYS = backend [ingest read] sha256=***" in lines
    assert "  CHURNSIGNAL_SMTP_PASSWORD = *** (set)" in lines
    assert "  CHURNSIGNAL_SLACK_BOT_TOKEN = *** (set)" in lines
    assert "  CHURNSIGNAL_SLACK_WEBHOOK_URL = *** (set)" in lines
    assert "  CHURNSIGNAL_LINK_SECRET = *** (set)" in lines
    assert "  CHURNSIGNAL_SOURCE_SECRETS = zendesk: ***" in lines
    assert "  CHURNSIGNAL_SMTP_HOST = smtp.example" in lines
    assert "  CHURNSIGNAL_TOPIC_PREFIX = churnsignal.  (default)" in lines
    assert f"  ok     CHURNSIGNAL_SCORING_CONFIG_FILE: {tmp_path / 'scoring.yaml'} (version tuned-7)" in lines
    assert f"  ok     CHURNSIGNAL_ROUTING_FILE: {tmp_path / 'routing.yaml'} (3 receivers: crm, csm, fallback)" in lines
    assert ("  note   CHURNSIGNAL_ROUTING_FILE: names CRM_HOOK_SECRET, which is not set: deliveries there fail"
            in lines)
    assert "  note   connections: not tried (--no-connect)" in lines
    assert lines[-1] == "configuration OK"


def test_unreachable_kafka_and_database_exit_3_naming_both(tmp_path: Path) -> None:
    kafka, db = closed_port(), closed_port()
    env = full_environment(tmp_path, pg_url(db), f"127.0.0.1:{kafka}")
    result = churnsignal(tmp_path, "check-config", **env)
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"error: cannot reach Kafka at 127.0.0.1:{kafka} (CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS): connection refused",
        f"error: cannot reach the database at 127.0.0.1:{db} (CHURNSIGNAL_DATABASE_URL): connection refused",
    ]
    assert result.stdout.splitlines()[-1] == "configuration has errors"
    assert SECRETS["db_password"] not in result.stdout + result.stderr


@pytest.mark.parametrize(("file_key", "content", "message"), [
    ("CHURNSIGNAL_ROUTING_FILE", "route: {receiver: nobody}\n", "error: CHURNSIGNAL_ROUTING_FILE: "),
    ("CHURNSIGNAL_SCORING_CONFIG_FILE", "gren_at: 75\n",
     "error: CHURNSIGNAL_SCORING_CONFIG_FILE: unknown key 'gren_at' in scoring config"),
    ("CHURNSIGNAL_SCORING_CONFIG_FILE", "health: [unclosed\n",
     "error: CHURNSIGNAL_SCORING_CONFIG_FILE: "),
])
def test_a_bad_file_is_a_configuration_error_over_an_unreachable_dependency(
        tmp_path: Path, file_key: str, content: str, message: str) -> None:
    env = full_environment(tmp_path, pg_url(closed_port()), f"127.0.0.1:{closed_port()}")
    Path(env[file_key]).write_text(content, encoding="utf-8")
    if file_key == "CHURNSIGNAL_ROUTING_FILE":
        del env["CHURNSIGNAL_CRM_HOOK_URL"]   # the new file does not name it
    result = churnsignal(tmp_path, "check-config", **env)
    assert result.returncode == 2, result.stdout + result.stderr   # configuration first
    first = result.stderr.splitlines()[0]
    assert first.startswith(message), first
    assert first.endswith(f"{env[file_key]})")


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    env = full_environment(tmp_path, pg_url(closed_port()), "127.0.0.1:9092")
    env["CHURNSIGNAL_ROUTING_FILE"] = str(tmp_path / "nowhere.yaml")
    del env["CHURNSIGNAL_CRM_HOOK_URL"]
    result = churnsignal(tmp_path, "check-config", "alerts", "--no-connect", **env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: CHURNSIGNAL_ROUTING_FILE: cannot read {tmp_path / 'nowhere.yaml'} (no such file or directory)"]


def test_a_variable_a_missing_routing_file_would_name_is_unknown_and_the_file_is_said_why(tmp_path: Path) -> None:
    env = full_environment(tmp_path, pg_url(closed_port()), "127.0.0.1:9092")
    env["CHURNSIGNAL_ROUTING_FILE"] = str(tmp_path / "nowhere.yaml")
    result = churnsignal(tmp_path, "check-config", "alerts", "--no-connect", **env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: unknown variable CHURNSIGNAL_CRM_HOOK_URL; did you mean CHURNSIGNAL_SLACK_WEBHOOK_URL?",
        f"error: CHURNSIGNAL_ROUTING_FILE: cannot read {tmp_path / 'nowhere.yaml'} (no such file or directory)"]


def test_ingest_alone_needs_kafka_but_no_database(tmp_path: Path) -> None:
    result = churnsignal(tmp_path, "check-config", "ingest", "--no-connect",
                         CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:9092")
    assert result.returncode == 0, result.stdout + result.stderr
    result = churnsignal(tmp_path, "check-config", "ingest", "--no-connect")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: CHURNSIGNAL_KAFKA_BOOTSTRAP_SERVERS is not set: `serve ingest` needs Kafka (for the in-process "
        "bus: `serve ingest --embedded` or `churnsignal run`)"]


@pytest.mark.integration
@requires_kafka()
@requires_pg()
def test_with_the_real_kafka_and_a_migrated_database_all_is_well(tmp_path: Path, pg_database_url: str) -> None:
    env = full_environment(tmp_path, pg_database_url, KAFKA)
    result = churnsignal(tmp_path, "check-config", **env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith(f"  ok     Kafka at {KAFKA}: ") and line.endswith("broker") or
               line.endswith("brokers") for line in lines), result.stdout
    assert any(line.startswith("  ok     database at ") and "reachable, migrated (" in line for line in lines)
    assert lines[-1] == "configuration OK"
