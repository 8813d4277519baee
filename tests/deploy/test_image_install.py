"""The image's build stage, without a container engine: what deploy/Dockerfile copies (its build context,
filtered by deploy/Dockerfile.dockerignore) is installed the way the Dockerfile installs it (`pip install
--no-compile .`, no editable install), and the installed `churnsignal` works from outside the source tree:
`--version`, `migrate` (its migrations are package data) and a backtest (the scoring defaults are too).

The dependencies come from this test environment instead of PyPI (`--no-deps`, and the environment's
site-packages on the path), so the test needs no network; what it checks is the project's own packaging.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.deploy.support import ROOT, context_patterns, in_build_context

pytestmark = pytest.mark.slow

def _copy_context(dest: Path) -> int:
    """Copy the build context into `dest`; the number of files copied."""
    patterns = context_patterns()
    copied = 0
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = os.path.relpath(dirpath, ROOT)
        rel_dir = "" if rel_dir == "." else rel_dir
        # (prune what can hold nothing included: the top-level directories not re-included)
        if not rel_dir:
            dirnames[:] = [d for d in dirnames if any(p.lstrip("!").rstrip("/").split("/")[0] == d
                                                      for p in patterns if p.startswith("!"))]
        for name in filenames:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if in_build_context(rel, patterns):
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, target)
                copied += 1
    return copied


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The package installed from the build context; the environment that runs it."""
    tmp = tmp_path_factory.mktemp("image")
    context, target = tmp / "src", tmp / "opt"
    assert _copy_context(context) > 50
    assert not (context / "tests").exists() and not (context / ".venv").exists()
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--no-compile", "--target", str(target), str(context)],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-3000:]
    # The installed copy first, then this environment's dependencies; never the source tree (the cwd of
    # every command is elsewhere, and `-P` keeps it off the path).
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "LANG": "C.UTF-8",
           "PYTHONPATH": os.pathsep.join([str(target), sysconfig.get_paths()["purelib"]]),
           "PYTHONNOUSERSITE": "1"}
    return {"python": sys.executable, "cwd": str(tmp), "target": str(target), **{f"env:{k}": v for k, v in env.items()}}


def _run(installed: dict[str, str], *args: str,
         extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k[4:]: v for k, v in installed.items() if k.startswith("env:")} | (extra or {})
    return subprocess.run([installed["python"], "-P", "-m", "services.cli", *args], cwd=installed["cwd"], env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_installed_package_is_the_one_that_runs(installed):
    env = {k[4:]: v for k, v in installed.items() if k.startswith("env:")}
    out = subprocess.run([installed["python"], "-P", "-c", "import services, shared; print(services.__file__); "
                          "print(shared.__file__)"], cwd=installed["cwd"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for line in out.stdout.split():
        assert line.startswith(installed["target"]), line


def test_version(installed):
    out = _run(installed, "--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("churnsignal "), out.stdout


def test_migrate_finds_its_migrations(installed, tmp_path: Path):
    db = tmp_path / "image.db"
    out = _run(installed, "migrate", extra={"CHURNSIGNAL_DATABASE_URL": f"sqlite+aiosqlite:///{db}"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert db.is_file() and db.stat().st_size > 0


def test_simulate_then_backtest_on_the_shipped_scoring_defaults(installed, tmp_path: Path):
    events = tmp_path / "sparse.ndjson.gz"
    out = _run(installed, "simulate", "--mode", "sparse", "--accounts", "60", "--end", "2026-01-01", "--seed", "5",
               "--output", str(events))
    assert out.returncode == 0, out.stderr[-2000:]
    report = tmp_path / "report.json"
    out = _run(installed, "backtest", "--events", str(events), "--cut", "2025-01-01", "--horizon", "180d",
               "--json", str(report), "--quiet")
    assert out.returncode == 0, out.stderr[-2000:]
    cut = json.loads(report.read_text())["cuts"][0]
    assert cut["accounts"] > 0 and "usage_drop" in cut["risks"] and cut["health"]["auc"] is not None
