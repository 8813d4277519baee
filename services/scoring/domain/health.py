"""The health model: ten components, each scored 0-100 with a one-line reason, weighted into a score.

A component whose configured weight is 0 is not computed (it is unknown, "not weighed"): the shipped
defaults weigh what the backtests on public data found to predict churn (see `config.py`).

A component without the data to judge it is unknown (score None) and the others are re-weighted; it is
never silently counted as neutral. No component known at all gives score None, tier "unknown".

`assess` computes the numbers; the reasons are written only when a snapshot is shown or kept
(`Assessment.components()`): most evaluations change nothing worth a history row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date
from typing import NamedTuple

from .config import COMPONENTS, ScoringConfig
from .model import Component
from .signals import KeyContact, Signals, contact_label
from .stats import clamp

Explain = Callable[[], tuple[str, str]]   # (reason, label) of a component, written when needed
Part = tuple[float | None, Explain]       # a component's score (None: unknown) and its explanation


class Assessment(NamedTuple):
    """The health model's numbers at one moment, per component in COMPONENTS order (None: unknown).

    The components themselves (rounded, with their reasons) are built on demand: most evaluations
    change nothing worth a history row, and rounding to digits and writing reasons is what costs.
    """

    score: float | None
    values: tuple[float | None, ...]
    weights: tuple[float, ...]         # effective weights (0 when unknown), not rounded
    contributions: tuple[float, ...]   # weight * value, not rounded
    configured: tuple[float, ...]
    explain: tuple[Explain, ...]
    known_mask: int                    # bit i set when component i is known

    def components(self) -> list[Component]:
        out = []
        for i, name in enumerate(COMPONENTS):
            reason, label = self.explain[i]()
            value = self.values[i]
            if value is None:
                out.append(Component(name, None, 0.0, 0.0, reason, self.configured[i], label))
            else:
                out.append(Component(name, round(value, 1), round(self.weights[i], 4),
                                     round(self.contributions[i], 2), reason, self.configured[i], label))
        return out

    def main_factor(self) -> str | None:
        """The known component costing the most points (as its `Component` shows them), None when none
        costs any."""
        worst: int | None = None
        worst_key: tuple[float, str] | None = None
        for i, value in enumerate(self.values):
            if value is None:
                continue
            key = (round(self.contributions[i], 2) - round(self.weights[i], 4) * 100.0, COMPONENTS[i])
            if worst_key is None or key < worst_key:
                worst, worst_key = i, key
        if worst is None:
            return None
        return COMPONENTS[worst] if round(self.values[worst] or 0.0, 1) < 100 else None


def compute(sig: Signals, cfg: ScoringConfig) -> tuple[list[Component], float | None]:
    """The components (in COMPONENTS order) and the total score (None when nothing is known)."""
    assessment = assess(sig, cfg)
    return assessment.components(), assessment.score


def assess(sig: Signals, cfg: ScoringConfig) -> Assessment:
    configured = cfg.component_weights
    parts = [_usage_trend(sig), _breadth(sig), _support_load(sig), _sentiment(sig), _key_contacts(sig)]
    parts.append(_renewal(sig, cfg, _weighted(parts, configured)))
    for weight, part in zip(configured[6:], _LATER, strict=True):
        parts.append(part(sig, cfg) if weight > 0 else _NOT_WEIGHED)
    values = tuple([value for value, _ in parts])
    explain = tuple([explained for _, explained in parts])
    total_weight = sum([w for value, w in zip(values, configured, strict=True) if value is not None])
    if total_weight <= 0:   # nothing known (or only what weighs nothing): no score
        return Assessment(None, _UNKNOWN, _ZEROS, _ZEROS, configured, explain, 0)
    weights = tuple([0.0 if value is None else w / total_weight for value, w in zip(values, configured, strict=True)])
    contributions = tuple([0.0 if value is None else weight * value
                           for value, weight in zip(values, weights, strict=True)])
    acc = 0.0
    known = 0
    for i, value in enumerate(values):
        if value is not None:
            acc += contributions[i]
            known |= 1 << i
    return Assessment(round(acc, 1), values, weights, contributions, configured, explain, known)


_UNKNOWN: tuple[float | None, ...] = (None,) * len(COMPONENTS)
_ZEROS = (0.0,) * len(COMPONENTS)


def _weighted(parts: list[Part], configured: tuple[float, ...]) -> float | None:
    tot = acc = 0.0
    for (value, _), w in zip(parts, configured, strict=False):
        if value is not None:
            tot += w
            acc += w * value
    return acc / tot if tot > 0 else None


def _fixed(reason: str, label: str) -> Explain:
    return lambda: (reason, label)


def _pct(x: float) -> str:
    return f"{round(x * 100):d}%"


_AWAITING_USAGE = _fixed("awaiting the first daily usage evaluation", "usage unknown")
_NO_USAGE_YET = _fixed("no product usage seen yet", "usage unknown")
_NO_USAGE = _fixed("no product usage in the last 5 weeks", "no usage")


# An account visiting less than about weekly has no weekly level to compare: its usage is judged by the
# chance that it is still active, from its own rhythm (see `stats.p_active`).
SPARSE_GAP_DAYS = 7.0


def _usage_trend(sig: Signals) -> Part:
    u = sig.usage
    if not u.known:
        return None, _AWAITING_USAGE if sig.eval_day < 0 else _NO_USAGE_YET
    if u.p_active is not None and u.mean_gap is not None and u.mean_gap >= SPARSE_GAP_DAYS:
        p, gap = u.p_active, u.mean_gap
        return 100.0 * p, lambda: (f"sparse usage, usually every {gap:.0f} days: last active "
                                   f"{u.rhythm_silent_days} days ago, {_pct(p)} chance it is still active "
                                   f"({u.lifetime_active_days} visits)", f"{_pct(p)} chance still active")
    if u.silent:
        return 0.0, lambda: (f"no product usage for {u.days_silent} days (usually active every {u.usual_gap} "
                             f"day{'s' if u.usual_gap != 1 else ''})", f"usage silent for {u.days_silent} days")
    if len(u.windows) < 2 or u.norm is None:
        return None, lambda: (f"not enough usage history yet ({u.history_days} days)", "usage unknown")
    if u.norm <= 0:
        if u.recent > 0:
            return 100.0, lambda: (f"{u.recent:,} uses in 7 days after a quiet month", "usage resumed")
        return 0.0, _NO_USAGE
    level = u.level if u.level is not None else (u.ratio or 0.0)

    def explain() -> tuple[str, str]:
        parts = [f"{u.recent:,} uses in the last 7 days ({_pct(u.ratio or 0.0)} of its usual {u.norm:,.0f})"]
        if u.user_days is not None and u.user_days_norm:
            parts.append(f"~{u.user_days:,.0f} active user-days (usually ~{u.user_days_norm:,.0f})")
        reason = ", ".join(parts)
        if u.week_level is not None and level > u.week_level:
            reason += f"; {_pct(level)} of normal over two weeks"
        return reason, f"usage at {_pct(level)} of norm"

    return clamp(100.0 * level / 0.8), explain


_BREADTH_UNKNOWN = _fixed("not enough usage history to judge breadth of use", "breadth unknown")


_BREADTH_SPARSE = _fixed("usage too sparse for a weekly breadth of use", "breadth unknown")


def _breadth(sig: Signals) -> Part:
    b = sig.breadth
    if not b.known:
        return None, _BREADTH_UNKNOWN
    if sig.usage.mean_gap is not None and sig.usage.mean_gap >= SPARSE_GAP_DAYS:
        return None, _BREADTH_SPARSE
    ratio = b.ratio or 0.0

    def explain() -> tuple[str, str]:
        parts = []
        if b.users_recent is not None:
            parts.append(f"~{b.users_recent:.0f} users")
        parts.append(f"~{b.features_recent:.0f} features")
        usual = []
        if b.users_norm is not None:
            usual.append(f"~{b.users_norm:.0f}")
        usual.append(f"~{b.features_norm or 0:.0f}")
        return (f"{' and '.join(parts)} active in 7 days (usually {' and '.join(usual)})",
                f"breadth at {_pct(ratio)} of norm")

    return clamp(100.0 * (ratio - 0.3) / 0.5), explain


_NO_TICKETS = _fixed("no support tickets seen", "support unknown")


def _support_load(sig: Signals) -> Part:
    t = sig.tickets
    if not t.known:
        return None, _NO_TICKETS
    base = t.baseline if t.baseline is not None else 1.0
    penalty_open = min(60.0, 15.0 * t.urgent_open + 5.0 * t.high_open)
    penalty_backlog = min(30.0, 5.0 * max(0.0, t.open_count - max(2.0, base)))
    excess = max(0.0, t.opened_recent - max(2.0, 2.0 * base))
    penalty_recent = min(60.0, 8.0 * excess)

    def explain() -> tuple[str, str]:
        usual = f"usual {t.baseline:.1f}/week" if t.baseline is not None else "no baseline yet"
        detail = []
        if t.urgent_open:
            detail.append(f"{t.urgent_open} urgent")
        if t.high_open:
            detail.append(f"{t.high_open} high")
        open_part = f"{t.open_count} open ticket{'s' if t.open_count != 1 else ''}"
        if detail:
            open_part += f" ({', '.join(detail)})"
        reason = f"{open_part}; {t.opened_recent} opened in 7 days ({usual})"
        if excess > 0 and t.opened_recent >= 5:
            label = f"ticket spike ({t.opened_recent} opened in 7 days)"
        elif t.urgent_open:
            label = f"{t.urgent_open} urgent ticket{'s' if t.urgent_open != 1 else ''} open"
        else:
            label = open_part
        return reason, label

    return clamp(100.0 - penalty_open - penalty_backlog - penalty_recent), explain


_NO_SENTIMENT = _fixed("no sentiment in the last 90 days", "sentiment unknown")


def _sentiment(sig: Signals) -> Part:
    s = sig.sentiment
    mean = s.mean
    if mean is None:
        return None, _NO_SENTIMENT

    def explain() -> tuple[str, str]:
        det = f", {s.detractors} detractor{'s' if s.detractors != 1 else ''}" if s.detractors else ""
        answers = f"{s.count} answer{'s' if s.count != 1 else ''}"
        return f"average {mean:+.2f} over {answers} in 90 days{det}", f"sentiment {mean:+.2f}"

    return clamp(50.0 + 50.0 * mean), explain


def _contact_score(k: KeyContact) -> float | None:
    if k.left:
        return 0.0 if k.departed_unreplaced else None
    if not k.has_usage or k.usual_gap is None or k.threshold is None or k.days_silent is None:
        return None
    # Full marks through an ordinary week off, then down to nothing a week after the silence counts as
    # stopped (`threshold`, where champion_inactive opens): a late return costs a little, not everything.
    soft = max(2.0 * k.usual_gap, k.threshold - 3.0)
    zero = k.threshold + 7.0
    if k.days_silent <= soft:
        return 100.0
    if k.days_silent >= zero:
        return 0.0
    return 100.0 * (zero - k.days_silent) / (zero - soft)


_NO_KEY_CONTACTS = _fixed("no champion or sponsor known", "key contacts unknown")
_NO_KEY_USAGE = _fixed("no usage linked to the champions or sponsors yet", "key contacts unknown")


def _key_contacts(sig: Signals) -> Part:
    if not sig.contacts:
        return None, _NO_KEY_CONTACTS
    scored = [(s, k) for k in sig.contacts if (s := _contact_score(k)) is not None]
    if not scored:
        return None, _NO_KEY_USAGE

    def explain() -> tuple[str, str]:
        worst_score, worst = min(scored, key=lambda sk: (sk[0], sk[1].contact_id))
        if worst.left:
            return f"{contact_label(worst)} has left", f"{contact_label(worst)} left"
        if worst_score < 100.0:
            return (f"{contact_label(worst)} last used the product {worst.days_silent} days ago "
                    f"(usually every {worst.usual_gap})", f"{contact_label(worst)} inactive")
        freshest = min(k.days_silent for _, k in scored if k.days_silent is not None)
        n = len(scored)
        return (f"{n} key contact{'s' if n != 1 else ''} active (latest use {freshest} "
                f"day{'s' if freshest != 1 else ''} ago)", "key contacts active")

    return sum(s for s, _ in scored) / len(scored), explain


_NO_RENEWAL = _fixed("no renewal date known", "renewal unknown")
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def _renewal(sig: Signals, cfg: ScoringConfig, base: float | None) -> Part:
    days = sig.renewal_days
    if days is None:
        return None, _NO_RENEWAL
    when = sig.at_day + days   # the renewal day

    def iso() -> str:
        return date.fromordinal(_EPOCH_ORDINAL + when).isoformat()

    if days < 0:
        return None, lambda: (f"renewal date {iso()} has passed", "renewal unknown")
    if base is None:
        return None, lambda: (f"renews in {days} days ({iso()}); nothing else known yet", "renewal unknown")
    rule = cfg.renewal
    span = max(1, rule.proximity_start_days - rule.proximity_full_days)
    proximity = clamp((rule.proximity_start_days - days) / span, 0.0, 1.0)
    score = clamp(100.0 - proximity * rule.amplify * (100.0 - base))
    return score, lambda: (f"renews in {days} days ({iso()}); health without renewal {base:.0f}",
                           f"renewal in {days} days")


_NOT_WEIGHED: Part = (None, _fixed("not weighed in this configuration (weight 0)", "not weighed"))


def _activity(sig: Signals, cfg: ScoringConfig) -> Part:
    u = sig.usage
    p = u.p_active
    if p is None or u.mean_gap is None:
        return None, _fixed("fewer than two visits: no rhythm to judge yet", "activity unknown")

    def explain() -> tuple[str, str]:
        gap = u.mean_gap or 0.0
        every = f"every {gap:.0f} day{'s' if round(gap) != 1 else ''}" if gap >= 1.5 else "daily"
        return (f"{_pct(p)} chance it is still active: last active {u.rhythm_silent_days} days ago, usually "
                f"{every} ({u.lifetime_active_days} visits)", f"{_pct(p)} chance still active")

    return 100.0 * p, explain


def _sigmoid(z: float) -> float:
    if z < -50:
        return 0.0
    return 1.0 / (1.0 + math.exp(-z))


def _intensity(sig: Signals, cfg: ScoringConfig) -> Part:
    rule = cfg.intensity
    u = sig.usage
    if rule.typical <= 0:
        return None, _fixed("intensity not calibrated (no typical level configured)", "intensity unknown")
    if u.intensity is None:
        return None, _fixed(f"no usage in the last {rule.window_days} days", "intensity unknown")
    value = u.intensity
    per = "active user-day" if u.intensity_by_users else "active day"

    def explain() -> tuple[str, str]:
        return (f"{value:.1f} uses per {per} over {rule.window_days} days (typical {rule.typical:.1f})",
                f"intensity {value / rule.typical:.0%} of typical")

    return 100.0 * _sigmoid(rule.slope * math.log(max(value, 1e-6) / rule.typical)), explain


def _key_features(sig: Signals, cfg: ScoringConfig) -> Part:
    kf = sig.key_features
    rule = cfg.key_features
    if kf is None:
        return None, _fixed("no key features configured", "key features unknown")
    terms = [(name, n, weight * (math.log1p(n) - math.log1p(typical)))
             for (name, n), (_, weight, typical) in zip(kf.uses, rule.features, strict=True)]
    z = rule.offset + sum(t for _, _, t in terms)

    def explain() -> tuple[str, str]:
        ranked = sorted(terms, key=lambda t: (t[2], t[0]))
        worst, best = ranked[0], ranked[-1]
        parts = []
        if worst[2] < 0:
            parts.append(f"{worst[0]} {worst[1]:,}x in {kf.window_days} days weighs against")
        if best[2] > 0:
            parts.append(f"{best[0]} {best[1]:,}x weighs for")
        reason = "; ".join(parts) or f"key features at their typical use over {kf.window_days} days"
        return reason, (f"key features: {worst[0]} {worst[1]:,}x" if worst[2] < 0 else "key features typical")

    return 100.0 * _sigmoid(z), explain


def _tenure(sig: Signals, cfg: ScoringConfig) -> Part:
    days = sig.tenure_days
    if days is None:
        return None, _fixed("no complete day seen yet", "tenure unknown")
    return clamp(100.0 * days / cfg.tenure.full_days), lambda: (f"customer for {days} days", f"tenure {days} days")


_LATER: tuple[Callable[[Signals, ScoringConfig], Part], ...] = (_activity, _intensity, _key_features, _tenure)
