"""deploy/k8s: every manifest valid against the Kubernetes API schema, and wired together (selectors,
probes, ports, HPA and PDB targets, ConfigMap / Secret references) and to the code (commands, ports,
settings, the routing file format, the image's user)."""

from __future__ import annotations

import functools
import shutil
import subprocess
import tomllib
from collections import Counter
from pathlib import PurePosixPath

import kubernetes_validate
import pytest
import yaml

from services.alerts.bootstrap import load_routing
from shared.settings import Settings
from tests.deploy.support import (
    DOCKERFILE,
    ENV_PREFIX,
    IMAGE_NAME,
    K8S_DIR,
    ROOT,
    Command,
    default_port,
    load_yaml_documents,
    parse_cli,
    settings_env_names,
    settings_from_env,
)

KUBERNETES_VERSION = "1.30.0"
NAMESPACE = "churnsignal"
EXAMPLE_SECRET = K8S_DIR / "secret.example.yaml"
SERVICES = ("ingest", "scoring", "alerts")
CONSUMERS = ("scoring", "alerts")


@functools.cache
def kustomization() -> dict:
    return yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())


@functools.cache
def manifests() -> list[dict]:
    """Parsed once per session; tests only read them (a test that edits one copies it first)."""
    return [doc for name in kustomization()["resources"] for doc in load_yaml_documents(K8S_DIR / name)]


def by_kind(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in manifests() if doc["kind"] == kind}


@functools.cache
def example_secret() -> dict:
    (secret,) = load_yaml_documents(EXAMPLE_SECRET)
    return secret


def containers(workload: dict) -> list[dict]:
    return workload["spec"]["template"]["spec"]["containers"]


def workloads() -> list[dict]:
    return [*by_kind("Deployment").values(), *by_kind("Job").values()]


def selects(selector: dict, labels: dict) -> bool:
    assert set(selector) == {"matchLabels"}, "only matchLabels selectors are used here"
    return selector["matchLabels"].items() <= labels.items()


def pod_labels(workload: dict) -> dict:
    return workload["spec"]["template"]["metadata"]["labels"]


def ident(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


# --------------------------------------------------------------------------- schema and layout


def test_kustomization_lists_every_manifest_but_the_example_secret():
    listed = set(kustomization()["resources"])
    present = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml", EXAMPLE_SECRET.name}
    assert listed == present
    assert EXAMPLE_SECRET.name not in listed
    assert kustomization()["namespace"] == NAMESPACE


@pytest.mark.parametrize("doc", [*manifests(), example_secret()], ids=ident)
def test_manifest_is_valid_for_the_kubernetes_api(doc):
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_schema_validation_catches_a_misspelt_field():
    deployment = yaml.safe_load(yaml.safe_dump(by_kind("Deployment")["ingest"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_kustomize_renders_with_the_release_image():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed (the manifests are still validated one by one)")
    result = subprocess.run([kubectl, "kustomize", str(K8S_DIR)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    rendered = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert Counter(ident(d) for d in rendered) == Counter(ident(d) for d in manifests())
    (image,) = kustomization()["images"]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert image["newTag"] == version
    for doc in rendered:
        if doc["kind"] in ("Deployment", "Job"):
            assert {c["image"] for c in containers(doc)} == {f"{image['newName']}:{version}"}
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE


def test_every_object_is_in_the_namespace_and_part_of_churnsignal():
    for doc in manifests():
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, ident(doc)
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "churnsignal", ident(doc)
    assert "churnsignal" in by_kind("Namespace")


# --------------------------------------------------------------------------- workloads and the code


@pytest.mark.parametrize("name", SERVICES)
def test_deployment_runs_its_service_with_probes_on_its_port(name):
    deployment = by_kind("Deployment")[name]
    (container,) = containers(deployment)
    assert container["image"] == IMAGE_NAME
    assert parse_cli(container["args"]) == Command("serve", name)
    (port,) = container["ports"]
    assert (port["name"], port["containerPort"]) == ("http", default_port(name))
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    template = deployment["spec"]["template"]
    assert selects(deployment["spec"]["selector"], pod_labels(deployment))
    labels = template["metadata"]["labels"]
    # deploy/prometheus/prometheus-k8s.yml keeps pods by these labels and names jobs after the component.
    assert labels["app.kubernetes.io/part-of"] == "churnsignal"
    assert labels["app.kubernetes.io/component"] == name
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(default_port(name))


@pytest.mark.parametrize("doc", workloads(), ids=ident)
def test_resources_and_security_context(doc):
    pod = doc["spec"]["template"]["spec"]
    uid = int(next(line.split()[1].split(":")[0] for line in DOCKERFILE.read_text().splitlines()
                   if line.startswith("USER ")))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    assert pod["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for container in pod["containers"]:
        resources = container["resources"]
        for key in ("cpu", "memory"):
            assert key in resources["requests"] and key in resources["limits"]
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        assert set(mounts.values()) <= set(volumes)
        assert "/tmp" in mounts
        if doc["kind"] == "Deployment":
            # Settings' relative defaults (var/outbox, var/churnsignal.db) resolve under the WORKDIR /app.
            assert "emptyDir" in volumes[mounts["/app/var"]]


def test_migration_job_runs_migrate_against_the_database():
    (job,) = by_kind("Job").values()
    (container,) = containers(job)
    assert parse_cli(container["args"]) == Command("migrate", None)
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
    names = {e["name"] for e in container["env"]}
    assert "CHURNSIGNAL_DATABASE_URL" in names
    assert job["spec"]["backoffLimit"] >= 1


@pytest.mark.parametrize("doc", workloads(), ids=ident)
def test_references_to_configmaps_and_secrets_resolve(doc):
    configmaps = by_kind("ConfigMap")
    secret = example_secret()
    secret_keys = set(secret["stringData"])
    pod = doc["spec"]["template"]["spec"]
    for container in pod["containers"]:
        for source in container.get("envFrom", []):
            assert source["configMapRef"]["name"] in configmaps
        for variable in container.get("env", []):
            ref = variable.get("valueFrom", {})
            if "secretKeyRef" in ref:
                assert ref["secretKeyRef"]["name"] == secret["metadata"]["name"]
                assert ref["secretKeyRef"]["key"] in secret_keys, variable["name"]
            elif "configMapKeyRef" in ref:
                configmap = configmaps[ref["configMapKeyRef"]["name"]]
                assert ref["configMapKeyRef"]["key"] in configmap["data"]
            if variable["name"].startswith(ENV_PREFIX):
                assert variable["name"] in settings_env_names(), variable["name"]
    for volume in pod.get("volumes", []):
        if "configMap" in volume:
            configmap = configmaps[volume["configMap"]["name"]]
            for item in volume["configMap"].get("items", []):
                assert item["key"] in configmap["data"]


def test_secrets_are_only_read_through_secret_key_refs():
    """Secret settings never sit in a ConfigMap or a literal env value."""
    secret_fields = {f"{ENV_PREFIX}{name}".upper() for name, field in Settings.model_fields.items()
                     if "SecretStr" in str(field.annotation)}
    # Not SecretStr in Settings, but secret all the same: key hashes and the database password.
    secret_fields |= {"CHURNSIGNAL_API_KEYS", "CHURNSIGNAL_DATABASE_URL"}
    assert {"CHURNSIGNAL_SLACK_BOT_TOKEN", "CHURNSIGNAL_SMTP_PASSWORD"} <= secret_fields
    for configmap in by_kind("ConfigMap").values():
        assert secret_fields.isdisjoint(configmap["data"])
    for doc in workloads():
        for container in containers(doc):
            for variable in container.get("env", []):
                if variable["name"] in secret_fields:
                    assert "secretKeyRef" in variable["valueFrom"], variable["name"]
    assert example_secret()["metadata"]["annotations"]["churnsignal/example"] == "true"
    assert "EXAMPLE ONLY" in EXAMPLE_SECRET.read_text().splitlines()[0]


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_gets_valid_settings(name, monkeypatch):
    """What a pod sees (ConfigMap + Secret values) builds a Settings for a real deployment."""
    deployment = by_kind("Deployment")[name]
    (container,) = containers(deployment)
    configmaps = by_kind("ConfigMap")
    secret = example_secret()["stringData"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for variable in container.get("env", []):
        ref = variable.get("valueFrom", {})
        if "secretKeyRef" in ref:
            env[variable["name"]] = secret[ref["secretKeyRef"]["key"]]
        elif "value" in variable:
            env[variable["name"]] = variable["value"]
    churnsignal_env = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    assert set(churnsignal_env) <= settings_env_names()
    settings: Settings = settings_from_env(churnsignal_env, monkeypatch)
    assert not settings.embedded
    assert settings.host == "0.0.0.0"
    assert len(settings.api_keys) == 3
    if name in CONSUMERS:
        assert settings.database_url.startswith("postgresql+asyncpg://")


def test_alerts_mounts_a_routing_file_that_alerts_accepts(tmp_path):
    alerts = by_kind("Deployment")["alerts"]
    (container,) = containers(alerts)
    config = by_kind("ConfigMap")["churnsignal-config"]["data"]
    routing_path = PurePosixPath(config["CHURNSIGNAL_ROUTING_FILE"])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(routing_path.parent))
    volume = next(v for v in alerts["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    items = {i["path"]: i["key"] for i in volume["configMap"]["items"]}
    text = by_kind("ConfigMap")[volume["configMap"]["name"]]["data"][items[routing_path.name]]
    # Loaded the way alerts loads it at start-up (a bad file fails start-up).
    routing_file = tmp_path / routing_path.name
    routing_file.write_text(text)
    settings = Settings(routing_file=str(routing_file), fallback_email=config["CHURNSIGNAL_FALLBACK_EMAIL"])
    tree = load_routing(settings)
    assert tree.fallback_receiver in tree.receivers
    assert len(tree.root.routes) >= 2
    # Every secret the routes name by environment variable is given to the alerts container.
    env_names = {e["name"] for e in container["env"]}
    for receiver in tree.receivers.values():
        for channel in receiver.channels:
            for ref in (channel.url_ref, channel.secret_ref):
                if ref and not ref.startswith("routing:"):
                    assert ref in env_names, f"routing names {ref}, the alerts pod does not have it"


# --------------------------------------------------------------------------- Services, HPAs, PDBs


def test_services_select_their_deployment_and_reach_its_port():
    deployments = by_kind("Deployment")
    for name, service in by_kind("Service").items():
        selector = service["spec"]["selector"]
        matching = [d for d in deployments.values() if selector.items() <= pod_labels(d).items()]
        assert [d["metadata"]["name"] for d in matching] == [name]
        (port,) = service["spec"]["ports"]
        (container,) = containers(matching[0])
        assert port["targetPort"] in {p["name"] for p in container["ports"]}
        assert port["port"] == default_port(name)
    assert set(by_kind("Service")) == set(SERVICES)


def test_autoscalers_target_the_consumers_within_the_partition_count():
    deployments = by_kind("Deployment")
    partitions = int(by_kind("ConfigMap")["churnsignal-config"]["data"]["CHURNSIGNAL_TOPIC_PARTITIONS"])
    hpas = by_kind("HorizontalPodAutoscaler")
    # alerts scales on CPU; scoring does not (a replica change moves account state, as in the Helm chart):
    # a fixed count within the partitions.
    assert set(hpas) == {"alerts"}
    assert 2 <= deployments["scoring"]["spec"]["replicas"] <= partitions
    for name, hpa in hpas.items():
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", name)
        assert name in deployments
        # The HPA owns the replica count; a fixed one in the Deployment would fight it on every apply.
        assert "replicas" not in deployments[name]["spec"]
        assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"] <= partitions
        assert "partition" in (K8S_DIR / f"{name}.yaml").read_text()


def test_disruption_budgets_match_one_deployment_and_allow_a_drain():
    deployments = by_kind("Deployment")
    hpas = by_kind("HorizontalPodAutoscaler")
    budgets = by_kind("PodDisruptionBudget")
    assert set(budgets) == set(SERVICES)
    for name, pdb in budgets.items():
        matching = [d for d in deployments.values() if selects(pdb["spec"]["selector"], pod_labels(d))]
        assert [d["metadata"]["name"] for d in matching] == [name]
        spec = hpas[name]["spec"] if name in hpas else deployments[name]["spec"]
        replicas = spec["minReplicas"] if name in hpas else spec["replicas"]
        assert pdb["spec"]["minAvailable"] < replicas, "a node drain must be able to evict one pod"
