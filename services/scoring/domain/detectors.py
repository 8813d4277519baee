"""Churn-risk detectors: each judges one condition against the account's own history.

A detector returns a `Verdict` (severity, evidence, material key) while its condition holds, else None.
`current` is the material key of its open risk (None when not open), for hysteresis: a risk opens at a
stricter level than it resolves, so it does not flap. The material key decides when an open risk is
worth an "updated" transition: evidence numbers move all the time, the key moves only when the story
changes (and for counts, only upwards: a storm calming down is not news until it is over).
`summary` turns evidence into one sentence a CSM understands.

The rules (thresholds are `ScoringConfig` defaults; "complete days" are the days before the last clock
tick, see `signals.py`):
- champion_left (critical): a champion/sponsor whose status turned to "left" (someone first seen as
  "left" is an old departure and does not count), until a champion/sponsor is named active after it.
- champion_inactive (high): a champion/sponsor's own usage (contact.user_id = usage.user_id) has been
  silent for >= max(3 x their usual gap (p90 of gaps between their active days, >= 5 active days), 7)
  complete days, while the account is otherwise active (uses in the last 7 days, not silent, not low).
- usage_drop (high): the last 7 complete days < 40% of the median of the 4 earlier 7-day sums (>= 3 of
  them, median >= 10, and P(X <= recent | Poisson(median)) < 1%), or no usage for >= max(3 x the
  account's usual gap, 4) complete days; the ratio part clears at 60%.
- ticket_spike (high): tickets opened in the last 7 days >= 5, >= 3 x the weekly baseline (opened per
  day over the up-to-7 earlier weeks, >= 14 days of history, floor 0.5/week) and P(X >= n | Poisson)
  < 0.1%; clears below max(3, 2 x baseline).
- sentiment_drop: high for a detractor answer (NPS <= 6, CSAT <= 2, else value <= -0.5) that is the
  latest answer of a champion/sponsor within 60 days; medium when the mean of the last 30 days (>= 3
  answers) is < -0.1 and at least 0.4 below the mean of the answers 31-90 days old (>= 2 of them).
- renewal_risk (high): renewal date within 0-90 days and tier yellow or red; clears at green + 5.
- health_drop (medium): score >= 20 points below the day maxima of the last 7 days (same components
  known, account older than 14 days); clears under a 15-point drop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from .config import ScoringConfig
from .signals import KeyContact, Signals
from .stats import poisson_cdf, poisson_sf

RISK_TYPES = ("champion_left", "champion_inactive", "usage_drop", "ticket_spike", "sentiment_drop",
              "renewal_risk", "health_drop")


@dataclass(frozen=True, slots=True)
class Verdict:
    severity: str
    evidence: dict[str, Any]
    material: list[Any]


@dataclass(frozen=True, slots=True)
class Context:
    """What every detector may look at."""

    cfg: ScoringConfig
    sig: Signals
    score: float | None
    tier: str
    peak_score: float | None      # highest score within the health-drop window
    main_factor: str | None       # the component costing the most points now
    history_days: int             # days since the account's first event


Detector = Callable[[Context, list[Any] | None], Verdict | None]


MAX_LISTED = 3   # people named in one risk's evidence (the count says how many in all)


def _person(k: KeyContact) -> dict[str, Any]:
    return {"contact_id": k.contact_id, "name": k.name, "role": k.role}


def champion_left(ctx: Context, current: list[Any] | None) -> Verdict | None:
    gone = [k for k in ctx.sig.contacts if k.left and k.departed_unreplaced]
    if not gone:
        return None
    gone.sort(key=lambda k: (-k.left_ts, k.contact_id))
    people = [{**_person(k), "left_at": _iso(k.left_ts)} for k in gone[:MAX_LISTED]]
    return Verdict("critical", {"contacts": people, "count": len(gone)}, sorted(k.contact_id for k in gone))


def champion_inactive(ctx: Context, current: list[Any] | None) -> Verdict | None:
    u = ctx.sig.usage
    rule = ctx.cfg.usage_drop
    account_active = (u.known and u.recent > 0 and not u.silent
                      and (u.ratio is None or u.ratio >= rule.ratio))
    if not account_active:
        return None
    quiet = [k for k in ctx.sig.contacts
             if not k.left and k.threshold is not None and k.days_silent is not None
             and k.days_silent >= k.threshold]
    if not quiet:
        return None
    quiet.sort(key=lambda k: (-(k.days_silent or 0), k.contact_id))
    people = [{**_person(k), "days_since_last_use": k.days_silent, "usual_gap_days": k.usual_gap}
              for k in quiet[:MAX_LISTED]]
    return Verdict("high", {"contacts": people, "count": len(quiet), "account_uses_7d": u.recent},
                   sorted(k.contact_id for k in quiet))


def usage_drop(ctx: Context, current: list[Any] | None) -> Verdict | None:
    u = ctx.sig.usage
    rule = ctx.cfg.usage_drop
    if not u.known:
        return None
    low = False
    if u.norm is not None and u.ratio is not None and len(u.windows) >= rule.min_norm_windows \
            and u.norm >= rule.min_norm:
        if current is not None:
            low = u.ratio < rule.resolve_ratio
        else:
            low = u.ratio < rule.ratio and poisson_cdf(u.recent, u.norm) < rule.max_probability
    elif current is not None and u.norm is not None and u.norm > 0 and u.ratio is not None:
        low = u.ratio < rule.resolve_ratio
    if not (low or u.silent):
        return None
    mode = "silent" if u.silent else "low"
    evidence: dict[str, Any] = {
        "mode": mode, "uses_7d": u.recent,
        "usual_7d": None if u.norm is None else round(u.norm, 1),
        "ratio": None if u.ratio is None else round(u.ratio, 2),
        "days_silent": u.days_silent, "usual_gap_days": u.usual_gap,
    }
    return Verdict("high", evidence, [mode])


def ticket_spike(ctx: Context, current: list[Any] | None) -> Verdict | None:
    t = ctx.sig.tickets
    rule = ctx.cfg.ticket_spike
    if not t.known or t.baseline is None:
        return None
    lam = max(t.baseline, rule.min_baseline)
    n = t.opened_recent
    if current is not None:
        holds = n >= max(rule.resolve_below, 2.0 * lam)
    else:
        holds = (n >= rule.min_count and n >= rule.factor * lam
                 and poisson_sf(n, lam) < rule.max_probability)
    if not holds:
        return None
    evidence = {"opened_7d": n, "usual_per_week": round(lam, 1), "open_tickets": t.open_count,
                "urgent_open": t.urgent_open}
    band = int(math.log2(max(n, 1)))
    return Verdict("high", evidence, [max(band, current[0]) if current else band])


def sentiment_drop(ctx: Context, current: list[Any] | None) -> Verdict | None:
    s = ctx.sig.sentiment
    rule = ctx.cfg.sentiment
    if s.key_detractor is not None:
        d = s.key_detractor
        evidence = {"mode": "key_detractor", "contact_id": d["contact_id"], "contact": d["contact"],
                    "role": d["role"], "source": d["source"], "score": d["score"],
                    "answered_at": _iso(d["answered_at"])}
        return Verdict("high", evidence, ["key_detractor", d["contact_id"]])
    if s.recent_mean is None or s.recent_count < rule.trend_min_samples:
        return None
    if s.earlier_mean is None or s.earlier_count < rule.trend_min_earlier:
        return None
    if not (s.recent_mean < rule.trend_negative_mean and s.recent_mean <= s.earlier_mean - rule.trend_drop):
        return None
    evidence = {"mode": "trend", "recent_mean": round(s.recent_mean, 2), "recent_answers": s.recent_count,
                "earlier_mean": None if s.earlier_mean is None else round(s.earlier_mean, 2),
                "earlier_answers": s.earlier_count}
    return Verdict("medium", evidence, ["trend"])


def renewal_risk(ctx: Context, current: list[Any] | None) -> Verdict | None:
    days = ctx.sig.renewal_days
    rule = ctx.cfg.renewal
    if days is None or not 0 <= days <= rule.within_days or ctx.score is None:
        return None
    if current is not None:
        holds = ctx.score < ctx.cfg.green_at + rule.resolve_margin
    else:
        holds = ctx.tier in ("yellow", "red")
    if not holds:
        return None
    band = 30 if days <= 30 else 60 if days <= 60 else 90
    evidence = {"renewal_date": _day_iso(ctx.sig.at_day + days), "days_to_renewal": days,
                "score": ctx.score, "tier": ctx.tier}
    return Verdict("high", evidence, [band, ctx.tier == "red"])


def health_drop(ctx: Context, current: list[Any] | None) -> Verdict | None:
    rule = ctx.cfg.health_drop
    if ctx.score is None or ctx.peak_score is None or ctx.history_days < rule.min_history_days:
        return None
    drop = ctx.peak_score - ctx.score
    if drop < (rule.resolve_drop if current is not None else rule.drop):
        return None
    evidence = {"from": ctx.peak_score, "to": ctx.score, "drop": round(drop, 1),
                "within_days": rule.within_days, "main_factor": ctx.main_factor}
    band = 1 if drop >= 2 * rule.drop else 0
    return Verdict("medium", evidence, [max(band, current[0]) if current else band])


DETECTORS: dict[str, Detector] = {
    "champion_left": champion_left,
    "champion_inactive": champion_inactive,
    "usage_drop": usage_drop,
    "ticket_spike": ticket_spike,
    "sentiment_drop": sentiment_drop,
    "renewal_risk": renewal_risk,
    "health_drop": health_drop,
}


# -- summaries -------------------------------------------------------------------------------------------

def _names(people: list[dict[str, Any]]) -> str:
    labels = [f"{p['name']} ({p['role']})" for p in people]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def summary(risk_type: str, evidence: dict[str, Any], account: str) -> str:
    """One sentence a CSM understands."""
    e = evidence
    if risk_type == "champion_left":
        people = e["contacts"]
        more = e.get("count", len(people)) - len(people)
        names = _names(people) if not more else ", ".join(f"{p['name']} ({p['role']})" for p in people) + \
            f" and {more} more"
        verb = "has" if len(people) == 1 and not more else "have"
        return f"{names} {verb} left {account}."
    if risk_type == "champion_inactive":
        p = e["contacts"][0]
        others = e.get("count", len(e["contacts"])) - 1
        more = f" (and {others} more key contact{'s' if others > 1 else ''})" if others > 0 else ""
        return (f"{p['name']} ({p['role']}) at {account} has not used the product for "
                f"{p['days_since_last_use']} days (usually every {p['usual_gap_days']}){more}, "
                "while colleagues stay active.")
    if risk_type == "usage_drop":
        if e["mode"] == "silent":
            gap = e["usual_gap_days"]
            return (f"{account} has had no product usage for {e['days_silent']} days "
                    f"(it is usually active every {gap} day{'s' if gap != 1 else ''}).")
        return (f"Usage at {account} fell to {round((e['ratio'] or 0) * 100)}% of its usual level "
                f"({e['uses_7d']:,} uses in the last 7 days vs about {e['usual_7d']:,.0f}).")
    if risk_type == "ticket_spike":
        urgent = f", {e['urgent_open']} urgent still open" if e["urgent_open"] else ""
        return (f"{account} opened {e['opened_7d']} support tickets in the last 7 days, against a usual "
                f"{e['usual_per_week']:.1f} per week{urgent}.")
    if risk_type == "sentiment_drop":
        if e["mode"] == "key_detractor":
            what = "an NPS score" if e["source"] == "nps" else f"a {e['source']} score"
            return f"{e['contact']} ({e['role']}) at {account} gave {what} of {e['score']} (detractor)."
        before = f" vs {e['earlier_mean']:+.2f} before" if e["earlier_mean"] is not None else ""
        return (f"Sentiment at {account} is trending negative: average {e['recent_mean']:+.2f} over the last "
                f"{e['recent_answers']} answers{before}.")
    if risk_type == "renewal_risk":
        return (f"{account} renews in {e['days_to_renewal']} days ({e['renewal_date']}) and its health is "
                f"{e['tier']} ({e['score']:.0f}).")
    if risk_type == "health_drop":
        factor = f", mostly {e['main_factor'].replace('_', ' ')}" if e.get("main_factor") else ""
        return (f"{account}'s health fell {e['drop']:.0f} points within {e['within_days']} days "
                f"({e['from']:.0f} to {e['to']:.0f}){factor}.")
    raise ValueError(f"unknown risk type {risk_type!r}")


def _iso(ts: int) -> str | None:
    if ts < 0:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _day_iso(day: int) -> str:
    return date.fromordinal(date(1970, 1, 1).toordinal() + day).isoformat()
