"""Measurements of one account at one moment, read from its state (no mutation).

Two reference days:
- `eval_day` (D): the day of the last clock evaluation. Usage, breadth and key-contact recency are
  judged on complete days before D, so that events arriving late (within the allowed lateness) are always
  in before those days are judged, and every event between two clock ticks sees the same numbers.
- `at_day` (A): the day of the moment evaluated. Tickets, sentiment, contacts and the renewal date count
  up to that moment, so the risks they raise are immediate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import ScoringConfig
from .state import (
    BREADTH_DAYS,
    C_FIRST,
    C_LEFT,
    C_NAME,
    C_ROLE,
    C_SINCE,
    C_STATUS,
    C_USER,
    FEATURE_BITS,
    K_GAP,
    K_MASK,
    NONE,
    ROLES,
    S_CONTACT,
    S_NORM,
    S_RAW,
    S_SOURCE,
    S_TS,
    SOURCES,
    USAGE_DAYS,
    USER_BITS,
    AccountState,
    stable_hash,
)
from .stats import distinct_estimate, median, usual_gap


def refresh_usual_gaps(st: AccountState, cfg: ScoringConfig) -> None:
    """Re-measure the account's and the key contacts' usual gaps on complete days (at the clock tick).

    A gap is kept from before when there are too few active days left to measure it (long silences).
    """
    d = st.eval_day
    if d == NONE:
        return
    gap = usual_gap(st.active_days(st.usage, d), cfg.usage_drop.min_active_days)
    if gap is not None:
        st.usual_gap = gap
    for rec in st.key_users.values():
        gap = usual_gap(st.mask_days(rec[K_MASK], d), cfg.champion_inactive.min_active_days)
        if gap is not None:
            rec[K_GAP] = gap

DAY = 86_400


@dataclass(slots=True)
class UsageSignal:
    known: bool = False              # any usage on a complete day
    history_days: int = 0
    recent: int = 0                  # uses in the last `recent_days` complete days
    windows: list[int] = field(default_factory=list)  # earlier windows, most recent first
    norm: float | None = None
    ratio: float | None = None
    last_active_day: int | None = None
    days_silent: int | None = None   # complete days without usage since the last active day
    usual_gap: int | None = None     # days between active days (p90), as of the last clock tick
    silence_threshold: float | None = None
    silent: bool = False


@dataclass(slots=True)
class BreadthSignal:
    known: bool = False
    users_recent: float | None = None
    users_norm: float | None = None
    features_recent: float = 0.0
    features_norm: float | None = None
    ratio: float | None = None


@dataclass(slots=True)
class TicketSignal:
    known: bool = False
    opened_recent: int = 0
    baseline: float | None = None    # opened per week, None while history is short
    open_count: int = 0
    urgent_open: int = 0
    high_open: int = 0


@dataclass(slots=True)
class SentimentSignal:
    count: int = 0
    mean: float | None = None        # weighted: detractors and key contacts weigh double
    detractors: int = 0
    recent_mean: float | None = None
    recent_count: int = 0
    earlier_mean: float | None = None
    earlier_count: int = 0
    key_detractor: dict[str, Any] | None = None


@dataclass(slots=True)
class KeyContact:
    contact_id: str
    name: str
    role: str
    left: bool
    departed_unreplaced: bool = False
    left_ts: int = NONE
    has_usage: bool = False
    days_silent: int | None = None
    usual_gap: int | None = None
    threshold: float | None = None


@dataclass(slots=True)
class Signals:
    eval_day: int
    at_day: int
    usage: UsageSignal
    breadth: BreadthSignal
    tickets: TicketSignal
    sentiment: SentimentSignal
    contacts: list[KeyContact]
    renewal_days: int | None


def measure(state: AccountState, cfg: ScoringConfig, at_day: int) -> Signals:
    d = state.eval_day
    return Signals(
        eval_day=d, at_day=at_day,
        usage=_usage(state, cfg, d),
        breadth=_breadth(state, d),
        tickets=_tickets(state, cfg, at_day),
        sentiment=_sentiment(state, cfg, at_day),
        contacts=_key_contacts(state, cfg, d),
        renewal_days=None if state.renewal_day is None else state.renewal_day - at_day,
    )


def contact_label(k: KeyContact) -> str:
    return f"{k.name} ({k.role})"


def _usage(st: AccountState, cfg: ScoringConfig, d: int) -> UsageSignal:
    out = UsageSignal()
    if d == NONE or st.first_usage_day == NONE or st.first_usage_day >= d:
        return out
    rule = cfg.usage_drop
    n = rule.recent_days
    out.known = True
    out.history_days = d - st.first_usage_day
    out.recent = st.window_sum(st.usage, d - n, d - 1)
    oldest_kept = st.end_day - USAGE_DAYS + 1
    for j in range(1, rule.norm_windows + 1):
        first = d - n * (j + 1)
        if first < st.first_usage_day or first < oldest_kept:
            break
        out.windows.append(st.window_sum(st.usage, first, d - n * j - 1))
    if out.windows:
        out.norm = median(out.windows)
        if out.norm > 0:
            out.ratio = out.recent / out.norm
    out.last_active_day = st.last_active_day(d)
    out.days_silent = d - 1 - out.last_active_day
    out.usual_gap = st.usual_gap or None
    if out.usual_gap is not None:
        out.silence_threshold = max(rule.gap_factor * out.usual_gap, float(rule.min_silent_days))
        out.silent = out.days_silent >= out.silence_threshold
    return out


def _breadth(st: AccountState, d: int) -> BreadthSignal:
    out = BreadthSignal()
    if d == NONE or st.first_usage_day == NONE or st.first_usage_day >= d:
        return out
    oldest_kept = st.end_day - BREADTH_DAYS + 1
    users: list[float] = []
    features: list[float] = []
    any_users = False
    for j in range(0, 4):
        first, last = d - 7 * (j + 1), d - 7 * j - 1
        if j > 0 and (first < st.first_usage_day or first < oldest_kept):
            break
        u = st.window_or(st.users, first, last)
        any_users = any_users or bool(u)
        users.append(distinct_estimate(u, USER_BITS))
        features.append(distinct_estimate(st.window_or(st.features, first, last), FEATURE_BITS))
    if len(users) < 3:  # the recent week and at least two earlier ones
        return out
    out.known = True
    ratios = []
    out.features_recent = features[0]
    out.features_norm = median(features[1:])
    if out.features_norm > 0:
        ratios.append(out.features_recent / out.features_norm)
    if any_users:
        out.users_recent = users[0]
        out.users_norm = median(users[1:])
        if out.users_norm > 0:
            ratios.append(out.users_recent / out.users_norm)
    out.ratio = sum(ratios) / len(ratios) if ratios else 0.0
    return out


def _tickets(st: AccountState, cfg: ScoringConfig, a: int) -> TicketSignal:
    out = TicketSignal()
    if st.first_ticket_day == NONE or st.first_ticket_day > a:
        return out
    rule = cfg.ticket_spike
    out.known = True
    out.opened_recent = st.window_sum(st.tickets_opened, a - rule.recent_days + 1, a)
    lo = max(st.end_day - len(st.tickets_opened) + 1, st.first_day)
    hi = a - rule.recent_days
    if hi - lo + 1 >= 14:
        out.baseline = st.window_sum(st.tickets_opened, lo, hi) / (hi - lo + 1) * 7.0
    fresh_after = a - rule.stale_open_days
    for prio, touched in st.open_tickets.values():
        if touched > fresh_after:
            out.open_count += 1
            if prio == 3:
                out.urgent_open += 1
            elif prio == 2:
                out.high_open += 1
    return out


def is_detractor(cfg: ScoringConfig, source: int, raw_x10: int, norm_milli: int) -> bool:
    rule = cfg.sentiment
    if raw_x10 >= 0 and SOURCES[source] == "nps":
        return raw_x10 <= rule.nps_detractor_max * 10
    if raw_x10 >= 0 and SOURCES[source] == "csat":
        return raw_x10 <= rule.csat_detractor_max * 10
    return norm_milli <= rule.detractor_normalized_max * 1000


def _sentiment(st: AccountState, cfg: ScoringConfig, a: int) -> SentimentSignal:
    out = SentimentSignal()
    rule = cfg.sentiment
    end = (a + 1) * DAY
    start = (a - rule.window_days + 1) * DAY
    recent_start = (a - rule.trend_days + 1) * DAY
    key = {stable_hash(cid): (cid, c) for cid, c in st.key_contacts()}
    wsum = wtot = 0.0
    rsum = esum = 0.0
    latest_by_key: dict[int, list[int]] = {}
    for s in st.sentiments:
        if not start <= s[S_TS] < end:
            continue
        norm = s[S_NORM] / 1000.0
        det = is_detractor(cfg, s[S_SOURCE], s[S_RAW], s[S_NORM])
        weight = (2.0 if det else 1.0) * (2.0 if s[S_CONTACT] in key else 1.0)
        wsum += weight * norm
        wtot += weight
        out.count += 1
        out.detractors += det
        if s[S_TS] >= recent_start:
            rsum += norm
            out.recent_count += 1
        else:
            esum += norm
            out.earlier_count += 1
        if s[S_CONTACT] in key and s[S_TS] >= (a - rule.key_window_days + 1) * DAY:
            latest_by_key[s[S_CONTACT]] = s  # samples are kept in time order: the last one wins
    if out.count:
        out.mean = wsum / wtot
    if out.recent_count:
        out.recent_mean = rsum / out.recent_count
    if out.earlier_count:
        out.earlier_mean = esum / out.earlier_count
    worst: list[int] | None = None
    for h, s in latest_by_key.items():
        if is_detractor(cfg, s[S_SOURCE], s[S_RAW], s[S_NORM]) and (
                worst is None or (s[S_TS], h) > (worst[S_TS], worst[S_CONTACT])):
            worst = s
    if worst is not None:
        cid, c = key[worst[S_CONTACT]]
        src = SOURCES[worst[S_SOURCE]]
        out.key_detractor = {
            "contact_id": cid, "contact": c[C_NAME] or cid, "role": ROLES[c[C_ROLE]], "source": src,
            "score": (worst[S_RAW] / 10 if worst[S_RAW] % 10 else worst[S_RAW] // 10)
            if worst[S_RAW] >= 0 else round(worst[S_NORM] / 1000, 2),
            "answered_at": worst[S_TS],
        }
    return out


def _key_contacts(st: AccountState, cfg: ScoringConfig, d: int) -> list[KeyContact]:
    rule = cfg.champion_inactive
    items = st.key_contacts()
    named_at = [c[C_SINCE] for _, c in items if c[C_STATUS] != 1 and c[C_SINCE] != NONE]
    out: list[KeyContact] = []
    for cid, c in items:
        left = c[C_STATUS] == 1
        k = KeyContact(contact_id=cid, name=c[C_NAME] or cid, role=ROLES[c[C_ROLE]], left=left)
        if left:
            k.left_ts = c[C_LEFT]
            confirmed = c[C_LEFT] != NONE and c[C_FIRST] < c[C_LEFT]
            k.departed_unreplaced = confirmed and not any(t > c[C_LEFT] for t in named_at)
            out.append(k)
            continue
        rec = st.key_users.get(c[C_USER]) if c[C_USER] else None
        if rec is not None and d != NONE:
            last = st.user_last_active_day(rec, d)
            if last is not None:
                k.has_usage = True
                k.days_silent = d - 1 - last
                k.usual_gap = rec[K_GAP] or None
                if k.usual_gap is not None:
                    k.threshold = max(rule.gap_factor * k.usual_gap, float(rule.min_silent_days))
        out.append(k)
    return out

