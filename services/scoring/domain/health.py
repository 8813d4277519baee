"""The health model: six components, each scored 0-100 with a one-line reason, weighted into a score.

A component without the data to judge it is unknown (score None) and the others are re-weighted; it is
never silently counted as neutral. No component known at all gives score None, tier "unknown".
"""

from __future__ import annotations

from datetime import date

from .config import COMPONENTS, ScoringConfig
from .model import Component
from .signals import KeyContact, Signals, contact_label
from .stats import clamp


def compute(sig: Signals, cfg: ScoringConfig) -> tuple[list[Component], float | None]:
    """The components (in COMPONENTS order) and the total score (None when nothing is known)."""
    raw: dict[str, tuple[float | None, str, str]] = {
        "usage_trend": _usage_trend(sig),
        "breadth": _breadth(sig),
        "support_load": _support_load(sig),
        "sentiment": _sentiment(sig),
        "key_contacts": _key_contacts(sig),
    }
    base = _weighted(raw, cfg)
    raw["renewal"] = _renewal(sig, cfg, base)
    total_weight = sum(cfg.weights.of(n) for n in COMPONENTS if raw[n][0] is not None)
    components = []
    score: float | None = None
    acc = 0.0
    for name in COMPONENTS:
        value, reason, label = raw[name]
        configured = cfg.weights.of(name)
        if value is None or total_weight <= 0:
            components.append(Component(name, None, 0.0, 0.0, reason, configured, label))
            continue
        weight = configured / total_weight
        contribution = weight * value
        acc += contribution
        components.append(Component(name, round(value, 1), round(weight, 4), round(contribution, 2), reason,
                                    configured, label))
    if total_weight > 0 and any(c.score is not None for c in components):
        score = round(acc, 1)
    return components, score


def _weighted(raw: dict[str, tuple[float | None, str, str]], cfg: ScoringConfig) -> float | None:
    tot = acc = 0.0
    for name, (value, _, _) in raw.items():
        if value is not None:
            w = cfg.weights.of(name)
            tot += w
            acc += w * value
    return acc / tot if tot > 0 else None


def _pct(x: float) -> str:
    return f"{round(x * 100):d}%"


def _usage_trend(sig: Signals) -> tuple[float | None, str, str]:
    u = sig.usage
    if not u.known:
        if sig.eval_day < 0:
            return None, "awaiting the first daily usage evaluation", "usage unknown"
        return None, "no product usage seen yet", "usage unknown"
    if u.silent:
        return (0.0, f"no product usage for {u.days_silent} days (usually active every {u.usual_gap} "
                f"day{'s' if u.usual_gap != 1 else ''})", f"usage silent for {u.days_silent} days")
    if len(u.windows) < 2 or u.norm is None:
        return None, f"not enough usage history yet ({u.history_days} days)", "usage unknown"
    if u.norm <= 0:
        if u.recent > 0:
            return 100.0, f"{u.recent:,} uses in 7 days after a quiet month", "usage resumed"
        return 0.0, "no product usage in the last 5 weeks", "no usage"
    level = u.level if u.level is not None else (u.ratio or 0.0)
    score = clamp(100.0 * level / 0.8)
    parts = [f"{u.recent:,} uses in the last 7 days ({_pct(u.ratio or 0.0)} of its usual {u.norm:,.0f})"]
    if u.user_days is not None and u.user_days_norm:
        parts.append(f"~{u.user_days:,.0f} active user-days (usually ~{u.user_days_norm:,.0f})")
    reason = ", ".join(parts)
    if u.week_level is not None and level > u.week_level:
        reason += f"; {_pct(level)} of normal over two weeks"
    return score, reason, f"usage at {_pct(level)} of norm"


def _breadth(sig: Signals) -> tuple[float | None, str, str]:
    b = sig.breadth
    if not b.known:
        return None, "not enough usage history to judge breadth of use", "breadth unknown"
    ratio = b.ratio or 0.0
    score = clamp(100.0 * (ratio - 0.3) / 0.5)
    parts = []
    if b.users_recent is not None:
        parts.append(f"~{b.users_recent:.0f} users")
    parts.append(f"~{b.features_recent:.0f} features")
    usual = []
    if b.users_norm is not None:
        usual.append(f"~{b.users_norm:.0f}")
    usual.append(f"~{b.features_norm or 0:.0f}")
    return (score, f"{' and '.join(parts)} active in 7 days (usually {' and '.join(usual)})",
            f"breadth at {_pct(ratio)} of norm")


def _support_load(sig: Signals) -> tuple[float | None, str, str]:
    t = sig.tickets
    if not t.known:
        return None, "no support tickets seen", "support unknown"
    base = t.baseline if t.baseline is not None else 1.0
    penalty_open = min(60.0, 15.0 * t.urgent_open + 5.0 * t.high_open)
    penalty_backlog = min(30.0, 5.0 * max(0.0, t.open_count - max(2.0, base)))
    excess = max(0.0, t.opened_recent - max(2.0, 2.0 * base))
    penalty_recent = min(60.0, 8.0 * excess)
    score = clamp(100.0 - penalty_open - penalty_backlog - penalty_recent)
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
    return score, reason, label


def _sentiment(sig: Signals) -> tuple[float | None, str, str]:
    s = sig.sentiment
    if s.mean is None:
        return None, "no sentiment in the last 90 days", "sentiment unknown"
    score = clamp(50.0 + 50.0 * s.mean)
    det = f", {s.detractors} detractor{'s' if s.detractors != 1 else ''}" if s.detractors else ""
    answers = f"{s.count} answer{'s' if s.count != 1 else ''}"
    return (score, f"average {s.mean:+.2f} over {answers} in 90 days{det}", f"sentiment {s.mean:+.2f}")


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


def _key_contacts(sig: Signals) -> tuple[float | None, str, str]:
    if not sig.contacts:
        return None, "no champion or sponsor known", "key contacts unknown"
    scored = [(s, k) for k in sig.contacts if (s := _contact_score(k)) is not None]
    if not scored:
        return None, "no usage linked to the champions or sponsors yet", "key contacts unknown"
    score = sum(s for s, _ in scored) / len(scored)
    worst_score, worst = min(scored, key=lambda sk: (sk[0], sk[1].contact_id))
    if worst.left:
        return score, f"{contact_label(worst)} has left", f"{contact_label(worst)} left"
    if worst_score < 100.0:
        return (score, f"{contact_label(worst)} last used the product {worst.days_silent} days ago "
                f"(usually every {worst.usual_gap})", f"{contact_label(worst)} inactive")
    freshest = min(k.days_silent for _, k in scored if k.days_silent is not None)
    n = len(scored)
    return (score, f"{n} key contact{'s' if n != 1 else ''} active (latest use {freshest} "
            f"day{'s' if freshest != 1 else ''} ago)", "key contacts active")


def _renewal(sig: Signals, cfg: ScoringConfig, base: float | None) -> tuple[float | None, str, str]:
    days = sig.renewal_days
    if days is None:
        return None, "no renewal date known", "renewal unknown"
    when = date.fromordinal(date(1970, 1, 1).toordinal() + sig.at_day + days).isoformat()
    if days < 0:
        return None, f"renewal date {when} has passed", "renewal unknown"
    if base is None:
        return None, f"renews in {days} days ({when}); nothing else known yet", "renewal unknown"
    rule = cfg.renewal
    span = max(1, rule.proximity_start_days - rule.proximity_full_days)
    proximity = clamp((rule.proximity_start_days - days) / span, 0.0, 1.0)
    score = clamp(100.0 - proximity * rule.amplify * (100.0 - base))
    return (score, f"renews in {days} days ({when}); health without renewal {base:.0f}",
            f"renewal in {days} days")
