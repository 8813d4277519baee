"""docker-compose.yml: valid for the Compose specification, and every image, command, port, variable,
host name and mounted file it names exists in the code and in the repository."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
from importlib import resources
from pathlib import PurePosixPath
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from tests.deploy.support import (
    ALERTMANAGER_DIR,
    COMPOSE_FILE,
    ENV_PREFIX,
    IMAGE_NAME,
    PROMETHEUS_DIR,
    ROOT,
    Command,
    default_port,
    parse_cli,
    settings_env_names,
    settings_from_env,
)

CHURNSIGNAL_SERVICES = ("migrate", "ingest", "scoring", "alerts")
STACK = {"kafka", "postgres", "migrate", "ingest", "scoring", "alerts", "prometheus", "alertmanager", "grafana",
         "mailpit"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def parse_env_file(text: str) -> dict[str, str]:
    """The env-file syntax used here: KEY=VALUE lines, optional single or double quotes, # comments."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {line!r}"
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def env_file_paths(service: dict) -> list[str]:
    files = service.get("env_file", [])
    files = [files] if isinstance(files, str) else files
    return [f if isinstance(f, str) else f["path"] for f in files]


def service_env(service: dict) -> dict[str, str]:
    env: dict[str, str] = {}
    for path in env_file_paths(service):
        env.update(parse_env_file((ROOT / path).read_text()))
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    env.update({k: str(v) for k, v in raw.items()})
    return env


def published(port_spec: str) -> tuple[str, int, int]:
    """'127.0.0.1:8080:8080' -> (host ip, host port, container port)."""
    ip, host, container = port_spec.split(":")
    return ip, int(host), int(container)


def test_valid_against_the_compose_specification(compose):
    schema_file = resources.files("check_jsonschema.builtin_schemas") / "vendor" / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    errors = sorted(validator_cls(schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert errors == [], "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_the_specification_schema_does_reject_a_broken_file(compose):
    """Guard against a schema that accepts anything: a bad depends_on condition must fail."""
    schema = json.loads((resources.files("check_jsonschema.builtin_schemas") / "vendor"
                         / "compose-spec.json").read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["scoring"]["depends_on"]["migrate"]["condition"] = "service_finished"
    validator_cls = jsonschema.validators.validator_for(schema)
    assert list(validator_cls(schema).iter_errors(broken))


def test_docker_compose_config_accepts_the_file():
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker CLI not installed")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30,
                           check=False)
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed (schema and structural checks still run)")
    result = subprocess.run([docker, "compose", "-f", str(COMPOSE_FILE), "config", "-q"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def test_the_whole_stack_is_there(compose):
    assert set(compose["services"]) == STACK
    assert compose["services"]["kafka"]["image"].startswith("apache/kafka:4.")
    assert re.fullmatch(r"postgres:1[56](\.\d+)?(-alpine)?", compose["services"]["postgres"]["image"])


@pytest.mark.parametrize("name", CHURNSIGNAL_SERVICES)
def test_churnsignal_services_use_the_project_image_and_valid_commands(compose, name):
    service = compose["services"][name]
    repository, _, _tag = service["image"].partition(":")
    assert repository == IMAGE_NAME
    assert (ROOT / service["build"]["context"]).resolve() == ROOT
    assert (ROOT / service["build"]["dockerfile"]).is_file()
    command = parse_cli(service["command"])
    if name == "migrate":
        assert command.name == "migrate"
        assert service["restart"] == "no"
        assert "ports" not in service
    else:
        assert command == Command("serve", name)


@pytest.mark.parametrize("name", ["ingest", "scoring", "alerts"])
def test_service_ports_are_the_settings_defaults_on_loopback(compose, name):
    ports = [published(p) for p in compose["services"][name]["ports"]]
    assert ports == [("127.0.0.1", default_port(name), default_port(name))]


def test_every_published_port_is_on_loopback(compose):
    for name, service in compose["services"].items():
        for spec in service.get("ports", []):
            assert published(spec)[0] == "127.0.0.1", f"{name} publishes {spec} beyond loopback"


@pytest.mark.parametrize("name", CHURNSIGNAL_SERVICES)
def test_variables_are_settings_fields_and_build_valid_settings(compose, name, monkeypatch):
    service = compose["services"][name]
    for path in env_file_paths(service):
        assert (ROOT / path).is_file()
    env = service_env(service)
    unknown = {k for k in env if k.startswith(ENV_PREFIX)} - settings_env_names()
    assert unknown == set(), f"not Settings fields: {sorted(unknown)}"
    assert all(k.startswith(ENV_PREFIX) for k in env), "only CHURNSIGNAL_* settings are passed"
    settings = settings_from_env(env, monkeypatch)
    assert not settings.embedded
    assert settings.host == "0.0.0.0"
    assert settings.database_url.startswith("postgresql+asyncpg://")
    assert {k.scopes[0] for k in settings.api_keys} == {"ingest", "read", "admin"}


def test_kafka_address_and_partitions_match_the_broker(compose, monkeypatch):
    kafka = compose["services"]["kafka"]["environment"]
    advertised = dict(reversed(item.split("://")) for item in kafka["KAFKA_ADVERTISED_LISTENERS"].split(","))
    env = service_env(compose["services"]["scoring"])
    settings = settings_from_env(env, monkeypatch)
    assert advertised.get(settings.kafka_bootstrap_servers) == kafka["KAFKA_INTER_BROKER_LISTENER_NAME"]
    assert int(kafka["KAFKA_NUM_PARTITIONS"]) == settings.topic_partitions
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "true"
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, single node
    # KRaft wants a cluster id that is a URL-safe base64 UUID (16 bytes, 22 characters).
    assert len(base64.urlsafe_b64decode(kafka["CLUSTER_ID"] + "==")) == 16


def test_database_url_matches_the_postgres_service(compose, monkeypatch):
    pg = compose["services"]["postgres"]["environment"]
    for name in ("migrate", "scoring", "alerts"):
        url = urlsplit(settings_from_env(service_env(compose["services"][name]), monkeypatch).database_url)
        assert (url.hostname, url.port) == ("postgres", 5432)
        assert (url.username, url.password) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])
        assert url.path == f"/{pg['POSTGRES_DB']}"


def test_alerts_mail_goes_to_mailpit(compose, monkeypatch):
    settings = settings_from_env(service_env(compose["services"]["alerts"]), monkeypatch)
    mailpit = compose["services"]["mailpit"]
    assert settings.smtp_host == "mailpit"
    assert settings.smtp_port in {published(p)[2] for p in mailpit["ports"]}
    assert settings.smtp_starttls is False
    assert settings.fallback_email


def test_start_order_waits_for_health_and_migrations(compose):
    services = compose["services"]
    deps = {name: service.get("depends_on", {}) for name, service in services.items()}
    assert deps["migrate"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("scoring", "alerts"):
        assert deps[name]["migrate"] == {"condition": "service_completed_successfully"}
        assert deps[name]["kafka"] == {"condition": "service_healthy"}
    assert deps["ingest"]["kafka"] == {"condition": "service_healthy"}
    assert deps["alerts"]["mailpit"] == {"condition": "service_healthy"}
    for name, targets in deps.items():
        for target, spec in (targets.items() if isinstance(targets, dict) else ((t, {}) for t in targets)):
            assert target in services, f"{name} depends on unknown {target}"
            if spec.get("condition") == "service_healthy":
                check = services[target].get("healthcheck", {})
                assert check.get("test") and not check.get("disable"), f"{target} has no healthcheck"


def test_demo_api_keys_documented_in_the_env_file_hash_to_the_configured_keys(compose):
    (path,) = env_file_paths(compose["services"]["ingest"])
    text = (ROOT / path).read_text()
    plain = re.findall(r"`(demo-[a-z]+-key)`", text)
    assert len(plain) == 3
    configured = {k["sha256"] for k in json.loads(parse_env_file(text)["CHURNSIGNAL_API_KEYS"])}
    assert {hashlib.sha256(p.encode()).hexdigest() for p in plain} == configured


def test_mounted_files_exist_and_prometheus_loads_the_repository_config(compose):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"
    prometheus = compose["services"]["prometheus"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"]}
    flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config = PurePosixPath(flag.split("=", 1)[1])
    source = ROOT / mounts[str(config.parent)] / config.name
    assert source.resolve() == (PROMETHEUS_DIR / "prometheus.yml").resolve()


def test_grafana_provisioning_points_at_mounted_paths(compose):
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: ROOT / v.split(":")[0] for v in grafana["volumes"] if v.startswith(".")}
    provisioning = mounts["/etc/grafana/provisioning"]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "churnsignal.yml").read_text())["providers"]
    dashboards = mounts[provider["options"]["path"]]
    assert (dashboards / "churnsignal.json").is_file()
    home = PurePosixPath(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert (mounts[str(home.parent)] / home.name).is_file()
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (datasource,) = datasources["datasources"]
    url = urlsplit(datasource["url"])
    assert url.hostname in compose["services"] and url.hostname == "prometheus"
    assert f"127.0.0.1:{url.port}:{url.port}" in compose["services"]["prometheus"]["ports"]


def test_alertmanager_loads_the_repository_config_and_mails_through_mailpit(compose):
    alertmanager = compose["services"]["alertmanager"]
    assert alertmanager["image"].startswith("prom/alertmanager:v0.")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in alertmanager["volumes"]}
    flag = next(a for a in alertmanager["command"] if a.startswith("--config.file="))
    path = PurePosixPath(flag.split("=", 1)[1])
    source = ROOT / mounts[str(path.parent)] / path.name
    assert source.resolve() == (ALERTMANAGER_DIR / "alertmanager.yml").resolve()
    smtp = yaml.safe_load(source.read_text())["global"]
    host, _, port = smtp["smtp_smarthost"].rpartition(":")
    assert host == "mailpit"
    assert int(port) in {published(p)[2] for p in compose["services"]["mailpit"]["ports"]}
    # Mailpit in the stack speaks plain SMTP, as alerts' own e-mail does (CHURNSIGNAL_SMTP_STARTTLS=false).
    assert smtp["smtp_require_tls"] is False
    assert alertmanager["depends_on"]["mailpit"] == {"condition": "service_healthy"}


def test_prometheus_sends_its_alerts_to_the_alertmanager_service(compose):
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    (alertmanagers,) = config["alerting"]["alertmanagers"]
    (target,) = [t for sc in alertmanagers["static_configs"] for t in sc["targets"]]
    host, _, port = target.partition(":")
    assert host == "alertmanager" and host in compose["services"]
    assert f"127.0.0.1:{port}:{port}" in compose["services"][host]["ports"]
    assert "alertmanager" in compose["services"]["prometheus"]["depends_on"]
