"""Churn-risk detectors: each judges one condition against the account's own history.

A detector returns a `Verdict` (severity, evidence, material key) while its condition holds, else None.
`current` is the material key of its open risk (None when not open), for hysteresis: a risk opens at a
stricter level than it resolves, so it does not flap. The material key decides when an open risk is
worth an "updated" transition: evidence numbers move all the time, the key moves only when the story
changes (and for counts, only upwards: a storm calming down is not news until it is over).
`summary` turns evidence into one sentence a CSM understands.

The rules (thresholds are `ScoringConfig` defaults; "complete days" are the days before the last clock
tick, see `signals.py`). Every rule is meant to stay quiet through an account's ordinary life: a week's
vacation, a sponsor who looks in now and then, a small team's uneven weeks, a chance cluster of tickets.
- champion_left (critical): a champion/sponsor whose status turned to "left" (someone first seen as
  "left" is an old departure and does not count), until a champion/sponsor is named active after it.
- champion_inactive (high): a champion (judged on their own usage; sponsors are executives, not daily
  users) who uses the product habitually (usual gap: p90 of the gaps between their active days, from
  >= 12 active days, at most 7 days) has been silent for >= max(3 x that gap, 12) complete days (an
  ordinary week off, last seen on a Friday and back on the Monday after next, is 9 silent days, 10 or
  11 with a day skipped on either side), while the account is otherwise active (uses in the last 7
  days, not silent, not low).
- usage_drop (high), judged from 28 days of usage history on: the usage level (`UsageSignal.level`:
  active user-days against their norm, or raw uses when the account sends no user ids) is below 50%
  over the last week for a team of 11+ people, below 40% over both the last week and the last two
  weeks for a smaller team (one person's week off halves a small team's week, not its fortnight); or
  the last week had usage on at most one day where there usually is on 4+; or there was no usage for
  >= max(3 x the account's usual gap, 10) complete days. It clears once the last week is back at 60%.
- ticket_spike (high): tickets opened in a window of 1, 2 or 3 days (today included) or of the last 7
  days reach 6, 4 x the usual weekly rate (opened per day over the up-to-7 earlier weeks, >= 14 days of
  history, floor 0.5/week), and P(X >= n | Poisson(the rate over the window, a working day carrying up
  to a fifth of a week)) < 1e-5; the bound is strict because every account is tested at every ticket.
  Clears below max(3, 2 x baseline) in the week.
- sentiment_drop: high for a detractor answer (NPS <= 6, CSAT <= 2, else value <= -0.5) that is the
  latest answer of a champion/sponsor within 60 days; medium when the last 30 days hold >= 3 answers,
  >= 3 of them negative, averaging < -0.1 and at least 0.4 below the answers 31-90 days old (>= 2).
- renewal_risk (high): renewal date within 0-90 days and tier yellow or red; clears at green + 5.
- health_drop (medium): score >= 20 points below the day maxima of the last 7 days (same components
  known, account older than 28 days); clears under a 15-point drop. It does not double-count an
  ordinary week off: the usage, breadth and key-contact components are built to shrug those off.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from shared.risks import RISK_TYPES as RISK_TYPES

from .config import ScoringConfig, TicketSpikeRule, UsageDropRule
from .health import Assessment
from .signals import KeyContact, Signals, TicketSignal, UsageSignal
from .stats import poisson_sf


@dataclass(frozen=True, slots=True)
class Verdict:
    severity: str
    evidence: dict[str, Any]
    material: list[Any]


class Context(NamedTuple):
    """What every detector may look at (a tuple: one is built for every evaluation)."""

    cfg: ScoringConfig
    sig: Signals
    score: float | None
    tier: str
    peak_score: float | None      # highest score within the health-drop window
    health: Assessment            # the health model's numbers now
    history_days: int             # days since the account's first event

    @property
    def main_factor(self) -> str | None:
        """The component costing the most points now."""
        return self.health.main_factor()


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
    account_active = u.known and u.recent > 0 and not u.silent and not usage_low(u, rule, False)
    if not account_active:
        return None
    # Champions only: a sponsor is an executive, not a daily user; who looks in now and then is
    # judged in the key-contacts component instead.
    quiet = [k for k in ctx.sig.contacts
             if k.role == "champion" and not k.left and k.threshold is not None
             and k.days_silent is not None and k.days_silent >= k.threshold]
    if not quiet:
        return None
    quiet.sort(key=lambda k: (-(k.days_silent or 0), k.contact_id))
    people = [{**_person(k), "days_since_last_use": k.days_silent, "usual_gap_days": k.usual_gap}
              for k in quiet[:MAX_LISTED]]
    return Verdict("high", {"contacts": people, "count": len(quiet), "account_uses_7d": u.recent},
                   sorted(k.contact_id for k in quiet))


def usage_low(u: UsageSignal, rule: UsageDropRule, is_open: bool) -> bool:
    """Usage well below the account's own norm (`UsageSignal.level`), with enough history to tell."""
    if u.level is None or u.week_level is None or u.norm is None:
        return False
    if is_open:  # hysteresis: a drop stays open until the last week is back near normal
        return u.week_level < rule.resolve_ratio
    return _judged_low(u, rule) is not None


def _judged_low(u: UsageSignal, rule: UsageDropRule) -> tuple[float, int] | None:
    """(level, days judged) when usage opens a drop: the team's level, or a near-silent last week."""
    if u.level is None or u.week_level is None or u.norm is None:
        return None
    if len(u.windows) < rule.min_norm_windows or u.norm < rule.min_norm:
        return None
    if u.user_days_norm is not None and u.user_days_norm < rule.min_norm_user_days:
        return None
    if u.level < (rule.small_team_ratio if u.small_team else rule.ratio):
        return u.level, rule.recent_days * (2 if u.level > u.week_level else 1)
    if u.active_days <= rule.quiet_week_days and (u.usual_active_days or 0) >= rule.quiet_week_usual_days:
        return u.week_level, rule.recent_days   # a near-silent week, whoever took it off
    return None


def lapsed(u: UsageSignal, cfg: ScoringConfig) -> bool:
    """The account's own rhythm says it has likely stopped (any account from its second active day)."""
    rule = cfg.lapse
    return (u.p_active is not None and u.p_active < rule.open_below and u.rhythm_silent_days is not None
            and u.rhythm_silent_days >= rule.min_silent_days)


def usage_drop(ctx: Context, current: list[Any] | None) -> Verdict | None:
    u = ctx.sig.usage
    rule = ctx.cfg.usage_drop
    if not u.known:
        return None
    if u.history_days < rule.min_history_days or not (usage_low(u, rule, current is not None) or u.silent):
        # Not enough history for a norm (an account's first weeks say nothing of it), or usage near its
        # norm: what is left to judge is whether the account's own rhythm says it has stopped.
        if not lapsed(u, ctx.cfg):
            return None
        lapsed_evidence: dict[str, Any] = {"mode": "lapsed", "p_active": round(u.p_active or 0.0, 2),
                    "days_silent": u.rhythm_silent_days,
                    "usual_gap_days": None if u.mean_gap is None else round(u.mean_gap, 1),
                    "visits": u.lifetime_active_days, "uses_7d": u.recent}
        return Verdict("high", lapsed_evidence, ["lapsed"])
    mode = "silent" if u.silent else "low"
    level, days = _judged_low(u, rule) or (u.week_level, rule.recent_days)
    evidence: dict[str, Any] = {
        "mode": mode, "level": None if level is None else round(level, 2), "judged_days": days,
        "measured_in": "active_user_days" if u.by_user_days else "uses",
        "uses_7d": u.recent, "usual_7d": None if u.norm is None else round(u.norm, 1),
        "ratio": None if u.ratio is None else round(u.ratio, 2),
        "active_user_days_7d": None if u.user_days is None else round(u.user_days),
        "usual_active_user_days_7d": None if u.user_days_norm is None else round(u.user_days_norm),
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
        holds = spike_window(t, rule, lam) is not None
    if not holds:
        return None
    evidence: dict[str, Any] = {"opened_7d": n, "usual_per_week": round(lam, 1), "open_tickets": t.open_count,
                                "urgent_open": t.urgent_open}
    burst = spike_window(t, rule, lam)
    if burst is not None and burst < rule.recent_days:
        evidence["burst"] = {"days": burst, "opened": t.opened_burst[burst - 1]}
    band = int(math.log2(max(n, 1)))
    return Verdict("high", evidence, [max(band, current[0]) if current else band])


def spike_window(t: TicketSignal, rule: TicketSpikeRule, weekly: float) -> int | None:
    """The shortest window (days) in which the opened tickets are a spike for this account, or None.

    A window of k days is expected to carry `weekly * min(1, k / 5)` tickets (tickets come on working
    days); the count must reach `min_count` and `factor` times the whole usual week, and be that unlikely.
    """
    windows = [(k, n) for k, n in enumerate(t.opened_burst, start=1) if k < rule.recent_days]
    windows.append((rule.recent_days, t.opened_recent))
    for days, n in windows:
        if n < rule.min_count or n < rule.factor * weekly:
            continue
        if poisson_sf(n, weekly * min(1.0, days / 5.0)) < rule.max_probability:
            return days
    return None


def sentiment_drop(ctx: Context, current: list[Any] | None) -> Verdict | None:
    s = ctx.sig.sentiment
    rule = ctx.cfg.sentiment
    if s.key_detractor is not None:
        d = s.key_detractor
        evidence = {"mode": "key_detractor", "contact_id": d["contact_id"], "contact": d["contact"],
                    "role": d["role"], "source": d["source"], "score": d["score"],
                    "answered_at": _iso(d["answered_at"])}
        return Verdict("high", evidence, ["key_detractor", d["contact_id"]])
    if s.recent_mean is None or s.recent_count < rule.trend_min_samples \
            or s.recent_negative < rule.trend_min_negative:
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
    u = ctx.sig.usage
    if u.known and u.history_days < rule.min_history_days:
        return None  # the usage components are still building their baselines
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
    if e.get("reason") == "account churned":   # resolved because the account churned (see the engine)
        kind = risk_type.replace("_", " ")
        return f"{kind[:1].upper()}{kind[1:]} on {account}: closed, the account churned."
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
        if e["mode"] == "lapsed":
            gap = e["usual_gap_days"]
            every = f"every {gap:.0f} days" if gap is not None and gap >= 1.5 else "daily"
            return (f"{account} looks lapsed: no activity for {e['days_silent']} days, where it was active about "
                    f"{every} ({e['visits']} visits); the chance it is still active is "
                    f"{round(e['p_active'] * 100)}%.")
        if e["mode"] == "silent":
            gap = e["usual_gap_days"]
            return (f"{account} has had no product usage for {e['days_silent']} days "
                    f"(it is usually active every {gap} day{'s' if gap != 1 else ''}).")
        people = ""
        if e.get("active_user_days_7d") is not None and e.get("usual_active_user_days_7d"):
            people = (f", {e['active_user_days_7d']:,} active user-days vs about "
                      f"{e['usual_active_user_days_7d']:,}")
        level = e.get("level", e["ratio"]) or 0
        span = " and has stayed low for two weeks" if e.get("judged_days", 7) > 7 else ""
        return (f"Usage at {account} fell to {round(level * 100)}% of its usual level{span} "
                f"({e['uses_7d']:,} uses in the last 7 days vs about {e['usual_7d']:,.0f}{people}).")
    if risk_type == "ticket_spike":
        urgent = f", {e['urgent_open']} urgent still open" if e["urgent_open"] else ""
        burst = ""
        if e.get("burst"):
            days = e["burst"]["days"]
            burst = f" ({e['burst']['opened']} of them within {'a day' if days == 1 else f'{days} days'})"
        return (f"{account} opened {e['opened_7d']} support tickets in the last 7 days{burst}, against a "
                f"usual {e['usual_per_week']:.1f} per week{urgent}.")
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
