"""The figures of each cut (the JSON document) and the text summary. Pure: no I/O.

Population of a cut: every account with an event before the cut that has an outcome (a row in the
outcomes file, or any account when the outcomes come from lifecycle events) and had not churned before
the cut. It churned *within the horizon* when cut <= churned_at < cut + horizon. Accounts without an
outcome, and accounts already churned, are counted under `excluded` and take no part in the figures.

- health: ranked by score, lower = riskier, over the accounts that have a score; accounts without one
  (tier "unknown": nothing known yet to judge them by) are reported apart under `unscored` and take
  no part in the AUC, lifts and calibration. The base rate of the lifts is that of the scored accounts.
- risks: an account is flagged for a type when a risk of that type is open at the cut, or opened within
  the lookback window before it (`lookback_days`, 0 by default: open at the cut). Its lead time is
  churned_at minus the earliest such opening. `any_risk` flags an account holding any of them.
- baselines, from the same replayed events:
  - recent_volume: the account's events (any type) in the 28 days before the cut; fewer = riskier.
  - silence_2x_median_gap: the account's active days are the UTC days with usage before the cut; with
    at least two, its median gap is the median of the day differences between consecutive active days,
    and days silent is the cut's day minus its last active day (1 = active the day before the cut). It
    is flagged when days silent > 2 x median gap, since the first day that held (its midnight, for the
    lead time). Its AUC ranks by days silent / median gap, over the accounts that have a median gap;
    accounts with fewer than two active days are never flagged.
  - logistic_counts: an L2-regularized logistic regression on the account's event counts in the 28 days
    before the cut (log1p, per event type and per usage feature name, standardized; `logistic.py`),
    cross-validated in 5 folds by account; ranked by the out-of-fold churn probability over the same
    accounts as the health AUC (the scored ones). `lift_at_red_count`: churn rate among as many accounts
    as the red tier holds, the riskiest by the model, over the base rate (the model's red lift).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from . import logistic, metrics
from .history import COUNT_WINDOW_DAYS, Activity
from .replay import DAY_S, AccountAtCut, ReplayResult

VOLUME_WINDOW_DAYS = 28
SILENCE_FACTOR = 2.0
DECILE = 0.1
TIERS = ("green", "yellow", "red")

CURVE_HEALTH = "health score"
CURVE_VOLUME = "recent volume (28 days)"
CURVE_SILENCE = "silence / median gap"
CURVE_LOGISTIC = "logistic regression on counts (5-fold CV)"


@dataclass
class CutCharts:
    """What the HTML page draws for one cut, beside the figures."""

    cut: str
    gains: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    auc: dict[str, float | None] = field(default_factory=dict)


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _rounded(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: _round(v) if isinstance(v, float) else v for k, v in figures.items()}


def _days(delta: timedelta) -> float:
    return delta.total_seconds() / DAY_S


@dataclass(frozen=True, slots=True)
class _Member:
    account: AccountAtCut
    churned_at: datetime | None
    positive: bool


def _silence(activity: Activity | None, cut_day: int) -> tuple[float | None, datetime | None]:
    """(days silent / median gap, flagged since) as of a cut; (None, None) without a median gap."""
    if activity is None:
        return None, None
    days = activity.usage_days[:bisect_left(activity.usage_days, cut_day)]
    if len(days) < 2:
        return None, None
    gap = metrics.median([b - a for a, b in zip(days, days[1:], strict=False)])
    assert gap is not None and gap > 0
    silent = cut_day - days[-1]
    since = None
    if silent > SILENCE_FACTOR * gap:
        first = days[-1] + math.floor(SILENCE_FACTOR * gap) + 1
        since = datetime.fromtimestamp(first * DAY_S, UTC)
    return silent / gap, since


def _recent_volume(activity: Activity | None, cut: datetime) -> int:
    if activity is None:
        return 0
    end = cut.timestamp()
    times = activity.event_times
    return bisect_left(times, end) - bisect_left(times, end - VOLUME_WINDOW_DAYS * DAY_S)


def _logistic_counts(cut: datetime, scored: Sequence[_Member], activity: dict[str, Activity],
                     vocabulary: Sequence[str] | None, n_red: int, charts: CutCharts) -> dict[str, Any]:
    key = cut.timestamp()
    counts = []
    for m in scored:
        act = activity.get(m.account.account_id)
        counts.append({} if act is None else act.window_counts.get(key, {}))
    kept = logistic.vocabulary(counts) if vocabulary is None else list(vocabulary)
    rows, names = logistic.baseline_rows(counts, kept)
    labels = [m.positive for m in scored]
    folds = [logistic.fold_of(m.account.account_id) for m in scored]
    risk = logistic.cross_validated(rows, labels, folds)
    lr_auc = metrics.auc(risk, labels)
    charts.gains[CURVE_LOGISTIC] = metrics.gains(risk, labels)
    charts.auc[CURVE_LOGISTIC] = lr_auc
    return {"window_days": COUNT_WINDOW_DAYS, "folds": logistic.FOLDS, "l2": logistic.L2,
            "features": len(names), "usage_features": len(kept), "accounts": len(scored),
            "auc": _round(lr_auc), "top_decile_lift": _round(metrics.top_lift(risk, labels, DECILE)),
            "lift_at_red_count": _round(metrics.top_lift(risk, labels, n_red / len(scored))
                                        if n_red and scored else None)}


def evaluate_cut(cut: datetime, accounts: dict[str, AccountAtCut], activity: dict[str, Activity],
                 outcomes: dict[str, datetime | None], horizon: timedelta,
                 risk_types: Sequence[str], vocabulary: Sequence[str] | None = None
                 ) -> tuple[dict[str, Any], CutCharts]:
    """The figures of one cut (its entry of the JSON document) and its charts. `vocabulary`: the usage
    feature names of the logistic baseline (default: the most frequent in this cut's windows)."""
    horizon_days = _days(horizon)
    members: list[_Member] = []
    no_outcome = churned_before = 0
    for account_id in sorted(accounts):
        if account_id not in outcomes:
            no_outcome += 1
            continue
        churned_at = outcomes[account_id]
        if churned_at is not None and churned_at < cut:
            churned_before += 1
            continue
        positive = churned_at is not None and churned_at < cut + horizon
        members.append(_Member(accounts[account_id], churned_at, positive))
    positive = [m.positive for m in members]
    n_churned = sum(positive)
    charts = CutCharts(cut.date().isoformat())

    # -- health ---------------------------------------------------------------------------------------
    scored = [m for m in members if m.account.score is not None]
    unscored = [m for m in members if m.account.score is None]
    scores = [float(m.account.score) for m in scored]  # type: ignore[arg-type]
    scored_pos = [m.positive for m in scored]
    health_risk = [-s for s in scores]
    health_auc = metrics.auc(health_risk, scored_pos)
    charts.gains[CURVE_HEALTH] = metrics.gains(health_risk, scored_pos)
    charts.auc[CURVE_HEALTH] = health_auc
    tiers = {t: {"accounts": sum(1 for m in scored if m.account.tier == t),
                 "churned": sum(1 for m in scored if m.account.tier == t and m.positive)} for t in TIERS}
    health = {
        "auc": _round(health_auc),
        "red_lift": _round(metrics.group_lift([m.account.tier == "red" for m in scored], scored_pos)),
        "bottom_decile_lift": _round(metrics.top_lift(health_risk, scored_pos, DECILE)),
        "calibration": [_rounded(band) for band in metrics.calibration(scores, scored_pos)],
        "scored": len(scored),
        "unscored": {"accounts": len(unscored), "churned": sum(1 for m in unscored if m.positive)},
        "tiers": tiers,
    }

    # -- risks ----------------------------------------------------------------------------------------
    def flag_entry(since: Sequence[datetime | None]) -> dict[str, Any]:
        leads = [_days(m.churned_at - s) if m.positive and s is not None and m.churned_at is not None
                 else None for m, s in zip(members, since, strict=True)]
        return _rounded(metrics.flag_figures([s is not None for s in since], positive, leads, horizon_days))

    risks = {rtype: flag_entry([m.account.risks.get(rtype) for m in members]) for rtype in risk_types}
    any_risk = flag_entry([min(m.account.risks.values()) if m.account.risks else None for m in members])

    # -- baselines ------------------------------------------------------------------------------------
    volume_risk = [-float(_recent_volume(activity.get(m.account.account_id), cut)) for m in members]
    volume_auc = metrics.auc(volume_risk, positive)
    charts.gains[CURVE_VOLUME] = metrics.gains(volume_risk, positive)
    charts.auc[CURVE_VOLUME] = volume_auc
    recent_volume = {"window_days": VOLUME_WINDOW_DAYS, "accounts": len(members), "auc": _round(volume_auc),
                     "bottom_decile_lift": _round(metrics.top_lift(volume_risk, positive, DECILE))}

    cut_day = int(cut.timestamp() // DAY_S)
    silence = [_silence(activity.get(m.account.account_id), cut_day) for m in members]
    ranked = [(ratio, m.positive) for (ratio, _), m in zip(silence, members, strict=True) if ratio is not None]
    ratio_risk = [r for r, _ in ranked]
    ratio_pos = [p for _, p in ranked]
    silence_auc = metrics.auc(ratio_risk, ratio_pos)
    charts.gains[CURVE_SILENCE] = metrics.gains(ratio_risk, ratio_pos)
    charts.auc[CURVE_SILENCE] = silence_auc
    silence_entry = flag_entry([since for _, since in silence])
    silence_entry.update({"factor": SILENCE_FACTOR, "ranked": len(ranked), "auc": _round(silence_auc),
                          "top_decile_lift": _round(metrics.top_lift(ratio_risk, ratio_pos, DECILE))})

    logistic_entry = _logistic_counts(cut, scored, activity, vocabulary, tiers["red"]["accounts"], charts)

    entry = {
        "cut": cut.date().isoformat(),
        "accounts": len(members),
        "churned": n_churned,
        "base_rate": _round(n_churned / len(members)) if members else None,
        "excluded": {"churned_before_cut": churned_before, "no_outcome": no_outcome},
        "health": health,
        "risks": risks,
        "any_risk": any_risk,
        "baselines": {"recent_volume": recent_volume, "silence_2x_median_gap": silence_entry,
                      "logistic_counts": logistic_entry},
    }
    return entry, charts


def build_report(result: ReplayResult, outcomes: dict[str, datetime | None], *, horizon: timedelta,
                 lookback: timedelta, risk_types: Sequence[str], about: dict[str, Any]
                 ) -> tuple[dict[str, Any], list[CutCharts]]:
    """The whole JSON document (`about` adds the run's facts) and the charts of every cut."""
    cuts = []
    charts = []
    # the logistic baseline's usage features: the most frequent over every cut's windows
    vocabulary = logistic.vocabulary([c for act in result.activity.values() for c in act.window_counts.values()])
    for cut, accounts in zip(result.cuts, result.accounts, strict=True):
        entry, chart = evaluate_cut(cut, accounts, result.activity, outcomes, horizon, risk_types, vocabulary)
        cuts.append(entry)
        charts.append(chart)
    doc = {**about, "horizon_days": _days(horizon), "lookback_days": _days(lookback),
           "risk_types": list(risk_types), "cuts": cuts}
    return doc, charts


# -- text --------------------------------------------------------------------------------------------------

def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def _num(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


def _int_days(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} d"


def text_summary(doc: dict[str, Any]) -> str:
    horizon = doc["horizon_days"]
    lookback = doc["lookback_days"]
    window = "open at the cut" if not lookback else f"open at the cut or opened in the {lookback:g} days before"
    events = doc.get("events", {})
    lines = [f"churnsignal backtest: {events.get('replayed', 0):,} events replayed "
             f"({events.get('read', 0):,} read), {doc.get('partitions')} partitions, "
             f"scoring config {doc.get('config_version')}",
             f"churn within {horizon:g} days of each cut; a risk counts when {window}.", ""]
    for cut in doc["cuts"]:
        h = cut["health"]
        excluded = cut["excluded"]
        lines.append(f"Cut {cut['cut']}: {cut['accounts']:,} accounts, {cut['churned']:,} churned within "
                     f"{horizon:g} days (base rate {_pct(cut['base_rate'])}); excluded: "
                     f"{excluded['churned_before_cut']:,} churned before, {excluded['no_outcome']:,} without outcome")
        lines.append(f"  health score    AUC {_num(h['auc'])}   red lift {_num(h['red_lift'], 1, 'x')} "
                     f"({h['tiers']['red']['accounts']} red)   bottom-decile lift "
                     f"{_num(h['bottom_decile_lift'], 1, 'x')}   ({h['unscored']['accounts']} unscored)")
        bands = "  ".join(f"{b['band']}: {b['churned']}/{b['accounts']}" for b in h["calibration"] if b["accounts"])
        lines.append(f"  calibration     {bands or '—'}  (churned/accounts per score band)")
        lines.append(f"  {'flagged by':<28}{'flagged':>8}{'precision':>11}{'recall':>8}{'F1':>7}{'median lead':>13}"
                     f"{'false alarms':>14}")
        rows = [(name, fig) for name, fig in cut["risks"].items()]
        rows.append(("any risk", cut["any_risk"]))
        rows.append(("baseline: silence > 2x gap", cut["baselines"]["silence_2x_median_gap"]))
        for name, fig in rows:
            lines.append(f"  {name:<28.28}{fig['flagged']:>8,}{_pct(fig['precision']):>11}{_pct(fig['recall']):>8}"
                         f"{_num(fig['f1']):>7}{_int_days(fig['median_lead_days']):>13}"
                         f"{_num(fig['false_alarms_per_100_per_month'], 1):>14}")
        volume = cut["baselines"]["recent_volume"]
        silence = cut["baselines"]["silence_2x_median_gap"]
        lines.append(f"  baselines       recent volume ({volume['window_days']} d): AUC {_num(volume['auc'])}, "
                     f"bottom-decile lift {_num(volume['bottom_decile_lift'], 1, 'x')};  silence / median gap: "
                     f"AUC {_num(silence['auc'])} ({silence['ranked']} ranked)")
        lr = cut["baselines"].get("logistic_counts")
        if lr is not None:
            lines.append(f"                  logistic regression on {lr['window_days']}-day counts ({lr['features']} "
                         f"features, {lr['folds']}-fold CV): AUC {_num(lr['auc'])}, top-decile lift "
                         f"{_num(lr['top_decile_lift'], 1, 'x')}, lift at the red tier's size "
                         f"{_num(lr['lift_at_red_count'], 1, 'x')}")
        lines.append("")
    lines.append("(false alarms: flagged accounts that stayed, per 100 that stayed, per 30 days of horizon)")
    return "\n".join(lines) + "\n"
