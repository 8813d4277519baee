"""deploy/helm/churnsignal: `helm lint` passes; `helm template` with the defaults, with every optional feature
on and with an inline Secret renders objects valid for the Kubernetes API (the Prometheus Operator's
ServiceMonitor and PrometheusRule against the fields of their CRDs); the pods are those of deploy/k8s
(arguments, ports, probes, environment, secrets, resources, security); the PrometheusRule is
deploy/prometheus/rules.yml; and the chart refuses values that cannot work, naming the problem.

helm comes from `make tools` (scripts/install-tools.sh builds it into var/tools/bin); the tests skip only when
neither there nor on PATH."""

from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import subprocess
import tomllib
from collections import Counter
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from shared.settings import Settings
from tests.deploy.support import (
    DEPLOY,
    ENV_PREFIX,
    K8S_DIR,
    PROMETHEUS_DIR,
    ROOT,
    Command,
    default_port,
    load_yaml_documents,
    parse_cli,
    settings_env_names,
    settings_from_env,
)

CHART = DEPLOY / "helm" / "churnsignal"
CHART_RULES = CHART / "files" / "rules.yml"
RULES = PROMETHEUS_DIR / "rules.yml"
TOOLS_HELM = ROOT / "var" / "tools" / "bin" / "helm"
KUBERNETES_VERSION = "1.30.0"
RELEASE = "churnsignal"
NAMESPACE = "customer-success"
SERVICES = ("ingest", "scoring", "alerts")
AUTOSCALED = ("ingest", "alerts")
TIMEOUT_S = 120


@functools.cache
def example_secret() -> dict:
    (secret,) = load_yaml_documents(K8S_DIR / "secret.example.yaml")
    return secret


# Every optional feature on, and the Secret named by existingSecret.
EVERYTHING: dict[str, Any] = {
    "secrets": {"existingSecret": "churnsignal-prod-secrets"},
    "ingest": {"autoscaling": {"enabled": True}, "pdb": {"enabled": True}},
    "scoring": {"pdb": {"enabled": True}},
    "alerts": {"autoscaling": {"enabled": True}, "pdb": {"enabled": True}},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
                "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}},
}


def inline_secret_values() -> dict[str, Any]:
    """The chart creates the Secret, from the example Secret's (placeholder) values."""
    return {"secrets": {"create": True, "values": dict(example_secret()["stringData"])}}


VARIANTS = ("defaults", "everything", "inline-secret")


def variant_values(variant: str) -> dict[str, Any]:
    return {"defaults": {}, "everything": EVERYTHING, "inline-secret": inline_secret_values()}[variant]


# --------------------------------------------------------------------------- running helm


def helm() -> str:
    if TOOLS_HELM.is_file() and os.access(TOOLS_HELM, os.X_OK):
        return str(TOOLS_HELM)
    path = shutil.which("helm")
    if path is None:
        pytest.skip("helm not installed: `make tools` (bash scripts/install-tools.sh) builds it into var/tools/bin")
    return path


def run_helm(*args: str, values: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--values", "-"] if values is not None else []
    return subprocess.run([helm(), *args, *extra], input=yaml.safe_dump(values or {}), capture_output=True,
                          text=True, timeout=TIMEOUT_S, check=False, cwd=ROOT)


def template(values: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return run_helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version",
                    KUBERNETES_VERSION, values=values)


@functools.cache
def rendered(variant: str) -> tuple[dict, ...]:
    result = template(variant_values(variant))
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def objects(variant: str, kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: copy.deepcopy(doc) for doc in rendered(variant) if doc["kind"] == kind}


def deployment(variant: str, service: str) -> dict:
    return objects(variant, "Deployment")[f"{RELEASE}-{service}"]


def migrate_job(variant: str) -> dict:
    return objects(variant, "Job")[f"{RELEASE}-migrate"]


def ident(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


# --------------------------------------------------------------------------- deploy/k8s, the reference


@functools.cache
def k8s_objects() -> tuple[dict, ...]:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    return tuple(doc for name in kustomization["resources"] for doc in load_yaml_documents(K8S_DIR / name))


def k8s(kind: str, name: str) -> dict:
    (doc,) = [d for d in k8s_objects() if d["kind"] == kind and d["metadata"]["name"] == name]
    return copy.deepcopy(doc)


def container(workload: dict) -> dict:
    (one,) = workload["spec"]["template"]["spec"]["containers"]
    return one


# --------------------------------------------------------------------------- the Prometheus Operator's CRDs
# The fields the chart uses, with their types, from the openAPIV3Schema of the CRDs monitoring.coreos.com/v1
# ServiceMonitor and PrometheusRule (prometheus-operator, example/prometheus-operator-crd/
# monitoring.coreos.com_servicemonitors.yaml and monitoring.coreos.com_prometheusrules.yaml). Closed
# (additionalProperties: false) so that a misspelt field fails here rather than being pruned by the API server.

DURATION = {"type": "string",
            "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
METADATA = {"type": "object", "required": ["name", "labels"],
            "properties": {"name": {"type": "string"}, "labels": STRING_MAP, "annotations": STRING_MAP}}
LABEL_SELECTOR = {"type": "object", "additionalProperties": False,
                  "properties": {"matchLabels": STRING_MAP, "matchExpressions": {"type": "array"}}}
RELABEL = {"type": "object", "additionalProperties": False,
           "properties": {"action": {"enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod",
                                              "HashMod", "labelmap", "LabelMap", "labeldrop", "LabelDrop",
                                              "labelkeep", "LabelKeep", "lowercase", "Lowercase", "uppercase",
                                              "Uppercase", "keepequal", "KeepEqual", "dropequal", "DropEqual"]},
                          "modulus": {"type": "integer"}, "regex": {"type": "string"},
                          "replacement": {"type": "string"}, "separator": {"type": "string"},
                          "sourceLabels": {"type": "array", "items": {"type": "string"}},
                          "targetLabel": {"type": "string"}}}
SERVICE_MONITOR_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": METADATA,
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": LABEL_SELECTOR,
                "namespaceSelector": {"type": "object", "additionalProperties": False,
                                      "properties": {"any": {"type": "boolean"},
                                                     "matchNames": {"type": "array", "items": {"type": "string"}}}},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "endpoints": {
                    "type": "array", "minItems": 1,
                    "items": {"type": "object", "additionalProperties": False,
                              "properties": {"port": {"type": "string"}, "path": {"type": "string"},
                                             "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                                             "interval": DURATION, "scrapeTimeout": DURATION,
                                             "honorLabels": {"type": "boolean"},
                                             "relabelings": {"type": "array", "items": RELABEL},
                                             "metricRelabelings": {"type": "array", "items": RELABEL}}}},
            }},
    },
}
PROMETHEUS_RULE_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": METADATA,
        "spec": {"type": "object", "additionalProperties": False, "properties": {"groups": {
            "type": "array",
            "items": {"type": "object", "additionalProperties": False, "required": ["name"],
                      "properties": {"name": {"type": "string", "minLength": 1}, "interval": DURATION,
                                     "rules": {"type": "array", "items": {
                                         "type": "object", "additionalProperties": False, "required": ["expr"],
                                         "properties": {"alert": {"type": "string"}, "record": {"type": "string"},
                                                        "expr": {"type": ["string", "integer"]},
                                                        "for": DURATION, "keep_firing_for": DURATION,
                                                        "labels": STRING_MAP,
                                                        "annotations": STRING_MAP}}}}}}}},
    },
}
CRD_SCHEMAS = {"ServiceMonitor": SERVICE_MONITOR_SCHEMA, "PrometheusRule": PROMETHEUS_RULE_SCHEMA}


def validate(doc: dict) -> None:
    if doc["kind"] in CRD_SCHEMAS:
        jsonschema.Draft202012Validator(CRD_SCHEMAS[doc["kind"]]).validate(doc)
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


# --------------------------------------------------------------------------- lint and schema


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_lint(variant):
    result = run_helm("lint", "--strict", str(CHART), "--kube-version", KUBERNETES_VERSION,
                      values=variant_values(variant))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_objects_are_valid_for_the_kubernetes_api(variant):
    errors = []
    for doc in rendered(variant):
        try:
            validate(doc)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            errors.append(f"{ident(doc)}: {exc}")
    assert errors == []


def test_validation_catches_a_misspelt_field():
    deploy = deployment("defaults", "ingest")
    deploy["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deploy)
    (monitor,) = objects("everything", "ServiceMonitor").values()
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)
    (rule,) = objects("everything", "PrometheusRule").values()
    rule["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
    with pytest.raises(jsonschema.ValidationError):
        validate(rule)


def test_each_variant_renders_the_objects_it_asks_for():
    base = Counter({"ServiceAccount": 1, "ConfigMap": 2, "Service": 3, "Deployment": 3, "Job": 1})
    assert Counter(d["kind"] for d in rendered("defaults")) == base
    assert Counter(d["kind"] for d in rendered("everything")) == base + Counter(
        {"HorizontalPodAutoscaler": 2, "PodDisruptionBudget": 3, "ServiceMonitor": 1, "PrometheusRule": 1})
    # The Secret, and the hook Secret the migration reads before the release's objects exist.
    assert Counter(d["kind"] for d in rendered("inline-secret")) == base + Counter({"Secret": 2})
    for variant in VARIANTS:
        names = [ident(d) for d in rendered(variant)]
        assert len(names) == len(set(names))
        for doc in rendered(variant):
            assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "churnsignal", ident(doc)
            assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE, ident(doc)


def test_chart_version_and_image_follow_the_release():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["apiVersion"] == "v2" and chart["name"] == "churnsignal"
    assert chart["appVersion"] == version
    (image,) = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())["images"]
    for doc in (*objects("defaults", "Deployment").values(), migrate_job("defaults")):
        assert container(doc)["image"] == f"{image['newName']}:{version}"


# --------------------------------------------------------------------------- the same pods as deploy/k8s


def without_instance(labels: dict) -> dict:
    return {k: v for k, v in labels.items() if k != "app.kubernetes.io/instance"}


@pytest.mark.parametrize("service", SERVICES)
def test_pods_are_those_of_deploy_k8s(service):
    """Containers (arguments, ports, probes, environment and its secret keys, resources, security, mounts) and
    pod specs are equal, but for the image's registry and the release label in the selectors."""
    chart = deployment("defaults", service)
    reference = k8s("Deployment", service)
    chart_pod, reference_pod = chart["spec"]["template"]["spec"], reference["spec"]["template"]["spec"]
    for pod in (chart_pod, reference_pod):
        pod["containers"][0].pop("image")
        for constraint in pod["topologySpreadConstraints"]:
            constraint["labelSelector"]["matchLabels"] = without_instance(constraint["labelSelector"]["matchLabels"])
    assert chart_pod == reference_pod
    assert parse_cli(container(chart)["args"]) == Command("serve", service)
    assert container(chart)["ports"] == [{"name": "http", "containerPort": default_port(service), "protocol": "TCP"}]
    for key in ("strategy", "revisionHistoryLimit"):
        assert chart["spec"][key] == reference["spec"][key]
    assert without_instance(chart["spec"]["selector"]["matchLabels"]) == reference["spec"]["selector"]["matchLabels"]
    chart_meta, reference_meta = chart["spec"]["template"]["metadata"], reference["spec"]["template"]["metadata"]
    assert without_instance(chart_meta["labels"]) == reference_meta["labels"]
    prometheus = {k: v for k, v in chart_meta["annotations"].items() if k.startswith("prometheus.io/")}
    assert prometheus == reference_meta["annotations"]
    assert "checksum/config" in chart_meta["annotations"]


def test_migration_job_is_a_hook_running_what_deploy_k8s_runs():
    job = migrate_job("defaults")
    reference = k8s("Job", "churnsignal-migrate")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    ours, theirs = container(job), container(reference)
    assert parse_cli(ours["args"]) == Command("migrate", None)
    for key in ("args", "resources", "securityContext", "volumeMounts", "imagePullPolicy"):
        assert ours[key] == theirs[key], key
    assert [e["name"] for e in ours["env"]] == [e["name"] for e in theirs["env"]]
    database = next(e for e in ours["env"] if e["name"] == "CHURNSIGNAL_DATABASE_URL")
    assert database["valueFrom"]["secretKeyRef"] == {"name": "churnsignal-secrets", "key": "database-url"}
    for key in ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        assert job["spec"][key] == reference["spec"][key]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    # Hooks run before the release's objects exist: the Job reads none of them.
    assert "serviceAccountName" not in pod
    assert "envFrom" not in ours
    assert all("configMapKeyRef" not in e.get("valueFrom", {}) for e in ours["env"])


def test_inline_secret_reaches_the_migration_through_a_hook_secret():
    secrets = objects("inline-secret", "Secret")
    hook = secrets[f"{RELEASE}-migrate"]
    job = migrate_job("inline-secret")
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == job["metadata"]["annotations"]["helm.sh/hook"]
    assert int(hook["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"])
    assert "hook-succeeded" in hook["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    assert hook["stringData"] == {"database-url": example_secret()["stringData"]["database-url"]}
    ref = next(e for e in container(job)["env"] if e["name"] == "CHURNSIGNAL_DATABASE_URL")
    assert ref["valueFrom"]["secretKeyRef"] == {"name": hook["metadata"]["name"], "key": "database-url"}


def test_configmaps_are_those_of_deploy_k8s():
    for name in ("churnsignal-config", "churnsignal-routing"):
        chart = objects("defaults", "ConfigMap")[name]["data"]
        reference = k8s("ConfigMap", name)["data"]
        if name == "churnsignal-routing":
            assert yaml.safe_load(chart["routing.yaml"]) == yaml.safe_load(reference["routing.yaml"])
        else:
            assert chart == reference
            assert set(chart) <= settings_env_names()


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_secret_reference_names_the_secret_and_a_key_it_has(variant):
    keys = set(example_secret()["stringData"])
    expected = {"defaults": example_secret()["metadata"]["name"], "everything": "churnsignal-prod-secrets",
                "inline-secret": f"{RELEASE}-secrets"}[variant]
    refs = [e["valueFrom"]["secretKeyRef"] for d in objects(variant, "Deployment").values()
            for e in container(d)["env"] if "secretKeyRef" in e.get("valueFrom", {})]
    assert refs
    assert {ref["name"] for ref in refs} == {expected}
    assert {ref["key"] for ref in refs} == keys
    if variant == "inline-secret":
        secret = objects(variant, "Secret")[expected]
        assert secret["stringData"] == example_secret()["stringData"]
        checksums = {d["spec"]["template"]["metadata"]["annotations"].get("checksum/secret")
                     for d in objects(variant, "Deployment").values()}
        assert len(checksums) == 1 and None not in checksums, "a changed Secret must roll the pods"


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_gets_valid_settings(service, monkeypatch):
    """What a pod of the inline-secret release sees (ConfigMap + Secret) builds Settings for a real deployment."""
    pod_container = container(deployment("inline-secret", service))
    configmaps = objects("inline-secret", "ConfigMap")
    secrets = objects("inline-secret", "Secret")
    env: dict[str, str] = {}
    for source in pod_container["envFrom"]:
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for variable in pod_container["env"]:
        ref = variable["valueFrom"]["secretKeyRef"]
        env[variable["name"]] = secrets[ref["name"]]["stringData"][ref["key"]]
    churnsignal_env = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    assert set(churnsignal_env) <= settings_env_names()
    settings = settings_from_env(churnsignal_env, monkeypatch)
    assert not settings.embedded
    assert settings.host == "0.0.0.0"
    assert len(settings.api_keys) == 3
    if service != "ingest":
        assert settings.database_url.startswith("postgresql+asyncpg://")


def test_values_schema_refuses_every_secret_setting_in_config():
    schema = json.loads((CHART / "values.schema.json").read_text())
    refused = {name for name, rule in schema["properties"]["config"]["properties"].items() if rule.get("not") == {}}
    secret_fields = {f"{ENV_PREFIX}{name}".upper() for name, field in Settings.model_fields.items()
                     if "SecretStr" in str(field.annotation)}
    secret_fields |= {"CHURNSIGNAL_API_KEYS", "CHURNSIGNAL_DATABASE_URL"}
    assert secret_fields <= refused
    assert refused <= settings_env_names()
    secret_keys = set(schema["properties"]["secrets"]["properties"]["values"]["propertyNames"]["enum"])
    assert secret_keys == set(example_secret()["stringData"])


# --------------------------------------------------------------------------- Services, autoscalers, budgets


def test_services_select_their_deployment_and_reach_its_port():
    deployments = objects("defaults", "Deployment")
    for service in SERVICES:
        svc = objects("defaults", "Service")[f"{RELEASE}-{service}"]
        selector = svc["spec"]["selector"]
        matching = [name for name, d in deployments.items()
                    if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert matching == [f"{RELEASE}-{service}"]
        (port,) = svc["spec"]["ports"]
        assert (port["port"], port["targetPort"]) == (default_port(service), "http")
        reference = k8s("Service", service)["spec"]
        assert svc["spec"]["ports"] == reference["ports"] and svc["spec"]["type"] == reference["type"]


def test_autoscalers_own_the_count_of_ingest_and_alerts_within_the_partitions():
    hpas = objects("everything", "HorizontalPodAutoscaler")
    assert set(hpas) == {f"{RELEASE}-{s}" for s in AUTOSCALED}
    partitions = int(objects("everything", "ConfigMap")["churnsignal-config"]["data"]["CHURNSIGNAL_TOPIC_PARTITIONS"])
    for service in SERVICES:
        spec = deployment("everything", service)["spec"]
        # The HPA owns the replica count; a fixed one in the Deployment would fight it on every upgrade.
        assert ("replicas" in spec) == (service not in AUTOSCALED)
        assert "replicas" in deployment("defaults", service)["spec"]
    for service in AUTOSCALED:
        hpa = hpas[f"{RELEASE}-{service}"]["spec"]
        target = hpa["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment",
                                                                        f"{RELEASE}-{service}")
        assert 2 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    alerts = hpas[f"{RELEASE}-alerts"]["spec"]
    assert alerts["maxReplicas"] <= partitions
    reference = k8s("HorizontalPodAutoscaler", "alerts")["spec"]
    for key in ("minReplicas", "maxReplicas", "metrics", "behavior"):
        assert alerts[key] == reference[key], key
    assert deployment("everything", "scoring")["spec"]["replicas"] <= partitions
    values = (CHART / "values.yaml").read_text()
    assert "scoring scales by partitions" in values


def test_disruption_budgets_match_one_deployment_and_allow_a_drain():
    deployments = objects("everything", "Deployment")
    hpas = objects("everything", "HorizontalPodAutoscaler")
    budgets = objects("everything", "PodDisruptionBudget")
    assert set(budgets) == {f"{RELEASE}-{s}" for s in SERVICES}
    for name, pdb in budgets.items():
        selector = pdb["spec"]["selector"]["matchLabels"]
        matching = [n for n, d in deployments.items()
                    if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert matching == [name]
        least = hpas[name]["spec"]["minReplicas"] if name in hpas else deployments[name]["spec"]["replicas"]
        assert pdb["spec"]["minAvailable"] < least, "a node drain must be able to evict one pod"


# --------------------------------------------------------------------------- Prometheus Operator


def test_service_monitor_scrapes_each_service_under_the_job_name_the_rules_use():
    (monitor,) = objects("everything", "ServiceMonitor").values()
    spec = monitor["spec"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    services = objects("everything", "Service")
    selected = {name: s for name, s in services.items()
                if spec["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()}
    assert set(selected) == {f"{RELEASE}-{s}" for s in SERVICES}
    (endpoint,) = spec["endpoints"]
    assert endpoint["path"] == "/metrics"
    compose_jobs = {job["job_name"] for job in
                    yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())["scrape_configs"]}
    for service in SERVICES:
        svc = selected[f"{RELEASE}-{service}"]
        assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}
        # The operator names the job after this Service label (jobLabel): the names of rules.yml's selectors.
        job = svc["metadata"]["labels"][spec["jobLabel"]]
        assert job == f"churnsignal-{service}" and job in compose_jobs
    # The operator's `service` target label (the Service's name) would push the series' own `service` label
    # (ingest, scoring, alerts), which the rules group by, to `exported_service`: it is dropped.
    assert {"action": "labeldrop", "regex": "service"} in endpoint["relabelings"]
    assert not endpoint.get("honorLabels")


def test_prometheus_rule_is_rules_yml():
    assert CHART_RULES.read_bytes() == RULES.read_bytes(), \
        "the chart's copy is stale: cp deploy/prometheus/rules.yml deploy/helm/churnsignal/files/rules.yml"
    (rule,) = objects("everything", "PrometheusRule").values()
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_monitoring_objects_are_off_by_default():
    kinds = {d["kind"] for d in rendered("defaults")}
    assert kinds.isdisjoint({"ServiceMonitor", "PrometheusRule", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                             "Secret"})


# --------------------------------------------------------------------------- what the chart refuses


REFUSED = [
    pytest.param({"scoring": {"replicas": 7}}, "scoring: 7 replicas is more than the 6 topic partitions",
                 id="scoring-beyond-partitions"),
    pytest.param({"alerts": {"autoscaling": {"enabled": True, "maxReplicas": 12}}},
                 "alerts: 12 replicas is more than the 6 topic partitions", id="alerts-hpa-beyond-partitions"),
    pytest.param({"config": {"CHURNSIGNAL_TOPIC_PARTITIONS": "1"}},
                 "scoring: 2 replicas is more than the 1 topic partitions", id="fewer-partitions"),
    pytest.param({"ingest": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}}},
                 "ingest.autoscaling: minReplicas 5 is above maxReplicas 3", id="hpa-min-above-max"),
    pytest.param({"ingest": {"pdb": {"enabled": True, "minAvailable": 2}}},
                 "ingest.pdb.minAvailable 2 must be below the replica count (2)", id="pdb-blocks-drains"),
    pytest.param({"secrets": {"create": True, "values": {"api-keys.json": "[]"}}},
                 "database-url is required with secrets.create=true", id="inline-secret-without-database"),
    pytest.param({"secrets": {"existingSecret": ""}}, "secrets.existingSecret: name the Secret",
                 id="no-secret-at-all"),
    pytest.param({"config": {"CHURNSIGNAL_DATABASE_URL": "postgresql+asyncpg://u:p@db/churnsignal"}},
                 "/config/CHURNSIGNAL_DATABASE_URL", id="secret-in-config"),
    pytest.param({"secrets": {"create": True, "values": {"database_url": "x"}}}, "database_url",
                 id="unknown-secret-key"),
    pytest.param({"ingest": {"replica": 3}}, "additional properties 'replica' not allowed", id="misspelt-value"),
]


@pytest.mark.parametrize(("values", "message"), REFUSED)
def test_chart_refuses_values_that_cannot_work(values, message):
    result = template(values)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
