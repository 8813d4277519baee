"""`churnsignal calibrate`: fit the health model to a labelled history and write a scoring config.

The history is replayed through the scoring domain as `churnsignal backtest` replays it, with every
component computed; at each cut, each account that exists and has not churned is one example, labelled by
whether it churned within the horizon. Then, in this order:

1. **Intensity**: `intensity.typical` is the median of the accounts' uses per active user-day.
2. **Key features**: the usage features used by at least 2 % of the examples (at most `MAX_CANDIDATES`, the
   most used first) enter an L2-regularised logistic regression of churn on ln(1 + uses in the window),
   centred on each feature's median; the `MAX_KEY_FEATURES` with the largest effect (|coefficient| x the
   spread of the feature) and at least `MIN_EFFECT` are kept. A feature's weight is minus its coefficient
   (more use of a feature that goes with churn weighs against health), its typical use the median.
3. **Component weights**: a logistic regression of churn on the components' scores / 100 (an unknown
   component takes the mean of the known ones, as the re-weighting does). A component whose higher score
   goes with *more* churn is dropped (weight 0) and the regression refitted, so that every weight is
   positive: the score stays a weighted mean of the components, each contribution readable. The weights
   are the coefficients' magnitudes, normalised to sum to 1.
4. **Tiers**: with those weights, `yellow_at` (red below it) is the highest threshold whose red accounts
   churn at the chosen precision (`--precision`, default twice the base churn rate), and `green_at` the
   lowest threshold above it whose green accounts churn at most at half the base rate, and at least 10
   points above `yellow_at`.

Everything else comes from `--config` (or the defaults). The written YAML has `version` = "calibrated-" + a
hash of the fitted values, stamped on every score, and `calibration` says what it was fitted on.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import yaml

from services.scoring.domain import ScoringConfig, ScoringEngine
from services.scoring.domain.config import COMPONENTS, KeyFeaturesRule, Weights
from services.scoring.domain.signals import measure
from services.scoring.domain.state import AccountState
from shared.events import EventType, UsageData
from shared.settings import Settings

from . import logistic, metrics
from .cli import fewer_collections, parse_cut, parse_days
from .history import InputError, lifecycle_outcomes, read_events, read_outcomes

MAX_CANDIDATES = 40
MIN_FEATURE_SHARE = 0.02
MAX_KEY_FEATURES = 8
MIN_EFFECT = 0.05
L2 = 1.0
MIN_YELLOW_BAND = 10.0   # points between yellow_at and green_at at least (a band to watch, not a line)


@dataclass
class Example:
    churned: bool
    components: list[float | None]   # component scores, COMPONENTS order
    intensity: float | None
    uses: dict[str, int]             # key-feature candidate -> uses in the window


def fit_logistic(rows: Sequence[Sequence[float]], labels: Sequence[bool], *,
                 l2: float = L2) -> tuple[float, list[float]]:
    """(intercept, coefficients) of the L2-regularised logistic regression the backtest's baseline uses."""
    found = logistic.fit(rows, labels, l2=l2)
    return found.intercept, list(found.coefficients)


def _median(values: Sequence[float]) -> float:
    found = metrics.median(values)
    return 0.0 if found is None else found


def _sd(values: Sequence[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z > -40 else 0.0


# -- the steps ---------------------------------------------------------------------------------------------

def fit_key_features(examples: Sequence[Example], candidates: Sequence[str]) -> KeyFeaturesRule:
    if not candidates:
        return KeyFeaturesRule()
    typical = {f: _median([e.uses.get(f, 0) for e in examples]) for f in candidates}
    rows = [[math.log1p(e.uses.get(f, 0)) - math.log1p(typical[f]) for f in candidates] for e in examples]
    spread = [_sd([r[i] for r in rows]) for i in range(len(candidates))]
    _, coef = fit_logistic(rows, [e.churned for e in examples])
    ranked = sorted(((abs(c) * s, f, c) for f, c, s in zip(candidates, coef, spread, strict=True)), reverse=True)
    kept = [(f, c) for effect, f, c in ranked[:MAX_KEY_FEATURES] if effect >= MIN_EFFECT]
    if not kept:
        return KeyFeaturesRule()
    # Refit on the features kept, so each weight stands for itself.
    names = [f for f, _ in kept]
    rows = [[math.log1p(e.uses.get(f, 0)) - math.log1p(typical[f]) for f in names] for e in examples]
    _, coef = fit_logistic(rows, [e.churned for e in examples])
    features = {f: {"weight": round(-c, 4), "typical": round(typical[f], 2)} for f, c in zip(names, coef, strict=True)}
    return KeyFeaturesRule(features=features)  # type: ignore[arg-type]


def key_feature_score(rule: KeyFeaturesRule, uses: dict[str, int]) -> float:
    z = rule.offset + sum(w * (math.log1p(uses.get(f, 0)) - math.log1p(t)) for f, w, t in rule.features)
    return 100.0 * _sigmoid(z)


def fit_weights(matrix: Sequence[Sequence[float | None]], labels: Sequence[bool]) -> dict[str, float]:
    """Positive weights per component (summing to 1) from a logistic regression of churn on the scores."""
    active = [i for i in range(len(COMPONENTS)) if sum(1 for row in matrix if row[i] is not None) >= 10]
    while active:
        rows = []
        for row in matrix:
            known = [row[i] for i in active if row[i] is not None]
            fill = sum(known) / len(known) if known else 50.0   # type: ignore[arg-type]
            rows.append([(row[i] if row[i] is not None else fill) / 100.0 for i in active])  # type: ignore[operator]
        _, coef = fit_logistic(rows, labels)
        wrong = [i for i, c in zip(active, coef, strict=True) if c >= 0]
        if not wrong:
            total = -sum(coef)
            return {COMPONENTS[i]: round(-c / total, 4) for i, c in zip(active, coef, strict=True)}
        worst = max(wrong, key=lambda i: coef[active.index(i)])
        active.remove(worst)
    return {}


def score_of(weights: dict[str, float], row: Sequence[float | None]) -> float | None:
    total = acc = 0.0
    for name, value in zip(COMPONENTS, row, strict=True):
        w = weights.get(name, 0.0)
        if value is not None and w > 0:
            total += w
            acc += w * value
    return acc / total if total > 0 else None


def fit_tiers(scores: Sequence[float], labels: Sequence[bool], precision: float) -> tuple[float, float]:
    """(yellow_at, green_at) as the module docstring says."""
    base = sum(labels) / len(labels)
    pairs = sorted(zip(scores, labels, strict=True))
    yellow = 0.0
    below = churned = 0
    for i, (s, y) in enumerate(pairs):
        below += 1
        churned += y
        nxt = pairs[i + 1][0] if i + 1 < len(pairs) else 101.0
        if nxt > s and churned / below >= precision:
            yellow = min(99.0, math.floor(nxt * 10) / 10)   # red: strictly below the next score
    green = None
    above_n = above_c = 0
    for i in range(len(pairs) - 1, -1, -1):
        s, y = pairs[i]
        above_n += 1
        above_c += y
        prev = pairs[i - 1][0] if i else -1.0
        if s > yellow and prev < s and above_c / above_n <= base / 2:
            green = math.ceil(s * 10) / 10
    if green is None or green < yellow + MIN_YELLOW_BAND:
        green = min(100.0, yellow + MIN_YELLOW_BAND)
    return round(yellow, 1), round(green, 1)


# -- measuring the examples ----------------------------------------------------------------------------------

def _candidates(history: Any) -> list[str]:
    counts: dict[str, int] = {}
    accounts: dict[str, set[str]] = {}
    for topics in history.streams:
        for stream in topics:
            for event in stream:
                if event.type is EventType.USAGE:
                    data = event.data
                    assert isinstance(data, UsageData)
                    counts[data.feature] = counts.get(data.feature, 0) + data.count
                    accounts.setdefault(data.feature, set()).add(event.account_id)
    n = max(1, len(history.partition_of))
    ranked = sorted(counts, key=lambda f: (-counts[f], f))
    return [f for f in ranked if len(accounts[f]) >= MIN_FEATURE_SHARE * n][:MAX_CANDIDATES]


def _measuring_config(base: ScoringConfig, candidates: Sequence[str]) -> ScoringConfig:
    """The base config with every component weighed (so that every one is computed) and the candidate
    features counted."""
    weights = Weights(**{c: 1.0 for c in COMPONENTS})
    return replace(base, weights=weights, intensity=replace(base.intensity, typical=1.0),
                   key_features=KeyFeaturesRule(window_days=base.key_features.window_days,
                                                features={f: {"weight": 0.0} for f in candidates}))  # type: ignore[arg-type]


def collect(history: Any, outcomes: dict[str, datetime | None], cuts: Sequence[datetime], horizon: timedelta,
            base: ScoringConfig, lateness: timedelta,
            progress: Callable[[str], None]) -> tuple[list[Example], list[str]]:
    from .replay import replay

    candidates = _candidates(history)
    config = _measuring_config(base, candidates)
    engine = ScoringEngine(config)
    examples: list[Example] = []

    def on_cut(cut: datetime, states: dict[str, AccountState]) -> None:
        for account, state in states.items():
            if account not in outcomes:
                continue
            churned_at = outcomes[account]
            if churned_at is not None and churned_at < cut:
                continue
            snap = engine.snapshot(state)
            if snap.score is None:
                continue
            at_ts = state.eval_ts if state.eval_ts >= 0 else max(state.clock, 0)
            usage = measure(state, config, at_ts // 86_400).usage
            window = config.key_features.window_days
            d = state.eval_day
            uses = {f: sum(n for day, n in days.items() if d - window <= day < d)
                    for f, days in state.key_counts.items()}
            examples.append(Example(churned_at is not None and churned_at < cut + horizon,
                                    [c.score for c in snap.components], usage.intensity, uses))

    replay(history, cuts, engine, allowed_lateness=lateness, progress=progress, on_cut=on_cut)
    return examples, candidates


def calibrate(examples: Sequence[Example], candidates: Sequence[str], base: ScoringConfig,
              precision: float | None) -> tuple[ScoringConfig, dict[str, Any]]:
    if len(examples) < 20 or sum(e.churned for e in examples) < 5:
        raise InputError(f"too little to fit: {len(examples)} accounts at the cuts, "
                         f"{sum(e.churned for e in examples)} of them churned within the horizon "
                         "(at least 20 and 5 are needed)")
    labels = [e.churned for e in examples]
    intensities = [e.intensity for e in examples if e.intensity is not None]
    typical = round(_median(intensities), 3) if intensities else 0.0
    intensity = replace(base.intensity, typical=typical)
    key_features = fit_key_features(examples, candidates)
    i_int, i_key = COMPONENTS.index("intensity"), COMPONENTS.index("key_features")
    matrix: list[list[float | None]] = []
    for e in examples:
        row = list(e.components)
        row[i_int] = None if e.intensity is None or typical <= 0 else \
            100.0 * _sigmoid(intensity.slope * math.log(max(e.intensity, 1e-6) / typical))
        row[i_key] = key_feature_score(key_features, e.uses) if key_features.features else None
        matrix.append(row)
    weights = fit_weights(matrix, labels)
    if not weights:
        raise InputError("no component goes with staying rather than churning in this history; nothing to fit")
    scored = [(s, y) for row, y in zip(matrix, labels, strict=True) if (s := score_of(weights, row)) is not None]
    base_rate = sum(labels) / len(labels)
    target = precision if precision is not None else min(0.95, 2.0 * base_rate)
    yellow, green = fit_tiers([s for s, _ in scored], [y for _, y in scored], target)
    fitted = {"weights": {c: weights.get(c, 0.0) for c in COMPONENTS}, "yellow_at": yellow, "green_at": green,
              "intensity": {"typical": typical},
              "key_features": {"features": {f: {"weight": w, "typical": t} for f, w, t in key_features.features}}}
    version = "calibrated-" + hashlib.sha256(orjson.dumps(fitted, option=orjson.OPT_SORT_KEYS)).hexdigest()[:10]
    config = replace(base, version=version, weights=Weights(**fitted["weights"]), yellow_at=yellow, green_at=green,
                     intensity=intensity, key_features=key_features)
    fit_auc = metrics.auc([-s for s, _ in scored], [y for _, y in scored])
    summary = {"examples": len(examples), "churned": sum(labels), "base_rate": round(base_rate, 4),
               "red_precision_target": round(target, 4),
               "in_sample_auc": None if fit_auc is None else round(fit_auc, 4),
               "key_feature_candidates": len(candidates), **fitted}
    return config, summary


def to_yaml(config: ScoringConfig, about: str) -> str:
    data = config.to_dict()
    data.pop("calibration")
    data = {"version": data.pop("version"), "calibration": about, **data}
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


# -- command line ------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=Path, required=True, help="NDJSON history (gzip when it ends in .gz)")
    parser.add_argument("--outcomes", type=Path, help="CSV account_id,churned_at (default: lifecycle events)")
    parser.add_argument("--cut", action="append", required=True, metavar="YYYY-MM-DD",
                        help="cut-off date to learn from (repeatable)")
    parser.add_argument("--horizon", required=True, metavar="DAYSd", help="churn counted within this after a cut")
    parser.add_argument("--config", help="scoring config to start from (default: the built-in defaults)")
    parser.add_argument("--precision", type=float,
                        help="churn rate wanted among red accounts (default: twice the base rate)")
    parser.add_argument("--partitions", type=int, help="partitions, as the service has them")
    parser.add_argument("--allowed-lateness", type=int, help="seconds, as the service has it")
    parser.add_argument("--out", type=Path, required=True, help="the scoring config YAML to write")
    parser.add_argument("--summary-json", type=Path, help="also write what was fitted, as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return _run(args, settings)
    except InputError as exc:
        print(f"churnsignal calibrate: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, settings: Settings) -> int:
    started = time.perf_counter()
    cuts = sorted({parse_cut(c) for c in args.cut})
    horizon = parse_days("--horizon", args.horizon)
    if args.precision is not None and not 0 < args.precision < 1:
        raise InputError(f"bad --precision {args.precision}: must be between 0 and 1")
    for path, option in ((args.events, "--events"), (args.outcomes, "--outcomes")):
        if path is not None and not path.is_file():
            raise InputError(f"{option} {path}: no such file")
    partitions = settings.topic_partitions if args.partitions is None else args.partitions
    lateness = timedelta(seconds=settings.scoring_allowed_lateness_s if args.allowed_lateness is None
                         else args.allowed_lateness)
    try:
        base = ScoringConfig.load(args.config)
    except (ValueError, TypeError, OSError, yaml.YAMLError) as exc:
        raise InputError(f"--config {args.config}: {' '.join(str(exc).split())}") from None

    def progress(message: str) -> None:
        if not args.quiet:
            print(f"churnsignal calibrate: {message}", file=sys.stderr, flush=True)

    with fewer_collections():
        outcomes = None if args.outcomes is None else read_outcomes(args.outcomes)
        history = read_events(args.events, partitions=partitions, until=cuts[-1], progress=progress)
        if outcomes is None:
            outcomes = lifecycle_outcomes(history)
        examples, candidates = collect(history, outcomes, cuts, horizon, base, lateness, progress)
    config, summary = calibrate(examples, candidates, base, args.precision)
    about = (f"fitted by churnsignal calibrate on {args.events.name} ({summary['examples']} accounts at "
             f"{', '.join(c.date().isoformat() for c in cuts)}, {summary['churned']} churned within "
             f"{args.horizon}); in-sample health AUC {summary['in_sample_auc']}")
    args.out.write_text(to_yaml(config, about), encoding="utf-8")
    ScoringConfig.load(args.out)   # what was written loads back
    if args.summary_json is not None:
        args.summary_json.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
    weights = ", ".join(f"{k} {v:.2f}" for k, v in summary["weights"].items() if v > 0)
    print(f"{config.version}: {summary['examples']} accounts, {summary['churned']} churned; weights {weights}; "
          f"red below {config.yellow_at}, green from {config.green_at}; "
          f"{len(config.key_features.features)} key features; in-sample AUC {summary['in_sample_auc']} "
          f"({time.perf_counter() - started:.1f} s) -> {args.out}")
    return 0
