"""The scoring configuration: YAML with defaults, a version on every score, loud about typos."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.scoring.domain import ScoringConfig, ScoringEngine

from .stories import at_day, event


def test_defaults_without_a_file() -> None:
    cfg = ScoringConfig.load(None)
    assert cfg == ScoringConfig()
    assert cfg.version == "default-3"
    assert (cfg.green_at, cfg.yellow_at) == (70.0, 40.0)


def test_tiers_follow_the_configured_thresholds() -> None:
    cfg = ScoringConfig()
    assert [cfg.tier(s) for s in (100, 70, 69.9, 40, 39.9, 0, None)] == \
        ["green", "green", "yellow", "yellow", "red", "red", "unknown"]
    strict = ScoringConfig.from_dict({"green_at": 80, "yellow_at": 50})
    assert [strict.tier(s) for s in (79.9, 50, 49.9)] == ["yellow", "yellow", "red"]


def test_yaml_overrides_and_explicit_version(tmp_path: Path) -> None:
    path = tmp_path / "scoring.yaml"
    path.write_text("version: 2026-11-strict\ngreen_at: 75\nweights:\n  sentiment: 0.3\n"
                    "ticket_spike:\n  min_count: 8\n  factor: 4\n")
    cfg = ScoringConfig.load(path)
    assert cfg.version == "2026-11-strict"
    assert cfg.green_at == 75.0
    assert cfg.weights.sentiment == 0.3 and cfg.weights.usage_trend == ScoringConfig().weights.usage_trend
    assert cfg.ticket_spike.min_count == 8 and cfg.ticket_spike.factor == 4.0
    assert isinstance(cfg.ticket_spike.factor, float)


def test_version_defaults_to_a_short_hash_of_the_content(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "c.yaml"
    a.write_text("green_at: 72\n")
    b.write_text("green_at: 72\n")
    c.write_text("green_at: 73\n")
    va, vb, vc = (ScoringConfig.load(p).version for p in (a, b, c))
    assert va == vb != vc
    assert va.startswith("sha-") and len(va) == 16


@pytest.mark.parametrize(("text", "name"), [
    ("gren_at: 70\n", "gren_at"),
    ("usage_drop:\n  ratioo: 0.3\n", "usage_drop.ratioo"),
    ("weights:\n  usage: 0.3\n", "weights.usage"),
])
def test_unknown_keys_are_named(tmp_path: Path, text: str, name: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"unknown key '{name}'"):
        ScoringConfig.load(path)


@pytest.mark.parametrize("text", [
    "green_at: 30\nyellow_at: 40\n",
    "weights:\n  usage_trend: -1\n",
    "ticket_spike:\n  min_count: many\n",
    "usage_drop: 3\n",
    "- a list\n",
])
def test_invalid_values_are_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError):
        ScoringConfig.load(path)


def test_every_score_carries_the_config_version() -> None:
    engine = ScoringEngine(ScoringConfig.from_dict({"version": "v-test"}))
    state = engine.new_state("acc")
    out = engine.apply(state, event("ticket", "acc", at_day(1, 9), {"ticket_id": "t1", "status": "opened"}))
    assert out.health is not None and out.health.config_version == "v-test"
    assert engine.snapshot(state).config_version == "v-test"
