"""The Grafana dashboard: laid out without overlaps, every query on the data source its `datasource`
variable picks (no hard-coded uid), with PromQL that promtool parses and that reads only metrics and labels
the services expose."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from tests.deploy.support import GRAFANA_DIR, TARGET_LABELS, promtool, selectors, series_catalog

DASHBOARD = GRAFANA_DIR / "dashboards" / "churnsignal.json"
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
# Grafana's interval variables, given a concrete value so that promtool can parse the expressions.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    return dashboard()["panels"]


def expressions() -> list[str]:
    return [target["expr"] for panel in panels() for target in panel["targets"]]


def test_panels_have_unique_ids_and_do_not_overlap():
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in panels():
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24
        area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}
        assert cells.isdisjoint(area), f"panel {panel['title']!r} overlaps another"
        cells |= area
    assert dashboard()["uid"] == "churnsignal"


def test_every_panel_queries_the_datasource_variable():
    (variable,) = [v for v in dashboard()["templating"]["list"] if v["type"] == "datasource"]
    assert (variable["name"], variable["query"]) == ("datasource", "prometheus")
    assert not variable.get("includeAll") and not variable.get("multi")
    for panel in panels():
        assert panel["targets"], panel["title"]
        refs = [panel["datasource"], *(t["datasource"] for t in panel["targets"])]
        assert all(ref == {"type": "prometheus", "uid": "${datasource}"} for ref in refs), panel["title"]


def test_no_datasource_uid_is_hard_coded():
    """Only the built-in annotation source names a uid; every other reference goes through the variable."""
    def walk(node, path=""):
        if isinstance(node, dict):
            if "uid" in node and "type" in node:
                yield path, node
            for key, value in node.items():
                yield from walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from walk(value, f"{path}/{i}")
    refs = [(path, ref) for path, ref in walk(dashboard()) if ref["type"] != "grafana"]
    assert refs
    assert [(path, ref) for path, ref in refs if ref["uid"] != "${datasource}"] == []


def test_the_provisioned_datasource_is_what_the_variable_lists():
    """In the compose stack the variable lists the provisioned Prometheus, the default data source."""
    (datasource,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    (variable,) = [v for v in dashboard()["templating"]["list"] if v["type"] == "datasource"]
    assert datasource["type"] == variable["query"]
    assert datasource["isDefault"] is True


def test_dashboard_shows_what_the_operators_need():
    exprs = " ".join(expressions())
    for metric in ("churnsignal_ingest_events_total", "churnsignal_consumer_lag_records",
                   "churnsignal_scoring_processing_latency_seconds_bucket", "churnsignal_risks_total",
                   "churnsignal_notifications_total", "churnsignal_signal_to_notification_seconds_bucket",
                   "churnsignal_dead_letters_total"):
        assert metric in exprs, f"no panel shows {metric}"
    assert re.search(r"by \([^)]*\boutcome\b[^)]*\) \(rate\(churnsignal_notifications_total", exprs), \
        "notifications are split by outcome"


def test_cpu_and_memory_per_service():
    """The process collector's series, one line per service (job churnsignal-<service>)."""
    by_metric = {}
    for panel in panels():
        for target in panel["targets"]:
            for metric in ("process_cpu_seconds_total", "process_resident_memory_bytes"):
                if metric in target["expr"]:
                    by_metric[metric] = (panel, target)
    assert set(by_metric) == {"process_cpu_seconds_total", "process_resident_memory_bytes"}
    for metric, (_panel, target) in by_metric.items():
        assert re.search(r"\bby \(job\)", target["expr"]), metric
        assert 'job=~"churnsignal-.+"' in target["expr"]
        assert target["legendFormat"] == "{{job}}"
    assert "rate(process_cpu_seconds_total" in by_metric["process_cpu_seconds_total"][1]["expr"]
    assert by_metric["process_resident_memory_bytes"][0]["fieldConfig"]["defaults"]["unit"] == "bytes"


@pytest.mark.parametrize("expr", expressions())
def test_expressions_read_only_metrics_and_labels_that_exist(expr):
    catalog = series_catalog()
    found = selectors(expr)
    assert found
    for selector in found:
        if selector.metric == "up":
            assert selector.labels <= TARGET_LABELS
            continue
        assert selector.metric in catalog, f"{selector.metric} is not defined in shared/metrics.py"
        extra = {"le"} if selector.metric.endswith("_bucket") else set()
        assert selector.labels <= catalog[selector.metric].labels | TARGET_LABELS | extra


def test_promtool_parses_every_expression(tmp_path):
    tool = promtool()
    rules = []
    for i, expr in enumerate(expressions()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:expr_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
