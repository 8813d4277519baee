"""Prometheus scrape config and alert rules: valid for promtool, unit-tested per rule, and built only on
metrics, labels and jobs that the services and the scrape configs really produce."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.deploy.support import (
    COMPOSE_FILE,
    PROMETHEUS_DIR,
    RUNBOOK,
    TARGET_LABELS,
    default_port,
    promtool,
    selectors,
    series_catalog,
)

RULES = PROMETHEUS_DIR / "rules.yml"
RULES_TEST = PROMETHEUS_DIR / "rules_test.yml"
SEVERITIES = {"critical", "warning"}
TIMEOUT_S = 120
# Where deploy/RUNBOOK.md is published (the repository on GitHub); runbook_url links to its sections.
RUNBOOK_URL = "https://github.com/churnsignal/churnsignal/blob/main/deploy/RUNBOOK.md"


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation but hyphens and underscores
    dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def runbook_anchors() -> set[str]:
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", RUNBOOK.read_text(), re.MULTILINE)}


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)


def alert_rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules():
    result = run_promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_test_rules():
    result = run_promtool("test", "rules", RULES_TEST.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_broken_rule_makes_promtool_test_rules_fail(tmp_path):
    """The unit tests really pin behaviour: raising a threshold makes the firing case fail."""
    rules = RULES.read_text().replace("> 100000", "> 1000000")
    assert rules != RULES.read_text()
    (tmp_path / "rules.yml").write_text(rules)
    (tmp_path / "rules_test.yml").write_text(RULES_TEST.read_text())
    result = subprocess.run([promtool(), "test", "rules", "rules_test.yml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert result.returncode != 0
    assert "ChurnsignalConsumerLagCritical" in result.stdout + result.stderr


def test_promtool_check_config_compose():
    result = run_promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config_kubernetes():
    result = run_promtool("check", "config", "prometheus-k8s.yml")
    output = result.stdout + result.stderr
    if "field kubernetes_sd_configs not found" in output:
        pytest.skip("this promtool build has no Kubernetes service discovery (Debian's prometheus package)")
    assert result.returncode == 0, output


def test_every_rule_has_a_firing_and_a_quiet_unit_test():
    tests = yaml.safe_load(RULES_TEST.read_text())
    assert tests["rule_files"] == [RULES.name]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert len(names) == len(alert_rules()), "alert names must be unique"
    assert names - firing == set(), "rules with no firing test"
    assert names - quiet == set(), "rules with no not-firing test"
    assert (firing | quiet) - names == set(), "tests of rules that do not exist"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_rule_has_severity_summary_description_and_runbook(rule):
    assert rule["alert"].startswith("Churnsignal")
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert len(annotations["description"].strip()) > len(annotations["summary"].strip())
    assert "runbook" not in annotations, "runbook_url, an absolute link, replaces the relative `runbook`"
    url, _, anchor = annotations["runbook_url"].partition("#")
    assert url == RUNBOOK_URL
    assert anchor in runbook_anchors(), f"RUNBOOK.md has no section whose anchor is #{anchor}"


def test_runbook_anchor_check_is_real():
    assert github_anchor("consumer-lag") == "consumer-lag"
    assert github_anchor("Signal to notification: latency") == "signal-to-notification-latency"
    assert "consumer-lag" in runbook_anchors()
    assert "no-such-section" not in runbook_anchors()


def test_rule_unit_tests_expect_the_runbook_urls_of_the_rules():
    """promtool compares annotations exactly: the expected ones carry the same runbook_url as the rule."""
    urls = {rule["alert"]: rule["annotations"]["runbook_url"] for rule in alert_rules()}
    for case in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            for alert in check.get("exp_alerts", []):
                assert alert["exp_annotations"]["runbook_url"] == urls[check["alertname"]]


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_rule_uses_only_metrics_and_labels_that_exist(rule):
    catalog = series_catalog()
    found = selectors(rule["expr"])
    assert found, "the rule reads no churnsignal metric"
    for selector in found:
        if selector.metric == "up":
            assert selector.labels <= TARGET_LABELS
            continue
        assert selector.metric in catalog, f"{selector.metric} is not defined in shared/metrics.py"
        family = catalog[selector.metric]
        extra = {"le"} if selector.metric.endswith("_bucket") else set()
        unknown = selector.labels - family.labels - TARGET_LABELS - extra
        assert unknown == set(), f"{selector.metric} has no label(s) {sorted(unknown)}"


def test_rules_cover_what_wakes_an_sre():
    exprs = " ".join(rule["expr"] for rule in alert_rules())
    for needle in ("churnsignal_consumer_lag_records", "churnsignal_dead_letters_total",
                   'churnsignal_notifications_total{outcome="dead_letter"}',
                   'churnsignal_notifications_total{outcome="failed"}',
                   'churnsignal_ingest_requests_total{status=~"5..", status!="503"}',
                   'churnsignal_ingest_requests_total{status="503"}', "churnsignal_ready == 0", "up{",
                   "churnsignal_signal_to_notification_seconds_bucket"):
        assert needle in exprs
    slo = next(r for r in alert_rules() if "signal_to_notification" in r["expr"])
    assert "histogram_quantile(0.99" in slo["expr"] and "> 0.25" in slo["expr"]


def test_scrape_jobs_match_the_compose_services_and_the_rules():
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for service in ("ingest", "scoring", "alerts"):
        job = jobs[f"churnsignal-{service}"]
        targets = [t for sc in job["static_configs"] for t in sc["targets"]]
        assert targets == [f"{service}:{default_port(service)}"]
        assert service in compose["services"]
        assert job.get("metrics_path", "/metrics") == "/metrics"
    # The rules' job selectors name these jobs.
    rules_text = RULES.read_text()
    for job_name in re.findall(r'job="([^"]+)"', rules_text):
        assert job_name in jobs
    assert config["rule_files"] == [RULES.name]


def test_kubernetes_scrape_config_produces_the_same_job_names():
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus-k8s.yml").read_text())
    (job,) = config["scrape_configs"]
    relabel = next(r for r in job["relabel_configs"] if r.get("target_label") == "job")
    components = re.fullmatch(r"\((.+)\)", relabel["regex"]).group(1).split("|")
    assert sorted(components) == ["alerts", "ingest", "scoring"]
    assert relabel["replacement"] == "churnsignal-$1"
    assert config["rule_files"] == [RULES.name]
