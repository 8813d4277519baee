"""What the deployment files are checked against: the code's settings, CLI, metrics and ports."""

from __future__ import annotations

import fnmatch
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from services.cli import SERVICES, build_parser, cmd_migrate, cmd_serve
from shared.metrics import AlertsMetrics, CommonMetrics, IngestMetrics, ScoringMetrics
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
ALERTMANAGER_DIR = DEPLOY / "alertmanager"
GRAFANA_DIR = DEPLOY / "grafana"
K8S_DIR = DEPLOY / "k8s"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
RUNBOOK = DEPLOY / "RUNBOOK.md"

ENV_PREFIX = "CHURNSIGNAL_"
IMAGE_NAME = "churnsignal"
# Labels every scraped series carries besides its own (added by Prometheus).
TARGET_LABELS = frozenset({"job", "instance"})


def promtool() -> str:
    """Path of promtool (Debian package `prometheus`; `scripts/install-tools.sh` installs it)."""
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (apt-get install prometheus, or bash scripts/install-tools.sh)")
    return path


def amtool() -> str:
    """Path of amtool (Debian package `prometheus-alertmanager`; `scripts/install-tools.sh` installs it)."""
    path = shutil.which("amtool")
    if path is None:
        pytest.skip("amtool not installed (apt-get install prometheus-alertmanager, or bash scripts/install-tools.sh)")
    return path


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


# --------------------------------------------------------------------------- settings


def settings_env_names() -> set[str]:
    """Every CHURNSIGNAL_* variable Settings reads (field names upper-cased with the prefix)."""
    prefix = Settings.model_config.get("env_prefix", "")
    assert prefix == ENV_PREFIX
    return {f"{prefix}{name}".upper() for name in Settings.model_fields}


def settings_from_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Build Settings the way a container does: from these variables only."""
    for name in settings_env_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def default_port(service: str) -> int:
    return {"ingest": Settings().ingest_port, "scoring": Settings().scoring_port,
            "alerts": Settings().alerts_port}[service]


# --------------------------------------------------------------------------- CLI


@dataclass(frozen=True)
class Command:
    name: str                 # "serve" or "migrate"
    service: str | None       # for serve


def parse_cli(argv: list[str]) -> Command:
    """Parse container arguments with the real `churnsignal` parser; fails the test if it rejects them."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on bad arguments
        raise AssertionError(f"`churnsignal {' '.join(argv)}` is not a valid command") from exc
    if args.func is cmd_serve:
        assert args.service in SERVICES
        return Command("serve", args.service)
    if args.func is cmd_migrate:
        return Command("migrate", None)
    raise AssertionError(f"`churnsignal {' '.join(argv)}` is neither serve nor migrate")


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class MetricFamily:
    name: str                  # family name as exposed in # TYPE lines
    kind: str                  # counter, gauge, histogram
    labels: frozenset[str]
    series: frozenset[str]     # names of the series it exposes


def _families(registry: CollectorRegistry, holders: list[object]) -> dict[str, MetricFamily]:
    labels: dict[str, frozenset[str]] = {}
    for holder in holders:
        for value in vars(holder).values():
            if isinstance(value, MetricWrapperBase):
                # `_labelnames` is the one place prometheus_client keeps a metric's label names; a bound
                # child (`.labels(...)`) keeps none, its parent's names are recovered from the samples.
                labels[value._name] = frozenset(value._labelnames)  # noqa: SLF001
    out: dict[str, MetricFamily] = {}
    for family in registry.collect():
        if family.type == "counter":
            series = {f"{family.name}_total", f"{family.name}_created"}
            exposed = f"{family.name}_total"
        elif family.type == "histogram":
            series = {f"{family.name}_bucket", f"{family.name}_count", f"{family.name}_sum",
                      f"{family.name}_created"}
            exposed = family.name
        else:
            series = {family.name}
            exposed = family.name
        names = labels.get(family.name) or labels.get(exposed)
        if names is None:
            names = frozenset(k for s in family.samples for k in s.labels if k != "le")
        out[exposed] = MetricFamily(exposed, family.type, names, frozenset(series))
    return out


def metric_catalog() -> dict[str, dict[str, MetricFamily]]:
    """Families by service, from the metric classes of shared/metrics.py on fresh registries."""
    catalog: dict[str, dict[str, MetricFamily]] = {}
    for service, cls in (("ingest", IngestMetrics), ("scoring", ScoringMetrics), ("alerts", AlertsMetrics)):
        registry = CollectorRegistry()
        own = cls(registry)
        common = CommonMetrics(registry, service)
        catalog[service] = _families(registry, [own, common])
    return catalog


def series_catalog() -> dict[str, MetricFamily]:
    """Every series name any service can expose -> its family (labels are the union over services)."""
    out: dict[str, MetricFamily] = {}
    for families in metric_catalog().values():
        for family in families.values():
            for series in family.series:
                known = out.get(series)
                merged = family.labels if known is None else known.labels | family.labels
                out[series] = MetricFamily(family.name, family.kind, merged, family.series)
    return out


# churnsignal's own metrics, the process collector's (process_*) and the targets' `up`.
_SELECTOR = re.compile(r"\b(churnsignal_[a-z0-9_]+|process_[a-z0-9_]+|up)\b(?:\s*\{([^}]*)\})?")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*\"")


@dataclass(frozen=True)
class Selector:
    metric: str
    labels: frozenset[str]


def selectors(expr: str) -> list[Selector]:
    """Metric selectors in a PromQL expression (churnsignal_*, process_* and up), with the label names they
    match."""
    found = []
    for match in _SELECTOR.finditer(expr):
        body = match.group(2) or ""
        found.append(Selector(match.group(1), frozenset(m.group(1) for m in _MATCHER.finditer(body))))
    return found


def context_patterns() -> list[str]:
    """The patterns of deploy/Dockerfile.dockerignore, in order."""
    lines = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    return [p.strip() for p in lines if p.strip() and not p.strip().startswith("#")]


def in_build_context(path: str, patterns: list[str]) -> bool:
    """Whether `path` (relative to the repository) is in the image's build context. Docker's rules: the last
    matching pattern wins, a directory's pattern covers what it holds, `**/` matches at any depth."""
    parts = path.split("/")
    keep = True
    for pattern in patterns:
        body = pattern.lstrip("!").rstrip("/")
        if body.startswith("**/"):
            # any run of path components, anywhere (a directory matched covers what it holds)
            hit = any(fnmatch.fnmatch("/".join(parts[i:j]), body[3:])
                      for i in range(len(parts)) for j in range(i + 1, len(parts) + 1))
        else:
            hit = fnmatch.fnmatch(path, body) or path.startswith(body + "/")
        if hit:
            keep = pattern.startswith("!")
    return keep
