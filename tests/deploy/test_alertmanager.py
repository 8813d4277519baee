"""deploy/alertmanager/alertmanager.yml, the compose stack's Alertmanager: valid for `amtool check-config`, and
every alert of deploy/prometheus/rules.yml, routed with its own labels, reaches a receiver that e-mails."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.support import ALERTMANAGER_DIR, PROMETHEUS_DIR, amtool

CONFIG = ALERTMANAGER_DIR / "alertmanager.yml"
RULES = PROMETHEUS_DIR / "rules.yml"
TIMEOUT_S = 60


def config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
            if "alert" in rule]


def routes(route: dict) -> list[dict]:
    """The route and every route below it."""
    return [route, *(r for child in route.get("routes", []) for r in routes(child))]


def run_amtool(*args: str, cwd: Path = ALERTMANAGER_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run([amtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S,
                          check=False)


def test_amtool_check_config():
    result = run_amtool("check-config", CONFIG.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_amtool_check_config_rejects_a_route_to_an_unknown_receiver(tmp_path):
    broken = config()
    broken["route"]["receiver"] = "nobody"
    (tmp_path / CONFIG.name).write_text(yaml.safe_dump(broken))
    result = run_amtool("check-config", CONFIG.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "nobody" in result.stdout + result.stderr


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_every_alert_is_routed_to_email(rule):
    """`amtool config routes test` resolves the receivers of an alert with the rule's static labels."""
    labels = {"alertname": rule["alert"], **rule["labels"]}
    result = run_amtool("config", "routes", "test", f"--config.file={CONFIG.name}",
                        *(f"{name}={value}" for name, value in labels.items()))
    assert result.returncode == 0, result.stdout + result.stderr
    receivers = {r["name"]: r for r in config()["receivers"]}
    resolved = result.stdout.strip().split(",")
    assert resolved and all(name in receivers for name in resolved), result.stdout
    for name in resolved:
        assert receivers[name].get("email_configs"), f"{rule['alert']} goes to {name}, which sends no e-mail"


def test_routes_and_receivers_hang_together():
    """What amtool checks, readable without it: every route names a receiver that exists, every receiver
    e-mails (resolved alerts too), and the SMTP settings are global."""
    doc = config()
    receivers = {r["name"]: r for r in doc["receivers"]}
    for route in routes(doc["route"]):
        assert route.get("receiver", doc["route"]["receiver"]) in receivers
        for matcher in route.get("matchers", []):
            assert "=" in matcher
    for receiver in receivers.values():
        (email,) = receiver["email_configs"]
        assert email["to"] and email.get("send_resolved") is True
    assert {"smtp_smarthost", "smtp_from", "smtp_require_tls"} <= set(doc["global"])
    # Grouping uses labels the alerts carry.
    assert set(doc["route"]["group_by"]) <= {"alertname", "service", "severity", "job", "instance"}


def test_inhibit_rules_name_real_alerts_and_shared_labels():
    rules = {rule["alert"]: rule for rule in alert_rules()}
    for inhibit in config().get("inhibit_rules", []):
        names = []
        for side in ("source_matchers", "target_matchers"):
            (matcher,) = inhibit[side]
            label, _, value = matcher.partition("=")
            assert label == "alertname"
            names.append(value.strip('"'))
        assert all(name in rules for name in names), names
        for name in names:
            for label in inhibit["equal"]:
                assert label in rules[name]["expr"], f"{name} has no {label} label to compare"
