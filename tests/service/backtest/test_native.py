"""The compiled scoring domain (scripts/build_native.py) and its Python source give the same results, and a
source changed since the build is never shadowed by the stale compiled module."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from services.scoring.domain import native

ROOT = Path(__file__).resolve().parents[3]


def _history(root: Path) -> tuple[Path, Path]:
    from services.simulate.generator import generate
    from services.simulate.model import SimulationParams

    sim = generate(SimulationParams(now=datetime(2026, 3, 1, tzinfo=UTC), seed=5, accounts=40, history_days=40,
                                    live_days=5, churn_rate=0.3, account_prefix="nat-"))
    events = root / "events.ndjson"
    events.write_bytes(b"".join(orjson.dumps(e.body) + b"\n" for e in sim.events()))
    churned = {c.account_id: c.signal_start + timedelta(days=21) for c in sim.truth.churners}
    outcomes = root / "outcomes.csv"
    outcomes.write_text("account_id,churned_at\n" + "".join(
        f"{a},{churned[a].date().isoformat() if a in churned else ''}\n" for a in sim.truth.accounts))
    return events, outcomes


def _backtest(events: Path, outcomes: Path, out: Path, *, pure: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "CHURNSIGNAL_PURE_PYTHON"}
    if pure:
        env["CHURNSIGNAL_PURE_PYTHON"] = "1"
    code = ("import sys; from services.scoring.domain import native; from services.cli import main; "
            "print('compiled' if native.COMPILED else 'source', file=sys.stderr); sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, "backtest", "--events", str(events), "--outcomes",
                           str(outcomes), "--cut", "2026-02-10", "--cut", "2026-03-02", "--horizon", "60d",
                           "--quiet", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[0] == ("source" if pure else "compiled")
    return json.loads(out.read_text())["cuts"]


@pytest.mark.skipif(not native.COMPILED, reason=f"the scoring domain is not compiled here ({native.REASON})")
def test_the_compiled_domain_and_its_source_agree_on_a_backtest(tmp_path: Path) -> None:
    events, outcomes = _history(tmp_path)
    compiled = _backtest(events, outcomes, tmp_path / "compiled.json", pure=False)
    source = _backtest(events, outcomes, tmp_path / "source.json", pure=True)
    assert compiled == source
    assert any(risk["flagged"] for cut in compiled for risk in cut["risks"].values()), "risks were raised"


def test_a_source_changed_since_the_build_is_run_from_source(tmp_path: Path, monkeypatch) -> None:
    source = tmp_path / "usage.py"
    source.write_text("X = 1\n")
    (tmp_path / "usage.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    manifest = tmp_path / "native.json"
    manifest.write_text(json.dumps({"python": sys.implementation.cache_tag,
                                    "modules": ["usage.cpython-311-x86_64-linux-gnu.so"],
                                    "sources": {"usage.py": hashlib.sha256(b"X = 1\n").hexdigest()}}))
    monkeypatch.setattr(native, "HERE", tmp_path)
    monkeypatch.setattr(native, "MANIFEST", manifest)
    monkeypatch.delenv("CHURNSIGNAL_PURE_PYTHON", raising=False)
    assert native._check() == (True, "compiled by mypyc")
    source.write_text("X = 2\n")
    assert native._check() == (False, "usage.py changed since it was compiled (make install compiles it again)")
    monkeypatch.setenv("CHURNSIGNAL_PURE_PYTHON", "1")
    assert native._check() == (False, "CHURNSIGNAL_PURE_PYTHON is set")
    manifest.unlink()
    monkeypatch.delenv("CHURNSIGNAL_PURE_PYTHON")
    assert native._check() == (False, "not compiled (scripts/build_native.py)")
