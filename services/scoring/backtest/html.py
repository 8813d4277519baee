"""The backtest as one self-contained HTML page: inline SVG charts and tables, no script, no external asset.

Per cut: a lift chart (cumulative share of churners captured against the share of accounts, riskiest
first: the health score, the three baselines and the random diagonal), the score distribution of the
accounts that churned and of those that stayed, and the tables of the JSON document. Every chart has a
title and a description for screen readers, and its numbers are in a table beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

from .report import CURVE_HEALTH, CURVE_LOGISTIC, CURVE_SILENCE, CURVE_VOLUME, CutCharts

# Colour and dash both tell the curves apart (readable without colour).
_STYLES = {
    CURVE_HEALTH: ("#1b5e9b", ""),
    CURVE_VOLUME: ("#b35900", "8 4"),
    CURVE_SILENCE: ("#6a3d9a", "2 3"),
    CURVE_LOGISTIC: ("#2e7d32", "10 3 2 3"),
}
_CHURNED = "#c0392b"
_STAYED = "#7f8c8d"

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 62rem;
       color: #1d1d1f; line-height: 1.45; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.3rem; margin-top: 2.5rem; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05rem; margin-top: 1.5rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .9rem; }
caption { text-align: left; font-weight: 600; padding-bottom: .3rem; }
th, td { border: 1px solid #d0d0d0; padding: .25rem .55rem; text-align: right; }
th[scope=row], td.text { text-align: left; }
thead th { background: #f2f2f2; }
.charts { display: flex; flex-wrap: wrap; gap: 1.5rem; }
figure { margin: 0; } figcaption { font-size: .85rem; color: #444; max-width: 30rem; }
svg text { font-size: 11px; fill: #333; }
.note { color: #444; font-size: .9rem; }
"""


def _fmt(value: Any, kind: str = "num") -> str:
    if value is None:
        return "—"
    if kind == "pct":
        return f"{value:.1%}"
    if kind == "lift":
        return f"{value:.2f}×"
    if kind == "days":
        return f"{value:.1f}"
    if kind == "int":
        return f"{value:,}"
    return f"{value:.3f}"


def _table(caption: str, head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = [f"<table><caption>{escape(caption)}</caption><thead><tr>"]
    out += [f'<th scope="col">{escape(h)}</th>' for h in head]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append(f'<tr><th scope="row">{escape(row[0])}</th>'
                   + "".join(f"<td>{escape(cell)}</td>" for cell in row[1:]) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _lift_chart(ident: str, charts: CutCharts) -> str:
    w, left, top, pw, ph = 460, 54, 16, 380, 260
    legend_top = top + ph + 48
    h = legend_top + 18 * (len(charts.gains) + 1) + 6

    def xy(x: float, y: float) -> str:
        return f"{left + x * pw:.1f},{top + (1 - y) * ph:.1f}"

    parts = [f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
             f'aria-labelledby="{ident}-t {ident}-d" xmlns="http://www.w3.org/2000/svg">']
    described = "; ".join(f"{name}: AUC {_fmt(charts.auc.get(name))}" for name in charts.gains)
    parts.append(f'<title id="{ident}-t">Lift chart, cut {escape(charts.cut)}</title>')
    parts.append(f'<desc id="{ident}-d">Share of churners captured against the share of accounts taken, '
                 f'riskiest first. {escape(described)}. The diagonal is a random order.</desc>')
    for i in range(6):
        v = i / 5
        y = top + (1 - v) * ph
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e6e6e6"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.0%}</text>')
        parts.append(f'<text x="{left + v * pw:.1f}" y="{top + ph + 16}" text-anchor="middle">{v:.0%}</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph + 34}" text-anchor="middle">'
                 "accounts, riskiest first</text>")
    parts.append(f'<text transform="translate(14 {top + ph / 2:.1f}) rotate(-90)" text-anchor="middle">'
                 "churners captured</text>")
    parts.append(f'<polyline points="{xy(0, 0)} {xy(1, 1)}" fill="none" stroke="#aaa" stroke-dasharray="4 4"/>')
    legend_y = legend_top
    for name, points in charts.gains.items():
        colour, dash = _STYLES.get(name, ("#333", ""))
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        if points:
            parts.append(f'<polyline points="{" ".join(xy(x, y) for x, y in points)}" fill="none" '
                         f'stroke="{colour}" stroke-width="2"{dash_attr}/>')
        parts.append(f'<line x1="{left}" x2="{left + 28}" y1="{legend_y}" y2="{legend_y}" '
                     f'stroke="{colour}" stroke-width="2"{dash_attr}/>')
        auc = charts.auc.get(name)
        label = f"{name}: AUC {_fmt(auc)}" if points else f"{name}: no churner to capture"
        parts.append(f'<text x="{left + 36}" y="{legend_y + 4}">{escape(label)}</text>')
        legend_y += 18
    parts.append(f'<line x1="{left}" x2="{left + 28}" y1="{legend_y}" y2="{legend_y}" '
                 'stroke="#aaa" stroke-dasharray="4 4"/>')
    parts.append(f'<text x="{left + 36}" y="{legend_y + 4}">random order: AUC 0.5</text>')
    parts.append("</svg>")
    return "".join(parts)


def _histogram(ident: str, cut: str, calibration: Sequence[dict[str, Any]]) -> str:
    w, h, left, bottom, top = 460, 340, 54, 40, 36
    pw, ph = w - left - 20, h - top - bottom
    churned = [b["churned"] for b in calibration]
    stayed = [b["accounts"] - b["churned"] for b in calibration]
    n_churned, n_stayed = sum(churned), sum(stayed)
    share_c = [c / n_churned if n_churned else 0.0 for c in churned]
    share_s = [s / n_stayed if n_stayed else 0.0 for s in stayed]
    step = 0.1 if max([*share_c, *share_s, 0.0]) <= 0.5 else 0.2
    peak = max(step, math.ceil(max([*share_c, *share_s, 0.0]) / step - 1e-9) * step)
    parts = [f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
             f'aria-labelledby="{ident}-t {ident}-d" xmlns="http://www.w3.org/2000/svg">']
    parts.append(f'<title id="{ident}-t">Health score distribution by outcome, cut {escape(cut)}</title>')
    parts.append(f'<desc id="{ident}-d">Share of the {n_churned} accounts that churned and of the {n_stayed} '
                 f'that stayed in each band of ten score points; the counts are in the calibration table.</desc>')
    for i in range(round(peak / step) + 1):
        v = i * step
        y = top + (1 - v / peak) * ph
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e6e6e6"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.0%}</text>')
    band_w = pw / len(calibration)
    for i, band in enumerate(calibration):
        x0 = left + i * band_w
        for j, (share, colour) in enumerate(((share_c[i], _CHURNED), (share_s[i], _STAYED))):
            bh = share / peak * ph
            parts.append(f'<rect x="{x0 + 3 + j * (band_w - 6) / 2:.1f}" y="{top + ph - bh:.1f}" '
                         f'width="{(band_w - 6) / 2:.1f}" height="{bh:.1f}" fill="{colour}"/>')
        parts.append(f'<text x="{x0 + band_w / 2:.1f}" y="{top + ph + 14}" text-anchor="middle">'
                     f'{band["low"]}</text>')
    parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="#999"/>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{h - 6}" text-anchor="middle">health score (band start)</text>')
    parts.append(f'<text transform="translate(12 {top + ph / 2:.1f}) rotate(-90)" text-anchor="middle">'
                 "share of the group</text>")
    parts.append(f'<rect x="{left + 8}" y="8" width="12" height="12" fill="{_CHURNED}"/>'
                 f'<text x="{left + 24}" y="18">churned ({n_churned})</text>'
                 f'<rect x="{left + 130}" y="8" width="12" height="12" fill="{_STAYED}"/>'
                 f'<text x="{left + 146}" y="18">stayed ({n_stayed})</text>')
    parts.append("</svg>")
    return "".join(parts)


def _flag_row(name: str, fig: dict[str, Any]) -> list[str]:
    return [name, _fmt(fig["flagged"], "int"), _fmt(fig["precision"], "pct"), _fmt(fig["recall"], "pct"),
            _fmt(fig["f1"]), _fmt(fig["median_lead_days"], "days"),
            _fmt(fig["false_alarms_per_100_per_month"], "days")]


def render_html(doc: dict[str, Any], charts: Sequence[CutCharts]) -> str:
    horizon = doc["horizon_days"]
    lookback = doc["lookback_days"]
    window = "open at the cut" if not lookback else f"open at the cut or opened in the {lookback:g} days before it"
    events = doc.get("events", {})
    out = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           "<title>churnsignal backtest</title>", f"<style>{_CSS}</style></head><body><main>",
           "<h1>churnsignal backtest: did the health score and the risks predict churn?</h1>",
           f'<p class="note">{events.get("replayed", 0):,} events replayed through the scoring domain '
           f'(scoring config {escape(str(doc.get("config_version")))}, {doc.get("partitions")} partitions, '
           f'allowed lateness {doc.get("allowed_lateness_s")} s). Churn counts when it happened within '
           f'{horizon:g} days of the cut; a risk counts when {escape(window)}. Baselines: the account\'s '
           "event volume in the 28 days before the cut (lower is riskier), silence beyond twice its "
           "median gap between active days, and a logistic regression on its event counts per type and "
           "usage feature in the 28 days before the cut (5-fold cross-validated by account: the bar a "
           "useful score has to clear).</p>"]
    flag_head = ["flagged by", "flagged", "precision", "recall", "F1", "median lead (days)",
                 "false alarms per 100 stayed per month"]
    for n, (cut, chart) in enumerate(zip(doc["cuts"], charts, strict=True)):
        h = cut["health"]
        out.append(f'<section aria-labelledby="cut-{n}"><h2 id="cut-{n}">Cut {escape(cut["cut"])}</h2>')
        out.append(f'<p>{cut["accounts"]:,} accounts at the cut, {cut["churned"]:,} churned within {horizon:g} '
                   f'days (base rate {_fmt(cut["base_rate"], "pct")}). Not counted: '
                   f'{cut["excluded"]["churned_before_cut"]:,} churned before the cut, '
                   f'{cut["excluded"]["no_outcome"]:,} without an outcome, {h["unscored"]["accounts"]:,} '
                   "without a health score (ranked figures only).</p>")
        out.append('<div class="charts">')
        out.append(f"<figure>{_lift_chart(f'lift-{n}', chart)}<figcaption>Lift chart: the steeper and higher "
                   "a curve, the more churners are found among the first accounts it ranks.</figcaption></figure>")
        out.append(f"<figure>{_histogram(f'hist-{n}', cut['cut'], h['calibration'])}<figcaption>Score "
                   "distributions: churners should sit to the left.</figcaption></figure>")
        out.append("</div>")
        out.append("<h3>Health score</h3>")
        out.append(_table(f"Health score against churn, cut {cut['cut']}", ["figure", "value"], [
            ["ROC AUC (low score = churn)", _fmt(h["auc"])],
            ["red tier lift", _fmt(h["red_lift"], "lift")],
            ["bottom decile lift", _fmt(h["bottom_decile_lift"], "lift")],
            ["accounts scored", _fmt(h["scored"], "int")],
        ]))
        out.append(_table(f"Calibration by score band, cut {cut['cut']}",
                          ["score band", "accounts", "churned", "churn rate"],
                          [[b["band"], _fmt(b["accounts"], "int"), _fmt(b["churned"], "int"),
                            _fmt(b["churn_rate"], "pct")] for b in h["calibration"]]))
        out.append("<h3>Risks</h3>")
        rows = [_flag_row(name, fig) for name, fig in cut["risks"].items()]
        rows.append(_flag_row("any risk", cut["any_risk"]))
        out.append(_table(f"Risk types against churn, cut {cut['cut']}", flag_head, rows))
        out.append("<h3>Baselines</h3>")
        volume = cut["baselines"]["recent_volume"]
        silence = cut["baselines"]["silence_2x_median_gap"]
        rank_head = ["ranking", "accounts", "ROC AUC", "riskiest decile lift"]
        out.append(_table(f"Baseline rankings, cut {cut['cut']}", rank_head, [
            ["health score", _fmt(h["scored"], "int"), _fmt(h["auc"]), _fmt(h["bottom_decile_lift"], "lift")],
            ["recent volume (28 days, lower = riskier)", _fmt(volume["accounts"], "int"), _fmt(volume["auc"]),
             _fmt(volume["bottom_decile_lift"], "lift")],
            ["days silent / median gap", _fmt(silence["ranked"], "int"), _fmt(silence["auc"]),
             _fmt(silence["top_decile_lift"], "lift")],
            *([[f"logistic regression on 28-day counts ({lr['features']} features, {lr['folds']}-fold CV)",
                _fmt(lr["accounts"], "int"), _fmt(lr["auc"]), _fmt(lr["top_decile_lift"], "lift")]]
              if (lr := cut["baselines"].get("logistic_counts")) is not None else []),
        ]))
        if lr is not None:
            out.append(_table(f"Red tier against the logistic baseline, cut {cut['cut']}", ["figure", "value"], [
                ["red tier lift (health score)", _fmt(h["red_lift"], "lift")],
                ["lift of as many accounts, riskiest by the logistic baseline",
                 _fmt(lr["lift_at_red_count"], "lift")],
            ]))
        out.append(_table(f"Silence flag against churn, cut {cut['cut']}", flag_head,
                          [_flag_row("silence > 2× median gap", silence)]))
        out.append("</section>")
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"
